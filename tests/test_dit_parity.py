"""Our DiT (audio off) against diffusers' independent HunyuanVideoTransformer3DModel."""

import pytest
import torch
from diffusers import HunyuanVideoTransformer3DModel

from magicinfinite_core.config import dit_preset
from magicinfinite_core.models.dit import MagicInfiniteDiT
from magicinfinite_core.weights.key_maps import diffusers_to_original, original_to_diffusers


def diffusers_twin(cfg):
    return HunyuanVideoTransformer3DModel(
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        num_attention_heads=cfg.num_heads,
        attention_head_dim=cfg.head_dim,
        num_layers=cfg.depth_double,
        num_single_layers=cfg.depth_single,
        num_refiner_layers=cfg.refiner_depth,
        mlp_ratio=cfg.mlp_ratio,
        patch_size=cfg.patch_size[1],
        patch_size_t=cfg.patch_size[0],
        guidance_embeds=cfg.guidance_embed,
        text_embed_dim=cfg.text_dim,
        pooled_projection_dim=cfg.pooled_dim,
        rope_theta=cfg.rope_theta,
        rope_axes_dim=cfg.rope_dims,
        image_condition_type="latent_concat",
    )


@pytest.fixture(scope="module")
def twins():
    cfg = dit_preset("tiny").without_audio()
    torch.manual_seed(0)
    ref = diffusers_twin(cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # diffusers zero-inits some layers; randomise all so every path is tested
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    ours = MagicInfiniteDiT(cfg).eval()
    result = ours.load_state_dict(diffusers_to_original(ref.state_dict()), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return cfg, ref, ours


def test_parity_with_diffusers_fp32(twins):
    cfg, ref, ours = twins
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, cfg.in_channels, 3, 8, 12, generator=g)
    t = torch.tensor([937.0, 250.0])
    txt = torch.randn(2, 7, cfg.text_dim, generator=g)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 4:] = False  # padded prompt in the second sample
    pooled = torch.randn(2, cfg.pooled_dim, generator=g)
    with torch.no_grad():
        expected = ref(x, t, txt, mask, pooled, return_dict=False)[0]
        got = ours(x, t, txt, mask, pooled)
    diff = (expected - got).abs().max().item()
    print(f"parity max abs diff vs diffusers: {diff:.3e}")
    assert expected.shape == got.shape
    assert diff < 1e-4


def test_key_map_round_trip_is_exact(twins):
    _, ref, ours = twins
    back = original_to_diffusers(ours.state_dict())
    sd = ref.state_dict()
    assert set(back) == set(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)
