"""Where the model looks: a region of the picture framed around its faces, and the output size.

Why: a motion-latent model (media/motion_autoencoder.py) sees the picture through a fixed working grid
(128 x 128 for the demo), trained on clips whose face fills a known share of the frame. Framing the
same way at inference makes a face in a full-length photo, a letterboxed frame or a group photo look
to the model like the faces it learnt on, and the decoder moves the full-resolution picture, so the
framing costs no resolution. Everything outside the region stays still.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from magicinfinite_core.config import MAX_HEAD_DEADZONE, MAX_OUTPUT_SIDE
from magicinfinite_core.errors import MagicInfiniteError
from magicinfinite_core.inputs.face_parts import find_face_parts
from magicinfinite_core.inputs.masks import DETECT_MAX_SIDE, FaceBox, bounded_image, detect_faces
from magicinfinite_core.media.motion_autoencoder import MotionReference

# Measured on the demo's training clips (frame 0, mediapipe's detector): the face box is 0.565 of the
# frame wide and its centre sits at (0.53, 0.54) of the frame. Framing reproduces that.
FACE_SHARE = 0.565
FACE_CENTRE_Y = 0.54
GROUP_MARGIN = 0.35  # around several faces: this share of a face width on every side


def output_size(height: int, width: int, max_side: int = MAX_OUTPUT_SIDE) -> tuple[int, int]:
    """The picture's own size, reduced to `max_side` on its longer side, both sides even (H.264)."""
    if max_side < 16:
        raise ValueError(f"the output size must be at least 16 px a side, got {max_side}")
    s = min(1.0, max_side / max(height, width))
    return max(2, int(height * s) // 2 * 2), max(2, int(width * s) // 2 * 2)


def frame_faces(faces: Sequence[FaceBox], size: tuple[int, int], face_share: float = FACE_SHARE) -> tuple[int, int, int, int]:
    """A square region (x0, y0, x1, y1) of a picture of `size` (H, W) around all `faces` (pixel boxes).

    One face: the face is `face_share` of the region's width, placed as in training. Several: the
    region covers all of them with a margin, and is never tighter than one face alone would be. The
    square is moved (never cut) to lie inside the picture; when the picture is narrower than the
    square, the region is the picture's largest square there.
    """
    H, W = size
    if not faces:
        side = min(H, W)
        return ((W - side) // 2, (H - side) // 2, (W - side) // 2 + side, (H - side) // 2 + side)
    fw = max(f.width for f in faces)
    x0, x1 = min(f.x0 for f in faces), max(f.x1 for f in faces)
    y0, y1 = min(f.y0 for f in faces), max(f.y1 for f in faces)
    side = max(fw / face_share, (x1 - x0) + 2 * GROUP_MARGIN * fw, (y1 - y0) + 2 * GROUP_MARGIN * fw)
    side = int(round(min(side, H, W)))
    cx = (x0 + x1) / 2
    cy = (y0 + y1) / 2 - (FACE_CENTRE_Y - 0.5) * side
    left = int(round(min(max(cx - side / 2, 0), W - side)))
    top = int(round(min(max(cy - side / 2, 0), H - side)))
    return (left, top, left + side, top + side)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if image.shape[:2] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.LANCZOS), dtype=np.uint8)


def _given_masks(speakers: Any, size: tuple[int, int]) -> np.ndarray:
    """User speaker regions (mask arrays, mask files, or pixel boxes of the picture) -> [K, H, W] at `size`."""
    from magicinfinite_core.inputs.portrait import read_mask_files

    H, W = size
    if isinstance(speakers, (list, tuple)) and speakers and isinstance(speakers[0], (str, Path)):
        return read_mask_files(speakers, size)
    arr = np.asarray(speakers, dtype=np.float32)
    if arr.ndim == 2 and arr.shape[-1] == 4:  # pixel boxes of the picture as given
        return np.stack([FaceBox(*b).to_mask((H, W)) for b in arr.tolist()])
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape[-2:] != (H, W):
        arr = F.interpolate(torch.from_numpy(arr)[None], size=(H, W), mode="nearest")[0].numpy()
    return arr


def _mask_boxes(masks: np.ndarray) -> list[FaceBox]:
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m > 0.5)
        if len(xs):
            boxes.append(FaceBox(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)))
    return boxes


def _detected_faces(picture: np.ndarray, min_faces: int) -> list[FaceBox]:
    """Faces detected on the picture (bounded for the detector), in the picture's pixels."""
    small = bounded_image(picture, DETECT_MAX_SIDE)
    s = picture.shape[1] / small.shape[1]
    return [FaceBox(f.x0 * s, f.y0 * s, f.x1 * s, f.y1 * s, f.score) for f in detect_faces(small, min_faces=min_faces)]


def _faces_in_masks(masks: np.ndarray, detected: list[FaceBox]) -> list[FaceBox]:
    """Per speaker mask, the largest detected face whose centre it covers, else the mask's own box.

    Why: a speaker mask is a region around a face (the Speaker Masks node grows the face box; a drawn one is
    looser still), and framing a mask as if it were the face box shrank the face in the model's view (the
    demo workflow's Grace Hopper: a 492 px region instead of 350, and lips that hardly moved)."""
    boxes = []
    for m in masks:
        own = _mask_boxes(m[None])
        if not own:  # an empty mask frames nothing (as before)
            continue
        h, w = m.shape
        inside = [f for f in detected if m[min(int(f.center[1]), h - 1), min(int(f.center[0]), w - 1)] > 0.5]
        boxes.append(max(inside, key=lambda f: f.width) if inside else own[0])
    return boxes


def frame_portrait(
    picture: np.ndarray,
    model_hw: tuple[int, int],
    num_speakers: int,
    speakers: Any = None,
    *,
    fallback: str | None = None,
    notes: list[str] | None = None,
    max_side: int = MAX_OUTPUT_SIDE,
    tiles: bool = True,
    lip_seams: bool = False,
    rigid_faces: bool = False,
    head_motion: float = 1.0,
    head_deadzone: float = 0.0,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray, MotionReference]:
    """A picture (uint8 [H, W, 3], full resolution) -> what a motion-latent model needs:

    (the framed region at the model's size [1, 3, h, w] in [-1, 1], the same as uint8, speaker masks
    [K, h, w] in that region, and the `MotionReference`: the picture at the output size with the
    region's box). Faces are detected on the picture (or taken from the given speaker regions).
    `tiles`: with several speakers, frame each face on its own, the regions side by side ([1, 3, h, K*w];
    `MotionReference.tiles`) instead of one region around the group. `lip_seams`, `rigid_faces`: also find the
    mouths' lip seams and the faces' rigid upper parts (`find_face_parts`, for an autoencoder with
    `mouth_opening`, `open_mouth_opening` or `rigid_upper_face` > 0). `head_motion` < 1: decoding keeps that
    share of the model's head motion; `head_deadzone` > 0: it holds head motion smaller than that share of the
    face's height (`rigid_face.hold_head`; the rigid parts are found for either)."""
    check_head_hold(head_motion, head_deadzone)
    img, img_u8, masks, ref = _framed(picture, model_hw, num_speakers, speakers, fallback=fallback, notes=notes,
                                      max_side=max_side, tiles=tiles)
    heads = head_motion < 1 or head_deadzone > 0
    if lip_seams or rigid_faces or heads:
        out = ((ref.image[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        seams, rigid = find_face_parts(out, ref.regions(), faces=1 if ref.tiles else num_speakers, heads=heads)
        ref = replace(ref, seams=seams if lip_seams else (), rigid_faces=rigid if rigid_faces or heads else (),
                      head_motion=float(head_motion), head_deadzone=float(head_deadzone))
    return img, img_u8, masks, ref


def check_head_hold(head_motion: float, head_deadzone: float) -> None:
    """A clear error for a head-motion share outside 0..1 or a head dead zone outside 0..MAX_HEAD_DEADZONE (NaN too)."""
    if not 0.0 <= float(head_motion) <= 1.0:
        raise MagicInfiniteError(f"head_motion is the share of the model's head motion kept, from 0 (the head held "
                                 f"still, the mouth still talks) to 1 (as the model moves it); got {head_motion}")
    if not 0.0 <= float(head_deadzone) <= MAX_HEAD_DEADZONE:
        raise MagicInfiniteError(f"head_deadzone is the head motion held, as a share of the face's height, from 0 "
                                 f"(off) to {MAX_HEAD_DEADZONE} (0.02 holds a still prompt's bob, a clear nod keeps about half); "
                                 f"got {head_deadzone}")


def _framed(picture: np.ndarray, model_hw: tuple[int, int], num_speakers: int, speakers: Any, *, fallback: str | None,
            notes: list[str] | None, max_side: int, tiles: bool) -> tuple[torch.Tensor, np.ndarray, np.ndarray, MotionReference]:
    from magicinfinite_core.inputs.portrait import load_portrait, pixel_speaker_masks

    size = output_size(*picture.shape[:2], max_side)
    out = _resize(picture, size)
    if speakers is not None:
        given = _given_masks(speakers, size)
        faces = _faces_in_masks(given, _detected_faces(out, len(given)))
    else:
        given = None
        faces = _detected_faces(out, num_speakers)
    picture_t = torch.from_numpy(out.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    if tiles and num_speakers > 1 and len(faces) == num_speakers:
        return _frame_tiles(out, picture_t, faces, given, model_hw)
    box = frame_faces(faces, size)
    x0, y0, x1, y1 = box
    region = np.ascontiguousarray(out[y0:y1, x0:x1])
    img, img_u8 = load_portrait(region, *model_hw)
    if given is not None:
        masks = pixel_speaker_masks(img_u8, num_speakers, given[:, y0:y1, x0:x1])
    else:
        masks = pixel_speaker_masks(img_u8, num_speakers, portrait=region, fallback=fallback, notes=notes)
    return img, img_u8, masks, MotionReference(picture_t, box)


def _frame_tiles(
    out: np.ndarray, picture_t: torch.Tensor, faces: list[FaceBox], given: np.ndarray | None, model_hw: tuple[int, int],
) -> tuple[torch.Tensor, np.ndarray, np.ndarray, MotionReference]:
    """Several speakers: each face framed on its own like a single portrait, the regions at the model's size side
    by side (speaker k in tile k), the masks each in its own tile. Detected faces come numbered left to right,
    given masks in their own order, like `masks.speaker_masks`."""
    from magicinfinite_core.inputs.masks import speaker_masks
    from magicinfinite_core.inputs.portrait import load_portrait

    mh, mw = model_hw
    order = sorted(range(len(faces)), key=lambda i: faces[i].center[0]) if given is None else list(range(len(faces)))
    boxes, imgs, tiles_u8, stack = [], [], [], []
    for k, i in enumerate(order):
        x0, y0, x1, y1 = frame_faces([faces[i]], out.shape[:2])
        boxes.append((x0, y0, x1, y1))
        img, img_u8 = load_portrait(np.ascontiguousarray(out[y0:y1, x0:x1]), mh, mw)
        imgs.append(img)
        tiles_u8.append(img_u8)
        mask = np.zeros((mh, mw * len(order)), np.float32)
        if given is not None:
            part = torch.from_numpy(np.ascontiguousarray(given[i, y0:y1, x0:x1]))[None, None]
            mask[:, k * mw : (k + 1) * mw] = F.interpolate(part, size=(mh, mw), mode="nearest")[0, 0].numpy()
        else:
            sx, sy = mw / (x1 - x0), mh / (y1 - y0)
            f = faces[i]
            face = FaceBox((f.x0 - x0) * sx, (f.y0 - y0) * sy, (f.x1 - x0) * sx, (f.y1 - y0) * sy)
            mask[:, k * mw : (k + 1) * mw] = face.expand(image_hw=(mh, mw)).to_mask((mh, mw))
        stack.append(mask)
    img_u8 = np.ascontiguousarray(np.concatenate(tiles_u8, axis=1))
    masks = speaker_masks(img_u8, len(order), masks=np.stack(stack))
    return torch.cat(imgs, dim=-1), img_u8, masks, MotionReference.tiled(picture_t, boxes)
