"""HunyuanVideo VAE: ComfyUI single file, original/diffusers single file and diffusers folder."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLHunyuanVideo
from safetensors.torch import load_file, save_file

from magicinfinite_core.config import vae_preset
from magicinfinite_core.errors import CheckpointError
from magicinfinite_core.weights import vae_layouts as vl

DATA = Path(__file__).parent / "data"


def test_comfyui_13b_vae_names_map_exactly():
    comfy = {
        k: tuple(v)
        for k, v in json.loads((DATA / "comfyui_hunyuan_vae_keys.json").read_text())["keys"].items()
    }
    with torch.device("meta"):
        ref = AutoencoderKLHunyuanVideo(**vae_preset("hunyuan").diffusers_kwargs())
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    meta = {k: torch.empty(s, device="meta") for k, s in comfy.items()}
    got = vl.comfyui_vae_to_diffusers(meta)
    assert {k: tuple(v.shape) for k, v in got.items()} == want
    back = vl.diffusers_vae_to_comfyui(got)
    assert {k: tuple(v.shape) for k, v in back.items()} == comfy
    assert vl.infer_vae_config(want) == replace(vae_preset("hunyuan"), causal_norm=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = replace(vae_preset("tiny"), mid_block_add_attention=True, causal_norm=False)
    torch.manual_seed(0)
    ref = AutoencoderKLHunyuanVideo(**cfg.diffusers_kwargs()).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    d = tmp_path_factory.mktemp("vae")
    ref.save_pretrained(str(d / "vae"), safe_serialization=True)
    paths = {
        "diffusers_folder": d / "vae",
        "diffusers_file": vl.save_vae(d / "hunyuan_video_vae_original.safetensors", ref, layout="diffusers"),
        "comfyui": vl.save_vae(d / "hunyuan_video_vae_bf16.safetensors", ref, layout="comfyui"),
    }
    g = torch.Generator().manual_seed(2)
    frames = torch.rand(1, 3, 5, 16, 16, generator=g) * 2 - 1
    z = torch.randn(1, cfg.latent_channels, 2, 2, 2, generator=g)
    with torch.no_grad():
        expected = (ref.encode(frames).latent_dist.mode(), ref.decode(z).sample)
    return cfg, ref, paths, (frames, z), expected


@pytest.mark.parametrize("layout", ["diffusers_folder", "diffusers_file", "comfyui"])
def test_each_vae_layout_matches_diffusers(tiny, layout):
    cfg, ref, paths, (frames, z), (mode, dec) = tiny
    info = vl.detect_vae_layout(paths[layout])
    assert info.layout == layout.split("_")[0]
    vae = vl.load_vae(paths[layout], cfg if layout != "diffusers_folder" else None)
    assert vae.cfg.block_out_channels == cfg.block_out_channels and not vae.cfg.causal_norm
    with torch.no_grad():
        assert torch.allclose(vae.model.encode(frames).latent_dist.mode(), mode, atol=1e-5)
        assert torch.allclose(vae.model.decode(z).sample, dec, atol=1e-5)


def test_comfyui_vae_round_trip_is_exact(tiny, tmp_path):
    cfg, _, paths, _, _ = tiny
    raw = load_file(str(paths["comfyui"]))
    assert "decoder.mid.attn_1.q.weight" in raw and raw["decoder.mid.attn_1.q.weight"].ndim == 5
    assert "decoder.up.3.block.0.conv1.conv.weight" in raw  # reversed up-block numbering
    vae = vl.load_vae(paths["comfyui"], cfg)
    out = vl.save_vae(tmp_path / "again.safetensors", vae, layout="comfyui")
    again = load_file(str(out))
    assert raw.keys() == again.keys() and all(torch.equal(raw[k], again[k]) for k in raw)


def test_vae_errors_name_file_layout_and_key(tiny, tmp_path):
    cfg, _, paths, _, _ = tiny
    data = paths["comfyui"].read_bytes()
    cut = tmp_path / "vae_cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        CheckpointError, match=r"vae_cut\.safetensors: layout detected: comfyui; first bad key: '"
    ):
        vl.load_vae(cut, cfg)
    save_file({"double_blocks.0.img_attn_qkv.weight": torch.zeros(2, 2)}, str(tmp_path / "dit.safetensors"))
    with pytest.raises(
        CheckpointError, match=r"dit\.safetensors.*first bad key.*video transformer, not a VAE"
    ):
        vl.load_vae(tmp_path / "dit.safetensors")
    sd = load_file(str(paths["comfyui"]))
    sd.pop("encoder.down.1.block.0.conv1.conv.weight")
    save_file(sd, str(tmp_path / "incomplete.safetensors"))
    with pytest.raises(CheckpointError, match=r"incomplete\.safetensors.*comfyui.*1 missing"):
        vl.load_vae(tmp_path / "incomplete.safetensors", cfg)
