"""Faces of a source video: mediapipe detection on every frame, per-clip tracks, mouths from face mesh.

Why here and not in the core: the detector *is* the core's (``magicinfinite_core.inputs.masks.FaceDetector``:
score >= 0.6, a box over at most half the frame) and the mesh is ``photo_face.detect_all_landmarks``;
this module only applies them to videos:

* ``FrameAnalyser`` runs on every decoded source frame (in the decode pass): faces detected on the
  frame scaled to ``detect_max_side``, boxes in source pixels, plus the grey thumbnail the shot-cut
  rule needs.
* ``track_speakers`` follows each speaker through a clip: with no speaker boxes, the one face
  (largest in the first frame, then the detection overlapping the previous box most); with boxes
  (multi-speaker mode), each box's best-overlapping detection. Frames where a speaker is missed take
  the nearest frame's box.
* ``mouth_tracks`` runs face mesh in video mode on a square crop of each speaker's face (taken from
  the full-resolution source frame, so small faces and small buckets still get landmarks) and reads
  the lips: the mouth box
  (outer lip contour) and the opening = inner lip gap / (GAP x inner mouth width), the animated-photo
  world's convention (1 = the gap a full opening draws there).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from training.data.ingest_shots import grey_thumb
from training.data.photo_face import GAP, INNER_L, INNER_R

OUTER_LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409)
UPPER_MID, LOWER_MID = 13, 14


@dataclass
class FrameFaces:
    """One source frame's detections (x0, y0, x1, y1, score) in source pixels, and its thumbnail."""

    boxes: np.ndarray  # [n, 5]
    thumb: np.ndarray  # uint8 grey


class FrameAnalyser:
    """Callable on an ``av.VideoFrame``: faces + thumbnail (see module docstring)."""

    def __init__(self, detect_max_side: int = 640, min_faces: int = 1) -> None:
        from magicinfinite_core.inputs.masks import FaceDetector

        self.detector = FaceDetector()
        self.max_side = int(detect_max_side)
        self.min_faces = int(min_faces)
        self.detect_s = 0.0  # time inside mediapipe (the rest of a decode pass is decoding)

    def __call__(self, frame) -> FrameFaces:
        W, H = frame.width, frame.height
        s = min(1.0, self.max_side / max(W, H))
        w, h = max(2, int(round(W * s)) // 2 * 2), max(2, int(round(H * s)) // 2 * 2)
        rgb = frame.reformat(width=w, height=h, format="rgb24").to_ndarray()
        t0 = time.perf_counter()
        faces = self.detector.detect(rgb, min_faces=self.min_faces) if min(w, h) >= 32 else []
        self.detect_s += time.perf_counter() - t0
        sx, sy = W / w, H / h
        boxes = np.array([[f.x0 * sx, f.y0 * sy, f.x1 * sx, f.y1 * sy, f.score] for f in faces], np.float32)
        return FrameFaces(boxes.reshape(-1, 5), grey_thumb(rgb))

    def close(self) -> None:
        self.detector.close()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class SpeakerTracks:
    """Per-clip face tracks: boxes [F, K, 4] in source pixels, which frames really had a detection."""

    boxes: np.ndarray
    found: np.ndarray  # bool [F, K]
    face_counts: np.ndarray  # int [F] faces detected per frame


def _fill(boxes: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Missed frames take the box of the nearest frame with a detection (earlier on ties)."""
    out = boxes.copy()
    idx = np.flatnonzero(found)
    if len(idx) == 0:
        return out
    for t in np.flatnonzero(~found):
        out[t] = boxes[idx[np.argmin(np.abs(idx - t))]]
    return out


def track_speakers(per_frame: list[FrameFaces], given: list[list[float]] | None = None) -> SpeakerTracks:
    """Speaker tracks through one clip's frames (module docstring); ``given`` = speaker boxes."""
    n = len(per_frame)
    counts = np.array([len(f.boxes) for f in per_frame], np.int64)
    if given:
        ref = [np.asarray(g, np.float32) for g in given]
        K = len(ref)
        boxes = np.zeros((n, K, 4), np.float32)
        found = np.zeros((n, K), bool)
        for t, f in enumerate(per_frame):
            for k in range(K):
                scores = [iou(b[:4], ref[k]) for b in f.boxes]
                if scores and max(scores) >= 0.1:
                    boxes[t, k] = f.boxes[int(np.argmax(scores)), :4]
                    found[t, k] = True
    else:
        boxes = np.zeros((n, 1, 4), np.float32)
        found = np.zeros((n, 1), bool)
        prev = None
        for t, f in enumerate(per_frame):
            if len(f.boxes) == 0:
                continue
            if prev is None:
                areas = (f.boxes[:, 2] - f.boxes[:, 0]) * (f.boxes[:, 3] - f.boxes[:, 1])
                j = int(np.argmax(areas))
            else:
                j = int(np.argmax([iou(b[:4], prev) for b in f.boxes]))
            boxes[t, 0] = prev = f.boxes[j, :4]
            found[t, 0] = True
    for k in range(boxes.shape[1]):
        boxes[:, k] = _fill(boxes[:, k], found[:, k])
    return SpeakerTracks(boxes, found, counts)


@dataclass
class MouthTracks:
    """Lips per frame and speaker in crop pixels (filled where the mesh missed)."""

    mouth_box: np.ndarray  # [F, K, 4]
    opening: np.ndarray  # [F, K] 0..1
    found: np.ndarray  # bool [F, K]


def _lips(L: np.ndarray) -> tuple[np.ndarray, float]:
    pts = L[list(OUTER_LIPS)]
    box = np.array([*pts.min(0), *pts.max(0)], np.float32)
    inner_w = float(np.linalg.norm(L[INNER_R] - L[INNER_L]))
    gap = float(np.linalg.norm(L[LOWER_MID] - L[UPPER_MID]))
    return box, float(np.clip(gap / max(GAP * inner_w, 1e-3), 0.0, 1.0))


MESH_SIDE = 192  # face mesh runs on a square crop of each speaker's face, from the source frame


def mesh_roi(box: np.ndarray, frame_wh: tuple[int, int], scale: float = 1.7) -> tuple[int, int, int, int]:
    """Square (x0, y0, x1, y1) around a face box (``scale`` x its longer side), inside the frame."""
    W, H = frame_wh
    side = min(scale * max(box[2] - box[0], box[3] - box[1]), W, H)
    cx, cy = 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3]) + 0.05 * (box[3] - box[1])
    x0 = int(round(min(max(cx - side / 2, 0), W - side)))
    y0 = int(round(min(max(cy - side / 2, 0), H - side)))
    s = max(2, int(round(side)))
    return x0, y0, min(W, x0 + s), min(H, y0 + s)


def mouth_tracks(face_crops: np.ndarray, rois: np.ndarray) -> MouthTracks:
    """Lips of each speaker from face mesh on its face crops ``[F, K, S, S, 3]`` (``rois`` [F, K, 4]:
    where each crop came from, source px); boxes come back in source pixels. One fresh mesh per
    speaker and clip, so clips never depend on each other. Each crop is measured on its own (still
    mode): the Tasks landmarker's video mode lost drawn faces in half the frames where still mode
    finds them in 79-94 % (the two-speaker ingestion test clip)."""
    from magicinfinite_core.inputs.face_tasks import FaceMesh
    from training.data.photo_face import detect_all_landmarks

    n, K, S = face_crops.shape[:3]
    mbox = np.zeros((n, K, 4), np.float32)
    op = np.zeros((n, K), np.float32)
    found = np.zeros((n, K), bool)
    for k in range(K):
        with FaceMesh(max_faces=1, min_detection_confidence=0.5) as mesh:
            for t in range(n):
                faces = detect_all_landmarks(face_crops[t, k], mesh)
                if not faces:
                    continue
                x0, y0, x1, y1 = rois[t, k]
                L = faces[0] * np.array([(x1 - x0) / S, (y1 - y0) / S], np.float32) + np.array([x0, y0], np.float32)
                mbox[t, k], op[t, k] = _lips(L)
                found[t, k] = True
        mbox[:, k] = _fill(mbox[:, k], found[:, k])
        idx = np.flatnonzero(found[:, k])
        if len(idx):
            op[:, k] = np.interp(np.arange(n), idx, op[idx, k])
    return MouthTracks(mbox, op, found)


def face_motion(frames: np.ndarray, region: tuple[int, int, int, int]) -> float:
    """Mean |frame difference| (grey levels) inside ``region`` of the crops, resized to 32 x 32: the
    static-content measure (a still photo with a soundtrack has only codec noise)."""
    import cv2

    x0, y0, x1, y1 = region
    if x1 - x0 < 2 or y1 - y0 < 2 or len(frames) < 2:
        return 0.0
    g = np.stack([cv2.resize(cv2.cvtColor(np.ascontiguousarray(f[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY), (32, 32),
                             interpolation=cv2.INTER_AREA) for f in frames]).astype(np.float32)
    return float(np.abs(g[1:] - g[:-1]).mean())
