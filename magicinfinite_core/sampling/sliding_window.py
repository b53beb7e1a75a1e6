"""Window plans and blend weights for sliding-window denoising (paper §4.1.3, DESIGN.md §5).

Everything here counts LATENT frames. The causal VAE maps F video frames to 1 + ceil((F-1)/4)
latent frames: latent frame 0 is video frame 0 alone, latent frame k >= 1 is video frames 4k-3..4k.
A 33-frame video window is therefore 9 latent frames, an 8-frame overlap 2 latent frames.

Plan of one step (`window_plan`):
  * window 0 is always [0, W): it is the only window that starts at the portrait and receives the
    I2V frame-0 condition, so its position never moves;
  * windows 1.. follow at stride W - O; with `shift` > 0 they all move left by `shift` frames, which
    widens the overlap between window 0 and window 1 and moves every later seam. Shifts are bounded
    so that no frame is ever covered by three windows;
  * the last window ends exactly at T (no padding past the audio) and reaches back as far as W frames
    allow without touching the window two before it, so it is never a sliver.

Blend weights (`blend_weights`): across each overlap of length o a linear ramp hands over from the
old window to the new one, w_new(i) = (i + 1) / (o + 1), w_old(i) = (o - i) / (o + 1), i = 0..o-1.
Weights lie strictly inside (0, 1) in overlaps, are 1 elsewhere, and sum to 1 on every frame, so a
constant prediction blends to itself. The paper prints w_orig = ((o - 1) - i) / (o - 2), which is
(o-1)/(o-2) > 1 at i = 0 (and undefined at o = 2); we read it as this ramp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from magicinfinite_core.config import TEMPORAL_RATIO, latent_frames

# Step offsets follow the golden-ratio sequence: spread evenly over the allowed range, deterministic.
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def video_frames_of_latent(k: int, ratio: int = TEMPORAL_RATIO) -> tuple[int, int]:
    """Half-open range of video frames that latent frame k decodes to."""
    if k == 0:
        return 0, 1
    return ratio * k - (ratio - 1), ratio * k + 1


def window_sizes(window_frames: int, overlap_frames: int, ratio: int = TEMPORAL_RATIO) -> tuple[int, int]:
    """Video-frame window/overlap (e.g. 33/8) to latent frames (9/2), validated."""
    w = latent_frames(window_frames, ratio)
    o = round(overlap_frames / ratio)
    if overlap_frames < 0:
        raise ValueError(f"overlap must be >= 0 frames, got {overlap_frames}")
    if w < 2:
        raise ValueError(f"a window of {window_frames} video frames is under 2 latent frames; use >= {ratio + 1}")
    if 2 * o >= w:
        raise ValueError(
            f"overlap {overlap_frames} frames ({o} latent) must be under half the window "
            f"{window_frames} frames ({w} latent)"
        )
    return w, o


@dataclass(frozen=True)
class Window:
    """One window of one step: latent frames [start, end)."""

    index: int
    count: int
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def is_first(self) -> bool:
        return self.start == 0

    def video_range(self, ratio: int = TEMPORAL_RATIO) -> tuple[int, int]:
        """Video frames [a, b) this window decodes to (before trimming to the audio length)."""
        return video_frames_of_latent(self.start, ratio)[0], video_frames_of_latent(self.end - 1, ratio)[1]


def max_shift(window: int, overlap: int) -> int:
    """Largest left shift of windows 1.. that keeps every frame in at most two windows."""
    return max(0, window - 2 * overlap - 1)


def step_shift(step: int, window: int, overlap: int, enabled: bool = True) -> int:
    """Deterministic shift of step `step`: 0 at step 0, then a golden-ratio walk over [0, max]."""
    m = max_shift(window, overlap)
    if not enabled or m == 0:
        return 0
    return int(round(((step * _GOLDEN) % 1.0) * m))


def window_plan(total: int, window: int, overlap: int, shift: int = 0) -> list[Window]:
    """Windows covering latent frames [0, total) for one step (see module docstring)."""
    if total < 1:
        raise ValueError(f"total latent frames must be >= 1, got {total}")
    if window < 1 or overlap < 0 or 2 * overlap >= window:
        raise ValueError(f"bad window {window} / overlap {overlap}: need 0 <= 2*overlap < window")
    if not 0 <= shift <= max_shift(window, overlap):
        raise ValueError(f"shift {shift} outside [0, {max_shift(window, overlap)}]")
    spans = [(0, min(window, total))]
    stride = window - overlap
    start = window - overlap - shift
    while spans[-1][1] < total:
        end = start + window
        if end >= total:  # last window: end at `total`, reach back up to `window` frames
            prev_prev_end = spans[-2][1] if len(spans) >= 2 else 0
            start = max(min(start, total - window), prev_prev_end, spans[-1][0] + 1)
            end = total
        spans.append((start, end))
        start += stride
    n = len(spans)
    return [Window(i, n, s, e) for i, (s, e) in enumerate(spans)]


def blend_weights(plan: list[Window], k: int) -> torch.Tensor:
    """Weights [length] of window k's prediction (float64; see module docstring)."""
    win = plan[k]
    w = torch.ones(win.length, dtype=torch.float64)
    if k > 0:
        o = plan[k - 1].end - win.start
        if o > 0:
            w[:o] = torch.arange(1, o + 1, dtype=torch.float64) / (o + 1)
    if k + 1 < len(plan):
        nxt = plan[k + 1]
        o = win.end - nxt.start
        if o > 0:
            local = nxt.start - win.start
            w[local:] = torch.arange(o, 0, -1, dtype=torch.float64) / (o + 1)
    return w


def coverage(plan: list[Window], total: int) -> torch.Tensor:
    """How many windows cover each latent frame (tests / diagnostics)."""
    c = torch.zeros(total, dtype=torch.long)
    for win in plan:
        c[win.start : win.end] += 1
    return c


def seam_frames(plan: list[Window]) -> list[int]:
    """Latent frames where one window hands over to the next (first frame of each overlap)."""
    return [win.start for win in plan[1:]]
