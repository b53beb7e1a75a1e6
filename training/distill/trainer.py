"""DMD2 step + CFG distillation of a MagicInfinite DiT into a 4-step generator (paper §3.4).

    python -m training.distill.trainer --base out/stage2.safetensors --data out/cache --out out/distill
    accelerate launch --config_file training/configs/accelerate_ddp.yaml \\
        -m training.distill.trainer --base ... --data ... --out ... --mixed-precision bf16
    python -m training.distill.trainer --base ... --out DIR --resume      # continue from DIR

Three roles, two copies of the weights: the generator G (a full trainable copy of the base), and
the frozen base wrapped with a peft LoRA that is the fake score (adapter on) and the real score
(`disable_adapter()`, with multi-condition CFG). A GAN head reads the fake score's middle-block
video tokens. Every step updates the critic (LoRA + head: Eq. 6 flow loss on detached generator
samples + softplus GAN loss); every `gen_every`-th step first updates G with

    w_base(step) * L_base + w_dm(step) * (L_dmd + gan_g_weight * L_gan)

where L_base is the ordinary flow-matching loss of G on real latents (the paper's base loss) and
the curriculum moves weight from it to the distribution-matching terms. G learns with backward
simulation over the distilled schedule (1000/750/500/250 warped onto the shifted sigmas): a random
step k, the steps before it run without grad, exactly as the distilled sampler runs them.

Outputs in --out: `log.jsonl` (JSON lines; a resumed run drops the records after its checkpoint),
`generator.safetensors` (EMA weights, a normal DiT file: `load_transformer` and the
sampler's distilled mode take it as is), `bundle/` when --base is a pipeline model bundle (the same
bundle with the generator as its DiT), `fake_score_lora.safetensors`, and resumable checkpoints
under `checkpoints/` (all safetensors; resume is bit-exact on CPU, tested). docs/distillation.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from magicinfinite_core.config import (
    DEFAULT_AUDIO_SCALE,
    DEFAULT_CFG_BOUNDARY,
    DEFAULT_SHIFT,
    DEFAULT_TEXT_SCALE,
    DISTILLED_TIMESTEPS,
)
from magicinfinite_core.errors import CheckpointError
from magicinfinite_core.models.dit import MagicInfiniteDiT
from magicinfinite_core.sampling.guidance import CFGConfig
from magicinfinite_core.sampling.schedule import add_noise, distilled_sigmas, x0_from_velocity
from magicinfinite_core.weights.bundle import BUNDLE_FILE, bundle_with_generator, read_bundle_spec
from magicinfinite_core.weights.checkpoints import (
    load_into,
    load_state_dict,
    save_dit,
    save_state_dict,
)
from magicinfinite_core.weights.transformer_layouts import load_transformer
from training.training_state import load_optimizer_tensors, optimizer_tensors

from .batch import CondBatch, check_examples, collate, open_examples, run_dit, synthetic_examples
from .dmd import (
    Critic,
    dmd_terms,
    flow_loss,
    generator_sample,
    randn_like_cpu,
    sample_sigmas,
    simulate_to_step,
)
from .gan_head import GANHead, gan_discriminator_loss
from .lora import DEFAULT_GROUPS, load_lora, make_fake_score, save_lora

CHECKPOINTS = "checkpoints"
LATEST = "latest"
GENERATOR_FILE = "generator.safetensors"
LORA_FILE = "fake_score_lora.safetensors"


# ---------------------------------------------------------------------------------------- schedule
@dataclass(frozen=True)
class Curriculum:
    """Weights of the base loss and the distribution-matching loss over training (paper Fig. 3).

    Constant (`base_start`, `dm_start`) before `start`, a `shape` ramp over `steps` steps, then
    constant at the end values. Linear or cosine (slow at both ends: no abrupt objective change).
    """

    start: int = 0
    steps: int = 1000
    base_start: float = 1.0
    base_end: float = 0.0
    dm_start: float = 0.0
    dm_end: float = 1.0
    shape: str = "cosine"

    def __post_init__(self) -> None:
        if self.steps < 0 or self.start < 0:
            raise ValueError("curriculum start and steps must be >= 0")
        if self.shape not in ("linear", "cosine"):
            raise ValueError(f"curriculum shape must be 'linear' or 'cosine', got {self.shape!r}")

    def progress(self, step: int) -> float:
        if self.steps == 0:
            return 0.0 if step < self.start else 1.0
        p = min(max((step - self.start) / self.steps, 0.0), 1.0)
        return p if self.shape == "linear" else 0.5 - 0.5 * math.cos(math.pi * p)

    def weights(self, step: int) -> tuple[float, float]:
        """(w_base, w_dm) at a global step."""
        p = self.progress(step)
        return (
            self.base_start + (self.base_end - self.base_start) * p,
            self.dm_start + (self.dm_end - self.dm_start) * p,
        )


# -------------------------------------------------------------------------------------------- config
@dataclass
class DistillConfig:
    seed: int = 0
    batch_size: int = 1
    lr_generator: float = 2e-6
    lr_critic: float = 2e-5
    warmup_steps: int = 0
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    gen_every: int = 5  # generator update every n-th step; critic every step (DMD2)
    # Drop the frame-0 portrait concat per sample: the sampler gives it to window 0 only, so the
    # generator must also learn the windows that run without it.
    image_drop_prob: float = 0.25
    # distilled schedule
    timesteps: tuple[float, ...] = DISTILLED_TIMESTEPS
    shift: float = DEFAULT_SHIFT
    dmd_t_range: tuple[float, float] = (0.02, 0.98)  # unshifted, then shifted
    fake_t_range: tuple[float, float] = (0.0, 1.0)  # Eq. 6: t ~ [0, 1], shifted
    base_t_range: tuple[float, float] = (0.0, 1.0)
    # real score CFG (normalised Eq. 7; two-fold for sigma >= boundary, three-fold below)
    audio_scale: float = DEFAULT_AUDIO_SCALE
    text_scale: float = DEFAULT_TEXT_SCALE
    cfg_boundary: float = DEFAULT_CFG_BOUNDARY
    cfg_std: float = 0.5  # dynamic scales ~ N(mean, std)
    # fake score / GAN
    lora_rank: int = 64
    lora_alpha: float | None = None
    lora_groups: tuple[str, ...] = DEFAULT_GROUPS
    gan_width: int = 256
    gan_feature_block: int | None = None  # None: middle block
    gan_g_weight: float = 5e-3
    gan_d_weight: float = 1e-2
    # curriculum / EMA
    curriculum: Curriculum = field(default_factory=Curriculum)
    ema_decay: float = 0.99
    # runtime
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False

    def cfg(self) -> CFGConfig:
        return CFGConfig(
            audio_scale=self.audio_scale,
            text_scale=self.text_scale,
            boundary=self.cfg_boundary,
            dynamic_std=self.cfg_std,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DistillConfig:
        d = dict(d)
        d["curriculum"] = Curriculum(**d.get("curriculum", {}))
        for k in ("betas", "timesteps", "dmd_t_range", "fake_t_range", "base_t_range", "lora_groups"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in fields(cls)}})


# ----------------------------------------------------------------------------------------------- EMA
class EMA:
    """Exponential moving average of the generator's float tensors (kept in fp32)."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = {
            k: v.detach().float().clone() for k, v in model.state_dict().items() if v.is_floating_point()
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v.detach().float(), 1.0 - self.decay)

    def state_dict(self, like: nn.Module) -> dict[str, torch.Tensor]:
        """A full DiT state dict with the averaged weights (non-float tensors from `like`)."""
        return {k: self.shadow.get(k, v) for k, v in like.state_dict().items()}


@contextmanager
def frozen(params: list[nn.Parameter]) -> Iterator[None]:
    """Temporarily stop grads into the critic while the generator learns through it."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags, strict=True):
            p.requires_grad_(f)


# ------------------------------------------------------------------------------------------- trainer
class DistillTrainer:
    """Owns G, the critic (fake score LoRA + GAN head), optimizers, EMA, RNG and checkpoints."""

    def __init__(
        self,
        base: MagicInfiniteDiT,
        data: torch.utils.data.Dataset,
        config: DistillConfig,
        out_dir: str | Path,
        accelerator=None,
        tensorboard: bool = False,
    ):
        from accelerate import Accelerator, DistributedDataParallelKwargs

        from training.tracking import tracker_kwargs

        self.config = c = config
        self.out = Path(out_dir)
        self.data = data
        self.tensorboard = tensorboard
        self.tracker = None
        # events in out_dir itself (project RUN/distill, run name "distill"): `tensorboard --logdir RUN`
        self.accelerator = accelerator or Accelerator(
            mixed_precision=c.mixed_precision,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
            **tracker_kwargs(tensorboard, self.out.resolve().parent),
        )
        acc = self.accelerator
        if len(data) == 0:
            raise ValueError("the distillation data set is empty")
        self.sigmas = distilled_sigmas(c.timesteps, c.shift).tolist()
        self.cfg_guidance = c.cfg()
        self.image_mode = base.cfg.image_mode
        self.model_config = base.cfg

        generator = copy.deepcopy(base).train()
        for p in generator.parameters():
            p.requires_grad_(True)
        generator.gradient_checkpointing = c.gradient_checkpointing
        base.gradient_checkpointing = c.gradient_checkpointing
        fake = make_fake_score(base.train(), c.lora_rank, c.lora_alpha, c.lora_groups)
        head = (
            GANHead(base.cfg.hidden_size, c.gan_width) if (c.gan_g_weight > 0 or c.gan_d_weight > 0) else None
        )
        critic = Critic(fake, head, c.gan_feature_block)
        self.ema = EMA(generator, c.ema_decay) if c.ema_decay > 0 else None

        gen_params = [p for p in generator.parameters() if p.requires_grad]
        critic_params = [p for p in critic.parameters() if p.requires_grad]
        self._gen_names = {id(p): n for n, p in generator.named_parameters()}
        self._critic_names = {id(p): n for n, p in critic.named_parameters() if p.requires_grad}
        opt_g = torch.optim.AdamW(gen_params, lr=c.lr_generator, betas=c.betas, weight_decay=c.weight_decay)
        opt_c = torch.optim.AdamW(critic_params, lr=c.lr_critic, betas=c.betas, weight_decay=c.weight_decay)
        self.generator, self.critic, self.opt_g, self.opt_c = acc.prepare(generator, critic, opt_g, opt_c)
        self.critic_params = critic_params
        self.rng = torch.Generator().manual_seed(c.seed * 1009 + acc.process_index)
        self.step = 0

    # -- helpers
    @property
    def gen_module(self) -> MagicInfiniteDiT:
        return self.accelerator.unwrap_model(self.generator)

    @property
    def critic_module(self) -> Critic:
        return self.accelerator.unwrap_model(self.critic)

    def _next_batch(self) -> CondBatch:
        b, p = self.config.batch_size, self.config.image_drop_prob
        idx = torch.randint(len(self.data), (b,), generator=self.rng).tolist()
        batch = collate([self.data[i] for i in idx])
        if p > 0:
            batch.image_keep = (torch.rand(b, generator=self.rng) >= p).float()
        return batch.to(self.accelerator.device)

    def _set_lr(self) -> None:
        c = self.config
        ramp = min(1.0, (self.step + 1) / c.warmup_steps) if c.warmup_steps > 0 else 1.0
        for opt, lr in ((self.opt_g, c.lr_generator), (self.opt_c, c.lr_critic)):
            for group in opt.param_groups:
                group["lr"] = lr * ramp

    def _random_step(self) -> int:
        return int(torch.randint(len(self.sigmas) - 1, (1,), generator=self.rng))

    # -- the two updates
    def generator_step(self, batch: CondBatch) -> tuple[dict[str, float], torch.Tensor | None]:
        """One G update; returns its logs and its (detached) samples for the critic to reuse."""
        c, acc = self.config, self.accelerator
        w_base, w_dm = c.curriculum.weights(self.step)
        b = batch.batch_size
        xs, sigmas = [], []
        if w_dm > 0:
            k = self._random_step()
            x_k = simulate_to_step(self.generator, batch, self.sigmas, k, self.rng, self.image_mode)
            xs.append(x_k)
            sigmas.append(torch.full((b,), self.sigmas[k], device=x_k.device))
        if w_base > 0:
            sig_b = sample_sigmas(b, *c.base_t_range, c.shift, self.rng).to(batch.latents.device)
            noise_b = randn_like_cpu(batch.latents, self.rng)
            xs.append(add_noise(batch.latents, noise_b, sig_b))
            sigmas.append(sig_b)
        logs: dict[str, float] = {"w_base": w_base, "w_dm": w_dm}
        if not xs:
            return logs, None
        passes = ("full",) * len(xs)
        # One forward with grad (G sample rows and base-loss rows together): DDP sees one forward.
        v = run_dit(self.generator, torch.cat(xs), torch.cat(sigmas), batch, passes, self.image_mode)
        v = v.float().chunk(len(xs))
        loss = torch.zeros((), device=batch.latents.device)
        x0_gen = None
        if w_dm > 0:
            x0_gen = x0_from_velocity(xs[0], v[0], sigmas[0])
            with frozen(self.critic_params):
                terms = dmd_terms(
                    self.critic_module,
                    x0_gen,
                    batch,
                    self.cfg_guidance,
                    self.rng,
                    t_range=c.dmd_t_range,
                    shift=c.shift,
                    gan=c.gan_g_weight > 0,
                )
            dm = terms["dmd"] + (c.gan_g_weight * terms["gan_g"] if "gan_g" in terms else 0.0)
            loss = loss + w_dm * dm
            logs.update({k: float(t.detach()) for k, t in terms.items()})
        if w_base > 0:
            base = flow_loss(v[-1], batch.latents, noise_b)
            loss = loss + w_base * base
            logs["base"] = float(base.detach())
        acc.backward(loss)
        if c.grad_clip > 0:
            acc.clip_grad_norm_(self.generator.parameters(), c.grad_clip)
        self.opt_g.step()
        self.opt_g.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.gen_module)
        logs["gen_loss"] = float(loss.detach())
        return logs, None if x0_gen is None else x0_gen.detach()

    def critic_step(self, batch: CondBatch, x0_gen: torch.Tensor | None = None) -> dict[str, float]:
        """One critic update: Eq. 6 on detached generator samples + the GAN discriminator loss."""
        c, acc = self.config, self.accelerator
        b = batch.batch_size
        if x0_gen is None:
            x0_gen = generator_sample(
                self.generator, batch, self.sigmas, self._random_step(), self.rng, self.image_mode
            )
        sig = sample_sigmas(b, *c.fake_t_range, c.shift, self.rng).to(x0_gen.device)
        noise = randn_like_cpu(x0_gen, self.rng)
        z_fake = add_noise(x0_gen, noise, sig)
        logs = {}
        if c.gan_d_weight > 0 and self.critic_module.head is not None:
            z_real = add_noise(batch.latents, randn_like_cpu(batch.latents, self.rng), sig)
            v, logits = self.critic(torch.cat([z_fake, z_real]), torch.cat([sig, sig]), batch, features=True)
            v_fake = v[:b]
            gan_d = gan_discriminator_loss(logits[b:].float(), logits[:b].float())
            logs["gan_d"] = float(gan_d.detach())
        else:
            v_fake, _ = self.critic(z_fake, sig, batch)
            gan_d = torch.zeros((), device=x0_gen.device)
        fake_loss = flow_loss(v_fake, x0_gen, noise)
        loss = fake_loss + c.gan_d_weight * gan_d
        acc.backward(loss)
        if c.grad_clip > 0:
            acc.clip_grad_norm_(self.critic_params, c.grad_clip)
        self.opt_c.step()
        self.opt_c.zero_grad(set_to_none=True)
        logs["fake"] = float(fake_loss.detach())
        return logs

    def train_step(self) -> dict[str, float]:
        self._set_lr()
        batch = self._next_batch()
        logs: dict[str, float] = {}
        x0_gen = None
        with self.accelerator.autocast():
            if self.step % self.config.gen_every == 0:
                gen_logs, x0_gen = self.generator_step(batch)
                logs.update(gen_logs)
            logs.update(self.critic_step(batch, x0_gen))
        self.step += 1
        logs["step"] = self.step
        return logs

    def train(self, until_step: int, *, save_every: int = 0, log_every: int = 0,
              log_file: str | Path | None = None, progress: bool = False, evaluator=None,
              eval_every: int = 0) -> list[dict[str, float]]:
        """Train until the global step count reaches `until_step`; returns per-step logs.

        Every `log_every`-th step's logs go to stdout and, when given, to `log_file` as JSON lines
        (main process) and to TensorBoard (when the trainer was made with tensorboard=True);
        `progress` shows a tqdm bar (steps, generator / critic loss, ETA). With an `evaluator`
        (`training.eval.evaluate.QuickEval` in distilled mode) the generator's held-out lip sync is
        measured every `eval_every` steps on the main process and logged the same ways.
        """
        from training.runconfig import progress as progress_bar
        from training.tracking import RunTracker

        if self.tracker is None:
            self.tracker = RunTracker(self.accelerator, self.out.resolve().name, self.config.to_dict(), self.step,
                                      self.tensorboard)
        history = []
        main = self.accelerator.is_main_process
        log = open(log_file, "a") if (log_file is not None and main) else None
        bar = progress_bar(until_step, self.step, "distill", progress and main)
        t0, start = time.perf_counter(), self.step
        try:
            while self.step < until_step:
                logs = self.train_step()
                history.append(logs)
                bar.update(1)
                bar.set_postfix({k: f"{logs[k]:.4f}" for k in ("gen_loss", "fake") if k in logs}, refresh=False)
                if log_every and self.step % log_every == 0 and main:
                    rate = (self.step - start) / max(time.perf_counter() - t0, 1e-9)
                    rec = {**{k: round(v, 6) for k, v in logs.items()}, "step": self.step,
                           "steps_per_s": round(rate, 3), "processes": self.accelerator.num_processes}
                    bar.write(json.dumps(rec))
                    if log is not None:
                        log.write(json.dumps(rec) + "\n")
                        log.flush()
                    self.tracker.scalars(self._scalars(logs, rate), self.step)
                if evaluator is not None and eval_every and self.step % eval_every == 0 and main:
                    res = {**evaluator(self.gen_module), "step": self.step, "eval": True}
                    self.gen_module.train()
                    bar.write(json.dumps(res))
                    if log is not None:
                        log.write(json.dumps(res) + "\n")
                        log.flush()
                    self.tracker.scalars({f"heldout/{k}": v for k, v in res.items() if k not in ("step", "eval")},
                                         self.step)
                    if getattr(evaluator, "sample", None) is not None:
                        self.tracker.image("heldout/sample", evaluator.sample, self.step)
                if save_every and self.step % save_every == 0:
                    self.save_checkpoint()
        finally:
            bar.close()
            if log is not None:
                log.close()
        return history

    def _scalars(self, logs: dict[str, float], steps_per_s: float) -> dict[str, float]:
        """TensorBoard tags of one step: loss terms, curriculum weights, both lrs, steps/s and clips/s."""
        out = {f"loss/{k}": v for k, v in logs.items() if k in ("gen_loss", "fake", "dmd", "gan_g", "gan_d", "base")}
        out.update({f"curriculum/{k}": logs[k] for k in ("w_base", "w_dm") if k in logs})
        out["lr/generator"] = self.opt_g.param_groups[0]["lr"]
        out["lr/critic"] = self.opt_c.param_groups[0]["lr"]
        out["throughput/steps_per_s"] = steps_per_s
        out["throughput/clips_per_s"] = steps_per_s * self.config.batch_size * self.accelerator.num_processes
        return out

    def close_tracker(self) -> None:
        """Flush and close the event file (end of a CLI run)."""
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None

    # -- files
    def fake_score_loss(
        self, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor, batch: CondBatch
    ) -> float:
        """Eq. 6 on given samples/noise/sigmas without training (for evaluation and tests)."""
        with torch.no_grad():
            v, _ = self.critic_module(add_noise(x0, noise, sigma), sigma, batch)
        return float(flow_loss(v, x0, noise))

    def export(
        self, out_dir: str | Path | None = None, use_ema: bool = True, dtype: torch.dtype | None = None
    ) -> tuple[Path, Path]:
        """The 4-step generator as a normal DiT file (EMA weights by default; float tensors cast to
        `dtype` when given, e.g. fp16 for a shipped model) and the LoRA alone."""
        out = Path(out_dir) if out_dir is not None else self.out
        gen = self.gen_module
        extra = {
            "distill_step": str(self.step),
            "distilled_timesteps": json.dumps(list(self.config.timesteps)),
            "shift": str(self.config.shift),
        }
        if self.accelerator.is_main_process:
            if use_ema and self.ema is not None:
                save_state_dict(
                    out / GENERATOR_FILE,
                    self.ema.state_dict(gen),
                    kind="magicinfinite-dit",
                    config=gen.cfg.to_dict(),
                    extra=extra,
                    dtype=dtype,
                )
            else:
                save_dit(out / GENERATOR_FILE, gen, extra=extra, dtype=dtype)
            save_lora(out / LORA_FILE, self.critic_module.fake_score)
        self.accelerator.wait_for_everyone()
        return out / GENERATOR_FILE, out / LORA_FILE

    def save_checkpoint(self) -> Path:
        """checkpoints/step_N/ (written as a temp folder, then renamed) and checkpoints/latest."""
        acc = self.accelerator
        root = self.out / CHECKPOINTS
        final = root / f"step_{self.step:08d}"
        tmp = root / f".tmp_step_{self.step:08d}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        save_state_dict(
            tmp / f"rng_rank{acc.process_index}.safetensors",
            {"rng": self.rng.get_state()},
            kind="magicinfinite-distill-rng",
        )
        if acc.is_main_process:
            gen = self.gen_module
            save_dit(tmp / "generator.safetensors", gen)
            if self.ema is not None:
                save_state_dict(
                    tmp / "generator_ema.safetensors",
                    self.ema.state_dict(gen),
                    kind="magicinfinite-dit",
                    config=gen.cfg.to_dict(),
                )
            save_lora(tmp / LORA_FILE, self.critic_module.fake_score)
            head = self.critic_module.head
            if head is not None:
                save_state_dict(
                    tmp / "gan_head.safetensors", head.state_dict(), kind="magicinfinite-gan-head"
                )
            opt = {f"gen/{k}": v for k, v in optimizer_tensors(_inner(self.opt_g), self._gen_names).items()}
            opt.update(
                {
                    f"critic/{k}": v
                    for k, v in optimizer_tensors(_inner(self.opt_c), self._critic_names).items()
                }
            )
            save_state_dict(tmp / "optimizers.safetensors", opt, kind="magicinfinite-distill-optim")
            (tmp / "state.json").write_text(
                json.dumps(
                    {
                        "step": self.step,
                        "world_size": acc.num_processes,
                        "config": self.config.to_dict(),
                        "model_config": self.model_config.to_dict(),
                    },
                    indent=1,
                    default=list,
                )
            )
        acc.wait_for_everyone()
        if acc.is_main_process:
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            latest_tmp = root / (LATEST + ".tmp")
            latest_tmp.write_text(final.name)
            os.replace(latest_tmp, root / LATEST)
        acc.wait_for_everyone()
        return final

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore everything a step depends on; the continued run equals an uninterrupted one."""
        path = Path(path)
        state = json.loads((path / "state.json").read_text())
        acc = self.accelerator
        if state["world_size"] != acc.num_processes:
            raise ValueError(
                f"{path} was written by {state['world_size']} processes, now {acc.num_processes}; "
                "per-rank RNG streams would not continue exactly"
            )
        if state["model_config"] != json.loads(json.dumps(self.model_config.to_dict(), default=list)):
            raise ValueError(f"{path} was made for another model configuration")
        gen, critic = self.gen_module, self.critic_module
        load_into(
            gen, load_state_dict(path / "generator.safetensors"), source=str(path / "generator.safetensors")
        )
        if self.ema is not None:
            ema = load_state_dict(path / "generator_ema.safetensors")
            for k in self.ema.shadow:
                self.ema.shadow[k].copy_(ema[k].float())
        load_lora(path / LORA_FILE, critic.fake_score)
        if critic.head is not None:
            load_into(critic.head, load_state_dict(path / "gan_head.safetensors"), source="GAN head")
        opt = load_state_dict(path / "optimizers.safetensors")
        load_optimizer_tensors(
            _inner(self.opt_g), self._gen_names, {k[4:]: v for k, v in opt.items() if k.startswith("gen/")}
        )
        load_optimizer_tensors(
            _inner(self.opt_c),
            self._critic_names,
            {k[7:]: v for k, v in opt.items() if k.startswith("critic/")},
        )
        self.rng.set_state(load_state_dict(path / f"rng_rank{acc.process_index}.safetensors")["rng"])
        self.step = int(state["step"])


def _inner(opt):
    """The torch optimizer inside accelerate's wrapper (its state is what gets saved)."""
    return getattr(opt, "optimizer", opt)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    root = Path(out_dir) / CHECKPOINTS
    marker = root / LATEST
    if not marker.is_file():
        return None
    path = root / marker.read_text().strip()
    return path if path.is_dir() else None


# ---------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    d = DistillConfig()
    cur = Curriculum()
    p = argparse.ArgumentParser(prog="python -m training.distill.trainer", description=__doc__.split("\n")[0])
    p.add_argument(
        "--base",
        required=True,
        help="base DiT .safetensors (config in metadata) or a pipeline model bundle folder",
    )
    p.add_argument("--out", required=True, help="output folder (checkpoints/, generator, LoRA)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", help="training.preprocess cache folder, or a folder of distillation examples")
    src.add_argument("--synthetic", type=int, default=0, help="N seeded random examples (smoke runs)")
    p.add_argument(
        "--latent-frames", type=int, default=None, help="latent frames per example (cache: first N)"
    )
    p.add_argument("--latent-size", type=int, nargs=2, default=(8, 8), help="synthetic latent H W")
    p.add_argument("--no-image-tokens", action="store_true", help="ignore the cache's image tokens")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/latest")
    p.add_argument("--no-ema-export", action="store_true", help="export raw generator weights, not the EMA")
    p.add_argument("--export-dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                   help="dtype of the exported generator file (float16 for a shipped model)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-tensorboard", action="store_true",
                   help="no TensorBoard event file in OUT (default: one, `tensorboard --logdir OUT/..`)")
    p.add_argument("--eval-every", type=int, default=0,
                   help="held-out lip sync (4-step samples) every N steps; needs held-out rows in --data "
                        "and a VAE (--vae, default the --base bundle's)")
    p.add_argument("--eval-clips", type=int, default=4, help="held-out clips per evaluation")
    p.add_argument("--vae", default=None, help="autoencoder for the evaluation (default: the bundle's vae)")
    a = p.add_argument_group("optimisation")
    a.add_argument("--seed", type=int, default=d.seed)
    a.add_argument("--batch-size", type=int, default=d.batch_size)
    a.add_argument("--lr-generator", type=float, default=d.lr_generator)
    a.add_argument("--lr-critic", type=float, default=d.lr_critic)
    a.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    a.add_argument("--grad-clip", type=float, default=d.grad_clip)
    a.add_argument("--gen-every", type=int, default=d.gen_every)
    a.add_argument("--image-drop-prob", type=float, default=d.image_drop_prob)
    a.add_argument("--ema-decay", type=float, default=d.ema_decay)
    a.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default=d.mixed_precision)
    a.add_argument("--gradient-checkpointing", action="store_true")
    s = p.add_argument_group("schedule and guidance")
    s.add_argument("--timesteps", type=float, nargs="+", default=list(d.timesteps))
    s.add_argument("--shift", type=float, default=d.shift)
    s.add_argument("--dmd-t-range", type=float, nargs=2, default=d.dmd_t_range)
    s.add_argument("--audio-scale", type=float, default=d.audio_scale)
    s.add_argument("--text-scale", type=float, default=d.text_scale)
    s.add_argument("--cfg-boundary", type=float, default=d.cfg_boundary)
    s.add_argument("--cfg-std", type=float, default=d.cfg_std)
    g = p.add_argument_group("fake score and GAN")
    g.add_argument("--lora-rank", type=int, default=d.lora_rank)
    g.add_argument("--lora-alpha", type=float, default=None)
    g.add_argument("--lora-groups", nargs="+", default=list(d.lora_groups))
    g.add_argument("--gan-g-weight", type=float, default=d.gan_g_weight)
    g.add_argument("--gan-d-weight", type=float, default=d.gan_d_weight)
    g.add_argument("--gan-feature-block", type=int, default=None)
    c = p.add_argument_group("curriculum (base loss -> distribution matching)")
    c.add_argument("--curriculum-start", type=int, default=cur.start)
    c.add_argument("--curriculum-steps", type=int, default=cur.steps)
    c.add_argument("--curriculum-shape", choices=("linear", "cosine"), default=cur.shape)
    c.add_argument(
        "--base-weight", type=float, nargs=2, default=(cur.base_start, cur.base_end), metavar=("START", "END")
    )
    c.add_argument(
        "--dm-weight", type=float, nargs=2, default=(cur.dm_start, cur.dm_end), metavar=("START", "END")
    )
    return p


def config_from_args(a: argparse.Namespace) -> DistillConfig:
    return DistillConfig(
        seed=a.seed,
        batch_size=a.batch_size,
        lr_generator=a.lr_generator,
        lr_critic=a.lr_critic,
        warmup_steps=a.warmup_steps,
        grad_clip=a.grad_clip,
        gen_every=a.gen_every,
        image_drop_prob=a.image_drop_prob,
        timesteps=tuple(a.timesteps),
        shift=a.shift,
        dmd_t_range=tuple(a.dmd_t_range),
        audio_scale=a.audio_scale,
        text_scale=a.text_scale,
        cfg_boundary=a.cfg_boundary,
        cfg_std=a.cfg_std,
        lora_rank=a.lora_rank,
        lora_alpha=a.lora_alpha,
        lora_groups=tuple(a.lora_groups),
        gan_feature_block=a.gan_feature_block,
        gan_g_weight=a.gan_g_weight,
        gan_d_weight=a.gan_d_weight,
        curriculum=Curriculum(
            start=a.curriculum_start,
            steps=a.curriculum_steps,
            shape=a.curriculum_shape,
            base_start=a.base_weight[0],
            base_end=a.base_weight[1],
            dm_start=a.dm_weight[0],
            dm_end=a.dm_weight[1],
        ),
        ema_decay=a.ema_decay,
        mixed_precision=a.mixed_precision,
        gradient_checkpointing=a.gradient_checkpointing,
    )


def resolve_base(path: str | Path) -> tuple[Path, Path | None]:
    """(DiT file, bundle folder or None): --base may be a DiT file or a pipeline model bundle."""
    path = Path(path)
    if not (path.is_dir() or path.name == BUNDLE_FILE):
        return path, None
    try:
        spec, spec_path = read_bundle_spec(path)
    except CheckpointError as exc:
        raise SystemExit(f"--base {path}: {exc}") from None
    return spec_path.parent / spec["dit"], spec_path.parent


LOG_FILE = "log.jsonl"
PROG = "python -m training.distill.trainer"


def input_problems(a: argparse.Namespace) -> list[str]:
    """Missing or contradictory inputs, found before anything is written."""
    from training.runconfig import missing_inputs

    base = Path(a.base)
    checks = [
        (base.exists(), f"--base {base} does not exist (export a bundle first: python -m training.trainer "
                        "--export --config CFG, see docs/training.md)"),
        (not base.is_dir() or (base / BUNDLE_FILE).is_file(), f"--base {base}: a folder without {BUNDLE_FILE}"),
        (a.gen_every >= 1, "--gen-every must be >= 1"),
        (bool(a.data) or a.synthetic > 0, "give --data DIR or --synthetic N"),
        (not a.data or Path(a.data).is_dir(), f"--data {a.data} is not a folder"),
        (not a.resume or latest_checkpoint(a.out) is not None,
         f"--resume: no checkpoint under {Path(a.out) / CHECKPOINTS}"),
    ]
    if not a.no_tensorboard:
        from training.tracking import tensorboard_problem

        problem = tensorboard_problem()
        checks.append((problem is None, problem or ""))
    return missing_inputs(checks)


def main(argv: list[str] | None = None) -> int:
    from training.runconfig import describe_counts, fail, trim_log

    a = build_parser().parse_args(argv)
    problems = input_problems(a)
    if problems:
        return fail(problems, PROG)
    if a.threads:
        torch.set_num_threads(a.threads)
    config = config_from_args(a)
    base_path, bundle_dir = resolve_base(a.base)
    base = load_transformer(base_path).train()
    if a.data:
        from accelerate import PartialState

        state = PartialState()  # rank and world before the trainer's Accelerator (which shares this state)
        data = open_examples(
            a.data, a.latent_frames, image_tokens=not a.no_image_tokens and bool(base.cfg.image_token_dim),
            rank=state.process_index, world=state.num_processes,
        )
        mismatch = check_examples(base.cfg, data)
        if mismatch:
            return fail([f"--data {a.data}: {mismatch}"], PROG)
        counts = getattr(data, "counts", None)
        print(describe_counts("distill", counts) if counts else f"distill: {len(data)} examples from {a.data}",
              flush=True)
    else:
        t = a.latent_frames or 3
        data = synthetic_examples(base.cfg, a.synthetic, (t, *a.latent_size), seed=a.seed)
    evaluator = None
    if a.eval_every > 0:
        from training.eval.evaluate import QuickEval

        vae = a.vae or (str(bundle_dir / "vae.safetensors") if bundle_dir is not None else None)
        if vae is None or not a.data:
            return fail(["--eval-every needs --data CACHE (with held-out rows) and --vae FILE (or a bundle --base)"],
                        PROG)
        evaluator = QuickEval(a.data, vae, clips=a.eval_clips, shift=config.shift,
                              distilled_timesteps=config.timesteps, seed=config.seed)
    trainer = DistillTrainer(base, data, config, a.out, tensorboard=not a.no_tensorboard)
    if a.resume:
        ckpt = latest_checkpoint(a.out)
        trainer.load_checkpoint(ckpt)
        if trainer.accelerator.is_main_process:
            print(f"resumed from {ckpt} at step {trainer.step}", flush=True)
    if trainer.accelerator.is_main_process:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        trim_log(Path(a.out) / LOG_FILE, trainer.step)
        with open(Path(a.out) / LOG_FILE, "a") as f:
            f.write(json.dumps({"event": "start", "start_step": trainer.step, "steps": a.steps,
                                "clips": getattr(data, "counts", {"examples": len(data)}),
                                "config": config.to_dict()}, default=list) + "\n")
    trainer.train(a.steps, save_every=a.save_every, log_every=a.log_every, log_file=Path(a.out) / LOG_FILE,
                  progress=not a.no_progress, evaluator=evaluator, eval_every=a.eval_every)
    trainer.close_tracker()
    if trainer.step % max(a.save_every, 1) or not a.save_every:
        trainer.save_checkpoint()
    gen_path, lora_path = trainer.export(use_ema=not a.no_ema_export, dtype=getattr(torch, a.export_dtype))
    if trainer.accelerator.is_main_process:
        result = {"generator": str(gen_path), "lora": str(lora_path), "step": trainer.step}
        if bundle_dir is not None:
            result["bundle"] = str(bundle_with_generator(bundle_dir, gen_path, Path(a.out) / "bundle", config.timesteps,
                                                           config.shift))
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
