"""Face-centred crops resized to a resolution bucket (aspect buckets as HunyuanVideo builds them).

Why buckets: a DiT batch needs one frame size, and a fixed square would throw away most of a
16:9 frame. HunyuanVideo(-I2V) enumerates (width, height) pairs on a ``step`` grid with at most
``(size / step)^2`` patches and at most ``max_ratio`` elongation, and gives each video the bucket
whose height / width ratio is nearest to its own; ``bucket_sizes`` / ``nearest_bucket`` reproduce
that (``generate_crop_size_list`` / ``get_closest_ratio`` in its data code).

The crop is a window of the bucket's aspect around the clip's faces: its side is ``context`` times
the union face box's side (head, hair and shoulders), centred on the faces (a little below the box
centre, towards the chin), shifted to stay inside the frame and shrunk when the frame is too small.
"""

from __future__ import annotations

import numpy as np


def bucket_sizes(size: int, step: int, max_ratio: float = 4.0) -> list[tuple[int, int]]:
    """All (width, height) buckets: multiples of ``step``, at most (size/step)^2 patches, elongation
    at most ``max_ratio`` (HunyuanVideo's ``generate_crop_size_list``)."""
    num_patches = round((size / step) ** 2)
    out = []
    wp, hp = num_patches, 1
    while wp > 0:
        if max(wp, hp) / min(wp, hp) <= max_ratio:
            out.append((wp * step, hp * step))
        if (hp + 1) * wp <= num_patches:
            hp += 1
        else:
            wp -= 1
    return out


def parse_aspect(aspect: str) -> float | None:
    """``source`` -> None (use the video's), ``square`` -> 1, ``W:H`` -> W / H."""
    if aspect == "source":
        return None
    if aspect == "square":
        return 1.0
    try:
        w, h = (float(v) for v in aspect.split(":"))
        if w > 0 and h > 0:
            return w / h
    except ValueError:
        pass
    raise ValueError(f"--aspect {aspect!r}: use source, square or W:H (e.g. 16:9)")


def nearest_bucket(width: float, height: float, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose height / width ratio is nearest to ``height / width`` (first on ties)."""
    ratios = np.array([h / w for w, h in buckets])
    return buckets[int(np.abs(ratios - height / width).argmin())]


def face_crop_box(
    faces: tuple[float, float, float, float], frame_wh: tuple[int, int], aspect: float, context: float
) -> tuple[int, int, int, int]:
    """Integer crop (x0, y0, x1, y1) of aspect ``aspect`` (w / h) around the union face box ``faces``."""
    W, H = frame_wh
    x0, y0, x1, y1 = faces
    fw, fh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    ch = context * max(fh, fw / aspect)
    cw = ch * aspect
    s = min(1.0, W / cw, H / ch)
    cw, ch = cw * s, ch * s
    cx = 0.5 * (x0 + x1)
    cy = 0.5 * (y0 + y1) + 0.1 * fh
    cx = min(max(cx, cw / 2), W - cw / 2)
    cy = min(max(cy, ch / 2), H - ch / 2)
    a, b = int(round(cx - cw / 2)), int(round(cy - ch / 2))
    w, h = max(1, int(round(cw))), max(1, int(round(ch)))
    a, b = min(max(a, 0), W - w), min(max(b, 0), H - h)
    return a, b, a + w, b + h


def crop_resize(frame: np.ndarray, box: tuple[int, int, int, int], size_wh: tuple[int, int]) -> np.ndarray:
    """Crop ``box`` out of an RGB frame and resize it to ``size_wh`` (area averaging when shrinking)."""
    import cv2

    x0, y0, x1, y1 = box
    part = np.ascontiguousarray(frame[y0:y1, x0:x1])
    shrink = size_wh[0] < part.shape[1]
    return cv2.resize(part, size_wh, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def map_boxes(boxes: np.ndarray, crop: tuple[int, int, int, int], size_wh: tuple[int, int]) -> np.ndarray:
    """Boxes [..., 4] in source pixels -> pixels of the resized crop."""
    x0, y0, x1, y1 = crop
    sx, sy = size_wh[0] / (x1 - x0), size_wh[1] / (y1 - y0)
    b = np.asarray(boxes, np.float32).copy()
    b[..., [0, 2]] = (b[..., [0, 2]] - x0) * sx
    b[..., [1, 3]] = (b[..., [1, 3]] - y0) * sy
    return b
