"""Tests of the procedural talking-head world (training/data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data import prompts, speech, splits
from training.data.clip import load_clip, make_clip, read_manifest, save_clip
from training.data.mouth import FPS, SAMPLE_RATE, measure_mouth_opening, mouth_from_audio
from training.data.render import WorldConfig, render_scene, sample_identity, sample_scene

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "training" / "data" / "sample"
needs_espeak = pytest.mark.skipif(not speech.espeak_available(), reason="espeak-ng not installed")


def _scene(
    action: str = "still",
    emotion: str = "neutral",
    background: str = "static",
    seed: int = 0,
    n: int = 33,
    opening: np.ndarray | None = None,
    size: int = 64,
    k: int = 1,
):
    rng = np.random.default_rng(seed)
    ids = [sample_identity(splits.sample_identity_id(rng, "train"), style="realistic") for _ in range(k)]
    op = opening if opening is not None else np.clip(np.sin(np.arange(n) / 2.0), 0, 1).astype(np.float32)
    controls = {"emotion": emotion, "action": action, "background": background}
    cfg = WorldConfig(size, size, face_min=0.15, face_max=0.2 if k == 1 else 0.12, max_chars=3)
    return sample_scene(
        np.random.default_rng(seed + 1), ids, 0, op, np.full(n, 0.5, np.float32), controls, cfg
    )


def _per_clip_r(frames: np.ndarray, gt: dict, speaker: int) -> float:
    m = np.array(
        [measure_mouth_opening(f, b) for f, b in zip(frames, gt["mouth_box"][:, speaker], strict=True)]
    )
    return float(np.corrcoef(m, gt["mouth_open"])[0, 1])


@needs_espeak
def test_same_seed_same_clip():
    a = make_clip(123, "train", 17, WorldConfig(64, 64))
    b = make_clip(123, "train", 17, WorldConfig(64, 64))
    c = make_clip(124, "train", 17, WorldConfig(64, 64))
    assert a.frames.dtype == np.uint8 and a.frames.shape == (17, 64, 64, 3)
    assert np.array_equal(a.frames, b.frames)
    assert np.array_equal(a.audio, b.audio)
    assert a.meta == b.meta
    assert not np.array_equal(a.frames, c.frames)


@needs_espeak
def test_measured_mouth_opening_tracks_ground_truth():
    cfg = WorldConfig(128, 128, face_min=0.09, face_max=0.3)
    rs = []
    for seed in range(6):
        clip = make_clip(seed, "train", 40, cfg)
        if clip.gt["mouth_open"].std() < 0.05:
            continue
        rs.append(_per_clip_r(clip.frames, clip.gt, clip.meta["speaker"]))
    assert len(rs) >= 4
    assert min(rs) >= 0.95, rs


def test_silence_means_closed_mouth():
    n = 30
    op, width = mouth_from_audio(np.zeros(n * 640, np.float32), n)
    assert np.all(op == 0) and np.allclose(width, 0.5)
    # a burst of "speech" (noisy tone) between silences: silent frames -> closed
    t = np.arange(n * 640) / SAMPLE_RATE
    wave = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)
    wave[: 10 * 640] = 0
    wave[22 * 640 :] = 0
    op, _ = mouth_from_audio(wave, n)
    assert op[12:19].min() > 0.3
    assert np.all(op[:7] == 0) and np.all(op[25:] == 0)
    # and the rendered mouth of a silent clip measures as closed
    closed = _scene(opening=np.zeros(12, np.float32), n=12, size=128)
    talking = _scene(opening=np.ones(12, np.float32), n=12, size=128)
    mc = [measure_mouth_opening(f, b) for f, b in zip(*_frames_boxes(closed), strict=True)]
    mo = [measure_mouth_opening(f, b) for f, b in zip(*_frames_boxes(talking), strict=True)]
    assert max(mc) < 0.4 and min(mo) > max(mc) + 0.35


def _frames_boxes(scene):
    frames, gt = render_scene(scene)
    return frames, gt["mouth_box"][:, 0]


def test_lips_lead_audio_by_one_frame():
    n = 20
    wave = np.zeros(n * 640, np.float32)
    t = np.arange(640 * 6) / SAMPLE_RATE
    wave[10 * 640 : 16 * 640] = 0.3 * np.sin(2 * np.pi * 300 * t)
    op, _ = mouth_from_audio(wave, n)
    energy = (wave.reshape(n, 640) ** 2).sum(1)
    centre = lambda x: (x * np.arange(n)).sum() / x.sum()  # noqa: E731
    assert abs(centre(op) - (centre(energy) - 1.0)) < 0.15  # lips lead the sound by one frame
    assert op[:6].max() == 0 and op[17:].max() == 0  # window + smoothing spread is at most 1.5 frames


def test_text_controls_change_head_motion_emotion_and_background():
    still, _ = render_scene(_scene("still"))
    _, g_still = render_scene(_scene("still"))
    _, g_nod = render_scene(_scene("nodding"))
    _, g_shake = render_scene(_scene("shaking"))
    y = lambda g: g["head_pos"][:, 0, 1].std()  # noqa: E731
    x = lambda g: g["head_pos"][:, 0, 0].std()  # noqa: E731
    assert y(g_still) < 1e-6 and x(g_still) < 1e-6
    assert y(g_nod) > 0.5 and g_nod["head_pose"][:, 0, 1].std() > 0.3
    assert x(g_shake) > 0.5 and g_shake["head_pose"][:, 0, 0].std() > 0.3
    # emotion: identical first frame (the portrait is neutral), different later frames
    neutral, _ = render_scene(_scene(emotion="neutral"))
    smile, _ = render_scene(_scene(emotion="smile"))
    assert np.array_equal(neutral[0], smile[0])
    assert np.abs(neutral[-1].astype(int) - smile[-1].astype(int)).sum() > 200
    # background: lights pulse the brightness, static does not change
    lights, _ = render_scene(_scene(background="lights"))
    corner = lambda f: f[:, :6, :6].reshape(len(f), -1).mean(1)  # noqa: E731
    assert corner(lights).std() > 5 * (corner(still).std() + 1e-3)
    leaves, _ = render_scene(_scene(background="leaves"))
    assert np.abs(np.diff(leaves[:, :10].astype(int), axis=0)).mean() > 0.5


def test_speaker_mask_covers_speaking_face():
    sc = _scene(k=3, n=17, size=128)
    frames, gt = render_scene(sc)
    sm = gt["speaker_mask"]
    assert sm.shape == (128, 128) and sm.dtype == bool
    assert np.array_equal(sm, gt["face_masks"][:, 0].any(0))
    for f in range(17):
        fx0, fy0, fx1, fy1 = gt["face_box"][f, 0]
        inner = np.zeros_like(sm)
        cx, cy, rx, ry = (fx0 + fx1) / 2, (fy0 + fy1) / 2, (fx1 - fx0) / 2, (fy1 - fy0) / 2
        yy, xx = np.mgrid[:128, :128] + 0.5
        inner = ((xx - cx) / (0.8 * rx)) ** 2 + ((yy - cy) / (0.8 * ry)) ** 2 < 1
        # the speaker's face (minus hair that may cover the forehead) is inside the mask
        cover = (gt["face_masks"][f, 0] & inner).sum() / inner.sum()
        assert cover > 0.7, cover
        mx0, my0, mx1, my1 = gt["mouth_box"][f, 0]
        assert gt["face_masks"][f, 0][int((my0 + my1) / 2), int((mx0 + mx1) / 2)]
    # other characters' faces are not in the speaker mask
    for k in (1, 2):
        cx, cy = gt["head_pos"][0, k]
        assert not sm[int(cy), int(cx)]
        assert gt["face_masks"][0, k][int(cy), int(cx)]


def test_splits_are_disjoint():
    rng = np.random.default_rng(0)
    tr = {splits.sample_identity_id(rng, "train") for _ in range(2000)}
    ho = {splits.sample_identity_id(rng, "heldout") for _ in range(2000)}
    assert not tr & ho
    assert all(splits.identity_split(i) == "train" for i in tr)
    assert all(splits.identity_split(i) == "heldout" for i in ho)
    assert not set(speech.voices_for_split("train")) & set(speech.voices_for_split("heldout"))
    assert not set(prompts.templates_for_split("train")) & set(prompts.templates_for_split("heldout"))
    ptr, pho = prompts.phrases_for_split("train"), prompts.phrases_for_split("heldout")
    for kind in ptr:
        for value in ptr[kind]:
            assert not set(ptr[kind][value]) & set(pho[kind][value]), (kind, value)


@needs_espeak
def test_heldout_clip_uses_only_heldout_material():
    clip = make_clip(splits.clip_seed(0, "heldout", 3), "heldout", 9, WorldConfig(64, 64))
    assert all(splits.identity_split(i) == "heldout" for i in clip.meta["identity_ids"])
    v = clip.meta["voice"]
    assert (v["lang"], v["variant"]) in speech.voices_for_split("heldout")


@needs_espeak
def test_clip_round_trips_through_files(tmp_path):
    clip = make_clip(7, "train", 21, WorldConfig(64, 64, max_chars=2, multi_prob=1.0))
    d = save_clip(clip, tmp_path / "clip")
    assert {p.name for p in d.iterdir()} == {"video.mp4", "audio.wav", "meta.json", "gt.npz"}
    back = load_clip(d)
    assert back.frames.shape == clip.frames.shape
    assert abs(len(back.audio) / SAMPLE_RATE - clip.num_frames / FPS) <= 1 / FPS
    assert np.array_equal(back.audio, clip.audio)
    assert back.meta == clip.meta
    for k, v in clip.gt.items():
        assert np.array_equal(back.gt[k], v), k
    assert np.abs(back.frames.astype(int) - clip.frames.astype(int)).mean() < 6  # lossy H.264
    import av

    with av.open(str(d / "video.mp4")) as c:
        assert {s.type for s in c.streams} == {"video", "audio"}
        assert c.streams.video[0].average_rate == FPS


@needs_espeak
def test_espeak_speech_is_real_16k_audio():
    v = speech.Voice("en", "f3", 160, 50)
    wav = speech.synthesize("hello world, this is a test", v)
    assert wav.dtype == np.float32 and len(wav) > 0.5 * SAMPLE_RATE
    assert np.sqrt(np.mean(wav**2)) > 0.01
    track, segs = speech.speech_track(np.random.default_rng(0), v, 50)
    assert len(track) == 50 * 640 and segs


def test_committed_sample_set_loads():
    rows = read_manifest(SAMPLE_DIR)
    assert sorted(r["split"] for r in rows) == ["heldout", "heldout", "train", "train"]
    total = sum(p.stat().st_size for p in SAMPLE_DIR.rglob("*") if p.is_file())
    assert total < 5 * 2**20
    for r in rows:
        clip = load_clip(SAMPLE_DIR / r["path"])
        n = clip.meta["num_frames"]
        assert clip.frames.shape == (n, r["height"], r["width"], 3)
        assert len(clip.audio) == n * SAMPLE_RATE // FPS
        op, _ = mouth_from_audio(clip.audio, n)
        assert np.allclose(op, clip.gt["mouth_open"], atol=1e-6)
        assert clip.gt["speaker_mask"].any()
