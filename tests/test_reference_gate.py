"""The gated reference skip (DiTConfig.reference_gate): open it is the full skip, closed it is plain
velocity prediction, and a trained full-skip model fine-tunes into a gated one from where it stands."""

from dataclasses import replace

import pytest
import torch

from magicinfinite_core.config import AudioLayerConfig, DiTConfig
from magicinfinite_core.models.dit import MagicInfiniteDiT, with_reference_gate
from magicinfinite_core.weights.checkpoints import save_dit
from magicinfinite_core.weights.transformer_layouts import load_transformer

SKIP = DiTConfig(in_channels=9, out_channels=4, image_condition="every_frame", reference_skip=True,
                 audio=AudioLayerConfig(feature_dim=8))
CELLS = SKIP.patch_size[0] * SKIP.patch_size[1] * SKIP.patch_size[2]  # latent cells per token


def _args(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 9, 3, 4, 4, generator=g)
    return (x, torch.tensor([300.0, 800.0]), torch.randn(2, 3, SKIP.text_dim, generator=g), None,
            torch.randn(2, SKIP.pooled_dim, generator=g))


def _random_head(model: MagicInfiniteDiT, seed: int) -> MagicInfiniteDiT:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.final_layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def _velocity_only(model: MagicInfiniteDiT, args) -> torch.Tensor:
    state = model.prepare(*args, None, None, None, None, None)
    return model.unpatchify(model.head(state, model.run_blocks(state)), state.grid)[:, : model.cfg.out_channels]


def test_gate_added_to_a_full_skip_model_keeps_its_velocity():
    torch.manual_seed(0)
    base = _random_head(MagicInfiniteDiT(replace(SKIP, reference_gate_init=30.0)), 1)  # sigmoid(30) == 1
    gated = with_reference_gate(base).eval()
    assert gated.cfg.reference_gate and gated.final_layer.linear.out_features == CELLS * 5
    with torch.no_grad():
        assert torch.allclose(gated(*_args()), base(*_args()), atol=1e-5)


def test_closed_gate_is_plain_velocity_and_half_open_is_half_the_skip():
    torch.manual_seed(0)
    model = _random_head(MagicInfiniteDiT(replace(SKIP, reference_gate=True)), 2)
    rows = slice(CELLS * SKIP.out_channels, None)
    args = _args(1)
    x, t = args[0], args[1]
    skip = (x[:, :4] - x[:, 4:8]) / (t / 1000.0).view(-1, 1, 1, 1, 1)
    for logit, weight in ((-40.0, 0.0), (0.0, 0.5)):
        with torch.no_grad():
            model.final_layer.linear.weight[rows] = 0
            model.final_layer.linear.bias[rows] = logit
            out, v = model(*args), _velocity_only(model, args)
        assert torch.allclose(out, v + weight * skip, atol=1e-5)


def test_a_fresh_gated_model_starts_nearly_open():
    model = MagicInfiniteDiT(replace(SKIP, reference_gate=True))
    bias = model.final_layer.linear.bias[CELLS * SKIP.out_channels:]
    assert torch.all(bias == SKIP.reference_gate_init)
    assert torch.all(model.final_layer.linear.weight[CELLS * SKIP.out_channels:] == 0)


def test_gated_model_round_trips_through_our_file(tmp_path):
    torch.manual_seed(0)
    model = _random_head(MagicInfiniteDiT(replace(SKIP, reference_gate=True)), 3)
    again = load_transformer(save_dit(tmp_path / "g.safetensors", model))
    assert again.cfg.reference_gate
    with torch.no_grad():
        assert torch.equal(again(*_args()), model(*_args()))


def test_gate_needs_the_skip():
    with pytest.raises(ValueError, match="reference_skip"):
        DiTConfig(in_channels=9, out_channels=4, image_condition="every_frame", reference_gate=True)


def test_stage2_init_from_a_full_skip_file_adds_the_gate(tmp_path):
    """dit.reference_gate=true with stage2.init a full-skip file: the trainer adds the gate rows."""
    from tests.test_training import tiny_config
    from training.trainer import build_model

    cfg = tiny_config(tmp_path)
    cfg.dit = {**cfg.dit, "image_condition": "every_frame", "reference_skip": True}
    torch.manual_seed(1)
    full = build_model(cfg, 2).eval()
    cfg.stage2.init = str(save_dit(tmp_path / "full.safetensors", full))
    cfg.dit = {**cfg.dit, "reference_gate": True}
    gated = build_model(cfg, 2).eval()
    assert gated.cfg.reference_gate
    sd_full, sd_gated = full.state_dict(), gated.state_dict()
    rows = sd_full["final_layer.linear.weight"].shape[0]
    assert torch.equal(sd_gated["final_layer.linear.weight"][:rows], sd_full["final_layer.linear.weight"])
    assert all(torch.equal(sd_gated[k], v) for k, v in sd_full.items() if not k.startswith("final_layer.linear"))
