"""DMD2 step + CFG distillation (training/distill) on seeded random tiny DiTs, CPU only."""

from __future__ import annotations

import json

import pytest
import torch

from magicinfinite_core.config import AudioLayerConfig, DiTConfig, SamplerConfig
from magicinfinite_core.models.dit import MagicInfiniteDiT
from magicinfinite_core.sampling.guidance import CFGConfig
from magicinfinite_core.sampling.sampler import sample
from magicinfinite_core.weights.checkpoints import load_state_dict, save_dit
from magicinfinite_core.weights.transformer_layouts import load_transformer
from training.distill.batch import CondBatch, collate, run_dit, synthetic_examples
from training.distill.dmd import Critic, dmd_gradient, dmd_loss, dmd_terms, generator_sample
from training.distill.gan_head import GANHead
from training.distill.lora import lora_state_dict, lora_target_modules, make_fake_score
from training.distill.trainer import Curriculum, DistillConfig, DistillTrainer, latest_checkpoint, main

CFG = DiTConfig(
    hidden_size=64,
    num_heads=4,
    depth_double=1,
    depth_single=2,
    rope_dims=(4, 6, 6),
    text_dim=32,
    pooled_dim=16,
    refiner_depth=1,
    audio=AudioLayerConfig(
        feature_dim=16, proj_dim=32, tokens_per_latent_frame=2, context_dim=32, num_heads=4
    ),
)
THW = (3, 8, 8)  # latent frames x H x W


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny ops on 2 shared cores run faster (and steadier) on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_base(seed: int = 0) -> MagicInfiniteDiT:
    """A seeded random DiT; every weight perturbed so the zero-init audio output layers act too."""
    torch.manual_seed(seed)
    model = MagicInfiniteDiT(CFG)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def small_config(**kw) -> DistillConfig:
    base = dict(
        batch_size=2,
        gen_every=2,
        lora_rank=4,
        gan_width=32,
        lr_generator=1e-4,
        lr_critic=1e-3,
        curriculum=Curriculum(steps=4),
        ema_decay=0.9,
        cfg_std=0.5,
    )
    return DistillConfig(**{**base, **kw})


def data(n: int = 4, seed: int = 0):
    return synthetic_examples(CFG, n, THW, seed=seed)


def test_lora_targets_are_linear_layers_of_every_block_kind():
    names = lora_target_modules(make_base())
    assert "double_blocks.0.img_attn_qkv" in names and "double_blocks.0.txt_mlp.fc2" in names
    assert "single_blocks.1.linear2" in names and "audio_double_blocks.0.kv" in names
    assert "final_layer.linear" in names and "final_layer.adaLN_modulation.1" not in names
    assert not any("mod" in n or n.startswith(("txt_in", "time_in", "vector_in")) for n in names)
    with pytest.raises(ValueError):
        lora_target_modules(make_base(), ("nonsense",))


def test_disable_adapter_output_equals_base_exactly():
    batch = collate(data(2))
    x = torch.randn(2, CFG.out_channels, *THW, generator=torch.Generator().manual_seed(3))
    sigma = torch.tensor([0.9, 0.3])
    reference = make_base()
    with torch.no_grad():
        expected = run_dit(reference, x, sigma, batch)
    fake = make_fake_score(make_base(), rank=4)
    with torch.no_grad():
        for name, p in fake.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(name)))
        with fake.disable_adapter():
            real = run_dit(fake, x, sigma, batch)
        adapted = run_dit(fake, x, sigma, batch)
    assert torch.equal(real, expected)  # bit for bit: the adapter path is skipped, not zeroed
    assert not torch.allclose(adapted, expected, atol=1e-4)
    trainable = [n for n, p in fake.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_dmd_gradient_is_zero_when_fake_equals_real():
    g = torch.Generator().manual_seed(0)
    x, x0 = torch.randn(2, 4, 3, 8, 8, generator=g), torch.randn(2, 4, 3, 8, 8, generator=g)
    grad = dmd_gradient(x, x0, x0.clone())
    assert torch.count_nonzero(grad) == 0
    x.requires_grad_(True)
    dmd_loss(x, grad).backward()
    assert torch.count_nonzero(x.grad) == 0
    # the surrogate's gradient is the DMD gradient itself (mean reduction)
    other = torch.randn(2, 4, 3, 8, 8, generator=g)
    grad = dmd_gradient(x.detach(), x0, other)
    x.grad = None
    dmd_loss(x, grad).backward()
    assert torch.allclose(x.grad, grad / grad.numel(), atol=1e-9)

    # End to end with models: a fresh LoRA (B = 0) and CFG off make the fake score the real score.
    critic = Critic(make_fake_score(make_base(), rank=4), GANHead(CFG.hidden_size, 32))
    gen = make_base()
    batch = collate(data(2))
    x0_gen = generator_sample(gen, batch, [1.0, 0.5, 0.0], 1, torch.Generator().manual_seed(1))
    x0_gen.requires_grad_(True)
    terms = dmd_terms(critic, x0_gen, batch, CFGConfig.off(), torch.Generator().manual_seed(2), gan=False)
    assert float(terms["dmd_grad_norm"]) == 0.0 and float(terms["dmd"].detach()) == 0.0
    terms["dmd"].backward()
    assert torch.count_nonzero(x0_gen.grad) == 0


def test_real_score_uses_cfg_and_all_passes_in_one_forward():
    critic = Critic(make_fake_score(make_base(), rank=4), None)
    batch = collate(data(2))
    x = torch.randn(2, CFG.out_channels, *THW, generator=torch.Generator().manual_seed(5))
    scales = (torch.tensor([2.0, 3.0]), torch.tensor([1.0, 0.5]))
    calls = []
    hook = critic.fake_score.get_base_model().register_forward_hook(
        lambda m, a, o: calls.append(a[0].shape[0])
    )
    for sigma, rows in ((0.9, 4), (0.5, 6)):  # two-fold above the 0.75 boundary, three-fold below
        calls.clear()
        v = critic.real_velocity(x, torch.full((2,), sigma), batch, CFGConfig(), scales)
        assert calls == [rows] and v.shape == x.shape
    hook.remove()


def test_a_few_steps_reduce_the_fake_score_loss():
    """Eq. 6 on a FIXED evaluation set (fixed samples, noise, sigmas: deterministic) goes down.

    Most of this loss is irreducible (the target noise - x0 is largely unpredictable from z_t for a
    random generator), so the drop is a few percent, but it is deterministic on CPU.
    """
    config = small_config(
        gen_every=10**6, lr_generator=0.0, lr_critic=3e-3, lora_rank=8, gan_d_weight=0.0, gan_g_weight=0.0
    )
    trainer = DistillTrainer(make_base(), data(4), config, "/nonexistent")
    g = torch.Generator().manual_seed(7)
    evals = []
    for i in range(2):
        batch = collate(data(4)[2 * i : 2 * i + 2])
        x0 = generator_sample(trainer.generator, batch, trainer.sigmas, i, g)
        evals.append((x0, torch.randn(x0.shape, generator=g), torch.tensor([0.8, 0.4]), batch))
    before = sum(trainer.fake_score_loss(*e) for e in evals)
    trainer.train(20)
    after = sum(trainer.fake_score_loss(*e) for e in evals)
    assert after < 0.985 * before, (before, after)


def _all_state(trainer: DistillTrainer) -> dict[str, torch.Tensor]:
    out = {f"gen.{k}": v for k, v in trainer.gen_module.state_dict().items()}
    out.update({f"ema.{k}": v for k, v in trainer.ema.shadow.items()})
    out.update({f"lora.{k}": v for k, v in lora_state_dict(trainer.critic_module.fake_score).items()})
    out.update({f"head.{k}": v for k, v in trainer.critic_module.head.state_dict().items()})
    for tag, opt in (("og", trainer.opt_g), ("oc", trainer.opt_c)):
        for i, st in enumerate(opt.optimizer.state.values()):
            out.update({f"{tag}.{i}.{k}": v for k, v in st.items()})
    out["rng"] = trainer.rng.get_state()
    return out


def test_resume_is_bit_exact(tmp_path):
    n, m = 3, 3
    straight = DistillTrainer(make_base(), data(), small_config(), tmp_path / "a")
    straight.train(n + m)

    first = DistillTrainer(make_base(), data(), small_config(), tmp_path / "b")
    first.train(n)
    ckpt = first.save_checkpoint()
    assert latest_checkpoint(tmp_path / "b") == ckpt
    del first
    resumed = DistillTrainer(make_base(), data(), small_config(), tmp_path / "b")
    resumed.load_checkpoint(ckpt)
    assert resumed.step == n
    resumed.train(n + m)

    a, b = _all_state(straight), _all_state(resumed)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    # and the run actually trained: the generator moved away from the base
    assert not torch.equal(a["gen.final_layer.linear.weight"], make_base().final_layer.linear.weight)


def test_generator_file_loads_with_load_transformer_and_runs_the_4_step_sampler(tmp_path):
    trainer = DistillTrainer(make_base(), data(), small_config(), tmp_path)
    trainer.train(2)
    gen_path, lora_path = trainer.export()
    model = load_transformer(gen_path)
    ema = trainer.ema.state_dict(trainer.gen_module)
    assert all(torch.equal(v, ema[k]) for k, v in model.state_dict().items())
    assert any("lora_A" in k for k in load_state_dict(lora_path))
    half, _ = trainer.export(tmp_path / "fp16", dtype=torch.float16)  # how the demo generator ships
    assert all(v.dtype == torch.float16 for v in load_state_dict(half).values() if v.is_floating_point())
    assert load_transformer(half).cfg == CFG

    batch = collate(data(1))

    def predict(x, sigma, window):
        return run_dit(model, x, torch.full((1,), sigma), batch)

    cfg = SamplerConfig(window_frames=9, overlap_frames=0, shift_windows=False)
    out = sample(predict, (CFG.out_channels, *THW), config=cfg, distilled=True, seed=0)
    assert out.shape == (CFG.out_channels, *THW) and torch.isfinite(out).all()


def test_curriculum_endpoints():
    cur = Curriculum(start=10, steps=100, shape="linear")
    assert cur.weights(0) == (1.0, 0.0) and cur.weights(10) == (1.0, 0.0)
    assert cur.weights(110) == (0.0, 1.0) and cur.weights(10**6) == (0.0, 1.0)
    assert cur.weights(60) == pytest.approx((0.5, 0.5))
    cos = Curriculum(start=0, steps=100, shape="cosine", base_end=0.1, dm_start=0.2)
    assert cos.weights(0) == (1.0, 0.2) and cos.weights(100) == pytest.approx((0.1, 1.0))
    ws = [cos.weights(s) for s in range(0, 101, 5)]
    assert all(a[0] >= b[0] and a[1] <= b[1] for a, b in zip(ws, ws[1:], strict=False))
    assert Curriculum(start=5, steps=0).weights(4) == (1.0, 0.0) and Curriculum(start=5, steps=0).weights(
        5
    ) == (0.0, 1.0)
    with pytest.raises(ValueError):
        Curriculum(shape="step")


def test_real_score_is_the_samplers_guided_prediction():
    """The distillation teacher must be exactly what the base sampler runs (pipeline.WindowPredictor):
    same passes, same UNCOND (null prompt, no portrait concat, no audio), same normalised Eq. 7."""
    from magicinfinite_core.sampling.predictor import Conditions, WindowPredictor, audio_for_latents
    from magicinfinite_core.sampling.sliding_window import Window

    g = torch.Generator().manual_seed(11)
    t, h, w = THW
    a = CFG.audio
    txt = torch.randn(2, 6, CFG.text_dim, generator=g)
    txt_mask = torch.tensor([[True] * 6, [True, True] + [False] * 4])
    pooled = torch.randn(2, CFG.pooled_dim, generator=g)
    image = torch.randn(1, CFG.out_channels, 1, h, w, generator=g)
    features = torch.randn(1, 9, a.feature_dim, generator=g)
    token_mask = (torch.rand(1, h // 2, w // 2, generator=g) > 0.5).float()
    cond = Conditions(txt, txt_mask, pooled, None, image, features, token_mask)
    batch = CondBatch(
        latents=torch.zeros(1, CFG.out_channels, *THW),
        txt=txt[:1],
        txt_mask=txt_mask[:1],
        pooled=pooled[:1],
        uncond_txt=txt[1:],
        uncond_txt_mask=txt_mask[1:],
        uncond_pooled=pooled[1:],
        image_latent=image,
        audio=audio_for_latents(features, 0, t, a.frames_per_latent, a.frame_window)[None],
        speaker_mask=token_mask[None, :, None].expand(1, 1, t, -1, -1),
    )
    guidance = CFGConfig(audio_scale=3.0, text_scale=2.0)
    critic = Critic(make_fake_score(make_base(), rank=4), None)
    predictor = WindowPredictor(make_base().eval(), cond, guidance)
    x = torch.randn(1, CFG.out_channels, *THW, generator=g)
    for sigma in (0.9, 0.4):  # two-fold, three-fold
        ours = critic.real_velocity(x, torch.full((1,), sigma), batch, guidance, predictor.scales)
        with torch.no_grad():
            theirs = predictor(x, sigma, Window(0, 1, 0, t))
        assert torch.allclose(ours, theirs, atol=1e-5), (sigma, (ours - theirs).abs().max())


def test_cli_trains_resumes_and_exports(tmp_path, capsys):
    base = save_dit(tmp_path / "base.safetensors", make_base())
    args = [
        "--base",
        str(base),
        "--out",
        str(tmp_path / "run"),
        "--synthetic",
        "3",
        "--batch-size",
        "1",
        "--lora-rank",
        "4",
        "--save-every",
        "2",
        "--log-every",
        "1",
        "--curriculum-steps",
        "2",
        "--gen-every",
        "2",
    ]
    assert main([*args, "--steps", "2"]) == 0
    assert main([*args, "--steps", "3", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "at step 2" in out
    assert load_transformer(tmp_path / "run" / "generator.safetensors").cfg == CFG


def test_cli_on_a_model_bundle_exports_a_bundle_the_pipeline_runs_in_4_steps(tmp_path):
    from magicinfinite_core.generate import generate
    from magicinfinite_core.weights.bundle import random_bundle, save_bundle

    base = save_bundle(random_bundle(0, dit_cfg=CFG), tmp_path / "base_bundle")
    out = tmp_path / "run"
    args = [
        "--base",
        str(base),
        "--out",
        str(out),
        "--synthetic",
        "2",
        "--lora-rank",
        "4",
        "--steps",
        "2",
        "--save-every",
        "0",
        "--log-every",
        "0",
        "--gen-every",
        "1",
        "--curriculum-steps",
        "1",
    ]
    assert main(args) == 0
    spec = json.loads((out / "bundle" / "bundle.json").read_text())
    assert spec["distilled"] == {"dit": "dit_4step.safetensors", "timesteps": [1000.0, 750.0, 500.0, 250.0],
                                 "shift": 7.0}
    assert spec["dit"] == "dit.safetensors"  # the base stays in the bundle
    assert (out / "bundle" / "dit_4step.safetensors").read_bytes() == (out / "generator.safetensors").read_bytes()
    sr = 16000
    tone = (0.3 * torch.sin(torch.arange(int(0.4 * sr)) / sr * 2 * torch.pi * 220)).numpy()[None]
    portrait = (
        (torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8).numpy()
    )
    video, report = generate(
        portrait,
        (tone, sr),
        "a person talks",
        model=out / "bundle",
        out=tmp_path / "v.mp4",
        distilled=True,
        window=9,
        overlap=0,
        speakers=[[16, 16, 48, 48]],
    )
    assert video.is_file() and report.steps == 4 and report.mode == "distilled"


@pytest.mark.slow
def test_speed_bench_pairs_the_demo_base_with_its_generator(tmp_path):
    """bench/distill_speed.py on the embedded demo, tiny input: both runs, the generator's own step
    list from bundle.json or from a bare generator file's metadata, and --require failing loudly."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    demo = repo / "magicinfinite_core" / "assets" / "demo"
    cmd = [sys.executable, str(repo / "bench" / "distill_speed.py"), "--model", str(demo), "--seconds", "0.5",
           "--steps", "2", "--out", str(tmp_path / "a")]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=repo, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads((tmp_path / "a" / "result.json").read_text())
    tuned = json.loads((demo / "bundle.json").read_text())["sampler"]  # the demo's own guidance, not the library's
    assert res["base"]["steps"] == 2 and res["base"]["shift"] == 3.0 and res["base"]["audio_scale"] == tuned["audio_scale"]
    assert res["distilled"]["timesteps"] == [1000.0, 750.0, 500.0, 250.0] and res["distilled"]["shift"] == 3.0
    assert all(Path(v).is_file() for v in res["videos"])
    cmd[-1] = str(tmp_path / "b")
    out = subprocess.run([*cmd, "--generator", str(demo / "dit_4step.safetensors"), "--require", "1000"],
                         capture_output=True, text=True, cwd=repo, timeout=300)
    assert out.returncode == 1 and "below 1000" in out.stderr
    assert json.loads((tmp_path / "b" / "result.json").read_text())["distilled"]["shift"] == 3.0
