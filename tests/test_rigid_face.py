"""An upper face that moves as one piece (media/rigid_face.py): the hold on a field, the region face mesh
finds on real photos (real mediapipe), and the decoder with it switched on."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from magicinfinite_core.inputs.face_parts import find_face_parts
from magicinfinite_core.inputs.face_tasks import FACE_TOP, FaceMesh, face_oval_edges, face_oval_loop
from magicinfinite_core.inputs.framing import frame_portrait
from magicinfinite_core.media.motion_autoencoder import MotionAutoencoder, MotionAutoencoderConfig
from magicinfinite_core.media.rigid_face import (
    BROWS,
    NOSE_BOTTOM,
    RigidFace,
    head_share_kept,
    hold_head,
    hold_rigid,
    rigid_face,
)
from training.eval import real_photos as rp

NOSE_TIP, LEFT_EYE, RIGHT_EYE, UPPER_LIP, LOWER_LIP, CHIN = 1, 159, 386, 13, 14, 152


def _square_face(x0: int = 10, y0: int = 10, side: int = 20, fade: int = 4) -> RigidFace:
    """A square rigid part with a linear fade of `fade` px around it (the hold does not care how it was made)."""
    core = np.zeros((side + 2 * fade, side + 2 * fade), bool)
    core[fade:-fade, fade:-fade] = True
    dist = np.maximum(np.abs(np.arange(core.shape[0]) - (core.shape[0] - 1) / 2)[:, None],
                      np.abs(np.arange(core.shape[1]) - (core.shape[1] - 1) / 2)[None, :]) - (side - 1) / 2
    weight = np.clip(1 - dist / fade, 0, 1).astype(np.float32)
    return RigidFace(x0 - fade, y0 - fade, weight, core)


def _hopper_landmarks(tmp_path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    picture = np.asarray(Image.open(rp.heldout_photo(rp.HALF_LENGTH, tmp_path)).convert("RGB"))
    with FaceMesh() as mesh:
        lm = mesh.landmarks(picture)[0]
    return picture, lm * np.array([picture.shape[1], picture.shape[0]], np.float32)


def test_the_face_oval_loop_is_mediapipes_oval_in_order():
    loop = face_oval_loop()
    edges = {frozenset(e) for e in face_oval_edges()}
    assert loop[0] == FACE_TOP and len(set(loop)) == len(loop) == len(edges) == 36
    assert all(frozenset((a, b)) in edges for a, b in zip(loop, loop[1:] + loop[:1], strict=True))


def test_a_local_wobble_is_held_and_a_whole_head_motion_is_kept():
    face = _square_face()
    nod = torch.zeros(3, 2, 48, 48)
    nod[:, 1] = torch.tensor([0.0, -2.0, 1.5]).view(3, 1, 1)  # the whole picture moves: a nod
    held = nod.clone()
    assert hold_rigid(held, face, (0, 0))
    assert torch.allclose(held, nod, atol=1e-6)
    wobble = nod.clone()
    wobble[:, 1, 24:33, 12:28] += 1.0  # the rigid part's lower rows and the fade below move on their own
    wobble[:, 0, 40:, :] = 3.0  # far below the face: a jaw, untouched
    held = wobble.clone()
    hold_rigid(held, face, (0, 0))
    assert torch.allclose(held[:, :, 10:30, 10:30], nod[:, :, 10:30, 10:30], atol=1e-6)  # the rigid part: the nod
    assert torch.equal(held[:, :, 36:], wobble[:, :, 36:])  # beyond the fade: unchanged
    w = torch.from_numpy(face.weight)[30 - face.y0 : 33 - face.y0, 12 - face.x0 : 28 - face.x0]
    assert 0 < float(w.min()) and float(w.max()) < 1  # the fade: held in proportion to its weight
    expected = wobble[:, 1, 30:33, 12:28] + w * (nod[:, 1, 30:33, 12:28] - wobble[:, 1, 30:33, 12:28])
    assert torch.allclose(held[:, 1, 30:33, 12:28], expected, atol=1e-6)


def test_the_hold_is_skipped_when_off_or_outside_the_region_and_keeps_the_fields_precision():
    face = _square_face()
    field = torch.randn(2, 2, 48, 48, generator=torch.Generator().manual_seed(0))
    same = field.clone()
    assert not hold_rigid(same, face, (0, 0), gain=0.0) and torch.equal(same, field)
    assert not hold_rigid(same, face, (100, 100)) and torch.equal(same, field)  # the region lies elsewhere
    half = field.to(torch.bfloat16)
    assert hold_rigid(half, face, (0, 0)) and half.dtype == torch.bfloat16
    full = field.clone()
    hold_rigid(full, face, (0, 0))
    assert torch.allclose(half.float(), full, atol=0.05)
    part = field.clone()  # a region that holds only the face's right half: its median is of what it holds
    assert hold_rigid(part, face, (20, 0))


def _bump(shape: tuple[int, int], cx: float, cy: float, sigma: float) -> np.ndarray:
    ys, xs = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    d2 = ((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma * sigma)
    return (np.exp(-d2) * (d2 < 4.5)).astype(np.float32)


def test_rigid_brows_keep_each_brows_own_lift_and_hold_the_rest_with_the_nose():
    """A nod, the left brow raised by a bump of 1.5 px and the right lowered by 1, and a jitter over the brows
    that is not bump-shaped: with `brows` 1 each brow keeps its own lift on top of the nod and the jitter is held;
    with `brows` 0 (as before) the brows move with the nose; the nose keeps the nod either way."""
    face = _square_face(side=24)
    shape = face.weight.shape
    left, right = _bump(shape, 10, 10, 3.0), _bump(shape, 22, 10, 3.0)
    face = dataclasses.replace(face, brows=(left, right))
    nod = torch.zeros(4, 2, 48, 48)
    nod[:, 1] = torch.tensor([0.0, -1.0, 0.5, 2.0]).view(4, 1, 1)
    field = nod.clone()
    box = (slice(face.y0, face.y0 + shape[0]), slice(face.x0, face.x0 + shape[1]))
    field[:, 1, box[0], box[1]] += torch.from_numpy(1.5 * left - 1.0 * right)
    checker = torch.from_numpy((np.indices((10, 24)).sum(0) % 2 * 2 - 1).astype(np.float32)) * 0.7
    field[:, 1, 8:18, 10:34] += checker  # jitter: cell by cell, no bump's shape
    kept, held = field.clone(), field.clone()
    assert hold_rigid(kept, face, (0, 0), brows=1.0) and hold_rigid(held, face, (0, 0))
    ly, lx, ry, rx = face.y0 + 10, face.x0 + 10, face.y0 + 10, face.x0 + 22
    assert torch.allclose(kept[:, 1, ly, lx], nod[:, 1, 0, 0] + 1.5, atol=0.15)  # the left brow's raise, kept
    assert torch.allclose(kept[:, 1, ry, rx], nod[:, 1, 0, 0] - 1.0, atol=0.15)  # the right brow's drop, kept
    assert torch.allclose(held[:, 1, ly, lx], nod[:, 1, 0, 0], atol=1e-5)  # without: the brows move with the nose
    nose = (slice(face.y0 + 22, face.y0 + 28), slice(face.x0 + 8, face.x0 + 24))
    assert torch.allclose(kept[:, :, nose[0], nose[1]], nod[:, :, nose[0], nose[1]], atol=1e-5)
    smooth = torch.from_numpy(1.5 * left - 1.0 * right)[None] * torch.from_numpy(face.weight)
    jitter = (kept[:, 1, box[0], box[1]] - nod[:, 1, box[0], box[1]] - smooth)[:, torch.from_numpy(face.core)]
    assert float(jitter.abs().max()) < 0.15  # the checker is held: what comes back is the bumps alone


def test_a_twitch_below_still_brows_does_not_move_the_part():
    """On a still prompt the DiT shifts the eyes and nose 0.1-0.3 px on some frames while the forehead and brows stay.
    Here that twitch covers 46 % of the part (more than half of it without the brows): the part, brows kept, holds
    still on every frame. Taking the median without the brows flipped the whole part with such twitches (session 22's
    60 s still video: 0 on 77 % of frames, 0.1-0.3 px on the rest)."""
    face = _square_face(side=24)
    shape = face.weight.shape
    face = dataclasses.replace(face, brows=(_bump(shape, 10, 10, 3.0), _bump(shape, 22, 10, 3.0)), height=100.0)
    field = torch.zeros(4, 2, 48, 48)  # the brows' dead zone (0.4 px here) holds their lift against the eyes
    rows = slice(face.y0 + 17, face.y0 + 28)  # 11 of the part's 24 rows, below the brows
    field[1::2, 1, rows, face.x0 + 4 : face.x0 + 28] = 0.15
    core = torch.from_numpy(face.core)
    assert 0.5 > float(field[1, 1, face.y0 : face.y0 + shape[0], face.x0 : face.x0 + shape[1]][core].gt(0).float().mean()) > 0.4
    assert hold_rigid(field, face, (0, 0), brows=1.0)
    part = field[:, :, face.y0 : face.y0 + shape[0], face.x0 : face.x0 + shape[1]][:, :, core]
    assert float(part.abs().max()) < 1e-6


def test_face_mesh_finds_grace_hoppers_rigid_upper_face(tmp_path):
    picture, lm = _hopper_landmarks(tmp_path)
    face = rigid_face(lm, face_oval_loop(), picture.shape[:2])
    assert face is not None

    def weight(i: int) -> float:
        x, y = (int(round(float(v))) for v in lm[i])
        return float(face.weight[y - face.y0, x - face.x0])

    def core(i: int) -> bool:
        x, y = (int(round(float(v))) for v in lm[i])
        return bool(face.core[y - face.y0, x - face.x0])

    assert core(LEFT_EYE) and core(RIGHT_EYE) and core(NOSE_TIP)
    assert not core(UPPER_LIP) and not core(LOWER_LIP) and not core(CHIN)
    assert weight(NOSE_TIP) == 1.0 and weight(CHIN) == 0.0 and weight(LOWER_LIP) < 0.5
    below = face.weight[int(lm[NOSE_BOTTOM, 1]) + 1 - face.y0 :, int(lm[NOSE_TIP, 0]) - face.x0]
    assert 0 < below[0] < 1 and np.all(np.diff(below[: len(below) // 2]) <= 1e-6)  # fades out below the nose
    assert face.weight.min() >= 0 and face.weight.max() == 1.0


def test_a_small_brow_lift_is_held_and_a_large_one_kept():
    """`BROW_DEADZONE` of a 100 px face: a brow lifted under it stays with the nose, one lifted over three times it
    keeps its whole lift."""
    from magicinfinite_core.media.rigid_face import BROW_DEADZONE

    face = _square_face(side=24)
    left, right = _bump(face.weight.shape, 10, 10, 3.0), _bump(face.weight.shape, 22, 10, 3.0)
    face = dataclasses.replace(face, brows=(left, right), height=100.0)
    zone = BROW_DEADZONE * face.height
    field = torch.zeros(2, 2, 48, 48)
    box = (slice(face.y0, face.y0 + left.shape[0]), slice(face.x0, face.x0 + left.shape[1]))
    field[:, 1, box[0], box[1]] += torch.from_numpy(0.8 * zone * left + 3.5 * zone * right)
    hold_rigid(field, face, (0, 0), brows=1.0)
    nose = field[:, 1, face.y0 + 26, face.x0 + 16]
    assert torch.allclose(field[:, 1, face.y0 + 10, face.x0 + 10], nose, atol=1e-6)  # under the zone: with the nose
    assert torch.allclose(field[:, 1, face.y0 + 10, face.x0 + 22], nose + 3.5 * zone, atol=0.1 * zone)  # kept


def test_face_mesh_puts_a_bump_on_each_of_grace_hoppers_brows(tmp_path):
    picture, lm = _hopper_landmarks(tmp_path)
    face = rigid_face(lm, face_oval_loop(), picture.shape[:2])
    assert len(face.brows) == 2
    for idx, bump in zip(BROWS, face.brows, strict=True):
        assert bump.shape == face.weight.shape
        x, y = (int(round(float(v))) for v in lm[list(idx)].mean(0))
        assert bump[y - face.y0, x - face.x0] > 0.95  # its peak sits on the brow
        ex, ey = (int(round(float(v))) for v in lm[NOSE_BOTTOM])
        assert bump[ey - face.y0, ex - face.x0] < 0.05  # and barely reaches the nose's bottom (measured: 0.012)


def test_no_face_no_hold():
    assert find_face_parts(np.full((256, 256, 3), 128, np.uint8), [(0, 0, 256, 256)]) == ((), ())
    flat = np.zeros((468, 2), np.float32)  # every landmark on one point: nothing inside
    assert rigid_face(flat, face_oval_loop(), (64, 64)) is None


def test_the_decoder_holds_a_real_portraits_upper_face_still_while_its_jaw_moves(tmp_path):
    """Grace Hopper framed as generate() frames her, a latent whose nose row of cells moves 2 working px and
    whose jaw moves 3: with `rigid_upper_face` the forehead-to-nose region shows the portrait itself; off, the
    nose moves. The jaw moves the same either way, and a whole-grid motion (a nod) decodes the same."""
    from PIL import Image

    picture = np.asarray(Image.open(rp.heldout_photo(rp.HALF_LENGTH, tmp_path)).convert("RGB"))
    _, _, _, ref = frame_portrait(picture, (128, 128), 1, rigid_faces=True)
    assert len(ref.rigid_faces) == 1 and ref.seams == ()
    face = ref.rigid_faces[0]
    cfg = MotionAutoencoderConfig(residual_channels=0, rigid_upper_face=1.0)
    held_ae, free_ae = MotionAutoencoder(cfg), MotionAutoencoder(dataclasses.replace(cfg, rigid_upper_face=0.0))
    x0, y0, x1, y1 = ref.box
    cell_px = (y1 - y0) / cfg.grid
    nose_y = face.y0 + int(np.nonzero(face.core.any(1))[0].max())  # the rigid part's lowest row
    nose_cell = int((nose_y - y0) / cell_px)
    latent = torch.zeros(1, cfg.latent_channels, 2, cfg.grid, cfg.grid)
    slots = latent.view(1, cfg.temporal_compression_ratio, cfg.slot_channels, 2, cfg.grid, cfg.grid)
    slots[:, :, 1, 1, nose_cell, :] = -2.0 * cfg.flow_scale  # the nose row of cells wobbles
    slots[:, :, 1, 1, nose_cell + 3 :, :] = -3.0 * cfg.flow_scale  # the jaw drops
    held, free = held_ae.decode(latent, ref)[0, :, 2], free_ae.decode(latent, ref)[0, :, 2]
    portrait = ref.image[0]
    upper = torch.zeros(portrait.shape[-2:], dtype=torch.bool)
    upper[face.y0 : face.y0 + face.core.shape[0], face.x0 : face.x0 + face.core.shape[1]] = torch.from_numpy(face.core)
    assert float((held - portrait)[:, upper].abs().max()) < 1e-4  # the upper face: the portrait itself
    assert float((free - portrait)[:, upper].abs().mean()) > 0.005  # without the hold the nose moves
    unweighted = np.nonzero(~face.weight.any(1))[0] + face.y0
    jaw = slice(int(unweighted[unweighted > nose_y].min()), y1)
    assert torch.equal(held[:, jaw], free[:, jaw])  # below the fade: the same jaw
    nod = torch.zeros_like(latent)
    nod.view_as(slots)[:, :, 1] = -2.0 * cfg.flow_scale
    assert torch.allclose(held_ae.decode(nod, ref), free_ae.decode(nod, ref), atol=1e-5)
    # per frame: decoding the frames in two batches equals decoding them at once
    codes = held_ae.slot_codes(latent)[0]
    whole = held_ae.decode_frames(codes, ref)
    parts = torch.cat([held_ae.decode_frames(codes[:3], ref), held_ae.decode_frames(codes[3:], ref)])
    assert torch.equal(whole, parts)


def test_the_demo_bundle_holds_upper_faces_and_generate_finds_them(tmp_path):
    """The shipped bundle switches the hold on, and generate()'s portrait preparation finds a rigid upper face
    for Grace Hopper and for the open smile (which has no lip seam); two speakers as tiles: one each."""
    from magicinfinite_core.generate import GenerateOptions, prepare_portrait
    from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR, load_bundle

    bundle = load_bundle(DEMO_MODEL_DIR, "cpu", distilled=True)
    assert bundle.vae.cfg.rigid_upper_face == 1.0
    notes: list[str] = []
    for photo in (rp.HALF_LENGTH, rp.OPEN_SMILE):
        prep = prepare_portrait(bundle, str(rp.heldout_photo(photo, tmp_path)), 1, GenerateOptions(), notes)
        assert len(prep.reference.rigid_faces) == 1
    group = rp.composite(rp.group_portraits(tmp_path)[:2], 2)
    prep = prepare_portrait(bundle, group, 2, GenerateOptions(), notes)
    faces = prep.reference.rigid_faces
    assert len(faces) == 2
    centres = sorted(f.x0 + f.core.shape[1] / 2 for f in faces)
    tiles = prep.reference.tiles
    assert all(t[0] <= c <= t[2] for c, t in zip(centres, sorted(tiles), strict=True))


def test_half_a_hold_moves_the_rigid_part_halfway():
    gain = 0.5
    face = _square_face()
    field = torch.zeros(1, 2, 48, 48)
    field[:, 1, 24:30, 12:28] = 2.0  # a wobble on part of the rigid region; its median stays 0
    hold_rigid(field, face, (0, 0), gain)
    assert torch.allclose(field[:, 1, 24:30, 12:28], torch.full((1, 6, 16), 2.0 * (1 - gain)))


def test_hold_head_takes_the_heads_motion_off_the_face_and_keeps_the_jaws():
    """A head moving (1.5, -2) px with the jaw dropping 3 px more: kept at 0 the face stands where the picture has
    it and the jaw still drops 3 px; at 0.5 half the head's motion is left; at 1 nothing changes."""
    head = np.zeros((48, 48), np.float32)
    head[4:44, 4:44] = 1.0
    face = dataclasses.replace(_square_face(), head=head, head_origin=(0, 0))
    moving = torch.zeros(2, 2, 48, 48)
    moving[:, 0], moving[:, 1] = 1.5, -2.0
    moving[:, 1, 34:40, 10:30] -= 3.0  # the jaw, below the rigid part (rows 10..29)
    for keep in (0.0, 0.5):
        field = moving.clone()
        assert hold_head(field, face, (0, 0), keep)
        assert torch.allclose(field[:, :, 12:28, 12:28], moving[:, :, 12:28, 12:28] * keep)
        assert torch.allclose(field[:, 1, 34:40, 10:30], torch.full((2, 6, 20), -2.0 * keep - 3.0))
        assert torch.equal(field[:, :, :, 45:], moving[:, :, :, 45:])  # outside the head's weight: untouched
    field = moving.clone()
    assert not hold_head(field, face, (0, 0), 1.0) and torch.equal(field, moving)
    assert not hold_head(field, face, (100, 100), 0.0)  # the face outside the region


def test_a_head_dead_zone_holds_a_small_head_motion_and_keeps_a_large_one():
    """Dead zone 1 px: a head moving (0.6, -0.8) px (1 px long) is held, one moving (3, -4) px (over three times the
    zone) is kept whole, one 2 px long is shortened by half the zone; the jaw's motion relative to the head stays
    either way; with `keep` 0.5 on top, half of what is left."""
    head = np.zeros((48, 48), np.float32)
    head[4:44, 4:44] = 1.0
    face = dataclasses.replace(_square_face(), head=head, head_origin=(0, 0))
    for (dx, dy), keep, left in (((0.6, -0.8), 1.0, (0.0, 0.0)), ((3.0, -4.0), 1.0, (3.0, -4.0)),
                                 ((1.2, -1.6), 1.0, (0.9, -1.2)), ((3.0, -4.0), 0.5, (1.5, -2.0))):
        moving = torch.zeros(1, 2, 48, 48)
        moving[:, 0], moving[:, 1] = dx, dy
        moving[:, 1, 34:40, 10:30] -= 3.0  # the jaw
        field = moving.clone()
        assert hold_head(field, face, (0, 0), keep, deadzone=1.0)
        assert torch.allclose(field[0, :, 12:28, 12:28], torch.tensor(left).view(2, 1, 1).expand(2, 16, 16), atol=1e-5)
        assert torch.allclose(field[0, 1, 34:40, 10:30], torch.full((6, 20), left[1] - 3.0), atol=1e-5)
    field = moving.clone()
    assert not hold_head(field, face, (0, 0), 1.0, deadzone=0.0) and torch.equal(field, moving)


def test_face_mesh_gives_grace_hopper_a_head_weight_over_the_whole_face_fading_into_hat_and_neck(tmp_path):
    picture, lm = _hopper_landmarks(tmp_path)
    assert rigid_face(lm, face_oval_loop(), picture.shape[:2]).head is None  # only when a run asks for it
    face = rigid_face(lm, face_oval_loop(), picture.shape[:2], head=True)
    hx, hy = face.head_origin

    def head(i: int, dy: float = 0.0) -> float:
        x, y = int(round(float(lm[i, 0]))), int(round(float(lm[i, 1]) + dy))
        return float(face.head[y - hy, x - hx])

    face_h = float(np.ptp(lm[list(face_oval_loop()), 1]))
    assert head(NOSE_TIP) == head(LOWER_LIP) == head(CHIN, -0.05 * face_h) == 1.0  # the whole oval, the jaw too
    assert head(CHIN) > 0.5 and head(CHIN, 0.2 * face_h) < head(CHIN)  # fading out down the neck
    assert 0.2 < head(FACE_TOP, -0.15 * face_h) < 1.0  # the hat above the forehead goes along, less
    assert face.head.shape[0] > face.weight.shape[0] and face.head.min() >= 0 and face.head.max() == 1.0


def test_head_motion_zero_holds_a_real_portraits_head_while_its_jaw_moves(tmp_path):
    """Grace Hopper framed with head_motion 0 (the rigid part is found for it even with the hold off), a latent
    that nods the whole grid 2 working px and drops the jaw 3 more: the upper face shows the portrait, the chin
    still moves; at 1 the whole head moves."""
    from PIL import Image

    picture = np.asarray(Image.open(rp.heldout_photo(rp.HALF_LENGTH, tmp_path)).convert("RGB"))
    _, _, _, ref = frame_portrait(picture, (128, 128), 1, head_motion=0.0)
    assert len(ref.rigid_faces) == 1 and ref.head_motion == 0.0
    face = ref.rigid_faces[0]
    cfg = MotionAutoencoderConfig(residual_channels=0, rigid_upper_face=1.0)
    ae = MotionAutoencoder(cfg)
    latent = torch.zeros(1, cfg.latent_channels, 2, cfg.grid, cfg.grid)
    slots = latent.view(1, cfg.temporal_compression_ratio, cfg.slot_channels, 2, cfg.grid, cfg.grid)
    slots[:, :, 1, 1] = -2.0 * cfg.flow_scale  # the whole grid nods
    x0, y0, x1, y1 = ref.box
    chin_y = face.head_origin[1] + int(np.nonzero(face.head.max(1) == 1.0)[0].max())  # the oval's lowest row
    chin_cell = int((chin_y - y0) / ((y1 - y0) / cfg.grid))
    slots[:, :, 1, 1, chin_cell - 2 : chin_cell + 1, 5:11] -= 3.0 * cfg.flow_scale  # the jaw drops further
    still = ae.decode(latent, ref)[0, :, 2]
    moving = ae.decode(latent, dataclasses.replace(ref, head_motion=1.0))[0, :, 2]
    portrait = ref.image[0]
    upper = torch.zeros(portrait.shape[-2:], dtype=torch.bool)
    upper[face.y0 : face.y0 + face.core.shape[0], face.x0 : face.x0 + face.core.shape[1]] = torch.from_numpy(face.core)
    assert float((still - portrait)[:, upper].abs().max()) < 1e-4  # the upper face: the portrait itself
    assert float((moving - portrait)[:, upper].abs().mean()) > 0.01  # kept: the head nods
    chin = slice(chin_y - 40, chin_y + 10)
    assert float((still - portrait)[:, chin].abs().mean()) > 0.005  # the jaw still moves


def test_a_head_dead_zone_holds_a_real_portraits_bob_and_keeps_a_nod_whole(tmp_path):
    """Grace Hopper framed with head_deadzone 0.02 (about 5 px of her face): a latent bobbing the grid under the dead
    zone decodes with the upper face as the portrait; one nodding past three dead zones moves it exactly as
    without a dead zone, and one between them moves it part of the way."""
    from PIL import Image

    picture = np.asarray(Image.open(rp.heldout_photo(rp.HALF_LENGTH, tmp_path)).convert("RGB"))
    _, _, _, ref = frame_portrait(picture, (128, 128), 1, head_deadzone=0.02)
    assert len(ref.rigid_faces) == 1 and ref.head_deadzone == 0.02 and ref.head_motion == 1.0
    face = ref.rigid_faces[0]
    assert face.head is not None and face.height > 100
    cfg = MotionAutoencoderConfig(residual_channels=0, rigid_upper_face=1.0)
    ae = MotionAutoencoder(cfg)
    portrait = ref.image[0]
    upper = torch.zeros(portrait.shape[-2:], dtype=torch.bool)
    upper[face.y0 : face.y0 + face.core.shape[0], face.x0 : face.x0 + face.core.shape[1]] = torch.from_numpy(face.core)
    zone = 0.02 * face.height  # picture pixels
    per_working_px = (ref.box[3] - ref.box[1]) / cfg.working_size

    def upper_change(nod_px: float, deadzone: float) -> float:
        latent = torch.zeros(1, cfg.latent_channels, 2, cfg.grid, cfg.grid)
        latent.view(1, cfg.temporal_compression_ratio, cfg.slot_channels, 2, cfg.grid, cfg.grid)[:, :, 1, 1] = (
            -nod_px / per_working_px * cfg.flow_scale)
        frame = ae.decode(latent, dataclasses.replace(ref, head_deadzone=deadzone))[0, :, 2]
        return float((frame - portrait)[:, upper].abs().mean())

    assert upper_change(0.8 * zone, 0.02) < 1e-4  # the bob is held
    assert upper_change(0.8 * zone, 0.0) > 0.002
    nod = upper_change(3.5 * zone, 0.0)
    assert nod > 0.005 and upper_change(3.5 * zone, 0.02) == pytest.approx(nod, abs=1e-6)  # the nod, whole
    assert 0.1 * upper_change(1.5 * zone, 0.0) < upper_change(1.5 * zone, 0.02) < 0.9 * upper_change(1.5 * zone, 0.0)


def test_the_head_dead_zone_shortens_less_and_less_up_to_three_zones():
    """Dead zone 2 px: held up to 2 px; a 4 px motion keeps 3 px (shortened by half the zone); 6 px and more whole.
    What is kept grows with the motion, never faster than 1.75 px per px (no snap), and just past the zone at the
    motion's own rate, as shortening does."""
    size = torch.tensor([0.0, 1.0, 2.0, 4.0, 6.0, 9.0])
    assert (size * head_share_kept(size, 2.0)).tolist() == pytest.approx([0, 0, 0, 3, 6, 9])
    assert head_share_kept(size, 0.0).tolist() == [1.0] * 6
    x = torch.linspace(0, 10, 1001, dtype=torch.float64)
    slope = (x * head_share_kept(x, 2.0)).diff() / 0.01
    assert bool((slope >= 0).all()) and float(slope.max()) < 1.76
    assert float(slope[198:200].max()) == 0 and 0.99 < float(slope[200:203].max()) < 1.02


def test_head_motion_outside_0_1_or_on_a_pixel_model_is_refused_before_the_audio_is_read(tmp_path):
    from magicinfinite_core.errors import MagicInfiniteError
    from magicinfinite_core.generate import generate
    from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR, load_bundle, random_bundle

    missing = tmp_path / "no_such_voice.wav"  # an audio error would come later: the setting is checked first
    photo = rp.heldout_photo(rp.HALF_LENGTH, tmp_path)
    demo = load_bundle(DEMO_MODEL_DIR, "cpu", distilled=True)
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(MagicInfiniteError, match="head_motion"):
            generate(photo, missing, "", model=demo, out=tmp_path / "a.mp4", distilled=True, head_motion=bad)
    for bad in (0.2, -0.01, float("nan")):
        with pytest.raises(MagicInfiniteError, match="head_deadzone"):
            generate(photo, missing, "", model=demo, out=tmp_path / "a.mp4", distilled=True, head_deadzone=bad)
    with pytest.raises(MagicInfiniteError, match="motion-latent model"):
        generate(photo, missing, "", model=random_bundle(0), out=tmp_path / "b.mp4", head_motion=0.0)
    with pytest.raises(MagicInfiniteError, match="head_deadzone above 0 needs a motion-latent model"):
        generate(photo, missing, "", model=random_bundle(0), out=tmp_path / "b.mp4", head_deadzone=0.02)
    assert not list(tmp_path.glob("*.mp4"))
