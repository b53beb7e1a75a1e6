"""The expression channel (media/expression.py): the mouth corners' lift read from flow, carried by a motion latent,
drawn back at decode. Real world renders of real photographs, real face mesh, real optical flow."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from magicinfinite_core.errors import MagicInfiniteError
from magicinfinite_core.inputs.face_parts import find_mouth
from magicinfinite_core.media.expression import MouthCorners, corner_lift, draw_lift, lift_shape
from magicinfinite_core.media.motion_autoencoder import (
    MotionAutoencoder,
    MotionAutoencoderConfig,
    MotionReference,
    warp,
)

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
MOUTH = MouthCorners(left=(40.0, 80.0), right=(80.0, 80.0), middle=(60.0, 78.0), face_height=100.0)


def test_corner_lift_reads_back_the_drawn_lift_and_ignores_a_nod_and_the_jaw():
    """A field made by `draw_lift` (2 px up in frame 1, 0.5 px down in frame 2) on top of a 5 px nod reads back
    +0.02 and -0.005 face heights; the nod alone, and a jaw drop below the corners' row, read 0."""
    flow = torch.zeros(4, 2, 128, 128)
    assert draw_lift(flow, MOUTH, (0, 0), torch.tensor([0.0, 2.0, -0.5, 0.0]))
    flow[:, 1] -= 5.0  # a nod: everything moves, nothing is an expression
    flow[3, 1, 85:110, 30:90] += 4.0  # the lower lip and chin drop in frame 3 (from 5 px below the middle)
    lift = corner_lift(flow, MOUTH)
    # within 1.5 %: the upper lip's middle is read over a 5 px square, whose sides the drawn lift touches
    assert torch.allclose(lift, torch.tensor([0.0, 0.02, -0.005, 0.0]), atol=3e-4), lift
    assert float(corner_lift(torch.zeros(1, 2, 8, 8), MOUTH)[0]) == 0.0  # the mouth is outside the field


def test_drawn_lift_moves_the_corners_by_that_many_pixels_and_keeps_the_middle():
    """A dot on each corner and one on the upper lip's middle: drawn 3 px up, the corners' dots rise 3 px (within
    0.3 px), the middle's stays, and pixels outside the mouth's reach do not move."""
    img = torch.full((1, 3, 128, 128), -1.0)
    for x, y in (MOUTH.left, MOUTH.right, MOUTH.middle):
        img[:, :, int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2] = 1.0
    img[:, :, 10:13, 10:13] = 1.0  # far away
    field = torch.zeros(1, 2, 128, 128)
    assert draw_lift(field, MOUTH, (0, 0), torch.tensor([3.0]))
    moved = warp(img, field)[0, 0]

    def centre_y(x: float, y: float) -> float:
        patch = (moved[int(y) - 8 : int(y) + 8, int(x) - 3 : int(x) + 4] + 1).clamp_min(0)
        rows = torch.arange(int(y) - 8, int(y) + 8, dtype=torch.float32)
        return float((patch.sum(1) * rows).sum() / patch.sum())

    assert abs(centre_y(*MOUTH.left) - (MOUTH.left[1] - 3)) < 0.3
    assert abs(centre_y(*MOUTH.right) - (MOUTH.right[1] - 3)) < 0.3
    assert abs(centre_y(*MOUTH.middle) - MOUTH.middle[1]) < 0.1
    assert torch.equal(moved[:30, :30], img[0, 0, :30, :30])
    shape = lift_shape(MOUTH, (0, 0), (128, 128))
    assert shape.max() <= 1.0 and shape[20, 60] == 0.0  # nothing reaches the nose's side of the face
    # a mouth outside the region is not drawn, and says so
    assert not draw_lift(field, MOUTH, (200, 200), torch.tensor([3.0]))


def test_the_latent_keeps_its_width_and_old_channels_when_the_last_residual_becomes_the_expression():
    """`training.recast_expression`: 2 + R + 0 channels per slot become 2 + (R - 1) + 1; the flow and the kept
    residual channels encode bit for bit as before; a second recast, or a pixel autoencoder, is refused."""
    from training.recast_expression import recast_expression

    old = MotionAutoencoder(MotionAutoencoderConfig(residual_channels=3))
    new = recast_expression(old)
    assert (new.cfg.slot_channels, new.cfg.latent_channels) == (old.cfg.slot_channels, old.cfg.latent_channels)
    g = torch.Generator().manual_seed(0)
    frames = (torch.rand(1, 3, 5, 128, 128, generator=g) * 2 - 1).clamp(-1, 1)
    a = old.encode(frames).reshape(1, 4, 5, 2, 16, 16)
    b = new.encode(frames).reshape(1, 4, 5, 2, 16, 16)
    assert torch.equal(a[:, :, :4], b[:, :, :4])  # noise has no face: its lift is 0
    assert float(b[:, :, 4].abs().max()) == 0.0
    with pytest.raises(MagicInfiniteError, match="nothing to recast"):
        recast_expression(new)
    with pytest.raises(ValueError, match="expression_channels must be 0 or 1"):
        MotionAutoencoderConfig(expression_channels=2)


def test_a_bundle_with_an_expression_gain_outside_0_1_is_refused_with_the_setting_named():
    from magicinfinite_core.limits import check_vae_config

    cfg = MotionAutoencoderConfig(residual_channels=7, expression_channels=1).to_dict()
    check_vae_config(cfg, "bundle.json vae.config")
    for key, bad in (("expression_gain", 2.0), ("expression_channels", 3), ("expression_scale", 0.0)):
        with pytest.raises(MagicInfiniteError, match=key):
            check_vae_config({**cfg, key: bad}, "bundle.json vae.config")


def test_chunked_decode_equals_one_shot_with_an_expression_channel_smoothed_in_time():
    """The lift is smoothed with the flow (one latent frame of look-ahead), so streamed decode stays exact."""
    from magicinfinite_core.media.autoencoders import decode_fn
    from magicinfinite_core.media.streamed_decode import streamed_decode

    cfg = MotionAutoencoderConfig(residual_channels=1, expression_channels=1, flow_smoothing=1.0, expression_gain=1.0)
    ae = MotionAutoencoder(cfg)
    p = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(3)) * 2 - 1
    seam_like = MotionReference(p, (0, 0, 128, 128), seams=(_seam(MOUTH),))
    z = torch.zeros(1, cfg.latent_channels, 7, 16, 16)
    lift = torch.randn(4, 7, generator=torch.Generator().manual_seed(4))  # latent units, per slot and latent frame
    for slot in range(4):
        z[0, slot * cfg.slot_channels + 3] = lift[slot, :, None, None]
    whole = ae.decode(z, seam_like)[0]
    assert not torch.equal(whole, ae.decode(torch.zeros_like(z), seam_like)[0])  # the lift was drawn
    streamed = torch.cat(list(streamed_decode(z[0], decode_fn(ae, seam_like), chunk=2, context=2)), dim=1)
    assert torch.allclose(streamed, whole, atol=1e-5)


def _seam(mouth: MouthCorners):
    from magicinfinite_core.media.mouth_opening import LipSeam

    return LipSeam(int(mouth.left[0]), tuple([mouth.left[1]] * int(mouth.right[0] - mouth.left[0] + 1)),
                   (0.0, 0.0, 0.0), corners=mouth)


@needs_espeak
def test_the_channel_carries_the_worlds_smile_and_frown_and_decoding_draws_them_back():
    """The world's smile and frown on a real photograph (one voice and crop; only the emotion differs), encoded with
    optical flow as footage is: the channel reads the smile up and the frown down against the neutral clip; from the
    renderer's exact field (as the demo's training caches read it), a neutral face reads about 0. Decoded
    as the demo decodes (flow dead zone, rigid upper face), face mesh reads the corners' lift back with the channel
    drawn, and barely without it: the 8 px cells alone lose the smile (`bench/expression_chain.py`)."""
    from magicinfinite_core.media.autoencoders import decode_video, encode_video
    from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR, load_bundle
    from tests.test_photo_world import _scene
    from training.data import photo_face
    from training.data.tensors import frames_to_tensor, tensor_to_frames
    from training.eval import real_photos as rp
    from training.eval.evaluate import clip_reference

    vae = load_bundle(DEMO_MODEL_DIR, "cpu").vae  # the demo as it ships (v10: the channel drawn)
    assert vae.cfg.expression_channels == 1 and vae.cfg.expression_gain == 1.0
    plain = load_bundle(DEMO_MODEL_DIR, "cpu").vae
    plain.cfg = replace(plain.cfg, expression_gain=0.0)  # the lift is carried, not drawn
    lift, exact, drawn, undrawn = {}, {}, {}, {}
    with torch.inference_mode(), rp.FaceMeter() as meter:
        for emotion in ("neutral", "smile", "frown"):
            frames, gt = photo_face.render_photo_scene(_scene("luispedro", "still", emotion=emotion))
            half = slice(len(frames) // 2, len(frames))
            latent = encode_video(vae, frames_to_tensor(frames)[None])
            codes = vae.slot_codes(latent)[0, :, -1]  # [F, h, w] face heights
            assert torch.equal(codes, codes[:, :1, :1].expand_as(codes))  # one number per frame
            lift[emotion] = float(codes[half, 0, 0].mean())
            truth = torch.from_numpy(gt["portrait_flow"].astype(np.float32))[None]
            exact[emotion] = float(vae.slot_codes(encode_video(vae, frames_to_tensor(frames)[None], expression_flow=truth))
                                   [0, half, -1, 0, 0].mean())
            if emotion != "frown":
                for name, ae in (("drawn", vae), ("undrawn", plain)):
                    video = tensor_to_frames(decode_video(ae, latent, clip_reference(ae, frames[0]))[0])[: len(frames)]
                    {"drawn": drawn, "undrawn": undrawn}[name][emotion] = rp.expression_change(
                        video, frames[0], meter)["corner_lift"]
    # measured (face heights): optical flow 0.011 / 0.028 / -0.005, the exact field 0.003 / 0.027 / -0.017
    assert lift["smile"] > lift["neutral"] + 0.012 and lift["frown"] < lift["neutral"] - 0.008, lift
    assert abs(exact["neutral"]) < 0.006 and exact["smile"] > 0.02 and exact["frown"] < -0.01, exact
    smile_drawn = drawn["smile"] - drawn["neutral"]  # face mesh reads +0.006 (the world's own smile: +0.014)
    smile_undrawn = undrawn["smile"] - undrawn["neutral"]  # +0.0007
    assert smile_drawn > 0.004 and smile_drawn > smile_undrawn + 0.003, (drawn, undrawn)


def test_find_mouth_reads_grace_hoppers_mouth_and_none_in_a_blank_picture(tmp_path):
    from PIL import Image

    from training.eval import real_photos as rp

    picture = np.asarray(Image.open(rp.heldout_photo(rp.HALF_LENGTH, tmp_path)).convert("RGB"))
    mouth = find_mouth(picture)
    assert mouth is not None and mouth.left[0] < mouth.middle[0] < mouth.right[0]
    assert 0.2 * picture.shape[0] < mouth.face_height < picture.shape[0]
    assert abs(mouth.middle[1] - 0.5 * (mouth.left[1] + mouth.right[1])) < 0.05 * mouth.face_height
    assert find_mouth(np.full((128, 128, 3), 128, np.uint8)) is None


def test_a_drawn_expression_asks_for_the_portraits_mouths_even_without_parted_lips(tmp_path):
    """`needs_mouths`: a model that draws the lift finds the mouths (their corners) though its lips never part."""
    from PIL import Image

    from training.eval import real_photos as rp
    from training.eval.evaluate import clip_reference

    cfg = MotionAutoencoderConfig(residual_channels=0, expression_channels=1, expression_gain=1.0)
    assert cfg.needs_mouths and not replace(cfg, expression_gain=0.0).needs_mouths
    assert MotionAutoencoderConfig(mouth_opening=1.0).needs_mouths
    picture = np.asarray(Image.open(rp.heldout_photo(rp.HALF_LENGTH, tmp_path)).convert("RGB"))
    ref = clip_reference(MotionAutoencoder(cfg), picture)
    assert len(ref.seams) == 1 and ref.seams[0].corners is not None


@needs_espeak
def test_the_shipped_demo_smiles_and_frowns_when_asked_in_words_it_was_not_trained_on(tmp_path):
    """The demo's expression bias reads the pooled text (v10.2): on a real photograph with a held-out voice, held-out
    phrasings of a smile and a frown move the sampled channel apart from a neutral prompt's, in the right directions.
    v10.1's 4-step (its bias read from the conditioning vector) lifted this smile by +0.0045 face heights."""
    from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR, load_bundle
    from training.data.prompts import make_prompt
    from training.eval import real_photos as rp

    photo = rp.picture_by_name(rp.HALF_LENGTH, tmp_path)
    wav, _ = rp.heldout_speech(4.0, 500)
    bundle = load_bundle(DEMO_MODEL_DIR, "cpu", distilled=True)
    lift = {}
    for emotion in ("neutral", "smile", "frown"):
        prompt = make_prompt({"emotion": emotion, "action": "still", "background": "static"},
                             np.random.default_rng([500, 43]), "heldout", "realistic")
        lift[emotion] = rp.sampled_expression_lift(bundle, photo, wav, prompt)
    assert lift["smile"] - lift["neutral"] > 0.007, lift
    assert lift["frown"] - lift["neutral"] < -0.002, lift
    assert abs(lift["neutral"]) < 0.003, lift  # under the decode's dead zone: a neutral prompt's corners stay put
