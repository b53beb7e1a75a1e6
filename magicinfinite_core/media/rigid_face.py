"""An upper face that moves as one piece: the skull does not stretch when the jaw drops.

Why: a motion latent holds one flow per working-grid cell, and the cell above the lips (the nose and
the cheeks beside it) carries some of the jaw's motion: the optical flow it was trained on averages
over cells that hold part of the upper lip. Decoded, the nose wobbles with every syllable, in a
still-head video too: on the demo v8.1's 60 s video the upper face's per-second identity scattered by
2.7 dB with the voice, all of it below the eyes (forehead and eyes 0.4 dB, nose half 3.4 dB;
correlation with the voice's loudness -0.89). Here the field over a face's upper part (the face oval
above the bottom of the nose, found by face mesh on the picture) is replaced by its median, per frame,
so a nod or a turn of the whole head still moves it and a local wobble does not; the replacement fades
out over a few pixels below and around it. Per frame, so chunked decode still equals one-shot decode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

NOSE_BOTTOM = 2  # face-mesh landmark where the nose meets the upper lip: the rigid part ends at its row
# The hold fades out over this share of the face's height outside the rigid part (Gaussian sigma)
FADE = 0.03


@dataclass(frozen=True, eq=False)
class RigidFace:
    """One face's rigid upper part in picture pixels: ``weight`` [h, w] (1 on the rigid part, fading to 0
    around it) and ``core`` [h, w] (the rigid part itself) of the box whose top-left corner is (``x0``,
    ``y0``)."""

    x0: int
    y0: int
    weight: np.ndarray
    core: np.ndarray


def rigid_face(landmarks: np.ndarray, oval: tuple[int, ...], size: tuple[int, int]) -> RigidFace | None:
    """The rigid upper face of face-mesh landmarks [468, 2] in picture pixels: the face oval (landmark
    indices in order around the face) cut at the nose's bottom row; None when that leaves nothing
    inside a picture of `size` (H, W)."""
    from PIL import Image, ImageDraw

    H, W = size
    ring = landmarks[list(oval)].astype(np.float64)
    face_h = float(ring[:, 1].max() - ring[:, 1].min())
    if face_h <= 0:
        return None
    sigma = FADE * face_h
    pad = int(math.ceil(3 * sigma)) + 1
    x0, y0 = max(0, int(math.floor(ring[:, 0].min())) - pad), max(0, int(math.floor(ring[:, 1].min())) - pad)
    x1, y1 = min(W, int(math.ceil(ring[:, 0].max())) + pad + 1), min(H, int(math.ceil(ring[:, 1].max())) + pad + 1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    img = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(img).polygon([(x - x0, y - y0) for x, y in ring], fill=1)
    core = np.asarray(img, bool).copy()
    core[max(0, int(math.floor(landmarks[NOSE_BOTTOM, 1])) + 1 - y0):] = False
    if not core.any():
        return None
    return RigidFace(x0, y0, _fade(core, sigma), core)


def _fade(core: np.ndarray, sigma: float) -> np.ndarray:
    """1 on `core`, falling off outside it: twice a Gaussian blur of the core (0.5 at its edge -> 1), cut at 1."""
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / max(sigma, 1e-6)) ** 2)
    k = k / k.sum()
    m = torch.from_numpy(core.astype(np.float32))[None, None]
    m = F.conv2d(F.pad(m, (radius, radius, 0, 0)), k.view(1, 1, 1, -1))
    m = F.conv2d(F.pad(m, (0, 0, radius, radius)), k.view(1, 1, -1, 1))[0, 0]
    return np.maximum(core, (2 * m).clamp(0, 1).numpy()).astype(np.float32)


def hold_rigid(field: torch.Tensor, face: RigidFace, origin: tuple[int, int], gain: float = 1.0) -> bool:
    """Move ``face``'s upper part as one piece, in place: ``field`` [F, 2, H, W] is the backward flow of a
    region whose top-left corner is ``origin`` (x, y) in picture pixels; where the face's weight is w, the
    flow becomes ``flow + gain * w * (median over the rigid part - flow)``. False (nothing done) when the
    rigid part lies outside the region or the gain is 0."""
    n, _, H, W = field.shape
    ox, oy = origin
    # the face's box within the region
    fx0, fy0 = max(face.x0, ox), max(face.y0, oy)
    fx1, fy1 = min(face.x0 + face.core.shape[1], ox + W), min(face.y0 + face.core.shape[0], oy + H)
    if gain <= 0 or fx1 <= fx0 or fy1 <= fy0:
        return False
    crop = (slice(fy0 - face.y0, fy1 - face.y0), slice(fx0 - face.x0, fx1 - face.x0))
    core = torch.from_numpy(face.core[crop]).to(field.device)
    if not bool(core.any()):
        return False
    weight = torch.from_numpy(face.weight[crop]).to(field.device, torch.float32) * gain
    view = field[:, :, fy0 - oy : fy1 - oy, fx0 - ox : fx1 - ox]
    flow = view.float()
    whole = flow[:, :, core].median(dim=2).values[:, :, None, None]  # [F, 2, 1, 1]
    view.copy_(torch.lerp(flow, whole, weight).to(field.dtype))
    return True
