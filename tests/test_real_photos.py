"""Real-photo evaluation (training.eval.real_photos, bench/demo_quality.py): the lip-gap measure on a
real photograph whose mouth a warp opens, the reversed-audio control, silent input, the no-face
error, the multi-speaker ratio, and the bench end to end on the embedded demo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mediapipe")

from training.eval import real_photos as rp  # noqa: E402


@pytest.fixture(scope="module")
def meter():
    with rp.FaceMeter() as m:
        yield m


@pytest.fixture(scope="module")
def portraits(tmp_path_factory):
    return rp.default_portraits(tmp_path_factory.mktemp("portraits"))


def test_a_meter_reading_several_crops_averages_them_and_keeps_the_first_crops_landmarks(meter, portraits):
    """FaceMeter(crops=...) on a real photo: the same crop twice reads exactly the one-crop gap and landmarks;
    crops shifted by a percent of the face read a gap within face mesh's noise of it, with the first crop's
    landmarks."""
    from PIL import Image

    img = np.asarray(Image.open(portraits[0]).convert("RGB"))
    one = meter.faces(img)[0]
    assert np.isfinite(one.gap) and one.landmarks is not None
    with rp.FaceMeter(crops=(rp.FACE_CROP, rp.FACE_CROP)) as twice:
        same = twice.faces(img)[0]
    assert same.gap == pytest.approx(one.gap, abs=1e-9) and np.array_equal(same.landmarks, one.landmarks)
    with rp.FaceMeter(crops=(rp.FACE_CROP, (0.01, 0.0, 1.78), (0.0, -0.01, 1.82))) as shifted:
        avg = shifted.faces(img)[0]
    assert avg.gap != one.gap and abs(avg.gap - one.gap) < 0.01 and np.array_equal(avg.landmarks, one.landmarks)


def open_mouth(img: np.ndarray, lips: tuple[float, float, float, float], d: float) -> np.ndarray:
    """Drop the lower lip and jaw of a photo by `d` px (smooth backward warp) and paint the opened gap
    dark: a mouth opened by a known amount."""
    from scipy.ndimage import map_coordinates

    h, w = img.shape[:2]
    x0, y0, x1, y1 = lips
    cx, cy, half, lh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, y1 - y0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    wx = 0.5 * (1 + np.cos(np.pi * np.clip(np.abs(xx - cx) / (1.3 * half), 0, 1)))
    below = yy - cy
    fall = np.where(below < 0, 0.0, np.clip(1 - (below - 4 * lh) / (3 * lh), 0, 1))  # jaw moves, neck does not
    shift = d * wx * fall
    src = yy - shift
    out = np.stack([map_coordinates(img[..., c].astype(np.float32), [src, xx], order=1, mode="nearest")
                    for c in range(3)], -1)
    gap = (below >= 0) & (src < cy) & (wx > 0.05)
    out[gap] = np.array([45, 15, 20], np.float32)
    return out.clip(0, 255).astype(np.uint8)


def test_lip_gap_follows_a_warped_mouth_opening(meter, portraits):
    ref = rp.portrait_reference(portraits[0], 256, 256, meter, name="grace_hopper")
    lips = ref.faces[0].lips
    rng = np.random.default_rng(0)
    opening = rng.permutation(np.linspace(0, 1.2 * (lips[3] - lips[1]), 10))
    frames = np.stack([open_mouth(ref.image, lips, d) for d in opening])
    det, gaps = meter.track(frames, ref.centres)
    assert det.all() and np.isfinite(gaps).all()
    from training.eval.metrics import pearson

    assert pearson(gaps[:, 0], opening) > 0.9
    assert gaps[opening.argmax(), 0] > 3 * gaps[opening.argmin(), 0] + 0.02
    # the darkness measure inside the portrait's mouth box sees it too
    assert pearson(rp.mouth_darkness(frames, ref.mouth_boxes[0]), opening) > 0.9
    # identity outside the expanded mouth box is barely touched by the warp
    assert rp.identity(frames, ref)["psnr"] > 28


def _bursts(seconds: float, onsets: list[float], seed: int) -> np.ndarray:
    """A voiced tone in bursts at given onsets with a fast attack and a slow decay (not symmetric in time)."""
    sr = rp.SAMPLE_RATE
    t = np.arange(int(seconds * sr)) / sr
    env = np.zeros_like(t)
    for o in onsets:
        u = t - o
        env += np.where(u >= 0, np.exp(-np.clip(u, 0, None) / 0.12), 0.0) * (u < 0.5)
    rng = np.random.default_rng(seed)
    return (0.4 * env * np.sin(2 * np.pi * 150 * t + rng.uniform(0, 6))).astype(np.float32)


def test_reversed_audio_changes_the_envelope():
    wav = _bursts(4.0, [0.3, 0.9, 1.35, 2.4, 3.1], 0)
    n = 100
    env, rev = rp.audio_envelope(wav, n), rp.reversed_envelope(wav, n)
    assert np.allclose(rev, env[::-1], atol=1e-3)  # 4 s = exactly 100 frames: the envelope reversed
    from training.eval.metrics import pearson

    assert pearson(env, rev) < 0.3
    perfect = rp.lip_sync(env - env.min(), wav)  # lips that follow the loudness exactly
    assert perfect["lipsync_r"] == pytest.approx(1.0, abs=1e-4) and perfect["lipsync_lag"] == 0
    assert perfect["lipsync_r_margin"] > 0.5
    late = np.concatenate([env[:2], env[:-2]])  # lips two frames late: still found within +-2
    assert rp.lip_sync(late, wav)["lipsync_lag"] == 2
    missing = np.full(n, np.nan, np.float32)
    missing[:10] = env[:10]
    assert rp.lip_sync(missing, wav)["lipsync_r"] is None  # lips seen in 10 % of frames: no verdict


def test_silent_input_gives_mouth_measures(meter, portraits):
    ref = rp.portrait_reference(portraits[0], 128, 128, meter)
    frames = np.repeat(ref.image[None], 12, 0)
    silence = np.zeros(12 * 640, np.float32)
    m = rp.muted_measures(frames, ref, meter)
    assert m["muted_face_detected"] == 1.0
    assert m["muted_lip_gap"] == pytest.approx(m["portrait_lip_gap"], abs=0.01) and abs(m["muted_excess"]) < 0.01
    t = rp.talking_measures(frames, silence, ref, meter)
    assert t["face_detected"] == 1.0 and t["lipsync_r"] == 0.0 and t["psnr"] == pytest.approx(100.0)
    assert rp.silent_frames(silence, 12).all()


def test_portrait_without_a_face_is_a_clear_error(meter, tmp_path):
    from PIL import Image

    yy, xx = np.mgrid[0:200, 0:160]
    img = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)
    path = tmp_path / "no_face.png"
    Image.fromarray(img).save(path)
    with pytest.raises(rp.NoFaceError, match="finds 0 face"):
        rp.portrait_reference(path, 64, 64, meter, name=str(path))
    from bench import demo_quality

    with pytest.raises(rp.NoFaceError, match="no_face.png"):
        demo_quality.main(["--portraits", str(path), "--seconds", "1", "--clips", "1", "--skip-long",
                           "--speakers", "--no-control", "--modes", "distilled", "--videos", str(tmp_path / "v")])


def test_three_face_composite_keeps_every_face_whole(meter, tmp_path):
    """The 3-speaker composite's tiles are a third of the width: a face too big for that aspect gets
    black bars instead of being cut (face mesh found only 2 of 3 mouths when it was cut)."""
    comp = rp.composite(rp.group_portraits(tmp_path), 3)
    ref = rp.portrait_reference(comp, 192, 192, meter, faces=3, name="3-face composite")
    assert len(ref.faces) == 3 and ref.centres[0] < 64 < ref.centres[1] < 128 < ref.centres[2]


def test_face_mesh_reads_a_still_open_smile_as_moving_more_than_closed_mouths(meter, tmp_path):
    """gap_noise_floor, on the 3-speaker composite at the bench's size: the open smile (teeth showing, right)
    reads several times the closed mouths' change from encoder-sized pixel noise alone, so its lip-gap row
    in the speaker bench is read against that floor."""
    comp = rp.composite(rp.group_portraits(tmp_path), 3)
    ref = rp.portrait_reference(comp, 512, 512, meter, faces=3, name="3-face composite")
    floor = rp.gap_noise_floor(ref, meter)
    assert floor.shape == (3,) and np.isfinite(floor).all()
    assert floor[2] > 3 * max(floor[0], floor[1])
    assert np.array_equal(floor, rp.gap_noise_floor(ref, meter))  # seeded


def test_composite_and_speaker_ratio(meter, portraits):
    comp = rp.composite(portraits, 2)
    ref = rp.portrait_reference(comp, 128, 128, meter, faces=2, name="composite")
    assert len(ref.faces) == 2 and ref.centres[0] < 64 < ref.centres[1]
    n = 40
    owner = (np.arange(n) // 10) % 2
    tracks = [np.where(np.repeat(owner == j, 640), _bursts(n / 25, list(np.arange(0, 1.6, 0.2)), j), 0.0)
              .astype(np.float32) for j in range(2)]
    rng = np.random.default_rng(3)
    frames = []
    for t in range(n):
        f = ref.image
        for j in range(2):
            lips = ref.faces[j].lips
            f = open_mouth(f, lips, rng.uniform(0, 1.2) * (lips[3] - lips[1]) if owner[t] == j else 0.0)
        frames.append(f)
    res = rp.speaker_measures(np.stack(frames), tracks, owner, ref, meter)
    for row in res["speakers"]:
        assert row["pixel_ratio"] < 0.2 and row["pixel_active"] > 0
    assert res["pixel_ratio_max"] < 0.2 and res["face_detected_min"] == 1.0
    # both mouths moving all the time: the ratio says so
    both = [open_mouth(open_mouth(ref.image, ref.faces[0].lips, d), ref.faces[1].lips, d)
            for d in rng.uniform(0, 4, n)]
    assert rp.speaker_measures(np.stack(both), tracks, owner, ref, meter)["pixel_ratio_max"] > 0.5


@pytest.mark.slow
def test_bench_runs_end_to_end_on_the_demo(tmp_path, capsys):
    from bench import demo_quality

    out = tmp_path / "q.json"
    import matplotlib

    hopper = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    # one held-out portrait, 1 s videos, the 4-step generator: the end-to-end plumbing, in CI time
    assert demo_quality.main(["--seconds", "1", "--skip-long", "--clips", "1", "--speakers", "2",
                              "--portraits", str(hopper), "--modes", "distilled", "--pictures", "--speed-seconds", "0",
                              "--videos", str(tmp_path / "v"), "--strips", str(tmp_path / "s"), "--out", str(out)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res == json.loads(out.read_text())
    for key in ("table", "real_photos", "world", "sampler", "settings", "pictures"):
        assert key in res
    for mode in ("distilled",):
        r = res["real_photos"][mode]
        for key in ("psnr", "ssim", "face_detected", "lipsync_r", "lipsync_r_margin", "muted_excess"):
            assert key in r["summary"]
        assert r["summary"]["psnr"] > 5 and 0 <= r["summary"]["face_detected"] <= 1
        assert "nod_vs_still_auc" in r["control"] and "pixel_ratio_max" in r["speakers_2"]
        assert 0 <= r["control"]["nod_wins_same_photo_voice"] <= 1
        assert 0 <= r["control"]["nod_vs_still_auc_upper_face"] <= 1
        phrases = r["control"]["nod_vs_still_auc_by_phrase"]
        assert len(phrases) == 1 and r["control"]["nod_vs_still_auc_worst_phrase"] == next(iter(phrases.values()))
        assert r["speed"]["video_s_per_wall_s"] > 0
    rows = {row["measure"]: row for row in res["table"]}
    assert len(rows) == len(demo_quality.ROWS) and all("target" in r for r in rows.values())
    strips = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert "distilled_grace_hopper_c0.png" in strips and "distilled_speakers2.png" in strips


def test_emotion_bench_runs_on_the_demo_and_scores_each_emotion_against_neutral(capsys):
    from bench import emotion

    # one held-out voice, 1 s videos, the 4-step generator: the plumbing in CI time (its figures: bench/results)
    assert emotion.main(["--modes", "distilled", "--seeds", "500", "--pictures", rp.HALF_LENGTH, "--seconds", "1"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [r["emotion"] for r in res["rows"]] == list(emotion.EMOTIONS)
    prompts = [r["prompt"] for r in res["rows"]]
    assert len(set(prompts)) == 4 and all(r["corner_lift"] is not None for r in res["rows"])
    aucs = res["summary"]["distilled"]["auc_vs_neutral"]
    assert set(aucs) == {"smile_corner_lift", "frown_corner_lift", "frown_brow_lift", "surprise_brow_lift",
                         "surprise_mouth_width"} and all(0 <= v <= 1 for v in aucs.values())


def test_expression_chain_bench_follows_the_worlds_expressions_through_the_autoencoder(capsys):
    from bench import expression_chain

    # one photograph, 13 frames: the plumbing in CI time (its figures: bench/results/expression_chain_session20.json)
    assert expression_chain.main(["--photos", "1", "--frames", "13"]) == 0
    res = json.loads(capsys.readouterr().out)
    table = res["change_vs_neutral"]
    assert {"world", "exact field | raw", "optical flow, finest level 1 | as shipped",
            "optical flow, finest level 0 | rigid_brows alone"} <= set(table)
    assert all(set(row) == {"smile corner_lift", "frown corner_lift", "frown brow_lift", "surprise brow_lift",
                            "surprise mouth_width"} for row in table.values())
    assert table["world"]["smile corner_lift"] > 0.005 and table["world"]["surprise brow_lift"] > 0.005


def test_emotion_latent_bench_compares_the_dits_difference_with_the_datas(capsys):
    from bench import emotion_latent

    assert emotion_latent.main(["--clips", "1", "--steps", "2"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res["share_carried"]) == set(res["size_ratio"]) == {"smile", "frown", "surprise"}
    assert all(v > 0 for v in res["size_ratio"].values()) and res["steps"] == 2


def test_nod_auc_by_phrase_scores_each_heldout_paraphrase_on_its_own():
    """A phrase the model reads as a nod separates from every still video; one it does not, does not; the pooled
    AUC lies between them."""
    nods = rp.phrases_for_split("heldout")["action"]["nodding"]
    control = [{"still": s, "nodding": n, "prompt_nodding": f"A lifelike picture of a person {p}, against a wall."}
               for s, n, p in ((0.05, 1.5, nods[1]), (0.07, 0.06, nods[0]), (0.02, 0.03, nods[0]), (0.04, 1.2, nods[1]))]
    got = rp.nod_auc_by_phrase(control)
    assert got == {nods[0]: 0.5, nods[1]: 1.0}
    pooled = rp.metrics.separability([c["still"] for c in control], [c["nodding"] for c in control])["auc"]
    assert got[nods[0]] < pooled < got[nods[1]]


def test_upper_face_of_a_still_portrait_scores_zero_and_cap(meter, portraits):
    ref = rp.portrait_reference(portraits[0], 256, 256, meter, name="grace_hopper")
    assert ref.upper is not None and ref.upper.any()
    ys, xs = np.nonzero(ref.upper)
    lm = ref.faces[0].landmarks
    assert ys.max() <= lm[1, 1] + 1 and ys.min() >= lm[10, 1] - 2  # forehead top (10) .. nose tip (1)
    assert not ref.upper[int(ref.faces[0].lips[1]):].any()  # no lips, no jaw
    m = rp.upper_face_measures(np.repeat(ref.image[None], 5, 0), ref)
    assert m["upper_flicker"] == 0.0 and m["upper_psnr"] == rp.metrics.PSNR_CAP
    assert m["mid_flicker"] == 0.0 and m["mid_psnr"] == rp.metrics.PSNR_CAP
    # the mid face: below the upper face, down to the upper lip's top (landmark 0), no lips
    assert ref.mid is not None and ref.mid.any() and not (ref.mid & ref.upper).any()
    ys, _ = np.nonzero(ref.mid)
    assert lm[1, 1] - 1 <= ys.min() and ys.max() <= lm[0, 1] + 1


def test_test_pictures_are_held_out_and_show_a_face(meter, tmp_path):
    pics = {p.name: p for p in rp.test_pictures(tmp_path)}
    assert set(pics) == {"full_length", "letterboxed", "greyscale", "open_smile"}
    from PIL import Image

    full = np.asarray(Image.open(pics["full_length"].path))
    assert full.shape[0] > 2 * full.shape[1]  # tall: face at the top, body below
    box = meter.boxes(full)[0]
    assert 0.25 < (box.x1 - box.x0) / full.shape[1] < 0.45 and box.y1 < full.shape[0] / 3
    box_img = np.asarray(Image.open(pics["letterboxed"].path))
    assert box_img[:40].max() == 0 and box_img[-40:].max() == 0 and box_img.shape[1] * 3 == box_img.shape[0] * 4
    for p in pics.values():
        assert len(meter.boxes(np.asarray(Image.open(p.path).convert("RGB")))) >= 1, p.name
    with pytest.raises(ValueError, match="not a held-out"):
        rp.heldout_photo("astronaut", tmp_path)  # a training photo is refused


def test_reference_is_what_a_pixel_bundle_shows(meter, portraits):
    from magicinfinite_core.config import DiTConfig, VAEConfig
    from magicinfinite_core.weights.bundle import random_bundle

    vae = VAEConfig(latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4)
    bundle = random_bundle(0, height=64, width=64, dit_cfg=DiTConfig(audio=None), vae_cfg=vae)  # pixel latents
    ref = rp.pipeline_reference(bundle, portraits[0], meter)
    old = rp.portrait_reference(portraits[0], bundle.height, bundle.width, meter)
    assert ref.image.shape == (bundle.height, bundle.width, 3) and np.array_equal(ref.image, old.image)


def test_reference_is_the_whole_picture_for_the_motion_demo(meter, portraits):
    from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR, load_bundle

    bundle = load_bundle(DEMO_MODEL_DIR, "cpu", distilled=True)
    ref = rp.pipeline_reference(bundle, portraits[0], meter)
    from PIL import Image

    w, h = Image.open(portraits[0]).size
    assert ref.image.shape[:2] == (h, w) or max(ref.image.shape[:2]) == 1024


def test_bench_issue26_path_on_the_demo_in_ci_time(tmp_path, capsys):
    """The whole bench path once, tiny: 1 portrait, 1 s of audio, a 3 s 'long' video, the 4-step generator,
    one hard picture, the 512 x 512 speed video and the CLI first-frame timing; one JSON and the table with pass marks."""
    from bench import demo_quality

    hopper = rp.heldout_photo("grace_hopper", tmp_path)
    out = tmp_path / "q.json"
    assert demo_quality.main(["--seconds", "1", "--long-seconds", "3", "--clips", "1", "--speakers", "--no-control",
                              "--portraits", str(hopper), "--modes", "distilled", "--pictures", "open_smile",
                              "--speed-seconds", "1", "--videos", str(tmp_path / "v"),
                              "--strips", str(tmp_path / "s"), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    res = json.loads(captured.out)
    assert res == json.loads(out.read_text())
    r = res["real_photos"]["distilled"]
    for key in ("upper_flicker", "upper_flicker_p95", "upper_psnr", "lipsync_r", "muted_excess"):
        assert key in r["summary"]
    assert r["summary"]["upper_flicker"] >= 0 and r["summary"]["upper_psnr"] > 5
    pic = r["pictures"]["rows"][0]
    assert pic["picture"] == "open_smile" and pic["generated"] and 0 <= pic["face_found"] <= 1
    assert "muted_excess" in pic and r["all_pictures"]["face_found_min"] is not None
    long = r["long"]  # 3 s through the sliding window: seams against chance, drift as a line through the seconds
    assert long["seams"] >= 1 and long["seam_score_upper"] > 0 and 0 <= long["seam_p_value_upper"] <= 1
    assert len(long["upper_psnr_per_second"]) == 3 and np.isfinite(long["upper_drift_fitted_db"])
    assert long["seam_score_vs_median"] > 0 and long["seam_chance_mean"] > 0
    assert r["speed_512"]["video_s_per_wall_s"] > 0 and r["speed_512"]["cli"]["first_frame_since_command_s"] > 0
    rows = {row["measure"]: row for row in res["table"]}
    assert len(rows) == len(demo_quality.ROWS) and all("distilled_pass" in row for row in rows.values())
    assert "target" in captured.err and ("✔" in captured.err or "✘" in captured.err)
    strips = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert "distilled_grace_hopper_c0.png" in strips and "distilled_picture_open_smile_muted.png" in strips
