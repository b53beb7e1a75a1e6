"""Procedural talking-head world: identities, scenes, backgrounds, rendering and ground truth.

Pure numpy: shapes are anti-aliased signed distance functions painted on a float canvas for all
frames at once (``sdf_canvas``); characters are drawn part by part by ``character_painter``.

The renderer also returns the ground truth the evaluator needs (face / mouth boxes, face masks,
speaker mask, pose, blinks) -- see ``render_scene``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from training.data.character_painter import (
    MOUTH_DROP,
    MOUTH_IH,
    MOUTH_IH0,
    draw_character,
    emotion_weights,
    mouth_half_width,
)
from training.data.head_rhythm import speech_rhythm
from training.data.mouth import FPS, LUMA
from training.data.sdf_canvas import Array, Canvas, Painter, Pose, sd_box, sd_ellipse

STYLES = ("realistic", "anime", "sketch")
HAIR_STYLES = ("short", "long", "bob", "bun", "bald", "spiky")



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
    lum = float(lip @ LUMA)
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
    backgrounds: tuple[str, ...] = ("static", "leaves", "lights")  # prompt controls drawn from these
    # share of animated-photo clips whose photo smiles open (gap > OPEN_MOUTH of its width) that keep
    # that open mouth on frame 0 (photo_face.PhotoFaceScene.open_portrait)
    photo_open_portraits: float = 0.0
    photo_greyscale: float = 0.0  # share of animated-photo clips rendered as greyscale prints


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

    def pose(self) -> Pose:
        """The head's per-frame placement as the transform its face coordinates are drawn with."""
        return Pose(self.cx, self.cy, self.s, self.roll, self.yaw, self.pitch)


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
    and develop over the clip: emotion ramps in, nods / shakes follow the voice (head_rhythm), still on frame 0.
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
        if action in ("nodding", "shaking"):  # pitch and a bob, or yaw and a sway, on the voice's emphasis
            a = rng.uniform(0.7, 1.0)
            osc = speech_rhythm(opening, FPS)
            if action == "nodding":
                pitch, dy = a * osc, 0.10 * s * a * osc
            else:
                yaw, dx = a * osc, 0.08 * s * a * osc
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
    cv = Canvas(img)
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
            pose = Pose(
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
            pt = Painter(cv, pose, -1)
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
            pose = Pose(
                np.full(n, x * W, np.float32),
                np.full(n, y * 0.6 * H, np.float32),
                np.full(n, (0.02 + 0.02 * size) * W + 1.0, np.float32),
                *(np.zeros(n, np.float32),) * 3,
            )
            pt = Painter(cv, pose, -1)
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
        g = img @ LUMA
        img = (0.8 + 0.18 * g)[..., None] * np.array([1.0, 0.99, 0.96], np.float32)
    return np.clip(img, 0, 1)


def render_background(bg: dict, n: int, H: int, W: int, frame0: int = 0) -> Array:
    """Background frames float [n, H, W, 3] of a background dict (``bg["photo"]``: photo base)."""
    return _render_background(bg, n, H, W, frame0)


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
    pose = ch.pose()
    smile, _, surp = emotion_weights(ch)
    iw = mouth_half_width(ch, smile, surp)
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
    cv = Canvas(img)
    # draw far (small) characters first so nearer ones occlude them
    order = sorted(range(len(scene.chars)), key=lambda i: float(scene.chars[i].s[0]))
    for i in order:
        draw_character(cv, _slice_track(scene.chars[i], a, b), i, scene.light)
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
