"""Real photographs of faces, animated: the jaw and lips moved by a smooth 2D warp driven by audio.

Why: a model trained only on drawn faces learns to draw world faces; here every pixel of every
frame is the reference photo moved a little, so copying the portrait is the only way to a low
loss. One clip = one augmented photo (crop, scale, flip, colour) whose face mesh landmarks
(mediapipe, computed once per photo and cached on disk) place a mouth coordinate frame:

* ``u`` along the mouth (inner corner to inner corner, half-width ``hw``), ``v`` down, origin
  at the centre of the inner lips; the lips meet on the *seam* ``v_s(u)`` (mid-line of the inner
  lip contours; an open-mouthed photo is first closed by pulling both lips onto it).
* Opening ``o`` (``mouth.mouth_from_audio``) opens an elliptical gap of total height
  ``GAP * 2 hw * o * sqrt(1 - (u/hw)^2)``, 78 % of it below the seam (the jaw drops, the chin and
  jaw move rigidly with it, the neck stretches), 22 % above (the upper lip lifts, the nose stays).
  The gap is drawn as a dark mouth interior (luminance ~0.1, as the drawn world's) with a dim
  tongue in its lower part and, optionally, upper teeth covering a fixed fraction of it, so the
  dark area stays linear in ``o``; its edges are soft over about one output pixel.
* Width ``w`` (spectral centroid) stretches the mouth horizontally by up to +-7 %.
* Emotion from the prompt: smile lifts the corners and widens the mouth, frown lowers the
  corners and the brows, surprise raises the brows and narrows the mouth (ramped in like the
  drawn world's, neutral on frame 0).
* Head action: nodding / shaking is a per-frame similarity transform (shift, foreshortening
  scale, a little roll) of the head region that fades out smoothly into the surroundings, timed
  by the voice's emphasis (``head_rhythm``); ``still`` moves nothing but the mouth and jaw.
* Background control: ``leaves`` / ``lights`` are the drawn world's layers over the photo
  outside a soft person region (head + shoulders); ``static`` leaves the photo alone.

All warps are backward maps (output pixel -> photo pixel) sampled bilinearly on a 2x
supersampled canvas and box-filtered down, so edges stay anti-aliased. Frame 0 is the augmented
photo with the mouth closed (the portrait convention): its ground-truth opening is 0.

Ground truth has the drawn world's format (``render.render_scene``; K = 1 character), so
``training/preprocess.py`` and ``training/eval`` read these clips unchanged.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.data import photos
from training.data.head_rhythm import speech_rhythm
from training.data.mouth import FPS, LUMA

Array = np.ndarray

SUPERSAMPLE = 2
GAP = 0.38  # full-opening gap height / inner mouth width
LOWER_SHARE = 0.78
OPEN_MOUTH = 0.2  # a photo whose own lip gap is above this (opening units) smiles open
# the exact backward flow to frame 0 is kept as means over FLOW_POOL x FLOW_POOL output pixels: a
# motion autoencoder's cells (8 px) are whole multiples, and a 128^2 clip's field is 4 kB a frame
FLOW_POOL = 4
INTERIOR = np.array([0.20, 0.06, 0.07], np.float32)  # luminance ~0.1 like the drawn world's

# face mesh (468 points; the Tasks landmarker's first 468 of 478) indices
UPPER_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
BROWS = ((70, 63, 105, 66, 107), (336, 296, 334, 293, 300))
CHIN, NOSE_BOTTOM, INNER_L, INNER_R = 152, 2, 78, 308


# ----------------------------------------------------------------------------- landmarks
def _cache_dir() -> Path:
    root = os.environ.get("MAGICINFINITE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "magicinfinite")
    return Path(root) / "face_landmarks"


def detect_all_landmarks(img: Array, mesh=None) -> list[Array]:
    """[468, 2] face-mesh landmarks in pixels of every face found (up to 4), or [] (mediapipe Tasks).

    ``mesh``: a ``magicinfinite_core.inputs.face_tasks.FaceMesh`` to reuse across the frames of a video
    (ingestion); without one a still-image mesh is made and closed for this call (~0.1 s to build)."""
    from magicinfinite_core.inputs.face_tasks import FaceMesh

    img = np.ascontiguousarray(img)
    if mesh is None:
        with FaceMesh(max_faces=4) as own:
            faces = own.landmarks(img)
    else:
        faces = mesh.landmarks(img)
    h, w = img.shape[:2]
    return [f * np.array([w, h], np.float32) for f in faces]


def detect_landmarks(img: Array, mesh=None) -> Array | None:
    """[468, 2] face-mesh landmarks in pixels of the largest face, or None (mediapipe, slow)."""
    faces = detect_all_landmarks(img, mesh)
    if not faces:
        return None
    return max(faces, key=lambda L: float(np.ptp(L[:, 0]) * np.ptp(L[:, 1])))


_MEM: dict[str, Array] = {}


def photo_landmarks(name: str) -> Array:
    """Landmarks of a face photo: measured once per photo file, then read from the disk cache."""
    key = f"{name}-{photos.photo_sha(name)}"
    if key in _MEM:
        return _MEM[key]
    path = _cache_dir() / f"{key}.json"
    if path.is_file():
        L = np.asarray(json.loads(path.read_text()), np.float32)
    else:
        got = detect_landmarks(photos.load_photo(name))
        if got is None:
            raise ValueError(f"photo {name!r}: face mesh finds no face")
        L = got
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(np.round(L.astype(np.float64), 3).tolist()))
        tmp.replace(path)  # atomic: parallel build workers may race here
        L = np.asarray(json.loads(path.read_text()), np.float32)
    _MEM[key] = L
    return L


# ----------------------------------------------------------------------------- geometry
def _smoothstep(x: Array) -> Array:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass
class MouthFrame:
    """Mouth coordinate frame and lip / jaw measurements of one (augmented) photo, canvas px."""

    m: Array  # centre [2]
    eu: Array  # unit vector along the mouth [2]
    ev: Array  # unit vector down [2]
    hw: float  # inner half-width
    ax: float  # jaw half-width at mouth height (the narrower side)
    ax_neg: float  # mouth centre -> jaw line towards -u / +u (a turned face is asymmetric)
    ax_pos: float
    ay_low: float  # mouth centre -> chin
    ay_up: float  # mouth centre -> nose bottom
    knots_u: Array  # seam / existing-gap profile along u
    seam: Array
    gap_up: Array
    gap_lo: Array

    @classmethod
    def from_landmarks(cls, L: Array) -> MouthFrame:
        a, b = L[INNER_L], L[INNER_R]
        if a[0] > b[0]:
            a, b = b, a  # a flipped photo swaps the corners
        m = 0.5 * (L[13] + L[14])
        eu = (b - a) / max(float(np.linalg.norm(b - a)), 1e-3)
        ev = np.array([-eu[1], eu[0]], np.float32)

        def uv(p: Array) -> tuple[Array, Array]:
            d = np.asarray(p, np.float32) - m
            return d @ eu, d @ ev

        hw = 0.5 * float(np.linalg.norm(b - a))
        ay_low = max(float(uv(L[CHIN])[1]), 2.0 * hw)
        ou, ov = uv(L[list(FACE_OVAL)])
        band = (ov > 0.1 * ay_low) & (ov < 0.8 * ay_low)  # the jaw line below the mouth
        ax_pos = max(float(ou[band & (ou > 0)].max(initial=0.0)), 1.6 * hw)
        ax_neg = max(float(-ou[band & (ou < 0)].min(initial=0.0)), 1.6 * hw)
        uu, vu = uv(L[list(UPPER_INNER)])
        ul, vl = uv(L[list(LOWER_INNER)])
        knots = np.linspace(-hw, hw, 21).astype(np.float32)
        v_up = np.interp(knots, *_sorted(uu, vu))
        v_lo = np.interp(knots, *_sorted(ul, vl))
        v_lo = np.maximum(v_lo, v_up)
        seam = 0.5 * (v_up + v_lo)
        return cls(
            m=m.astype(np.float32), eu=eu.astype(np.float32), ev=ev,
            hw=hw, ax=min(ax_neg, ax_pos), ax_neg=ax_neg, ax_pos=ax_pos,
            ay_low=ay_low, ay_up=max(-float(uv(L[NOSE_BOTTOM])[1]), 0.6 * hw),
            knots_u=knots, seam=seam.astype(np.float32),
            gap_up=(seam - v_up).astype(np.float32), gap_lo=(v_lo - seam).astype(np.float32),
        )


def _sorted(u: Array, v: Array) -> tuple[Array, Array]:
    o = np.argsort(u)
    return u[o], v[o]


@dataclass
class PhotoFaceScene:
    """Everything a photo clip's frames are a pure function of."""

    height: int
    width: int
    photo: str
    crop: tuple[float, float, float, float]  # x0, y0, x1, y1 in photo px
    flip: bool
    jitter: photos.ColourJitter
    landmarks: Array  # [468, 2] canvas px (supersampled, after crop / flip)
    opening: Array  # [F]
    mouth_width: Array  # [F]
    emotion: str
    emotion_amount: Array  # [F]
    action: str
    head: dict[str, Array]  # dx, dy (canvas px), sx, sy, roll, yaw, pitch: [F]
    teeth: bool
    interior: Array  # [3]
    background: dict = field(default_factory=dict)
    # Frame 0 is the photo as taken (its own open mouth, e.g. a smile with teeth) instead of the
    # closed-mouth portrait; later frames close on silence. Why: a user's portrait may smile, and
    # the model must learn to close that mouth when the voice is silent (issue 26's muted target).
    open_portrait: bool = False
    # The whole clip in grey levels with this cast (None: colour). Why: the only real faces are in
    # colour, and the v6 DiT lost lip sync on a greyscale portrait (Takeo Kanade, session 9).
    print_tint: tuple[float, float, float] | None = None


def _sample_head(rng: np.random.Generator, action: str, opening: Array, s: float) -> dict[str, Array]:
    """Per-frame head motion of the prompt's action, driven by the voice's emphasis
    (`head_rhythm`); ``still`` is exactly the identity."""
    n = len(opening)
    t = np.arange(n, dtype=np.float32) / FPS
    z = np.zeros(n, np.float32)
    h = {"dx": z.copy(), "dy": z.copy(), "sx": z + 1, "sy": z + 1, "roll": z.copy(), "yaw": z.copy(), "pitch": z.copy()}
    if action in ("nodding", "shaking"):
        a = rng.uniform(0.7, 1.0)
        osc = speech_rhythm(opening, FPS)
        wob = sum(np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 6.28)) for _ in range(2))
        h["roll"] = (0.012 * (wob - wob[0])).astype(np.float32)  # 0 on frame 0 (the portrait)
        if action == "nodding":
            h["dy"] = (0.10 * s * a * osc).astype(np.float32)
            h["sy"] = (1.0 - 0.035 * a * osc).astype(np.float32)
            h["pitch"] = (a * osc).astype(np.float32)
        else:
            h["dx"] = (0.09 * s * a * osc).astype(np.float32)
            h["sx"] = (1.0 - 0.05 * a * osc * osc).astype(np.float32)
            h["yaw"] = (a * osc).astype(np.float32)
    return h


def sample_photo_scene(
    rng: np.random.Generator,
    photo_name: str,
    opening: Array,
    mouth_width: Array,
    controls: dict[str, str],
    height: int,
    width: int,
    face_range: tuple[float, float] = (0.13, 0.34),
    background: dict | None = None,
) -> PhotoFaceScene:
    """Choose crop / scale / flip / colour of the photo and the motion; frame 0 is neutral."""
    n = len(opening)
    L_src = photo_landmarks(photo_name)
    img = photos.load_photo(photo_name)
    Hi, Wi = img.shape[:2]
    S = SUPERSAMPLE
    Wc = width * S
    oval = L_src[list(FACE_OVAL)]
    s_src = 0.5 * float(np.ptp(oval[:, 0]))
    c_src = oval.mean(0)
    frac = float(np.exp(rng.uniform(np.log(face_range[0]), np.log(face_range[1]))))
    k = frac * width / s_src  # output px per photo px
    k = max(k, width / Wi, height / Hi)  # the crop never leaves the photo (no padding)
    cw, ch = width / k, height / k
    s_out = s_src * k
    cx = rng.uniform(min(1.25 * s_out, width / 2), max(width - 1.25 * s_out, width / 2))
    cy = rng.uniform(min(1.45 * s_out, height / 2), max(height - 1.3 * s_out, height / 2))
    x0 = float(np.clip(c_src[0] - cx / k, 0, Wi - cw))
    y0 = float(np.clip(c_src[1] - cy / k, 0, Hi - ch))
    flip = bool(rng.random() < 0.5)
    jit = photos.sample_jitter(rng, photos.photo(photo_name).grey)
    L = (L_src - np.array([x0, y0], np.float32)) * (S * k)
    if flip:
        L[:, 0] = Wc - L[:, 0]
    t = np.arange(n, dtype=np.float32) / FPS
    onset = rng.uniform(0.0, min(0.3, t[-1] * 0.3 if n > 1 else 0.0))
    ramp = np.clip((t - onset) / 0.4, 0.0, 1.0).astype(np.float32)
    emotion = controls["emotion"]
    op = np.asarray(opening, np.float32).copy()
    op[0] = 0.0  # frame 0 is the portrait: mouth closed
    head = _sample_head(rng, controls["action"], np.asarray(opening, np.float32), s_out * S)
    return PhotoFaceScene(
        height=height, width=width, photo=photo_name, crop=(x0, y0, x0 + cw, y0 + ch), flip=flip,
        jitter=jit, landmarks=L.astype(np.float32), opening=op,
        mouth_width=np.asarray(mouth_width, np.float32).copy(), emotion=emotion,
        emotion_amount=ramp if emotion != "neutral" else np.zeros(n, np.float32),
        action=controls["action"], head=head, teeth=bool(rng.random() < 0.6),
        interior=_interior_colour(rng, photos.photo(photo_name).grey, jit),
        background=background or {},
    )


def _interior_colour(rng: np.random.Generator, grey: bool, jit: photos.ColourJitter) -> Array:
    """Dark mouth interior; greyscale photos get a grey one in the photo's tint."""
    c = INTERIOR * rng.uniform(0.85, 1.1)
    if grey:
        c = np.full(3, float(c @ LUMA)) * np.asarray(jit.tint)
    return c.astype(np.float32)


# ----------------------------------------------------------------------------- rendering
def _head_params(sc: PhotoFaceScene) -> tuple[Array, Array, Array]:
    """Face centre, half axes of the head region (canvas px)."""
    oval = sc.landmarks[list(FACE_OVAL)]
    c = oval.mean(0)
    half = 0.5 * np.ptp(oval, axis=0)
    return c, half, oval


def _head_forward(sc: PhotoFaceScene, t: int, p: Array) -> Array:
    """Where head point p [.., 2] of the photo is on frame t (inside the head region)."""
    c, _, _ = _head_params(sc)
    h = sc.head
    cr, sr = np.cos(h["roll"][t]), np.sin(h["roll"][t])
    d = (p - c) * np.array([h["sx"][t], h["sy"][t]], np.float32)
    r = np.stack([cr * d[..., 0] - sr * d[..., 1], sr * d[..., 0] + cr * d[..., 1]], -1)
    return c + r + np.array([h["dx"][t], h["dy"][t]], np.float32)


def _head_inverse(sc: PhotoFaceScene, t: int, px: Array, py: Array) -> tuple[Array, Array]:
    """Backward head motion: output pixel -> photo pixel, blended out to zero around the head."""
    c, half, _ = _head_params(sc)
    h = sc.head
    ax, ay = 1.35 * half[0], 1.3 * half[1]
    r = np.sqrt(((px - c[0]) / ax) ** 2 + ((py - c[1]) / ay) ** 2)
    wgt = 1.0 - _smoothstep((r - 1.0) / 0.75)
    dx, dy = px - c[0] - h["dx"][t], py - c[1] - h["dy"][t]
    cr, sr = np.cos(h["roll"][t]), np.sin(h["roll"][t])
    ux = (cr * dx + sr * dy) / h["sx"][t]
    uy = (-sr * dx + cr * dy) / h["sy"][t]
    return px + wgt * (c[0] + ux - px), py + wgt * (c[1] + uy - py)


def _emotion_terms(sc: PhotoFaceScene, t: int) -> tuple[float, float, float]:
    """(corner lift in hw units, width change, brow lift in face heights) of frame t."""
    e = float(sc.emotion_amount[t])
    lift = {"smile": 0.28, "frown": -0.2}.get(sc.emotion, 0.0) * e
    wide = {"smile": 0.08, "surprise": -0.08}.get(sc.emotion, 0.0) * e
    brow = {"surprise": 0.06, "frown": -0.025}.get(sc.emotion, 0.0) * e
    return lift, wide, brow


def _mouth_support(mf: MouthFrame) -> tuple[float, float, float, float]:
    """Photo-space box (x0, y0, x1, y1) outside which the mouth / jaw warp is exactly zero:
    the supports of f_lo, f_up and fm, plus margins."""
    r = max(mf.ax_neg, mf.ax_pos, 2.0 * mf.hw) + 4
    tilt = r * abs(float(mf.eu[1]))
    return (
        float(mf.m[0] - r),
        float(mf.m[1] - max(mf.ay_up, 1.7 * mf.hw) - tilt - 4),
        float(mf.m[0] + r),
        float(mf.m[1] + 1.6 * mf.ay_low + tilt + 4),
    )


def _jaw_weight(mf: MouthFrame, u: Array, v: Array) -> Array:
    """How much of the jaw drop a point follows: 1 on the lower lip and chin, fading out at the
    jaw line sideways (the background beside the face stays put) and over the upper neck below
    the chin (wide enough that the stretch never folds: slope <= 0.65 at full opening)."""
    side = np.where(u < 0, mf.ax_neg, mf.ax_pos)
    lat = 1.0 - _smoothstep((np.abs(u) / side - 0.5) / 0.45)  # 0 just inside the jaw line
    vert = 1.0 - _smoothstep((v / mf.ay_low - 1.0) / 0.6)
    return lat * vert


def _mouth_map(sc: PhotoFaceScene, mf: MouthFrame, t: int, qx: Array, qy: Array) -> tuple[Array, Array, Array, Array]:
    """Backward mouth / jaw map of frame t for photo-space points (qx, qy): source x, y and the
    coverage of the mouth interior and of the teeth (0..1)."""
    lift, wide, _ = _emotion_terms(sc, t)
    dx, dy = qx - mf.m[0], qy - mf.m[1]
    u = dx * mf.eu[0] + dy * mf.eu[1]
    v = dx * mf.ev[0] + dy * mf.ev[1]
    hw = mf.hw
    o = float(sc.opening[t])
    k = 0.14 * (float(sc.mouth_width[t]) - 0.5) + wide
    rm = np.sqrt((u / (1.6 * hw)) ** 2 + (v / (1.4 * hw)) ** 2)
    fm = 1.0 - _smoothstep((rm - 0.5) / 0.7)
    us = u * (1.0 - k * fm)
    v = v + lift * hw * np.minimum((us / hw) ** 2, 2.0) * fm
    seam = np.interp(us, mf.knots_u, mf.seam)
    g_up = np.interp(us, mf.knots_u, mf.gap_up, left=0.0, right=0.0)
    g_lo = np.interp(us, mf.knots_u, mf.gap_lo, left=0.0, right=0.0)
    w = v - seam
    gap = GAP * 2 * hw
    gl, gu = o * gap * LOWER_SHARE, o * gap * (1 - LOWER_SHARE)
    tau = np.sqrt(np.clip(1.0 - (us / hw) ** 2, 0.0, 1.0))
    el, eu = gl * tau, gu * tau
    lc = max(3.0 * float(max(mf.gap_up.max(), mf.gap_lo.max())), 0.3 * hw)
    ll, lu = max(1.6 * gl, 0.25 * hw), max(1.6 * gu, 0.25 * hw)
    # lower side: lip edge at el, jaw fully dropped below it; rigid chin, stretched neck
    f_lo = _jaw_weight(mf, u, v)
    d = w - el
    d_lo = el + (gl - el) * _smoothstep(d / ll) - g_lo * (1.0 - _smoothstep(d / lc))
    src_lo = w - d_lo * f_lo
    # upper side: small lift of the upper lip, fading out before the nose
    r_up = np.sqrt((u / (0.9 * mf.ax)) ** 2 + (np.minimum(v, 0.0) / mf.ay_up) ** 2)
    f_up = 1.0 - _smoothstep((r_up - 0.35) / 0.6)
    d2 = -eu - w
    d_up = eu + (gu - eu) * _smoothstep(d2 / lu) - g_up * (1.0 - _smoothstep(d2 / lc))
    src_up = w + d_up * f_up
    src_w = np.where(w >= el, src_lo, np.where(w <= -eu, src_up, 0.0))
    sv = seam + src_w
    sx = mf.m[0] + us * mf.eu[0] + sv * mf.ev[0]
    sy = mf.m[1] + us * mf.eu[1] + sv * mf.ev[1]
    # coverage of the gap [-eu, el], edges soft over ~1 output pixel (2 canvas px) like a lens
    soft = 1.0 / 1.5
    g_all = el + eu
    cover = np.clip(np.minimum(np.minimum((w + eu) * soft + 0.5, (el - w) * soft + 0.5), g_all), 0.0, 1.0)
    # tongue: a dim red band over the lower 25 % of the gap, fading in upwards
    band = 0.25 * g_all
    tongue = cover * np.clip(1.0 - (el - w) / np.maximum(band, 1e-3), 0.0, 1.0) * 0.5
    tcov = np.zeros_like(cover)
    if sc.teeth and o > 0.0:  # upper teeth: a fixed fraction of the gap, so dark area ~ opening
        tb = -eu + 0.3 * g_all
        tcov = np.clip(np.minimum(np.minimum((w + eu) * soft + 0.5, (tb - w) * soft + 0.5), 0.3 * g_all), 0.0, 1.0)
        tcov = tcov * _smoothstep((tau - 0.2) / 0.3) * (0.75 + 0.25 * tau)  # fade into the corners
    return sx, sy, cover, tcov, tongue


_TOOTH = np.float32(0.74) * np.array([1.0, 0.97, 0.9], np.float32)
_TONGUE = np.array([0.36, 0.12, 0.12], np.float32)


def _backward_map(sc: PhotoFaceScene, mf: MouthFrame, t: int, px: Array, py: Array) -> tuple[Array, Array, tuple | None]:
    """Frame t's backward map of canvas points (px, py) into the photo: source x, y, and where the mouth
    map applies, (selection, interior cover, teeth cover, tongue) for colouring the gap (else None)."""
    qx, qy = _head_inverse(sc, t, px, py) if sc.action in ("nodding", "shaking") else (px.copy(), py.copy())
    _, _, brow = _emotion_terms(sc, t)
    if brow != 0.0:
        _, half, _ = _head_params(sc)
        for idx in BROWS:
            b = sc.landmarks[list(idx)]
            bc = b.mean(0)
            sig = 0.6 * float(np.ptp(b[:, 0])) + 1.0
            d2 = ((qx - bc[0]) ** 2 + (qy - bc[1]) ** 2) / (2 * sig * sig)
            g = np.exp(-d2) * (d2 < 4.5)  # cut at 3 sigma: the rest of the face stays untouched
            qy = qy + brow * 2 * half[1] * g  # content moves up when brow > 0
    x0, y0, x1, y1 = _mouth_support(mf)
    sel = (qx > x0) & (qx < x1) & (qy > y0) & (qy < y1)
    if not sel.any():
        return qx, qy, None
    mx, my, cover, tcov, tongue = _mouth_map(sc, mf, t, qx[sel], qy[sel])
    sx, sy = qx.copy(), qy.copy()
    sx[sel], sy[sel] = mx, my
    return sx, sy, (sel, cover, tcov, tongue)


def _warp_frame(sc: PhotoFaceScene, mf: MouthFrame, t: int, base: Array, px: Array, py: Array,
                source: tuple[Array, Array, tuple | None] | None = None) -> Array:
    """Colour of output pixels (px, py) on frame t: backward map into the photo + mouth interior.

    Pixels the map leaves in place sample the photo at its own pixel centres (exact values), so
    what does not move stays bit-identical from frame to frame."""
    import cv2

    sx, sy, mouth = source or _backward_map(sc, mf, t, px, py)
    col = cv2.remap(base, (sx - 0.5).astype(np.float32), (sy - 0.5).astype(np.float32),
                    cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if mouth is not None and float(sc.opening[t]) > 0.0:
        sel, cover, tcov, tongue = mouth
        c = col[sel]
        c = c + cover[:, None] * (sc.interior - c)
        # greyscale photos: a lighter shade of their (tinted grey) interior instead of red
        tongue_col = np.clip(sc.interior * 1.9, 0, 1) if photos.photo(sc.photo).grey else _TONGUE
        c = c + tongue[:, None] * (tongue_col - c)
        c = c + tcov[:, None] * (_TOOTH - c)
        col[sel] = c
    return col


class _PortraitInverse:
    """Frame 0's backward map inverted: which point of frame 0 (the portrait) shows a given photo point.

    Frame 0 differs from the photo only where the mouth is closed (the mouth map at opening 0, which
    pushes points away from the seam monotonically, slope >= 0.5), so a fixed-point iteration converges.
    It runs once per clip on a canvas-pixel grid over that region, and every frame reads the grid
    bilinearly (solving per frame made the world 5x slower to render); photo points in the photo's own
    lip gap have no source (frame 0 hides them) and land near the seam."""

    def __init__(self, sc: PhotoFaceScene, mf: MouthFrame, iters: int = 12) -> None:
        x0, y0, x1, y1 = _mouth_support(mf)
        self.x0, self.y0 = int(np.floor(x0)) - 8, int(np.floor(y0)) - 8
        gy, gx = np.mgrid[self.y0 : int(np.ceil(y1)) + 9, self.x0 : int(np.ceil(x1)) + 9].astype(np.float32) + 0.5
        ux, uy = gx.copy(), gy.copy()
        for _ in range(iters):
            mx, my, _ = _backward_map(sc, mf, 0, ux, uy)
            ux, uy = ux + (gx - mx), uy + (gy - my)
        self.shift = np.stack([ux - gx, uy - gy])  # [2, h, w]: source point minus photo point

    def __call__(self, sx: Array, sy: Array) -> tuple[Array, Array]:
        _, h, w = self.shift.shape
        fx, fy = sx - self.x0 - 0.5, sy - self.y0 - 0.5
        sel = (fx >= 0) & (fx <= w - 1) & (fy >= 0) & (fy <= h - 1)  # outside the grid frame 0 is the photo
        qx, qy = sx.copy(), sy.copy()
        if sel.any():
            x, y = fx[sel], fy[sel]
            i, j = np.minimum(x.astype(np.int64), w - 2), np.minimum(y.astype(np.int64), h - 2)
            a, b = x - i, y - j
            d = self.shift
            shift = ((1 - a) * (1 - b) * d[:, j, i] + a * (1 - b) * d[:, j, i + 1]
                     + (1 - a) * b * d[:, j + 1, i] + a * b * d[:, j + 1, i + 1])
            qx[sel] += shift[0]
            qy[sel] += shift[1]
        return qx, qy


def _roi(sc: PhotoFaceScene, mf: MouthFrame, Hc: int, Wc: int) -> tuple[int, int, int, int]:
    """Canvas box outside which no frame ever differs from the photo (speed: warp only inside)."""
    c, half, _ = _head_params(sc)
    moving = sc.action in ("nodding", "shaking") or sc.emotion in ("surprise", "frown")
    if moving:
        rx, ry = 1.35 * half[0] * 1.75 + 4, 1.3 * half[1] * 1.75 + 4
        x0, x1, y0, y1 = c[0] - rx, c[0] + rx, c[1] - ry, c[1] + ry
    else:
        x0, y0, x1, y1 = _mouth_support(mf)
    xa, xb = int(max(np.floor(x0), 0)), int(min(np.ceil(x1), Wc))
    ya, yb = int(max(np.floor(y0), 0)), int(min(np.ceil(y1), Hc))
    return ya, yb, xa, xb


def base_canvas(sc: PhotoFaceScene) -> Array:
    """float32 [H*S, W*S, 3] the augmented photo on the supersampled canvas."""
    S = SUPERSAMPLE
    img = photos.load_photo(sc.photo)
    a = photos.resize_box(img, sc.crop, (sc.width * S, sc.height * S)).astype(np.float32) / 255.0
    if sc.flip:
        a = a[:, ::-1]
    return sc.jitter.apply(np.ascontiguousarray(a))


def _downsample(x: Array, s: int) -> Array:
    h, w = x.shape[-3] // s, x.shape[-2] // s
    return x.reshape(*x.shape[:-3], h, s, w, s, x.shape[-1]).mean(axis=(-4, -2))


def person_weight(sc: PhotoFaceScene) -> Array:
    """[H, W] soft 0..1 region of the person (head + shoulders): background layers go outside."""
    S = SUPERSAMPLE
    c, half, oval = _head_params(sc)
    c, half = c / S, half / S
    yy = np.arange(sc.height, dtype=np.float32)[:, None] + 0.5
    xx = np.arange(sc.width, dtype=np.float32)[None, :] + 0.5
    r = np.sqrt(((xx - c[0]) / (1.5 * half[0])) ** 2 + ((yy - c[1] + 0.25 * half[1]) / (1.55 * half[1])) ** 2)
    head = 1.0 - _smoothstep((r - 1.0) / 0.35)
    chin = float(oval[:, 1].max()) / S
    spread = 1.3 * half[0] + np.maximum(yy - chin, 0.0) * 1.2
    body = (1.0 - _smoothstep((np.abs(xx - c[0]) - spread) / (0.3 * half[0]))) * _smoothstep((yy - chin + 0.5 * half[1]) / (0.5 * half[1]))
    return np.maximum(head, body).astype(np.float32)


def render_photo_scene(sc: PhotoFaceScene) -> tuple[Array, dict[str, Array]]:
    """uint8 frames [F, H, W, 3] and ground truth in ``render.render_scene``'s format (K = 1), plus
    ``portrait_flow`` float16 [F, 2, H/4, W/4]: the exact backward flow (dx, dy, output px) from each
    frame to frame 0, averaged over 4x4 pixels, with frame t(p) ~ frame 0(p + flow) wherever the
    photo shows (not in the drawn mouth gap). Why: optical flow on the frames is noise on flat skin
    and in the dark gap; the renderer knows its warps (issue 26, build item 3)."""
    from training.data.render import render_background

    S = SUPERSAMPLE
    n = len(sc.opening)
    Hc, Wc = sc.height * S, sc.width * S
    base = base_canvas(sc)
    mf = MouthFrame.from_landmarks(sc.landmarks)
    y0, y1, x0, x1 = _roi(sc, mf, Hc, Wc)
    py, px = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
    frames = np.empty((n, sc.height, sc.width, 3), np.float32)
    still = _downsample(base, S)
    canvas = base.copy()
    pool = FLOW_POOL if sc.height % FLOW_POOL == 0 and sc.width % FLOW_POOL == 0 else 1
    field = np.zeros((n, 2, sc.height // pool, sc.width // pool), np.float32)
    canvas_field = np.zeros((Hc, Wc, 2), np.float32)
    memo: dict[tuple, tuple[Array, Array]] = {}
    portrait_source = None if sc.open_portrait else _PortraitInverse(sc, mf)  # an open portrait: frame 0 is the photo
    for t in range(n):
        key = (float(sc.opening[t]), float(sc.mouth_width[t]), float(sc.emotion_amount[t]),
               *(float(v[t]) for v in sc.head.values()))
        if key not in memo:  # silent still frames repeat exactly: render once
            source = _backward_map(sc, mf, t, px, py)
            canvas[y0:y1, x0:x1] = _warp_frame(sc, mf, t, base, px, py, source)
            qx, qy = (source[0], source[1]) if portrait_source is None else portrait_source(source[0], source[1])
            moved = np.stack([qx - px, qy - py], -1)
            moved[np.abs(moved) < 1e-3] = 0.0  # float rounding of the maps: what does not move is exactly still
            canvas_field[y0:y1, x0:x1] = moved
            memo = {key: (_downsample(canvas, S), _downsample(canvas_field, S * pool) / S)}
        frames[t] = memo[key][0]
        field[t] = memo[key][1].transpose(2, 0, 1)
    field[0] = 0.0  # frame 0 is the portrait
    if sc.background and sc.background.get("change") in ("leaves", "lights"):
        bg = dict(sc.background, photo=still)
        pw = person_weight(sc)[None, :, :, None]
        for a in range(0, n, 64):  # chunks bound memory on long (60 s) clips
            b = min(a + 64, n)
            layer = render_background(bg, b - a, sc.height, sc.width, frame0=a)
            frames[a:b] = pw * frames[a:b] + (1.0 - pw) * layer
    if sc.open_portrait:
        frames[0] = still  # the photo itself: no closing warp, neutral head and emotion on frame 0
    if sc.print_tint is not None:
        frames = photos.greyscale_print(frames, sc.print_tint)
    out = (np.clip(frames, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    gt = photo_ground_truth(sc, mf)
    gt["portrait_flow"] = field.astype(np.float16)
    if sc.open_portrait:
        gt["mouth_open"][0] = photo_opening(mf)
    return out, gt


def photo_opening(mf: MouthFrame) -> float:
    """The photo's own inner-lip gap in opening units (o = 1: the full GAP x inner mouth width)."""
    return float(np.clip((mf.gap_up + mf.gap_lo).max() / (GAP * 2 * mf.hw), 0.0, 1.0))


def photo_ground_truth(sc: PhotoFaceScene, mf: MouthFrame | None = None) -> dict[str, Array]:
    """Per-frame ground truth (same keys / shapes as the drawn world's, one character)."""
    from PIL import Image, ImageDraw

    S = SUPERSAMPLE
    mf = mf or MouthFrame.from_landmarks(sc.landmarks)
    n = len(sc.opening)
    H, W = sc.height, sc.width
    gap = GAP * 2 * mf.hw
    # all mesh points (their convex hull is the face mask: robust for turned faces, whose oval
    # polygon folds); points below the mouth follow the jaw (rigid chin), then the head motion
    import cv2

    pts0 = sc.landmarks
    d = pts0 - mf.m
    v = d @ mf.ev
    jaw = (v > 0) * _jaw_weight(mf, d @ mf.eu, v)
    oval_idx = list(FACE_OVAL)
    masks = np.zeros((n, 1, H, W), bool)
    fbox = np.zeros((n, 1, 4), np.float32)
    mbox = np.zeros((n, 1, 4), np.float32)
    pos = np.zeros((n, 1, 2), np.float32)
    size = np.zeros((n, 1), np.float32)
    ang = float(np.arctan2(mf.eu[1], mf.eu[0]))
    for t in range(n):
        pts = pts0 + (sc.opening[t] * gap * LOWER_SHARE * jaw)[:, None] * mf.ev[None]
        pts = _head_forward(sc, t, pts) / S
        hull = cv2.convexHull(pts.astype(np.float32))[:, 0]
        im = Image.new("L", (W, H), 0)
        ImageDraw.Draw(im).polygon([tuple(p) for p in hull.tolist()], fill=1)
        masks[t, 0] = np.asarray(im, bool)
        fbox[t, 0] = (*pts.min(0), *pts.max(0))
        pos[t, 0] = pts[oval_idx].mean(0)
        size[t, 0] = 0.5 * float(np.ptp(pts[:, 0]))
        _, wide, _ = _emotion_terms(sc, t)
        k = 0.14 * (float(sc.mouth_width[t]) - 0.5) + wide
        hx_m = mf.hw / max(1.0 - k, 0.5)
        hy_m = 0.5 * gap
        ctr = mf.m + mf.ev * (float(np.interp(0.0, mf.knots_u, mf.seam)) + 0.5 * gap * (2 * LOWER_SHARE - 1))
        ctr = _head_forward(sc, t, ctr) / S
        a = ang + float(sc.head["roll"][t])
        c, s = abs(np.cos(a)), abs(np.sin(a))
        sx, sy = float(sc.head["sx"][t]), float(sc.head["sy"][t])
        hx = (hx_m * c * sx + hy_m * s * sy) / S
        hy = (hx_m * s * sx + hy_m * c * sy) / S
        mbox[t, 0] = (ctr[0] - hx, ctr[1] - hy, ctr[0] + hx, ctr[1] + hy)
    z = np.zeros((n, 1), np.float32)
    return {
        "face_masks": masks,
        "speaker_mask": masks[:, 0].any(axis=0),
        "face_box": fbox,
        "mouth_box": mbox,
        "head_pos": pos,
        "head_pose": np.stack([sc.head["yaw"], sc.head["pitch"], sc.head["roll"]], 1)[:, None].astype(np.float32),
        "face_size": size,
        "blink": z,
        "mouth_open": sc.opening.astype(np.float32),
        "mouth_width": sc.mouth_width.astype(np.float32),
        "char_mouth_open": sc.opening.astype(np.float32)[:, None],
        "emotion_amount": sc.emotion_amount.astype(np.float32),
    }


def photo_identity_id(name: str) -> int:
    """Stable identity id of a face photo, in its split's residue class (see splits.py)."""
    names = [p.name for p in photos.PHOTOS]
    i = names.index(name)
    return 10 * (10**6 + i) + (9 if photos.photo(name).split == "heldout" else i % 9)
