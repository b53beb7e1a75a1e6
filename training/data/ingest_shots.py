"""Shot-cut detection by a measured frame-difference rule, and splitting shots into training clips.

Why not PySceneDetect: it pulls ``opencv-python``, which replaces the ``opencv-contrib`` build that
mediapipe needs. The rule here is the classic one it also uses by default, made robust to camera
motion:

* each frame is reduced to a ``THUMB_W`` px wide grey thumbnail (area averaging);
* ``d[t]`` = mean absolute difference (0..255 grey levels) between thumbnails t-1 and t;
* a cut starts at frame t when ``d[t] >= CUT_MIN_DIFF`` **and** ``d[t] >= CUT_RATIO`` x the median of
  ``d`` over the ``CUT_CONTEXT`` frames on either side (t itself excluded).

A pan or a zoom changes every frame by a similar amount, so its local median is high and it never
stands out; a cut is one isolated spike. Measured on the test videos (``tests/test_ingest.py``):
a hard cut between two talking-head clips gives d = 56 at 56 x the local median; a 10 s pan and zoom
over a photograph gives d <= 4.5 at most 1.2 x its local median; talking heads re-encoded at 24 / 30
fps give d <= 1.1 and ratios <= 2.2 (24 -> 25 fps duplicates single frames, d = 0, which the median
ignores).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

THUMB_W = 64
CUT_MIN_DIFF = 12.0
CUT_RATIO = 4.0
CUT_CONTEXT = 12


def grey_thumb(rgb: np.ndarray, width: int = THUMB_W) -> np.ndarray:
    """uint8 grey thumbnail ``width`` px wide (aspect kept), by area averaging."""
    import cv2

    h, w = rgb.shape[:2]
    th = max(1, int(round(h * width / w)))
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (width, th), interpolation=cv2.INTER_AREA)


def frame_differences(thumbs: np.ndarray) -> np.ndarray:
    """d[t] = mean |thumb[t] - thumb[t-1]| (grey levels), d[0] = 0."""
    x = np.asarray(thumbs, np.float32)
    d = np.zeros(len(x), np.float32)
    if len(x) > 1:
        d[1:] = np.abs(x[1:] - x[:-1]).reshape(len(x) - 1, -1).mean(1)
    return d


@dataclass(frozen=True)
class CutRule:
    """The cut rule's thresholds (module docstring)."""

    min_diff: float = CUT_MIN_DIFF
    ratio: float = CUT_RATIO
    context: int = CUT_CONTEXT


def detect_cuts(diffs: np.ndarray, rule: CutRule = CutRule()) -> list[int]:
    """Frames where a new shot starts (never 0), by the rule of the module docstring."""
    d = np.asarray(diffs, np.float64)
    cuts = []
    for t in range(1, len(d)):
        if d[t] < rule.min_diff:
            continue
        lo, hi = max(1, t - rule.context), min(len(d), t + rule.context + 1)
        ctx = np.concatenate([d[lo:t], d[t + 1 : hi]])
        base = float(np.median(ctx)) if ctx.size else 0.0
        if d[t] >= rule.ratio * max(base, 1e-3):
            cuts.append(t)
    return cuts


def shots(num_frames: int, cuts: list[int]) -> list[tuple[int, int]]:
    """[start, stop) frame ranges between the cuts."""
    edges = [0, *sorted(c for c in cuts if 0 < c < num_frames), num_frames]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def clip_windows(shot: tuple[int, int], length: int, stride: int) -> list[tuple[int, int]]:
    """[start, stop) clips of ``length`` frames inside one shot, every ``stride`` frames from its start,
    plus one clip ending exactly at the shot's end when the stride does not land there (so a shot's
    last frames are used and clips start and end at the cuts). A shot shorter than ``length`` gives none.
    """
    a, b = shot
    if b - a < length:
        return []
    out = [(s, s + length) for s in range(a, b - length + 1, stride)]
    if out[-1][1] != b:
        out.append((b - length, b))
    return out
