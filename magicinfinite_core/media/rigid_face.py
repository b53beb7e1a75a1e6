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

`brows` > 0 keeps each brow's own lift within the held part: the brows' vertical motion against the rest of the upper
face (the height of a smooth bump around each brow, found by face mesh, that fits it best) is put back as that bump,
and the median the part moves with is taken with those lifts taken out. Why: a surprised face raises its brows; holding them with
the nose erased the raise the DiT made (the demo v8.4's base model raised them +0.018 face heights, decoded
-0.006), and letting the brows keep the DiT's own flow cell by cell would bring its jitter back. A small lift is
held (`BROW_DEADZONE`): a neutral prompt's brows barely move, a surprised one's lift several times as far.

`hold_head` is a user's choice on top: the head's own motion (the rigid part's median flow) scaled down over
the whole face, faded broadly into the hair, hat and neck, so a still head stays still whatever the DiT read
in the prompt (the full-length demo picture bobbed 2-3 px with a still prompt), and the jaw still talks. Or
only its small part held (a dead zone in pixels): a still prompt's bob stays under it, a nod goes beyond.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from magicinfinite_core.media.mouth_opening import NOSE_BOTTOM  # the rigid part ends at its row

# The hold fades out over this share of the face's height outside the rigid part (Gaussian sigma)
FADE = 0.03
# `hold_head` takes the head's motion off the whole face oval, fading out over this share of the face's height
# (Gaussian sigma): far enough to carry the hair, a hat and the neck with the face
HEAD_FADE = 0.15
# Face-mesh landmarks along each brow (its upper edge), and the bump a brow's lift is spread over: a Gaussian of
# this many brow widths (sigma) around the brow's middle, as the training world raises a brow
# (training/data/photo_face.py), cut at 3 sigma
BROWS = ((70, 63, 105, 66, 107), (336, 296, 334, 293, 300))
BROW_SIGMA = 0.6
# A brow's lift under this share of the face's height is held with the rest, one over three times it is kept whole,
# easing in between (`head_share_kept`'s curve). Why: with a neutral prompt the demo v8.4's brows lift at most
# 0.003 face heights (mean over a video's second half), with a surprised one 0.008-0.026 (session 20); kept
# whole, the small lifts of still videos moved the upper face enough to blur nodding against still (AUC 1.0 -> 0.875)
BROW_DEADZONE = 0.004


@dataclass(frozen=True, eq=False)
class RigidFace:
    """One face's rigid upper part in picture pixels: ``weight`` [h, w] (1 on the rigid part, fading to 0
    around it) and ``core`` [h, w] (the rigid part itself) of the box whose top-left corner is (``x0``,
    ``y0``); ``head`` (the whole face oval, faded by HEAD_FADE) in its own box at ``head_origin`` (x, y)."""

    x0: int
    y0: int
    weight: np.ndarray
    core: np.ndarray
    head: np.ndarray | None = None
    head_origin: tuple[int, int] = (0, 0)
    height: float = 0.0  # the face oval's height in picture pixels (`hold_head`'s dead zone is a share of it)
    brows: tuple[np.ndarray, ...] = ()  # per brow, its bump [h, w] in the box of ``weight`` (`hold_rigid`'s brows)


def rigid_face(landmarks: np.ndarray, oval: tuple[int, ...], size: tuple[int, int], head: bool = False) -> RigidFace | None:
    """The rigid upper face of face-mesh landmarks [468, 2] in picture pixels: the face oval (landmark
    indices in order around the face) cut at the nose's bottom row; None when that leaves nothing
    inside a picture of `size` (H, W). `head`: also the whole face's weight for `hold_head` (its broad fade
    costs ~0.1 s on a 400 px face, so only when a run asks for it)."""
    ring = landmarks[list(oval)].astype(np.float64)
    face_h = float(ring[:, 1].max() - ring[:, 1].min())
    if face_h <= 0:
        return None
    box = _oval_mask(ring, size, FADE * face_h)
    if box is None:
        return None
    x0, y0, oval_mask = box
    core = oval_mask.copy()
    core[max(0, int(math.floor(landmarks[NOSE_BOTTOM, 1])) + 1 - y0):] = False
    if not core.any():
        return None
    weight = _fade(core, FADE * face_h)
    rigid = RigidFace(x0, y0, weight, core, height=face_h, brows=_brow_bumps(landmarks, (x0, y0), weight.shape))
    whole = _oval_mask(ring, size, HEAD_FADE * face_h) if head else None
    if whole is None:
        return rigid
    hx, hy, inside = whole
    return replace(rigid, head=_fade(inside, HEAD_FADE * face_h), head_origin=(hx, hy))


def _brow_bumps(landmarks: np.ndarray, origin: tuple[int, int], shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Each brow's bump (`BROW_SIGMA`) in the box of `shape` at `origin` (x, y): 1 at the brow's middle."""
    ys = np.arange(shape[0], dtype=np.float32)[:, None] + origin[1]
    xs = np.arange(shape[1], dtype=np.float32)[None, :] + origin[0]
    bumps = []
    for idx in BROWS:
        pts = landmarks[list(idx)].astype(np.float32)
        cx, cy = pts.mean(0)
        sigma = BROW_SIGMA * float(np.ptp(pts[:, 0])) + 1.0
        d2 = ((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma * sigma)
        bumps.append((np.exp(-d2) * (d2 < 4.5)).astype(np.float32))
    return tuple(bumps)


def _oval_mask(ring: np.ndarray, size: tuple[int, int], sigma: float) -> tuple[int, int, np.ndarray] | None:
    """(x0, y0, inside) of the polygon `ring` in a box around it with room for a fade of `sigma`, inside `size`."""
    from PIL import Image, ImageDraw

    H, W = size
    pad = int(math.ceil(3 * sigma)) + 1
    x0, y0 = max(0, int(math.floor(ring[:, 0].min())) - pad), max(0, int(math.floor(ring[:, 1].min())) - pad)
    x1, y1 = min(W, int(math.ceil(ring[:, 0].max())) + pad + 1), min(H, int(math.ceil(ring[:, 1].max())) + pad + 1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    img = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(img).polygon([(x - x0, y - y0) for x, y in ring], fill=1)
    return x0, y0, np.asarray(img, bool).copy()


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


def hold_rigid(field: torch.Tensor, face: RigidFace, origin: tuple[int, int], gain: float = 1.0,
               brows: float = 0.0) -> bool:
    """Move ``face``'s upper part as one piece, in place: ``field`` [F, 2, H, W] is the backward flow of a
    region whose top-left corner is ``origin`` (x, y) in picture pixels; where the face's weight is w, the
    flow becomes ``flow + gain * w * (median over the rigid part - flow)``. `brows` > 0: each brow's own vertical
    motion against the rest of the part (the amplitude of its bump, within the face's weight, that fits it best),
    past `BROW_DEADZONE`, is taken out of the flow before the median and comes back times `brows`, spread over that
    bump. False (nothing done) when the
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
    face_weight = torch.from_numpy(face.weight[crop]).to(field.device, torch.float32)
    view = field[:, :, fy0 - oy : fy1 - oy, fx0 - ox : fx1 - ox]
    flow = view.float()
    bumps = [torch.from_numpy(b[crop]).to(field.device) for b in face.brows] if brows > 0 else []
    shapes = [b * face_weight for b in bumps if float((b * face_weight).max()) > 0.5]
    lifts = []
    if shapes:  # each brow's bump-shaped lift against the rest of the part (the eyes and nose, as a face is read)
        rest = core & ~torch.stack([b > 0.5 for b in shapes]).any(0)
        around = flow[:, 1, rest if bool(rest.any()) else core].median(dim=1).values[:, None, None]  # [F, 1, 1]
        for b in shapes:
            lift = ((flow[:, 1] - around) * b).sum(dim=(1, 2)) / (b * b).sum()  # [F]
            lifts.append(lift * head_share_kept(lift.abs(), BROW_DEADZONE * face.height))
    # the part moves with the median over all of it, the brows' kept lifts taken out. Why all of it: the median of
    # the part without the brows (the eyes and nose alone) flipped between still and a 0.1-0.3 px shift from one
    # frame to the next on a still prompt, a flicker (docs/demo_model.md, session 22)
    part = flow[:, :, core]  # [F, 2, N]: a gathered copy, so the lifts come out of it alone
    for lift, b in zip(lifts, shapes, strict=True):
        part[:, 1] -= lift[:, None] * b[core]
    whole = part.median(dim=2).values[:, :, None, None]  # [F, 2, 1, 1]
    held = torch.lerp(flow, whole, face_weight * gain)
    for lift, b in zip(lifts, shapes, strict=True):
        held[:, 1] += brows * gain * lift[:, None, None] * b
    view.copy_(held.to(field.dtype))
    return True


def hold_head(field: torch.Tensor, face: RigidFace, origin: tuple[int, int], keep: float, deadzone: float = 0.0) -> bool:
    """Scale the head's own motion to `keep` (0: the head stays where the picture has it, 1: as the model moves
    it), in place: the head's motion is the rigid part's median flow per frame, taken off by ``1 - keep`` over
    the face (``face.head``, else its rigid part's weight); the jaw's motion relative to the head stays. `deadzone`
    (pixels): a head motion smaller than this is held, one over three times it (a nod's swing) is kept whole, and
    between them it is shortened less and less (`head_share_kept`). `field` and `origin` as in `hold_rigid`. False
    (nothing done) when `keep` >= 1 with no dead zone or the face lies outside the region."""
    n, _, H, W = field.shape
    ox, oy = origin
    fx0, fy0 = max(face.x0, ox), max(face.y0, oy)
    fx1, fy1 = min(face.x0 + face.core.shape[1], ox + W), min(face.y0 + face.core.shape[0], oy + H)
    if (keep >= 1 and deadzone <= 0) or fx1 <= fx0 or fy1 <= fy0:
        return False
    core = torch.from_numpy(face.core[fy0 - face.y0 : fy1 - face.y0, fx0 - face.x0 : fx1 - face.x0]).to(field.device)
    if not bool(core.any()):
        return False
    motion = field[:, :, fy0 - oy : fy1 - oy, fx0 - ox : fx1 - ox].float()[:, :, core].median(dim=2).values  # [F, 2]
    weight, (hx, hy) = (face.head, face.head_origin) if face.head is not None else (face.weight, (face.x0, face.y0))
    gx0, gy0 = max(hx, ox), max(hy, oy)
    gx1, gy1 = min(hx + weight.shape[1], ox + W), min(hy + weight.shape[0], oy + H)
    if gx1 <= gx0 or gy1 <= gy0:
        return False
    w = torch.from_numpy(weight[gy0 - hy : gy1 - hy, gx0 - hx : gx1 - hx]).to(field.device, torch.float32)
    view = field[:, :, gy0 - oy : gy1 - oy, gx0 - ox : gx1 - ox]
    kept = motion * head_share_kept(motion.norm(dim=1, keepdim=True), deadzone) * min(1.0, max(0.0, float(keep)))
    view.sub_(((motion - kept)[:, :, None, None] * w).to(field.dtype))
    return True


def head_share_kept(size: torch.Tensor, deadzone: float) -> torch.Tensor:
    """The share of a head motion of ``size`` pixels that a dead zone of ``deadzone`` pixels keeps: none below
    it; above it the motion is shortened by the dead zone times a weight that eases (smoothstep) from 1 at the
    dead zone to 0 at three times it, and from there it is kept whole. Why this curve: shortening every motion
    by the dead zone (session 16) held a still prompt's bob on a full-length photo (it reaches about the dead
    zone) but kept a third of a nod (its swing is two to three dead zones); a share switched on between one and
    two dead zones kept more of the nod but snapped the head (faster than the model moved it). This one keeps half
    of a nod at the model's own speed (measured: docs/demo_model.md, session 18)."""
    d = max(0.0, float(deadzone))
    if d <= 0:
        return torch.ones_like(size)
    t = ((size - d) / (2 * d)).clamp(0, 1)
    shortening = d * (1 - t * t * (3 - 2 * t))
    return torch.where(size > d, (size - shortening) / size.clamp_min(1e-12), torch.zeros_like(size))
