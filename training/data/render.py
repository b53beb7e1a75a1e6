"""Procedural talking-head renderer: pure numpy, anti-aliased signed-distance shapes.

Every shape is a signed distance function evaluated on the pixels of its own bounding box for
all frames at once ([F, h, w] arrays), turned into coverage with a 1-pixel smooth edge, and
alpha-blended into a float canvas. Faces live in a face coordinate frame (unit = face half
width, v pointing down); each frame maps it to pixels with a similarity transform (position,
scale, roll) and displaces features for yaw / pitch, which is enough for nods and head shakes.

The renderer also returns the ground truth the evaluator needs (face / mouth boxes, face masks,
speaker mask, pose, blinks) -- see ``render_scene``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from training.data.mouth import FPS

STYLES = ("realistic", "anime", "sketch")
HAIR_STYLES = ("short", "long", "bob", "bun", "bald", "spiky")

# Mouth geometry in face units (face half-width = 1). The interior is an ellipse of half height
# MOUTH_IH0 + MOUTH_IH * opening; its vertical centre drops with the jaw.
MOUTH_IH0 = 0.006
MOUTH_IH = 0.13
MOUTH_DROP = 0.35
_EPS = 1e-6

Array = np.ndarray


# ----------------------------------------------------------------------------- identities
_SKIN_REAL = np.array(
    [
        [0.98, 0.86, 0.76],
        [0.94, 0.78, 0.64],
        [0.86, 0.66, 0.52],
        [0.74, 0.53, 0.39],
        [0.60, 0.42, 0.30],
        [0.50, 0.35, 0.25],
    ],
    np.float32,
)
_SKIN_ANIME = np.array(
    [[1.0, 0.90, 0.82], [0.99, 0.84, 0.74], [0.90, 0.72, 0.58], [0.70, 0.52, 0.40]],
    np.float32,
)
_HAIR_REAL = np.array(
    [
        [0.10, 0.08, 0.07],
        [0.30, 0.19, 0.11],
        [0.55, 0.38, 0.20],
        [0.85, 0.70, 0.42],
        [0.62, 0.25, 0.12],
        [0.62, 0.62, 0.62],
    ],
    np.float32,
)
_HAIR_ANIME = np.array(
    [
        [0.95, 0.45, 0.65],
        [0.30, 0.45, 0.90],
        [0.55, 0.35, 0.80],
        [0.25, 0.70, 0.45],
        [0.95, 0.95, 0.98],
        [0.12, 0.12, 0.18],
        [0.95, 0.60, 0.20],
    ],
    np.float32,
)
_IRIS = np.array(
    [[0.25, 0.15, 0.08], [0.20, 0.40, 0.70], [0.25, 0.50, 0.30], [0.45, 0.35, 0.20], [0.45, 0.45, 0.50]],
    np.float32,
)


@dataclass
class Identity:
    """Everything that makes a character recognisable; a pure function of its integer seed."""

    identity_id: int
    style: str
    skin: list[float]
    hair: list[float]
    iris: list[float]
    lip: list[float]
    shirt: list[float]
    aspect: float  # face half-height / half-width
    jaw: float  # 0 round .. 1 pointed chin
    eye_sep: float
    eye_y: float
    eye_w: float
    eye_h: float
    brow_thick: float
    nose_len: float
    mouth_y: float
    mouth_w: float
    hair_style: str
    glasses: bool
    hat: bool
    earrings: bool
    accent: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


def sample_identity(identity_id: int, style: str | None = None) -> Identity:
    """Identity from its seed; the style is part of identity unless forced."""
    rng = np.random.default_rng(np.random.SeedSequence([int(identity_id), 7001]))
    st = style or STYLES[int(rng.choice(3, p=[0.45, 0.35, 0.20]))]
    if st == "anime":
        skin = _SKIN_ANIME[int(rng.integers(len(_SKIN_ANIME)))]
        hair = _HAIR_ANIME[int(rng.integers(len(_HAIR_ANIME)))]
    elif st == "sketch":
        skin = np.array([0.97, 0.96, 0.93], np.float32)
        hair = np.array([0.45, 0.45, 0.47], np.float32) * rng.uniform(0.8, 1.6)
    else:
        skin = _SKIN_REAL[int(rng.integers(len(_SKIN_REAL)))]
        hair = _HAIR_REAL[int(rng.integers(len(_HAIR_REAL)))]
    skin = np.clip(skin * rng.uniform(0.96, 1.04, 3), 0, 1)
    hair = np.clip(hair * rng.uniform(0.9, 1.1, 3), 0, 1)
    lip = np.clip(skin * np.array([1.0, 0.76, 0.76]) + np.array([0.04, 0.0, 0.01]), 0, 1)
    if st == "anime":
        lip = np.clip(skin * np.array([1.0, 0.78, 0.8]), 0, 1)
    # lips must stay brighter than the mouth-interior threshold (see mouth.measure_mouth_opening)
    lum = float(lip @ np.array([0.299, 0.587, 0.114]))
    if lum < 0.34:
        lip = np.clip(lip * 0.34 / lum, 0, 1)
    anime = st == "anime"
    return Identity(
        identity_id=int(identity_id),
        style=st,
        skin=[float(x) for x in skin],
        hair=[float(x) for x in hair],
        iris=[float(x) for x in _IRIS[int(rng.integers(len(_IRIS)))]]
        if not anime
        else [float(x) for x in rng.uniform(0.1, 0.8, 3)],
        lip=[float(x) for x in lip],
        shirt=[float(x) for x in rng.uniform(0.1, 0.9, 3)],
        aspect=float(rng.uniform(1.12, 1.38)),
        jaw=float(rng.uniform(0.0, 1.0)),
        eye_sep=float(rng.uniform(0.36, 0.46)),
        eye_y=float(rng.uniform(-0.12, 0.02)),
        eye_w=float(rng.uniform(0.15, 0.21) * (1.25 if anime else 1.0)),
        eye_h=float(rng.uniform(0.075, 0.11) * (1.9 if anime else 1.0)),
        brow_thick=float(rng.uniform(0.025, 0.05)),
        nose_len=float(rng.uniform(0.18, 0.3)),
        mouth_y=float(rng.uniform(0.40, 0.48)),
        mouth_w=float(rng.uniform(0.24, 0.32) * (0.85 if anime else 1.0)),
        hair_style=HAIR_STYLES[int(rng.integers(len(HAIR_STYLES) - (0 if anime else 1)))],
        glasses=bool(rng.random() < 0.2),
        hat=bool(rng.random() < 0.12),
        earrings=bool(rng.random() < 0.2),
        accent=[float(x) for x in rng.uniform(0.1, 0.95, 3)],
    )


# ----------------------------------------------------------------------------- SDF primitives
def sd_ellipse(x: Array, y: Array, a: Array | float, b: Array | float) -> Array:
    """Approximate signed distance to an axis-aligned ellipse (exact on the boundary)."""
    k0 = np.sqrt((x / a) ** 2 + (y / b) ** 2)
    k1 = np.sqrt((x / (a * a)) ** 2 + (y / (b * b)) ** 2)
    return k0 * (k0 - 1.0) / (k1 + _EPS)


def sd_segment(x: Array, y: Array, ax: float, ay: float, bx: float, by: float, r: Array | float) -> Array:
    """Signed distance to a capsule (segment with radius r): strokes, brows, bridges."""
    px, py = x - ax, y - ay
    dx, dy = bx - ax, by - ay
    h = np.clip((px * dx + py * dy) / (dx * dx + dy * dy + _EPS), 0.0, 1.0)
    return np.sqrt((px - dx * h) ** 2 + (py - dy * h) ** 2) - r


def sd_box(x: Array, y: Array, a: float, b: float, r: float = 0.0) -> Array:
    """Signed distance to a rounded box of half sizes (a, b) and corner radius r."""
    qx, qy = np.abs(x) - a + r, np.abs(y) - b + r
    return np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2) + np.minimum(np.maximum(qx, qy), 0) - r


def sd_polygon(x: Array, y: Array, pts: list[tuple[float, float]]) -> Array:
    """Signed distance-like field of a convex polygon (counter-clockwise in screen space)."""
    d = None
    n = len(pts)
    for i in range(n):
        (x0, y0), (x1, y1) = pts[i], pts[(i + 1) % n]
        ex, ey = x1 - x0, y1 - y0
        ln = np.hypot(ex, ey) + _EPS
        e = ((x - x0) * ey - (y - y0) * ex) / ln
        d = e if d is None else np.maximum(d, e)
    return d


# ----------------------------------------------------------------------------- canvas
class _Canvas:
    """Float RGB canvas for all frames plus an owner map for per-character face masks."""

    def __init__(self, bg: Array) -> None:
        self.img = bg
        self.F, self.H, self.W = bg.shape[:3]
        self.owner = np.full((self.F, self.H, self.W), -1, np.int8)
        self.yy = np.arange(self.H, dtype=np.float32) + 0.5
        self.xx = np.arange(self.W, dtype=np.float32) + 0.5

    def box(self, cx: Array, cy: Array, r: float | Array) -> tuple[int, int, int, int] | None:
        r = np.asarray(r, np.float32)
        x0 = max(int(np.floor(np.min(cx - r))), 0)
        x1 = min(int(np.ceil(np.max(cx + r))) + 1, self.W)
        y0 = max(int(np.floor(np.min(cy - r))), 0)
        y1 = min(int(np.ceil(np.max(cy + r))) + 1, self.H)
        if x1 <= x0 or y1 <= y0:
            return None
        return y0, y1, x0, x1

    def blend(self, bx: tuple[int, int, int, int], alpha: Array, color: Array) -> None:
        y0, y1, x0, x1 = bx
        reg = self.img[:, y0:y1, x0:x1]
        reg += alpha[..., None] * (color - reg)

    def own(self, bx: tuple[int, int, int, int], alpha: Array, char: int, face: bool) -> None:
        y0, y1, x0, x1 = bx
        reg = self.owner[:, y0:y1, x0:x1]
        hit = alpha > 0.5
        if face:
            reg[hit] = char
        else:
            reg[hit & (reg != char)] = -1


@dataclass
class _Pose:
    """Per-frame similarity transform of a face frame + yaw/pitch feature displacement."""

    cx: Array
    cy: Array
    s: Array
    roll: Array
    yaw: Array
    pitch: Array

    def place(self, u: Array | float, v: Array | float, depth: float) -> tuple[Array, Array]:
        """Pixel position of face point (u, v) whose depth makes it move with yaw/pitch."""
        u = u + self.yaw * 0.22 * depth
        v = v + self.pitch * 0.16 * depth
        c, sn = np.cos(self.roll), np.sin(self.roll)
        return self.cx + self.s * (c * u - sn * v), self.cy + self.s * (sn * u + c * v)


class _Painter:
    """Draws shapes of one character (or of the background when pose is a unit pose)."""

    def __init__(self, cv: _Canvas, pose: _Pose, char: int, aa: float = 1.0) -> None:
        self.cv, self.p, self.char, self.aa = cv, pose, char, aa

    def local(
        self, u0: Array | float, v0: Array | float, depth: float, bound: float, ang: Array | float = 0.0
    ):
        px, py = self.p.place(u0, v0, depth)
        bx = self.cv.box(px, py, bound * self.p.s + 2.0)
        if bx is None:
            return None
        y0, y1, x0, x1 = bx
        f = (slice(None), None, None)
        dx = self.cv.xx[None, None, x0:x1] - px[f]
        dy = self.cv.yy[None, y0:y1, None] - py[f]
        a = self.p.roll + ang
        c, sn = np.cos(a)[f], np.sin(a)[f]
        inv = 1.0 / self.p.s[f]
        lu = (c * dx + sn * dy) * inv
        lv = (-sn * dx + c * dy) * inv
        return bx, lu, lv

    def draw(
        self,
        u0: Array | float,
        v0: Array | float,
        bound: float,
        sdf: Callable[[Array, Array], Array],
        fill: Array | None = None,
        *,
        depth: float = 1.0,
        ang: Array | float = 0.0,
        outline: Array | None = None,
        lw: float = 1.0,
        shade: Callable[[Array, Array], Array] | None = None,
        face: bool | None = None,
        opacity: float = 1.0,
        tex: Array | None = None,
    ) -> None:
        """Fill (optionally shaded) and/or outline one shape; ``lw`` is the line width in pixels."""
        got = self.local(u0, v0, depth, bound, ang)
        if got is None:
            return
        bx, lu, lv = got
        d = sdf(lu, lv) * self.p.s[:, None, None]  # pixels
        if fill is not None:
            a = np.clip(0.5 - d / self.aa, 0.0, 1.0)
            if opacity != 1.0:
                a = a * opacity
            col = np.asarray(fill, np.float32)
            if shade is not None:
                col = col * shade(lu, lv)[..., None]
            if tex is not None:
                col = np.clip(col * _tex_lookup(tex, lu, lv), 0.0, 1.0)
            self.cv.blend(bx, a, col)
            if face is not None and self.char >= 0:
                self.cv.own(bx, a, self.char, face)
        if outline is not None:
            a = np.clip(0.5 - (np.abs(d) - 0.5 * lw) / self.aa, 0.0, 1.0) * opacity
            self.cv.blend(bx, a, np.asarray(outline, np.float32))


def _tex_lookup(tex: Array, lu: Array, lv: Array, scale: float = 0.45) -> Array:
    """Colour multiplier [.., 3] of a texture patch at face coordinates (mirror-tiled), so the
    texture moves with the face."""
    n = tex.shape[0]
    period = 2 * n

    def wrap(c: Array) -> Array:
        c = np.mod(c, period)
        return np.clip(np.where(c >= n, period - 1 - c, c), 0, n - 1).astype(np.int32)

    return tex[wrap((lv * scale + 0.5) * n), wrap((lu * scale + 0.5) * n)]


# ----------------------------------------------------------------------------- scenes
@dataclass
class WorldConfig:
    """Knobs of the world: frame size and how big / how many faces appear."""

    height: int = 128
    width: int = 128
    face_min: float = 0.07  # face half-width as a fraction of frame width (log-uniform)
    face_max: float = 0.30
    max_chars: int = 3
    multi_prob: float = 0.35  # probability of 2-3 characters
    photo_faces: float = 0.0  # fraction of clips that are animated real photographs (photo_face.py)
    photo_textures: float = 0.0  # fraction of drawn clips with photographic textures (photos.py)
    photo_face_min: float = 0.15  # face half-width / frame width of animated photos (log-uniform)
    photo_face_max: float = 0.34
    photo_generated: bool = True  # also use the AI-generated portraits (photos.py) as faces / textures
    photo_real_share: float = 0.35  # of photo-face clips, the share that animate real photographs


@dataclass
class CharacterTrack:
    """Per-frame state of one character (all arrays [F])."""

    identity: Identity
    cx: Array
    cy: Array
    s: Array
    roll: Array
    yaw: Array
    pitch: Array
    blink: Array
    opening: Array
    mouth_width: Array
    emotion: str
    emotion_amount: Array
    textures: dict = field(default_factory=dict)  # part -> photo multiplier patch (apply_photo_textures)


@dataclass
class Scene:
    """A fully specified clip: render_scene(scene) is a pure function of it."""

    height: int
    width: int
    num_frames: int
    chars: list[CharacterTrack]
    speaker: int
    controls: dict[str, str]
    background: dict = field(default_factory=dict)
    light: tuple[float, float] = (0.5, -0.6)


def _smooth_noise(rng: np.random.Generator, n: int, cutoff_hz: float, amp: float) -> Array:
    """Low-frequency wobble (sum of random sinusoids) for natural sway."""
    t = np.arange(n, dtype=np.float32) / FPS
    out = np.zeros(n, np.float32)
    for _ in range(3):
        f = rng.uniform(0.1, cutoff_hz)
        out += np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    return out * (amp / 3.0)


def _blinks(rng: np.random.Generator, n: int) -> Array:
    """Blink closure 0..1 per frame: a blink every 2-5 s, ~5 frames long."""
    b = np.zeros(n, np.float32)
    t = int(rng.integers(5, 60))
    shape = np.array([0.4, 0.9, 1.0, 0.7, 0.3], np.float32)
    while t < n:
        seg = b[t : t + len(shape)]
        b[t : t + len(shape)] = np.maximum(seg, shape[: len(seg)])
        t += int(rng.integers(50, 125))
    return b


def _layout(rng: np.random.Generator, k: int, cfg: WorldConfig) -> list[tuple[float, float, float]]:
    """(cx, cy, half-width) in pixels for k characters, left to right."""
    H, W = cfg.height, cfg.width
    out = []
    if k == 1:
        s = float(np.exp(rng.uniform(np.log(cfg.face_min), np.log(cfg.face_max)))) * W
        cx = rng.uniform(1.3 * s, W - 1.3 * s) if W > 2.6 * s else W / 2
        cy = rng.uniform(1.7 * s, H - 1.3 * s) if H > 3.0 * s else H / 2
        return [(float(cx), float(cy), s)]
    smax = min(cfg.face_max, 0.85 / (2.4 * k)) * W
    smin = min(cfg.face_min * W, smax * 0.8)
    slot = W / k
    for i in range(k):
        s = float(np.exp(rng.uniform(np.log(smin), np.log(smax))))
        cx = slot * (i + 0.5) + rng.uniform(-0.12, 0.12) * slot
        cy = rng.uniform(1.7 * s, H - 1.3 * s) if H > 3.0 * s else H / 2
        out.append((float(cx), float(cy), s))
    return out


def sample_scene(
    rng: np.random.Generator,
    identities: list[Identity],
    speaker: int,
    opening: Array,
    mouth_width: Array,
    controls: dict[str, str],
    cfg: WorldConfig | None = None,
) -> Scene:
    """Place characters, derive their motion from the controls, attach the speaker's lips.

    Text-controlled effects start from a neutral first frame (frame 0 is the reference portrait)
    and develop over the clip: emotion ramps in, nod / shake oscillations start at phase 0.
    """
    cfg = cfg or WorldConfig()
    n = len(opening)
    t = np.arange(n, dtype=np.float32) / FPS
    chars = []
    for i, (ident, (cx, cy, s)) in enumerate(
        zip(identities, _layout(rng, len(identities), cfg), strict=True)
    ):
        speaking = i == speaker
        action = controls["action"] if speaking else "idle"
        yaw = np.zeros(n, np.float32)
        pitch = np.zeros(n, np.float32)
        roll = np.full(n, rng.uniform(-0.08, 0.08), np.float32)
        dx = np.zeros(n, np.float32)
        dy = np.zeros(n, np.float32)
        if action == "nodding":
            f, a = rng.uniform(1.2, 2.2), rng.uniform(0.7, 1.0)
            osc = np.sin(2 * np.pi * f * t).astype(np.float32)
            pitch = a * osc
            dy = 0.10 * s * a * osc
            roll = roll + _smooth_noise(rng, n, 0.4, 0.02)
        elif action == "shaking":
            f, a = rng.uniform(1.2, 2.2), rng.uniform(0.7, 1.0)
            osc = np.sin(2 * np.pi * f * t).astype(np.float32)
            yaw = a * osc
            dx = 0.08 * s * a * osc
            roll = roll + _smooth_noise(rng, n, 0.4, 0.02)
        elif action == "idle":  # listeners sway a little
            yaw = _smooth_noise(rng, n, 0.5, 0.15)
            pitch = _smooth_noise(rng, n, 0.5, 0.15)
            roll = roll + _smooth_noise(rng, n, 0.3, 0.03)
        # "still": no motion at all besides blinks and lips
        if speaking:
            op, mw = opening.astype(np.float32), mouth_width.astype(np.float32)
            emotion = controls["emotion"]
        else:
            op, mw = np.zeros(n, np.float32), np.full(n, 0.5, np.float32)
            emotion = "neutral"
        onset = rng.uniform(0.0, min(0.3, t[-1] * 0.3 if n > 1 else 0.0))
        ramp = np.clip((t - onset) / 0.4, 0.0, 1.0).astype(np.float32)
        chars.append(
            CharacterTrack(
                identity=ident,
                cx=(cx + dx).astype(np.float32),
                cy=(cy + dy).astype(np.float32),
                s=np.full(n, s, np.float32),
                roll=roll.astype(np.float32),
                yaw=yaw.astype(np.float32),
                pitch=pitch.astype(np.float32),
                blink=_blinks(rng, n),
                opening=op,
                mouth_width=mw,
                emotion=emotion,
                emotion_amount=ramp if emotion != "neutral" else np.zeros(n, np.float32),
            )
        )
    bg = _sample_background(rng, controls["background"], identities[speaker].style, cfg)
    ang = rng.uniform(-2.5, -0.6)
    return Scene(
        cfg.height, cfg.width, n, chars, speaker, dict(controls), bg, (float(np.cos(ang)), float(np.sin(ang)))
    )


def apply_photo_textures(scene: Scene, rng: np.random.Generator, split: str, generated: bool = True) -> dict:
    """Give a drawn scene photographic textures from the split's photos (photos.py): the
    background becomes a photo crop (leaves / lights still drawn over it) and each non-sketch
    character gets photo detail on skin (subtle), hair and clothes. Returns what was used."""
    from training.data import photos

    name, patch = photos.random_texture(
        rng, split, (scene.width, scene.height), generated, background=True, scale=(0.08, 1.0)
    )
    scene.background["photo"] = patch
    if scene.background["kind"] != "leaves":
        scene.background["kind"] = "photo"
    used: dict = {"background": name, "characters": []}
    for ch in scene.chars:
        got = {}
        if ch.identity.style != "sketch":
            for part, lo, hi in (("skin", 0.2, 0.5), ("hair", 0.5, 1.0), ("shirt", 0.6, 1.2)):
                if rng.random() < 0.8:
                    n, p = photos.random_texture(rng, split, (64, 64), generated, scale=(0.01, 0.25))
                    m = p / np.maximum(p.mean(axis=(0, 1)), 0.05)
                    ch.textures[part] = (np.clip(m, 0.05, 3.0) ** rng.uniform(lo, hi)).astype(np.float32)
                    got[part] = n
        used["characters"].append(got)
    return used


# ----------------------------------------------------------------------------- background
def _sample_background(rng: np.random.Generator, change: str, style: str, cfg: WorldConfig) -> dict:
    kind = (
        "leaves"
        if change == "leaves"
        else str(rng.choice(["gradient", "room", "stripes", "leaves"], p=[0.35, 0.3, 0.2, 0.15]))
    )
    if change == "lights" and kind == "leaves":
        kind = "room"
    n_leaves = int(rng.integers(25, 45) * cfg.width * cfg.height / 128**2) + 6
    return {
        "kind": kind,
        "change": change,
        "style": style,
        "c0": [float(x) for x in rng.uniform(0.15, 0.9, 3)],
        "c1": [float(x) for x in rng.uniform(0.15, 0.9, 3)],
        "stripe_freq": float(rng.uniform(0.06, 0.2)),
        "stripe_ang": float(rng.uniform(-0.5, 0.5)),
        "window": [
            float(x)
            for x in (
                rng.uniform(0.05, 0.6),
                rng.uniform(0.05, 0.4),
                rng.uniform(0.2, 0.4),
                rng.uniform(0.2, 0.4),
            )
        ],
        "leaves": rng.uniform(0, 1, size=(n_leaves, 7)).round(4).tolist(),
        "wind": float(rng.uniform(0.5, 1.2)),
        "bulbs": rng.uniform(0, 1, size=(int(rng.integers(5, 11)), 5)).round(4).tolist(),
        "flash_hz": float(rng.uniform(1.5, 3.5)),
    }


def _render_background(bg: dict, n: int, H: int, W: int, frame0: int = 0) -> Array:
    yy = (np.arange(H, dtype=np.float32)[:, None] + 0.5) / H
    xx = (np.arange(W, dtype=np.float32)[None, :] + 0.5) / W
    c0, c1 = np.array(bg["c0"], np.float32), np.array(bg["c1"], np.float32)
    sketch = bg["style"] == "sketch"
    photo = bg.get("photo")
    if photo is not None:  # a photograph (photos.random_patch) instead of a drawn backdrop
        base = np.asarray(photo, np.float32)
    elif bg["kind"] == "stripes":
        a = bg["stripe_ang"]
        ph = (xx * np.cos(a) + yy * np.sin(a)) * W * bg["stripe_freq"]
        m = np.clip(np.sin(ph * 2 * np.pi) * 3.0, -1, 1) * 0.5 + 0.5
        base = c0 + (c1 - c0) * (0.35 * m)[..., None]
    else:
        base = c0 + (c1 - c0) * yy[..., None] + np.zeros((1, W, 1), np.float32)
    if bg["kind"] == "room" and photo is None:
        wx, wy, ww, wh = bg["window"]
        d = sd_box(xx - wx - ww / 2, yy - wy - wh / 2, ww / 2, wh / 2)
        a = np.clip(0.5 - d * W, 0, 1)[..., None]
        base = base * (1 - a) + a * np.array([0.75, 0.88, 1.0], np.float32)
        fr = np.clip(0.5 - (np.abs(d * W) - 1.0), 0, 1)[..., None]
        base = base * (1 - fr) + fr * c1 * 0.5
        floor = np.clip((yy - 0.82) * H, 0, 1)[..., None]
        base = base * (1 - floor) + floor * c0 * 0.6
    img = np.broadcast_to(base.astype(np.float32), (n, H, W, 3)).copy()
    cv = _Canvas(img)
    t = (np.arange(n, dtype=np.float32) + frame0) / FPS
    moving = bg["change"] == "leaves"
    if bg["kind"] == "leaves":
        for row in bg["leaves"]:
            x, y, size, hue, ph, ang, f = row
            sway = np.sin(2 * np.pi * (0.6 + 1.2 * f) * t + 6.28 * ph) if moving else np.zeros(n, np.float32)
            drift = (bg["wind"] * 0.08 * t) if moving else 0.0
            px = ((x + drift + 0.015 * sway) % 1.1 - 0.05) * W
            py = (y + 0.01 * sway * np.cos(3 * ph)) * H + np.zeros(n, np.float32)
            r = (0.05 + 0.05 * size) * W
            pose = _Pose(
                px.astype(np.float32),
                py.astype(np.float32),
                np.full(n, r, np.float32),
                (ang * 6.28 + 0.4 * sway).astype(np.float32),
                np.zeros(n, np.float32),
                np.zeros(n, np.float32),
            )
            col = np.array(
                [0.15 + 0.5 * hue * (1 - hue), 0.35 + 0.35 * (1 - hue), 0.12 + 0.1 * hue], np.float32
            )
            if hue > 0.8:
                col = np.array([0.85, 0.45 + 0.2 * size, 0.12], np.float32)
            pt = _Painter(cv, pose, -1)
            pt.draw(
                0.0,
                0.0,
                1.2,
                lambda u, v: sd_ellipse(u, v + 0.25 * u * u, 1.0, 0.45),
                col * (0.85 + 0.3 * size),
                outline=col * 0.5,
                lw=0.8,
            )
    if bg["change"] == "lights":
        # half square wave, half smooth; 0 at t = 0 so the reference frame shows the lights off
        cos = np.cos(2 * np.pi * bg["flash_hz"] * t)
        pulse = (0.5 * (cos < 0) + 0.5 * (0.5 - 0.5 * cos)).astype(np.float32)
        for row in bg["bulbs"]:
            x, y, hue, ph, size = row
            on = 0.5 + 0.5 * np.sin(2 * np.pi * bg["flash_hz"] * t + 6.28 * ph)
            col = np.array([0.6 + 0.4 * hue, 0.9 - 0.5 * hue, 0.3 + 0.7 * (1 - hue)], np.float32)
            pose = _Pose(
                np.full(n, x * W, np.float32),
                np.full(n, y * 0.6 * H, np.float32),
                np.full(n, (0.02 + 0.02 * size) * W + 1.0, np.float32),
                *(np.zeros(n, np.float32),) * 3,
            )
            pt = _Painter(cv, pose, -1)
            glow = (0.25 + 0.75 * on)[:, None, None, None].astype(np.float32)
            got = pt.local(0.0, 0.0, 0.0, 2.5)
            if got is not None:
                bx, lu, lv = got
                rr = np.sqrt(lu**2 + lv**2)
                a = np.clip(1.2 - rr * 0.5, 0, 1) ** 2 * on[:, None, None] * 0.8
                cv.blend(bx, a.astype(np.float32), col)
                disc = np.clip(0.5 - (rr - 1.0) * pose.s[:, None, None], 0, 1).astype(np.float32)
                cv.blend(bx, disc, np.clip(col * glow, 0, 1))
        cv.img *= (0.55 + 0.6 * pulse)[:, None, None, None]
    img = cv.img
    if sketch:
        g = img @ np.array([0.299, 0.587, 0.114], np.float32)
        img = (0.8 + 0.18 * g)[..., None] * np.array([1.0, 0.99, 0.96], np.float32)
    return np.clip(img, 0, 1)


def render_background(bg: dict, n: int, H: int, W: int, frame0: int = 0) -> Array:
    """Background frames float [n, H, W, 3] of a background dict (``bg["photo"]``: photo base)."""
    return _render_background(bg, n, H, W, frame0)


# ----------------------------------------------------------------------------- characters
def _darker(c: Array | list[float], k: float) -> Array:
    return np.clip(np.asarray(c, np.float32) * k, 0, 1)


def _draw_character(cv: _Canvas, ch: CharacterTrack, idx: int, light: tuple[float, float]) -> None:
    idn = ch.identity
    st = idn.style
    pose = _Pose(ch.cx, ch.cy, ch.s, ch.roll, ch.yaw, ch.pitch)
    pt = _Painter(cv, pose, idx, aa=1.0)
    asp = idn.aspect
    skin = np.array(idn.skin, np.float32)
    hair = np.array(idn.hair, np.float32)
    f3 = (slice(None), None, None)
    anime, sketch, real = st == "anime", st == "sketch", st == "realistic"
    line = np.array([0.12, 0.1, 0.12], np.float32) if anime else np.array([0.32, 0.32, 0.34], np.float32)
    ol = line if not real else None
    lx, ly = light
    texs = ch.textures

    def shade_face(u: Array, v: Array) -> Array:
        if not real:
            return np.ones_like(u)
        return np.clip(1.02 + 0.09 * (u * lx + v / asp * ly) - 0.08 * (u * u + (v / asp) ** 2), 0.82, 1.1)

    def shade_round(u: Array, v: Array) -> Array:
        if not real:
            return np.ones_like(u)
        return np.clip(1.0 + 0.15 * (u * lx + v * ly) - 0.1 * (u * u + v * v), 0.7, 1.15)

    def hatch(u: Array, v: Array) -> Array:
        if sketch:
            return 1.0 + 0.25 * (np.sin((u + v) * 40.0) > 0.2)
        return shade_round(u, v)

    e = ch.emotion_amount
    emo = ch.emotion
    smile = e * (emo == "smile")
    frown = e * (emo == "frown")
    surp = e * (emo == "surprise")

    # --- body and neck (drawn first, behind the head)
    shirt = np.array(idn.shirt, np.float32) if not sketch else np.array([0.93, 0.93, 0.91], np.float32)
    pt.draw(
        0.0,
        asp + 1.75,
        2.8,
        lambda u, v: sd_box(u, v, 1.85, 1.3, 1.0),
        shirt,
        depth=-0.2,
        outline=ol,
        lw=1.0,
        shade=shade_round,
        face=False,
        tex=texs.get("shirt"),
    )
    pt.draw(
        0.0,
        asp * 0.9,
        0.9,
        lambda u, v: sd_box(u, v, 0.42, 0.55, 0.15),
        _darker(skin, 0.85),
        depth=-0.1,
        outline=ol,
        lw=1.0,
        face=False,
    )
    if not sketch:
        pt.draw(
            0.0,
            asp + 0.48,
            0.5,
            lambda u, v: sd_ellipse(u, v, 0.34, 0.14),
            _darker(shirt, 0.7),
            depth=-0.2,
            face=False,
        )

    # --- back hair
    hs = idn.hair_style
    hair_ol = _darker(hair, 0.6) if not sketch else line
    if hs == "long":
        pt.draw(
            0.0,
            0.15 * asp,
            2.2,
            lambda u, v: sd_box(u, v, 1.22, 1.3 * asp, 0.8),
            hair,
            depth=-0.3,
            outline=hair_ol,
            shade=hatch,
            face=False,
            tex=texs.get("hair"),
        )
    elif hs == "bob":
        pt.draw(
            0.0,
            -0.05 * asp,
            1.8,
            lambda u, v: np.maximum(sd_ellipse(u, v, 1.22, 1.1 * asp), v - 0.75 * asp),
            hair,
            depth=-0.3,
            outline=hair_ol,
            shade=hatch,
            face=False,
            tex=texs.get("hair"),
        )
    elif hs == "bun":
        pt.draw(
            0.0,
            -1.15 * asp,
            0.7,
            lambda u, v: sd_ellipse(u, v, 0.42, 0.38),
            hair,
            depth=-0.3,
            outline=hair_ol,
            shade=hatch,
            face=False,
            tex=texs.get("hair"),
        )
    if hs != "bald":
        pt.draw(
            0.0,
            -0.12 * asp,
            1.6,
            lambda u, v: np.maximum(sd_ellipse(u, v, 1.1, 1.0 * asp), v - 0.15 * asp),
            hair,
            depth=-0.3,
            outline=hair_ol,
            shade=hatch,
            face=False,
            tex=texs.get("hair"),
        )

    # --- ears
    for sgn in (-1.0, 1.0):
        pt.draw(
            sgn * 0.97,
            0.05 * asp,
            0.4,
            lambda u, v: sd_ellipse(u, v, 0.16, 0.24),
            _darker(skin, 0.92),
            depth=-0.4,
            outline=ol,
            lw=1.0,
            face=True,
        )
        if idn.earrings:
            pt.draw(
                sgn * 1.0,
                0.05 * asp + 0.3,
                0.2,
                lambda u, v: sd_ellipse(u, v, 0.07, 0.07),
                np.array(idn.accent, np.float32),
                depth=-0.4,
                face=True,
            )

    # --- face: an ellipse whose lower half narrows toward the chin
    jaw = 0.18 + 0.3 * idn.jaw

    def face_sdf(u: Array, v: Array) -> Array:
        squeeze = 1.0 - jaw * np.clip(v / asp, 0, 1) ** 2
        return sd_ellipse(u / squeeze, v, 1.0, asp) * np.minimum(squeeze, 1.0)

    pt.draw(
        0.0,
        0.0,
        1.2 * asp,
        face_sdf,
        skin,
        depth=0.0,
        outline=ol,
        lw=1.2 if anime else 1.0,
        shade=shade_face,
        face=True,
        tex=texs.get("skin"),
    )
    if anime:  # blush
        for sgn in (-1.0, 1.0):
            pt.draw(
                sgn * 0.55,
                0.32 * asp,
                0.3,
                lambda u, v: sd_ellipse(u, v, 0.2, 0.09),
                np.array([1.0, 0.55, 0.6], np.float32),
                face=True,
                opacity=0.35,
            )

    # --- eyes
    ey = idn.eye_y * asp
    ew, eh0 = idn.eye_w, idn.eye_h
    eh = (eh0 * (1.0 + 0.35 * surp - 0.25 * smile))[f3]
    blink = ch.blink[f3]
    bt = idn.brow_thick
    for sgn in (-1.0, 1.0):
        u0 = sgn * idn.eye_sep

        def eye_sdf(u: Array, v: Array, _eh: Array = eh) -> Array:
            return sd_ellipse(u, v, ew, _eh)

        white = np.array([0.97, 0.97, 0.97], np.float32)
        pt.draw(
            u0,
            ey,
            ew + 0.05,
            eye_sdf,
            white,
            outline=line if not real else _darker(skin, 0.45),
            lw=1.0,
            face=True,
        )
        ir = (0.55 if anime else 0.6) * min(ew, eh0 * (1.0 if anime else 1.2))
        iris = np.array(idn.iris, np.float32)
        # iris looks where the head turns, clipped to the eye
        look = -ch.yaw[f3] * 0.02

        def iris_sdf(u: Array, v: Array, _eh: Array = eh, _ir: float = ir, _look: Array = look) -> Array:
            return np.maximum(
                sd_ellipse(u - _look, v, _ir, _ir * (1.25 if anime else 1.0)), sd_ellipse(u, v, ew, _eh)
            )

        pt.draw(
            u0,
            ey,
            ew + 0.05,
            iris_sdf,
            iris if not sketch else np.array([0.4, 0.4, 0.42], np.float32),
            face=True,
        )
        pt.draw(
            u0,
            ey,
            ew + 0.05,
            lambda u, v, _ir=ir, _eh=eh, _lk=look: np.maximum(
                sd_ellipse(u - _lk, v, _ir * 0.5, _ir * 0.55), sd_ellipse(u, v, ew, _eh)
            ),
            np.array([0.05, 0.05, 0.06], np.float32),
            face=True,
        )
        if anime:
            pt.draw(
                u0 + 0.3 * ir,
                ey - 0.35 * ir,
                ir,
                lambda u, v, _ir=ir: sd_ellipse(u, v, 0.3 * _ir, 0.3 * _ir),
                np.array([1.0, 1.0, 1.0], np.float32),
                face=True,
            )

        # eyelid: skin covering the eye from the top as blink -> 1
        def lid_sdf(u: Array, v: Array, _eh: Array = eh) -> Array:
            return np.maximum(sd_ellipse(u, v, ew * 1.05, _eh * 1.1), v - (-_eh * 1.1 + 2.25 * _eh * blink))

        pt.draw(u0, ey, ew + 0.06, lid_sdf, _darker(skin, 0.95), shade=shade_face, face=True)
        lash = np.array([0.08, 0.07, 0.08], np.float32) if not sketch else line
        pt.draw(
            u0,
            ey,
            ew + 0.08,
            lambda u, v, _eh=eh: sd_segment(
                u,
                v + _eh * 0.9 - 2.0 * _eh * blink - 0.35 * u * u / ew,
                -ew * 1.02,
                0.0,
                ew * 1.02,
                0.0,
                0.012 if not anime else 0.025,
            ),
            lash,
            face=True,
        )
        # brows: raised by surprise, lowered and angled inward by frown
        by = ey - eh0 * (1.6 if anime else 2.2) - 0.12 - 0.16 * surp + 0.06 * frown
        tilt = (0.35 * frown - 0.15 * surp)[f3] * sgn
        brow_col = _darker(hair, 0.8) if not sketch else line
        pt.draw(
            u0,
            by,
            ew + 0.15,
            lambda u, v, _t=tilt: sd_segment(
                u, v - _t * u + 0.5 * u * u, -ew * 1.05, 0.0, ew * 1.05, 0.0, bt
            ),
            brow_col,
            face=True,
        )

    # --- nose
    nl = idn.nose_len
    if real:
        pt.draw(
            0.05 * lx,
            0.06 * asp,
            nl,
            lambda u, v: sd_ellipse(u, v, 0.09, nl * 0.8),
            _darker(skin, 0.9),
            depth=1.2,
            face=True,
            opacity=0.6,
        )
        for sgn in (-1.0, 1.0):
            pt.draw(
                sgn * 0.07,
                0.06 * asp + nl * 0.7,
                0.08,
                lambda u, v: sd_ellipse(u, v, 0.035, 0.022),
                _darker(skin, 0.6),
                depth=1.2,
                face=True,
            )
    else:
        pt.draw(
            0.0,
            0.08 * asp,
            nl,
            lambda u, v: sd_segment(u, v, 0.0, -nl * 0.4, 0.06, nl * 0.5, 0.012),
            line if sketch else _darker(skin, 0.7),
            depth=1.2,
            face=True,
        )

    # --- mouth: lips, dark interior (its height is the opening), teeth
    my = idn.mouth_y * asp
    iw = (idn.mouth_w * (0.82 + 0.36 * ch.mouth_width) * (1.0 + 0.12 * smile - 0.12 * surp))[f3]
    ih = (MOUTH_IH0 + MOUTH_IH * ch.opening)[f3]
    drop = ih * MOUTH_DROP
    bend = (0.9 * smile - 0.8 * frown)[f3]  # >0: corners up
    lip = np.array(idn.lip, np.float32)

    def curved(u: Array, v: Array) -> Array:
        return v + bend * u * u / np.maximum(iw, 0.05) * 0.6

    def lips_sdf(u: Array, v: Array) -> Array:
        return sd_ellipse(u, curved(u, v) - drop, iw + 0.05, ih + 0.055)

    def inner_sdf(u: Array, v: Array) -> Array:
        return sd_ellipse(u, curved(u, v) - drop, iw, ih)

    mb = 0.55
    pt.draw(
        0.0,
        my,
        mb,
        lips_sdf,
        lip if not sketch else np.array([0.9, 0.88, 0.86], np.float32),
        outline=_darker(lip, 0.8) if not sketch else np.array([0.6, 0.6, 0.62], np.float32),
        lw=0.8,
        face=True,
    )
    interior = (
        np.array([0.22, 0.04, 0.06], np.float32) if not sketch else np.array([0.12, 0.12, 0.13], np.float32)
    )
    pt.draw(0.0, my, mb, inner_sdf, interior, face=True)
    if not sketch:  # upper teeth: a fixed fraction of the opening, so dark area stays linear in it
        pt.draw(
            0.0,
            my,
            mb,
            lambda u, v: np.maximum(inner_sdf(u, v), curved(u, v) - drop + 0.6 * ih),
            np.array([0.95, 0.94, 0.9], np.float32),
            face=True,
        )

    # --- front hair (fringe) and accessories
    if hs in ("short", "long", "bob", "bun"):
        wav = 0.06 + 0.05 * (idn.identity_id % 3)

        def fringe(u: Array, v: Array) -> Array:
            cap = sd_ellipse(u, v, 1.04, 0.62 * asp)
            edge = v - (0.0 + wav * np.cos(u * 7.0) - 0.25 * u * u)
            return np.maximum(cap, edge)

        pt.draw(
            0.0, -0.52 * asp, 1.2 * asp, fringe, hair, depth=0.1, outline=hair_ol, shade=hatch, face=False,
            tex=texs.get("hair"),
        )
    elif hs == "spiky":
        spikes = []
        for i in range(7):
            x = -0.95 + i * 0.32
            spikes.append(
                [(x - 0.22, -1.0 * asp), (x + 0.2, -1.0 * asp), (x + 0.03, -0.42 * asp + 0.08 * (i % 2))][
                    ::-1
                ]
            )

        def spiky(u: Array, v: Array) -> Array:
            d = np.maximum(sd_ellipse(u, v + 0.15 * asp, 1.06, 0.95 * asp), v + 0.55 * asp)
            for tri in spikes:
                d = np.minimum(d, sd_polygon(u, v, tri))
            for i in range(5):
                x = -0.8 + i * 0.4
                d = np.minimum(
                    d, sd_polygon(u, v, [(x + 0.25, -0.8 * asp), (x, -1.28 * asp), (x - 0.25, -0.8 * asp)])
                )
            return d

        pt.draw(
            0.0, 0.0, 1.45 * asp, spiky, hair, depth=0.1, outline=hair_ol, shade=hatch, face=False,
            tex=texs.get("hair"),
        )
    if idn.hat:
        hat_col = np.array(idn.accent, np.float32) if not sketch else np.array([0.8, 0.8, 0.8], np.float32)
        pt.draw(
            0.0,
            -0.92 * asp,
            1.3,
            lambda u, v: sd_box(u, v, 0.9, 0.38, 0.25),
            hat_col,
            depth=0.05,
            outline=ol if ol is not None else _darker(hat_col, 0.6),
            shade=shade_round,
            face=False,
        )
        pt.draw(
            0.0,
            -0.62 * asp,
            1.5,
            lambda u, v: sd_ellipse(u, v, 1.3, 0.13),
            _darker(hat_col, 0.8),
            depth=0.05,
            outline=ol,
            face=False,
        )
    if idn.glasses:
        gcol = np.array([0.1, 0.1, 0.12], np.float32) if not anime else _darker(idn.accent, 0.5)
        gr = ew * 1.35
        for sgn in (-1.0, 1.0):
            pt.draw(
                sgn * idn.eye_sep,
                ey,
                gr + 0.1,
                lambda u, v, _g=gr: np.abs(sd_ellipse(u, v, _g, _g * 0.8)) - 0.018,
                gcol,
                face=True,
            )
        pt.draw(
            0.0,
            ey - 0.02,
            idn.eye_sep,
            lambda u, v: sd_segment(u, v, -(idn.eye_sep - gr), 0.0, idn.eye_sep - gr, 0.0, 0.018),
            gcol,
            face=True,
        )


# ----------------------------------------------------------------------------- ground truth
def face_box(ch: CharacterTrack) -> Array:
    """[F, 4] (x0, y0, x1, y1) pixel box of the face ellipse (ears and hair excluded)."""
    a, b = ch.s, ch.s * ch.identity.aspect
    c, s = np.cos(ch.roll), np.sin(ch.roll)
    ex = np.sqrt((a * c) ** 2 + (b * s) ** 2)
    ey = np.sqrt((a * s) ** 2 + (b * c) ** 2)
    return np.stack([ch.cx - ex, ch.cy - ey, ch.cx + ex, ch.cy + ey], 1).astype(np.float32)


def mouth_box(ch: CharacterTrack) -> Array:
    """[F, 4] pixel box the mouth interior would fill at full opening in that frame's pose.

    ``mouth.measure_mouth_opening(frame, mouth_box)`` reads the opening back from pixels.
    """
    idn = ch.identity
    pose = _Pose(ch.cx, ch.cy, ch.s, ch.roll, ch.yaw, ch.pitch)
    smile = ch.emotion_amount * (ch.emotion == "smile")
    surp = ch.emotion_amount * (ch.emotion == "surprise")
    iw = idn.mouth_w * (0.82 + 0.36 * ch.mouth_width) * (1.0 + 0.12 * smile - 0.12 * surp)
    ih = MOUTH_IH0 + MOUTH_IH
    cy = idn.mouth_y * idn.aspect + ih * MOUTH_DROP
    px, py = pose.place(np.zeros_like(ch.cx), np.full_like(ch.cx, cy), 1.0)
    c, s = np.abs(np.cos(ch.roll)), np.abs(np.sin(ch.roll))
    hx = ch.s * (iw * c + ih * s)
    hy = ch.s * (iw * s + ih * c)
    return np.stack([px - hx, py - hy, px + hx, py + hy], 1).astype(np.float32)


def _slice_track(ch: CharacterTrack, a: int, b: int) -> CharacterTrack:
    kw = {k: (v[a:b] if isinstance(v, np.ndarray) else v) for k, v in vars(ch).items()}
    return CharacterTrack(**kw)


def _render_frames(scene: Scene, a: int, b: int) -> tuple[Array, Array]:
    img = _render_background(scene.background, b - a, scene.height, scene.width, frame0=a)
    cv = _Canvas(img)
    # draw far (small) characters first so nearer ones occlude them
    order = sorted(range(len(scene.chars)), key=lambda i: float(scene.chars[i].s[0]))
    for i in order:
        _draw_character(cv, _slice_track(scene.chars[i], a, b), i, scene.light)
    frames = (np.clip(cv.img, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    masks = np.stack([cv.owner == k for k in range(len(scene.chars))], axis=1)
    return frames, masks


def render_scene(scene: Scene, chunk: int = 64) -> tuple[Array, dict[str, Array]]:
    """Render all frames (uint8 [F, H, W, 3]) and the per-frame ground truth.

    Ground truth keys: ``face_masks`` [F, K, H, W] bool (visible face of each character),
    ``speaker_mask`` [H, W] bool (union over frames of the speaker's face: the paper's M_face),
    ``face_box`` / ``mouth_box`` [F, K, 4], ``head_pos`` [F, K, 2], ``head_pose`` [F, K, 3]
    (yaw, pitch, roll), ``face_size`` [F, K] (half width px), ``blink`` [F, K],
    ``mouth_open`` / ``mouth_width`` [F] (speaker) and ``char_mouth_open`` [F, K],
    ``emotion_amount`` [F]. Rendering is per-frame independent, so ``chunk`` only bounds memory.
    """
    n = scene.num_frames
    # frames are independent given the scene: render in chunks to bound memory on long clips
    parts = [_render_frames(scene, a, min(a + chunk, n)) for a in range(0, n, chunk)]
    frames = np.concatenate([p[0] for p in parts])
    masks = np.concatenate([p[1] for p in parts])
    sp = scene.chars[scene.speaker]
    gt = {
        "face_masks": masks,
        "speaker_mask": masks[:, scene.speaker].any(axis=0),
        "face_box": np.stack([face_box(c) for c in scene.chars], 1),
        "mouth_box": np.stack([mouth_box(c) for c in scene.chars], 1),
        "head_pos": np.stack([np.stack([c.cx, c.cy], 1) for c in scene.chars], 1).astype(np.float32),
        "head_pose": np.stack([np.stack([c.yaw, c.pitch, c.roll], 1) for c in scene.chars], 1).astype(
            np.float32
        ),
        "face_size": np.stack([c.s for c in scene.chars], 1).astype(np.float32),
        "blink": np.stack([c.blink for c in scene.chars], 1).astype(np.float32),
        "mouth_open": sp.opening.astype(np.float32),
        "mouth_width": sp.mouth_width.astype(np.float32),
        "char_mouth_open": np.stack([c.opening for c in scene.chars], 1).astype(np.float32),
        "emotion_amount": sp.emotion_amount.astype(np.float32),
    }
    return frames, gt
