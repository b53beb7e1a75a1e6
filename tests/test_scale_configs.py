"""The scale-out files: accelerate configs whose keys accelerate 1.x knows and whose FSDP wrap classes
exist in our DiT, and the training-cost estimate of bench/train_cost.py."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "training" / "configs").glob("accelerate_*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_accelerate_configs_load_and_every_key_is_a_launcher_option(path):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    cfg = load_config_from_file(str(path))
    args = launch_command_parser().parse_args(["x.py"])
    unknown = [k for k in (cfg.fsdp_config or {}) if not hasattr(args, k)]
    assert not unknown, f"{path.name}: accelerate ignores {unknown}"
    wrap = (cfg.fsdp_config or {}).get("fsdp_transformer_layer_cls_to_wrap")
    if wrap:
        import magicinfinite_core.models.audio_layers as audio_layers
        import magicinfinite_core.models.blocks as blocks

        for name in wrap.split(","):
            assert hasattr(blocks, name) or hasattr(audio_layers, name), f"{path.name}: no module class {name}"


def test_13b_fsdp_config_wraps_every_large_block_kind():
    from accelerate.commands.config.config_args import load_config_from_file

    from magicinfinite_core.config import dit_preset
    from magicinfinite_core.models.dit import MagicInfiniteDiT

    cfg = load_config_from_file(str(ROOT / "training" / "configs" / "accelerate_fsdp_13b.yaml"))
    wrap = set(cfg.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(","))
    assert cfg.fsdp_config["fsdp_sharding_strategy"] == "FULL_SHARD" and cfg.mixed_precision == "bf16"
    import torch

    with torch.device("meta"):  # the real 13B module tree, no memory
        model = MagicInfiniteDiT(dit_preset("hunyuan-13b"))
    kinds = {type(block).__name__ for child in model.children() if isinstance(child, torch.nn.ModuleList)
             for block in child}  # the repeated blocks: what FSDP must shard unit by unit
    assert {"DoubleStreamBlock", "SingleStreamBlock", "AudioCrossAttention"} <= kinds <= wrap, (kinds, wrap)


def _train_cost():
    spec = importlib.util.spec_from_file_location("train_cost", ROOT / "bench" / "train_cost.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_train_cost_is_flops_over_the_assumed_rate():
    from magicinfinite_core.config import dit_preset
    from magicinfinite_core.models.flops import ForwardShape, dit_forward_flops

    mod = _train_cost()
    res = mod.estimate(frames=129, size=544, mfu=0.4, peak_tflops=989.0, clips=1000)
    fwd = dit_forward_flops(dit_preset("hunyuan-13b"),
                            ForwardShape.for_window(dit_preset("hunyuan-13b"), (33, 68, 68), 832, 1))["total"]
    assert res["latent_frames"] == 33 and res["video_tokens"] == 33 * 34 * 34
    assert res["gpu_hours"] == pytest.approx(1000 * 3 * fwd / (989e12 * 0.4) / 3600, abs=0.01)
    assert res["gpu_hours_with_gradient_checkpointing"] == pytest.approx(res["gpu_hours"] * 4 / 3, abs=0.02)
    assert "ESTIMATE" in res["label"]


def test_train_cost_cli_prints_json_and_refuses_bad_input():
    ok = subprocess.run([sys.executable, str(ROOT / "bench" / "train_cost.py"), "--clips", "10"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and json.loads(ok.stdout)["clips"] == 10
    bad = subprocess.run([sys.executable, str(ROOT / "bench" / "train_cost.py"), "--size", "540"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "multiple of 16" in bad.stderr


def test_13b_training_config_is_the_preset_and_starts_from_the_i2v_backbone():
    from magicinfinite_core.config import dit_preset
    from training.trainer import TrainConfig

    cfg = TrainConfig.from_json(ROOT / "training" / "configs" / "hunyuan13b_stage2.json").resolved()
    assert cfg.dit_config(2) == dit_preset("hunyuan-13b")
    assert cfg.stage2.init.endswith("hunyuan_video_image_to_video_720p_bf16.safetensors")
    assert (cfg.mixed_precision, cfg.gradient_checkpointing, cfg.stage2.lr, cfg.stage2.face_weight) == ("bf16", True,
                                                                                                      1e-5, 10.0)


def test_stage2_starts_from_a_published_backbone_file_with_inert_audio_layers(tmp_path):
    """stage2.init may be a backbone in a published layout (no config in the metadata): it loads
    through checkpoint_layouts.load_transformer and the new audio layers change nothing yet."""
    import torch
    from safetensors.torch import save_file

    from magicinfinite_core.models.dit import AUDIO_PREFIXES
    from tests.test_training import tiny_config
    from training.trainer import build_model

    cfg = tiny_config(tmp_path)
    torch.manual_seed(3)
    stage1 = build_model(cfg, 1).eval()
    backbone = {k: v.contiguous() for k, v in stage1.state_dict().items() if not k.startswith(AUDIO_PREFIXES)}
    save_file(backbone, str(tmp_path / "mp_rank_00_model_states.safetensors"))  # original names, no metadata
    cfg.stage2.init = str(tmp_path / "mp_rank_00_model_states.safetensors")
    model = build_model(cfg, 2).eval()
    x = torch.randn(1, 9, 3, 4, 4)
    args = (x, torch.tensor([500.0]), torch.randn(1, 6, 16), None, torch.randn(1, 16))
    with torch.no_grad():
        ref = stage1(*args)
        out = model(*args, audio=torch.randn(1, 1, 3, 4, 5, 8), speaker_mask=torch.ones(1, 1, 3, 2, 2))
    assert torch.allclose(ref, out, atol=1e-5)
