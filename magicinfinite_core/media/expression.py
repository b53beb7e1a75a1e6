"""A mouth's expression as one number per frame: how far its corners rise, in face heights, the same for every face.

Why: a smile lifts the mouth's corners by about 0.02 face heights (the training world's, read by face mesh), under a
pixel of the 128 px working grid. The motion latent's 8 px cells average it away, the flow's dead zone holds what is
left, and a perfect DiT would have shown 4 % of the world's smile (`bench/expression_chain.py`, session 20). So a
motion latent can carry the corners' lift as a channel of its own (`MotionAutoencoderConfig.expression_channels`):
the encoder reads it from the full-size flow at the corners that face mesh finds in the portrait, against the upper
lip's middle (speech moves the lower lip, hardly the upper one), and the decoder draws it back as one smooth shape
around the mouth (`lift_shape`), the way the training world smiles (`training/data/photo_face.py`). A number in face
heights means the same on every face, which is what lets a DiT carry it to a face it never saw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# face-mesh indices: the mouth's outer corners, the upper inner lip's middle, the face's top and chin
CORNERS = (61, 291)
UPPER_MIDDLE = 13
FACE_TOP, CHIN = 10, 152
# the flow at the upper lip's middle is its mean over a square this share of the face's height across (at least 3 px)
SAMPLE = 0.03
# the drawn lift reaches this many half-widths of the mouth along and across it (an ellipse), fading out
# over its outer part from FADE_FROM of the way (the corners, at 0.63, move whole): the training world's smile moves the lips and the skin just around
# them, not the cheeks' outline
REACH = (1.6, 1.4)
FADE_FROM = 0.7
# the lift is read over the shape down to this many half-widths below the upper lip's middle (the corners' row, not
# the lower lip and chin, which the jaw moves as it talks)
UPPER_PART = 0.15


@dataclass(frozen=True)
class MouthCorners:
    """Where a mouth's corners and upper lip's middle sit, in picture pixels (x, y), and the face's height."""

    left: tuple[float, float]
    right: tuple[float, float]
    middle: tuple[float, float]
    face_height: float
    region: int = 0  # the reference's region (latent tile) the face was found in


def mouth_corners(landmarks: np.ndarray, region: int = 0) -> MouthCorners | None:
    """The mouth of face-mesh landmarks [468, 2] in picture pixels; None for a face under a pixel high."""
    lm = np.asarray(landmarks, np.float64)
    face_h = float(np.linalg.norm(lm[CHIN] - lm[FACE_TOP]))
    if not face_h > 1:
        return None
    a, b = sorted((lm[CORNERS[0]], lm[CORNERS[1]]), key=lambda p: p[0])
    return MouthCorners((float(a[0]), float(a[1])), (float(b[0]), float(b[1])),
                        (float(lm[UPPER_MIDDLE, 0]), float(lm[UPPER_MIDDLE, 1])), face_h, region)


def _mean_at(flow_y: torch.Tensor, x: float, y: float, r: int) -> torch.Tensor:
    """[F, H, W] -> [F]: the mean of a (2r+1)-square around (x, y), cut by the frame."""
    h, w = flow_y.shape[-2:]
    xi, yi = int(round(x)), int(round(y))
    patch = flow_y[:, max(0, yi - r) : min(h, yi + r + 1), max(0, xi - r) : min(w, xi + r + 1)]
    if patch.numel() == 0:
        return torch.zeros(flow_y.shape[0], dtype=flow_y.dtype, device=flow_y.device)
    return patch.mean(dim=(1, 2))


def corner_lift(flow: torch.Tensor, mouth: MouthCorners) -> torch.Tensor:
    """How far the corners rose in each frame, in face heights (a smile > 0, a frown < 0): the amplitude of `lift_shape`
    that best fits the field's vertical motion against the upper lip's middle, over the shape's upper part (the jaw
    below moves with speech, not with an expression). ``flow`` [F, 2, H, W] is the backward field from each frame to
    the portrait (frame(p) = portrait(p + flow(p))) in the pixels of the picture the mouth was found in; a feature that
    rose by d reads flow_y = +d at its place in the portrait, so drawing the result (`draw_lift`) moves the picture
    back by the same field."""
    fy = flow[:, 1].float()
    r = max(1, int(round(0.5 * SAMPLE * mouth.face_height)))
    u, v = _mouth_coords(mouth, (0, 0), tuple(fy.shape[-2:]))
    weight = torch.from_numpy(_shape(u, v) * (v <= UPPER_PART)).to(fy.device)
    total = float((weight * weight).sum())
    if total <= 0:
        return torch.zeros(fy.shape[0], dtype=fy.dtype, device=fy.device)
    moved = fy - _mean_at(fy, *mouth.middle, r)[:, None, None]
    return (moved * weight).sum(dim=(1, 2)) / total / mouth.face_height


def _mouth_coords(mouth: MouthCorners, origin: tuple[int, int], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) [h, w] of the box at `origin`: each pixel's place along the mouth (corner to corner: -1 .. 1) and across
    it (down > 0), from the upper lip's middle, in half-widths of the mouth."""
    (lx, ly), (rx, ry) = mouth.left, mouth.right
    half = max(0.5 * math.hypot(rx - lx, ry - ly), 0.5)
    eu = np.array([rx - lx, ry - ly]) / (2 * half)
    ev = np.array([-eu[1], eu[0]])
    ys = np.arange(shape[0], dtype=np.float64)[:, None] + origin[1] - mouth.middle[1]
    xs = np.arange(shape[1], dtype=np.float64)[None, :] + origin[0] - mouth.middle[0]
    return (xs * eu[0] + ys * eu[1]) / half, (xs * ev[0] + ys * ev[1]) / half


def _shape(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r = np.sqrt((u / REACH[0]) ** 2 + (v / REACH[1]) ** 2)
    t = np.clip((r - FADE_FROM) / (1 - FADE_FROM), 0, 1)
    return (np.minimum(u * u, 1.0) * (1 - t * t * (3 - 2 * t))).astype(np.float32)


def lift_shape(mouth: MouthCorners, origin: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """[h, w] of the box at ``origin`` (x, y): how much of the corners' lift each pixel moves with. 0 along the line
    through the upper lip's middle across the mouth, 1 at the corners, growing with the square of the distance along
    the mouth (the lips bend as one curve), held at 1 beyond the corners and fading out around the mouth (`REACH`)."""
    if math.hypot(mouth.right[0] - mouth.left[0], mouth.right[1] - mouth.left[1]) < 1:
        return np.zeros(shape, np.float32)
    return _shape(*_mouth_coords(mouth, origin, shape))


def draw_lift(field: torch.Tensor, mouth: MouthCorners, origin: tuple[int, int], lift_px: torch.Tensor) -> bool:
    """Raise ``mouth``'s corners by ``lift_px`` [F] picture pixels per frame (negative: lower them), in place: ``field``
    [F, 2, H, W] is the backward flow of a region whose top-left corner is ``origin`` (x, y). False when the mouth
    lies outside the region."""
    n, _, H, W = field.shape
    half = 0.5 * math.hypot(mouth.right[0] - mouth.left[0], mouth.right[1] - mouth.left[1])
    pad = REACH[0] * half + 1
    cx, cy = mouth.middle
    x0, y0 = max(int(math.floor(cx - pad)), origin[0]), max(int(math.floor(cy - pad)), origin[1])
    x1, y1 = min(int(math.ceil(cx + pad)) + 1, origin[0] + W), min(int(math.ceil(cy + pad)) + 1, origin[1] + H)
    if x1 <= x0 or y1 <= y0:
        return False
    s = torch.from_numpy(lift_shape(mouth, (x0, y0), (y1 - y0, x1 - x0))).to(field.device, field.dtype)
    view = field[:, 1, y0 - origin[1] : y1 - origin[1], x0 - origin[0] : x1 - origin[0]]
    view.add_(lift_px.to(field.device, field.dtype)[:, None, None] * s)
    return True
