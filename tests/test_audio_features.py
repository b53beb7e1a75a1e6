"""Feature extractors: wav2vec2 from both on-disk layouts, mel, chunking, windows, speakers, bench."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from magicinfinite_core.errors import AudioError, CheckpointError
from magicinfinite_core.inputs.audio import load_audio, load_speaker_tracks
from magicinfinite_core.inputs.audio_features import (
    AudioFeatureExtractor,
    MelExtractor,
    Wav2Vec2Extractor,
    extract_speaker_features,
    frame_windows,
    infer_wav2vec2_config,
    load_extractor,
)
from tests.audio_fixtures import make_speech, save_comfy_single_file, tiny_wav2vec2

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    d = tmp_path_factory.mktemp("feat")
    return load_audio(make_speech(d / "speech.wav", "One two three four, testing the audio features."))


@pytest.fixture(scope="module", params=["base", "large"])
def w2v(request, tmp_path_factory):
    """(model, hf_folder, comfy_file_with_prefix_fp16, comfy_file_plain_fp32_old_weight_norm)."""
    large = request.param == "large"
    d = tmp_path_factory.mktemp(f"w2v_{request.param}")
    model = tiny_wav2vec2(seed=1 if large else 0, layer_norm=large)
    model.save_pretrained(str(d / "hf"))
    single = save_comfy_single_file(
        model, d / "wav2vec2_tiny_fp16.safetensors", prefix="wav2vec2.", fp16=True
    )
    plain = save_comfy_single_file(
        model, d / "tiny_plain.safetensors", prefix="", fp16=False, old_weight_norm=True
    )
    return model, d / "hf", single, plain


def _reference(model, wave: np.ndarray, num_frames: int) -> torch.Tensor:
    """Plain whole-clip forward, then linear interpolation at each video frame's centre time."""
    w = np.pad(wave, (0, max(0, num_frames * 640 - len(wave))))[: num_frames * 640]
    with torch.no_grad():
        hs = model(torch.from_numpy(w)[None], output_hidden_states=True).hidden_states[1:]
    hs = torch.stack(hs)[:, 0]  # [L, T50, C]
    pos = (torch.arange(num_frames) * 2 + 0.375).clamp(max=hs.shape[1] - 1)  # (640 j + 320 - 200) / 320
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=hs.shape[1] - 1)
    wgt = (pos - lo)[None, :, None]
    return (hs[:, lo] * (1 - wgt) + hs[:, hi] * wgt).permute(1, 0, 2).reshape(num_frames, -1)


def test_wav2vec2_all_layouts_match_the_model(w2v, speech):
    model, hf, single, plain = w2v
    ref = _reference(model, speech.waveform, speech.num_frames)
    for src in (hf, single, plain):
        ext = Wav2Vec2Extractor.from_path(src, do_normalize=False)
        assert isinstance(ext, AudioFeatureExtractor)
        assert ext.feature_dim == 2 * 64 and ext.hop == 320 and ext.receptive_field == 400
        f = ext.extract(speech)
        assert f.shape == (speech.num_frames, 128) and f.dtype == torch.float16
        tol = 0.02 if src != hf else 2e-3  # fp16 weights in the ComfyUI-style file
        err = (f.float() - ref).abs().max() / ref.abs().max()
        assert err < tol, f"{src.name}: rel err {err:.4f}"


def test_config_inferred_from_shapes(w2v):
    from safetensors.torch import load_file

    from magicinfinite_core.inputs.audio_features import _strip_prefix

    model, _, single, _ = w2v
    cfg = infer_wav2vec2_config(_strip_prefix(load_file(str(single))))
    ref = model.config
    for key in (
        "hidden_size",
        "num_hidden_layers",
        "intermediate_size",
        "conv_dim",
        "conv_kernel",
        "conv_stride",
        "conv_bias",
        "feat_extract_norm",
        "do_stable_layer_norm",
        "num_conv_pos_embeddings",
        "num_conv_pos_embedding_groups",
        "num_attention_heads",
    ):
        assert tuple(np.atleast_1d(getattr(cfg, key))) == tuple(np.atleast_1d(getattr(ref, key))), key


def test_do_normalize_defaults_follow_comfyui_convention(w2v):
    model, _, single, _ = w2v
    ext = Wav2Vec2Extractor.from_path(single)
    assert ext.do_normalize == (model.config.feat_extract_norm == "layer")


def test_chunk_seams_do_not_change_the_result(w2v, speech):
    model, *_ = w2v
    whole = Wav2Vec2Extractor(model, do_normalize=True).extract(speech).float()
    chunked = Wav2Vec2Extractor(model, do_normalize=True, chunk_s=0.8, context_s=0.6).extract(speech).float()
    assert speech.num_frames > 3 * 20  # really several chunks
    rel = (chunked - whole).norm() / whole.norm()
    assert rel < 0.01, f"chunked vs whole relative error {rel:.4f}"


def test_num_frames_pads_or_cuts(w2v, speech):
    model, *_ = w2v
    ext = Wav2Vec2Extractor(model)
    f = ext.extract(speech.waveform, num_frames=speech.num_frames + 10)
    assert f.shape[0] == speech.num_frames + 10
    assert torch.equal(
        ext.extract(speech.waveform, num_frames=5).shape[0] * torch.ones(1), torch.tensor([5.0])
    )


def test_wav2vec2_bad_files(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(CheckpointError, match="not found.*audio_encoders"):
        Wav2Vec2Extractor.from_path(tmp_path / "missing.safetensors")
    other = tmp_path / "vae.safetensors"
    save_file({"decoder.conv.weight": torch.zeros(3, 3)}, str(other))
    with pytest.raises(CheckpointError, match="does not look like a wav2vec2"):
        Wav2Vec2Extractor.from_path(other)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        Wav2Vec2Extractor.from_path(junk)
    pickle = tmp_path / "model.bin"
    pickle.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="only .safetensors"):
        Wav2Vec2Extractor.from_path(pickle)
    (tmp_path / "folder").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        Wav2Vec2Extractor.from_path(tmp_path / "folder")


# ------------------------------------------------------------------------------------------ mel


def test_mel_shape_chunking_and_alignment():
    sr = 16000
    wave = np.zeros(sr * 4, np.float32)
    t = np.arange(640 * 10) / sr
    wave[640 * 30 : 640 * 40] = 0.5 * np.sin(2 * np.pi * 1000 * t)  # video frames 30..39
    mel = MelExtractor(n_mels=40)
    f = mel.extract(wave)
    assert f.shape == (100, 40) and f.dtype == torch.float16 and mel.feature_dim == 40
    energy = f.float().exp().sum(1)
    on = torch.nonzero(energy > energy.max() * 0.1).flatten()
    assert on.min().item() in (29, 30) and on.max().item() in (39, 40)
    assert torch.equal(MelExtractor(n_mels=40, chunk_s=0.44, context_s=0.08).extract(wave), f)  # exact


def test_mel_silence_and_load_extractor():
    ext = load_extractor("mel", n_mels=16)
    s = ext.silence(7)
    assert s.shape == (7, 16) and torch.allclose(
        s.float(), torch.full((7, 16), float(np.log(1e-5))), atol=0.01
    )


def test_out_file_memmap_matches(tmp_path, speech):
    ext = MelExtractor()
    f = ext.extract(speech)
    mm = ext.extract(speech, out_file=tmp_path / "feats.npy")
    assert torch.equal(f, mm)
    assert np.array_equal(np.load(tmp_path / "feats.npy"), f.numpy())


def test_extract_rejects_bad_waveforms():
    ext = MelExtractor()
    with pytest.raises(AudioError, match="mono waveform"):
        ext.extract(np.zeros((2, 16000), np.float32))
    with pytest.raises(AudioError, match="NaN"):
        ext.extract(np.full(16000, np.nan, np.float32))
    with pytest.raises(AudioError, match="shorter than one video frame"):
        ext.extract(np.zeros(100, np.float32))


# -------------------------------------------------------------------------------- frame windows


def test_frame_windows_clamp_edges():
    feats = torch.arange(6, dtype=torch.float32)[:, None].repeat(1, 3)  # row i == i
    w = frame_windows(feats, 5)
    assert w.shape == (6, 5, 3)
    assert w[0, :, 0].tolist() == [0, 0, 0, 1, 2]
    assert w[3, :, 0].tolist() == [1, 2, 3, 4, 5]
    assert w[5, :, 0].tolist() == [3, 4, 5, 5, 5]
    part = frame_windows(feats, 5, start=4, end=6)
    assert torch.equal(part, w[4:6])
    with pytest.raises(AudioError, match="odd"):
        frame_windows(feats, 4)
    with pytest.raises(AudioError, match="outside"):
        frame_windows(feats, 5, start=3, end=9)


# ------------------------------------------------------------------------------ multi-speaker


def test_speaker_streams_equal_length_silence_padded(speech):
    short = (speech.waveform[:16000], 16000)
    tracks = load_speaker_tracks([(speech.waveform, 16000), short])
    ext = MelExtractor()
    feats = extract_speaker_features(tracks, ext)
    assert feats.shape == (2, speech.num_frames, ext.feature_dim)
    tail = feats[1, 27:]  # frames wholly after the 1 s of speech
    assert torch.allclose(tail.float(), ext.silence(tail.shape[0]).float())


# ----------------------------------------------------------------------------------------- bench


def test_memory_bench_runs_short():
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "audio_memory.py"),
            "--minutes",
            "0.1",
            "--no-baseline",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    res = json.loads(out.stdout)
    assert [c["frames"] for c in res["cases"]] == [150]
    assert res["cases"][0]["peak_rss_mb"] > 0 and res["cases"][0]["feature_shape"] == [150, 64]
