"""The portrait on its way in: read with bounded memory, cropped to the model's aspect, speaker masks.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from magicinfinite_core.errors import MagicInfiniteError, MaskError
from magicinfinite_core.inputs.masks import (
    DETECT_MAX_SIDE,
    WORK_MAX_SIDE,
    bounded_image,
    resolve_overlaps,
    speaker_masks,
)

log = logging.getLogger(__name__)


MAX_PORTRAIT_PIXELS = 150_000_000  # portrait files above this are refused before decoding


class PortraitWarning(UserWarning):
    """A portrait that is usable but was changed on the way in (e.g. a huge image downscaled)."""


def read_portrait(portrait: Any, max_side: int = WORK_MAX_SIDE) -> np.ndarray:
    """Any image (path, PIL, array, ComfyUI IMAGE) -> uint8 RGB [H, W, 3] with at most ``max_side`` px a side.

    Why: memory must stay bounded for any upload. A file is opened lazily, refused above
    ``MAX_PORTRAIT_PIXELS``, decoded at reduced scale where the format allows (JPEG draft) and
    reduced by an integer factor before the RGB conversion; an array / tensor is pooled on a view
    (:func:`masks.bounded_image`). Above PIL's decompression-bomb limit a :class:`PortraitWarning`
    says what was done.
    """
    from PIL import Image

    if isinstance(portrait, (str, Path)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(portrait) as im:
                    w, h = im.size
                    if w * h > MAX_PORTRAIT_PIXELS:
                        raise MagicInfiniteError(
                            f"the portrait {portrait} is {w}x{h} ({w * h / 1e6:.0f} MP); portraits above "
                            f"{MAX_PORTRAIT_PIXELS / 1e6:.0f} MP are refused: downscale it first"
                        )
                    turn = EXIF_TRANSPOSE.get(im.getexif().get(EXIF_ORIENTATION, 1))
                    if turn in (Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE,
                                Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270):
                        w, h = h, w  # the size the user sees
                    _check_portrait_size(w, h, portrait)
                    f = math.ceil(max(w, h) / max_side)
                    if f > 1 and im.format == "JPEG":
                        im.draft("RGB", (max(1, im.size[0] // f), max(1, im.size[1] // f)))  # 1/2, 1/4, 1/8 scale
                    f2 = math.ceil(max(im.size) / max_side)
                    if f2 > 1:
                        im = im.reduce(f2)
                    if turn is not None:
                        im = im.transpose(turn)
                    img = np.asarray(to_rgb(im))
        except MagicInfiniteError:
            raise
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise MagicInfiniteError(f"cannot read the portrait {portrait}: {exc}") from None
        src = (w, h)
    else:
        if hasattr(portrait, "convert") and hasattr(portrait, "size"):  # a PIL image
            portrait = np.asarray(portrait.convert("RGB"))
        shape = tuple(getattr(portrait, "shape", ()))
        src = (shape[-2], shape[-3]) if len(shape) == 4 else (shape[1], shape[0]) if len(shape) >= 2 else None
        if src is not None:
            _check_portrait_size(*src, "the portrait")
        img = bounded_image(portrait, max_side)
        src = src or img.shape[1::-1]
    if src[0] * src[1] > (Image.MAX_IMAGE_PIXELS or float("inf")):
        warnings.warn(
            f"the portrait is {src[0]}x{src[1]} ({src[0] * src[1] / 1e6:.0f} MP, above PIL's decompression-bomb "
            f"limit of {Image.MAX_IMAGE_PIXELS / 1e6:.0f} MP); it was reduced to {img.shape[1]}x{img.shape[0]} "
            "on reading. Downscale such images before loading them to save memory and time",
            PortraitWarning, stacklevel=2,
        )
    return img


EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transpose that shows the picture upright (as PIL's ImageOps.exif_transpose and
# ComfyUI's Load Image do); applied after the reduced decode, so a huge rotated JPEG stays cheap
EXIF_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                  5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                  8: Image.Transpose.ROTATE_90}
MIN_PORTRAIT_SIDE = 32  # pixels; the face detector and the model's crop need at least this


def _check_portrait_size(w: int, h: int, name: Any) -> None:
    """Refuse a picture too small on a side, reporting the size of the file (not of a reduced copy)."""
    if min(w, h) < MIN_PORTRAIT_SIDE:
        raise MagicInfiniteError(f"{name} is {w}x{h} pixels; use a portrait with at least {MIN_PORTRAIT_SIDE} "
                                 "pixels on each side")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL image -> RGB, 16- and 32-bit greyscale scaled to 8 bits (PIL's own convert clips them to white)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im).astype(np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max(initial=0) <= 65535 else float(a.max())
        return Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode == "F":
        a = np.nan_to_num(np.asarray(im, dtype=np.float64))
        top = 1.0 if a.max(initial=0) <= 1.0 else 255.0
        return Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    return im.convert("RGB")


def crop_region(ih: int, iw: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(y0, x0, crop_h, crop_w): the centred crop of an ih x iw image with the model's aspect ratio."""
    scale = max(height / ih, width / iw)
    ch, cw = min(ih, math.ceil(height / scale)), min(iw, math.ceil(width / scale))
    return (ih - ch) // 2, (iw - cw) // 2, ch, cw


def load_portrait(portrait: Any, height: int, width: int) -> tuple[torch.Tensor, np.ndarray]:
    """Any image (path, PIL, array, ComfyUI IMAGE) -> ([1, 3, H, W] in [-1, 1], uint8 [H, W, 3]).

    Read with bounded memory (:func:`read_portrait`), centre-cropped to the model's aspect ratio,
    then resized (Lanczos).
    """
    from PIL import Image

    img = read_portrait(portrait)
    y0, x0, ch, cw = crop_region(*img.shape[:2], height, width)
    im = Image.fromarray(img[y0 : y0 + ch, x0 : x0 + cw]).resize((width, height), Image.LANCZOS)
    arr = np.asarray(im, dtype=np.uint8)
    t = torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    return t, arr


def read_mask_files(paths: Any, hw: tuple[int, int]) -> np.ndarray:
    """Speaker mask images -> float [K, H, W] in 0..1 at `hw`, upright like the portrait (EXIF) and
    ComfyUI's Load Image, 16-bit files scaled like portraits."""
    from PIL import Image, ImageOps

    h, w = hw
    arrs = []
    for p in paths:
        try:
            with Image.open(p) as im:
                im = ImageOps.exif_transpose(im)
                arrs.append(np.asarray(to_rgb(im).convert("L").resize((w, h), Image.NEAREST), dtype=np.float32) / 255)
        except (OSError, ValueError) as exc:
            raise MaskError(f"cannot read the speaker mask {p}: {exc}") from None
    return np.stack(arrs)


def pixel_speaker_masks(
    image: np.ndarray,
    num_speakers: int,
    speakers: Any = None,
    *,
    portrait: np.ndarray | None = None,
    fallback: str | None = None,
    notes: list[str] | None = None,
) -> np.ndarray:
    """[K, H, W] speaker masks at the model's size (``image``, uint8): given masks/boxes, else detected faces.

    Faces are detected on ``portrait`` (the full-resolution picture ``image`` was cropped from, up to
    ``masks.DETECT_MAX_SIDE`` px) and the regions mapped into the model's crop: a 64x64 crop is too
    small to find faces in. No face: ``fallback="center"`` (the user's choice) uses centred regions and
    says so in ``notes``; otherwise a MaskError says what to do. No fallback happens unasked.
    """
    h, w = image.shape[:2]
    if speakers is not None:
        if isinstance(speakers, (list, tuple)) and speakers and isinstance(speakers[0], (str, Path)):
            speakers = read_mask_files(speakers, (h, w))
        arr = np.asarray(speakers, dtype=np.float32)
        if arr.ndim == 2 and arr.shape[-1] == 4:  # boxes
            return speaker_masks(image, num_speakers, boxes=arr.tolist())
        if arr.ndim == 2:
            arr = arr[None]
        if arr.shape[-2:] != (h, w):
            arr = F.interpolate(torch.from_numpy(arr)[None], size=(h, w), mode="nearest")[0].numpy()
        return speaker_masks(image, num_speakers, masks=arr)
    src = image
    if portrait is not None:
        y0, x0, ch, cw = crop_region(*portrait.shape[:2], h, w)
        src = bounded_image(portrait[y0 : y0 + ch, x0 : x0 + cw], DETECT_MAX_SIDE)
    try:
        full = speaker_masks(src, num_speakers, fallback=fallback, report=notes)
    except MaskError as exc:
        if "mediapipe" not in str(exc) or fallback != "center":
            raise
        note = f"{exc}; using {num_speakers} centred region(s), the fallback you chose"
        if notes is not None:
            notes.append(note)
        warnings.warn(note, stacklevel=2)
        return speaker_masks(image, num_speakers, boxes=[[w * (i + 0.25) / num_speakers, 0.15 * h,
                                                          w * (i + 0.75) / num_speakers, 0.75 * h]
                                                         for i in range(num_speakers)])
    if full.shape[1:] == (h, w):
        return full
    cover = F.interpolate(torch.from_numpy(full)[None], size=(h, w), mode="area")[0].numpy()
    out = (cover >= 0.5).astype(np.float32)
    for k in range(out.shape[0]):  # a region smaller than half a model pixel keeps its best-covered pixel
        if not out[k].any():
            out[k].flat[int(cover[k].argmax())] = 1.0
    return resolve_overlaps(out)


