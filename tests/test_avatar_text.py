"""HunyuanVideo-Avatar's text path through one-file loading, at tiny scale with real transformers folders.

A tiny random LLaVA-llama (llama + CLIP vision tower, own tokenizer and image processor) and a tiny CLIP
text model sit in `<models>/text_encoders` next to a tiny Avatar file whose text widths are theirs; the
file loads as a whole model, the portrait goes through LLaVA's <image> token, and a few frames come out.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch

from magicinfinite_core.config import dit_preset
from magicinfinite_core.errors import CheckpointError
from magicinfinite_core.generate import generate
from magicinfinite_core.inputs.encoders import HunyuanPromptEncoder
from magicinfinite_core.inputs.portrait import load_portrait
from magicinfinite_core.inputs.text_encoders import AVATAR_NEGATIVE
from magicinfinite_core.sampling.predictor import build_conditions
from magicinfinite_core.weights.avatar_bundle import find_hunyuan_text_encoders, text_encoder_for
from magicinfinite_core.weights.bundle import load_bundle

from .avatar_fixtures import portrait, two_speaker_masks, voice, write_avatar_models
from .llava_fixtures import write_clip_text, write_llava

LLAVA_WIDTH, CLIP_WIDTH = 32, 24
LLAVA_DIR, CLIP_DIR = "llava-llama-3-8b-tiny", "clip-vit-large-patch14-tiny"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("comfy") / "models"
    cfg = replace(dit_preset("tiny-avatar"), text_dim=LLAVA_WIDTH, pooled_dim=CLIP_WIDTH)
    paths = write_avatar_models(root, cfg=cfg)
    paths["llava"] = write_llava(root / "text_encoders" / LLAVA_DIR, LLAVA_WIDTH)
    paths["clip"] = write_clip_text(root / "text_encoders" / CLIP_DIR, CLIP_WIDTH)
    return paths


def test_one_file_loading_drives_the_avatar_text_with_llava_and_clip(models, tmp_path):
    bundle = load_bundle(models["dit"])
    te = bundle.text_encoder
    assert isinstance(te, HunyuanPromptEncoder) and (te.token_dim, te.pooled_dim) == (LLAVA_WIDTH, CLIP_WIDTH)
    assert te.encoder.image_processor is not None and te.name == LLAVA_DIR

    def conditions(seed: int, negative: str = ""):
        img = load_portrait(portrait(seed=seed), 64, 64)[0]
        return build_conditions(bundle, img, "a person talks", torch.zeros(1, 4, 8), two_speaker_masks()[:1],
                                torch.device("cpu"), negative)

    a, b = conditions(0), conditions(1)
    n_img = te.encoder.num_image_tokens
    assert a.txt.shape[1] == te.encoder.max_length + n_img - 1
    assert not torch.allclose(a.txt, b.txt)  # the portrait reaches the text tokens (LLaVA's <image>)
    assert torch.allclose(a.pooled, b.pooled)  # CLIP-L reads the prompt only
    assert torch.allclose(a.txt[1:], conditions(0, AVATAR_NEGATIVE).txt[1:])  # the reference's negative by default

    path, report = generate(portrait(), voice(0.4, 160), "a person talks", model=bundle, out=tmp_path / "v.mp4",
                            speakers=two_speaker_masks()[:1], steps=2, window=9, overlap=4, device="cpu")
    assert path.is_file() and report.frames == 10


def test_missing_or_ambiguous_text_encoders_are_one_line(models, tmp_path):
    folders = [tmp_path / "text_encoders"]
    te = folders[0]
    with pytest.raises(CheckpointError, match=r"no LLaVA folder found in .*text_encoders; put a transformers LLaVA"):
        find_hunyuan_text_encoders(folders, LLAVA_WIDTH, CLIP_WIDTH)
    te.mkdir()
    (te / "llava_llama3_fp16.safetensors").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"single files \(llava_llama3_fp16.safetensors\) are ComfyUI's own"):
        find_hunyuan_text_encoders(folders, LLAVA_WIDTH, CLIP_WIDTH)
    (te / "llama-text-only").mkdir()
    (te / "llama-text-only" / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 32}))
    with pytest.raises(CheckpointError, match="text-only, but HunyuanVideo-Avatar puts the portrait"):
        find_hunyuan_text_encoders(folders, LLAVA_WIDTH, CLIP_WIDTH)
    shutil.copytree(models["llava"], te / "llava_a")
    shutil.copytree(models["llava"], te / "llava_b")
    with pytest.raises(CheckpointError, match=r"several LLaVA folders in .* \(llava_a, llava_b\)"):
        find_hunyuan_text_encoders(folders, LLAVA_WIDTH, CLIP_WIDTH)
    shutil.rmtree(te / "llava_b")
    with pytest.raises(CheckpointError, match="no CLIP text folder in .*single files .*; put a transformers CLIP-L folder"):
        find_hunyuan_text_encoders(folders, LLAVA_WIDTH, CLIP_WIDTH)
    shutil.copytree(models["clip"], te / "clip_l")
    assert find_hunyuan_text_encoders(folders, LLAVA_WIDTH, CLIP_WIDTH) == (te / "llava_a", te / "clip_l")
    # the DiT's text width is neither MiniLM's 384 nor a found encoder's
    cfg = replace(dit_preset("tiny-avatar"), text_dim=48, pooled_dim=CLIP_WIDTH)
    with pytest.raises(CheckpointError, match=r"reads 48-dim LLaVA states but .* other widths: llava_a \(32\)"):
        text_encoder_for(cfg, folders)
    with pytest.raises(CheckpointError, match="48-dim text .* give the folders that hold them"):
        text_encoder_for(cfg)
