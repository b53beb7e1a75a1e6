"""Multi-condition classifier-free guidance (paper Eq. 7, normalised; DESIGN.md §5).

Eq. 7 as printed adds two guided terms and so sums to 2u. We use the normalised form

  two-fold:   u = (1 + w_a) u(T,I,A) - w_a u(0,0,0)
  three-fold: u = (1 + w_a) u(T,I,A) - w_a u(T,I,0) + w_t u(T,I,0) - w_t u(0,0,0)

whose coefficients sum to 1 and which equal u(T,I,A) at w = 0. The paper picks two-fold for
t in [0.75, 1] and three-fold for t in [0, 0.75]; we read its t as the sampler's timestep, i.e. our
sigma (1 = pure noise, HunyuanVideo's convention), so high-noise steps use two-fold guidance and the
later, detail-forming steps separate audio from text. `boundary` moves that switch.
All passes of one step run as one batched forward.

`DecayingGuidance` is HunyuanVideo-Avatar's schedule instead (docs/hunyuan_avatar.md): two passes per
step, a guidance scale that decays linearly with the step index, the negative prompt with zero audio
for the first steps and zero audio alone afterwards, and the face mask scaled down during the first steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from magicinfinite_core.config import DEFAULT_AUDIO_SCALE, DEFAULT_CFG_BOUNDARY, DEFAULT_TEXT_SCALE

FULL = "full"  # u(T, I, A)
NO_AUDIO = "no_audio"  # u(T, I, 0)
UNCOND = "uncond"  # u(0, 0, 0)
# Avatar's unconditional audio is "zero Whisper features", not "adapter off": the adapters still run
# (through the projection's biases and LayerNorm) under the face mask.
ZERO_AUDIO = "zero_audio"  # u(T, I, A=0): the prompt, zero audio features, face masks kept
NEG_ZERO_AUDIO = "neg_zero_audio"  # u(T-, I, A=0): the negative prompt and zero audio features

PASSES = {"off": (FULL,), "two-fold": (FULL, UNCOND), "three-fold": (FULL, NO_AUDIO, UNCOND)}


@dataclass(frozen=True)
class DecayingGuidance:
    """HunyuanVideo-Avatar's guidance schedule (its pipeline's denoising loop; docs/hunyuan_avatar.md).

    Step i of N runs two passes, u_c (prompt + audio) and u_u, combined as u_u + s (u_c - u_u):
      i <  early_steps: u_u = negative prompt + zero audio, s = (1 - i/N)(early_scale - early_floor) + early_floor,
                        and the face mask of BOTH passes is multiplied by `early_mask_scale`;
      i >= early_steps: u_u = the same prompt + zero audio (audio-only guidance),
                        s = (1 - i/N)(late_scale - late_floor) + late_floor, face mask as is.
    """

    early_steps: int = 10
    early_scale: float = 7.5
    early_floor: float = 2.0
    late_scale: float = 6.5
    late_floor: float = 3.5
    early_mask_scale: float = 0.6

    def __post_init__(self) -> None:
        if self.early_steps < 0 or not 0.0 <= self.early_mask_scale <= 1.0:
            raise ValueError(
                f"early_steps must be >= 0 and early_mask_scale in [0, 1], got {self.early_steps}, "
                f"{self.early_mask_scale}"
            )

    def at(self, step: int, steps: int) -> tuple[tuple[str, str], float, float]:
        """(passes, guidance scale, face-mask factor) of step `step` (0-based) of `steps`."""
        decay = 1.0 - step / steps
        if step < self.early_steps:
            scale = decay * (self.early_scale - self.early_floor) + self.early_floor
            return (FULL, NEG_ZERO_AUDIO), scale, self.early_mask_scale
        return (FULL, ZERO_AUDIO), decay * (self.late_scale - self.late_floor) + self.late_floor, 1.0


@dataclass(frozen=True)
class CFGConfig:
    audio_scale: float = DEFAULT_AUDIO_SCALE
    text_scale: float = DEFAULT_TEXT_SCALE
    boundary: float = DEFAULT_CFG_BOUNDARY  # sigma >= boundary -> two-fold, below -> three-fold
    dynamic_std: float = 0.0  # >0: per-sample scales drawn from N(mean, std) (distillation)
    enabled: bool = True
    # HunyuanVideo-Avatar's schedule instead of Eq. 7 (the scales above are then unused)
    decay: DecayingGuidance | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.boundary <= 1.0:
            raise ValueError(f"CFG boundary must lie in [0, 1], got {self.boundary}")
        if self.dynamic_std < 0:
            raise ValueError(f"dynamic_std must be >= 0, got {self.dynamic_std}")

    @classmethod
    def off(cls) -> CFGConfig:
        return cls(enabled=False)

    @classmethod
    def avatar(cls) -> CFGConfig:
        """HunyuanVideo-Avatar's own guidance (`DecayingGuidance` with its published numbers)."""
        return cls(decay=DecayingGuidance())

    def mode(self, sigma: float) -> str:
        if not self.enabled or (self.audio_scale == 0 and self.text_scale == 0 and self.dynamic_std == 0):
            return "off"
        return "two-fold" if sigma >= self.boundary else "three-fold"


def cfg_coefficients(mode: str, audio_scale: torch.Tensor | float, text_scale: torch.Tensor | float) -> dict:
    """Weights of each pass; they sum to 1 for every scale."""
    if mode == "off":
        return {FULL: 1.0}
    if mode == "two-fold":
        return {FULL: 1 + audio_scale, UNCOND: -audio_scale}
    if mode == "three-fold":
        return {FULL: 1 + audio_scale, NO_AUDIO: text_scale - audio_scale, UNCOND: -text_scale}
    raise ValueError(f"unknown CFG mode {mode!r}; use one of {sorted(PASSES)}")


def combine(preds: dict[str, torch.Tensor], mode: str, audio_scale, text_scale) -> torch.Tensor:
    out = None
    for name, coef in cfg_coefficients(mode, audio_scale, text_scale).items():
        coef = _per_sample(coef, preds[name])
        out = preds[name] * coef if out is None else out + preds[name] * coef
    return out


def draw_scales(cfg: CFGConfig, batch: int, generator: torch.Generator | None = None):
    """Per-sample guidance scales: fixed, or dynamic around the means (paper §3.4)."""
    wa = torch.full((batch,), float(cfg.audio_scale))
    wt = torch.full((batch,), float(cfg.text_scale))
    if cfg.dynamic_std > 0:
        noise = torch.randn(2, batch, generator=generator) * cfg.dynamic_std
        wa, wt = (wa + noise[0]).clamp_min(0), (wt + noise[1]).clamp_min(0)
    return wa, wt


def guided_velocity(
    forward: Callable[[torch.Tensor, tuple[str, ...]], torch.Tensor],
    x: torch.Tensor,
    sigma: float,
    cfg: CFGConfig,
    scales: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run every pass the CFG mode needs in ONE forward, then combine.

    `forward(x_rep, passes)` gets x repeated once per pass (pass-major along the batch) and must
    return the velocity for that batch; it builds each pass's conditions itself.
    """
    mode = cfg.mode(sigma)
    passes = PASSES[mode]
    v = forward(x.repeat(len(passes), *([1] * (x.ndim - 1))), passes)
    preds = dict(zip(passes, v.chunk(len(passes)), strict=True))
    if mode == "off":
        return preds[FULL]
    wa, wt = scales if scales is not None else draw_scales(cfg, x.shape[0])
    return combine(preds, mode, wa, wt)


def decayed_velocity(
    forward: Callable[[torch.Tensor, tuple[str, ...], float], torch.Tensor],
    x: torch.Tensor,
    step: int,
    steps: int,
    schedule: DecayingGuidance,
) -> torch.Tensor:
    """`DecayingGuidance` at step `step` of `steps`: both passes in ONE forward, then u_u + s (u_c - u_u).

    `forward(x_rep, passes, mask_scale)` is `guided_velocity`'s forward plus the face-mask factor.
    """
    passes, scale, mask_scale = schedule.at(step, steps)
    v_cond, v_uncond = forward(x.repeat(2, *([1] * (x.ndim - 1))), passes, mask_scale).chunk(2)
    return v_uncond + scale * (v_cond - v_uncond)


def _per_sample(coef, like: torch.Tensor):
    if isinstance(coef, torch.Tensor) and coef.ndim == 1:
        return coef.to(like).view(-1, *([1] * (like.ndim - 1)))
    return coef
