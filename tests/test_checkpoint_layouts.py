"""Transformer checkpoints in the original, ComfyUI and diffusers layouts load into our DiT.

Stand-ins for real weights: the 13B key sets (names + shapes, meta device) come from ComfyUI's own
module tree (tests/data, recorded from ComfyUI's source) and from diffusers'
HunyuanVideoTransformer3DModel; tiny random models are saved in every layout and must load with
the same outputs as diffusers'.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from diffusers import HunyuanVideoTransformer3DModel
from safetensors.torch import load_file, save_file

from magicinfinite_core.config import DiTConfig, dit_preset
from magicinfinite_core.errors import CheckpointError
from magicinfinite_core.models.dit import AUDIO_PREFIXES, MagicInfiniteDiT
from magicinfinite_core.weights import transformer_layouts as cl
from magicinfinite_core.weights.checkpoints import save_dit
from magicinfinite_core.weights.key_maps import diffusers_to_original

DATA = Path(__file__).parent / "data"


def diffusers_model(cfg: DiTConfig) -> HunyuanVideoTransformer3DModel:
    return HunyuanVideoTransformer3DModel(
        **{k: v for k, v in cl.diffusers_config(cfg).items() if k != "_class_name"}
    )


def meta_shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def comfy_13b() -> dict[str, tuple[int, ...]]:
    return {
        k: tuple(v)
        for k, v in json.loads((DATA / "comfyui_hunyuan_video_i2v_13b_keys.json").read_text())["keys"].items()
    }


def fake_info(layout: str, shapes: dict[str, tuple[int, ...]], prefix: str = "", dtype=torch.bfloat16):
    entries = {k: cl.TensorEntry(Path("x.safetensors"), prefix + k, dtype, s) for k, s in shapes.items()}
    return cl.CheckpointInfo(Path("x.safetensors"), layout, prefix, (Path("x.safetensors"),), entries)


# ---------------------------------------------------------------- 13B names and shapes (meta device)


@pytest.fixture(scope="module")
def ours_13b():
    cfg = dit_preset("hunyuan-13b")
    with torch.device("meta"):
        model = MagicInfiniteDiT(cfg)
    shapes = meta_shapes(model)
    backbone = {k: s for k, s in shapes.items() if not k.startswith(AUDIO_PREFIXES)}
    return cfg, shapes, backbone


def test_comfyui_13b_names_from_comfyui_source_map_exactly(ours_13b):
    cfg, shapes, backbone = ours_13b
    comfy = comfy_13b()
    meta = {k: torch.empty(s, device="meta") for k, s in comfy.items()}
    converted = cl.comfyui_to_original(meta)
    assert {k: tuple(v.shape) for k, v in converted.items()} == backbone
    back = cl.original_to_comfyui(converted)
    assert {k: tuple(v.shape) for k, v in back.items()} == comfy
    # the whole planned load: config inferred from shapes, audio layers the only thing left to init
    info = fake_info("comfyui", comfy, prefix="model.diffusion_model.")
    planned = cl.to_original(info, cl.meta_state_dict(info))
    assert cl.infer_dit_config(planned) == cfg
    cl.check_plan(shapes, [(info, planned)], cfg, allow_missing=AUDIO_PREFIXES)
    with pytest.raises(CheckpointError, match="audio_proj"):
        cl.check_plan(shapes, [(info, planned)], cfg)


def test_comfyui_fp8_scaled_13b_plan(ours_13b):
    cfg, shapes, _ = ours_13b
    comfy = comfy_13b()
    scaled = dict(comfy)
    for k, s in comfy.items():
        if k.endswith(".weight") and len(s) >= 2:
            scaled[k[: -len("weight")] + "scale_weight"] = ()
    scaled["scaled_fp8"] = (0,)
    info = fake_info("comfyui", scaled, dtype=torch.float8_e4m3fn)
    assert info.quantization == "fp8_scaled"
    planned = cl.to_original(info, cl.meta_state_dict(info), dtype=torch.bfloat16)
    assert all(v.dtype == torch.bfloat16 for v in planned.values())
    cl.check_plan(shapes, [(info, planned)], cfg, allow_missing=AUDIO_PREFIXES)


def test_diffusers_13b_names_map_exactly(ours_13b):
    cfg, _, backbone = ours_13b
    with torch.device("meta"):
        ref = diffusers_model(cfg)
    ref_shapes = meta_shapes(ref)
    info = fake_info("diffusers", ref_shapes)
    converted = cl.to_original(info, cl.meta_state_dict(info))
    assert {k: tuple(v.shape) for k, v in converted.items()} == backbone
    assert cl.infer_dit_config(converted) == cfg
    back = cl.convert_state_dict(converted, "original", "diffusers")
    assert {k: tuple(v.shape) for k, v in back.items()} == ref_shapes


def test_original_13b_under_module_prefix(ours_13b):
    cfg, shapes, backbone = ours_13b
    info = fake_info("original", backbone, prefix="module.")
    planned = cl.to_original(info, cl.meta_state_dict(info))
    assert planned.keys() == backbone.keys()
    cl.check_plan(shapes, [(info, planned)], cfg, allow_missing=AUDIO_PREFIXES)


def test_comfy_rules_are_a_bijection_on_every_backbone_key(ours_13b):
    _, _, backbone = ours_13b
    keys = list(backbone) + [f"guidance_in.mlp.{i}.{leaf}" for i in (0, 2) for leaf in ("weight", "bias")]
    comfy = [cl.original_key_to_comfyui(k) for k in keys]
    assert len(set(comfy)) == len(keys)
    assert [cl.comfyui_key_to_original(k) for k in comfy] == keys
    assert "guidance_in.in_layer.weight" in comfy


# ---------------------------------------------------------------- tiny random weights, every layout


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = dit_preset("tiny")
    torch.manual_seed(0)
    ref = diffusers_model(cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # diffusers zero-inits some layers; randomise all so every path is tested
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    original = diffusers_to_original(ref.state_dict())
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, cfg.in_channels, 3, 8, 8, generator=g)
    t = torch.tensor([600.0])
    txt = torch.randn(1, 5, cfg.text_dim, generator=g)
    mask = torch.ones(1, 5, dtype=torch.bool)
    pooled = torch.randn(1, cfg.pooled_dim, generator=g)
    with torch.no_grad():
        expected = ref(x, t, txt, mask, pooled, return_dict=False)[0]
    return dict(
        cfg=cfg,
        ref=ref,
        original=original,
        inputs=(x, t, txt, mask, pooled),
        expected=expected,
        dir=tmp_path_factory.mktemp("layouts"),
    )


def run(model: MagicInfiniteDiT, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(*inputs)


def save_all_layouts(t) -> dict[str, Path]:
    d, cfg, sd = t["dir"], t["cfg"], t["original"]
    paths = {
        "original": cl.save_transformer(
            d / "mp_rank_00_model_states.safetensors", sd, cfg=cfg, prefix="module."
        ),
        "comfyui": cl.save_transformer(
            d / "hunyuan_video_i2v_tiny.safetensors",
            sd,
            layout="comfyui",
            cfg=cfg,
            prefix="model.diffusion_model.",
        ),
        "diffusers": cl.save_transformer(
            d / "transformer", sd, layout="diffusers", cfg=cfg, max_shard_bytes=60_000
        ),
        "original_sharded": cl.save_transformer(d / "orig_shards", sd, cfg=cfg, max_shard_bytes=80_000),
    }
    paths["original_sharded"] = paths["original_sharded"] / "model.safetensors.index.json"
    return paths


@pytest.fixture(scope="module")
def saved(tiny):
    return save_all_layouts(tiny)


@pytest.mark.parametrize("layout", ["original", "comfyui", "diffusers", "original_sharded"])
def test_each_layout_loads_and_matches_diffusers(tiny, saved, layout):
    info = cl.detect_layout(saved[layout])
    assert info.layout == layout.replace("_sharded", "")
    if layout == "diffusers":
        assert len(info.files) > 1  # sharded with an index json
    model = cl.load_transformer(saved[layout], dtype=torch.float32)  # config inferred: matches "tiny"
    assert model.cfg == tiny["cfg"]
    got = run(model, tiny["inputs"])
    diff = (got - tiny["expected"]).abs().max().item()
    assert diff < 1e-4, f"{layout}: max abs diff {diff:.3e} vs diffusers"
    assert not any(v.is_meta for v in model.state_dict().values())


def test_missing_audio_layers_start_at_zero_effect(tiny, saved):
    model = cl.load_transformer(saved["comfyui"], dtype=torch.float32)
    assert model.cfg.audio is not None
    assert all(torch.count_nonzero(b.proj.weight) == 0 for b in model.audio_double_blocks)
    cfg = model.cfg
    x, t, txt, mask, pooled = tiny["inputs"]
    n_lat = x.shape[2]
    audio = torch.randn(
        1, 1, n_lat, cfg.audio.frames_per_latent, cfg.audio.frame_window, cfg.audio.feature_dim
    )
    grid = model.token_grid(tuple(x.shape[2:]))
    with torch.no_grad():
        with_audio = model(x, t, txt, mask, pooled, audio=audio, speaker_mask=torch.ones(1, 1, *grid))
    assert torch.allclose(with_audio, tiny["expected"], atol=1e-4)
    with pytest.raises(CheckpointError, match="audio_proj"):
        cl.load_transformer(saved["comfyui"], dtype=torch.float32, allow_missing_audio=False)


def test_stage2_overlay_supplies_audio_layers(tiny, saved, tmp_path):
    torch.manual_seed(5)
    stage2 = MagicInfiniteDiT(tiny["cfg"])
    with torch.no_grad():
        for n, p in stage2.named_parameters():
            if n.startswith(AUDIO_PREFIXES):
                p.normal_(0, 0.02)
    audio_only = {k: v for k, v in stage2.state_dict().items() if k.startswith(AUDIO_PREFIXES)}
    overlay = cl.save_transformer(
        tmp_path / "magicinfinite_stage2.safetensors", audio_only, layout="magicinfinite", cfg=tiny["cfg"]
    )
    model = cl.load_transformer(saved["diffusers"], overlays=[overlay], dtype=torch.float32)
    sd = model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in audio_only.items())
    assert torch.equal(sd["img_in.proj.weight"], tiny["original"]["img_in.proj.weight"])
    # a whole stage-2 file of ours (config in metadata) loads alone
    full = save_dit(tmp_path / "full.safetensors", stage2)
    assert cl.detect_layout(full).layout == "magicinfinite"
    loaded = cl.load_transformer(full, dtype=torch.float32)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in stage2.state_dict().items())


def test_round_trips_are_exact(tiny, saved, tmp_path):
    for layout, name in (("original", "module."), ("comfyui", "model.diffusion_model.")):
        model = cl.load_transformer(saved[layout], dtype=torch.float32)
        out = cl.save_transformer(tmp_path / f"{layout}.safetensors", model, layout=layout, prefix=name)
        a, b = load_file(str(saved[layout])), load_file(str(out))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), layout
    # original -> diffusers -> original without a model in between
    sd = tiny["original"]
    back = cl.convert_state_dict(cl.convert_state_dict(sd, "original", "diffusers"), "diffusers", "original")
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)


def test_bf16_and_fp8_scaled_files_dequantise(tiny, tmp_path):
    cfg, sd = tiny["cfg"], tiny["original"]
    bf16 = cl.save_transformer(
        tmp_path / "bf16.safetensors", sd, layout="comfyui", cfg=cfg, dtype=torch.bfloat16
    )
    m16 = cl.load_transformer(bf16, dtype=torch.float32)
    key = "double_blocks.0.img_attn_qkv.weight"
    assert torch.equal(m16.state_dict()[key], sd[key].to(torch.bfloat16).float())

    fp8 = cl.save_transformer(
        tmp_path / "fp8_scaled.safetensors",
        sd,
        layout="comfyui",
        cfg=cfg,
        fp8_scaled=True,
        prefix="model.diffusion_model.",
    )
    raw = load_file(str(fp8))
    assert raw["model.diffusion_model.double_blocks.0.img_attn.qkv.weight"].dtype == torch.float8_e4m3fn
    assert "model.diffusion_model.double_blocks.0.img_attn.qkv.scale_weight" in raw
    info = cl.detect_layout(fp8)
    assert (info.layout, info.quantization) == ("comfyui", "fp8_scaled")
    m8 = cl.load_transformer(fp8, dtype=torch.float32)
    w8 = raw["model.diffusion_model.double_blocks.0.img_attn.qkv.weight"].float()
    s8 = raw["model.diffusion_model.double_blocks.0.img_attn.qkv.scale_weight"]
    assert torch.equal(m8.state_dict()[key], w8 * s8)
    rel = (m8.state_dict()[key] - sd[key]).abs().max() / sd[key].abs().max()
    assert rel < 0.07  # e4m3 keeps 3 mantissa bits
    diff = (run(m8, tiny["inputs"]) - tiny["expected"]).abs().max().item()
    assert diff < 0.1 * tiny["expected"].abs().max().item()

    # the newer ComfyUI mixed-precision naming: <layer>.weight_scale (+ input_scale)
    renamed = {
        k.replace(".scale_weight", ".weight_scale"): v
        for k, v in raw.items()
        if k != "model.diffusion_model.scaled_fp8"
    }
    renamed["model.diffusion_model.double_blocks.0.img_attn.qkv.input_scale"] = torch.tensor(1.0)
    save_file(renamed, str(tmp_path / "mixed.safetensors"))
    mm = cl.load_transformer(tmp_path / "mixed.safetensors", dtype=torch.float32)
    assert torch.equal(mm.state_dict()[key], w8 * s8)


def test_meta_then_assign_keeps_dtype_and_device(saved):
    model = cl.load_transformer(saved["comfyui"], dtype=torch.bfloat16, device="cpu")
    dtypes = {v.dtype for v in model.state_dict().values()}
    assert dtypes == {torch.bfloat16}


# ---------------------------------------------------------------- damaged and mislabelled files


def test_truncated_file_names_file_layout_and_first_bad_key(saved, tmp_path):
    data = saved["comfyui"].read_bytes()
    cut = tmp_path / "hunyuan_video_cut.safetensors"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(CheckpointError) as e:
        cl.load_transformer(cut)
    msg = str(e.value)
    assert "hunyuan_video_cut.safetensors" in msg and "layout detected: comfyui" in msg
    assert "first bad key: 'model.diffusion_model." in msg and "truncated" in msg
    head = tmp_path / "header_cut.safetensors"
    head.write_bytes(data[:100])
    with pytest.raises(CheckpointError, match=r"header_cut.safetensors.*layout detected: unknown.*header"):
        cl.detect_layout(head)


def test_mixed_and_mislabelled_files(tiny, tmp_path):
    cfg, sd = tiny["cfg"], tiny["original"]
    comfy = cl.convert_state_dict(sd, "original", "comfyui")
    comfy["double_blocks.1.img_attn_qkv.weight"] = comfy.pop("double_blocks.1.img_attn.qkv.weight")
    save_file({k: v.contiguous() for k, v in comfy.items()}, str(tmp_path / "mixed.safetensors"))
    with pytest.raises(CheckpointError) as e:
        cl.detect_layout(tmp_path / "mixed.safetensors")
    assert "mixed.safetensors" in str(e.value) and "layout detected: comfyui" in str(e.value)
    assert "first bad key: 'double_blocks.1.img_attn_qkv.weight'" in str(e.value)

    # a VAE named like a transformer
    save_file(
        {"encoder.down_blocks.0.resnets.0.conv1.conv.weight": torch.zeros(2, 2, 1, 1, 1)},
        str(tmp_path / "hunyuan_video_720_bf16.safetensors"),
    )
    with pytest.raises(CheckpointError, match=r"hunyuan_video_720_bf16.*unknown.*first bad key.*VAE"):
        cl.load_transformer(tmp_path / "hunyuan_video_720_bf16.safetensors")

    # a file of a different size than the config asked for
    wrong = replace(cfg, hidden_size=64, num_heads=2, rope_dims=(8, 12, 12))
    p = cl.save_transformer(tmp_path / "other.safetensors", sd, layout="comfyui", cfg=cfg)
    with pytest.raises(CheckpointError) as e:
        cl.load_transformer(p, cfg=wrong)
    assert "other.safetensors" in str(e.value) and "layout detected: comfyui" in str(e.value)
    assert "first bad key: 'double_blocks.0." in str(e.value) and "in the file but" in str(e.value)

    # an incomplete diffusers folder (one block dropped)
    diff = cl.convert_state_dict(sd, "original", "diffusers")
    diff = {k: v for k, v in diff.items() if not k.startswith("single_transformer_blocks.1.")}
    folder = tmp_path / "broken_transformer"
    cl.save_transformer(
        folder, cl.convert_state_dict(diff, "diffusers", "original"), layout="diffusers", cfg=cfg
    )
    with pytest.raises(CheckpointError) as e:
        cl.load_transformer(folder, cfg=cfg)
    assert "broken_transformer" in str(e.value) and "layout detected: diffusers" in str(e.value)
    assert "first bad key: 'single_blocks.1." in str(e.value) and "missing" in str(e.value)

    # a missing shard
    shards = cl.save_transformer(tmp_path / "sh", sd, cfg=cfg, max_shard_bytes=80_000)
    next(shards.glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match=r"model-00002-of-.*missing.*first key it holds"):
        cl.detect_layout(shards / "model.safetensors.index.json")

    pt = tmp_path / "mp_rank_00_model_states.pt"
    pt.write_bytes(b"\x80\x02pickle")
    with pytest.raises(CheckpointError, match="never pickled"):
        cl.detect_layout(pt)


def test_audio_feature_size_mismatch_is_explained(tiny, tmp_path):
    cfg = tiny["cfg"]
    stage2 = MagicInfiniteDiT(cl.with_audio_feature_dim(cfg, 96))
    p = save_dit(tmp_path / "stage2_other_audio.safetensors", stage2)
    with pytest.raises(CheckpointError, match=r"audio_proj\.frame_in\.weight.*96 features per video frame"):
        cl.load_transformer(p, cfg=cfg)


# ---------------------------------------------------------------- wav2vec2 sizes, folder listing


@pytest.mark.parametrize("size", ["base", "large"])
def test_wav2vec2_sizes_map_to_audio_projection(tmp_path, size):
    layers, hidden = cl.WAV2VEC2_SIZES[size]
    sd = {f"wav2vec2.encoder.layers.{i}.final_layer_norm.bias": torch.zeros(1) for i in range(layers)}
    sd["wav2vec2.encoder.layer_norm.weight"] = torch.zeros(hidden)
    save_file(sd, str(tmp_path / f"wav2vec2-{size}.safetensors"))
    dim = cl.wav2vec2_feature_dim(tmp_path / f"wav2vec2-{size}.safetensors")
    assert dim == {"base": 9216, "large": 24576}[size]
    folder = tmp_path / size
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"num_hidden_layers": layers, "hidden_size": hidden}))
    assert cl.wav2vec2_feature_dim(folder) == dim
    cfg = cl.with_audio_feature_dim(dit_preset("tiny"), dim)
    with torch.device("meta"):
        model = MagicInfiniteDiT(cfg)
    assert model.audio_proj.frame_in.in_features == cfg.audio.frame_window * dim


def test_list_model_files(saved):
    listed = cl.list_model_files(saved["original"].parent)
    assert "mp_rank_00_model_states.safetensors" in listed
    assert "transformer" in listed  # the diffusers folder, not its shards
    assert "orig_shards/model.safetensors.index.json" in listed
    assert not any("-of-" in name for name in listed)
