"""The character painter: one talking character drawn part by part, back to front.

``draw_character`` is the whole sequence; each ``paint_*`` function draws one named part in face
coordinates (unit = face half width, v pointing down) with the character's ``Painter``. What the
parts share (colours, line style, light, emotion weights) is worked out once in ``CharacterLook``.
The draw order is the occlusion order, so changing it changes pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from training.data.sdf_canvas import (
    Array,
    Canvas,
    Painter,
    Sdf,
    darker,
    sd_box,
    sd_ellipse,
    sd_polygon,
    sd_segment,
)

if TYPE_CHECKING:
    from training.data.render import CharacterTrack, Identity

# Mouth geometry in face units (face half-width = 1). The interior is an ellipse of half height
# MOUTH_IH0 + MOUTH_IH * opening; its vertical centre drops with the jaw.
MOUTH_IH0 = 0.006
MOUTH_IH = 0.13
MOUTH_DROP = 0.35

_F3 = (slice(None), None, None)  # a per-frame [F] array -> [F, 1, 1], to broadcast over pixels


def emotion_weights(ch: CharacterTrack) -> tuple[Array, Array, Array]:
    """Per-frame (smile, frown, surprise) strength: the emotion's ramp on its own channel, 0 elsewhere."""
    e, emo = ch.emotion_amount, ch.emotion
    return e * (emo == "smile"), e * (emo == "frown"), e * (emo == "surprise")


def mouth_half_width(ch: CharacterTrack, smile: Array, surp: Array) -> Array:
    """[F] half width of the mouth interior: the lips' width control, widened by a smile, narrowed by
    surprise. Shared with ``render.mouth_box`` so the ground-truth box matches the drawn mouth."""
    return ch.identity.mouth_w * (0.82 + 0.36 * ch.mouth_width) * (1.0 + 0.12 * smile - 0.12 * surp)


@dataclass
class CharacterLook:
    """What every part of one character shares, worked out once so each part reads it by name."""

    idn: Identity
    pt: Painter
    asp: float  # face half height / half width
    skin: Array
    hair: Array
    anime: bool
    sketch: bool
    real: bool
    line: Array  # ink of the drawn styles (eyes, sketch strokes)
    ol: Array | None  # outline of skin and clothes; realistic faces have none
    hair_ol: Array
    lx: float  # light direction in face coordinates
    ly: float
    textures: dict  # part -> photo multiplier patch (render.apply_photo_textures)
    smile: Array
    frown: Array
    surp: Array

    @classmethod
    def of(cls, cv: Canvas, ch: CharacterTrack, idx: int, light: tuple[float, float]) -> CharacterLook:
        """The look of character ``ch`` (owner id ``idx`` in the face masks) under ``light``."""
        idn = ch.identity
        anime, sketch, real = idn.style == "anime", idn.style == "sketch", idn.style == "realistic"
        line = np.array([0.12, 0.1, 0.12], np.float32) if anime else np.array([0.32, 0.32, 0.34], np.float32)
        hair = np.array(idn.hair, np.float32)
        smile, frown, surp = emotion_weights(ch)
        return cls(
            idn=idn,
            pt=Painter(cv, ch.pose(), idx, aa=1.0),
            asp=idn.aspect,
            skin=np.array(idn.skin, np.float32),
            hair=hair,
            anime=anime,
            sketch=sketch,
            real=real,
            line=line,
            ol=line if not real else None,
            hair_ol=darker(hair, 0.6) if not sketch else line,
            lx=light[0],
            ly=light[1],
            textures=ch.textures,
            smile=smile,
            frown=frown,
            surp=surp,
        )

    def shade_face(self, u: Array, v: Array) -> Array:
        """Light falloff over the face ellipse (realistic style only; flat elsewhere)."""
        if not self.real:
            return np.ones_like(u)
        asp, lx, ly = self.asp, self.lx, self.ly
        return np.clip(1.02 + 0.09 * (u * lx + v / asp * ly) - 0.08 * (u * u + (v / asp) ** 2), 0.82, 1.1)

    def shade_round(self, u: Array, v: Array) -> Array:
        """Light falloff over a round part in its own unit frame (realistic style only)."""
        if not self.real:
            return np.ones_like(u)
        lx, ly = self.lx, self.ly
        return np.clip(1.0 + 0.15 * (u * lx + v * ly) - 0.1 * (u * u + v * v), 0.7, 1.15)

    def hatch(self, u: Array, v: Array) -> Array:
        """Hair shading: pencil hatching in sketches, round shading otherwise."""
        if self.sketch:
            return 1.0 + 0.25 * (np.sin((u + v) * 40.0) > 0.2)
        return self.shade_round(u, v)


@dataclass
class EyeGeometry:
    """Where and how big the eyes are; shared by eyes, brows and glasses."""

    y: float  # centre height
    w: float  # half width
    h0: float  # half height at rest
    h: Array  # [F, 1, 1] half height after the emotion
    iris_r: float
    blink: Array  # [F, 1, 1] lid closure 0..1
    look: Array  # [F, 1, 1] iris shift: the eyes look where the head turns

    @classmethod
    def of(cls, lk: CharacterLook, ch: CharacterTrack) -> EyeGeometry:
        """The eyes of ``ch``: identity proportions, opened by surprise, narrowed by a smile."""
        idn = lk.idn
        ew, eh0 = idn.eye_w, idn.eye_h
        return cls(
            y=idn.eye_y * lk.asp,
            w=ew,
            h0=eh0,
            h=(eh0 * (1.0 + 0.35 * lk.surp - 0.25 * lk.smile))[_F3],
            iris_r=(0.55 if lk.anime else 0.6) * min(ew, eh0 * (1.0 if lk.anime else 1.2)),
            blink=ch.blink[_F3],
            look=-ch.yaw[_F3] * 0.02,
        )


def draw_character(cv: Canvas, ch: CharacterTrack, idx: int, light: tuple[float, float]) -> None:
    """Paint character ``ch`` onto ``cv`` back to front; ``idx`` is its id in the face masks."""
    lk = CharacterLook.of(cv, ch, idx, light)
    paint_body(lk)
    paint_back_hair(lk)
    paint_ears(lk)
    paint_face(lk)
    eyes = EyeGeometry.of(lk, ch)
    for side in (-1.0, 1.0):
        paint_eye(lk, eyes, side)
        paint_brow(lk, eyes, side)
    paint_nose(lk)
    paint_mouth(lk, ch)
    paint_front_hair(lk)
    if lk.idn.hat:
        paint_hat(lk)
    if lk.idn.glasses:
        paint_glasses(lk, eyes)


def _paint_pair(pt: Painter, x: float, v0: float, bound: float, sdf: Sdf, fill: Array, **style: Any) -> None:
    """A left-right mirrored pair of one face part (at u = -x, then u = +x), e.g. cheeks, nostrils."""
    for sgn in (-1.0, 1.0):
        pt.draw(sgn * x, v0, bound, sdf, fill, face=True, **style)


def paint_body(lk: CharacterLook) -> None:
    """Shirt, neck and collar shadow: drawn first, behind the head."""
    pt, asp = lk.pt, lk.asp
    shirt = np.array(lk.idn.shirt, np.float32) if not lk.sketch else np.array([0.93, 0.93, 0.91], np.float32)
    pt.draw(
        0.0,
        asp + 1.75,
        2.8,
        lambda u, v: sd_box(u, v, 1.85, 1.3, 1.0),
        shirt,
        depth=-0.2,
        outline=lk.ol,
        lw=1.0,
        shade=lk.shade_round,
        face=False,
        tex=lk.textures.get("shirt"),
    )
    pt.draw(
        0.0,
        asp * 0.9,
        0.9,
        lambda u, v: sd_box(u, v, 0.42, 0.55, 0.15),
        darker(lk.skin, 0.85),
        depth=-0.1,
        outline=lk.ol,
        lw=1.0,
        face=False,
    )
    if not lk.sketch:
        pt.draw(
            0.0,
            asp + 0.48,
            0.5,
            lambda u, v: sd_ellipse(u, v, 0.34, 0.14),
            darker(shirt, 0.7),
            depth=-0.2,
            face=False,
        )


def _paint_hair(lk: CharacterLook, v0: float, bound: float, sdf: Sdf, depth: float) -> None:
    """One hair mass: hair colour, hair outline, hatch shading, hair texture, never face."""
    lk.pt.draw(
        0.0,
        v0,
        bound,
        sdf,
        lk.hair,
        depth=depth,
        outline=lk.hair_ol,
        shade=lk.hatch,
        face=False,
        tex=lk.textures.get("hair"),
    )


def paint_back_hair(lk: CharacterLook) -> None:
    """Hair behind the head: the style's extra mass (long / bob / bun), then the skull cap."""
    hs, asp = lk.idn.hair_style, lk.asp
    if hs == "long":
        _paint_hair(lk, 0.15 * asp, 2.2, lambda u, v: sd_box(u, v, 1.22, 1.3 * asp, 0.8), -0.3)
    elif hs == "bob":
        _paint_hair(
            lk,
            -0.05 * asp,
            1.8,
            lambda u, v: np.maximum(sd_ellipse(u, v, 1.22, 1.1 * asp), v - 0.75 * asp),
            -0.3,
        )
    elif hs == "bun":
        _paint_hair(lk, -1.15 * asp, 0.7, lambda u, v: sd_ellipse(u, v, 0.42, 0.38), -0.3)
    if hs != "bald":
        _paint_hair(
            lk,
            -0.12 * asp,
            1.6,
            lambda u, v: np.maximum(sd_ellipse(u, v, 1.1, 1.0 * asp), v - 0.15 * asp),
            -0.3,
        )


def paint_ears(lk: CharacterLook) -> None:
    """Both ears, each with its earring when the identity wears them."""
    pt, asp = lk.pt, lk.asp
    for sgn in (-1.0, 1.0):
        pt.draw(
            sgn * 0.97,
            0.05 * asp,
            0.4,
            lambda u, v: sd_ellipse(u, v, 0.16, 0.24),
            darker(lk.skin, 0.92),
            depth=-0.4,
            outline=lk.ol,
            lw=1.0,
            face=True,
        )
        if lk.idn.earrings:
            pt.draw(
                sgn * 1.0,
                0.05 * asp + 0.3,
                0.2,
                lambda u, v: sd_ellipse(u, v, 0.07, 0.07),
                np.array(lk.idn.accent, np.float32),
                depth=-0.4,
                face=True,
            )


def paint_face(lk: CharacterLook) -> None:
    """The face: an ellipse whose lower half narrows toward the chin; anime faces blush."""
    pt, asp = lk.pt, lk.asp
    jaw = 0.18 + 0.3 * lk.idn.jaw

    def face_sdf(u: Array, v: Array) -> Array:
        squeeze = 1.0 - jaw * np.clip(v / asp, 0, 1) ** 2
        return sd_ellipse(u / squeeze, v, 1.0, asp) * np.minimum(squeeze, 1.0)

    pt.draw(
        0.0,
        0.0,
        1.2 * asp,
        face_sdf,
        lk.skin,
        depth=0.0,
        outline=lk.ol,
        lw=1.2 if lk.anime else 1.0,
        shade=lk.shade_face,
        face=True,
        tex=lk.textures.get("skin"),
    )
    if lk.anime:
        blush = np.array([1.0, 0.55, 0.6], np.float32)
        _paint_pair(pt, 0.55, 0.32 * asp, 0.3, lambda u, v: sd_ellipse(u, v, 0.2, 0.09), blush, opacity=0.35)


def paint_eye(lk: CharacterLook, eyes: EyeGeometry, sgn: float) -> None:
    """One eye (``sgn`` -1 left, +1 right): white, iris, pupil, anime highlight, blinking lid, lashes."""
    pt, anime = lk.pt, lk.anime
    u0, ey = sgn * lk.idn.eye_sep, eyes.y
    ew, eh, ir, look, blink = eyes.w, eyes.h, eyes.iris_r, eyes.look, eyes.blink

    def eye_sdf(u: Array, v: Array) -> Array:
        return sd_ellipse(u, v, ew, eh)

    white = np.array([0.97, 0.97, 0.97], np.float32)
    pt.draw(
        u0,
        ey,
        ew + 0.05,
        eye_sdf,
        white,
        outline=lk.line if not lk.real else darker(lk.skin, 0.45),
        lw=1.0,
        face=True,
    )

    def iris_sdf(u: Array, v: Array) -> Array:  # clipped to the eye
        return np.maximum(
            sd_ellipse(u - look, v, ir, ir * (1.25 if anime else 1.0)), sd_ellipse(u, v, ew, eh)
        )

    pt.draw(
        u0,
        ey,
        ew + 0.05,
        iris_sdf,
        np.array(lk.idn.iris, np.float32) if not lk.sketch else np.array([0.4, 0.4, 0.42], np.float32),
        face=True,
    )
    pt.draw(
        u0,
        ey,
        ew + 0.05,
        lambda u, v: np.maximum(sd_ellipse(u - look, v, ir * 0.5, ir * 0.55), sd_ellipse(u, v, ew, eh)),
        np.array([0.05, 0.05, 0.06], np.float32),
        face=True,
    )
    if anime:
        pt.draw(
            u0 + 0.3 * ir,
            ey - 0.35 * ir,
            ir,
            lambda u, v: sd_ellipse(u, v, 0.3 * ir, 0.3 * ir),
            np.array([1.0, 1.0, 1.0], np.float32),
            face=True,
        )

    def lid_sdf(u: Array, v: Array) -> Array:  # skin covering the eye from the top as blink -> 1
        return np.maximum(sd_ellipse(u, v, ew * 1.05, eh * 1.1), v - (-eh * 1.1 + 2.25 * eh * blink))

    pt.draw(u0, ey, ew + 0.06, lid_sdf, darker(lk.skin, 0.95), shade=lk.shade_face, face=True)
    lash = np.array([0.08, 0.07, 0.08], np.float32) if not lk.sketch else lk.line
    pt.draw(
        u0,
        ey,
        ew + 0.08,
        lambda u, v: sd_segment(
            u,
            v + eh * 0.9 - 2.0 * eh * blink - 0.35 * u * u / ew,
            -ew * 1.02,
            0.0,
            ew * 1.02,
            0.0,
            0.012 if not anime else 0.025,
        ),
        lash,
        face=True,
    )


def paint_brow(lk: CharacterLook, eyes: EyeGeometry, sgn: float) -> None:
    """One brow: raised by surprise, lowered and angled inward by a frown."""
    ew, eh0 = eyes.w, eyes.h0
    by = eyes.y - eh0 * (1.6 if lk.anime else 2.2) - 0.12 - 0.16 * lk.surp + 0.06 * lk.frown
    tilt = (0.35 * lk.frown - 0.15 * lk.surp)[_F3] * sgn
    bt = lk.idn.brow_thick
    lk.pt.draw(
        sgn * lk.idn.eye_sep,
        by,
        ew + 0.15,
        lambda u, v: sd_segment(u, v - tilt * u + 0.5 * u * u, -ew * 1.05, 0.0, ew * 1.05, 0.0, bt),
        darker(lk.hair, 0.8) if not lk.sketch else lk.line,
        face=True,
    )


def paint_nose(lk: CharacterLook) -> None:
    """Nose: a soft shadow and nostrils when realistic, one stroke in the drawn styles."""
    pt, asp, nl = lk.pt, lk.asp, lk.idn.nose_len
    if lk.real:
        pt.draw(
            0.05 * lk.lx,
            0.06 * asp,
            nl,
            lambda u, v: sd_ellipse(u, v, 0.09, nl * 0.8),
            darker(lk.skin, 0.9),
            depth=1.2,
            face=True,
            opacity=0.6,
        )
        nostril = darker(lk.skin, 0.6)
        _paint_pair(
            pt,
            0.07,
            0.06 * asp + nl * 0.7,
            0.08,
            lambda u, v: sd_ellipse(u, v, 0.035, 0.022),
            nostril,
            depth=1.2,
        )
    else:
        pt.draw(
            0.0,
            0.08 * asp,
            nl,
            lambda u, v: sd_segment(u, v, 0.0, -nl * 0.4, 0.06, nl * 0.5, 0.012),
            lk.line if lk.sketch else darker(lk.skin, 0.7),
            depth=1.2,
            face=True,
        )


def paint_mouth(lk: CharacterLook, ch: CharacterTrack) -> None:
    """Lips, the dark interior (its height is the opening), upper teeth; bent by smile / frown."""
    pt, sketch = lk.pt, lk.sketch
    my = lk.idn.mouth_y * lk.asp
    iw = mouth_half_width(ch, lk.smile, lk.surp)[_F3]
    ih = (MOUTH_IH0 + MOUTH_IH * ch.opening)[_F3]
    drop = ih * MOUTH_DROP
    bend = (0.9 * lk.smile - 0.8 * lk.frown)[_F3]  # >0: corners up
    lip = np.array(lk.idn.lip, np.float32)

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
        outline=darker(lip, 0.8) if not sketch else np.array([0.6, 0.6, 0.62], np.float32),
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


def paint_front_hair(lk: CharacterLook) -> None:
    """Hair in front of the face: a wavy fringe, or the spikes of the spiky style."""
    hs, asp = lk.idn.hair_style, lk.asp
    if hs in ("short", "long", "bob", "bun"):
        wav = 0.06 + 0.05 * (lk.idn.identity_id % 3)

        def fringe(u: Array, v: Array) -> Array:
            cap = sd_ellipse(u, v, 1.04, 0.62 * asp)
            edge = v - (0.0 + wav * np.cos(u * 7.0) - 0.25 * u * u)
            return np.maximum(cap, edge)

        _paint_hair(lk, -0.52 * asp, 1.2 * asp, fringe, 0.1)
    elif hs == "spiky":
        spikes = []
        for i in range(7):
            x = -0.95 + i * 0.32
            tip = (x + 0.03, -0.42 * asp + 0.08 * (i % 2))  # tips point down over the forehead
            spikes.append([tip, (x + 0.2, -1.0 * asp), (x - 0.22, -1.0 * asp)])

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

        _paint_hair(lk, 0.0, 1.45 * asp, spiky, 0.1)


def paint_hat(lk: CharacterLook) -> None:
    """A cap in the accent colour: crown, then brim."""
    pt, asp = lk.pt, lk.asp
    hat_col = np.array(lk.idn.accent, np.float32) if not lk.sketch else np.array([0.8, 0.8, 0.8], np.float32)
    pt.draw(
        0.0,
        -0.92 * asp,
        1.3,
        lambda u, v: sd_box(u, v, 0.9, 0.38, 0.25),
        hat_col,
        depth=0.05,
        outline=lk.ol if lk.ol is not None else darker(hat_col, 0.6),
        shade=lk.shade_round,
        face=False,
    )
    pt.draw(
        0.0,
        -0.62 * asp,
        1.5,
        lambda u, v: sd_ellipse(u, v, 1.3, 0.13),
        darker(hat_col, 0.8),
        depth=0.05,
        outline=lk.ol,
        face=False,
    )


def paint_glasses(lk: CharacterLook, eyes: EyeGeometry) -> None:
    """Two rims around the eyes and the bridge between them."""
    pt, sep = lk.pt, lk.idn.eye_sep
    gcol = np.array([0.1, 0.1, 0.12], np.float32) if not lk.anime else darker(lk.idn.accent, 0.5)
    gr = eyes.w * 1.35
    _paint_pair(pt, sep, eyes.y, gr + 0.1, lambda u, v: np.abs(sd_ellipse(u, v, gr, gr * 0.8)) - 0.018, gcol)
    pt.draw(
        0.0,
        eyes.y - 0.02,
        sep,
        lambda u, v: sd_segment(u, v, -(sep - gr), 0.0, sep - gr, 0.0, 0.018),
        gcol,
        face=True,
    )
