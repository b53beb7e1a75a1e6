"""Inference LoRA merge: a peft LoRA trained by the distiller equals its merged weights."""

import copy

import pytest
import torch

from magicinfinite_core.config import dit_preset
from magicinfinite_core.errors import CheckpointError
from magicinfinite_core.models.dit import MagicInfiniteDiT
from magicinfinite_core.weights.checkpoints import save_state_dict
from magicinfinite_core.weights.lora import apply_lora
from magicinfinite_core.weights.transformer_layouts import original_key_to_comfyui
from training.distill.lora import make_fake_score, save_lora

from .test_dit import randomise_, tiny_inputs


def _model():
    torch.manual_seed(0)
    model = MagicInfiniteDiT(dit_preset("tiny")).eval()
    randomise_(model)
    return model


def test_peft_lora_from_the_distiller_merges_exactly(tmp_path):
    base = _model()
    fake = make_fake_score(copy.deepcopy(base), rank=8, alpha=4.0)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for n, p in fake.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    path = save_lora(tmp_path / "lora.safetensors", fake)
    inp = tiny_inputs(base.cfg)
    mask = torch.ones(1, 2, 3, 4, 4)
    with torch.no_grad():
        expected = fake(**inp, speaker_mask=mask)
        merged = apply_lora(base, path, strength=1.0)
        got = merged(**inp, speaker_mask=mask)
        unchanged = apply_lora(base, path, strength=0.0)(**inp, speaker_mask=mask)
        plain = base(**inp, speaker_mask=mask)
    assert (expected - got).abs().max() < 1e-4
    assert torch.equal(unchanged, plain) and not torch.allclose(got, plain)
    assert all(torch.equal(a, b) for a, b in zip(base.state_dict().values(), _model().state_dict().values(), strict=True))


def test_kohya_style_comfyui_names_with_alpha(tmp_path):
    base = _model()
    w = base.double_blocks[0].img_attn_qkv.weight
    a, b = torch.randn(4, w.shape[1]), torch.randn(w.shape[0], 4)
    comfy = original_key_to_comfyui("double_blocks.0.img_attn_qkv.weight")[: -len(".weight")]
    path = save_state_dict(tmp_path / "k.safetensors", {
        f"diffusion_model.{comfy}.lora_down.weight": a,
        f"diffusion_model.{comfy}.lora_up.weight": b,
        f"diffusion_model.{comfy}.alpha": torch.tensor(2.0),
    }, kind="lora")
    merged = apply_lora(base, path, strength=0.5)
    delta = merged.double_blocks[0].img_attn_qkv.weight - w
    assert torch.allclose(delta, 0.5 * (b @ a) * (2.0 / 4), atol=1e-5)


def test_lora_that_does_not_fit_is_refused(tmp_path):
    base = _model()
    path = save_state_dict(tmp_path / "bad.safetensors", {
        "diffusion_model.nowhere.lora_A.weight": torch.zeros(2, 3),
        "diffusion_model.nowhere.lora_B.weight": torch.zeros(3, 2),
    }, kind="lora")
    with pytest.raises(CheckpointError, match="matches no layer"):
        apply_lora(base, path)
    path = save_state_dict(tmp_path / "shape.safetensors", {
        "double_blocks.0.img_attn_qkv.lora_A.weight": torch.zeros(2, 7),
        "double_blocks.0.img_attn_qkv.lora_B.weight": torch.zeros(5, 2),
    }, kind="lora")
    with pytest.raises(CheckpointError, match="gives"):
        apply_lora(base, path)
