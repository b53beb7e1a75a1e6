"""Face parts a decoder steers by, found by face mesh on the picture: the mouths' lip seams and the rigid upper faces.

Why a module of its own: framing, the motion autoencoder and the evaluation all read the mouth the same way, and the
autoencoder must not import framing (which builds the autoencoder's reference)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from magicinfinite_core.media.expression import MouthCorners
from magicinfinite_core.media.mouth_opening import LipSeam, lip_seam
from magicinfinite_core.media.rigid_face import RigidFace, rigid_face


def find_face_parts(picture: np.ndarray, regions: Sequence[tuple[int, int, int, int]], faces: int = 1,
                    mesh_side: int = 384, heads: bool = False) -> tuple[tuple[LipSeam, ...], tuple[RigidFace, ...]]:
    """The mouths' lip seams (`media/mouth_opening.py`: closed or open) and the rigid upper faces
    (`media/rigid_face.py`) of up to `faces` faces in each of `regions` (pixel boxes of the uint8
    picture), found by face mesh on each region brought to about `mesh_side` px; a face that face mesh
    does not find has neither."""
    from PIL import Image

    from magicinfinite_core.inputs.face_tasks import FaceMesh, face_oval_loop

    seams, rigid = [], []
    oval = face_oval_loop()
    with FaceMesh(max_faces=faces) as mesh:
        for k, (x0, y0, x1, y1) in enumerate(regions):
            crop = np.ascontiguousarray(picture[y0:y1, x0:x1])
            s = mesh_side / max(crop.shape[:2])
            if abs(s - 1) > 0.05:
                crop = np.asarray(Image.fromarray(crop).resize((max(1, round(crop.shape[1] * s)),
                                                                max(1, round(crop.shape[0] * s))), Image.LANCZOS))
            for lm in mesh.landmarks(crop):
                pts = lm * np.array([crop.shape[1], crop.shape[0]], np.float32) / s + np.array([x0, y0], np.float32)
                seam = lip_seam(pts, picture, region=k)
                if seam is not None:
                    seams.append(seam)
                face = rigid_face(pts, oval, picture.shape[:2], head=heads)
                if face is not None:
                    rigid.append(face)
    return tuple(seams), tuple(rigid)


def find_mouth(picture: np.ndarray) -> MouthCorners | None:
    """The first face's mouth in a uint8 RGB picture [H, W, 3], as decoding finds it (`find_face_parts`: face
    mesh on the picture brought to a common size, the lip seam's corners); None where face mesh finds no mouth."""
    seams, _ = find_face_parts(np.ascontiguousarray(picture), [(0, 0, picture.shape[1], picture.shape[0])])
    return seams[0].corners if seams else None
