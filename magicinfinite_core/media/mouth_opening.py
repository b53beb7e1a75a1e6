"""Lips that part: the jaw's stretch of a motion field gathered at the seam where the lips meet.

Why: a motion latent holds one flow per 8x8 working-grid cell, and decoding upsamples it bilinearly, so
a jaw drop of d pixels is spread over the whole cell between the upper lip and the chin: lips, chin
and the dark line between the lips are each stretched a little, and the mouth never opens (the demo
v8 measured |delta lip gap| 0.0004 on a turned face while its mouth box changed as much as a frontal
one's). Here, for a portrait whose mouth is closed, the same field is remapped in a band of one cell
above and below the lip seam found by face mesh: everything above the seam moves with the band's top,
everything below with its bottom, and the rows in between are the opened mouth, drawn in a dark tint
of the lips' own seam colour. The band's ends are where the field already is, so nothing outside the
band changes, and a field with no stretch across the lips (silence) decodes exactly as before.

A portrait whose mouth is open already (an open smile, teeth showing) gets its seam at the lower inner
lip instead (``LipSeam.open``): the upper lip and the teeth move with the band's top, the lower lip and
the chin with its bottom, so a jaw drop shows as a dark gap opening under the teeth, where the warp alone
stretched the teeth (the demo v8.2's open smile: mouth darkness fell as the voice rose, r -0.56).

The opening is drawn (`paint_mouth`): a dark interior tinted by the lips, upper teeth in a closed mouth's
(parted into incisors, laterals and canines), and in a wide opening the tongue, in the lower lip's colour.

Everything is per frame, so chunked decode still equals one-shot decode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from magicinfinite_core.media.expression import MouthCorners, mouth_corners

# face-mesh indices: inner-lip contour from the left inner corner to the right one
UPPER_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
FACE_TOP, CHIN = 10, 152
NOSE_BOTTOM, LIP_TOP = 2, 0  # the philtrum between them is the skin the teeth are lit like
# A portrait whose inner lips are further apart than this share of the face height is already open
# (an open smile, teeth showing): its seam is the lower inner lip (`LipSeam.open`).
CLOSED_GAP = 0.012
# An open mouth's interior tint is the lower lip's colour, read this share of the face height below
# its inner edge (the edge itself mixes lip and teeth).
LOWER_LIP_DEPTH = 0.01
# Upper teeth drawn into a closed mouth that opens: the top share of the opening (the demo's world draws
# them so, `training/data/photo_face.py`), as bright as the philtrum's skin times TEETH_OVER_SKIN (capped
# at TEETH_MAX luma in [0, 1]; teeth inside a mouth are in the lips' shade), off-white by TEETH_TINT where
# the skin has colour, grey where it has none, and TEETH_LIP_SHADE as bright again right under the lip.
TEETH_SHARE = 0.3
TEETH_OVER_SKIN = 1.0
TEETH_MAX = 0.85
TEETH_TINT = (1.0, 0.93, 0.8)
TEETH_LIP_SHADE = 0.75
# ... read from a patch this share of the face height across (its median: a pore or a hair does not count);
# skin whose channels spread less than GREY_SKIN_SPREAD (in [0, 1]) is a greyscale photo's, and its teeth grey
SKIN_PATCH = 0.03
GREY_SKIN_SPREAD = 0.1
# ... fading out towards the mouth's corners: none where sqrt(1 - u^2) (u: -1 .. 1 corner to corner) is under
# TEETH_CORNER[0], all from TEETH_CORNER[0] + TEETH_CORNER[1]; and TEETH_CORNER_SHADE as bright at the corners
TEETH_CORNER = (0.2, 0.3)
TEETH_CORNER_SHADE = 0.8
# ... parted into teeth: boundaries at these shares of the way from the middle to a corner (central incisors,
# laterals, canines, premolars, narrowing as the arch turns away), each a dark line TOOTH_GAP of the mouth's
# width wide (a Gaussian's sigma), TOOTH_GAP_SHADE[0] darker under the lip and [1] at the teeth's edge, where
# a tooth's rounded corners lift that edge by TOOTH_NOTCH of the teeth's height over three times that width.
# A line under TOOTH_GAP_MIN px (a small mouth) is drawn that wide and as much fainter, so it cannot alias.
# Why: one flat band read as a strip of plastic at 1024 px (session 17).
TOOTH_EDGES = (0.0, 0.38, 0.63, 0.81, 0.93)
TOOTH_GAP = 0.008
TOOTH_GAP_MIN = 0.5
TOOTH_GAP_SHADE = (0.1, 0.3)
TOOTH_NOTCH = 0.15
# A tongue at the bottom of an opening wider than TONGUE_FROM[0] of the mouth's width (fully from [1]), up to
# TONGUE_SHARE of the opening's height in the middle, from black to the lower lip's colour by TONGUE_SHADE at its back
# (top) edge and its front. Why: a wide opening drawn all dark read as a hole (session 17).
TONGUE_FROM = (0.06, 0.18)
TONGUE_SHARE = 0.5
TONGUE_SHADE = (0.2, 0.45)
# the lower lip's colour is read midway between these landmarks (inner and outer lower lip, middle)
LOWER_LIP_INNER, LOWER_LIP_OUTER = 14, 17
LUMA = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class LipSeam:
    """Where a mouth opens, in picture pixels: one seam row per column between the inner corners
    (``x0`` .. ``x0 + len(rows) - 1``), the colour the opening is tinted from ([-1, 1] RGB), and which of
    the reference's regions (`MotionReference.regions`, the latent's tiles) the face was found in. A closed
    mouth's seam is where its lips meet (colour: the line between them); an ``open`` one's is its lower
    inner lip (colour: the lower lip's)."""

    x0: int
    rows: tuple[float, ...]
    colour: tuple[float, float, float]
    region: int = 0
    open: bool = False
    teeth: tuple[float, float, float] | None = None  # a closed mouth's upper teeth colour ([-1, 1] RGB)
    lip: tuple[float, float, float] | None = None  # the lower lip's colour ([-1, 1] RGB): the tongue's
    corners: MouthCorners | None = None  # where the corners and the upper lip's middle sit (media/expression.py)

    @property
    def columns(self) -> np.ndarray:
        return np.arange(self.x0, self.x0 + len(self.rows))


def lip_seam(landmarks: np.ndarray, picture: np.ndarray, region: int = 0) -> LipSeam | None:
    """The seam of a mouth from face-mesh landmarks [468, 2] in the picture's pixels (uint8 RGB [H, W, 3]):
    where a closed mouth's lips meet, or an open mouth's lower inner lip (``open``); None when the mouth is
    too small to matter (under 4 px wide)."""
    up, lo = landmarks[list(UPPER_INNER)], landmarks[list(LOWER_INNER)]
    face_h = float(np.linalg.norm(landmarks[CHIN] - landmarks[FACE_TOP]))
    xa, xb = int(np.ceil(min(up[0, 0], up[-1, 0]))), int(np.floor(max(up[0, 0], up[-1, 0])))
    if xb - xa < 4 or face_h <= 0:
        return None
    xs = np.arange(xa, xb + 1, dtype=np.float64)
    yu = np.interp(xs, *_increasing(up))
    yl = np.interp(xs, *_increasing(lo))
    is_open = float(np.max(yl - yu)) > CLOSED_GAP * face_h
    rows = yl if is_open else 0.5 * (yu + yl)
    h, w = picture.shape[:2]
    iy = np.clip(np.round(rows + (LOWER_LIP_DEPTH * face_h if is_open else 0.0)).astype(int), 0, h - 1)
    ix = np.clip(xs.astype(int), 0, w - 1)
    colour = picture[iy, ix].astype(np.float64).mean(axis=0) / 127.5 - 1
    teeth = None if is_open else teeth_colour(picture, 0.5 * (landmarks[NOSE_BOTTOM] + landmarks[LIP_TOP]), face_h)
    lip = _patch_colour(picture, 0.5 * (landmarks[LOWER_LIP_INNER] + landmarks[LOWER_LIP_OUTER]), face_h) * 2 - 1
    return LipSeam(xa, tuple(float(r) for r in rows), tuple(float(c) for c in colour), region, is_open, teeth,
                   tuple(float(c) for c in lip), mouth_corners(landmarks, region))


def _patch_colour(picture: np.ndarray, at: np.ndarray, face_h: float) -> np.ndarray:
    """The median colour ([0, 1] RGB) of a patch SKIN_PATCH of the face height across centred at `at` (x, y):
    a pore or a hair does not count."""
    h, w = picture.shape[:2]
    r = max(1, int(round(0.5 * SKIN_PATCH * face_h)))
    x, y = int(round(float(at[0]))), int(round(float(at[1])))
    patch = picture[max(0, y - r) : min(h, y + r + 1), max(0, x - r) : min(w, x + r + 1)].reshape(-1, 3)
    return np.median(patch.astype(np.float64), axis=0) / 255 if len(patch) else np.full(3, 0.5)


def teeth_colour(picture: np.ndarray, skin_at: np.ndarray, face_h: float) -> tuple[float, float, float]:
    """Upper teeth for a mouth the portrait shows closed ([-1, 1] RGB): lit like the skin at `skin_at` (x, y;
    the median of a patch SKIN_PATCH of the face height across), off-white where the skin has colour."""
    skin = _patch_colour(picture, skin_at, face_h)
    luma = min(TEETH_MAX, TEETH_OVER_SKIN * float(skin @ LUMA))
    colourful = min(1.0, float(np.ptp(skin)) / GREY_SKIN_SPREAD)
    tint = 1 + (np.asarray(TEETH_TINT) - 1) * colourful
    return tuple(float(c) for c in np.clip(luma * tint / float(tint @ LUMA), 0, 1) * 2 - 1)


def _increasing(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(points[:, 0], kind="stable")
    return points[order, 0].astype(np.float64), points[order, 1].astype(np.float64)


@dataclass(frozen=True)
class MouthPatch:
    """Where one opened mouth is drawn in a region: output rows ``rows`` x columns ``cols`` (slices), the
    interior's coverage there [F, R, C] (0..1 per pixel), and its colour ([-1, 1] RGB)."""

    rows: slice
    cols: slice
    cover: torch.Tensor
    colour: tuple[float, float, float]
    depth: torch.Tensor  # [F, R, C]: 0 at the lips' edges, 1 halfway between them
    teeth_cover: torch.Tensor | None = None  # [F, R, C]: the upper teeth's coverage (a closed mouth's)
    teeth_shade: torch.Tensor | None = None  # [F, R, C]: their brightness, TEETH_LIP_SHADE under the lip .. 1
    teeth: tuple[float, float, float] | None = None
    tongue_cover: torch.Tensor | None = None  # [F, R, C]: the tongue's coverage (where the seam knows the lip)
    tongue_shade: torch.Tensor | None = None  # [F, R, C]: its share of the way from black to the lip's colour
    lip: tuple[float, float, float] | None = None


def open_lips(field: torch.Tensor, seam: LipSeam, origin: tuple[int, int], band: float,
              gain: float = 1.0) -> MouthPatch | None:
    """Remap the vertical flow around one seam, in place.

    ``field`` [F, 2, H, W]: backward flow (output pixel -> picture pixel offsets) of a region whose
    top-left corner is ``origin`` (x, y) in picture pixels; ``band``: half the band's height in pixels
    (one latent cell); ``gain``: share of the stretch gathered at the seam (0: the field unchanged).
    Returns where the opened mouth is to be drawn (`paint_mouth`), None when the seam's band does not lie
    inside the region or nothing is to be done."""
    n, _, H, W = field.shape
    ox, oy = origin
    cols = seam.columns - ox
    rows = np.asarray(seam.rows) - oy
    if gain <= 0 or not ((cols >= 0) & (cols < W) & (rows - band >= 0) & (rows + band <= H - 1)).all():
        return None
    c0, c1 = int(cols[0]), int(cols[-1]) + 1
    # positions in float32 on the field's device (a half-precision field cannot hold row numbers exactly)
    f32 = {"dtype": torch.float32, "device": field.device}
    seam_y = torch.tensor(rows, **f32)
    # lens: the mouth opens most in the middle and not at all at the corners
    u = torch.linspace(-1, 1, len(seam.rows), **f32)
    lens = gain * (1 - u * u)
    fy = field[:, 1]
    index = torch.arange(c0, c1, device=field.device)
    top = fy[:, (seam_y - band).round().long(), index].float()  # [F, C]
    bottom = fy[:, (seam_y + band).round().long(), index].float()
    out_top = seam_y - band - top  # output rows where the band's top and bottom land
    out_bottom = seam_y + band - bottom
    stretch = top - bottom  # rows the field adds across the band: > 0 the jaw drops, < 0 it closes
    gap = lens * stretch.clamp_min(0)
    # output rows per picture row for the lips and the chin; a closing jaw keeps the field's own squeeze
    scale = ((2 * band + stretch - gap) / (2 * band)).clamp_min(0.1)
    at_seam = out_top + band * scale
    r0 = int(max(0, float(out_top.min().floor())))
    r1 = int(min(H - 1, float(out_bottom.max().ceil()))) + 1
    p = torch.arange(r0, r1, **f32)[None, :, None]  # [1, R, 1]
    ot, ob, s, g, a = (t[:, None, :] for t in (out_top, out_bottom, scale, gap, at_seam))
    sy = seam_y[None, None, :]
    src = torch.where(p < a, sy - band + (p - ot) / s, torch.where(p < a + g, sy, sy + (p - a - g) / s))
    inside = (p >= ot) & (p <= ob)
    view = fy[:, r0:r1, c0:c1]
    view.copy_(torch.where(inside, src - p, view.float()))
    overlap = (torch.minimum(p + 0.5, a + g) - torch.maximum(p - 0.5, a)).clamp(0, 1)
    depth = (1 - (2 * (p - a) / g.clamp_min(1e-6) - 1).abs()).clamp(0, 1)
    cover = torch.where(inside, overlap, 0.0)
    tau = (1 - u * u).sqrt()[None, None, :]
    teeth_cover = teeth_shade = tongue_cover = tongue_shade = None
    if seam.teeth is not None:  # the top share of the opening, fading out towards the corners, parted into teeth
        gap, notch = _tooth_gaps(u, len(seam.rows))
        tall = TEETH_SHARE * g
        edge = a + tall * (1 - TOOTH_NOTCH * notch)
        upper = (torch.minimum(p + 0.5, edge) - torch.maximum(p - 0.5, a)).clamp(0, 1)
        start, ramp = TEETH_CORNER
        teeth_cover = torch.where(inside, upper, 0.0) * ((tau - start) / ramp).clamp(0, 1)
        down = ((p - a) / tall.clamp_min(1e-6)).clamp(0, 1)  # 0 under the lip .. 1 at the teeth's edge
        under_lip = TEETH_LIP_SHADE + (1 - TEETH_LIP_SHADE) * down
        parted = 1 - gap * (TOOTH_GAP_SHADE[0] + (TOOTH_GAP_SHADE[1] - TOOTH_GAP_SHADE[0]) * down)
        teeth_shade = under_lip * parted * (TEETH_CORNER_SHADE + (1 - TEETH_CORNER_SHADE) * tau)
    if seam.lip is not None:  # a wide opening shows the tongue at its bottom, highest in the middle
        lo, hi = TONGUE_FROM
        wide = ((g.amax(dim=2, keepdim=True) / len(seam.rows) - lo) / (hi - lo)).clamp(0, 1)  # [F, 1, 1]
        high = TONGUE_SHARE * g * wide * (1 - u * u)[None, None, :]  # a mound, hidden towards the corners
        back = a + g - high
        tongue_cover = torch.where(inside, (torch.minimum(p + 0.5, a + g) - torch.maximum(p - 0.5, back)).clamp(0, 1), 0.0)
        front = ((p - back) / high.clamp_min(1e-6)).clamp(0, 1)
        tongue_shade = TONGUE_SHADE[0] + (TONGUE_SHADE[1] - TONGUE_SHADE[0]) * front
    return MouthPatch(slice(r0, r1), slice(c0, c1), cover, seam.colour, depth, teeth_cover, teeth_shade, seam.teeth,
                      tongue_cover, tongue_shade, seam.lip)


def _tooth_gaps(u: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per column of a mouth `width` px wide (u: -1 .. 1 corner to corner): how much it is a gap between two
    teeth (1 on a boundary, a Gaussian TOOTH_GAP of the width wide; fainter and TOOTH_GAP_MIN px wide in a
    small mouth) and how much the teeth's edge is notched there (the same, three times as wide). [1, 1, C]."""
    edges = torch.tensor(TOOTH_EDGES, dtype=u.dtype, device=u.device)
    edges = torch.cat([-edges[edges > 0], edges])
    px = (u[:, None] - edges[None, :]).abs().amin(dim=1) * (width / 2)  # px to the nearest boundary
    sigma = max(TOOTH_GAP * width, TOOTH_GAP_MIN)
    faint = TOOTH_GAP * width / sigma
    gap, notch = (faint * torch.exp(-((px / (k * sigma)) ** 2)) for k in (1, 3))
    return gap[None, None, :], notch[None, None, :]


# The opened mouth's tint: this share of the way from black to the lips' own seam colour,
# at the lips' edges and halfway between them (a mouth is darkest deep inside)
INTERIOR_SHADE = (0.5, 0.2)


def paint_mouth(moved: torch.Tensor, patch: MouthPatch, teeth: float = 0.0, tongue: float = 0.0) -> None:
    """Draw the opened mouth into the warped region ``moved`` [F, 3, H, W] ([-1, 1] RGB), in place: a dark
    interior tinted by the lips' seam colour, darker towards its middle; with ``tongue`` > 0 (opacity) the
    tongue at the bottom of a wide opening; with ``teeth`` > 0 and a closed mouth's seam, upper teeth over
    the top of the opening."""
    colour = torch.tensor(patch.colour, dtype=torch.float32, device=moved.device).view(1, 3, 1, 1)
    edge, core = INTERIOR_SHADE
    shade = (edge + (core - edge) * patch.depth)[:, None]  # [F, 1, R, C]
    interior = -1 + shade * (colour + 1)
    view = moved[:, :, patch.rows, patch.cols]
    painted = torch.lerp(view.float(), interior, patch.cover[:, None])
    if tongue > 0 and patch.lip is not None and patch.tongue_cover is not None and patch.tongue_shade is not None:
        lip = torch.tensor(patch.lip, dtype=torch.float32, device=moved.device).view(1, 3, 1, 1)
        painted = torch.lerp(painted, -1 + patch.tongue_shade[:, None] * (lip + 1), tongue * patch.tongue_cover[:, None])
    if teeth > 0 and patch.teeth is not None and patch.teeth_cover is not None and patch.teeth_shade is not None:
        tooth = torch.tensor(patch.teeth, dtype=torch.float32, device=moved.device).view(1, 3, 1, 1)
        tooth = -1 + patch.teeth_shade[:, None] * (tooth + 1)
        painted = torch.lerp(painted, tooth, teeth * patch.teeth_cover[:, None])
    view.copy_(painted.to(moved.dtype))
