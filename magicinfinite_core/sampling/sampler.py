"""Sliding-window denoising of one latent for the whole video (paper §4.1.3, §3.4; DESIGN.md §5).

The whole video is ONE latent [C, T, H, W] that stays on the CPU (or in a memory-mapped file). At
every step the windows of `sliding_window.window_plan` are cut out one at a time, moved to the compute
device, and handed to `predict(x_window[1, C, L, H, W], sigma, window) -> velocity`; the predictions
are blended with the linear overlap ramp and the step's update is applied. The update is streamed:
a frame is final as soon as no later window of the step covers it, so only a window-sized blend
buffer exists besides the latent, and memory does not grow with the step's window count.

Two modes:
  * base: N flow-matching Euler steps on the shifted schedule (`SamplerConfig.steps`, `.shift`); the
    predictor usually runs batched multi-condition CFG (`guidance.guided_velocity`).
  * distilled: the explicit step list (`SamplerConfig.distilled_timesteps`, e.g. 1000/750/500/250),
    one pass per window and step, no CFG. Each step jumps to the clean estimate x0 = x - sigma*v and
    re-noises it to the next sigma with fresh noise (DMD2's multi-step generator); `renoise=False`
    takes plain Euler steps instead.

Determinism: all randomness (initial noise, re-noising) is keyed by (seed, step, latent frame)
(`noise_keys`), so it depends neither on window sizes, nor on the device, nor on the order frames are
visited: the wavefront order (`wavefront.py`) gives this sweep's latent bit for bit. After every step
the latent and step index are saved atomically (`sampler_state`), so `resume=True` continues to a
bit-identical latent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from magicinfinite_core.config import SamplerConfig
from magicinfinite_core.errors import MagicInfiniteError, NonFiniteError
from magicinfinite_core.sampling.noise_keys import fill_keyed_noise, keyed_noise
from magicinfinite_core.sampling.schedule import distilled_sigmas, euler_step, flow_sigmas, x0_from_velocity
from magicinfinite_core.sampling.sliding_window import (
    Window,
    blend_weights,
    step_shift,
    window_plan,
    window_sizes,
)
from magicinfinite_core.sampling.state import SamplerState, config_hash, has_state, load_state, save_state

Predictor = Callable[[torch.Tensor, float, Window], torch.Tensor]


@dataclass(frozen=True)
class Progress:
    """One progress report; `step` and `window` count from 1 (window i of n, step j of m)."""

    phase: str  # "denoise" or "decode"
    step: int
    steps: int
    window: int
    windows: int
    done: int  # work units finished in this phase (windows over all steps, or decoded chunks)
    total: int
    elapsed_s: float
    eta_s: float

    def __str__(self) -> str:
        return (
            f"{self.phase} step {self.step}/{self.steps} window {self.window}/{self.windows} "
            f"({self.done}/{self.total}, ETA {self.eta_s:.0f}s)"
        )


ProgressCallback = Callable[[Progress], None]


def sampling_sigmas(config: SamplerConfig, distilled: bool = False) -> torch.Tensor:
    """The sigma list, noise (1) to data (0), of the chosen mode."""
    if distilled:
        return distilled_sigmas(config.distilled_timesteps, config.shift)
    return flow_sigmas(config.steps, config.shift)


def step_plans(total: int, config: SamplerConfig, steps: int) -> list[list[Window]]:
    """Window plan of every step (cheap; lets progress know the total amount of work)."""
    w, o = window_sizes(config.window_frames, config.overlap_frames)
    return [window_plan(total, w, o, step_shift(j, w, o, config.shift_windows)) for j in range(steps)]


def sampler_hash(
    latent_shape: tuple[int, ...], config: SamplerConfig, distilled: bool, renoise: bool, seed: int, extra: Any
) -> str:
    """Hash of everything the sampled latent depends on; `extra` carries model / input fingerprints."""
    return config_hash(
        {
            "shape": list(latent_shape),
            "config": asdict(config),
            "distilled": distilled,
            "renoise": renoise,
            "seed": int(seed),
            "noise": "keyed",  # noise_keys: (seed, step, frame); states of the old single-stream noise are refused
            "extra": extra,
        }
    )


def allocate_latent(shape: tuple[int, ...], path: str | Path | None = None) -> torch.Tensor:
    """A float32 latent in RAM, or backed by a memory-mapped file when `path` is given."""
    if path is None:
        return torch.empty(shape, dtype=torch.float32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=tuple(shape))
    return torch.from_numpy(mm)


class _StreamingUpdate:
    """Blends window predictions and applies the step update to frames as soon as they are final."""

    def __init__(self, latent, sigma, sigma_next, distilled, renoise, seed, step):
        self.latent, self.sigma, self.sigma_next = latent, sigma, sigma_next
        self.distilled, self.renoise, self.seed, self.step = distilled, renoise, seed, step
        self.p0 = 0  # first frame not yet final
        self.acc: torch.Tensor | None = None  # float64 [C, n, H, W] for frames [p0, p0+n)
        self.wsum: torch.Tensor | None = None

    def add(self, win: Window, v: torch.Tensor, weights: torch.Tensor, final_upto: int) -> None:
        c, _, h, w = self.latent.shape
        if win.start < self.p0:
            raise RuntimeError(f"window {win} reaches back into frames already updated (< {self.p0})")
        n_needed = win.end - self.p0
        if self.acc is None:
            self.acc = torch.zeros((c, n_needed, h, w), dtype=torch.float64)
            self.wsum = torch.zeros(n_needed, dtype=torch.float64)
        elif self.acc.shape[1] < n_needed:
            grow = n_needed - self.acc.shape[1]
            self.acc = torch.cat([self.acc, self.acc.new_zeros((c, grow, h, w))], dim=1)
            self.wsum = torch.cat([self.wsum, self.wsum.new_zeros(grow)])
        a, b = win.start - self.p0, win.end - self.p0
        self.acc[:, a:b] += v.to(torch.float64) * weights.view(1, -1, 1, 1)
        self.wsum[a:b] += weights
        self._finalize(final_upto)

    def _finalize(self, upto: int) -> None:
        n = upto - self.p0
        if n <= 0:
            return
        if float(self.wsum[:n].min()) <= 0:
            raise RuntimeError(f"latent frames {self.p0}..{upto} were not covered by any window")
        v = (self.acc[:, :n] / self.wsum[:n].view(1, -1, 1, 1)).to(torch.float32)
        x = self.latent[:, self.p0 : upto]
        if not self.distilled or not self.renoise:
            x_new = euler_step(x, v, self.sigma, self.sigma_next)
        else:
            x0 = x0_from_velocity(x, v, self.sigma)
            if self.sigma_next > 0:
                noise = keyed_noise(self.seed, self.step, self.p0, upto, (x.shape[0], *x.shape[2:]))
                x_new = self.sigma_next * noise + (1 - self.sigma_next) * x0
            else:
                x_new = x0
        self.latent[:, self.p0 : upto] = x_new
        self.acc, self.wsum = self.acc[:, n:], self.wsum[n:]
        self.p0 = upto


def _non_finite(what: str, j: int, steps: int, k: int, windows: int, win: Window) -> NonFiniteError:
    """The error for a NaN/inf, naming step and window, so a black video is never reported as success."""
    return NonFiniteError(
        f"{what} is not finite (NaN or inf) at step {j + 1}/{steps}, window {k + 1}/{windows} (latent frames "
        f"{win.start}..{win.end - 1}); stopped before writing a video. Check the guidance scales, the shift "
        "and the model's weights"
    )


def sample(
    predict: Predictor,
    latent_shape: tuple[int, int, int, int],
    *,
    config: SamplerConfig = SamplerConfig(),
    distilled: bool = False,
    renoise: bool = True,
    seed: int = 0,
    device: torch.device | str = "cpu",
    state_dir: str | Path | None = None,
    resume: bool = False,
    extra_hash: Any = None,
    latent_file: str | Path | None = None,
    callback: ProgressCallback | None = None,
) -> torch.Tensor:
    """Denoise a [C, T, H, W] latent from noise; returns it on the CPU (float32).

    `state_dir`: save the state there after every step. `resume`: continue from the state found
    there (its config hash must match). `extra_hash`: anything else the result depends on (model,
    inputs), folded into the hash so a resume with other inputs is refused.
    """
    if len(latent_shape) != 4:
        raise ValueError(f"latent_shape must be [C, T, H, W], got {latent_shape}")
    sigmas = sampling_sigmas(config, distilled).tolist()
    steps = len(sigmas) - 1
    total = latent_shape[1]
    plans = step_plans(total, config, steps)
    chash = sampler_hash(latent_shape, config, distilled, renoise, seed, extra_hash)
    # no randomness is drawn from it (noise_keys); its state stays in the saved state's format (state.py)
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seed))
    latent = allocate_latent(latent_shape, latent_file)

    start_step = 0
    if resume and has_state(state_dir):
        st = load_state(state_dir, expected_hash=chash)
        if tuple(st.latent.shape) != tuple(latent_shape) or st.total_steps != steps:
            raise MagicInfiniteError(f"sampler state in {state_dir} does not fit this job; delete it")
        if not torch.isfinite(st.latent).all():
            raise NonFiniteError(f"the saved sampler state in {state_dir} holds NaN/inf values; delete it and start again")
        latent.copy_(st.latent)
        generator.set_state(st.generator_state)
        start_step = st.step
    else:
        if resume and state_dir is None:
            raise MagicInfiniteError("resume needs a state folder")
        fill_keyed_noise(latent, int(seed))
        if state_dir is not None:
            save_state(state_dir, SamplerState(latent, 0, steps, generator.get_state(), chash))

    units_total = sum(len(p) for p in plans)
    units_before = sum(len(p) for p in plans[:start_step])
    t0 = time.perf_counter()
    done_here = 0
    device = torch.device(device)
    for j in range(start_step, steps):
        sigma, sigma_next = float(sigmas[j]), float(sigmas[j + 1])
        plan = plans[j]
        update = _StreamingUpdate(latent, sigma, sigma_next, distilled, renoise, int(seed), j)
        for k, win in enumerate(plan):
            x_win = latent[:, win.start : win.end].unsqueeze(0).contiguous().to(device)
            with torch.no_grad():
                v = predict(x_win, sigma, win)
            if tuple(v.shape) != tuple(x_win.shape):
                raise RuntimeError(f"predictor returned {tuple(v.shape)} for a window of {tuple(x_win.shape)}")
            v = v[0].detach().to("cpu", torch.float32)
            del x_win
            if not torch.isfinite(v).all():
                raise _non_finite("the model's prediction", j, steps, k, len(plan), win)
            final_upto = plan[k + 1].start if k + 1 < len(plan) else total
            p0 = update.p0
            update.add(win, v, blend_weights(plan, k), final_upto)
            if not torch.isfinite(latent[:, p0 : update.p0]).all():
                raise _non_finite("the latent", j, steps, k, len(plan), win)
            done_here += 1
            if callback is not None:
                elapsed = time.perf_counter() - t0
                left = units_total - units_before - done_here
                callback(
                    Progress("denoise", j + 1, steps, k + 1, len(plan), units_before + done_here, units_total,
                             elapsed, elapsed / done_here * left)
                )
        if state_dir is not None:
            save_state(state_dir, SamplerState(latent, j + 1, steps, generator.get_state(), chash))
    return latent
