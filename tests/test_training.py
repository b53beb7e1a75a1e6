"""Trainer pieces: losses, condition dropout, a few CPU steps, exact resume, 2-process gloo run,
config overrides and input checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from magicinfinite_core.weights.checkpoints import load_state_dict, save_state_dict
from magicinfinite_core.weights.transformer_layouts import load_transformer
from training.conditioning import DropoutConfig, assemble, draw_dropout, model_input
from training.losses import LossConfig, adaptive_flow_loss, masked_mean
from training.trainer import (
    CacheData,
    StageConfig,
    TrainConfig,
    build_model,
    run,
    train_step_loss,
)
from training.training_state import load_optimizer_tensors, optimizer_tensors

C, T, H, W, L, DT, D = 4, 5, 4, 4, 6, 16, 8

TINY_DIT = {
    "hidden_size": 32, "num_heads": 2, "depth_double": 1, "depth_single": 2, "mlp_ratio": 2.0,
    "patch_size": [1, 2, 2], "rope_dims": [4, 6, 6], "in_channels": 2 * C + 1, "out_channels": C,
    "text_dim": DT, "pooled_dim": DT, "refiner_depth": 1, "image_token_dim": 4 * C,
    "audio": {"feature_dim": D, "frame_window": 5, "frames_per_latent": 4, "proj_dim": 16,
              "tokens_per_latent_frame": 2, "context_dim": 16, "num_heads": 2, "single_block_every": 2},
}


def make_cache(root: Path, n: int = 4, seed: int = 0) -> Path:
    """A synthetic preprocessing cache with the real file layout (no VAE / encoders needed)."""
    g = torch.Generator().manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        face = torch.zeros(H, W)
        face[1:3, 1:3] = 1
        mouth = torch.zeros(H, W)
        mouth[2, 1:3] = 1
        t = {
            "latent": torch.randn(C, T, H, W, generator=g),
            "audio": torch.randn(T, 4, 5, D, generator=g).half(),
            "face_tokens": torch.ones(T, H // 2, W // 2),
            "face_latent": face,
            "mouth_latent": mouth,
            "text_tokens": torch.randn(L, DT, generator=g).half(),
            "text_mask": torch.tensor([True] * 4 + [False] * (L - 4)),
            "pooled": torch.randn(DT, generator=g),
            "image_tokens": torch.randn((H // 2) * (W // 2), 4 * C, generator=g),
            "portrait": torch.zeros(4 * H, 4 * W, 3, dtype=torch.uint8),
        }
        name = f"clip{i}.safetensors"
        save_state_dict(root / name, t, kind="magicinfinite-cache-clip", extra={"meta": "{}"})
        rows.append({"name": f"clip{i}", "file": name, "split": "train"})
    save_state_dict(root / "null_text.safetensors", {
        "text_tokens": torch.zeros(L, DT).half(), "text_mask": torch.tensor([True, True] + [False] * (L - 2)),
        "pooled": torch.zeros(DT)}, kind="null")
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def tiny_config(tmp: Path, **stage_kw) -> TrainConfig:
    st = {"steps": 1000, "lr": 3e-3, "warmup": 1, "batch": 2, **stage_kw}
    return TrainConfig(
        cache=str(make_cache(tmp / "cache")), out=str(tmp / "out"), dit=TINY_DIT,
        stage1=StageConfig(**st),
        stage2=StageConfig(**{**st, "face_weight": 10.0, "mouth_weight": 5.0, "init": "none"}),
        dropout={"window_lengths": [3, 5], "window_probs": [0.5, 0.5]}, log_every=1, save_minutes=1e6,
        save_every=0, progress=False,
    )


# ----------------------------------------------------------------------------------------- losses
def test_masked_mean_empty_mask_is_zero():
    err = torch.ones(2, 3, 2, 4, 4)
    m = torch.zeros(2, 4, 4)
    m[0, 0, 0] = 1
    out = masked_mean(err, m)
    assert out.tolist() == [1.0, 0.0]


def test_adaptive_loss_weighs_small_faces_more():
    """Same error on one face pixel: the smaller the face, the larger its gradient (Eq. 3)."""
    target = torch.zeros(1, 2, 1, 8, 8)

    def grad_at_error(face_pixels: int) -> float:
        pred = torch.zeros(1, 2, 1, 8, 8, requires_grad=True)
        with torch.no_grad():
            pred[0, :, 0, 0, 0] = 1.0
        face = torch.zeros(1, 8, 8)
        face.view(-1)[:face_pixels] = 1
        loss, _ = adaptive_flow_loss(pred, target, face, None, LossConfig(face_weight=10.0))
        loss.backward()
        return float(pred.grad[0, 0, 0, 0, 0])

    small, large = grad_at_error(2), grad_at_error(32)
    assert small > large > 0
    # analytic: d/dp of mean(err) + 10 * face-mean(err) = 2/N + 10 * 2/(C * face * T)
    n = 2 * 8 * 8
    assert small == pytest.approx(2 / n + 10 * 2 / (2 * 2), rel=1e-5)


def test_adaptive_loss_sample_weight_switches_face_term_off():
    pred, target = torch.ones(2, 1, 1, 4, 4), torch.zeros(2, 1, 1, 4, 4)
    face = torch.ones(2, 4, 4)
    on, parts = adaptive_flow_loss(pred, target, face, None, LossConfig(10.0), torch.tensor([1.0, 1.0]))
    off, _ = adaptive_flow_loss(pred, target, face, None, LossConfig(10.0), torch.tensor([0.0, 0.0]))
    assert float(on) == pytest.approx(11.0) and float(off) == pytest.approx(1.0)
    assert set(parts) == {"base", "face"}


def test_temporal_loss_sees_jitter_not_a_steady_offset():
    """Same per-frame error size: a steady offset costs nothing extra, an error that flips sign from one
    latent frame to the next (a jumping head) does, and only inside the face."""
    target = torch.zeros(1, 2, 4, 4, 4)
    steady = torch.ones(1, 2, 4, 4, 4)
    flipping = torch.tensor([1.0, -1.0, 1.0, -1.0]).view(1, 1, 4, 1, 1).expand(1, 2, 4, 4, 4)
    face = torch.zeros(1, 4, 4)
    face[0, :2] = 1
    cfg = LossConfig(face_weight=0.0, temporal_weight=10.0)
    a, pa = adaptive_flow_loss(steady, target, face, None, cfg)
    b, pb = adaptive_flow_loss(flipping, target, face, None, cfg)
    assert float(pa["temporal"]) == 0.0 and float(a) == pytest.approx(1.0)
    assert float(pb["temporal"]) == pytest.approx(4.0) and float(b) == pytest.approx(1.0 + 10 * 4.0)
    jitter_out = flipping.clone()
    jitter_out[..., :3, :] = 0  # the jumps only in rows the face does not cover
    jitter_out[..., 3, :3] = 0
    _, po = adaptive_flow_loss(jitter_out, target, face, None, cfg)
    assert float(po["temporal"]) == 0.0


# ---------------------------------------------------------------------------------------- dropout
def test_dropout_is_deterministic_and_mid_windows_have_no_concat():
    cfg = DropoutConfig()
    a = draw_dropout(512, 9, cfg, torch.Generator().manual_seed(3))
    b = draw_dropout(512, 9, cfg, torch.Generator().manual_seed(3))
    c = draw_dropout(512, 9, cfg, torch.Generator().manual_seed(4))
    for k in ("audio", "text", "image", "concat", "starts"):
        assert torch.equal(getattr(a, k), getattr(b, k))
    assert not all(torch.equal(getattr(a, k), getattr(c, k)) for k in ("audio", "text", "starts"))
    assert not a.concat[a.starts > 0].any()
    assert (a.starts + a.length <= 9).all()
    both = a.audio & a.text & a.image
    assert 0.05 < float(both.float().mean()) < 0.2  # the joint UNCOND drop (p_all = 0.1) happens
    assert 0.1 < float(a.text.float().mean()) < 0.3
    stage1 = draw_dropout(16, 9, cfg, torch.Generator().manual_seed(0), use_audio=False)
    assert stage1.audio.all()


def test_assemble_uses_null_text_and_zeroes_dropped_audio(tmp_path):
    data = CacheData(make_cache(tmp_path / "c"))
    items = data.batch(torch.tensor([0, 1]))
    draw = draw_dropout(2, T, DropoutConfig(window_lengths=(3,), window_probs=(1.0,)), torch.Generator().manual_seed(0))
    draw.text = torch.tensor([True, False])
    draw.audio = torch.tensor([True, False])
    draw.concat = torch.tensor([False, True])
    draw.starts = torch.tensor([0, 0])
    b = assemble(items, draw, data.null_text, use_audio=True)
    assert torch.equal(b["txt"][0], data.null_text["text_tokens"].float())
    assert torch.equal(b["txt"][1], items["text_tokens"][1].float())
    assert float(b["speaker_mask"][0].abs().sum()) == 0 and float(b["speaker_mask"][1].sum()) > 0
    x = model_input(torch.zeros_like(b["data"]), b)
    assert float(x[0, C:].abs().sum()) == 0  # no concat for sample 0
    assert torch.equal(x[1, C:2 * C, 0], items["latent"][1, :, 0].float()) and float(x[1, 2 * C, 0].min()) == 1.0


def test_every_frame_input_keeps_the_portrait_in_mid_clip_windows(tmp_path):
    """every_frame models: the clip's frame-0 latent sits in every frame of every window unless the
    image condition is dropped; the frame-0 mark only where the window starts the clip."""
    data = CacheData(make_cache(tmp_path / "c"))
    items = data.batch(torch.tensor([0, 1, 1]))
    draw = draw_dropout(3, T, DropoutConfig(window_lengths=(3,), window_probs=(1.0,)), torch.Generator().manual_seed(0))
    draw.image = torch.tensor([False, False, True])
    draw.starts = torch.tensor([0, 1, 1])
    b = assemble(items, draw, data.null_text, use_audio=True)
    x = model_input(torch.zeros_like(b["data"]), b, every_frame=True)
    portrait = items["latent"][:, :, :1].float()
    assert torch.equal(x[0, C:2 * C], portrait[0].expand(-1, 3, -1, -1)) and float(x[0, 2 * C, 0].min()) == 1.0
    assert torch.equal(x[1, C:2 * C], portrait[1].expand(-1, 3, -1, -1)) and float(x[1, 2 * C].abs().sum()) == 0
    assert float(x[2, C:].abs().sum()) == 0  # image condition dropped: no portrait, no mark


# ---------------------------------------------------------------------------------------- trainer
def test_few_cpu_steps_reduce_loss(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config(tmp_path)
    model = build_model(cfg, 1)
    data = CacheData(cfg.cache)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    from contextlib import nullcontext

    losses = []
    for _ in range(30):
        loss, _ = train_step_loss(model, data, cfg, 1, step=0, rank=0, autocast=nullcontext)  # one fixed batch
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_stage2_starts_equal_to_stage1(tmp_path):
    cfg = tiny_config(tmp_path)
    path = run(cfg, 1, max_steps=1)
    cfg.stage2.init = str(path)
    m1, m2 = build_model(cfg, 1).eval(), build_model(cfg, 2).eval()

    m1 = load_transformer(path)
    x = torch.randn(1, 2 * C + 1, 3, H, W)
    args = (x, torch.tensor([500.0]), torch.randn(1, L, DT), None, torch.randn(1, DT))
    audio = torch.randn(1, 1, 3, 4, 5, D)
    mask = torch.ones(1, 1, 3, H // 2, W // 2)
    with torch.no_grad():
        assert torch.allclose(m1(*args), m2(*args, audio=audio, speaker_mask=mask), atol=1e-6)


def test_head_channels_only_trains_those_output_rows_and_keeps_every_other_weight_bit_for_bit(tmp_path):
    """`stage2.head_channels_only` (the demo v10's expression channel): after a few stage-2 steps from a stage-1
    model, the final layer's rows that write channel 1 have moved and every other weight is exactly the init's;
    a channel the model does not write is refused by name."""
    cfg = tiny_config(tmp_path)
    init = run(cfg, 1, max_steps=1)
    cfg.stage2.init, cfg.stage2.head_channels_only = str(init), (1,)
    cfg.weight_decay = 0.5  # would move every row if the frozen ones took part
    cfg.out = str(tmp_path / "out2")
    start = build_model(cfg, 2).state_dict()
    trained = load_state_dict(run(cfg, 2, max_steps=3))
    patch = 4  # 1 x 2 x 2
    rows = torch.zeros(start["final_layer.linear.weight"].shape[0], dtype=torch.bool)
    rows[1 * patch : 2 * patch] = True
    for name, before in start.items():
        after = trained[name].to(before.dtype)
        if name.startswith("final_layer.linear."):
            assert torch.equal(after[~rows], before[~rows]) and not torch.equal(after[rows], before[rows]), name
        else:
            assert torch.equal(after, before), name
    cfg.stage2.head_channels_only = (C,)
    with pytest.raises(ValueError, match=r"head_channels_only \[4\]"):
        run(cfg, 2, max_steps=1)


def test_stage_sigmas_train_only_at_those_noise_levels(tmp_path):
    """`stage.sigmas` (a few-step generator's own noise levels): every batch is drawn at one of them, each of them
    comes up, and a level outside (0, 1] is refused by name."""
    from contextlib import nullcontext

    cfg = tiny_config(tmp_path)
    cfg.stage1.sigmas = (0.5, 0.9)
    model, data = build_model(cfg, 1), CacheData(cfg.cache)
    seen = []
    model.register_forward_pre_hook(lambda _m, _a, kw: seen.append(kw["timestep"].clone()), with_kwargs=True)
    with torch.no_grad():
        for step in range(4):
            train_step_loss(model, data, cfg, 1, step=step, rank=0, autocast=nullcontext)
    drawn = {round(float(t)) for t in torch.cat(seen)}
    assert drawn == {500, 900}
    with pytest.raises(ValueError, match=r"sigmas must lie in \(0, 1\], got \[0.0, 0.5\]"):
        StageConfig(sigmas=(0.0, 0.5))


def test_resume_gives_identical_next_step_loss(tmp_path):
    def losses(out: Path) -> dict[int, float]:
        rows = [json.loads(x) for x in (out / "stage2" / "log.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in rows if "loss" in r}

    straight = tiny_config(tmp_path / "a")
    run(straight, 2, max_steps=4)
    resumed = tiny_config(tmp_path / "b")
    run(resumed, 2, max_steps=2)
    run(resumed, 2, max_steps=4)  # picks up dit_last + state_last
    la, lb = losses(Path(straight.out)), losses(Path(resumed.out))
    assert la[3] == lb[3] and la[4] == lb[4]


def test_optimizer_state_roundtrip():
    p = torch.nn.Parameter(torch.randn(3))
    opt = torch.optim.AdamW([p], lr=0.1)
    p.sum().backward()
    opt.step()
    names = {id(p): "w"}
    t = optimizer_tensors(opt, names)
    q = torch.nn.Parameter(p.detach().clone())
    opt2 = torch.optim.AdamW([q], lr=0.1)
    load_optimizer_tensors(opt2, {id(q): "w"}, t)
    assert torch.equal(opt2.state[q]["exp_avg"], opt.state[p]["exp_avg"])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_accelerate_cpu2_config_runs_two_processes(tmp_path):
    """The documented `accelerate launch --config_file training/configs/accelerate_cpu2.yaml` really
    starts 2 CPU processes (gloo): every logged step says so, and the weights are written."""
    cfg = tiny_config(tmp_path)
    from dataclasses import asdict

    d = asdict(cfg)
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(d))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    yaml = Path(__file__).resolve().parents[1] / "training" / "configs" / "accelerate_cpu2.yaml"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(yaml),
           "-m", "training.trainer", "--stage", "2", "--config", str(path), "--max-steps", "3", "--cpu"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(x) for x in (Path(cfg.out) / "stage2" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    assert all(r["processes"] == 2 for r in rows)
    assert (Path(cfg.out) / "stage2" / "dit_last.safetensors").is_file()


@pytest.mark.slow
def test_preprocess_cache_is_deterministic_and_resumes(tmp_path):
    from training.data.speech import espeak_available

    if not espeak_available():
        pytest.skip("espeak-ng is needed to build world clips")
    from magicinfinite_core.config import VAEConfig
    from magicinfinite_core.media.autoencoders import save_autoencoder
    from magicinfinite_core.media.vae import VideoVAE
    from magicinfinite_core.weights.checkpoints import load_state_dict
    from training.data.clip import make_clip, save_clip
    from training.data.render import WorldConfig
    from training.preprocess import preprocess, read_cache_manifest

    torch.manual_seed(0)
    vae_path = save_autoencoder(tmp_path / "vae.safetensors", VideoVAE(VAEConfig(spatial_compression_ratio=4)))
    for i in range(2):
        save_clip(make_clip(i, "train", 9, WorldConfig(32, 32, 0.3, 0.4, 1, 0.0)), tmp_path / "data" / f"c{i}")
    from magicinfinite_core.distributed.ray_runtime import init_ray

    ray = init_ray(num_cpus=2)  # one local Ray for the three runs (each would start its own)
    try:
        a = preprocess([tmp_path / "data"], vae_path, tmp_path / "a", log_every=0)
        first = load_state_dict(tmp_path / "a" / "c0.safetensors")
        (tmp_path / "a" / "c1.safetensors").unlink()  # an interrupted run: one clip missing
        preprocess([tmp_path / "data"], vae_path, tmp_path / "a", log_every=0)
        preprocess([tmp_path / "data"], vae_path, tmp_path / "b", log_every=0)
    finally:
        ray.shutdown()
    assert [r["name"] for r in read_cache_manifest(a.parent)] == ["c0", "c1"]
    for name in ("c0", "c1"):
        x, y = load_state_dict(tmp_path / "a" / f"{name}.safetensors"), load_state_dict(tmp_path / "b" / f"{name}.safetensors")
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    assert first["latent"].shape == (4, 3, 8, 8)  # 4 channels, 9 frames -> 3 latent frames, 32 px / 4
    assert first["audio"].shape[:3] == (3, 4, 5) and first["face_tokens"].shape == (3, 2, 2)
    assert float(first["mouth_latent"].sum()) > 0 and float(first["face_latent"].sum()) > 0


def test_lr_factor_warms_up_then_anneals_to_the_floor():
    st = StageConfig(steps=100, warmup=10, decay_start=50, lr_floor=0.1)
    assert st.lr_factor(0) == pytest.approx(0.1)  # warm-up
    assert st.lr_factor(20) == st.lr_factor(49) == 1.0  # constant until the decay starts
    f = [st.lr_factor(s) for s in range(50, 101)]
    assert all(a >= b for a, b in zip(f, f[1:], strict=False))  # monotone cosine
    assert f[0] == 1.0 and f[-1] == pytest.approx(0.1) and f[25] == pytest.approx(0.55)
    assert StageConfig(steps=100, warmup=1).lr_factor(99) == 1.0  # no decay by default


def test_export_writes_fp16_assets_and_a_bundle_the_pipeline_loads(tmp_path):
    from magicinfinite_core.config import VAEConfig
    from magicinfinite_core.errors import CheckpointError
    from magicinfinite_core.media.autoencoders import save_autoencoder
    from magicinfinite_core.media.vae import VideoVAE
    from magicinfinite_core.weights.bundle import load_bundle
    from training.trainer import export_demo

    cfg = tiny_config(tmp_path)
    dit = run(cfg, 1, max_steps=1)
    cfg.vae = str(save_autoencoder(tmp_path / "vae.safetensors", VideoVAE(VAEConfig(latent_channels=C, spatial_compression_ratio=4))))
    assets = tmp_path / "assets"
    export_demo(cfg, dit, assets, card={"recommended_guidance": {"audio_scale": 3.0, "text_scale": 0.0}})
    from magicinfinite_core.weights.checkpoints import load_state_dict

    assert {v.dtype for v in load_state_dict(assets / "dit.safetensors").values()} == {torch.float16}
    bundle = load_bundle(assets)
    steps, shift, guidance, _ = bundle.resolve_sampling(False)
    assert (steps, shift, guidance.audio_scale, guidance.text_scale) == (20, cfg.train_shift, 3.0, 0.0)
    with pytest.raises(CheckpointError, match="no distilled generator"):  # a fresh base has none yet
        load_bundle(assets, distilled=True)


def test_export_writes_the_chosen_decode_settings_and_refuses_unknown_ones(tmp_path):
    from magicinfinite_core.media.autoencoders import save_autoencoder
    from magicinfinite_core.media.motion_autoencoder import MotionAutoencoder, MotionAutoencoderConfig
    from magicinfinite_core.weights.bundle import load_bundle
    from training.runconfig import ConfigError
    from training.trainer import export_demo

    cfg = tiny_config(tmp_path)
    dit = run(cfg, 1, max_steps=1)
    cfg.vae = str(save_autoencoder(tmp_path / "vae.safetensors", MotionAutoencoder(MotionAutoencoderConfig(residual_channels=0))))
    cfg.export.decode = {"flow_deadzone": 0.8, "flow_smoothing": 1.0, "residual_gain": 0.0}
    export_demo(cfg, dit, tmp_path / "assets")
    got = load_bundle(tmp_path / "assets").vae.cfg
    assert (got.flow_deadzone, got.flow_smoothing, got.residual_gain) == (0.8, 1.0, 0.0)
    cfg.export.decode = {"flow_deadzone": 0.8, "deadzone": 1.0}
    with pytest.raises(ConfigError, match="export.decode: deadzone not settings of the motion autoencoder"):
        export_demo(cfg, dit, tmp_path / "other")
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("name", ["demo.json", "demo_anneal.json", "toy.json", "demo_v2.json", "demo_v3_still.json", "demo_v4.json", "demo_v7.json", "demo_v8.json",
                                  "demo_v10.json", "demo_v10_4step.json", "demo_v10_head_rows.json",
                                  "demo_v10_head_rows_4step.json", "demo_v10_whole_finetune_tried.json",
                                  "demo_v10_4step_own_sigmas.json", "demo_v10_2.json", "demo_v10_2_4step.json"])
def test_shipped_training_configs_parse_into_the_demo_model(name):
    cfg = TrainConfig.from_json(Path(__file__).resolve().parents[1] / "training" / "configs" / name).resolved()
    assert cfg.dit_config(2).audio is not None and cfg.dit_config(1).audio is None
    assert cfg.stage2.lr_factor(0) > 0 and cfg.stage2.init  # stage 2 starts from stage 1's weights


# ------------------------------------------------------------------ command line, paths, splits
DEMO_JSON = Path(__file__).resolve().parents[1] / "training" / "configs" / "demo.json"


def test_fresh_clone_stage1_prints_one_error_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from training.trainer import main

    monkeypatch.chdir(tmp_path)
    assert main(["--stage", "1", "--config", str(DEMO_JSON)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no preprocessing cache at out/demo/cache" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_nested_overrides_and_run_folder_paths():
    from training.runconfig import parse_sets

    cfg = TrainConfig.from_json(DEMO_JSON, parse_sets(["stage2.lr=1e-4", "out=/tmp/x y", "dit.depth_single=2",
                                                       "dropout.window_lengths=[5, 9]"])).resolved()
    assert cfg.stage2.lr == 1e-4 and cfg.stage1.lr == 5e-4 and cfg.dit["depth_single"] == 2
    assert cfg.out == "/tmp/x y" and cfg.cache == "/tmp/x y/cache" and cfg.heldout_cache == cfg.cache
    assert cfg.vae == "/tmp/x y/vae/vae.safetensors"
    assert cfg.stage2.init == "/tmp/x y/stage1/dit_last.safetensors"  # the run's own stage 1


@pytest.mark.parametrize(("sets", "message"), [
    (["stage2.lrr=1"], "unknown setting 'stage2.lrr'"),
    (["stage3.lr=1"], "unknown setting 'stage3'"),
    (["stage2.steps=1.5"], "stage2.steps: expected int, got 1.5"),
    (["seed=abc"], "seed: expected int, got 'abc'"),
    (["dit.hidden=3"], "unknown setting 'dit.hidden'"),
    (["outx"], "expected KEY=VALUE"),
])
def test_bad_override_is_one_clear_error_line(sets, message, tmp_path, monkeypatch, capsys):
    from training.trainer import main

    monkeypatch.chdir(tmp_path)
    assert main(["--stage", "2", "--config", str(DEMO_JSON), "--set", *sets]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_flags_set_the_stage_knobs(tmp_path):
    from training.trainer import build_parser, config_from_args

    a = build_parser().parse_args(["--stage", "2", "--config", str(DEMO_JSON), "--out", str(tmp_path),
                                   "--steps", "7", "--batch", "3", "--minutes", "0", "--save-every", "5"])
    cfg = config_from_args(a)
    assert (cfg.stage2.steps, cfg.stage2.batch, cfg.stage2.minutes, cfg.save_every) == (7, 3, 0.0, 5)
    assert cfg.stage1.steps == 100000 and cfg.out == str(tmp_path)


def test_trainer_reads_only_the_train_split(tmp_path):
    cache = make_cache(tmp_path / "cache", n=4)
    rows = [json.loads(x) for x in (cache / "manifest.jsonl").read_text().splitlines()]
    rows[1]["split"] = rows[3]["split"] = "heldout"
    (cache / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = CacheData(cache)
    assert [r["name"] for r in data.rows] == ["clip0", "clip2"] and data.counts == {"train": 2, "heldout": 2}
    from training.distill.batch import PreprocessCache

    assert len(PreprocessCache(cache)) == 2
    for r in rows:
        r["split"] = "heldout"
    (cache / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(RuntimeError, match="no cached clips of the train split"):
        CacheData(cache)


def test_evaluation_refuses_train_clips(tmp_path):
    from training.eval.evaluate import QuickEval, heldout_clips

    with pytest.raises(ValueError, match="refuses clips of the train split"):
        QuickEval(make_cache(tmp_path / "cache"), tmp_path / "vae.safetensors")
    for name, split in (("train_000000", "train"), ("heldout_000000", "heldout")):
        (tmp_path / "world" / name).mkdir(parents=True)
        (tmp_path / "world" / name / "meta.json").write_text(json.dumps({"split": split}))
    assert [d.name for d in heldout_clips(tmp_path / "world")] == ["heldout_000000"]
    (tmp_path / "world" / "heldout_000000" / "meta.json").write_text(json.dumps({"split": "train"}))
    with pytest.raises(ValueError, match="no held-out clips"):
        heldout_clips(tmp_path / "world")


def test_trim_log_drops_records_after_the_resumed_step(tmp_path):
    from training.runconfig import trim_log

    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": s}) + "\n" for s in range(1, 6))
                   + json.dumps({"event": "start", "start_step": 0}) + "\n" + '{"step": 6, "lo')  # cut by a kill
    assert trim_log(log, 3) == 3
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r.get("step") for r in rows] == [1, 2, 3, None]


def test_resume_skips_a_checkpoint_cut_by_a_kill_and_saves_on_steps(tmp_path):
    from training.trainer import latest_resume

    cfg = tiny_config(tmp_path)
    cfg.save_every = 2
    run(cfg, 2, max_steps=5)
    stage = Path(cfg.out) / "stage2"
    assert sorted(p.name for p in (stage / "resume").glob("step_*")) == ["step_00000004", "step_00000005"]
    (stage / "resume" / ".tmp_step_00000006").mkdir()  # a save that a SIGKILL interrupted
    assert latest_resume(stage)[1].parent.name == "step_00000005"


def test_export_refuses_the_package_and_names_the_bundle_after_the_run(tmp_path, capsys):
    from magicinfinite_core.config import VAEConfig
    from magicinfinite_core.media.autoencoders import save_autoencoder
    from magicinfinite_core.media.vae import VideoVAE
    from training.trainer import main

    cfg = tiny_config(tmp_path / "myrun")
    run(cfg, 2, max_steps=1)
    cfg.vae = str(save_autoencoder(tmp_path / "vae.safetensors", VideoVAE(VAEConfig(latent_channels=C, spatial_compression_ratio=4))))
    from dataclasses import asdict

    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(asdict(cfg)))
    pkg = Path(__file__).resolve().parents[1] / "magicinfinite_core" / "assets" / "demo"
    before = sorted((p.name, p.stat().st_mtime_ns) for p in pkg.iterdir())
    assert main(["--export", "--config", str(path), "--to", str(pkg)]) == 2
    assert "inside magicinfinite_core/assets" in capsys.readouterr().err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in pkg.iterdir()) == before
    assert main(["--export", "--config", str(path)]) == 0  # default: the run's own folder
    bundle = json.loads((Path(cfg.out) / "bundle" / "bundle.json").read_text())
    assert bundle["name"] == "out" and bundle["resolution"] == [4 * H, 4 * W]
    assert (bundle["sampler"]["audio_scale"], bundle["sampler"]["text_scale"]) == (3.0, 0.0)


def test_vae_trainer_checks_its_inputs_before_writing(tmp_path, capsys):
    from training.train_vae import main

    (tmp_path / "world").mkdir()
    assert main(["--data", str(tmp_path / "world"), str(tmp_path / "nope"), "--out", str(tmp_path / "vae")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope is not a folder" in err[0]
    assert main(["--data", str(tmp_path / "world"), "--out", str(tmp_path / "vae")]) == 2
    assert "no train-split clips" in capsys.readouterr().err and not (tmp_path / "vae").exists()


@pytest.mark.slow
def test_vae_trainer_trains_on_train_clips_and_resumes_exactly(tmp_path):
    """On the committed sample world (2 train + 2 held-out clips in one folder): the VAE trains on
    the 2 train clips, measures PSNR on the held-out ones, logs JSON lines, and a run continued
    from its step-2 save logs the losses of an uninterrupted run without repeating a step."""
    from training.train_vae import main

    sample = str(Path(__file__).resolve().parents[1] / "training" / "data" / "sample")
    args = ["--data", sample, "--spatial-ratio", "4", "--latent-channels", "4", "--channels", "8", "16", "16",
            "--batch", "1", "--crop", "16", "--clip-frames", "5", "--warmup", "2", "--log-every", "1",
            "--save-every", "2", "--no-progress", "--heldout-clips", "1"]

    def losses(out: Path) -> list[tuple[int, float]]:
        rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in rows if "loss" in r]

    assert main([*args, "--out", str(tmp_path / "a"), "--steps", "4"]) == 0
    assert main([*args, "--out", str(tmp_path / "b"), "--steps", "3"]) == 0
    # a run killed after step 3 whose last save was step 2: put the step-2 state back, keep its log
    assert main([*args, "--out", str(tmp_path / "c"), "--steps", "2"]) == 0
    (tmp_path / "b" / "log.jsonl").rename(tmp_path / "c" / "log.jsonl")
    assert main([*args, "--out", str(tmp_path / "c"), "--steps", "4"]) == 0
    assert losses(tmp_path / "c") == losses(tmp_path / "a") and [s for s, _ in losses(tmp_path / "a")] == [1, 2, 3, 4]
    summary = json.loads((tmp_path / "a" / "vae_summary.json").read_text())
    assert summary["clips"] == {"train": 2, "heldout": 2} and summary["heldout_psnr"] is not None


def test_low_noise_scale_bounds_the_reference_skip_loss():
    """Below the threshold a sample's loss is scaled by (sigma / threshold)^2 (a data-space error)."""
    from training.losses import LossConfig, adaptive_flow_loss, low_noise_scale

    s = low_noise_scale(torch.tensor([0.05, 0.125, 0.25, 0.9]), 0.25)
    assert torch.allclose(s, torch.tensor([0.04, 0.25, 1.0, 1.0]))
    assert torch.equal(low_noise_scale(torch.tensor([0.01, 0.5]), 0.0), torch.ones(2))
    pred, target = torch.zeros(2, 4, 3, 2, 2), torch.ones(2, 4, 3, 2, 2)
    full, _ = adaptive_flow_loss(pred, target, None, None, LossConfig(0.0, 0.0))
    half, _ = adaptive_flow_loss(pred, target, None, None, LossConfig(0.0, 0.0), sample_scale=torch.tensor([1.0, 0.0]))
    assert float(full) == 1.0 and float(half) == 0.5


def test_train_controls_keep_only_the_matching_clips(tmp_path):
    """train_controls={"action": ["still"]}: the trainer reads only clips whose prompt controls match,
    and says what to check when none does."""
    from training.trainer import matches_controls

    root = make_cache(tmp_path / "cache", n=4)
    rows = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
    for i, r in enumerate(rows):
        r["controls"] = {"action": "still" if i % 2 else "nodding", "emotion": "smile"}
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    still = CacheData(root, controls={"action": ["still"]})
    assert [r["name"] for r in still.rows] == ["clip1", "clip3"]
    assert len(CacheData(root, controls={"action": ["still", "nodding"], "emotion": "smile"})) == 4
    assert len(CacheData(root)) == 4
    assert not matches_controls({"name": "x"}, {"action": ["still"]})
    with pytest.raises(RuntimeError, match="train_controls"):
        CacheData(root, controls={"action": ["shaking"]})


def test_x0_error_bench_reports_model_and_copy_per_region(tmp_path):
    """bench/x0_error.py on a tiny every-frame DiT and a cache whose clips are held out: one JSON with
    the model's and the copy-the-portrait error for each noise level and region."""
    import subprocess
    import sys

    from magicinfinite_core.models.dit import MagicInfiniteDiT
    from magicinfinite_core.weights.checkpoints import save_dit

    cfg = tiny_config(tmp_path)
    root = make_cache(tmp_path / "heldout_cache", n=2)
    rows = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
    (root / "manifest.jsonl").write_text("".join(json.dumps({**r, "split": "heldout"}) + "\n" for r in rows))
    cfg.dit = {**cfg.dit, "image_condition": "every_frame", "reference_skip": True}
    dit = save_dit(tmp_path / "dit.safetensors", MagicInfiniteDiT(cfg.dit_config(2)))
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(repo / "bench" / "x0_error.py"), "--dit", str(dit), "--cache", str(root),
                          "--sigmas", "0.5", "0.1"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    table = json.loads(out.stdout)["latent_mse"]
    assert sorted(table) == sorted(f"{s}/{r}" for s in (0.5, 0.1) for r in ("mouth", "face", "background"))
    assert all(v["model"] >= 0 and v["copy_portrait"] > 0 for v in table.values())
    bad = subprocess.run([sys.executable, str(repo / "bench" / "x0_error.py"), "--dit", str(dit), "--cache", str(root),
                          "--actions", "nodding"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no held-out clips" in bad.stderr
