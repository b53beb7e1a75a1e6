"""Wavefront order over (step, window): latent frames come out final while the video is still sampled.

Why: the sweep (`sampler.sample`) finishes step j over the WHOLE latent before step j+1 starts, so
the first frame exists only at the very end and the whole-video latent must be held. But step j of
a window needs only step j-1 finished over that window's frames. Here each step is a *level* that
holds just its in-flight frames: level j's input frames [p0_j, top_j), its blend accumulator, and
its next window k_j. A window (j, k) runs as soon as level j holds its frames (level j-1 has
finalised them; level 0 draws keyed noise on demand) and window k+1's span is known (it decides
the blend weights). Finalising frames of step j hands them to level j+1; frames finalised by the
last step are yielded at once, in order, to the decoder.

Orders: "wavefront" always runs the deepest runnable level (a frame leaves as early as possible,
about steps x (window + overlap) latent frames are in flight, whatever the length); "sweep" runs the
shallowest one, which is the old step-by-step order. Each window's prediction, blend and update are
the same tensors and ops in either order, and the noise is keyed by (seed, step, frame)
(`noise_keys`), so both orders give `sampler.sample`'s latent bit for bit (tests/test_streaming.py).

Resume: `state()` is everything in flight (per level: k, p0, input frames, accumulator) plus the
count of frames already yielded; `WavefrontSampler(..., state=...)` continues from it and yields
exactly the frames an uninterrupted run would have yielded next.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import torch

from magicinfinite_core.config import SamplerConfig
from magicinfinite_core.errors import MagicInfiniteError, NonFiniteError
from magicinfinite_core.sampling.noise_keys import INITIAL, keyed_noise
from magicinfinite_core.sampling.sampler import (
    Predictor,
    Progress,
    ProgressCallback,
    sampling_sigmas,
    step_plans,
)
from magicinfinite_core.sampling.schedule import euler_step, x0_from_velocity
from magicinfinite_core.sampling.sliding_window import (
    Window,
    blend_weights,
    step_shift,
    window_plan,
    window_sizes,
)

ORDERS = ("wavefront", "sweep")


class WindowPlans(Protocol):
    """The windows of every step, possibly still growing (live audio)."""

    steps: int

    def get(self, step: int, k: int) -> Window | None:
        """Window k of `step`, or None when it does not exist or is not known yet."""

    def count(self, step: int) -> int | None:
        """Windows of `step`, or None while the length is unknown."""

    def advance(self) -> bool:
        """Wait for more input; False when there is none (then every count is known)."""


class FixedPlans:
    """The plans of a video of known length (`total` latent frames): `sliding_window.window_plan`."""

    def __init__(self, total: int, config: SamplerConfig, steps: int) -> None:
        self.total, self.steps = int(total), int(steps)
        self.plans = step_plans(self.total, config, self.steps)

    def get(self, step: int, k: int) -> Window | None:
        plan = self.plans[step]
        return plan[k] if 0 <= k < len(plan) else None

    def count(self, step: int) -> int | None:
        return len(self.plans[step])

    def advance(self) -> bool:
        return False


class GrowingPlans:
    """Plans of a video whose length is not known yet (live audio).

    Every window but the last has its default span (window 0 at 0, then stride window - overlap from
    the step's shift), so window i is known once it certainly is not the last one: when its end lies
    before `known` (latent frames whose conditions are final). `finish(total)` fixes the length;
    from then on the plans are exactly `window_plan(total, ...)`. `wait` is called by `advance` to
    read more input; it calls `extend` / `finish` and returns False when the input has ended.
    """

    def __init__(self, config: SamplerConfig, steps: int, wait: Callable[[GrowingPlans], bool] | None = None) -> None:
        self.steps = int(steps)
        self.w, self.o = window_sizes(config.window_frames, config.overlap_frames)
        self.shifts = [step_shift(j, self.w, self.o, config.shift_windows) for j in range(self.steps)]
        self.known, self.total = 0, None
        self.full: list[list[Window]] | None = None
        self._wait = wait

    def extend(self, known: int) -> None:
        self.known = max(self.known, int(known))

    def finish(self, total: int) -> None:
        if total < 1:
            raise MagicInfiniteError("the live audio ended before one video frame (40 ms) arrived")
        self.total, self.known = int(total), int(total)
        self.full = [window_plan(self.total, self.w, self.o, s) for s in self.shifts]

    def _default(self, step: int, k: int) -> tuple[int, int]:
        start = 0 if k == 0 else self.w - self.o - self.shifts[step] + (k - 1) * (self.w - self.o)
        return start, start + self.w

    def get(self, step: int, k: int) -> Window | None:
        if k < 0:
            return None
        if self.full is not None:
            plan = self.full[step]
            return plan[k] if k < len(plan) else None
        s, e = self._default(step, k)
        return Window(k, 0, s, e) if e < self.known else None

    def count(self, step: int) -> int | None:
        return None if self.full is None else len(self.full[step])

    def advance(self) -> bool:
        if self.full is not None or self._wait is None:
            return False
        return bool(self._wait(self))


class _Level:
    """One step's frames in flight: input x_j over [p0, p0 + n), blend accumulator, next window."""

    def __init__(self, step: int, sigma: float, sigma_next: float, shape: tuple[int, int, int]) -> None:
        c, h, w = shape
        self.step, self.sigma, self.sigma_next = step, sigma, sigma_next
        self.k, self.p0 = 0, 0
        self.x = torch.empty((c, 0, h, w), dtype=torch.float32)
        self.acc = torch.zeros((c, 0, h, w), dtype=torch.float64)
        self.wsum = torch.zeros(0, dtype=torch.float64)

    @property
    def top(self) -> int:
        return self.p0 + self.x.shape[1]


class WavefrontSampler:
    """Iterate `run()` to get (first latent frame, final latent frames [C, n, h, w]) in frame order.

    `sigmas`: the N+1 sigmas (`sampler.sampling_sigmas`). `shape`: (C, h, w) of one latent frame.
    `predict(x_window[1, C, L, h, w], sigma, window) -> velocity`, the sampler's predictor.
    """

    def __init__(
        self,
        predict: Predictor,
        shape: tuple[int, int, int],
        plans: WindowPlans,
        sigmas: Sequence[float],
        *,
        distilled: bool = False,
        renoise: bool = True,
        seed: int = 0,
        device: torch.device | str = "cpu",
        order: str = "wavefront",
        state: dict[str, torch.Tensor] | None = None,
        callback: ProgressCallback | None = None,
    ) -> None:
        if order not in ORDERS:
            raise MagicInfiniteError(f"order must be one of {ORDERS}, got {order!r}")
        if len(sigmas) - 1 != plans.steps:
            raise ValueError(f"{len(sigmas)} sigmas for {plans.steps} steps")
        self.predict, self.shape, self.plans = predict, tuple(int(s) for s in shape), plans
        self.distilled, self.renoise, self.seed = distilled, renoise, int(seed)
        self.device, self.order, self.callback = torch.device(device), order, callback
        self.levels = [_Level(j, float(sigmas[j]), float(sigmas[j + 1]), self.shape) for j in range(plans.steps)]
        self.emitted = 0  # final frames yielded so far
        self.windows_done = 0
        self.peak_in_flight = 0  # most latent frames held at once over all levels (memory check)
        self._t0 = time.perf_counter()
        if state is not None:
            self.load_state(state)

    # ---------------------------------------------------------------------------------- scheduling
    def _runnable(self, j: int) -> Window | None:
        lv = self.levels[j]
        win = self.plans.get(j, lv.k)
        if win is None:
            return None
        n = self.plans.count(j)
        if not (n is not None and lv.k == n - 1) and self.plans.get(j, lv.k + 1) is None:
            return None  # the next window's span (hence this one's blend weights) is not known yet
        if j > 0 and lv.top < win.end:
            return None
        return win

    def _done(self) -> bool:
        return all(self.plans.count(j) is not None and lv.k >= self.plans.count(j) for j, lv in enumerate(self.levels))

    def run(self) -> Iterator[tuple[int, torch.Tensor]]:
        """Run every window in the chosen order; yields final frames as soon as they are final."""
        order = range(len(self.levels) - 1, -1, -1) if self.order == "wavefront" else range(len(self.levels))
        while not self._done():
            for j in order:
                win = self._runnable(j)
                if win is not None:
                    out = self._run_window(j, win)
                    if out is not None:
                        yield out
                    break
            else:  # nothing can run: wait for input (live audio); its end makes the last windows known
                if self.plans.advance() or self._done() or any(self._runnable(j) for j in order):
                    continue
                raise RuntimeError("wavefront sampler: no window can run and no more input will come")

    # ---------------------------------------------------------------------------------- one window
    def _run_window(self, j: int, win: Window) -> tuple[int, torch.Tensor] | None:
        lv = self.levels[j]
        c, h, w = self.shape
        if j == 0 and lv.top < win.end:  # level 0's input is the keyed initial noise, drawn on demand
            lv.x = torch.cat([lv.x, keyed_noise(self.seed, INITIAL, lv.top, win.end, self.shape)], dim=1)
        if win.start < lv.p0:
            raise RuntimeError(f"window {win} reaches back into frames already updated (< {lv.p0})")
        a, b = win.start - lv.p0, win.end - lv.p0
        x_win = lv.x[:, a:b].unsqueeze(0).contiguous().to(self.device)
        with torch.no_grad():
            v = self.predict(x_win, lv.sigma, win)
        if tuple(v.shape) != tuple(x_win.shape):
            raise RuntimeError(f"predictor returned {tuple(v.shape)} for a window of {tuple(x_win.shape)}")
        v = v[0].detach().to("cpu", torch.float32)
        del x_win
        if not torch.isfinite(v).all():
            raise self._non_finite("the model's prediction", j, win)
        prev, nxt = self.plans.get(j, lv.k - 1), self.plans.get(j, lv.k + 1)
        local = [x for x in (prev, win, nxt) if x is not None]
        weights = blend_weights(local, local.index(win))
        grow = b - lv.acc.shape[1]
        if grow > 0:
            lv.acc = torch.cat([lv.acc, lv.acc.new_zeros((c, grow, h, w))], dim=1)
            lv.wsum = torch.cat([lv.wsum, lv.wsum.new_zeros(grow)])
        lv.acc[:, a:b] += v.to(torch.float64) * weights.view(1, -1, 1, 1)
        lv.wsum[a:b] += weights
        lv.k += 1
        self.windows_done += 1
        upto = nxt.start if nxt is not None else win.end
        out = self._finalize(j, upto)
        self.peak_in_flight = max(self.peak_in_flight, sum(x.x.shape[1] for x in self.levels))
        if self.callback is not None:
            self._report(j, win)
        return out

    def _finalize(self, j: int, upto: int) -> tuple[int, torch.Tensor] | None:
        """Apply step j's update to frames [p0, upto) (the sweep's arithmetic) and pass them on."""
        lv = self.levels[j]
        n = upto - lv.p0
        if n <= 0:
            return None
        if float(lv.wsum[:n].min()) <= 0:
            raise RuntimeError(f"latent frames {lv.p0}..{upto} were not covered by any window")
        v = (lv.acc[:, :n] / lv.wsum[:n].view(1, -1, 1, 1)).to(torch.float32)
        x = lv.x[:, :n]
        if not self.distilled or not self.renoise:
            x_new = euler_step(x, v, lv.sigma, lv.sigma_next)  # the sweep's own arithmetic (sampler.py)
        else:
            x0 = x0_from_velocity(x, v, lv.sigma)
            if lv.sigma_next > 0:
                noise = keyed_noise(self.seed, lv.step, lv.p0, upto, self.shape)
                x_new = lv.sigma_next * noise + (1 - lv.sigma_next) * x0
            else:
                x_new = x0
        if not torch.isfinite(x_new).all():
            raise self._non_finite("the latent", j, Window(lv.k - 1, 0, lv.p0, upto))
        start = lv.p0
        lv.x, lv.acc, lv.wsum = lv.x[:, n:].clone(), lv.acc[:, n:].clone(), lv.wsum[n:].clone()
        lv.p0 = upto
        if j + 1 < len(self.levels):
            nxt = self.levels[j + 1]
            if nxt.top != start:
                raise RuntimeError(f"level {j + 1} holds frames up to {nxt.top}, step {j} finalised from {start}")
            nxt.x = torch.cat([nxt.x, x_new], dim=1)
            return None
        if start != self.emitted:
            raise RuntimeError(f"final frames out of order: {start} after {self.emitted}")
        self.emitted = upto
        return start, x_new

    def _non_finite(self, what: str, j: int, win: Window) -> NonFiniteError:
        return NonFiniteError(
            f"{what} is not finite (NaN or inf) at step {j + 1}/{len(self.levels)}, window {win.index + 1} "
            f"(latent frames {win.start}..{win.end - 1}); stopped. Check the guidance scales, the shift and the "
            "model's weights"
        )

    def _report(self, j: int, win: Window) -> None:
        counts = [self.plans.count(i) for i in range(len(self.levels))]
        total = sum(counts) if all(n is not None for n in counts) else 0
        el = time.perf_counter() - self._t0
        left = max(0, total - self.windows_done)
        self.callback(Progress("denoise", j + 1, len(self.levels), win.index + 1, counts[j] or 0,
                               self.windows_done, total, el, el / max(1, self.windows_done) * left))

    # ---------------------------------------------------------------------------------- resume
    def state(self) -> dict[str, torch.Tensor]:
        """Everything in flight, as tensors (safetensors-ready): per level k, p0, x, acc, wsum; emitted."""
        out: dict[str, torch.Tensor] = {"emitted": torch.tensor([self.emitted], dtype=torch.int64),
                                        "windows_done": torch.tensor([self.windows_done], dtype=torch.int64)}
        for j, lv in enumerate(self.levels):
            out[f"level{j}.pos"] = torch.tensor([lv.k, lv.p0], dtype=torch.int64)
            out[f"level{j}.x"] = lv.x.contiguous()
            out[f"level{j}.acc"] = lv.acc.contiguous()
            out[f"level{j}.wsum"] = lv.wsum.contiguous()
        return out

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        try:
            self.emitted = int(state["emitted"][0])
            self.windows_done = int(state["windows_done"][0])
            for j, lv in enumerate(self.levels):
                lv.k, lv.p0 = (int(v) for v in state[f"level{j}.pos"])
                lv.x = state[f"level{j}.x"].to(torch.float32).clone()
                lv.acc = state[f"level{j}.acc"].to(torch.float64).clone()
                lv.wsum = state[f"level{j}.wsum"].to(torch.float64).clone()
        except KeyError as exc:
            raise MagicInfiniteError(f"the streaming state has no {exc}; delete the state folder and start again") from None
        if any((lv.x.shape[0], *lv.x.shape[2:]) != self.shape for lv in self.levels):
            raise MagicInfiniteError("the streaming state was made for another latent size; delete it and start again")


def sample_wavefront(
    predict: Predictor,
    latent_shape: tuple[int, int, int, int],
    sigmas: Sequence[float],
    config: SamplerConfig,
    *,
    on_final: Callable[[int, torch.Tensor], None] | None = None,
    **kwargs,
) -> torch.Tensor:
    """The whole [C, T, h, w] latent via `WavefrontSampler` (tests and the ComfyUI node, which needs it all).

    `on_final(start, frames)` sees each group of final frames as it comes (the node's previews)."""
    c, t, h, w = latent_shape
    plans = FixedPlans(t, config, len(sigmas) - 1)
    out = torch.empty(latent_shape, dtype=torch.float32)
    for start, frames in WavefrontSampler(predict, (c, h, w), plans, sigmas, **kwargs).run():
        out[:, start : start + frames.shape[1]] = frames
        if on_final is not None:
            on_final(start, frames)
    return out


def wavefront_sampler_fn(order: str = "wavefront", on_final: Callable[[int, torch.Tensor], None] | None = None):
    """A drop-in for `sampler.sample` (same call) that samples in wavefront order, without per-step state.

    Why: `pipeline.sample_latent(sampler_fn=...)` takes it, so the ComfyUI node gets the same latent as the
    sweep with finished frames early (previews). Resume needs the sweep's per-step state or `streaming`."""

    def fn(predict: Predictor, latent_shape: tuple[int, int, int, int], *, config: SamplerConfig = SamplerConfig(),
           distilled: bool = False, renoise: bool = True, seed: int = 0, device: torch.device | str = "cpu",
           state_dir=None, resume: bool = False, extra_hash=None, latent_file=None,
           callback: ProgressCallback | None = None) -> torch.Tensor:
        if state_dir is not None or resume:
            raise MagicInfiniteError("the wavefront order keeps no per-step state; resume with the sweep order")
        return sample_wavefront(predict, latent_shape, sampling_sigmas(config, distilled).tolist(), config,
                                on_final=on_final, distilled=distilled, renoise=renoise, seed=seed, device=device,
                                order=order, callback=callback)

    return fn
