"""Face detection on real photos, speaker masks, token masks, the overlay preview, and bad masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data

from magicinfinite_core.errors import MaskError
from magicinfinite_core.inputs.masks import (
    FaceBox,
    FaceDetector,
    as_mask_stack,
    detect_faces,
    draw_speaker_overlay,
    face_region_mask,
    resolve_overlaps,
    speaker_color,
    speaker_masks,
    token_masks,
)

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="module")
def detector():
    with FaceDetector() as det:
        yield det


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut()


@pytest.fixture(scope="module")
def three_faces(astronaut):
    """Three astronaut head crops side by side (576x256); mediapipe's short-range model finds all 3."""
    crop = astronaut[0:256, 120:312]
    return np.ascontiguousarray(np.concatenate([crop, crop, crop], axis=1))


# -------------------------------------------------------------------------------------- detection


def test_astronaut_has_one_face_at_the_right_place(detector, astronaut):
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    f = faces[0]
    cx, cy = f.center
    # measured: x 178..273, y 83..178 (brows to chin); the face is at x ~170-280, y ~60-190
    assert 200 < cx < 250 and 110 < cy < 150
    assert 170 <= f.x0 < cx < f.x1 <= 285 and 60 <= f.y0 < cy < f.y1 <= 195
    assert f.score > 0.7


def test_detect_faces_accepts_comfy_image_tensor(detector, astronaut):
    t = torch.from_numpy(astronaut).float()[None] / 255.0  # ComfyUI IMAGE [1, H, W, 3] float
    faces = detect_faces(t, detector=detector)
    assert len(faces) == 1


def test_face_region_covers_mouth_and_chin_not_background(detector, astronaut):
    m = face_region_mask(astronaut, detector=detector)
    assert m.shape == (512, 512) and m.dtype == np.float32 and set(np.unique(m)) <= {0.0, 1.0}
    assert m[160, 225] == 1 and m[185, 225] == 1  # mouth, chin
    assert m[30, 30] == 0 and m[400, 400] == 0 and m[300, 225] == 0  # flag, helmet, suit


def test_face_region_union_over_video_frames(detector, astronaut):
    shifted = np.roll(astronaut, 60, axis=1)
    video = np.stack([astronaut, shifted])  # [F, H, W, 3]
    m0 = face_region_mask(astronaut, detector=detector)
    mu = face_region_mask(video, detector=detector)
    assert (mu >= m0).all() and mu.sum() > m0.sum() * 1.2


def test_no_face_raises_or_uses_documented_fallback(detector):
    grad = np.tile(np.linspace(0, 255, 256, dtype=np.uint8)[None, :, None], (256, 1, 3))
    assert detector.detect(grad) == []
    with pytest.raises(MaskError, match="no face found.*draw the speaker mask.*fallback='center'"):
        face_region_mask(grad, detector=detector)
    m = face_region_mask(grad, detector=detector, fallback="center")
    assert m[128, 128] == 1 and m[5, 5] == 0 and m.sum() == pytest.approx(128 * 154, rel=0.02)
    with pytest.raises(MaskError, match="no face found"):
        speaker_masks(grad, 1, detector=detector)
    two = speaker_masks(grad, 2, detector=detector, fallback="center")
    assert two.shape == (2, 256, 256) and two[0, 128, 64] == 1 and two[1, 128, 192] == 1


# ---------------------------------------------------------------------------------- speaker masks


def test_three_faces_two_masks_requested(detector, three_faces):
    faces = detector.detect(three_faces)
    assert len(faces) == 3 and [f.center[0] for f in faces] == sorted(f.center[0] for f in faces)
    with pytest.raises(MaskError, match="found 3 faces but 2 speaker mask.*face_indices"):
        speaker_masks(three_faces, 2, detector=detector)
    m = speaker_masks(three_faces, 2, face_indices=[0, 2], detector=detector)
    assert m.shape == (2, 256, 576)
    assert m[0, 130, 105] == 1 and m[1, 130, 490] == 1 and m[:, 130, 300].sum() == 0
    with pytest.raises(MaskError, match="asks for face 4"):
        speaker_masks(three_faces, face_indices=[0, 4], detector=detector)
    all3 = speaker_masks(three_faces, 3, detector=detector)
    assert all3.shape == (3, 256, 576) and all3.sum(0).max() == 1


def test_user_masks_pass_through_and_are_validated(astronaut):
    a = torch.zeros(512, 512)
    a[50:200, 150:300] = 1.0
    b = torch.zeros(512, 512)
    b[300:400, 50:150] = 0.8
    m = speaker_masks(astronaut, 2, masks=torch.stack([a, b]))
    assert m.shape == (2, 512, 512) and m[0].sum() == 150 * 150 and m[1].sum() == 100 * 100
    m_list = speaker_masks(astronaut, masks=[a[None], b])  # ComfyUI MASKs [1, H, W] in a list
    assert np.array_equal(m, m_list)
    with pytest.raises(MaskError, match="is 256x256 but the image is 512x512.*resize"):
        speaker_masks(astronaut, masks=torch.zeros(256, 256))
    with pytest.raises(MaskError, match="dtype uint8.*divide by 255"):
        speaker_masks(astronaut, masks=(a.numpy() * 255).astype(np.uint8))
    with pytest.raises(MaskError, match="values in"):
        speaker_masks(astronaut, masks=a * 3)
    with pytest.raises(MaskError, match="NaN"):
        speaker_masks(astronaut, masks=torch.full((512, 512), float("nan")))
    with pytest.raises(MaskError, match="mask 1 is empty.*paint"):
        speaker_masks(astronaut, masks=torch.stack([a, torch.zeros(512, 512)]))
    with pytest.raises(MaskError, match="2 masks given for 3 speaker"):
        speaker_masks(astronaut, 3, masks=torch.stack([a, b]))
    with pytest.raises(MaskError, match="different sizes"):
        as_mask_stack([a, torch.ones(10, 10)])
    with pytest.raises(MaskError, match="shape"):
        as_mask_stack(torch.ones(2, 3, 4, 5))


def test_boxes_and_overlap_rules(astronaut):
    boxes = [(100, 100, 300, 300), (200, 100, 400, 300)]  # overlap x 200..300
    near = speaker_masks(astronaut, boxes=boxes)
    assert near.sum(0).max() == 1  # disjoint
    assert near[0, 150, 240] == 1 and near[1, 150, 260] == 1  # split at x=250 (equidistant line)
    first = speaker_masks(astronaut, boxes=boxes, overlap="first")
    assert first[0, 150, 290] == 1 and first[1, 150, 290] == 0
    with pytest.raises(MaskError, match="entirely inside"):
        speaker_masks(astronaut, boxes=[(0, 0, 512, 512), (10, 10, 20, 20)], overlap="first")
    with pytest.raises(MaskError, match="outside the 512x512"):
        speaker_masks(astronaut, boxes=[(600, 600, 700, 700)])
    with pytest.raises(MaskError, match="is empty"):
        speaker_masks(astronaut, boxes=[(10, 10, 5, 20)])
    with pytest.raises(MaskError, match="not both"):
        speaker_masks(astronaut, masks=np.ones((512, 512), np.float32), boxes=boxes)


def test_resolve_overlaps_nearest_uses_given_centres():
    m = np.ones((2, 10, 10), np.float32)
    out = resolve_overlaps(m, [(0.0, 0.0), (9.0, 9.0)])
    assert out[0, 0, 0] == 1 and out[1, 9, 9] == 1 and out.sum() == 100


def test_bad_images(detector):
    with pytest.raises(MaskError, match="divide by 255"):
        detect_faces(np.full((64, 64, 3), 200.0), detector=detector)
    with pytest.raises(MaskError, match="shape"):
        detect_faces(np.zeros((64, 64, 5), np.uint8), detector=detector)
    with pytest.raises(MaskError, match="batch of 2"):
        detect_faces(np.zeros((2, 64, 64, 3), np.uint8), detector=detector)


# ------------------------------------------------------------------------------------ token masks


def test_token_masks_static_and_threshold():
    m = np.zeros((2, 64, 64), np.float32)
    m[0, 0:16, 0:16] = 1  # exactly token (0, 0) of an 8x8 grid (8x8 px tokens) ... and (0,1),(1,0),(1,1)
    m[1, 40:42, 40:48] = 1  # 2 rows of token (5, 5): 25% -> on (threshold is >= 0.25)
    tm = token_masks(m, latent_frames=3, grid_hw=(8, 8))
    assert tm.shape == (2, 3, 8, 8) and tm.dtype == torch.float32
    assert set(tm.unique().tolist()) <= {0.0, 1.0}
    assert tm[0, 0].sum() == 4 and tm[0, 0, :2, :2].all()
    assert tm[1, 0, 5, 5] == 1 and tm[1, 0].sum() == 1
    assert torch.equal(tm[:, 0], tm[:, 2])
    m[1] = 0
    m[1, 40, 40:44] = 1  # 4 px of 64 = 6%: below threshold, kept as the best token
    tm = token_masks(m, 1, (8, 8))
    assert tm[1, 0].sum() == 1 and tm[1, 0, 5, 5] == 1


def test_token_masks_per_frame_causal_grouping():
    T, fpl = 3, 4
    nf = 1 + fpl * (T - 1)  # 9 video frames
    m = np.zeros((1, nf, 32, 32), np.float32)
    m[0, 0, :16, :16] = 1  # frame 0 -> latent 0 only
    m[0, 4, 16:, 16:] = 1  # frame 4 -> latent 1 (frames 1..4)
    m[0, 5, :16, 16:] = 1  # frame 5 -> latent 2 (frames 5..8)
    tm = token_masks(m, T, (2, 2))
    assert tm[0, 0].tolist() == [[1, 0], [0, 0]]
    assert tm[0, 1].tolist() == [[0, 0], [0, 1]]
    assert tm[0, 2].tolist() == [[0, 1], [0, 0]]
    with pytest.raises(MaskError, match="cover 8 video frames but 3 latent frames need 9"):
        token_masks(m[:, :8], T, (2, 2))


def test_token_masks_non_divisible_grid_and_bad_input():
    m = torch.zeros(1, 100, 90)
    m[0, 30:70, 30:60] = 1
    tm = token_masks(m, 2, (7, 9))
    assert tm.shape == (1, 2, 7, 9) and 0 < tm.sum() < 63
    with pytest.raises(MaskError, match="dtype"):
        token_masks(np.ones((1, 8, 8), np.int64), 1, (2, 2))
    with pytest.raises(MaskError, match="shape"):
        token_masks(np.ones((8, 8), np.float32), 1, (2, 2))


# ---------------------------------------------------------------------------------------- overlay


def test_overlay_png_artifact(detector, three_faces):
    masks = speaker_masks(three_faces, face_indices=[0, 1, 2], detector=detector)
    ov = draw_speaker_overlay(three_faces, masks)
    assert ov.shape == three_faces.shape and ov.dtype == np.uint8
    # inside each region (below the number badge) the tint moves towards that speaker's colour
    for k, x in enumerate([105, 300, 491]):
        px = ov[150, x].astype(float) - three_faces[150, x].astype(float)
        col = np.array(speaker_color(k), float) - three_faces[150, x].astype(float)
        assert np.dot(px, col) > 0
    assert np.array_equal(ov[5, 5], three_faces[5, 5])  # untouched outside masks
    ARTIFACTS.mkdir(exist_ok=True)
    from PIL import Image

    Image.fromarray(ov).save(ARTIFACTS / "speaker_overlay_three_faces.png")
    assert (ARTIFACTS / "speaker_overlay_three_faces.png").stat().st_size > 1000


def test_overlay_accepts_token_masks(astronaut):
    m = np.zeros((1, 512, 512), np.float32)
    m[0, 100:200, 150:300] = 1
    tm = token_masks(m, 1, (32, 32))[:, 0]
    ov = draw_speaker_overlay(astronaut, tm)
    assert not np.array_equal(ov[150, 200], astronaut[150, 200])
    with pytest.raises(MaskError, match="aspect"):
        draw_speaker_overlay(astronaut, np.ones((1, 10, 20), np.float32))


def test_facebox_expand_clips_to_image():
    b = FaceBox(0, 0, 100, 100).expand(image_hw=(120, 120))
    assert b.x0 == 0 and b.y0 == 0 and b.x1 <= 120 and b.y1 <= 120
