"""Anti-aliased signed-distance drawing in pure numpy: the toolkit the world renderer paints with.

Every shape is a signed distance function evaluated on the pixels of its own bounding box for
all frames at once ([F, h, w] arrays), turned into coverage with a 1-pixel smooth edge, and
alpha-blended into a float canvas. Shapes live in a local coordinate frame (for faces: unit = face
half width, v pointing down); each frame maps it to pixels with a similarity transform (position,
scale, roll) and displaces points for yaw / pitch, which is enough for nods and head shakes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

_EPS = 1e-6

Array = np.ndarray
#: a shape: signed distance (in local units) of the local coordinates (u, v)
Sdf = Callable[[Array, Array], Array]


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
class Canvas:
    """Float RGB canvas for all frames plus an owner map for per-character face masks."""

    def __init__(self, bg: Array) -> None:
        self.img = bg
        self.F, self.H, self.W = bg.shape[:3]
        self.owner = np.full((self.F, self.H, self.W), -1, np.int8)
        self.yy = np.arange(self.H, dtype=np.float32) + 0.5
        self.xx = np.arange(self.W, dtype=np.float32) + 0.5

    def box(self, cx: Array, cy: Array, r: float | Array) -> tuple[int, int, int, int] | None:
        """(y0, y1, x0, x1) pixel box holding circles (cx, cy, r) of all frames, clipped to the canvas."""
        r = np.asarray(r, np.float32)
        x0 = max(int(np.floor(np.min(cx - r))), 0)
        x1 = min(int(np.ceil(np.max(cx + r))) + 1, self.W)
        y0 = max(int(np.floor(np.min(cy - r))), 0)
        y1 = min(int(np.ceil(np.max(cy + r))) + 1, self.H)
        if x1 <= x0 or y1 <= y0:
            return None
        return y0, y1, x0, x1

    def blend(self, bx: tuple[int, int, int, int], alpha: Array, color: Array) -> None:
        """Alpha-blend ``color`` over the box in place (alpha [F, h, w])."""
        y0, y1, x0, x1 = bx
        reg = self.img[:, y0:y1, x0:x1]
        reg += alpha[..., None] * (color - reg)

    def own(self, bx: tuple[int, int, int, int], alpha: Array, char: int, face: bool) -> None:
        """Record which character's face each covered pixel shows (a non-face part hides others')."""
        y0, y1, x0, x1 = bx
        reg = self.owner[:, y0:y1, x0:x1]
        hit = alpha > 0.5
        if face:
            reg[hit] = char
        else:
            reg[hit & (reg != char)] = -1


@dataclass
class Pose:
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


class Painter:
    """Draws shapes of one character (or of the background when pose is a unit pose)."""

    def __init__(self, cv: Canvas, pose: Pose, char: int, aa: float = 1.0) -> None:
        self.cv, self.p, self.char, self.aa = cv, pose, char, aa

    def local(
        self, u0: Array | float, v0: Array | float, depth: float, bound: float, ang: Array | float = 0.0
    ) -> tuple[tuple[int, int, int, int], Array, Array] | None:
        """Pixel box around face point (u0, v0) and the local coordinates of its pixels, or None
        when the box misses the canvas in every frame."""
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
        sdf: Sdf,
        fill: Array | None = None,
        *,
        depth: float = 1.0,
        ang: Array | float = 0.0,
        outline: Array | None = None,
        lw: float = 1.0,
        shade: Sdf | None = None,
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
                col = np.clip(col * tex_lookup(tex, lu, lv), 0.0, 1.0)
            self.cv.blend(bx, a, col)
            if face is not None and self.char >= 0:
                self.cv.own(bx, a, self.char, face)
        if outline is not None:
            a = np.clip(0.5 - (np.abs(d) - 0.5 * lw) / self.aa, 0.0, 1.0) * opacity
            self.cv.blend(bx, a, np.asarray(outline, np.float32))


def tex_lookup(tex: Array, lu: Array, lv: Array, scale: float = 0.45) -> Array:
    """Colour multiplier [.., 3] of a texture patch at face coordinates (mirror-tiled), so the
    texture moves with the face."""
    n = tex.shape[0]
    period = 2 * n

    def wrap(c: Array) -> Array:
        c = np.mod(c, period)
        return np.clip(np.where(c >= n, period - 1 - c, c), 0, n - 1).astype(np.int32)

    return tex[wrap((lv * scale + 0.5) * n), wrap((lu * scale + 0.5) * n)]


def darker(c: Array | list[float], k: float) -> Array:
    """Colour ``c`` scaled by ``k`` and clipped: the shadow / outline tint of a fill colour."""
    return np.clip(np.asarray(c, np.float32) * k, 0, 1)
