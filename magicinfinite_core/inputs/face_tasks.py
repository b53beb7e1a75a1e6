"""Face detection and the face mesh with current mediapipe (Tasks API) and the model file in this package.

Why a module of its own: mediapipe >= 1.0 ships no models and dropped the old ``solutions`` API, so every
face-finding caller (speaker masks, ingestion, evaluation, the photo world) goes through these two
small classes, which load ``assets/face/face_landmarker.task`` (Google's model bundle, Apache-2.0, see
the NOTICE beside it) and never touch the network.

* :class:`BlazeFace`: the short-range BlazeFace detector (``face_detector.tflite`` inside the bundle),
  boxes in pixels with scores. It finds faces that fill more than about a tenth of the image side;
  ``masks.FaceDetector`` adds a tiled second pass for smaller ones.
* :class:`FaceMesh`: the face landmarker, the first ``MESH_POINTS`` (468) points of its 478 per face,
  in the index order of the classic face mesh (the 10 extra points are the irises), normalised 0..1.

Both write start-up lines to the process's stderr from native code (TF Lite, absl); those are
silenced while a model is created, first run and closed (``MAGICINFINITE_FACE_LOGS=1`` keeps them).
Close both explicitly (or use ``with``): mediapipe's finaliser is noisy at interpreter exit.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "face"
LANDMARKER_TASK = MODEL_DIR / "face_landmarker.task"
DETECTOR_MEMBER = "face_detector.tflite"  # the BlazeFace short-range model inside the bundle
MESH_POINTS = 468  # classic face-mesh indices; the Tasks model appends 10 iris points
INSTALL_HINT = "face detection needs mediapipe>=1.2 (pip install 'mediapipe>=1.2'); or draw the masks yourself"
# Inner lips, outer lips: the classic face mesh's FACEMESH_LIPS point set (same indices in the Tasks mesh).
LIP_POINTS = (0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191,
              267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415)


# mediapipe's vision package imports its drawing helpers, and with them matplotlib's pyplot and 3-D axes:
# 0.3 s of a command's 3 s to its first frame, for plots nothing here draws. They are loaded lazily.
LAZY_MODULES = ("mediapipe.tasks.python.vision.drawing_utils", "mediapipe.tasks.python.vision.drawing_styles")


class _LazyFinder(importlib.abc.MetaPathFinder):
    """Finds `LAZY_MODULES` as usual but defers running them to their first attribute access
    (`importlib.util.LazyLoader`), so whoever does use them gets the real modules."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name not in LAZY_MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


def _vision() -> Any:
    """mediapipe's Tasks vision module (ImportError with the install hint when it is missing)."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    finder = _LazyFinder()
    sys.meta_path.insert(0, finder)
    try:
        from mediapipe.tasks.python import vision
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    finally:
        sys.meta_path.remove(finder)
    return vision


def face_oval_edges() -> list[tuple[int, int]]:
    """The mesh's face oval as unordered ``(a, b)`` landmark edges (the old ``FACEMESH_FACE_OVAL``)."""
    vision = _vision()
    return [(c.start, c.end) for c in vision.FaceLandmarksConnections.FACE_LANDMARKS_FACE_OVAL]


FACE_TOP = 10  # face-mesh landmark at the top of the forehead


@functools.lru_cache(maxsize=1)
def face_oval_loop() -> tuple[int, ...]:
    """The face oval's landmarks in order around the face, starting at the forehead's top: mediapipe
    gives the oval as unordered edges, which form one loop (a polygon needs them in order)."""
    nbrs: dict[int, list[int]] = {}
    for a, b in face_oval_edges():
        nbrs.setdefault(a, []).append(b)
        nbrs.setdefault(b, []).append(a)
    loop, prev = [FACE_TOP], None
    while True:
        nxt = next(n for n in nbrs[loop[-1]] if n != prev)
        if nxt == FACE_TOP:
            return tuple(loop)
        prev = loop[-1]
        loop.append(nxt)


def _model_file() -> Path:
    if not LANDMARKER_TASK.is_file():
        raise FileNotFoundError(f"the face model {LANDMARKER_TASK} is missing; reinstall comfyui-magicinfinite")
    return LANDMARKER_TASK


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the duration (native start-up lines, not Python's).

    Why at the descriptor: TF Lite and absl write from C++ straight to fd 2, below ``sys.stderr``.
    """
    if os.environ.get("MAGICINFINITE_FACE_LOGS") == "1":
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (some embedded interpreters): nothing to hide
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _image(vision: Any, rgb: np.ndarray) -> Any:
    import mediapipe as mp

    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected a uint8 RGB image [H, W, 3], got {rgb.dtype} {tuple(rgb.shape)}")
    return mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))


class _Task:
    """Shared life cycle: quiet creation, quiet first run, explicit close."""

    _task: Any = None
    _ran = False

    def _call(self, method: str, *args: Any) -> Any:
        if self._task is None:
            raise RuntimeError(f"{type(self).__name__} is closed")
        fn = getattr(self._task, method)
        if self._ran:
            return fn(*args)
        with quiet_native_stderr():
            out = fn(*args)
        self._ran = True
        return out

    def close(self) -> None:
        if self._task is not None:
            with quiet_native_stderr():
                self._task.close()
            self._task = None

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlazeFace(_Task):
    """BlazeFace short-range face detection on one RGB uint8 image at a time."""

    def __init__(self, min_confidence: float = 0.5) -> None:
        vision = _vision()
        from mediapipe.tasks.python import BaseOptions

        with zipfile.ZipFile(_model_file()) as bundle:
            model = bundle.read(DETECTOR_MEMBER)
        options = vision.FaceDetectorOptions(base_options=BaseOptions(model_asset_buffer=model),
                                             min_detection_confidence=float(min_confidence))
        with quiet_native_stderr():
            self._task = vision.FaceDetector.create_from_options(options)
        self._vision = vision

    def detect(self, rgb: np.ndarray) -> list[tuple[float, float, float, float, float]]:
        """``(x0, y0, x1, y1, score)`` per face, pixels of ``rgb``, in the detector's order."""
        result = self._call("detect", _image(self._vision, rgb))
        out = []
        for det in result.detections:
            bb = det.bounding_box
            score = float(det.categories[0].score) if det.categories else 0.0
            out.append((float(bb.origin_x), float(bb.origin_y), float(bb.origin_x + bb.width),
                        float(bb.origin_y + bb.height), score))
        return out


class FaceMesh(_Task):
    """Face landmarks (the classic 468-point mesh) of up to ``max_faces`` faces.

    ``video=True`` tracks a face from frame to frame (the old ``static_image_mode=False``): call
    :meth:`landmarks` on consecutive frames of one clip; each new clip needs a new ``FaceMesh``.
    """

    def __init__(self, max_faces: int = 1, *, video: bool = False, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5) -> None:
        vision = _vision()
        from mediapipe.tasks.python import BaseOptions

        mode = vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(_model_file())), running_mode=mode,
            num_faces=int(max_faces), min_face_detection_confidence=float(min_detection_confidence),
            min_face_presence_confidence=float(min_detection_confidence),
            min_tracking_confidence=float(min_tracking_confidence))
        with quiet_native_stderr():
            self._task = vision.FaceLandmarker.create_from_options(options)
        self._vision, self.video, self._frame_ms = vision, video, 0

    def landmarks(self, rgb: np.ndarray) -> list[np.ndarray]:
        """One float32 ``[468, 2]`` array (x, y normalised to 0..1) per face found; ``[]`` for none."""
        image = _image(self._vision, rgb)
        if self.video:
            self._frame_ms += 40  # any increasing timestamps; 25 fps like everything else here
            result = self._call("detect_for_video", image, self._frame_ms)
        else:
            result = self._call("detect", image)
        return [np.array([[p.x, p.y] for p in face[:MESH_POINTS]], np.float32) for face in result.face_landmarks]
