"""The motion autoencoder (media/motion_autoencoder.py), x0 prediction, and face framing (inputs/framing.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from magicinfinite_core.config import DiTConfig
from magicinfinite_core.inputs.framing import FACE_SHARE, frame_faces, output_size
from magicinfinite_core.inputs.masks import FaceBox
from magicinfinite_core.media.autoencoders import (
    decode_fn,
    encode_video,
    load_autoencoder,
    moves_portrait,
    reference_latent,
    save_autoencoder,
    video_size,
)
from magicinfinite_core.media.motion_autoencoder import (
    MotionAutoencoder,
    MotionAutoencoderConfig,
    MotionReference,
    smooth_flow,
    warp,
)
from magicinfinite_core.models.dit import MagicInfiniteDiT, concat_image_condition


def _texture(h: int = 128, w: int = 128, seed: int = 0) -> torch.Tensor:
    """A smooth random colour picture [1, 3, H, W] in [-1, 1] with detail optical flow can track."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, h // 8, w // 8, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(-1, 1)


def _shifted_video(portrait: torch.Tensor, shifts: list[float]) -> torch.Tensor:
    """[1, 3, F, H, W]: the portrait moved right by each shift (backward flow -shift everywhere)."""
    frames = []
    for s in shifts:
        flow = torch.zeros(1, 2, *portrait.shape[-2:])
        flow[:, 0] = -s
        frames.append(warp(portrait, flow))
    return torch.stack(frames, dim=2)


def test_still_video_is_the_zero_latent_and_decodes_to_the_portrait():
    ae = MotionAutoencoder(MotionAutoencoderConfig(residual_channels=2))
    p = _texture()
    video = p[:, :, None].expand(-1, -1, 9, -1, -1)
    z = ae.encode(video)
    assert z.shape == (1, ae.cfg.latent_channels, 3, 16, 16)
    assert float(z.abs().max()) < 1e-3
    out = ae.decode(torch.zeros_like(z), p)
    assert out.shape == (1, 3, 9, 128, 128)
    assert float((out - p[:, :, None]).abs().max()) < 1e-4


def test_a_shift_is_measured_as_flow_and_rebuilt_by_the_warp():
    ae = MotionAutoencoder(MotionAutoencoderConfig(residual_channels=0))
    p = _texture(seed=1)
    video = _shifted_video(p, [0, 1, 2, 3, 2])
    z = ae.encode(video)
    codes = ae.slot_codes(z)[0]  # [F, 2, h, w] in working pixels
    inner = codes[:, 0, 3:-3, 3:-3].mean(dim=(1, 2))
    assert inner.tolist() == pytest.approx([0, -1, -2, -3, -2], abs=0.25)
    rebuilt = ae.decode(z, p)[:, :, :5]
    err = (rebuilt - video)[..., 16:-16, 16:-16].abs().mean()
    copy = (p[:, :, None] - video)[..., 16:-16, 16:-16].abs().mean()
    assert float(err) < 0.25 * float(copy)


def test_cells_that_stand_still_get_exactly_zero_flow():
    """Optical flow in an unchanged (or flat) region is noise; the still gate keeps it out of the latent."""
    ae = MotionAutoencoder(MotionAutoencoderConfig(residual_channels=0))
    p = _texture(seed=6)
    p[..., :, 64:] = 0.1  # a flat right half, where flow is unmeasurable
    moved = _shifted_video(p, [0, 2, 2, 2, 2])
    video = p[:, :, None].repeat(1, 1, 5, 1, 1)
    video[..., 40:88, 8:56] = moved[..., 40:88, 8:56]  # only a patch on the textured left moves
    g = torch.Generator().manual_seed(0)
    video = (video + 0.004 * torch.randn(video.shape, generator=g)).clamp(-1, 1)  # sensor noise everywhere
    flow = ae.slot_codes(ae.encode(video))[0, 1:, :2]  # [F, 2, 16, 16]
    assert torch.count_nonzero(flow[..., :, 9:]) == 0  # the flat half and everything away from the patch
    assert float(flow[:, 0, 6:10, 2:6].mean()) < -1.5  # the moving patch keeps its flow (2 px to the right)


def test_an_exact_flow_field_is_used_as_given_and_a_bad_one_is_refused():
    """Where the frames' maker knows its warp (issue 26, build item 3), encode takes it instead of optical flow:
    a flat region that moves keeps its flow (optical flow cannot see it; the still gate zeros it)."""
    ae = MotionAutoencoder(MotionAutoencoderConfig(residual_channels=2))
    p = _texture(seed=7)
    p[..., :, 64:] = 0.1  # flat right half
    video = _shifted_video(p, [0, 1, 2, 2, 1])
    field = torch.zeros(1, 5, 2, 32, 32)
    field[:, :, 0] = -torch.tensor([0.0, 1, 2, 2, 1]).view(1, 5, 1, 1)
    exact = ae.slot_codes(encode_video(ae, video, flow=field))[0, :, :2]
    assert torch.allclose(exact[:, 0, :, 12], -torch.tensor([0.0, 1, 2, 2, 1]).view(5, 1), atol=1e-5)
    assert float(exact[:, 1].abs().max()) < 1e-6
    measured = ae.slot_codes(encode_video(ae, video))[0, :, :2]
    assert float(measured[:, 0, :, 12:].abs().max()) == 0.0  # flat: the gate keeps nothing there
    for bad in (torch.zeros(1, 5, 2, 20, 20), torch.zeros(1, 4, 2, 32, 32), field * float("nan")):
        with pytest.raises(ValueError, match="exact flow field"):
            ae.encode(video, flow=bad)


def test_chunked_decode_equals_one_shot_and_latent_frame_zero_is_frame_zero_alone():
    ae = MotionAutoencoder(MotionAutoencoderConfig(residual_channels=3))
    g = torch.Generator().manual_seed(3)
    z = torch.randn(1, ae.cfg.latent_channels, 4, 16, 16, generator=g) * 0.3
    r = ae.cfg.slot_channels
    z[:, :, 0] = z[:, -r:, 0].repeat(1, 4, 1, 1)  # latent frame 0: one frame's code in every slot
    p = _texture(seed=2)
    whole = ae.decode(z, p)
    assert whole.shape[2] == 1 + 4 * 3
    first = ae.decode(z[:, :, :2], p)
    rest = ae.decode(z[:, :, 1:], p)  # a chunk's first latent frame decodes as one frame (its last slot)
    assert torch.equal(whole[:, :, :5], first)
    assert torch.equal(whole[:, :, 4:], rest)


def test_flow_smoothing_removes_latent_frame_jumps_keeps_steady_flow_and_chunks_stay_exact():
    """Smoothing (issue 26): a head that jitters at random from frame to frame is calmed, a steady shift is kept as it
    is, and the chunked decoders (given their look-ahead and context) still equal one-shot decode."""
    from magicinfinite_core.media.incremental_decode import IncrementalDecoder
    from magicinfinite_core.media.streamed_decode import streamed_decode

    cfg = MotionAutoencoderConfig(residual_channels=2, flow_smoothing=1.0)
    ae, plain = MotionAutoencoder(cfg), MotionAutoencoder(MotionAutoencoderConfig(residual_channels=2))
    assert (cfg.smoothing_reach, ae.decode_lookahead, ae.decode_min_context) == (3, 1, 2)
    assert (plain.decode_lookahead, plain.decode_min_context) == (0, 1)
    p = _texture(seed=4)
    t, s = 9, cfg.slot_channels
    z = torch.zeros(1, cfg.latent_channels, t, 16, 16)
    jitter = torch.randn(4, 2, t, generator=torch.Generator().manual_seed(1)) * 1.5  # working px per frame
    for slot in range(4):  # each frame moved by its own random (x, y), the same over the whole grid
        z[0, slot * s : slot * s + 2] = jitter[slot, :, :, None, None] * cfg.flow_scale
    jumpy, calm = plain.decode(z, p), ae.decode(z, p)
    change = lambda v: float((v[:, :, 1:] - v[:, :, :-1]).abs().mean())  # noqa: E731
    assert change(calm) < 0.6 * change(jumpy)
    steady = torch.zeros_like(z)
    steady[:, [slot * s for slot in range(4)]] = 1.5 * cfg.flow_scale
    assert torch.allclose(ae.decode(steady, p), plain.decode(steady, p), atol=1e-5)

    g = torch.Generator().manual_seed(5)
    z = torch.randn(1, cfg.latent_channels, 11, 16, 16, generator=g) * 0.4
    whole = ae.decode(z, p)[0]
    fn = decode_fn(ae, p)
    for chunk, context in ((1, 1), (3, 2), (4, 1)):
        streamed = torch.cat(list(streamed_decode(z[0], fn, chunk=chunk, context=context)), dim=1)
        assert streamed.shape == whole.shape and torch.allclose(streamed, whole, atol=1e-5)
        inc = IncrementalDecoder(fn, chunk=chunk, context=context)
        parts = [inc.push(z[0, :, i : i + 1]) for i in range(z.shape[2])] + [inc.finish()]
        pushed = torch.cat([q for q in parts if q.shape[1]], dim=1)
        assert torch.allclose(pushed, whole, atol=1e-5)
    # without the look-ahead the end of a chunk would differ: the test can fail
    fn.lookahead = 0
    cut = torch.cat(list(streamed_decode(z[0], fn, chunk=3, context=2)), dim=1)
    assert not torch.allclose(cut, whole, atol=1e-3)


def test_decode_moves_only_the_region_of_a_larger_picture():
    ae = MotionAutoencoder(MotionAutoencoderConfig(residual_channels=0))
    picture = _texture(300, 420, seed=4)
    ref = MotionReference(picture, (100, 40, 292, 232))  # a 192 px square region
    z = torch.zeros(1, ae.cfg.latent_channels, 2, 16, 16)
    z[:, :, 1, 6:10, 6:10] = 2.0  # a displacement in the middle of the region
    out = ae.decode(z, ref)
    assert out.shape == (1, 3, 5, 300, 420)
    outside = torch.ones(300, 420, dtype=torch.bool)
    outside[40:232, 100:292] = False
    assert torch.equal(out[0, :, 1:][..., outside], picture[0, :, None].expand(-1, 4, -1, -1)[..., outside])
    moved = (out[0, :, 1:] - picture[0, :, None]).abs()[..., 40:232, 100:292]
    assert float(moved[..., 60:130, 60:130].mean()) > 10 * float(moved[..., :4, :].mean() + 1e-6)
    assert video_size(ae, (16, 16), ref) == (300, 420)
    # decode writes each batch straight into the video; the frames are those decode_frames makes on its own
    codes = smooth_flow(ae.slot_codes(z), ae.cfg)[0]
    assert torch.equal(out[0].transpose(0, 1), ae.decode_frames(codes, ref))


def test_the_region_join_cannot_be_seen_when_the_whole_region_moves():
    """Issue 26: the rest of the picture stays still and the join is invisible. The worst case is a region whose
    every cell moves: the field fades to nothing over the outer cell, so across the region's edge the video's
    step between neighbouring pixels is the picture's own, and inside it the change grows without a jump."""
    ae = MotionAutoencoder(MotionAutoencoderConfig(residual_channels=0))
    picture = _texture(300, 420, seed=6)
    x0, y0, x1, y1 = 100, 40, 292, 232
    z = torch.zeros(1, ae.cfg.latent_channels, 2, 16, 16)
    z[:, :, 1] = 2.0  # every cell of frames 1-4 moves the same way
    frame = ae.decode(z, MotionReference(picture, (x0, y0, x1, y1)))[0, :, 4]
    change = (frame - picture[0]).abs().mean(0)  # [H, W]
    inside = change[y0:y1, x0:x1]
    assert float(inside[80:110, 80:110].mean()) > 0.05  # the middle moved
    assert float(inside[0].max()) < 0.1 * float(inside[80:110, 80:110].mean())  # the edge row barely did
    cell = (y1 - y0) // 16
    band = inside[:cell, 60:130].mean(1)  # from the top edge inward over the outer cell, rising without a jump
    assert float(band.diff().max()) < 0.35 * float(band.max())

    def step(img: torch.Tensor, where: str) -> float:  # mean |difference| between the two pixels across an edge
        if where == "left":
            return float((img[:, y0:y1, x0] - img[:, y0:y1, x0 - 1]).abs().mean())
        return float((img[:, y0, x0:x1] - img[:, y0 - 1, x0:x1]).abs().mean())

    for where in ("left", "top"):
        assert step(frame, where) < 1.1 * step(picture[0], where) + 1e-3


def test_save_load_and_the_door_functions():
    ae = MotionAutoencoder(MotionAutoencoderConfig(residual_channels=2))
    basis = torch.linalg.qr(torch.randn(3 * 64, 2))[0].T.contiguous()
    ae.set_fit(basis, flow_scale=0.5, residual_scale=2.0)
    p = _texture(seed=5)
    video = _shifted_video(p, [0, 1, 1, 2, 2])

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = save_autoencoder(Path(d) / "motion.safetensors", ae)
        back = load_autoencoder(path)
    assert moves_portrait(back) and back.cfg == ae.cfg
    assert torch.equal(back.residual_basis, ae.residual_basis)
    z = encode_video(back, video)
    assert torch.allclose(z, ae.encode(video))
    assert reference_latent(back, p).shape == (1, 48, 1, 16, 16)
    with pytest.raises(ValueError, match="portrait"):
        decode_fn(back)
    assert decode_fn(back, p)(z).shape == (1, 3, 5, 128, 128)


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="multiple of cell"):
        MotionAutoencoderConfig(cell=7)
    with pytest.raises(ValueError, match="residual_channels"):
        MotionAutoencoderConfig(residual_channels=10_000)
    with pytest.raises(ValueError, match="flow_scale"):
        MotionAutoencoderConfig(flow_scale=0.0)


@pytest.mark.parametrize("setting, value, message", [
    ("mouth_tongue", 2.0, "'mouth_tongue' must be in 0..1, got 2"),
    ("mouth_opening", -0.5, "'mouth_opening' must be in 0..1"),
    ("rigid_upper_face", 1.5, "'rigid_upper_face' must be in 0..1"),
    ("rigid_brows", -1.0, "'rigid_brows' must be in 0..1"),
    ("flow_finest_level", 2, "flow_finest_level must be 0 or 1, got 2"),
    ("mouth_teeth", float("nan"), "'mouth_teeth' must be a finite number"),
    ("working_size", 100, "its vae config does not load: working_size 100 must be a multiple of cell 8"),
])
def test_a_bundle_with_a_bad_decode_setting_names_its_file_and_the_setting(tmp_path, setting, value, message):
    """A copy of the demo bundle whose bundle.json holds an out-of-range decode setting (or a size the grid
    cannot take): loading it fails with an error naming that bundle.json and the setting, not with an odd video."""
    import json
    import shutil

    from magicinfinite_core.errors import MagicInfiniteError
    from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR, load_bundle

    bundle = tmp_path / "bundle"
    shutil.copytree(DEMO_MODEL_DIR, bundle)
    spec = json.loads((bundle / "bundle.json").read_text())
    spec["vae"]["config"][setting] = value
    (bundle / "bundle.json").write_text(json.dumps(spec))
    with pytest.raises(MagicInfiniteError, match="bundle.json: ") as err:
        load_bundle(bundle, "cpu")
    assert message in str(err.value)


def test_the_embedded_demo_ships_a_motion_model_base_and_4_step_in_under_30_mb():
    """Issue 26's shipping rule: the base DiT and its 4-step generator, safetensors only, under 30 MB in all, and
    both load with every key in place (loading names missing or unexpected keys, so a load that passes is whole)."""
    import json

    from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR, load_bundle

    files = sorted(p.name for p in DEMO_MODEL_DIR.iterdir() if p.is_file())
    assert files == ["bundle.json", "dit.safetensors", "dit_4step.safetensors", "vae.safetensors"]
    assert sum((DEMO_MODEL_DIR / f).stat().st_size for f in files) < 30 * 1024 * 1024
    assert json.loads((DEMO_MODEL_DIR / "bundle.json").read_text())["vae"]["config"]["kind"] == "motion"
    base, fast = load_bundle(DEMO_MODEL_DIR, "cpu"), load_bundle(DEMO_MODEL_DIR, "cpu", distilled=True)
    assert any(not torch.equal(a, b) for a, b in zip(base.dit.state_dict().values(), fast.dit.state_dict().values(),
                                                     strict=True))


def test_x0_prediction_with_a_zero_head_stands_still_at_every_noise_level():
    cfg = DiTConfig(hidden_size=32, num_heads=2, rope_dims=(4, 6, 6), in_channels=8 + 12 + 1, out_channels=8,
                    condition_channels=12, prediction="x0", image_condition="every_frame", audio=None,
                    text_dim=16, pooled_dim=8)
    model = MagicInfiniteDiT(cfg).eval()
    with torch.no_grad():
        model.final_layer.linear.weight.zero_()
        model.final_layer.linear.bias.zero_()
    g = torch.Generator().manual_seed(0)
    noisy = torch.randn(1, 8, 2, 4, 4, generator=g)
    cond = torch.randn(1, 12, 1, 4, 4, generator=g)
    x = concat_image_condition(noisy, cond, every_frame=True)
    assert x.shape[1] == 21
    for sigma in (0.9, 0.3, 0.05):
        with torch.no_grad():
            v = model(x, torch.tensor([sigma * 1000]), torch.randn(1, 3, 16), None, torch.randn(1, 8))
        x0 = noisy - sigma * v  # the sampler's x0 from a velocity
        assert float(x0.abs().max()) < 1e-5


def test_dit_config_checks_the_condition_channels():
    with pytest.raises(ValueError, match="condition channels"):
        DiTConfig(in_channels=2 * 4 + 1, out_channels=4, condition_channels=6)
    with pytest.raises(ValueError, match="prediction"):
        DiTConfig(prediction="eps")
    with pytest.raises(ValueError, match="pick one"):
        DiTConfig(in_channels=9, out_channels=4, prediction="x0", image_condition="every_frame", reference_skip=True)


def test_framing_one_face_like_training_and_a_group_with_margin():
    H, W = 1000, 800
    face = FaceBox(300, 100, 420, 220)  # 120 px wide, high in a full-length photo
    x0, y0, x1, y1 = frame_faces([face], (H, W))
    side = x1 - x0
    assert y1 - y0 == side and side == pytest.approx(120 / FACE_SHARE, abs=1)
    assert x0 <= face.x0 and x1 >= face.x1 and y0 <= face.y0 and y1 >= face.y1
    two = [FaceBox(100, 300, 200, 400), FaceBox(600, 320, 700, 420)]
    x0, y0, x1, y1 = frame_faces(two, (H, W))
    assert x0 <= 100 - 30 and x1 >= 700 + 30 and 0 <= x0 and x1 <= W
    # near the edge: moved inside, never cut
    x0, y0, x1, y1 = frame_faces([FaceBox(0, 0, 100, 100)], (H, W))
    assert (x0, y0) == (0, 0) and x1 - x0 == y1 - y0
    # a picture narrower than the square: its largest square
    x0, y0, x1, y1 = frame_faces([FaceBox(10, 10, 90, 90)], (400, 100))
    assert (x1 - x0, y1 - y0) == (100, 100)


def test_output_size_keeps_the_picture_up_to_the_limit_and_even():
    assert output_size(601, 401) == (600, 400)
    assert output_size(3000, 2000, 1024) == (1024, 682)
    with pytest.raises(ValueError):
        output_size(100, 100, 8)
    assert np.all(np.array(output_size(37, 91, 64)) % 2 == 0)


# ----------------------------------------------------------------------------------------- end to end
def _motion_bundle():
    from magicinfinite_core.config import AudioLayerConfig
    from magicinfinite_core.weights.bundle import random_bundle

    ae_cfg = MotionAutoencoderConfig(residual_channels=2)
    c = ae_cfg.latent_channels
    dit_cfg = DiTConfig(hidden_size=32, num_heads=2, rope_dims=(4, 6, 6), patch_size=(1, 4, 4),
                        in_channels=c + ae_cfg.reference_channels + 1, out_channels=c,
                        condition_channels=ae_cfg.reference_channels, prediction="x0",
                        image_condition="every_frame", text_dim=16, pooled_dim=8,
                        audio=AudioLayerConfig(feature_dim=64, proj_dim=16, context_dim=16, num_heads=2))
    return random_bundle(3, height=128, width=128, dit_cfg=dit_cfg, vae_cfg=ae_cfg, std=0.02)


def _hopper(tmp_path, size=(300, 260)):
    """Grace Hopper (matplotlib's sample, public domain) on a wider canvas: the face is not centred."""
    import matplotlib
    from PIL import Image

    src = Image.open(__import__("pathlib").Path(matplotlib.__file__).parent / "mpl-data" / "sample_data"
                     / "grace_hopper.jpg").convert("RGB").resize((200, 234))
    canvas = Image.new("RGB", size, (40, 90, 60))
    canvas.paste(src, (size[0] - 200, 10))
    canvas.save(tmp_path / "hopper.png")
    return tmp_path / "hopper.png", np.asarray(canvas)


def test_generate_moves_the_picture_at_its_own_size_and_streaming_gives_the_same_frames(tmp_path):
    from magicinfinite_core.generate import generate
    from magicinfinite_core.media.video_io import probe_video
    from magicinfinite_core.streaming import generate_streaming
    from training.eval.real_photos import read_video

    bundle = _motion_bundle()
    portrait, picture = _hopper(tmp_path)
    rate = 16000
    t = np.arange(int(0.7 * rate)) / rate
    wav = (0.3 * np.sin(2 * np.pi * 200 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    out, report = generate(portrait, (wav, rate), "a person talks", model=bundle, out=tmp_path / "a.mp4",
                           distilled=True, distilled_timesteps=(1000.0, 500.0))
    info = probe_video(out)
    assert (info.width, info.height) == (300, 260) and (report.width, report.height) == (300, 260)
    assert info.frames == report.frames
    frames = read_video(out).astype(np.float32)
    assert np.abs(frames[0] - picture).mean() < 4  # frame 0 is the picture (through H.264)
    # the region is framed around the face on the right: the left strip never moves
    left = frames[:, :, :40]
    assert np.abs(left - left[:1]).max() < 12
    streamed, _ = generate_streaming(portrait, (wav, rate), "a person talks", model=bundle,
                                     out=tmp_path / "b.mp4", distilled=True, distilled_timesteps=(1000.0, 500.0))
    again = read_video(streamed).astype(np.float32)
    assert again.shape == frames.shape and np.abs(again - frames).mean() < 1.0


def test_max_size_reduces_the_output_and_a_faceless_picture_says_what_to_do(tmp_path):
    from magicinfinite_core.errors import MaskError
    from magicinfinite_core.generate import generate
    from magicinfinite_core.media.video_io import probe_video

    bundle = _motion_bundle()
    portrait, _ = _hopper(tmp_path)
    wav = np.zeros(int(0.3 * 16000), np.float32)
    out, _ = generate(portrait, (wav, 16000), "", model=bundle, out=tmp_path / "s.mp4", distilled=True,
                      distilled_timesteps=(1000.0,), max_size=150)
    info = probe_video(out)
    assert max(info.width, info.height) <= 150 and info.width % 2 == 0 and info.height % 2 == 0
    from PIL import Image

    Image.new("RGB", (200, 200), (90, 90, 90)).save(tmp_path / "grey.png")
    with pytest.raises(MaskError, match="face"):
        generate(tmp_path / "grey.png", (wav, 16000), "", model=bundle, out=tmp_path / "g.mp4", distilled=True,
                 distilled_timesteps=(1000.0,))
    assert not (tmp_path / "g.mp4").exists()


def test_given_mask_files_frame_the_region_and_are_cropped_into_it(tmp_path):
    """Speaker masks drawn on the whole picture (files, as the CLI's --speaker-mask) decide the framing."""
    from PIL import Image

    from magicinfinite_core.inputs.framing import frame_portrait

    picture = (np.asarray(_texture(400, 600, seed=7)[0].permute(1, 2, 0)) * 127.5 + 127.5).astype(np.uint8)
    mask = np.zeros((400, 600), np.uint8)
    mask[100:180, 420:500] = 255  # one speaker, right of centre
    Image.fromarray(mask).save(tmp_path / "m.png")
    img, img_u8, masks, ref = frame_portrait(picture, (128, 128), 1, [tmp_path / "m.png"])
    x0, y0, x1, y1 = ref.box
    assert x0 <= 420 and x1 >= 500 and y0 <= 100 and y1 >= 180 and x1 - x0 == y1 - y0
    assert img.shape == (1, 3, 128, 128) and masks.shape == (1, 128, 128)
    ys, xs = np.nonzero(masks[0])
    assert 0 < xs.min() and xs.max() < 127 and masks[0].mean() < 0.5  # the mask sits inside the framed region
    assert tuple(ref.image.shape[-2:]) == (400, 600)


def test_two_speakers_are_framed_as_two_tiles_each_like_a_single_portrait(tmp_path):
    """Several speakers (issue 26's multi-speaker leak): each face framed on its own, the regions side by side,
    each speaker's mask in its own tile only; one speaker keeps the single region."""
    from PIL import Image

    from magicinfinite_core.inputs.framing import frame_portrait

    picture = (np.asarray(_texture(400, 800, seed=8)[0].permute(1, 2, 0)) * 127.5 + 127.5).astype(np.uint8)
    files = []
    for i, (x0, x1) in enumerate(((520, 600), (120, 200))):  # speaker 0 on the right, speaker 1 on the left
        m = np.zeros((400, 800), np.uint8)
        m[150:230, x0:x1] = 255
        Image.fromarray(m).save(tmp_path / f"m{i}.png")
        files.append(tmp_path / f"m{i}.png")
    img, img_u8, masks, ref = frame_portrait(picture, (128, 128), 2, files)
    assert img.shape == (1, 3, 128, 256) and img_u8.shape == (128, 256, 3) and masks.shape == (2, 128, 256)
    assert len(ref.tiles) == 2 and ref.regions() == list(ref.tiles)
    (a0, _, a1, _), (b0, _, b1, _) = ref.tiles
    assert a0 <= 520 and a1 >= 600 and b0 <= 120 and b1 >= 200  # tile k frames speaker k, in the given order
    assert a1 - a0 == pytest.approx(80 / FACE_SHARE, abs=1)  # the face is the training share of its tile
    assert masks[0, :, :128].mean() > 0.1 and masks[0, :, 128:].max() == 0
    assert masks[1, :, 128:].mean() > 0.1 and masks[1, :, :128].max() == 0
    assert ref.box == (min(a0, b0), min(ref.tiles[0][1], ref.tiles[1][1]), max(a1, b1), max(ref.tiles[0][3], ref.tiles[1][3]))
    one = frame_portrait(picture, (128, 128), 1, files[:1])
    assert one[0].shape == (1, 3, 128, 128) and one[3].tiles == ()
    group = frame_portrait(picture, (128, 128), 2, files, tiles=False)
    assert group[0].shape == (1, 3, 128, 128) and group[3].tiles == ()


def test_a_tiled_latent_moves_each_speaker_in_its_own_box_only():
    ae = MotionAutoencoder(MotionAutoencoderConfig(residual_channels=2))
    picture = _texture(300, 600, seed=9)
    ref = MotionReference.tiled(picture, [(40, 50, 240, 250), (360, 60, 560, 260)])
    z = torch.zeros(1, ae.cfg.latent_channels, 2, 16, 32)
    assert float((ae.decode(z, ref)[:, :, -1] - picture).abs().max()) < 1e-4  # the zero latent is the picture
    s = ae.cfg.slot_channels
    for slot in range(4):  # tile 1 (right) moves: a flow of 3 working px to the left in every frame
        z[:, slot * s, 1:, 4:12, 20:28] = 3.0 * ae.cfg.flow_scale
    out = ae.decode(z, ref)[0, :, -1]
    change = (out - picture[0]).abs().amax(0)
    assert float(change[:, :340].max()) < 1e-4 and float(change[:, 565:].max()) < 1e-4  # outside tile 1: still
    assert float(change[100:200, 400:520].mean()) > 0.05  # inside: moved
    with pytest.raises(ValueError, match="several regions"):
        ref.region()
    # overlapping tiles that move the same way move the shared part once, not twice
    both = MotionReference.tiled(picture, [(100, 50, 300, 250), (200, 50, 400, 250)])
    z2 = torch.zeros(1, ae.cfg.latent_channels, 2, 16, 32)
    for slot in range(4):
        z2[:, slot * s, 1:] = 2.0 * ae.cfg.flow_scale
    single = ae.decode(z2[..., :16], MotionReference.tiled(picture, [(100, 50, 300, 250)]))[0, :, -1]
    shared = ae.decode(z2, both)[0, :, -1]
    assert float((shared - single)[:, 120:230, 220:280].abs().max()) < 1e-4
    with pytest.raises(ValueError, match="equal tiles"):
        ae.decode(torch.zeros(1, ae.cfg.latent_channels, 2, 16, 31), ref)


def test_generate_with_two_speakers_samples_a_tiled_latent_and_keeps_the_picture_size(tmp_path):
    from PIL import Image

    from magicinfinite_core.generate import generate
    from magicinfinite_core.media.video_io import probe_video

    bundle = _motion_bundle()
    _, hopper = _hopper(tmp_path, size=(220, 250))
    pair = np.concatenate([hopper, hopper[:, ::-1]], axis=1)  # two faces side by side
    Image.fromarray(pair).save(tmp_path / "pair.png")
    rate = 16000
    wav = (0.3 * np.sin(2 * np.pi * 200 * np.arange(int(0.5 * rate)) / rate)).astype(np.float32)
    out, report = generate(tmp_path / "pair.png", [(wav, rate), (np.zeros_like(wav), rate)], "two people talk",
                           model=bundle, out=tmp_path / "p.mp4", distilled=True, distilled_timesteps=(1000.0,))
    info = probe_video(out)
    assert (info.width, info.height) == (440, 250) and report.latent_shape[-2:] == [16, 32]


def test_speaker_masks_around_faces_frame_the_faces_themselves(tmp_path):
    """The Speaker Masks node's masks (a grown face box) frame the face inside each mask exactly as face detection
    does, in the masks' order; before, the mask itself was framed as the face and the demo workflow's Grace Hopper
    was a 492 px region instead of 350 (the face small in the model's view, lips that hardly moved)."""
    from PIL import Image

    from magicinfinite_core.inputs.framing import frame_portrait
    from magicinfinite_core.inputs.masks import speaker_masks
    from training.eval import real_photos as rp

    hopper = np.asarray(Image.open(Path(__file__).parents[1] / "workflows" / "assets" / "portrait_one_speaker.jpg").convert("RGB"))
    masks = speaker_masks(hopper, 1, fallback="center")
    ys, xs = np.nonzero(masks[0] > 0.5)
    detected = frame_portrait(hopper, (128, 128), 1)[3].box
    assert frame_portrait(hopper, (128, 128), 1, masks)[3].box == detected
    assert xs.max() + 1 - xs.min() > 1.2 * FACE_SHARE * (detected[2] - detected[0])  # the mask is much wider than the face
    pair = rp.composite(rp.group_portraits(tmp_path)[:2], 2)
    masks = speaker_masks(pair, 2, fallback="center")
    tiles = frame_portrait(pair, (128, 128), 2)[3].tiles
    assert frame_portrait(pair, (128, 128), 2, masks)[3].tiles == tiles
    assert frame_portrait(pair, (128, 128), 2, masks[::-1].copy())[3].tiles == tiles[::-1]  # tile k frames mask k's face
