"""HunyuanVideo-Avatar files: layout detection, loading (bf16 / fp8 + scale map), `convert`, `inspect`.

Real small files are written and read; the 13B key set is checked on the meta device and through a
header-only file (no tensor data), as `inspect` would see the real 26 GB file.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from magicinfinite_core.config import dit_preset
from magicinfinite_core.errors import CheckpointError
from magicinfinite_core.models.avatar_layers import face_mask_to_tokens
from magicinfinite_core.models.dit import MagicInfiniteDiT
from magicinfinite_core.weights import transformer_layouts as tl
from magicinfinite_core.weights.inspect_file import inspect_file
from runner.cli import main as cli_main
from runner.convert import convert


def random_avatar(seed: int = 0) -> MagicInfiniteDiT:
    torch.manual_seed(seed)
    model = MagicInfiniteDiT(dit_preset("tiny-avatar")).eval()
    with torch.no_grad():
        for p in model.parameters():  # zero-initialised layers too, so every weight matters
            p.copy_(torch.randn_like(p) * 0.05)
    return model


def run(model: MagicInfiniteDiT, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    av = model.cfg.avatar
    x = torch.randn(1, 4, 2, 8, 8, generator=g)
    audio = torch.randn(1, 2, 5, av.audio_window, av.audio_layers, av.audio_channels, generator=g)
    mask = face_mask_to_tokens(torch.ones(1, 2, 1, 8, 8), (2, 4, 4))
    with torch.no_grad():
        return model(x, torch.tensor([400.0]), torch.randn(1, 5, 64, generator=g), None,
                     torch.randn(1, 32, generator=g), audio=audio, speaker_mask=mask,
                     ref_latent=torch.randn(x.shape, generator=g))


@pytest.fixture(scope="module")
def avatar_file(tmp_path_factory) -> tuple[MagicInfiniteDiT, Path]:
    model = random_avatar()
    path = tmp_path_factory.mktemp("avatar") / "hunyuan_video_avatar_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model, path


def test_13b_avatar_key_set_plans_with_zero_missing_and_unexpected():
    cfg = dit_preset("hunyuan-avatar")
    with torch.device("meta"):
        sd = MagicInfiniteDiT(cfg).state_dict()
    assert len(sd) == 946 and abs(sum(v.numel() for v in sd.values()) / 1e9 - 12.99) < 0.01
    assert tl._guess_layout(list(sd)) == "avatar"
    assert tl.infer_dit_config(sd) == cfg
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    entries = {"module." + k: tl.TensorEntry(Path("x.safetensors"), "module." + k, torch.bfloat16, s)
               for k, s in shapes.items()}
    info = tl.CheckpointInfo(Path("x.safetensors"), "avatar", "module.", (Path("x.safetensors"),),
                             {k[len("module."):]: e for k, e in entries.items()})
    converted = tl.to_original(info, tl.meta_state_dict(info))
    tl.check_plan(shapes, [(info, converted)], cfg)  # raises on any missing / unexpected / misshapen key


def test_bf16_and_fp32_avatar_file_loads_exactly(avatar_file):
    model, path = avatar_file
    info = tl.detect_layout(path)
    assert info.layout == "avatar"
    loaded = tl.load_transformer(path)  # config inferred from the shapes: the tiny-avatar preset
    assert loaded.cfg == model.cfg
    assert torch.equal(run(loaded), run(model))
    half = path.with_name("bf16.safetensors")
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}, str(half))
    out = tl.load_transformer(half, dtype=torch.bfloat16, expect_layout="avatar")
    assert next(out.parameters()).dtype == torch.bfloat16


def _fp8_files(model: MagicInfiniteDiT, folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """The Avatar fp8 layout: block Linear weights in e4m3 / scale, scales keyed by module name."""
    fmax = torch.finfo(torch.float8_e4m3fn).max
    sd, scales = {}, {}
    for k, v in model.state_dict().items():
        if k.startswith(("double_blocks.", "single_blocks.")) and k.endswith(".weight") and v.ndim == 2:
            s = v.abs().max() / fmax
            sd[k] = (v / s).to(torch.float8_e4m3fn)
            scales[k[: -len(".weight")]] = s.reshape(())
        else:
            sd[k] = v.contiguous()
    path = folder / "mp_rank_00_model_states_fp8.safetensors"
    save_file(sd, str(path))
    return path, scales


def test_fp8_file_with_scale_map_dequantises(avatar_file, tmp_path):
    model, _ = avatar_file
    path, scales = _fp8_files(model, tmp_path)
    with pytest.raises(CheckpointError, match="scale map") as e:
        tl.load_transformer(path)
    assert "\n" not in str(e.value) and "mp_rank_00_model_states_fp8_map.safetensors" in str(e.value)
    save_file(scales, str(tmp_path / "mp_rank_00_model_states_fp8_map.safetensors"))
    loaded = tl.load_transformer(path)
    w = model.state_dict()["double_blocks.0.img_attn_qkv.weight"]
    got = loaded.state_dict()["double_blocks.0.img_attn_qkv.weight"]
    assert (got - w).abs().max() <= w.abs().max() / 8  # e4m3: 3 mantissa bits
    assert torch.allclose(run(loaded), run(model), atol=0.05)


def test_wrong_files_get_one_clear_line(avatar_file, tmp_path):
    model, path = avatar_file
    i2v = tmp_path / "hunyuan_video_i2v.safetensors"
    torch.manual_seed(0)
    base = MagicInfiniteDiT(dit_preset("tiny").without_audio())
    save_file({k: v.contiguous() for k, v in base.state_dict().items()}, str(i2v))
    for kwargs in ({"expect_layout": "avatar"}, {"cfg": dit_preset("tiny-avatar")}):
        with pytest.raises(CheckpointError, match="HunyuanVideo-I2V transformer") as e:
            tl.load_transformer(i2v, **kwargs)
        assert "\n" not in str(e.value) and "Avatar" in str(e.value)
    wan = tmp_path / "wan2.1_i2v_14B.safetensors"
    save_file({"blocks.0.self_attn.q.weight": torch.zeros(4, 4), "patch_embedding.weight": torch.zeros(4, 4)}, str(wan))
    with pytest.raises(CheckpointError, match="Wan video transformer"):
        tl.load_transformer(wan, expect_layout="avatar")
    cut = tmp_path / "truncated.safetensors"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        tl.load_transformer(cut)
    pt = tmp_path / "mp_rank_00_model_states.pt"
    torch.save({"module": model.state_dict()}, pt)
    with pytest.raises(CheckpointError, match="magicinfinite convert"):
        tl.load_transformer(pt)


def test_convert_reads_pt_with_weights_only_and_loads(avatar_file, tmp_path, capsys):
    model, _ = avatar_file
    pt = tmp_path / "mp_rank_00_model_states.pt"
    torch.save({"module": model.state_dict()}, pt)
    out = tmp_path / "avatar.safetensors"
    assert cli_main(["convert", str(pt), str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert torch.equal(run(tl.load_transformer(out)), run(model))

    evil = tmp_path / "evil.pt"
    torch.save({"module": {"x": NotWeights()}}, evil)  # a class: the safe loader refuses to build it
    with pytest.raises(CheckpointError, match="weights_only"):
        convert(evil, tmp_path / "evil.safetensors")
    assert not (tmp_path / "evil.safetensors").exists()


def test_inspect_lists_missing_unexpected_and_wrong_shapes(avatar_file, tmp_path, capsys):
    model, path = avatar_file
    assert cli_main(["inspect", str(path), "--json"]) == 0
    clean = json.loads(capsys.readouterr().out)
    assert clean == {"layout": "HunyuanVideo-Avatar", "missing": [], "unexpected": [], "wrong_shapes": []}
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    sd.pop("audio_adapter_blocks.1.to_q.weight")
    sd["audio_adapter_blocks.0.extra"] = torch.zeros(2)
    sd["before_proj.weight"] = torch.zeros(3, 3)
    bad = tmp_path / "bad.safetensors"
    save_file(sd, str(bad))
    r = inspect_file(bad)
    assert r.missing == ["audio_adapter_blocks.1.to_q.weight"]
    assert r.unexpected == ["audio_adapter_blocks.0.extra"]
    assert r.wrong_shapes == [{"key": "before_proj.weight", "file": [3, 3], "expected": [128, 128]}]
    with pytest.raises(CheckpointError, match="inspect FILE"):  # the loader names the same key
        tl.load_transformer(bad, cfg=model.cfg)


class NotWeights:
    """An arbitrary object inside a pickle: what weights_only=True must refuse."""


def header_only(path: Path, shapes: dict[str, tuple[int, ...]], dtype: str = "BF16") -> None:
    """A safetensors header for these tensors with no data behind it (a 26 GB file, 0 bytes of weights)."""
    header, off = {}, 0
    for k, s in shapes.items():
        n = 2 * int(torch.tensor(s).prod()) if s else 2
        header[k] = {"dtype": dtype, "shape": list(s), "data_offsets": [off, off + n]}
        off += n
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)


def test_inspect_reads_only_the_header_of_a_13b_file(tmp_path, capsys):
    with torch.device("meta"):
        sd = MagicInfiniteDiT(dit_preset("hunyuan-avatar")).state_dict()
    big = tmp_path / "hunyuan_video_avatar_720_bf16.safetensors"
    header_only(big, {"module." + k: tuple(v.shape) for k, v in sd.items()})
    r = inspect_file(big)
    assert r.layout == "HunyuanVideo-Avatar" and not (r.missing or r.unexpected or r.wrong_shapes)
    assert any("truncated" in n for n in r.notes)
    wan = tmp_path / "wan.safetensors"
    header_only(wan, {"blocks.0.self_attn.q.weight": (5120, 5120), "patch_embedding.weight": (5120, 36, 1, 2, 2)})
    assert cli_main(["inspect", str(wan)]) == 0
    text = capsys.readouterr().out
    assert "not a supported layout (nearest:" in text and "Wan video transformer" in text
