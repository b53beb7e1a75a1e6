"""Whisper features for HunyuanVideo-Avatar from a local transformers folder (a tiny random model, no download)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magicinfinite_core.errors import CheckpointError
from magicinfinite_core.inputs.audio_features import WhisperExtractor, whisper_frame_windows
from magicinfinite_core.inputs.text_encoders import T2V_TEMPLATE, avatar_prompt_text


@pytest.fixture(scope="module")
def whisper_folder(tmp_path_factory):
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(0)
    cfg = WhisperConfig(d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, vocab_size=64,
                        max_source_positions=1500, max_target_positions=16, num_mel_bins=80,
                        pad_token_id=1, bos_token_id=2, eos_token_id=2, decoder_start_token_id=2)
    folder = tmp_path_factory.mktemp("whisper-tiny-random")
    WhisperModel(cfg).save_pretrained(folder, safe_serialization=True)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder


def test_whisper_extractor_windows_all_hidden_states(whisper_folder):
    ex = WhisperExtractor.from_path(whisper_folder)
    assert (ex.layers, ex.width, ex.feature_dim) == (3, 16, 10 * 3 * 16)
    wave = np.random.default_rng(0).standard_normal(16000 * 2).astype(np.float32) * 0.1
    hidden = ex.hidden_states(wave)
    assert hidden.shape == (1500, 3, 16)  # one 30 s chunk at 50 Hz, embeddings + 2 layers
    w = ex.windows(wave)  # 2 s -> 50 frames
    assert w.shape == (50, 10, 3, 16)
    assert torch.equal(w, whisper_frame_windows(hidden, 50).half())
    assert torch.equal(w[0, :4].float(), torch.zeros(4, 3, 16))  # 4 zero frames in front
    assert torch.equal(w[3, 0], hidden[2].half())  # frame f starts at encoder frame 2f (minus the 4 zeros)


def test_whisper_long_audio_has_no_cap(whisper_folder):
    ex = WhisperExtractor.from_path(whisper_folder)
    wave = np.zeros(16000 * 31, dtype=np.float32)  # past Whisper's 30 s input and the reference's 16 s
    assert ex.hidden_states(wave).shape[0] == 3000  # two chunks
    assert ex.windows(wave).shape[0] == 31 * 25


def test_not_a_whisper_folder(tmp_path):
    with pytest.raises(CheckpointError, match="whisper-tiny"):
        WhisperExtractor.from_path(tmp_path)


def test_avatar_prompt_text():
    text = avatar_prompt_text("a woman talks")
    assert text.startswith(T2V_TEMPLATE.split("{}")[0])
    assert "Lens-Fixed, a woman talks<|eot_id|>" in text and text.endswith("\nThe person looks like<image>")
