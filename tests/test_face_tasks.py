"""Face detection and face mesh on current mediapipe (Tasks API) with the model file in the package:
the same boxes as mediapipe 0.10's solutions on our photographs (docs/audio_and_masks.md has the
table), small faces in big photos through the tiled pass, quiet start-up, clear errors."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from magicinfinite_core.errors import MaskError
from magicinfinite_core.inputs import face_tasks
from magicinfinite_core.inputs.masks import FaceDetector, _tile_starts

from .comfyui_server import REPO_ROOT

pytest.importorskip("mediapipe.tasks.python")
skimage_data = pytest.importorskip("skimage.data")

# Boxes mediapipe 0.10.21 (solutions.face_detection, short range) gave on the same images.
OLD_ASTRONAUT_BOX = (177.6, 82.9, 272.9, 178.2)
OLD_LUISPEDRO_BOX = (1284.9, 683.4, 1758.9, 1157.4)  # in the group stand-in below


def _paste(canvas_wh, items):
    canvas = Image.new("RGB", canvas_wh, (128, 128, 128))
    for img, width, xy in items:
        h = round(img.shape[0] * width / img.shape[1])
        canvas.paste(Image.fromarray(img).resize((width, h), Image.LANCZOS), xy)
    return np.asarray(canvas)


def test_model_bundle_is_in_the_package_with_its_licence():
    assert face_tasks.LANDMARKER_TASK.is_file()
    with zipfile.ZipFile(face_tasks.LANDMARKER_TASK) as z:
        names = {i.filename: i for i in z.infolist()}
    assert face_tasks.DETECTOR_MEMBER in names and "face_landmarks_detector.tflite" in names
    assert all(i.compress_type == zipfile.ZIP_STORED for i in names.values())  # the runtime wants it stored
    notice = (face_tasks.MODEL_DIR / "NOTICE.md").read_text()
    assert "Apache" in notice and (face_tasks.MODEL_DIR / "LICENSE").read_text().lstrip().startswith("Apache License")


def test_blazeface_boxes_match_the_old_solutions_api():
    with face_tasks.BlazeFace() as det:
        boxes = det.detect(skimage_data.astronaut())
    assert len(boxes) == 1
    assert np.abs(np.array(boxes[0][:4]) - OLD_ASTRONAUT_BOX).max() < 3.0 and boxes[0][4] > 0.9


def test_face_mesh_gives_the_468_point_mesh_and_closes():
    mesh = face_tasks.FaceMesh(max_faces=2)
    faces = mesh.landmarks(skimage_data.astronaut())
    mesh.close()
    assert len(faces) == 1 and faces[0].shape == (468, 2) and faces[0].dtype == np.float32
    lip_top, lip_bottom, chin = faces[0][13], faces[0][14], faces[0][152]
    assert lip_top[1] <= lip_bottom[1] < chin[1] and 0.3 < lip_top[0] < 0.55  # face left of centre
    with pytest.raises(RuntimeError, match="closed"):
        mesh.landmarks(skimage_data.astronaut())
    with face_tasks.FaceMesh(video=True) as tracker:  # tracking mode over consecutive frames
        frames = [tracker.landmarks(skimage_data.astronaut()) for _ in range(3)]
    assert all(len(f) == 1 for f in frames)
    with pytest.raises(ValueError, match="uint8 RGB"):
        face_tasks.BlazeFace().detect(np.zeros((64, 64), np.uint8))


def test_small_faces_in_big_photos_are_found_by_the_tiled_pass():
    astronaut = skimage_data.astronaut()
    luis = np.asarray(Image.open(REPO_ROOT / "training/data/photo_assets/luispedro.jpg").convert("RGB"))
    full_length = _paste((1024, 1536), [(astronaut, 256, (384, 40))])  # face ~5 % of the width
    group = _paste((2000, 1428), [(astronaut, 1100, (80, 300)), (luis, 700, (1200, 400))])
    with FaceDetector(model="short") as short:
        assert short.detect(full_length) == [] and len(short.detect(group, min_faces=2)) == 1
    with FaceDetector() as det:
        (face,) = det.detect(full_length)
        assert 440 < face.center[0] < 560 and 60 < face.center[1] < 150
        left, right = det.detect(group, min_faces=2)
    assert left.center[0] < 1000 < right.center[0]
    assert np.abs(np.array([right.x0, right.y0, right.x1, right.y1]) - OLD_LUISPEDRO_BOX).max() < 3.0
    with FaceDetector() as det:  # no faces: the tiles add no false ones
        assert det.detect(_paste((1600, 1200), [(skimage_data.chelsea(), 800, (400, 300))])) == []


def test_tiles_cover_the_image_edge_to_edge():
    assert _tile_starts(1000, 400, 200) == [0, 200, 400, 600]
    assert _tile_starts(1100, 400, 200) == [0, 200, 400, 600, 700]
    assert _tile_starts(400, 400, 200) == [0]


def _python(code: str) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter (what it imports at start-up is what a command imports)."""
    return subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_start_up_is_quiet_and_nothing_prints_at_exit():
    code = ("from skimage import data\nfrom magicinfinite_core.inputs.masks import detect_faces\n"
            "from training.data.photo_face import detect_landmarks\n"
            "img = data.astronaut()\nprint(len(detect_faces(img)), detect_landmarks(img).shape)\n")
    done = _python(code)
    assert done.returncode == 0 and done.stdout.strip() == "1 (468, 2)", done.stderr
    assert done.stderr == ""  # no TF Lite / absl lines, no finaliser noise


def test_mediapipe_drawing_helpers_load_only_when_used():
    """Their matplotlib import cost 0.3 s before a command's first frame; whoever uses them still gets them."""
    code = ("import sys\nfrom magicinfinite_core.inputs.face_tasks import _vision\nvision = _vision()\n"
            "print('matplotlib' in sys.modules, vision.FaceDetector.__name__)\n"
            "print(vision.drawing_utils.DrawingSpec().thickness, 'matplotlib.pyplot' in sys.modules)\n"
            "print(len(vision.drawing_styles.get_default_face_mesh_contours_style()) > 0)\n")
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "FaceDetector", "2", "True", "True"]


def test_without_mediapipe_the_error_says_what_to_install():
    code = ("import sys\nsys.modules['mediapipe'] = None\n"
            "from magicinfinite_core.inputs.masks import FaceDetector\n"
            "from magicinfinite_core.errors import MaskError\n"
            "try:\n    FaceDetector()\nexcept MaskError as e:\n    print(e)\n")
    done = _python(code)
    assert "pip install 'mediapipe>=1.2'" in done.stdout and "draw the masks" in done.stdout, done.stderr
    assert issubclass(MaskError, ValueError)
