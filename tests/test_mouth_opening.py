"""Lips that part at the seam (media/mouth_opening.py): the remapped field, the seam finder on real photos
(real mediapipe), and the decoder with it switched on."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from magicinfinite_core.inputs.face_parts import find_face_parts
from magicinfinite_core.inputs.framing import frame_portrait
from magicinfinite_core.media.motion_autoencoder import MotionAutoencoder, MotionAutoencoderConfig
from magicinfinite_core.media.mouth_opening import LipSeam, open_lips
from training.data.mouth import LUMA
from training.eval import real_photos as rp

SEAM_ROW, BAND = 40.0, 8.0


def _jaw_drop_field(drop: float, h: int = 80, w: int = 64, frames: int = 2) -> torch.Tensor:
    """Backward flow of a jaw that drops `drop` px, spread over the band as bilinear upsampling spreads it:
    0 above the band, -drop below it (each output pixel there shows the picture `drop` px higher)."""
    y = torch.arange(h, dtype=torch.float32)
    ramp = ((y - (SEAM_ROW - BAND)) / (2 * BAND)).clamp(0, 1)
    field = torch.zeros(frames, 2, h, w)
    field[:, 1] = (-drop * ramp)[:, None]
    return field


def _seam(x0: int = 16, width: int = 33) -> LipSeam:
    return LipSeam(x0, tuple([SEAM_ROW] * width), (0.2, -0.4, -0.4))


def _opened(field: torch.Tensor, seam: LipSeam, origin: tuple[int, int] = (0, 0), gain: float = 1.0
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """open_lips on a copy: (the new field, the opened mouth's coverage [F, H, W] over the whole region)."""
    new = field.clone()
    patch = open_lips(new, seam, origin, BAND, gain)
    cover = torch.zeros(field.shape[0], *field.shape[2:])
    if patch is not None:
        cover[:, patch.rows, patch.cols] = patch.cover
    return new, cover


def test_a_jaw_drop_opens_the_lips_at_the_seam_by_its_size_in_the_middle_and_not_at_the_corners():
    field = _jaw_drop_field(6.0)
    new, cover = _opened(field, _seam())
    mid = 16 + 16
    assert float(cover[0, :, mid].sum()) == pytest.approx(6.0, abs=0.01)  # all of the drop is the open mouth
    rows = torch.nonzero(cover[0, :, mid] > 0.5).flatten()
    assert SEAM_ROW - 1 <= float(rows.min()) and float(rows.max()) <= SEAM_ROW + 7  # just below the upper lip
    assert float(cover[0, :, 16].sum()) == pytest.approx(0.0, abs=1e-6)  # the corners stay closed
    assert 0 < float(cover[0, :, 20].sum()) < 6.0  # a lens between
    # above the opening the picture above the seam moves with the band's top, below it rigidly with its bottom
    assert float(new[0, 1, 30, mid]) == pytest.approx(0.0, abs=1e-5)
    assert float(new[0, 1, int(SEAM_ROW) + 9, mid]) == pytest.approx(-6.0, abs=1e-4)
    # nothing outside the band or outside the mouth's columns changes
    outside = torch.ones(80, 64, dtype=torch.bool)
    outside[int(SEAM_ROW - BAND) : int(SEAM_ROW + BAND + 6) + 1, 16:49] = False
    assert torch.equal(new[:, :, outside], field[:, :, outside])
    assert torch.equal(new[:, 0], field[:, 0])  # horizontal flow untouched


def test_a_half_precision_field_opens_the_same_mouth():
    """Decoding may run in bfloat16 / float16: positions are computed in float32, so the opening matches."""
    full, cover = _opened(_jaw_drop_field(6.0), _seam())
    for dtype in (torch.bfloat16, torch.float16):
        half, cover_half = _opened(_jaw_drop_field(6.0).to(dtype), _seam())
        assert half.dtype == dtype
        assert torch.allclose(cover_half, cover, atol=0.02)
        assert torch.allclose(half.float(), full, atol=0.05)


@pytest.mark.parametrize("drop", [0.0, -3.0])
def test_silence_or_a_closing_jaw_opens_nothing(drop):
    field = _jaw_drop_field(drop)
    new, cover = _opened(field, _seam())
    assert float(cover.max()) == 0.0
    if drop == 0.0:
        assert torch.equal(new, field)
    new_off, cover_off = _opened(_jaw_drop_field(6.0), _seam(), gain=0.0)
    assert torch.equal(new_off, _jaw_drop_field(6.0)) and float(cover_off.max()) == 0.0


def test_a_seam_outside_the_region_or_at_its_edge_is_skipped():
    field = _jaw_drop_field(6.0)
    new, cover = _opened(field, _seam(), (200, 0))  # the region starts right of the mouth
    assert torch.equal(new, field) and float(cover.max()) == 0.0
    new, cover = _opened(field, _seam(), (0, 35))  # the band would reach above the region's top
    assert torch.equal(new, field) and float(cover.max()) == 0.0


def test_face_mesh_finds_the_seam_of_a_closed_mouth_the_lower_lip_of_an_open_smile_and_none_without_a_face(tmp_path):
    from PIL import Image

    hopper = np.asarray(Image.open(rp.heldout_photo(rp.HALF_LENGTH, tmp_path)).convert("RGB"))
    h, w = hopper.shape[:2]
    seams = find_face_parts(hopper, [(0, 0, w, h)])[0]
    assert len(seams) == 1
    seam = seams[0]
    with rp.FaceMeter() as meter:
        lips = meter.faces(hopper)[0].lips  # the lips' landmark box, from the evaluation's own face mesh
    assert lips[0] - 2 <= seam.x0 and seam.x0 + len(seam.rows) <= lips[2] + 2  # between the corners
    assert lips[1] < float(np.mean(seam.rows)) < lips[3]  # between the upper and the lower lip
    assert float(np.mean(seam.colour)) < float(hopper.mean() / 127.5 - 1)  # the line between the lips is dark
    assert not seam.open
    smile = np.asarray(Image.open(rp.heldout_photo(rp.OPEN_SMILE, tmp_path)).convert("RGB"))
    seams = find_face_parts(smile, [(0, 0, smile.shape[1], smile.shape[0])])[0]
    assert len(seams) == 1 and seams[0].open
    with rp.FaceMeter() as meter:
        face = meter.faces(smile)[0]
    rows = np.asarray(seams[0].rows)
    mid = len(rows) // 2
    # the seam is the lower inner lip: below the teeth's top, within the lips, and the teeth above it are
    # brighter than the lower lip's colour it is tinted from
    assert face.lips[1] + 2 < rows[mid] < face.lips[3]
    teeth = smile[int(rows[mid]) - 10 : int(rows[mid]) - 4, seams[0].x0 + mid - 5 : seams[0].x0 + mid + 5]
    assert float(teeth.mean() / 127.5 - 1) > float(np.mean(seams[0].colour)) + 0.2
    assert find_face_parts(np.full((256, 256, 3), 128, np.uint8), [(0, 0, 256, 256)])[0] == ()


@pytest.mark.parametrize("photo, setting", [(rp.HALF_LENGTH, "mouth_opening"), (rp.OPEN_SMILE, "open_mouth_opening")])
def test_the_decoder_opens_a_real_portraits_mouth_only_when_its_jaw_drops(tmp_path, photo, setting):
    """A portrait framed as generate() frames it, a latent whose cells below the lips move down 3 working
    px: with the setting on, the pixels at the seam turn dark (Grace Hopper: between her closed lips; the open
    smile: under her teeth); off, or with the zero latent, they do not. The open smile's seam is left alone
    by `mouth_opening` (the closed mouths' setting)."""
    from PIL import Image

    picture = np.asarray(Image.open(rp.heldout_photo(photo, tmp_path)).convert("RGB"))
    _, _, _, ref = frame_portrait(picture, (128, 128), 1, lip_seams=True)
    assert len(ref.seams) == 1
    seam = ref.seams[0]
    assert seam.open == (setting == "open_mouth_opening")
    cfg = MotionAutoencoderConfig(residual_channels=0, **{"mouth_opening": 1.0, setting: 1.0})
    ae = MotionAutoencoder(cfg)
    x0, y0, x1, y1 = ref.box
    cell_px = (y1 - y0) / cfg.grid
    below = int((float(np.mean(seam.rows)) - y0) / cell_px) + 1  # the first cell row under the seam
    latent = torch.zeros(1, cfg.latent_channels, 2, cfg.grid, cfg.grid)
    slots = latent.view(1, cfg.temporal_compression_ratio, cfg.slot_channels, 2, cfg.grid, cfg.grid)
    slots[:, :, 1, 1, below:, :] = -3.0 * cfg.flow_scale  # frames 1-4: everything under the lips shown 3 px higher
    opened = ae.decode(latent, ref)[0, :, 2]
    closed = MotionAutoencoder(dataclasses.replace(cfg, **{setting: 0.0})).decode(latent, ref)[0, :, 2]
    still = ae.decode(torch.zeros_like(latent), ref)[0, :, 2]
    mid = seam.x0 + len(seam.rows) // 2
    row = int(round(seam.rows[len(seam.rows) // 2]))
    column = slice(row - 2, row + 12)
    luma = torch.from_numpy(LUMA).view(3, 1)
    grey_open, grey_closed = ((x[:, column, mid] * luma).sum(0) for x in (opened, closed))
    darker = float(grey_closed.min()) - 0.05  # darker than the darkest row of the stretched lips
    assert int((grey_closed < darker).sum()) == 0
    assert int((grey_open < darker).sum()) >= 4  # an open mouth several pixels tall, not a line
    portrait = ref.image[0]
    assert torch.allclose(still, portrait, atol=1e-4)  # silence: the portrait itself
    far = (slice(None), slice(y0, y0 + 20), slice(x0, x1))  # the forehead row of cells: untouched by the mouth
    assert torch.equal(opened[far], closed[far])


def test_the_demo_bundle_opens_lips_and_generate_finds_the_seams(tmp_path):
    """The shipped bundle switches the opening on, and generate()'s portrait preparation (what the CLI, the
    nodes and the runner all call) finds Grace Hopper's seam and the open smile's lower lip."""
    from magicinfinite_core.generate import GenerateOptions, prepare_portrait
    from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR, load_bundle

    bundle = load_bundle(DEMO_MODEL_DIR, "cpu", distilled=True)
    assert bundle.vae.cfg.mouth_opening == 1.0 and bundle.vae.cfg.open_mouth_opening == 1.0
    assert bundle.vae.cfg.mouth_teeth == 1.0 and bundle.vae.cfg.mouth_tongue == 1.0
    notes: list[str] = []
    hopper = prepare_portrait(bundle, str(rp.heldout_photo(rp.HALF_LENGTH, tmp_path)), 1, GenerateOptions(), notes)
    assert len(hopper.reference.seams) == 1 and hopper.reference.seams[0].teeth is not None
    smile = prepare_portrait(bundle, str(rp.heldout_photo(rp.OPEN_SMILE, tmp_path)), 1, GenerateOptions(), notes)
    assert len(smile.reference.seams) == 1 and smile.reference.seams[0].open


def test_the_opened_mouth_is_darkest_halfway_between_the_lips():
    """paint_mouth: a flat grey picture, a 6 px opening; its middle rows darker than its edge rows, and no pixel
    outside the opening touched."""
    from magicinfinite_core.media.mouth_opening import paint_mouth

    field = _jaw_drop_field(6.0, frames=1)
    patch = open_lips(field, _seam(), (0, 0), BAND)
    moved = torch.zeros(1, 3, 80, 64)
    before = moved.clone()
    paint_mouth(moved, patch)
    mid = 32
    column = moved[0, 0, :, mid]
    rows = torch.nonzero(column < -0.01).flatten()
    assert len(rows) >= 6
    assert float(column[rows[len(rows) // 2]]) < float(column[rows[0]]) and float(column[rows[len(rows) // 2]]) < float(column[rows[-1]])
    outside = torch.ones(80, 64, dtype=torch.bool)
    outside[patch.rows, patch.cols] = False
    assert torch.equal(moved[0][:, outside], before[0][:, outside])


@pytest.mark.parametrize("teeth_colour", [(0.6, 0.5, 0.3), None])
def test_teeth_fill_the_top_of_a_closed_mouths_opening_only_when_asked(teeth_colour):
    """paint_mouth with `teeth`: a flat grey picture, a 6 px opening; with a closed mouth's teeth colour the
    top rows of the opening take it (darker right under the lip) and the bottom rows stay dark; at opacity 0,
    or for a seam without teeth (an open mouth's), the opening is exactly the dark one; nothing outside the
    opening is touched."""
    from magicinfinite_core.media.mouth_opening import TEETH_SHARE, paint_mouth

    seam = dataclasses.replace(_seam(), teeth=teeth_colour)
    patch = open_lips(_jaw_drop_field(6.0, frames=1), seam, (0, 0), BAND)
    plain, with_teeth, off = (torch.zeros(1, 3, 80, 64) for _ in range(3))
    paint_mouth(plain, dataclasses.replace(patch, teeth=None))
    paint_mouth(with_teeth, patch, teeth=1.0)
    paint_mouth(off, patch, teeth=0.0)
    assert torch.equal(off, plain)
    if teeth_colour is None:
        assert torch.equal(with_teeth, plain)
        return
    mid = 32 + 3  # the middle of a central incisor (the line between the two is at 32)
    rows = torch.nonzero(plain[0, 0, :, mid] < -0.01).flatten()  # the opening, top to bottom
    top, bottom = int(rows[0]), int(rows[-1])
    assert float(with_teeth[0, 0, top + 1, mid]) > 0.3  # teeth: bright, in their own colour's order (R > G > B)
    assert float(with_teeth[0, 0, top + 1, mid]) > float(with_teeth[0, 1, top + 1, mid]) > float(with_teeth[0, 2, top + 1, mid])
    assert float(with_teeth[0, 0, top, mid]) < float(with_teeth[0, 0, top + 1, mid])  # shaded under the lip
    assert torch.equal(with_teeth[0, :, bottom, mid], plain[0, :, bottom, mid])  # the lower part stays dark
    teeth_rows = int((with_teeth[0, 0, :, mid] > plain[0, 0, :, mid] + 0.05).sum())
    assert 1 <= teeth_rows <= int(np.ceil(TEETH_SHARE * (bottom - top + 1))) + 1
    corner = seam.x0  # the teeth fade out before the mouth's corners
    assert torch.equal(with_teeth[0, :, :, corner], plain[0, :, :, corner])
    outside = torch.ones(80, 64, dtype=torch.bool)
    outside[patch.rows, patch.cols] = False
    assert torch.equal(with_teeth[0][:, outside], torch.zeros(3, int(outside.sum())))


def test_the_teeth_are_parted_at_the_tooth_boundaries_and_notched_there():
    """A wide mouth (161 px) whose jaw drops 16 px: along the teeth's middle row the darkest columns are the
    boundaries TOOTH_EDGES puts between the incisors, laterals and canines, each darker than the tooth on
    either side; the teeth reach lower mid-tooth than at a boundary (rounded corners)."""
    from magicinfinite_core.media.mouth_opening import TOOTH_EDGES, paint_mouth

    x0, width = 8, 161
    seam = LipSeam(x0, tuple([SEAM_ROW] * width), (0.2, -0.4, -0.4), teeth=(0.6, 0.5, 0.3))
    patch = open_lips(_jaw_drop_field(16.0, w=180, frames=1), seam, (0, 0), BAND)
    moved = torch.zeros(1, 3, 80, 180)
    paint_mouth(moved, patch, teeth=1.0)
    cover = torch.zeros(80, 180)
    cover[patch.rows, patch.cols] = patch.teeth_cover[0]
    red = torch.where(cover > 0.9, moved[0, 0], -1.0).amax(dim=0)  # per column: its brightest tooth pixel
    middle = x0 + width // 2
    for edge, next_edge in zip(TOOTH_EDGES[:3], TOOTH_EDGES[1:4], strict=True):
        for side in (1, -1):
            at = middle + side * round(edge * (width - 1) / 2)
            tooth = middle + side * round(0.5 * (edge + next_edge) * (width - 1) / 2)
            assert float(red[at]) < float(red[tooth]) - 0.1, (edge, side)
            assert float(red[at]) <= float(red[at - 2 : at + 3].min()) + 1e-6  # the line is the darkest
            beside = 0.5 * float(cover[:, at - 6].sum() + cover[:, at + 6].sum())
            assert float(cover[:, at].sum()) < beside - 0.3  # notched at the boundary


def test_a_wide_opening_shows_a_tongue_in_the_lower_lips_colour_and_a_narrow_one_does_not():
    """paint_mouth with `tongue`: a 6 px drop over a 33 px mouth (wider than TONGUE_FROM[1]) gets a tongue at
    the bottom of the opening, in the middle: redder than the dark interior, its back edge
    darker than its front; the teeth and the corners are as without it. A 1.5 px drop (under
    TONGUE_FROM[0]), opacity 0 or a seam that does not know its lip: exactly the mouth without a tongue."""
    from magicinfinite_core.media.mouth_opening import paint_mouth

    # the dark line where real lips meet (Grace Hopper's reads about this), her red lower lip
    seam = dataclasses.replace(_seam(), colour=(-0.4, -0.7, -0.7), teeth=(0.6, 0.5, 0.3), lip=(0.5, -0.3, -0.3))

    def painted(drop: float, tongue: float, seam: LipSeam = seam) -> torch.Tensor:
        patch = open_lips(_jaw_drop_field(drop, frames=1), seam, (0, 0), BAND)
        moved = torch.zeros(1, 3, 80, 64)
        paint_mouth(moved, patch, teeth=1.0, tongue=tongue)
        return moved[0]

    plain, tongue = painted(6.0, 0.0), painted(6.0, 1.0)
    mid = 32
    rows = torch.nonzero((plain[0, :, mid] < -0.01) | (tongue[0, :, mid] != plain[0, :, mid])).flatten()
    top, bottom = int(rows[0]), int(rows[-1])
    redness = lambda x, r: float(x[0, r, mid] - x[1, r, mid])  # noqa: E731
    assert redness(tongue, bottom - 1) > redness(plain, bottom - 1) + 0.1  # the lip's red
    back = int(torch.nonzero(tongue[0, :, mid] > plain[0, :, mid] + 1e-3).flatten().min())
    assert top + 2 < back and float(tongue[0, back, mid]) < float(tongue[0, bottom - 1, mid])
    assert torch.equal(tongue[:, : top + 2, mid], plain[:, : top + 2, mid])  # the teeth as they were
    assert torch.allclose(tongue[:, :, 16 : 16 + 2], plain[:, :, 16 : 16 + 2], atol=0.02)  # hidden at the corners
    assert torch.equal(painted(1.5, 1.0), painted(1.5, 0.0))
    assert torch.equal(painted(6.0, 1.0, dataclasses.replace(seam, lip=None)), plain)


def test_teeth_are_lit_like_the_skin_and_grey_in_a_greyscale_photo(tmp_path):
    """Grace Hopper's closed mouth gets warm teeth brighter than the line between her lips, and her red lower
    lip as the tongue's colour; the same photo in greyscale gets grey ones; the open smile's seam (teeth
    showing already) gets no teeth."""
    from PIL import Image

    hopper = np.asarray(Image.open(rp.heldout_photo(rp.HALF_LENGTH, tmp_path)).convert("RGB"))
    h, w = hopper.shape[:2]
    seam = find_face_parts(hopper, [(0, 0, w, h)])[0][0]
    r, g, b = seam.teeth
    assert r > g > b and float(np.mean(seam.teeth)) > float(np.mean(seam.colour)) + 0.3
    r, g, b = seam.lip  # the tongue's colour: her lower lip's, red
    assert r > g + 0.2 and r > b + 0.2
    grey = np.repeat(np.asarray(Image.fromarray(hopper).convert("L"))[..., None], 3, axis=2)
    grey_seam = find_face_parts(grey, [(0, 0, w, h)])[0][0]
    for colour in (grey_seam.teeth, grey_seam.lip):
        assert max(colour) - min(colour) < 0.02
    smile = np.asarray(Image.open(rp.heldout_photo(rp.OPEN_SMILE, tmp_path)).convert("RGB"))
    assert find_face_parts(smile, [(0, 0, smile.shape[1], smile.shape[0])])[0][0].teeth is None


def test_each_speakers_seam_names_its_own_tile(tmp_path):
    """Two speakers framed as tiles: each closed mouth's seam records the tile it was found in, which sets its
    band (one latent cell of that tile)."""
    group = rp.group_portraits(tmp_path)[:2]  # Grace Hopper and the guitar player, both with closed lips
    picture = rp.composite(group, 2)
    _, _, _, ref = frame_portrait(picture, (128, 128), 2, lip_seams=True)
    assert len(ref.tiles) == 2
    assert sorted(seam.region for seam in ref.seams) == [0, 1]
    for seam in ref.seams:
        x0, y0, x1, y1 = ref.tiles[seam.region]
        assert x0 <= seam.x0 and seam.x0 + len(seam.rows) <= x1 and y0 < min(seam.rows) and max(seam.rows) < y1
