"""The photographic part of the world: animated real photographs and photo textures.

Real checks on real pixels: the clip format is the drawn world's, clips are pure functions of
their seed, the mouth read back from pixels (our measure and mediapipe's lip gap) follows the
ground truth, "still" moves nothing but the mouth, and held-out builds never touch a training
photograph.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("skimage")
pytest.importorskip("mediapipe")

from training.data import photo_face, photos, splits  # noqa: E402
from training.data.clip import load_gt, make_clip, save_clip  # noqa: E402
from training.data.mouth import measure_mouth_opening, mouth_from_audio  # noqa: E402
from training.data.render import WorldConfig  # noqa: E402
from training.data.speech import sample_voice, speech_track  # noqa: E402

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
PHOTO_CFG = WorldConfig(128, 128, photo_faces=1.0)


def _speech(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    audio, _ = speech_track(rng, sample_voice(rng, "train"), n)
    return mouth_from_audio(audio, n)


def _scene(name: str, action: str, n: int = 33, emotion: str = "neutral", seed: int = 3):
    op, wd = _speech(2, n)
    assert op.std() > 0.15 and (op < 0.05).sum() >= 3  # speech and silence both present
    ctl = {"emotion": emotion, "action": action, "background": "static"}
    # faces of 25-40 px half-width: face mesh reads lips reliably from there up
    return photo_face.sample_photo_scene(np.random.default_rng(seed), name, op, wd, ctl, 128, 128, (0.2, 0.3))


@needs_espeak
def test_fixed_controls_change_only_what_they_fix():
    """`make_clip(controls=...)`: one seed made smiling and neutral has the same voice, photograph and crop, the
    prompt says the emotion, and the frames differ only once the smile has set in (frame 0 is the photo itself)."""
    smile = make_clip(8, "train", 13, PHOTO_CFG, controls={"emotion": "smile", "action": "still"})
    plain = make_clip(8, "train", 13, PHOTO_CFG, controls={"emotion": "neutral", "action": "still"})
    assert smile.meta["controls"]["emotion"] == "smile" and plain.meta["controls"]["emotion"] == "neutral"
    assert smile.meta["controls"]["action"] == plain.meta["controls"]["action"] == "still"
    assert np.array_equal(smile.audio, plain.audio) and smile.meta["photo"] == plain.meta["photo"]
    assert np.array_equal(smile.frames[0], plain.frames[0]) and not np.array_equal(smile.frames[-1], plain.frames[-1])
    assert smile.meta["prompt"] != plain.meta["prompt"]


@needs_espeak
def test_photo_clip_has_the_drawn_clip_format_and_is_deterministic(tmp_path):
    drawn = make_clip(5, "train", 13, WorldConfig(128, 128))
    a = make_clip(5, "train", 13, PHOTO_CFG)
    b = make_clip(5, "train", 13, PHOTO_CFG)
    c = make_clip(6, "train", 13, PHOTO_CFG)
    assert a.meta["kind"] == "photo_face" and drawn.meta["kind"] == "drawn"
    assert a.frames.shape == (13, 128, 128, 3) and a.frames.dtype == np.uint8
    assert set(a.gt) == set(drawn.gt) | {"portrait_flow"}  # the renderer's exact field (build item 3)
    assert a.gt["portrait_flow"].shape == (13, 2, 32, 32) and a.gt["portrait_flow"].dtype == np.float16
    for k, v in drawn.gt.items():
        assert a.gt[k].dtype == v.dtype, k
        assert a.gt[k].shape[2:] == v.shape[2:] and a.gt[k].shape[0] == v.shape[0], k
    assert a.gt["face_masks"].shape == (13, 1, 128, 128) and a.gt["speaker_mask"].any()
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio) and a.meta == b.meta
    assert not np.array_equal(a.frames, c.frames)
    assert a.meta["photo"]["name"] in {p.name for p in photos.face_photos("train")}
    assert all(splits.identity_split(i) == "train" for i in a.meta["identity_ids"])
    assert a.meta["style"] == "realistic" and a.meta["speaker"] == 0
    # frame 0 is the portrait: mouth closed; later frames follow the audio
    op, _ = mouth_from_audio(a.audio, 13)
    assert a.gt["mouth_open"][0] == 0.0 and np.allclose(a.gt["mouth_open"][1:], op[1:])
    # the face box / mask sit on the photographed face: the mask covers the mouth box centre
    x0, y0, x1, y1 = a.gt["mouth_box"][0, 0]
    assert a.gt["face_masks"][0, 0][int((y0 + y1) / 2), int((x0 + x1) / 2)]
    fx0, fy0, fx1, fy1 = a.gt["face_box"][0, 0]
    assert fx0 < x0 < x1 < fx1 and fy0 < y0 < y1 < fy1
    d = save_clip(a, tmp_path / "photo_clip")
    gt = load_gt(d)
    assert np.array_equal(gt["face_masks"], a.gt["face_masks"])


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_mouth_from_pixels_and_mediapipe_follow_ground_truth(name):
    from training.eval.metrics import mediapipe_mouth_openings

    sc = _scene(name, "nodding")
    frames, gt = photo_face.render_photo_scene(sc)
    ours = np.array([measure_mouth_opening(f, b) for f, b in zip(frames, gt["mouth_box"][:, 0], strict=True)])
    assert np.corrcoef(ours, gt["mouth_open"])[0, 1] > 0.9
    mp = mediapipe_mouth_openings(frames)
    ok = np.isfinite(mp)
    assert ok.mean() >= 0.95  # the animated photo is still a face to face mesh
    assert np.corrcoef(mp[ok], gt["mouth_open"][ok])[0, 1] > 0.8
    closed, wide = gt["mouth_open"] < 0.02, gt["mouth_open"] > 0.5
    assert (ok & closed).sum() >= 3 and (ok & wide).sum() >= 3
    assert mp[ok & closed].max() < mp[ok & wide].mean()  # face mesh sees closed vs open lips


def test_still_moves_only_the_mouth_and_jaw_and_nodding_moves_the_head():
    sc = _scene("luispedro", "still")
    frames, gt = photo_face.render_photo_scene(sc)
    f = frames.astype(np.int16)
    change = np.abs(np.diff(f, axis=0)).max(axis=(0, 3))  # [H, W] largest frame-to-frame change
    x0, y0, x1, y1 = gt["mouth_box"][0, 0]
    h = y1 - y0
    yy, xx = np.mgrid[: change.shape[0], : change.shape[1]] + 0.5
    # everything outside the lower face (inside the face box sideways, from the nose down to
    # the upper neck) is bit-identical on every frame
    fx0, _, fx1, chin = gt["face_box"][0, 0]
    jaw = (xx > fx0) & (xx < fx1) & (yy > y0 - 2 * h) & (yy < chin + 0.7 * (chin - y0))
    assert change[~jaw].max() == 0
    assert change[jaw].max() > 60  # the mouth does open
    # the face box only grows at the chin (jaw drop); its top and sides stay put
    assert np.ptp(gt["face_box"][:, 0, :3], axis=0).max() < 1e-3
    assert np.ptp(gt["face_box"][:, 0, 3]) > 0.5

    nod_frames, nod_gt = photo_face.render_photo_scene(_scene("luispedro", "nodding"))
    nf = nod_frames.astype(np.int16)
    nchange = np.abs(nf - nf[:1]).max(axis=(0, 3))
    eyes = (yy < y0 - 2.0 * h) & (yy > nod_gt["face_box"][0, 0, 1])
    assert nchange[eyes].mean() > 10  # the whole head moves
    assert np.ptp(nod_gt["head_pos"][:, 0, 1]) > 2.0  # vertical bob in pixels


def test_heldout_split_never_uses_training_photos():
    tr = {p.name for p in photos.PHOTOS if p.split == "train"}
    ho = {p.name for p in photos.PHOTOS if p.split == "heldout"}
    assert not tr & ho and tr | ho == {p.name for p in photos.PHOTOS}
    assert {p.name for p in photos.face_photos("heldout")} <= ho
    assert {p.name for p in photos.texture_photos("heldout")} <= ho
    assert {p.name for p in photos.texture_photos("train")} <= tr
    assert len(photos.face_photos("heldout")) >= 2 and len(photos.face_photos("train")) >= 2
    rng = np.random.default_rng(0)
    for _ in range(30):
        name, patch = photos.random_texture(rng, "heldout", (32, 24))
        assert name in ho and patch.shape == (24, 32, 3) and 0.0 <= patch.min() <= patch.max() <= 1.0


@needs_espeak
def test_heldout_clips_only_show_heldout_photos():
    cfg = WorldConfig(64, 64, photo_faces=0.5, photo_textures=1.0)
    ho = {p.name for p in photos.PHOTOS if p.split == "heldout"}
    kinds = set()
    for i in range(10):
        clip = make_clip(splits.clip_seed(0, "heldout", i), "heldout", 5, cfg)
        kinds.add(clip.meta["kind"])
        used = {clip.meta["background"].get("photo")}
        if clip.meta["kind"] == "photo_face":
            used.add(clip.meta["photo"]["name"])
        else:
            for ch in clip.meta["photo_textures"]["characters"]:
                used |= set(ch.values())
        assert used <= ho, used
        assert all(splits.identity_split(i) == "heldout" for i in clip.meta["identity_ids"])
    assert kinds == {"photo_face", "drawn"}


@needs_espeak
def test_photo_textures_change_the_drawn_world_and_zero_keeps_it():
    base = make_clip(21, "train", 5, WorldConfig(64, 64))
    same = make_clip(21, "train", 5, WorldConfig(64, 64, photo_textures=0.0))
    tex = make_clip(21, "train", 5, WorldConfig(64, 64, photo_textures=1.0))
    assert np.array_equal(base.frames, same.frames)
    assert tex.meta["background"]["kind"] in ("photo", "leaves") and tex.meta["background"]["photo"]
    assert not photos.photo(tex.meta["background"]["photo"]).shows_person  # no face behind the cast
    assert all(not p.shows_person for p in photos.texture_photos("train", background=True))
    assert all(not p.shows_person for p in photos.texture_photos("heldout", background=True))
    assert not np.array_equal(base.frames, tex.frames)
    assert np.array_equal(base.gt["face_masks"], tex.gt["face_masks"])  # same scene, new surfaces


def test_landmarks_are_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("MAGICINFINITE_CACHE", str(tmp_path))
    monkeypatch.setattr(photo_face, "_MEM", {})
    a = photo_face.photo_landmarks("takeo")
    files = list((tmp_path / "face_landmarks").glob("takeo-*.json"))
    assert len(files) == 1 and a.shape == (468, 2)
    monkeypatch.setattr(photo_face, "_MEM", {})
    monkeypatch.setattr(photo_face, "detect_landmarks", lambda img: pytest.fail("re-measured"))
    b = photo_face.photo_landmarks("takeo")
    assert np.array_equal(a, b)
    h, w = photos.load_photo("takeo").shape[:2]
    assert 0 < a[:, 0].min() and a[:, 0].max() < w and 0 < a[:, 1].min() and a[:, 1].max() < h


@needs_espeak
def test_real_share_and_real_only_option():
    real = {p.name for p in photos.PHOTOS if not p.generated}
    only_real = WorldConfig(48, 48, photo_faces=1.0, photo_generated=False)
    mixed = WorldConfig(48, 48, photo_faces=1.0, photo_real_share=0.0)
    for i in range(3):
        assert make_clip(splits.clip_seed(1, "train", i), "train", 3, only_real).meta["photo"]["name"] in real
        clip = make_clip(splits.clip_seed(1, "train", i), "train", 3, mixed)
        assert clip.meta["photo"]["generated"] and clip.meta["photo"]["name"] not in real


@needs_espeak
def test_photo_textured_drawn_mouths_still_read_back():
    cfg = WorldConfig(128, 128, face_min=0.09, face_max=0.3, photo_textures=1.0)
    rs = []
    for seed in range(4):
        clip = make_clip(seed, "train", 40, cfg)
        assert clip.meta["photo_textures"]["background"]
        sp = clip.meta["speaker"]
        m = [measure_mouth_opening(f, b) for f, b in zip(clip.frames, clip.gt["mouth_box"][:, sp], strict=True)]
        if clip.gt["mouth_open"].std() > 0.05:
            rs.append(float(np.corrcoef(m, clip.gt["mouth_open"])[0, 1]))
    assert len(rs) >= 3 and min(rs) > 0.9, rs  # skin / hair / clothes textures do not fool the measure


@pytest.mark.parametrize("action", ["still", "nodding"])
def test_the_exact_flow_field_rebuilds_the_frames_better_than_optical_flow(action):
    """``portrait_flow`` (issue 26, build item 3): frame 0 warped by the field's 8x8-cell means (what a motion
    latent holds) rebuilds every frame's face, outside the drawn mouth gap, closer than optical flow does; a
    still head's field is exactly zero above the mouth."""
    import torch
    import torch.nn.functional as F

    from magicinfinite_core.media.motion_autoencoder import MotionAutoencoder, MotionAutoencoderConfig, warp

    frames, gt = photo_face.render_photo_scene(_scene("luispedro", action))
    n = len(frames)
    x = torch.tensor(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    ae = MotionAutoencoder(MotionAutoencoderConfig(residual_channels=0))
    face = torch.tensor(gt["face_masks"][:, 0])[:, None].clone()
    for t, (x0, y0, x1, y1) in enumerate(gt["mouth_box"][:, 0]):
        face[t, :, int(y0) : int(y1) + 1, int(x0) : int(x1) + 1] = False

    def error(cells: torch.Tensor) -> float:
        moved = warp(x[:1].expand(n, -1, -1, -1), F.interpolate(cells, size=(128, 128), mode="bilinear", align_corners=False))
        return float((moved - x).abs().mean(1, keepdim=True)[face].mean()) * 127.5

    exact = F.adaptive_avg_pool2d(torch.tensor(gt["portrait_flow"].astype(np.float32)), (16, 16))
    optical = ae.gated_flow(x, x[0], ae._cell_flow(x, x[0]))
    assert float(exact[0].abs().max()) == 0.0  # frame 0 is the portrait
    assert error(exact) < 0.9 * error(optical) and error(exact) < 0.2 * error(torch.zeros_like(exact))
    if action == "still":
        x0, y0, x1, y1 = gt["mouth_box"][0, 0]
        rows = int(y0 - 2 * (y1 - y0)) // 4  # above the nose (the still test above: nothing changes there)
        assert float(np.abs(gt["portrait_flow"][:, :, :rows]).max()) == 0.0
    else:
        assert float(exact.abs().amax(dim=(1, 2, 3)).max()) > 2.0  # the head's bob is in the field


@needs_espeak
def test_caching_encodes_an_animated_photo_with_its_exact_field_and_a_drawn_clip_with_optical_flow():
    import torch

    from magicinfinite_core.media.motion_autoencoder import MotionAutoencoder, MotionAutoencoderConfig
    from training.data.clip import ClipArrays
    from training.data.tensors import frames_to_tensor
    from training.preprocess import clip_latent

    ae = MotionAutoencoder(MotionAutoencoderConfig(residual_channels=2))
    for cfg, exact in ((PHOTO_CFG, True), (WorldConfig(128, 128), False)):
        c = make_clip(5, "train", 9, cfg)
        latent, reference = clip_latent(ae, ClipArrays("c", c.frames, c.audio, c.gt, c.meta))
        frames = frames_to_tensor(c.frames)[None]
        optical = ae.encode(frames)[0]
        assert reference is not None and reference.shape == (48, 1, 16, 16)
        if exact:
            field = torch.from_numpy(c.gt["portrait_flow"].astype(np.float32))[None]
            assert torch.equal(latent, ae.encode(frames, flow=field)[0]) and not torch.equal(latent, optical)
            # `--optical-flow`: the photo is encoded as footage would be
            arrays = ClipArrays("c", c.frames, c.audio, c.gt, c.meta)
            assert torch.equal(clip_latent(ae, arrays, exact_flow=False)[0], optical)
        else:
            assert "portrait_flow" not in c.gt and torch.equal(latent, optical)


def test_a_cache_refuses_to_mix_exact_fields_and_optical_flow(tmp_path):
    """`--optical-flow` is a cache setting: resuming with the other choice is refused, and a cache written
    before the choice existed (exact fields) resumes as before."""
    import json

    from training.preprocess import CacheSettings, _check_settings

    exact, optical = CacheSettings(vae_sha="v"), CacheSettings(vae_sha="v", exact_flow=False)
    _check_settings(tmp_path / "a", exact)
    with pytest.raises(RuntimeError, match="exact_flow"):
        _check_settings(tmp_path / "a", optical)
    old = tmp_path / "old"
    _check_settings(old, exact)
    settings = json.loads((old / "cache.json").read_text())
    del settings["exact_flow"]
    (old / "cache.json").write_text(json.dumps(settings))
    _check_settings(old, exact)
    with pytest.raises(RuntimeError, match="exact_flow"):
        _check_settings(old, optical)


def test_greyscale_prints_are_grey_with_one_cast_and_zero_keeps_the_colour_world():
    colour = make_clip(7, "train", 5, PHOTO_CFG)
    same = make_clip(7, "train", 5, WorldConfig(128, 128, photo_faces=1.0, photo_greyscale=0.0))
    grey = make_clip(7, "train", 5, WorldConfig(128, 128, photo_faces=1.0, photo_greyscale=1.0))
    assert np.array_equal(colour.frames, same.frames) and not colour.meta["photo"]["greyscale"]
    assert grey.meta["photo"]["greyscale"] and grey.meta["photo"]["name"] == colour.meta["photo"]["name"]
    f = grey.frames.astype(np.float64)
    lit = f[..., 1] > 40  # away from black, where rounding dominates the ratio
    ratio_r, ratio_b = (f[..., 0][lit] / f[..., 1][lit]), (f[..., 2][lit] / f[..., 1][lit])
    assert ratio_r.std() < 0.03 and ratio_b.std() < 0.03  # one cast over the whole clip
    assert np.abs(colour.frames.astype(np.float64) - f).mean() > 2.0  # the colour clip was not grey
    # the motion is the colour clip's: same ground truth
    assert np.array_equal(colour.gt["mouth_open"], grey.gt["mouth_open"])


def test_a_world_asked_for_generated_portraits_refuses_to_build_without_them(tmp_path, monkeypatch):
    from training.data import build, photos

    real_available = photos.available
    monkeypatch.setattr(photos, "available", lambda p: not p.generated and real_available(p))
    cfg = WorldConfig(48, 48, photo_faces=1.0)
    with pytest.raises(RuntimeError, match="pip install comfyui-workflow-templates-media-.*--no-generated-faces"):
        build.build(tmp_path / "w", 1, frames=3, size=48, cfg=cfg, progress=False)
    assert not list(tmp_path.glob("w/train_*"))  # nothing half-built
    only_real = WorldConfig(48, 48, photo_faces=1.0, photo_generated=False)
    build.build(tmp_path / "r", 1, frames=3, size=48, cfg=only_real, progress=False)
    assert len(list((tmp_path / "r").glob("train_*"))) == 1


@pytest.mark.parametrize("flag", ["--greyscale", "--open-portraits"])
def test_shares_outside_0_1_are_refused_before_anything_is_built(tmp_path, flag, capsys):
    from training.data import build

    with pytest.raises(SystemExit) as e:
        build.main(["--out", str(tmp_path / "w"), "--num-clips", "1", flag, "1.5"])
    assert e.value.code == 2 and f"{flag} must be in 0..1" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


@needs_espeak
def test_an_open_smile_portrait_closes_its_mouth_on_silence():
    """Issue 26, build item 3: a portrait with an open smile is the clip's frame 0 as photographed, and the world
    teaches its mouth to close in silence and open with the voice. Read back by face mesh, not from the labels."""
    from training.eval.real_photos import FaceMeter

    clip = make_clip(16, "train", 33, WorldConfig(128, 128, photo_faces=1.0, photo_open_portraits=1.0))
    assert clip.meta["photo"]["open_portrait"]
    opening = clip.gt["mouth_open"]
    with FaceMeter() as meter:
        gaps = np.array([meter.faces(f)[0].gap for f in clip.frames])
    silent, loud = opening[1:] < 0.02, opening[1:] > 0.3
    assert silent.sum() >= 5 and loud.sum() >= 5
    assert np.median(gaps[1:][silent]) < 0.7 * gaps[0]  # closed: well under the photo's own open smile
    assert gaps[1:][loud].mean() > 1.3 * gaps[0]  # and opens past it with the voice


@needs_espeak
def test_expression_change_reads_the_worlds_smile_frown_and_surprise():
    """The emotion measure (`bench/emotion.py`) against the training world's own expressions on a real photograph
    (one voice, one crop, only the emotion differs): a smile raises the mouth corners, a frown lowers them and
    surprise raises the brows, each read by face mesh against the same video with a neutral face."""
    from training.eval import real_photos as rp

    read = {}
    with rp.FaceMeter() as meter:
        for emotion in ("neutral", "smile", "frown", "surprise"):
            frames, _ = photo_face.render_photo_scene(_scene("luispedro", "still", emotion=emotion))
            read[emotion] = rp.expression_change(frames, frames[0], meter)
        with pytest.raises(rp.NoFaceError):
            rp.expression_change(frames, np.full((64, 64, 3), 128, np.uint8), meter)
    neutral = read["neutral"]
    assert read["smile"]["corner_lift"] > neutral["corner_lift"] + 0.008  # measured: +0.014
    assert read["frown"]["corner_lift"] < neutral["corner_lift"] - 0.008  # -0.012
    assert read["surprise"]["brow_lift"] > neutral["brow_lift"] + 0.015  # +0.024
    assert read["frown"]["brow_lift"] < neutral["brow_lift"] - 0.008  # -0.015
    assert read["surprise"]["mouth_width"] < neutral["mouth_width"] - 0.015  # -0.029
    assert abs(neutral["corner_lift"]) < 0.003 and abs(neutral["mouth_width"]) < 0.003


@needs_espeak
def test_rigid_brows_keep_a_surprised_brow_raise_that_the_rigid_upper_face_erased():
    """The world's surprise on a real photograph, encoded with its exact field and decoded as the demo decodes: the
    rigid upper face alone (v8.4) moves the brows with the nose, and the raise is lost; with `rigid_brows` (v8.6, as
    shipped) each brow's own lift comes back (read by face mesh against the portrait, as `bench/emotion.py` does)."""
    import copy
    import dataclasses

    import torch

    from magicinfinite_core.media.autoencoders import decode_video, encode_video
    from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR, load_bundle
    from training.data.tensors import frames_to_tensor, tensor_to_frames
    from training.eval import real_photos as rp
    from training.eval.evaluate import clip_reference

    frames, gt = photo_face.render_photo_scene(_scene("luispedro", "still", emotion="surprise"))
    brows = load_bundle(DEMO_MODEL_DIR, "cpu").vae  # the demo as it ships (rigid_brows since v8.6)
    assert brows.cfg.rigid_upper_face == 1.0 and brows.cfg.rigid_brows == 1.0
    held = copy.deepcopy(brows)
    held.cfg = dataclasses.replace(brows.cfg, rigid_brows=0.0)  # v8.4's decode
    flow = torch.from_numpy(gt["portrait_flow"].astype(np.float32))[None]
    read = {}
    with torch.inference_mode(), rp.FaceMeter() as meter:
        truth = rp.expression_change(frames, frames[0], meter)["brow_lift"]
        for name, vae in (("held", held), ("brows", brows)):
            latent = encode_video(vae, frames_to_tensor(frames)[None], flow=flow)
            video = tensor_to_frames(decode_video(vae, latent, clip_reference(vae, frames[0]))[0])[: len(frames)]
            read[name] = rp.expression_change(video, frames[0], meter)["brow_lift"]
    assert truth > 0.015  # measured: +0.018 face heights
    assert read["held"] < 0.3 * truth  # -0.011: the raise is lost
    assert read["brows"] > 0.5 * truth  # +0.014


@needs_espeak
def test_full_size_optical_flow_catches_more_of_a_smile_at_the_mouth_corners():
    """`flow_finest_level` 0 (DIS refined to the working size) against the default 1 (half size): the smile's own
    motion (smiling clip minus the same clip neutral, 8 px cell means, around the mouth) caught as a share of the
    renderer's exact field's."""
    import torch
    import torch.nn.functional as F

    from magicinfinite_core.media.motion_autoencoder import MotionAutoencoder, MotionAutoencoderConfig

    cells = {}
    for emotion in ("neutral", "smile"):
        sc = _scene("luispedro", "still", emotion=emotion)
        frames, gt = photo_face.render_photo_scene(sc)
        x = torch.tensor(frames[len(frames) // 2 :]).permute(0, 3, 1, 2).float() / 127.5 - 1
        p = torch.tensor(frames[0]).permute(2, 0, 1).float() / 127.5 - 1
        exact = F.adaptive_avg_pool2d(torch.tensor(gt["portrait_flow"][len(frames) // 2 :].astype(np.float32)), (16, 16))
        cells[emotion] = {"exact": exact} | {level: MotionAutoencoder(MotionAutoencoderConfig(
            residual_channels=0, flow_finest_level=level))._cell_flow(x, p) for level in (0, 1)}
        mouth = sc.landmarks[[61, 291, 13, 14]] / photo_face.SUPERSAMPLE
    cy, cx = (int(v) // 8 for v in mouth.mean(0)[::-1])
    window = (slice(None), slice(None), slice(cy - 2, cy + 3), slice(cx - 3, cx + 4))
    smile = {k: (cells["smile"][k] - cells["neutral"][k])[window] for k in ("exact", 0, 1)}
    caught = {k: float((smile[k] * smile["exact"]).sum() / (smile["exact"] ** 2).sum()) for k in (0, 1)}
    assert caught[0] > caught[1] + 0.1, caught  # measured: 0.75 against 0.49
    assert caught[0] > 0.65, caught
