"""DMD2 step + CFG distillation math (paper §3.4, Eq. 5–7; DESIGN.md §4 "DMD2", §5).

Conventions (magicinfinite_core.sampling.schedule): sigma = 1 is noise, x_sigma = sigma*noise + (1-sigma)*x0,
v = noise - x0, x0 = x - sigma*v. The paper's Eq. 5 "distribution matching at t = 0" is DMD2's
x0-space gradient: grad = x0_fake - x0_real (the paper's z_t - sigma*u terms are x0 estimates),
normalised per sample by mean|x - x0_real| as in DMD2, applied through the surrogate
0.5*||x - sg(x - grad)||^2 whose gradient w.r.t. x is exactly `grad`.

The real score is the frozen base with multi-condition CFG (normalised Eq. 7, two-fold at
sigma >= boundary, three-fold below; per-sample scales drawn around their means), run with the
fake score's LoRA disabled. The fake score is trained with Eq. 6 (the plain flow loss) on
detached generator samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from peft import PeftModel
from torch import nn
from torch.nn import functional as F

from magicinfinite_core.sampling.guidance import FULL, CFGConfig, draw_scales, guided_velocity
from magicinfinite_core.sampling.schedule import add_noise, shift_sigmas, x0_from_velocity

from .batch import CondBatch, run_dit
from .gan_head import FeatureHook, GANHead, feature_block_name, gan_generator_loss


def sample_sigmas(
    n: int, t_min: float, t_max: float, shift: float, generator: torch.Generator
) -> torch.Tensor:
    """n sigmas: t ~ U[t_min, t_max] on the unshifted axis, then the schedule's time shift."""
    if not 0.0 <= t_min < t_max <= 1.0:
        raise ValueError(f"need 0 <= t_min < t_max <= 1, got {t_min}, {t_max}")
    u = torch.rand(n, generator=generator, dtype=torch.float64) * (t_max - t_min) + t_min
    return shift_sigmas(u, shift).float()


def randn_like_cpu(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Noise drawn on the CPU generator and moved: the same numbers on any device."""
    return torch.randn(like.shape, generator=generator, dtype=torch.float32).to(like.device, like.dtype)


def dmd_gradient(x: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor) -> torch.Tensor:
    """DMD2's normalised x0-space gradient; exactly zero when the fake score equals the real one."""
    dims = tuple(range(1, x.ndim))
    x, x0_real, x0_fake = x.float(), x0_real.float(), x0_fake.float()
    normaliser = (x - x0_real).abs().mean(dim=dims, keepdim=True).clamp_min(1e-8)
    return torch.nan_to_num((x0_fake - x0_real) / normaliser)


def dmd_loss(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Surrogate whose gradient w.r.t. x is `grad` / numel (the mean-reduced DMD2 form)."""
    x = x.float()
    return 0.5 * F.mse_loss(x, (x - grad).detach(), reduction="mean")


def flow_loss(v_pred: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Flow-matching loss (Eq. 6 for the fake score, the base loss for the generator)."""
    return F.mse_loss(v_pred.float(), (noise - x0).float())


class Critic(nn.Module):
    """Fake score (base + LoRA) and the GAN head, trained together; one module for DDP.

    forward(x, sigma, batch, features) -> (velocity, logits or None). The real score is the
    same trunk inside `real_velocity` (adapter disabled, no hook, no grad).
    """

    def __init__(self, fake_score: PeftModel, head: GANHead | None, feature_block: int | None = None):
        super().__init__()
        self.fake_score = fake_score
        self.head = head
        dit = fake_score.get_base_model()
        self.image_mode = dit.cfg.image_mode
        self.patch = dit.cfg.patch_size
        self.feature_block = feature_block_name(dit, feature_block)
        self._hook = FeatureHook(dit.get_submodule(self.feature_block)) if head is not None else None

    def forward(
        self, x: torch.Tensor, sigma: torch.Tensor, batch: CondBatch, features: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        passes = (FULL,) * (x.shape[0] // batch.batch_size)
        if not features:
            return run_dit(self.fake_score, x, sigma, batch, passes, self.image_mode), None
        if self._hook is None:
            raise RuntimeError("features requested from a critic built without a GAN head")
        t, h, w = x.shape[2:]
        self._hook.n_img = (t // self.patch[0]) * (h // self.patch[1]) * (w // self.patch[2])
        self._hook.active = True
        try:
            v = run_dit(self.fake_score, x, sigma, batch, passes, self.image_mode)
        finally:
            self._hook.active = False
        return v, self.head(self._hook.pop())

    @torch.no_grad()
    def real_velocity(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        batch: CondBatch,
        cfg: CFGConfig,
        scales: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """Guided velocity of the frozen base (LoRA off); all CFG passes in one forward.

        `sigma` is one value for the whole batch ([B], all equal): the CFG mode (two-/three-fold)
        is chosen per call from it.
        """
        s0 = float(sigma[0])

        def forward(x_rep: torch.Tensor, passes: tuple[str, ...]) -> torch.Tensor:
            return run_dit(
                self.fake_score, x_rep, sigma.repeat(len(passes)), batch, passes, self.image_mode
            )

        with self.fake_score.disable_adapter():
            return guided_velocity(forward, x, s0, cfg, scales)


def simulate_to_step(
    generator_model: nn.Module,
    batch: CondBatch,
    sigmas: Sequence[float],
    step: int,
    rng: torch.Generator,
    image_mode: str | None = "first_frame",
) -> torch.Tensor:
    """DMD2 backward simulation: x at sampler step `step`, reached by running steps < step.

    Starts from noise, runs the earlier generator steps without grad, each jumping to x0 and
    re-noising with fresh noise to the next sigma (exactly what the distilled sampler does).
    """
    if not 0 <= step < len(sigmas) - 1:
        raise ValueError(f"step {step} outside the {len(sigmas) - 1}-step schedule")
    x = randn_like_cpu(batch.latents, rng)
    with torch.no_grad():
        for k in range(step):
            s, s_next = float(sigmas[k]), float(sigmas[k + 1])
            sig = torch.full((x.shape[0],), s, device=x.device)
            v = run_dit(generator_model, x, sig, batch, (FULL,), image_mode)
            x0 = x0_from_velocity(x, v.to(x.dtype), s)
            x = add_noise(x0, randn_like_cpu(x0, rng), s_next)
    return x


def generator_sample(
    generator_model: nn.Module,
    batch: CondBatch,
    sigmas: Sequence[float],
    step: int,
    rng: torch.Generator,
    image_mode: str | None = "first_frame",
) -> torch.Tensor:
    """x0 the few-step generator produces at sampler step `step`, without grad (critic updates)."""
    x = simulate_to_step(generator_model, batch, sigmas, step, rng, image_mode)
    s = float(sigmas[step])
    with torch.no_grad():
        v = run_dit(
            generator_model, x, torch.full((x.shape[0],), s, device=x.device), batch, (FULL,), image_mode
        )
    return x0_from_velocity(x, v.to(x.dtype), s)


def dmd_terms(
    critic: Critic,
    x0_gen: torch.Tensor,
    batch: CondBatch,
    cfg: CFGConfig,
    rng: torch.Generator,
    *,
    t_range: tuple[float, float] = (0.02, 0.98),
    shift: float = 7.0,
    gan: bool = True,
) -> dict[str, torch.Tensor]:
    """Generator-side DMD loss (+ GAN generator loss) for generator samples x0_gen (with grad).

    The critic's parameters must not require grad here; the GAN logits back-propagate into x0_gen
    only. One sigma for the batch (the CFG mode is chosen from it), scales per sample.
    """
    b = x0_gen.shape[0]
    sigma = sample_sigmas(1, *t_range, shift, rng).expand(b).to(x0_gen.device)
    noise = randn_like_cpu(x0_gen, rng)
    scales = draw_scales(cfg, b, rng)
    z = add_noise(x0_gen, noise, sigma)  # carries grad to x0_gen for the GAN term
    if gan and critic.head is not None:
        v_fake, logits = critic(z, sigma, batch, features=True)
    else:
        with torch.no_grad():
            v_fake, logits = critic(z.detach(), sigma, batch, features=False)
    z_d = z.detach()
    v_real = critic.real_velocity(z_d, sigma, batch, cfg, scales)
    x0_real = x0_from_velocity(z_d, v_real.to(z_d.dtype), sigma)
    x0_fake = x0_from_velocity(z_d, v_fake.detach().to(z_d.dtype), sigma)
    grad = dmd_gradient(x0_gen.detach(), x0_real, x0_fake)
    out = {"dmd": dmd_loss(x0_gen, grad), "dmd_grad_norm": grad.detach().norm() / grad.numel() ** 0.5}
    if logits is not None:
        out["gan_g"] = gan_generator_loss(logits)
    return out
