"""Flow-matching noise schedule and Euler steps (HunyuanVideo convention).

Our convention: sigma = 1 is pure noise, sigma = 0 is data. A noisy latent is
x_sigma = sigma * noise + (1 - sigma) * data and the model predicts the velocity
v = noise - data = dx/dsigma, so an Euler step is x += v * (sigma_next - sigma) and the clean
estimate is x0 = x - sigma * v. The paper writes the mirror image (t = 1 - sigma, v = data - noise).
The DiT receives timesteps as sigma * 1000.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from magicinfinite_core.config import DISTILLED_TIMESTEPS

TIMESTEP_SCALE = 1000.0


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3 / HunyuanVideo time shift: spends more steps at high noise when shift > 1."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def flow_sigmas(steps: int, shift: float = 7.0) -> torch.Tensor:
    """The N+1 sigmas of an N-step sampler, from 1 down to 0, shifted."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return shift_sigmas(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift).float()


def distilled_sigmas(timesteps: Sequence[float], shift: float = 7.0) -> torch.Tensor:
    """Sigmas of the distilled few-step sampler.

    The step list (e.g. 1000, 750, 500, 250) is given on the unshifted 0..1000 axis and warped onto
    the shifted schedule the base model was trained with; a final 0 is appended.
    """
    if not timesteps:
        raise ValueError("the distilled step list is empty")
    if any(b >= a for a, b in zip(timesteps, timesteps[1:], strict=False)):
        raise ValueError(f"distilled timesteps must decrease strictly, got {list(timesteps)}")
    raw = torch.tensor([*timesteps, 0.0], dtype=torch.float64) / TIMESTEP_SCALE
    if raw.max() > 1 or raw.min() < 0:
        raise ValueError(f"distilled timesteps must lie in [0, 1000], got {list(timesteps)}")
    return shift_sigmas(raw, shift).float()


def timestep_from_sigma(sigma: torch.Tensor | float) -> torch.Tensor:
    return torch.as_tensor(sigma, dtype=torch.float32) * TIMESTEP_SCALE


def add_noise(data: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    sigma = _broadcast(sigma, data)
    return sigma * noise + (1 - sigma) * data


def velocity_target(data: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - data


def x0_from_velocity(x: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    return x - _broadcast(sigma, x) * v


def euler_step(x: torch.Tensor, v: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    return x + v * (sigma_next - sigma)


def _broadcast(sigma: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    if sigma.ndim == 1 and like.ndim > 1:
        sigma = sigma.view(-1, *([1] * (like.ndim - 1)))
    return sigma


def distilled_timesteps(steps: int) -> tuple[float, ...]:
    """A few-step generator's timesteps: the paper's trained list for 4 steps, else evenly spaced."""
    if steps == len(DISTILLED_TIMESTEPS):
        return DISTILLED_TIMESTEPS
    return tuple(TIMESTEP_SCALE * (1 - i / steps) for i in range(steps))
