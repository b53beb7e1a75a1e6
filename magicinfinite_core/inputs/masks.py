"""Face region masks, per-speaker masks, token-grid masks and a preview overlay.

Why: the audio cross-attention output is multiplied by a face mask in token space (paper Eq. 2), and
with several speakers each audio stream may move only its own speaker's face. Everything a user can
get wrong here (no face, too many faces, masks of the wrong size or type, empty masks) raises
:class:`MaskError` with a line saying what to do.

Conventions
-----------
* Images: numpy or torch, ``[H, W, 3]`` (uint8 0..255 or float 0..1), grey ``[H, W]``, RGBA (alpha is
  dropped) or a ComfyUI IMAGE ``[1, H, W, C]``; videos ``[F, H, W, C]``.
* Pixel masks: ``[H, W]`` or ``[K, H, W]`` float 0..1 (ComfyUI MASK) or bool; binarised at 0.5.
* Faces are numbered left to right by box centre (face 0 = leftmost).
* Face region = detected box scaled by ``DEFAULT_EXPAND`` (1.4 x wide, 1.4 x tall, centre moved down
  by 0.1 box heights): BlazeFace's box runs from the brows to about the chin, the region adds room
  for the jaw opening and the cheeks (checked on skimage's astronaut).
* Overlaps between speakers are resolved explicitly: ``overlap="nearest"`` (default) gives a shared
  pixel to the speaker whose face centre (box centre, or mask centroid for drawn masks) is nearest,
  ties to the lower index; ``overlap="first"`` gives it to the lowest speaker index.
* Token masks: a token is on when the mask covers at least ``threshold`` (default 0.25) of its pixel
  area; a speaker whose mask is non-empty but covers no token that much keeps its best-covered token,
  so a small face never silently loses its audio.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from magicinfinite_core.cancellation import check_cancelled
from magicinfinite_core.errors import MaskError

log = logging.getLogger(__name__)

DEFAULT_EXPAND = (1.4, 1.4, 0.1)  # (scale x, scale y, downward shift in box heights)
# A detection is a face only when the detector's score is at least MIN_FACE_SCORE and its box covers
# at most MAX_FACE_AREA of the image: BlazeFace reports false faces at ~0.5 (a cat, a wall texture,
# a blurry 64x64 crop) and a box over most of the frame is never a usable speaker region.
MIN_FACE_SCORE = 0.6
MAX_FACE_AREA = 0.5
# Portraits are reduced to at most WORK_MAX_SIDE pixels on the long side before anything else
# (bounded memory for a 10000x10000 upload); faces are detected at up to DETECT_MAX_SIDE.
WORK_MAX_SIDE = 2048
DETECT_MAX_SIDE = 1024
# The tiled second pass for small faces: square tiles of 1/2, then 1/4 of the shorter side, overlapping
# by half, never smaller than MIN_TILE_SIDE px; a tile box within TILE_EDGE_PX of an inner tile edge is
# a cut-off face; a box covering more than SAME_FACE_OVERLAP of a smaller one is the same face.
TILE_LEVELS = (2, 4)
MIN_TILE_SIDE = 160
TILE_EDGE_PX = 2
SAME_FACE_OVERLAP = 0.5
TOKEN_THRESHOLD = 0.25
PALETTE = [
    (230, 25, 75),
    (0, 130, 200),
    (60, 180, 75),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (255, 225, 25),
    (240, 50, 230),
]


@dataclass(frozen=True)
class FaceBox:
    """A face box in pixels (x0, y0 inclusive; x1, y1 exclusive) with the detector's score."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2)

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def expand(
        self, expand: tuple[float, float, float] = DEFAULT_EXPAND, image_hw: tuple[int, int] | None = None
    ) -> FaceBox:
        """Grow the box to the face region (jaw, chin) and clip it to the image."""
        sx, sy, shift = expand
        cx, cy = self.center
        cy += shift * self.height
        w, h = self.width * sx, self.height * sy
        x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        if image_hw is not None:
            H, W = image_hw
            x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(float(W), x1), min(float(H), y1)
        return FaceBox(x0, y0, x1, y1, self.score)

    def to_mask(self, image_hw: tuple[int, int]) -> np.ndarray:
        """Filled box as a float32 {0,1} mask [H, W]."""
        H, W = image_hw
        m = np.zeros((H, W), np.float32)
        x0, y0 = max(0, int(math.floor(self.x0))), max(0, int(math.floor(self.y0)))
        x1, y1 = min(W, int(math.ceil(self.x1))), min(H, int(math.ceil(self.y1)))
        if x1 > x0 and y1 > y0:
            m[y0:y1, x0:x1] = 1.0
        return m


# ------------------------------------------------------------------------------------- image helpers


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def to_rgb_uint8(image: Any) -> np.ndarray:
    """Any supported single image -> contiguous uint8 RGB [H, W, 3] (what mediapipe and PIL want)."""
    a = _to_numpy(image)
    if a.ndim == 4:
        if a.shape[0] != 1:
            raise MaskError(
                f"expected one image, got a batch of {a.shape[0]}; pass frames as a video instead"
            )
        a = a[0]
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise MaskError(f"image has shape {tuple(a.shape)}; expected [H, W, 3] (RGB) or ComfyUI [1, H, W, 3]")
    if a.shape[0] < 32 or a.shape[1] < 32:
        raise MaskError(f"image is {a.shape[1]}x{a.shape[0]} pixels; use a real portrait (at least 32x32)")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    a = a[..., :3]
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == bool or a.dtype.kind not in "fiu":
        raise MaskError(f"image has dtype {a.dtype}; expected uint8 0..255 or float 0..1")
    if a.dtype.kind in "iu":
        return np.ascontiguousarray(np.clip(a, 0, 255).astype(np.uint8))
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise MaskError("image contains NaN or infinite values; reload the picture")
    if a.max() > 1.5:
        raise MaskError("float image has values above 1; ComfyUI images are float 0..1 - divide by 255")
    return np.ascontiguousarray((np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8))


def bounded_image(image: Any, max_side: int = WORK_MAX_SIDE) -> np.ndarray:
    """One image (like :func:`to_rgb_uint8` accepts) as uint8 RGB with at most ``max_side`` px per side.

    Why: a 10000x10000 ComfyUI IMAGE is 1.2 GB of float32, and every full-size temporary (clip, scale,
    masks, overlay) costs that again. The image is average-pooled by an integer factor first, strip
    by strip from the caller's tensor (no full-size copy), then converted.
    """
    if isinstance(image, np.ndarray) and image.dtype == np.uint8:
        a = image[0] if image.ndim == 4 and image.shape[0] == 1 else image
        h, w = a.shape[:2]
        f = math.ceil(max(h, w) / max_side)
        if f > 1:
            from PIL import Image

            a = np.asarray(Image.fromarray(np.ascontiguousarray(a[..., :3] if a.ndim == 3 else a)).reduce(f))
        return to_rgb_uint8(a)
    t = image if isinstance(image, torch.Tensor) else torch.from_numpy(np.asarray(image))
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise MaskError(f"expected one image, got a batch of {t.shape[0]}; pass frames as a video instead")
        t = t[0]
    if t.ndim == 3 and t.shape[-1] in (1, 3, 4) and max(t.shape[0], t.shape[1]) > max_side:
        f = math.ceil(max(t.shape[0], t.shape[1]) / max_side)
        src = t.detach()
        rows = f * 64  # pooled in strips of rows: only a strip is ever copied, never the whole image
        strips = []
        for r0 in range(0, (src.shape[0] // f) * f, rows):
            check_cancelled()
            strip = src[r0 : r0 + rows].cpu().float().permute(2, 0, 1)[None].contiguous()
            strips.append(F.avg_pool2d(strip, kernel_size=f, stride=f)[0].permute(1, 2, 0))
        t = torch.cat(strips)
    return to_rgb_uint8(t)


def _frames(images: Any) -> list[np.ndarray]:
    """An image or a video ([F, H, W, C] or a list of images) -> list of uint8 RGB frames."""
    if isinstance(images, (list, tuple)):
        frames = [to_rgb_uint8(f) for f in images]
    else:
        a = _to_numpy(images)
        if a.ndim == 4:
            frames = [to_rgb_uint8(f) for f in a]
        else:
            frames = [to_rgb_uint8(a)]
    if not frames:
        raise MaskError("no frames given; pass a portrait image or video frames")
    hw = frames[0].shape[:2]
    if any(f.shape[:2] != hw for f in frames):
        raise MaskError("video frames have different sizes; resize them to one size first")
    return frames


# --------------------------------------------------------------------------------------- detection


class FaceDetector:
    """BlazeFace face detection (mediapipe Tasks, the model bundled in this package), reusable across calls.

    Why a class: creating the detector costs ~0.2 s; nodes and tests keep one around.
    The detector is short-range: it finds faces wider than about a tenth of the image. ``model="auto"``
    runs it on the whole image and, when it finds fewer faces than asked for, again on overlapping
    tiles of 1/2 and then 1/4 of the image's shorter side (full-length photos, group photos: faces of
    ~5-10 % of the width); ``"short"`` is the whole-image pass only, ``"full"`` always adds the tiles.
    Procedurally drawn or heavily stylised faces (cartoons, simple drawings) are often not detected:
    draw a mask or box instead.
    """

    def __init__(self, min_confidence: float = MIN_FACE_SCORE, model: str = "auto") -> None:
        if model not in ("auto", "short", "full"):
            raise MaskError(f"model must be 'auto', 'short' or 'full', got {model!r}")
        from magicinfinite_core.inputs.face_tasks import BlazeFace

        try:
            self._det = BlazeFace(min_confidence=min(0.5, float(min_confidence)))
        except (ImportError, FileNotFoundError) as e:
            raise MaskError(str(e) if "mediapipe" in str(e) else f"{e} (mediapipe face detection)") from e
        self.min_confidence = float(min_confidence)
        self.model = model
        self.rejected: list[FaceBox] = []  # detections of the last call that were not faces (score / size)

    def _accept(self, box: FaceBox, hw: tuple[int, int], record: bool) -> bool:
        H, W = hw
        if box.width <= 1 or box.height <= 1:
            return False
        if box.score < self.min_confidence or box.width * box.height > MAX_FACE_AREA * H * W:
            if record:
                self.rejected.append(box)
            return False
        return True

    def _run(self, img: np.ndarray) -> list[FaceBox]:
        H, W = img.shape[:2]
        boxes = []
        for x0, y0, x1, y1, score in self._det.detect(img):
            box = FaceBox(max(0.0, x0), max(0.0, y0), min(float(W), x1), min(float(H), y1), score)
            if self._accept(box, (H, W), record=True):
                boxes.append(box)
        return boxes

    def _run_tiles(self, img: np.ndarray, faces: list[FaceBox], min_faces: int) -> list[FaceBox]:
        """Add faces found in overlapping square tiles (finest level last, stop once enough are found).

        A tile detection that touches a tile edge inside the image is cut off and dropped (the half
        overlap puts that face whole in a neighbouring tile); one that mostly covers a face already
        found is the same face."""
        H, W = img.shape[:2]
        faces = list(faces)
        for level in TILE_LEVELS:
            side = min(H, W) // level
            if side < MIN_TILE_SIDE:
                break
            step = side // 2
            found = []
            for ty in _tile_starts(H, side, step):
                for tx in _tile_starts(W, side, step):
                    check_cancelled()
                    tile = np.ascontiguousarray(img[ty : ty + side, tx : tx + side])
                    for x0, y0, x1, y1, score in self._det.detect(tile):
                        cut = ((x0 <= TILE_EDGE_PX and tx > 0) or (y0 <= TILE_EDGE_PX and ty > 0)
                               or (x1 >= side - TILE_EDGE_PX and tx + side < W)
                               or (y1 >= side - TILE_EDGE_PX and ty + side < H))
                        box = FaceBox(max(0.0, tx + x0), max(0.0, ty + y0), min(float(W), tx + x1),
                                      min(float(H), ty + y1), score)
                        if not cut and self._accept(box, (H, W), record=False):
                            found.append(box)
            for box in sorted(found, key=lambda b: -b.score):
                if all(_overlap_of_smaller(box, f) <= SAME_FACE_OVERLAP for f in faces):
                    faces.append(box)
            if len(faces) >= min_faces and self.model != "full":
                break
        return faces

    def detect(self, image: Any, min_faces: int = 1) -> list[FaceBox]:
        """Faces in one image, left to right."""
        check_cancelled()
        img = to_rgb_uint8(image)
        self.rejected = []
        faces = self._run(img)
        if self.model == "full" or (self.model == "auto" and len(faces) < min_faces):
            faces = self._run_tiles(img, faces, min_faces)
        return sorted(faces, key=lambda b: b.center[0])

    def close(self) -> None:
        self._det.close()

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tile_starts(length: int, side: int, step: int) -> list[int]:
    """Tile offsets along one axis: every ``step``, the last tile flush with the far edge."""
    starts = list(range(0, max(1, length - side + 1), step))
    if starts[-1] + side < length:
        starts.append(length - side)
    return starts


def _overlap_of_smaller(a: FaceBox, b: FaceBox) -> float:
    """Intersection area / the smaller box's area (1.0: one box lies inside the other)."""
    iw = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    ih = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    smaller = min(a.width * a.height, b.width * b.height)
    return iw * ih / smaller if smaller > 0 else 0.0


def detect_faces(
    image: Any, *, detector: FaceDetector | None = None, min_faces: int = 1, rejected: list[FaceBox] | None = None
) -> list[FaceBox]:
    """Detected faces (pixel boxes, left to right) in one image; [] when there are none.

    ``rejected`` receives the detections that are not faces (score below ``MIN_FACE_SCORE`` or a box
    over ``MAX_FACE_AREA`` of the image), so callers can say why nothing was found.
    """
    if detector is not None:
        faces = detector.detect(image, min_faces=min_faces)
        if rejected is not None:
            rejected.extend(detector.rejected)
        return faces
    with FaceDetector() as det:
        faces = det.detect(image, min_faces=min_faces)
        if rejected is not None:
            rejected.extend(det.rejected)
        return faces


def _rejected_text(rejected: Sequence[FaceBox], hw: tuple[int, int]) -> str:
    if not rejected:
        return ""
    H, W = hw
    parts = [f"score {b.score:.2f}, {100 * b.width * b.height / (H * W):.0f}% of the image" for b in rejected]
    return (f" ({len(rejected)} detection(s) ignored as not faces: {'; '.join(parts)}; a face needs score >= "
            f"{MIN_FACE_SCORE} and at most {100 * MAX_FACE_AREA:.0f}% of the image)")


def _center_boxes(image_hw: tuple[int, int], k: int) -> list[FaceBox]:
    """The documented fallback region: K equal columns, each with a box covering the middle of it
    (half its width, rows 15%..75% of the height) - where a portrait's face usually is."""
    H, W = image_hw
    col = W / k
    return [FaceBox(col * i + col / 4, 0.15 * H, col * i + 3 * col / 4, 0.75 * H, 0.0) for i in range(k)]


def _no_face_error(n_found: int, n_needed: int, what: str) -> MaskError:
    if n_found == 0:
        return MaskError(
            f"no face found in {what}; use a portrait with a clearly visible face, draw the speaker "
            "mask yourself (ComfyUI mask editor), or pass fallback='center' to use the centre region"
        )
    return MaskError(
        f"found {n_found} face(s) in {what} but {n_needed} are needed; draw masks or give boxes for "
        "the speakers, or use a larger/clearer image"
    )


def face_region_mask(
    images: Any,
    *,
    detector: FaceDetector | None = None,
    expand: tuple[float, float, float] = DEFAULT_EXPAND,
    face_index: int | None = None,
    fallback: str | None = None,
    stride: int = 1,
) -> np.ndarray:
    """M_face [H, W] float32 {0,1}: expanded face boxes, united over all faces and frames (paper §3.3).

    ``face_index`` keeps only the k-th face (left to right) of each frame. Frames without a face are
    skipped; if no frame has one, raises MaskError unless ``fallback="center"``. ``stride`` detects on
    every n-th frame only (long videos).
    """
    if fallback not in (None, "center"):
        raise MaskError(f"fallback must be None or 'center', got {fallback!r}")
    frames = _frames(images)
    hw = frames[0].shape[:2]
    own = detector is None
    det = FaceDetector() if own else detector
    try:
        mask = np.zeros(hw, np.float32)
        found = 0
        for f in frames[:: max(1, int(stride))]:
            check_cancelled()
            faces = det.detect(f, min_faces=1 if face_index is None else face_index + 1)
            if face_index is not None:
                faces = faces[face_index : face_index + 1]
            for b in faces:
                mask = np.maximum(mask, b.expand(expand, hw).to_mask(hw))
            found += len(faces)
    finally:
        if own:
            det.close()
    if found == 0:
        if fallback == "center":
            log.warning("no face found; using the centre region as the face mask (fallback='center')")
            return _center_boxes(hw, 1)[0].to_mask(hw)
        raise _no_face_error(0, 1, "the image" if len(frames) == 1 else "any frame")
    return mask


# ------------------------------------------------------------------------------------ speaker masks


def _check_mask_values(m: np.ndarray, what: str) -> np.ndarray:
    if m.dtype == bool:
        return m.astype(np.float32)
    if m.dtype.kind != "f":
        hint = " - divide by 255" if m.dtype == np.uint8 else ""
        raise MaskError(f"{what} has dtype {m.dtype}; masks must be float 0..1 (ComfyUI MASK) or bool{hint}")
    m = m.astype(np.float32)
    if not np.isfinite(m).all():
        raise MaskError(f"{what} contains NaN or infinite values; redraw it")
    lo, hi = float(m.min()), float(m.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise MaskError(f"{what} has values in [{lo:.3g}, {hi:.3g}]; masks must lie in 0..1")
    return m


def as_mask_stack(masks: Any, image_hw: tuple[int, int] | None = None, what: str = "mask") -> np.ndarray:
    """User masks (one [H, W], a [K, H, W] stack, or a list of [H, W]/[1, H, W]) -> {0,1} float32 [K, H, W].

    Checks dtype, range, size against the image and that none is empty.
    """
    if isinstance(masks, (list, tuple)):
        if not masks:
            raise MaskError("no masks given; draw one mask per speaker")
        parts = []
        for i, m in enumerate(masks):
            a = _to_numpy(m)
            if a.ndim == 3 and a.shape[0] == 1:
                a = a[0]
            if a.ndim != 2:
                raise MaskError(f"{what} {i} has shape {tuple(a.shape)}; each mask must be [H, W]")
            parts.append(_check_mask_values(a, f"{what} {i}"))
        shapes = {p.shape for p in parts}
        if len(shapes) > 1:
            raise MaskError(f"masks have different sizes {sorted(shapes)}; draw them all on the same image")
        stack = np.stack(parts)
    else:
        a = _to_numpy(masks)
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3:
            raise MaskError(f"{what} has shape {tuple(a.shape)}; expected [H, W] or [speakers, H, W]")
        stack = _check_mask_values(a, what)
    if image_hw is not None and stack.shape[1:] != tuple(image_hw):
        raise MaskError(
            f"{what} is {stack.shape[2]}x{stack.shape[1]} but the image is {image_hw[1]}x{image_hw[0]}; "
            "draw the mask on this image (ComfyUI mask editor) or resize it to the image size"
        )
    stack = (stack > 0.5).astype(np.float32)
    for i, m in enumerate(stack):
        if not m.any():
            raise MaskError(
                f"{what} {i} is empty (all zero); paint over speaker {i}'s face, or remove that speaker"
            )
    return stack


def resolve_overlaps(
    masks: np.ndarray, centers: Sequence[tuple[float, float]] | None = None, rule: str = "nearest"
) -> np.ndarray:
    """Make [K, H, W] masks disjoint: "nearest" = pixel goes to the speaker with the nearest centre
    (ties: lower index), "first" = to the lowest index. Raises if a speaker ends up with nothing."""
    if rule not in ("nearest", "first"):
        raise MaskError(f"overlap rule must be 'nearest' or 'first', got {rule!r}")
    m = masks > 0.5
    K, H, W = m.shape
    if K == 1:
        return m.astype(np.float32)
    if rule == "first":
        owner = np.argmax(m, axis=0)
    else:
        if centers is None:
            centers = [_centroid(mk) for mk in m]
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        dist = np.stack([(xx - cx) ** 2 + (yy - cy) ** 2 for cx, cy in centers])
        dist[~m] = np.inf
        owner = np.argmin(dist, axis=0)
    anyon = m.any(axis=0)
    out = np.stack([(owner == k) & anyon for k in range(K)]).astype(np.float32)
    for k in range(K):
        if not out[k].any():
            raise MaskError(
                f"speaker {k}'s mask lies entirely inside another speaker's; draw separate regions for "
                "each speaker"
            )
    return out


def _centroid(m: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(m)
    return float(xs.mean()), float(ys.mean())


def speaker_masks(
    image: Any,
    num_speakers: int | None = None,
    *,
    masks: Any = None,
    boxes: Sequence[Sequence[float]] | None = None,
    face_indices: Sequence[int] | None = None,
    detector: FaceDetector | None = None,
    expand: tuple[float, float, float] = DEFAULT_EXPAND,
    overlap: str = "nearest",
    fallback: str | None = None,
    report: list[str] | None = None,
) -> np.ndarray:
    """One disjoint {0,1} float32 mask per speaker, [K, H, W], from exactly one source:

    * ``masks``: user-drawn MASKs (one per speaker), used as drawn;
    * ``boxes``: pixel boxes ``(x0, y0, x1, y1)`` per speaker, used as given;
    * otherwise detected faces, numbered left to right, expanded to the face region. ``face_indices``
      picks which faces speak (speaker i = face ``face_indices[i]``); without it the image must hold
      exactly ``num_speakers`` faces. ``fallback="center"`` replaces a failed detection with K centred
      columns (see :func:`_center_boxes`); by default a failed detection raises.

    Overlaps are resolved by ``overlap`` (module docstring). ``report`` receives one line when the
    centre fallback was used, for the caller to show the user (node text, CLI output, batch table).
    """
    img = to_rgb_uint8(image)
    hw = img.shape[:2]
    if masks is not None and boxes is not None:
        raise MaskError("give either masks or boxes for the speakers, not both")
    if num_speakers is not None and num_speakers < 1:
        raise MaskError(f"num_speakers must be at least 1, got {num_speakers}")
    if masks is not None:
        stack = as_mask_stack(masks, hw)
        _check_count(stack.shape[0], num_speakers, "masks")
        return resolve_overlaps(stack, None, overlap)
    if boxes is not None:
        fb = [_as_box(b, hw, i) for i, b in enumerate(boxes)]
        if not fb:
            raise MaskError("no boxes given; give one (x0, y0, x1, y1) box per speaker")
        _check_count(len(fb), num_speakers, "boxes")
        stack = np.stack([b.to_mask(hw) for b in fb])
        return resolve_overlaps(stack, [b.center for b in fb], overlap)
    if fallback not in (None, "center"):
        raise MaskError(f"fallback must be None or 'center', got {fallback!r}")
    k = len(face_indices) if face_indices is not None else (num_speakers or 1)
    if face_indices is not None:
        _check_count(k, num_speakers, "face_indices")
        if len(set(face_indices)) != k:
            raise MaskError(
                f"face_indices {list(face_indices)} repeat a face; each speaker needs its own face"
            )
    need = (max(face_indices) + 1) if face_indices else k
    rejected: list[FaceBox] = []
    faces = detect_faces(img, detector=detector, min_faces=need, rejected=rejected)
    if not faces and fallback != "center":
        err = _no_face_error(0, k, "the portrait")
        raise MaskError(str(err) + _rejected_text(rejected, hw))
    if face_indices is None and len(faces) != k and not (len(faces) == 0 and fallback == "center"):
        if len(faces) > k:
            where = ", ".join(f"{i}: x={f.center[0]:.0f}" for i, f in enumerate(faces))
            raise MaskError(
                f"found {len(faces)} faces but {k} speaker mask(s) were requested; choose which faces "
                f"speak with face_indices (faces left to right: {where}), or draw the masks"
            )
        if fallback != "center":
            raise _no_face_error(len(faces), k, "the portrait")
    if face_indices is not None and need > len(faces) and not (len(faces) == 0 and fallback == "center"):
        raise MaskError(
            f"face_indices {list(face_indices)} asks for face {need - 1} but only {len(faces)} face(s) "
            "were found (numbered from 0, left to right); pick existing faces or draw masks"
        )
    if len(faces) == 0:
        note = (f"no face found; using {k} centred region(s) as the speaker mask(s), the fallback you chose"
                f"{_rejected_text(rejected, hw)}")
        log.warning(note)
        if report is not None:
            report.append(note)
        chosen = _center_boxes(hw, k)
        regions = chosen
    else:
        chosen = [faces[i] for i in face_indices] if face_indices is not None else faces
        regions = [b.expand(expand, hw) for b in chosen]
    stack = np.stack([r.to_mask(hw) for r in regions])
    return resolve_overlaps(stack, [b.center for b in chosen], overlap)


def _check_count(got: int, want: int | None, what: str) -> None:
    if want is not None and got != want:
        raise MaskError(f"{got} {what} given for {want} speaker(s); give exactly one per speaker")


def _as_box(b: Sequence[float], hw: tuple[int, int], i: int) -> FaceBox:
    try:
        x0, y0, x1, y1 = (float(v) for v in b)
    except (TypeError, ValueError):
        raise MaskError(f"box {i} is {b!r}; give (x0, y0, x1, y1) in pixels") from None
    H, W = hw
    if not (x1 > x0 and y1 > y0):
        raise MaskError(f"box {i} {tuple(b)} is empty; x1 must exceed x0 and y1 exceed y0 (pixels)")
    box = FaceBox(max(0.0, x0), max(0.0, y0), min(float(W), x1), min(float(H), y1))
    if box.width < 1 or box.height < 1:
        raise MaskError(f"box {i} {tuple(b)} lies outside the {W}x{H} image; give pixel coordinates")
    return box


# -------------------------------------------------------------------------------------- token masks


def token_masks(
    masks: Any,
    latent_frames: int,
    grid_hw: tuple[int, int],
    frames_per_latent: int = 4,
    threshold: float = TOKEN_THRESHOLD,
) -> torch.Tensor:
    """Pixel masks -> DiT token masks [K, T_lat, h, w] float32 in {0, 1}.

    ``masks`` is [K, H, W] (static, repeated over time) or [K, F, H, W] per video frame with
    F = 1 + frames_per_latent * (T_lat - 1); per-frame masks are reduced per latent frame with max
    (latent 0 <-> video frame 0, latent k <-> frames 4k-3..4k, the causal VAE's grouping). A token is
    on when its pixel-area coverage (adaptive average pooling) is >= ``threshold``; a speaker with a
    non-empty mask in a latent frame keeps at least its best-covered token.
    """
    a = _to_numpy(masks)
    if a.ndim not in (3, 4):
        raise MaskError(f"masks have shape {tuple(a.shape)}; expected [K, H, W] or [K, frames, H, W]")
    a = _check_mask_values(a, "mask")
    h, w = (int(v) for v in grid_hw)
    if h < 1 or w < 1:
        raise MaskError(f"token grid {grid_hw} must be positive")
    if latent_frames < 1:
        raise MaskError(f"latent_frames must be >= 1, got {latent_frames}")
    if not 0 < threshold <= 1:
        raise MaskError(f"threshold must be in (0, 1], got {threshold}")
    if a.shape[0] == 0:
        raise MaskError("no masks given (K = 0); give at least one speaker mask")
    m = torch.from_numpy((a > 0.5).astype(np.float32))
    K = m.shape[0]
    if m.ndim == 3:
        cov = F.adaptive_avg_pool2d(m[:, None], (h, w))[:, 0]  # [K, h, w]
        cov = cov[:, None].expand(K, latent_frames, h, w).contiguous()
    else:
        nf = m.shape[1]
        need = 1 + frames_per_latent * (latent_frames - 1)
        if nf != need:
            raise MaskError(
                f"per-frame masks cover {nf} video frames but {latent_frames} latent frames need "
                f"{need} (1 + {frames_per_latent} x (T-1)); give one mask per video frame, or one static mask"
            )
        H, W = m.shape[-2:]
        cov_f = F.adaptive_avg_pool2d(m.reshape(K * nf, 1, H, W), (h, w)).reshape(K, nf, h, w)
        first = cov_f[:, :1]
        rest = cov_f[:, 1:].reshape(K, latent_frames - 1, frames_per_latent, h, w).amax(dim=2)
        cov = torch.cat([first, rest], dim=1)
    on = cov >= threshold
    flat = cov.reshape(K, latent_frames, -1)
    lost = (~on.reshape(K, latent_frames, -1).any(-1)) & (flat.amax(-1) > 0)
    if lost.any():
        best = flat.argmax(-1)
        on_flat = on.reshape(K, latent_frames, -1)
        kk, tt = torch.nonzero(lost, as_tuple=True)
        on_flat[kk, tt, best[kk, tt]] = True
        on = on_flat.reshape(K, latent_frames, h, w)
    return on.float()


# ------------------------------------------------------------------------------------------ overlay


def speaker_color(k: int) -> tuple[int, int, int]:
    """A distinct RGB colour per speaker index (8 fixed, then golden-ratio hues)."""
    if k < len(PALETTE):
        return PALETTE[k]
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_speaker_overlay(image: Any, masks: Any, *, alpha: float = 0.45, labels: bool = True) -> np.ndarray:
    """RGB uint8 preview: each speaker's region tinted in its colour, outlined and numbered (0, 1, ...)
    at the top of the region.

    Why: a user checks who speaks where before spending GPU time. ``masks`` may be pixel masks
    [K, H, W] (or [K, F, H, W], shown as the union over frames) of the image size, or token masks
    (nearest-upsampled to the image).
    """
    from PIL import Image, ImageDraw, ImageFont
    from scipy import ndimage

    img = to_rgb_uint8(image)
    H, W = img.shape[:2]
    m = _check_mask_values(_to_numpy(masks), "mask")
    if m.ndim == 2:
        m = m[None]
    if m.ndim == 4:
        m = m.max(axis=1)
    if m.ndim != 3:
        raise MaskError(f"masks have shape {tuple(m.shape)}; expected [K, H, W]")
    if m.shape[1:] != (H, W):
        if abs((m.shape[1] / m.shape[2]) / (H / W) - 1) > 0.05:
            raise MaskError(f"masks are {m.shape[2]}x{m.shape[1]}, not the image's aspect ({W}x{H})")
        m = F.interpolate(torch.from_numpy(m)[:, None], size=(H, W), mode="nearest")[:, 0].numpy()
    m = m > 0.5
    out = img.astype(np.float32)
    for k, mk in enumerate(m):
        if not mk.any():
            continue
        col = np.array(speaker_color(k), np.float32)
        out[mk] = out[mk] * (1 - alpha) + col * alpha
        edge = mk & ~ndimage.binary_erosion(mk, iterations=max(1, min(H, W) // 200))
        out[edge] = col
    pil = Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))
    if labels:
        draw = ImageDraw.Draw(pil)
        size = max(12, min(H, W) // 14)
        try:
            font = ImageFont.load_default(size=size)
        except TypeError:  # Pillow without FreeType
            font = ImageFont.load_default()
        for k, mk in enumerate(m):
            if not mk.any():
                continue
            cx, _ = _centroid(mk)
            ys = np.nonzero(mk.any(axis=1))[0]
            r = size * 0.75
            cy = min(float(ys[0]) + r + 4, H - r)  # top of the region, so the mouth stays visible
            draw.ellipse(
                (cx - r, cy - r, cx + r, cy + r), fill=speaker_color(k), outline=(255, 255, 255), width=2
            )
            draw.text((cx, cy), str(k), fill=(255, 255, 255), font=font, anchor="mm")
    return np.asarray(pil)
