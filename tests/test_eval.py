"""Evaluation metrics: lip-sync r and lag, pixel mouth opening, identity, head motion, seams, drift."""

from __future__ import annotations

import numpy as np
import pytest

from training.eval import metrics


def _smooth_signal(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.random(n + 4)
    return np.convolve(x, np.ones(3) / 3, mode="valid")[:n]


def test_lipsync_finds_the_lag():
    target = _smooth_signal(200, 0)
    late = np.concatenate([target[:2], target[:-2]])  # generated mouth 2 frames late
    res = metrics.lipsync(late, target, max_lag=3)
    assert res["best_lag"] == 2 and res["best_r"] > 0.99 and res["r"] < res["best_r"]
    assert res["r"] <= res["r_lag1"] < res["best_r"]  # lag 2 lies outside the +-1 window
    assert metrics.lipsync(target, target)["r"] == pytest.approx(1.0)
    assert metrics.pearson(np.zeros(10), target[:10]) == 0.0  # frozen mouth: no sync


def test_mouth_opening_from_pixels_tracks_drawn_mouth():
    frames = np.full((20, 32, 32, 3), 200, np.uint8)
    opening = np.linspace(0, 1, 20)
    box = np.array([10, 12, 22, 20], np.float32)
    for t, o in enumerate(opening):
        h = int(round(o * 8))
        frames[t, 12 : 12 + h, 12:20] = 20  # dark interior of height h
    pred = metrics.mouth_openings(frames, box[None])
    assert metrics.pearson(pred, opening) > 0.95


def test_mouth_opening_on_world_clip_matches_ground_truth():
    from training.data.speech import espeak_available

    if not espeak_available():
        pytest.skip("espeak-ng is needed to build a world clip")
    from training.data.clip import make_clip
    from training.data.render import WorldConfig

    clip = make_clip(1, "heldout", 33, WorldConfig(64, 64, 0.3, 0.4, 1, 0.0))
    pred = metrics.mouth_openings(clip.frames, clip.gt["mouth_box"][:, 0])
    assert metrics.pearson(pred, clip.gt["mouth_open"]) > 0.9


def test_identity_psnr_ssim_and_mask():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    frames = np.repeat(ref[None], 4, 0).copy()
    frames[:, 8:, 8:] = 0  # damage only inside the "mouth"
    keep = np.ones((16, 16), bool)
    keep[8:, 8:] = False
    assert metrics.masked_psnr(frames, ref, keep) == pytest.approx(100.0)
    assert metrics.masked_psnr(frames, ref) < 20
    assert metrics.ssim(frames, ref, keep) > metrics.ssim(frames, ref) + 0.2  # the 11-px window still sees the edge
    assert metrics.ssim(np.repeat(ref[None], 2, 0), ref) == pytest.approx(1.0, abs=1e-4)


def test_head_motion_sees_vertical_nod():
    rng = np.random.default_rng(1)
    base = (rng.random((48, 48, 3)) * 255).astype(np.uint8)
    base = np.clip(np.stack([np.convolve(r, np.ones(3) / 3, "same") for r in base.reshape(48, -1)]).reshape(48, 48, 3), 0, 255).astype(np.uint8)
    shifts = [0, 1, 2, 1, 0, -1, -2, -1, 0]
    frames = np.stack([np.roll(base, s, axis=0) for s in shifts])
    box = np.array([12, 12, 36, 36], np.float32)
    est = metrics.head_shifts(frames, box)
    assert np.allclose(est[:, 1], shifts, atol=0.3) and np.allclose(est[:, 0], 0, atol=0.3)
    still = metrics.head_motion(np.repeat(base[None], 9, 0), box)["motion_y"]
    nod = metrics.head_motion(frames, box)["motion_y"]
    assert still < 0.05 < 1.0 < nod
    sep = metrics.separability([0.0, 0.1, 0.05], [1.0, 1.2, 0.9])
    assert sep["auc"] == 1.0 and sep["cohen_d"] > 3


def test_seam_score_and_drift():
    rng = np.random.default_rng(2)
    frames = np.repeat((rng.random((1, 8, 8, 3)) * 200).astype(np.uint8), 40, 0).astype(np.int16)
    frames += rng.integers(0, 3, frames.shape).astype(np.int16)  # small per-frame noise
    jumpy = frames.copy()
    jumpy[20:] += 30
    assert metrics.seam_score(np.clip(jumpy, 0, 255).astype(np.uint8), [20]) > 5
    assert metrics.seam_score(np.clip(frames, 0, 255).astype(np.uint8), [20]) < 3
    clean = np.clip(frames, 0, 255).astype(np.uint8)
    d = metrics.drift(np.clip(jumpy, 0, 255).astype(np.uint8), clean[0], fps=1, span_s=10)
    assert d["drift_db"] > 5


def _grid_video(changes: np.ndarray) -> np.ndarray:
    """A flat grey video whose level moves by changes[t-1] into frame t (so frame_changes reads them back)."""
    level = [100.0]
    for c in changes:  # up while below mid-grey, down above it: the level stays inside 0-255
        level.append(level[-1] + (c if level[-1] < 128 else -c))
    level = np.asarray(level)
    return np.repeat(np.round(level).astype(np.uint8)[:, None, None, None], 4, 1).repeat(4, 2).repeat(3, 3)


def test_seam_score_compares_seams_with_other_latent_frame_starts():
    """Seams fall on latent-frame starts (t % 4 == 1); where a decoder changes those frames less than the
    frames inside a latent frame, seams that look like any other start score 1, not below; a seam twice as
    large as the other starts scores 2. Heavy-tailed changes elsewhere do not push a harmless seam over 1."""
    n = 200
    t = np.arange(1, n + 1)
    changes = np.where(t % 4 == 1, 2.0, 6.0)
    seams = [4 * k - 3 for k in (8, 16, 24, 32, 40)]
    vid = _grid_video(changes)
    assert metrics.frame_changes(vid) * 255 == pytest.approx(changes, abs=1e-3)
    assert np.array_equal(metrics.frame_changes(vid, chunk=7), metrics.frame_changes(vid))  # chunks join exactly
    assert metrics.seam_score(metrics.frame_changes(vid), seams) == metrics.seam_score(vid, seams)
    assert metrics.seam_score(vid, seams) == pytest.approx(1.0, abs=1e-4)
    assert metrics.seam_score(vid, seams, period=1) == pytest.approx(2.0 / (6.0 * 150 + 2.0 * 45) * 195, rel=1e-3)
    loud = changes.copy()
    loud[np.asarray(seams) - 1] = 4.0
    assert metrics.seam_score(_grid_video(loud), seams) == pytest.approx(2.0, abs=1e-4)
    # heavy tail elsewhere (a few big nods): the old mean-over-median estimator calls a plain seam a jump
    rng = np.random.default_rng(0)
    tail = np.clip(np.round(rng.pareto(1.5, n) + 1), 0, 40)
    tail[np.asarray(seams) - 1] = np.round(np.mean(tail[(t % 4 == 1) & ~np.isin(t, seams)]))
    vid = _grid_video(tail)
    others = tail[(t % 4 == 1) & ~np.isin(t, seams)].mean()
    assert metrics.seam_score(vid, seams) == pytest.approx(tail[np.asarray(seams) - 1].mean() / others, abs=1e-4)
    assert 0.8 < metrics.seam_score(vid, seams) < 1.2
    assert metrics.seam_score_vs_median(vid, seams) > 1.2


def test_seam_chance_says_whether_seams_stand_out():
    rng = np.random.default_rng(1)
    n = 400
    base = np.round(rng.uniform(1, 5, n))
    seams = [4 * k - 3 for k in range(5, 100, 7)]
    quiet = metrics.seam_chance(_grid_video(base), seams)
    assert 0.9 < quiet["mean"] < 1.1 and quiet["p_value"] > 0.05
    loud = base.copy()
    loud[np.asarray(seams) - 1] = 12
    jump = metrics.seam_chance(_grid_video(loud), seams)
    assert jump["p_value"] < 0.01 and metrics.seam_score(_grid_video(loud), seams) > jump["p95"]
    assert np.isnan(metrics.seam_chance(_grid_video(base), [])["p_value"])


def test_drift_trend_fits_a_line_through_noisy_seconds():
    rng = np.random.default_rng(3)
    flat = 36 + rng.normal(0, 2.5, 60)
    fit = metrics.drift_trend(flat)
    assert abs(fit["fitted_db"]) < fit["ci95_db"] + 0.3 and fit["scatter_db"] == pytest.approx(2.5, rel=0.35)
    falling = 36 - 0.05 * np.arange(60) + rng.normal(0, 0.2, 60)  # 2.95 dB worse by the last second
    fit = metrics.drift_trend(falling)
    assert fit["fitted_db"] == pytest.approx(2.95, abs=0.3) and fit["ci95_db"] < 0.3
    assert np.isnan(metrics.drift_trend([30.0, 31.0])["fitted_db"])


@pytest.mark.slow
def test_evaluate_runs_distilled_on_a_heldout_clip(tmp_path):
    """The full evaluation (lip sync, muted, identity incl. ground-truth reference, text control)
    on one committed held-out clip with the embedded demo model, sampled the distilled way."""
    import shutil
    from pathlib import Path

    from training.eval.evaluate import evaluate

    root = Path(__file__).resolve().parents[1]
    shutil.copytree(root / "training/data/sample/heldout_000001", tmp_path / "heldout_000001")
    demo = root / "magicinfinite_core/assets/demo"
    res = evaluate(demo / "dit.safetensors", demo / "vae.safetensors", tmp_path, clips=1, control_clips=1,
                   distilled=True, distilled_timesteps=(1000.0, 500.0))
    s, row = res["summary"], res["clips"][0]
    assert s["sampler"]["cfg"] == "none" and s["sampler"]["distilled_timesteps"] == [1000.0, 500.0]
    assert -1.0 <= row["r"] <= row["r_lag1"] <= row["best_r"] <= 1.0
    # the shipped autoencoder keeps the portrait (a lossy H.264 ground truth can score below it)
    assert row["gt_psnr_portrait"] > 5.0 and row["vae_psnr_portrait"] > 20.0
    assert s["still_static_clips"] == 0 and np.isnan(s["psnr_portrait_still_static"])
    assert set(res["control"][0]) == {"clip", "still", "nodding"}


@pytest.mark.slow
def test_evaluate_a_bundle_decodes_as_the_pipeline_and_writes_videos(tmp_path):
    """`evaluate(bundle=...)` samples the bundle's distilled DiT and decodes with the bundle's settings: a portrait
    gets the lip seam and rigid upper face face mesh finds (a real photograph here; the committed clip's 64 px
    face is too small for a seam), which a bare vae file's config never asks for, and each clip's video is
    written with its voice and read back."""
    import shutil
    from pathlib import Path

    from PIL import Image

    from magicinfinite_core.media.autoencoders import load_autoencoder
    from magicinfinite_core.media.video_io import probe_video
    from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR, load_bundle
    from training.data.clip import read_clip
    from training.eval import real_photos as rp
    from training.eval.evaluate import clip_reference, evaluate

    root = Path(__file__).resolve().parents[1]
    clip_dir = tmp_path / "heldout" / "heldout_000001"
    shutil.copytree(root / "training/data/sample/heldout_000001", clip_dir)
    photo = np.asarray(Image.open(rp.heldout_photo(rp.HALF_LENGTH, tmp_path)).convert("RGB"))
    vae = load_bundle(DEMO_MODEL_DIR, "cpu").vae
    ref = clip_reference(vae, photo)
    assert len(ref.seams) == 1 and len(ref.rigid_faces) == 1
    assert ref.box == (0, 0, photo.shape[1], photo.shape[0])
    bare = load_autoencoder(DEMO_MODEL_DIR / "vae.safetensors")  # the file's own config: no face parts asked for
    assert clip_reference(bare, photo) is photo
    clip_ref = clip_reference(vae, read_clip(clip_dir).frames[0])
    assert len(clip_ref.rigid_faces) == 1
    res = evaluate(None, None, tmp_path / "heldout", bundle=DEMO_MODEL_DIR, videos=tmp_path / "videos", clips=1,
                   control_clips=1, distilled=True)
    row = res["clips"][0]
    assert -1.0 <= row["r"] <= row["best_r"] <= 1.0 and row["psnr_portrait"] > 15.0
    info = probe_video(tmp_path / "videos" / "heldout_000001.mp4")
    assert info.frames == read_clip(clip_dir).frames.shape[0] and info.audio_codec == "aac"
    with pytest.raises(ValueError, match="a bundle folder, or both"):
        evaluate(None, DEMO_MODEL_DIR / "vae.safetensors", tmp_path / "heldout")


@pytest.mark.parametrize("args", [["--vae", "v.safetensors"], ["--bundle", "b", "--dit", "d.safetensors"], []])
def test_evaluate_cli_needs_a_bundle_or_both_files(args, capsys):
    from training.eval.evaluate import main

    with pytest.raises(SystemExit) as exit_:
        main([*args, "--heldout", "nowhere"])
    assert exit_.value.code == 2 and "give --bundle DIR, or both --dit and --vae" in capsys.readouterr().err


# ------------------------------------------------------------------------------ upper face (issue 26)
def _ramp_video(n: int, shift_px: int = 0) -> np.ndarray:
    """A horizontal grey ramp (2 grey levels per pixel); every odd frame moved right by `shift_px`."""
    x = np.arange(64, dtype=np.float32)
    frames = []
    for t in range(n):
        row = 40 + 2 * (x - (shift_px if t % 2 else 0))
        frames.append(np.repeat(np.repeat(row[None, :, None], 48, 0), 3, 2))
    return np.stack(frames).clip(0, 255).astype(np.uint8)


def test_upper_face_mask_is_the_oval_above_the_nose_tip():
    oval = np.array([[32, 4], [56, 24], [32, 44], [8, 24]], np.float32)  # a diamond 'face'
    m = metrics.upper_face_mask(oval, nose_tip_y=24, height=48, width=64)
    assert m[10, 32] and m[24, 32] and not m[25, 32]  # forehead in, nose-tip row in, below it out
    assert not m[10, 12] and not m[2, 32]  # outside the oval's sides and above its top
    box = metrics.upper_face_box_mask(np.array([10, 5, 50, 45]), mouth_top=30, height=48, width=64)
    assert box[5:30, 10:50].all() and box.sum() == 25 * 40


def test_still_video_scores_zero_flicker_and_capped_psnr():
    frames = _ramp_video(6)
    mask = np.zeros((48, 64), bool)
    mask[8:40, 8:56] = True
    f = metrics.flicker(frames, mask)
    assert f["mean"] == 0.0 and f["p95"] == 0.0
    assert metrics.region_psnr(frames, frames[0], mask) == metrics.PSNR_CAP
    assert np.isnan(metrics.flicker(frames[:1], mask)["mean"])  # one frame: no change to measure


def test_known_shift_scores_the_expected_change():
    frames = _ramp_video(6, shift_px=2)  # a 2 px move of a 2-levels-per-pixel ramp: 4 grey levels everywhere
    mask = np.zeros((48, 64), bool)
    mask[8:40, 8:56] = True  # away from the clipped edge
    f = metrics.flicker(frames, mask)
    assert f["mean"] == pytest.approx(4.0, abs=0.6) and f["p95"] == pytest.approx(4.0, abs=0.6)
    # PSNR of the moved frames (half of them) vs frame 0: mse = half of (4/255)^2
    assert metrics.region_psnr(frames, frames[0], mask) == pytest.approx(
        10 * np.log10(1 / (0.5 * (4 / 255) ** 2)), abs=1.5)
    # a seam: one jump of 10 grey levels in an otherwise slowly brightening video, seen on the masked region
    vid = np.stack([np.full((48, 64, 3), 50 + t + (10 if t >= 5 else 0), np.uint8) for t in range(10)])
    assert metrics.seam_score(vid, [5], mask=mask) == pytest.approx(11.0, rel=0.05)


def test_ssim_in_chunks_equals_one_pass():
    """A 60 s 512 x 512 video's SSIM in one pass needs ~30 GB; chunks give the same mean."""
    import numpy as np

    from training.eval.metrics import ssim

    rng = np.random.default_rng(0)
    f = rng.integers(0, 255, (70, 32, 32, 3), dtype=np.uint8)
    r = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    for keep in (None, rng.random((32, 32)) > 0.5, rng.random((70, 32, 32)) > 0.5):
        assert abs(ssim(f, r, keep, chunk=16) - ssim(f, r, keep, chunk=1000)) < 1e-6
