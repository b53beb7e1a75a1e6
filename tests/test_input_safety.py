"""Issue 19: no silent garbage, no escapes, nothing left behind (library, CLI subprocess, batch runner).

The server cases (node validation, warnings in the frontend, bundle escapes, huge uploads) are in
tests/test_nodes_safety.py against the real ComfyUI server.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from magicinfinite_core.config import SamplerConfig
from magicinfinite_core.errors import CheckpointError, MagicInfiniteError, MaskError, NonFiniteError
from magicinfinite_core.generate import generate
from magicinfinite_core.inputs.masks import MAX_FACE_AREA, FaceDetector, speaker_masks
from magicinfinite_core.inputs.portrait import pixel_speaker_masks
from magicinfinite_core.media.video_io import write_wav
from magicinfinite_core.sampling.sampler import sample
from magicinfinite_core.weights.bundle import load_bundle, random_bundle, save_bundle

REPO = Path(__file__).resolve().parent.parent
BOX = [[4, 4, 28, 28]]


def _voice(path: Path, seconds: float = 0.5, silent: bool = False) -> str:
    t = np.arange(int(seconds * 16000)) / 16000
    wav = np.zeros_like(t) if silent else 0.2 * np.sin(2 * np.pi * 200 * t)
    write_wav(path, wav.astype(np.float32), 16000)
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 32x32 random bundle folder, a portrait with noise and a half-second voice."""
    d = tmp_path_factory.mktemp("safety")
    model = save_bundle(random_bundle(0, height=32, width=32), d / "model")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(d / "p.png")
    return {"dir": d, "model": str(model), "portrait": str(d / "p.png"), "audio": _voice(d / "a.wav")}


# ------------------------------------------------------------------------------------- 1. NaN / inf


def test_nan_prediction_stops_the_sampler_naming_step_and_window():
    calls = []

    def predict(x, sigma, win):
        calls.append(win)
        v = torch.zeros_like(x)
        if len(calls) == 5:  # step 2 (3 windows per step), its second window
            v[0, 0, 0, 0, 0] = float("nan")
        return v

    cfg = SamplerConfig(steps=3, window_frames=9, overlap_frames=4, shift_windows=False)
    with pytest.raises(NonFiniteError, match=r"prediction is not finite .* at step 2/3, window 2/3"):
        sample(predict, (4, 6, 4, 4), config=cfg)
    assert len(calls) == 5  # stopped the moment the NaN came back


def test_nan_weights_stop_generate_before_any_file_is_written(tmp_path, tiny):
    bundle = random_bundle(0, height=32, width=32)
    with torch.no_grad():
        next(bundle.dit.parameters()).view(-1)[0] = float("nan")  # a corrupted checkpoint
    out = tmp_path / "o.mp4"
    with pytest.raises(NonFiniteError, match=r"step 1/2, window 1/"):
        generate(tiny["portrait"], tiny["audio"], "x", model=bundle, out=out, steps=2, window=9, overlap=4,
                 speakers=BOX)
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".mp4"]  # the state may stay, for a resume
    assert not out.exists() and not (tmp_path / "o.partial.mp4").exists()


@pytest.mark.parametrize("kw", [{"shift": float("nan")}, {"steps": 0}, {"seed": -1}])
def test_library_refuses_bad_sampling_numbers(tmp_path, tiny, kw):
    with pytest.raises(MagicInfiniteError, match="shift|steps|seed"):
        generate(tiny["portrait"], tiny["audio"], "x", model=random_bundle(0, height=32, width=32),
                 out=tmp_path / "o.mp4", window=9, overlap=4, speakers=BOX, **{"steps": 2, **kw})
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------ 2./5. CLI arguments


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "runner.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def _generate_args(tiny, out, *extra: str) -> list[str]:
    return ["generate", "--model", tiny["model"], "--portrait", tiny["portrait"], "--audio", tiny["audio"],
            "--prompt", "hi", "--out", str(out), "--window", "9", "--overlap", "4", "--steps", "2", "-q", *extra]


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        (["--distilled", "--shift", "nan"], "--shift must be a finite number"),
        (["--cfg-audio", "nan"], "--cfg-audio must be a finite number"),
        (["--cfg-text", "inf"], "--cfg-text must be a finite number"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--seed", "-1"], "--seed must be in 0.."),
        (["--seed", "18446744073709551616"], "--seed must be in 0.."),
        (["--overlap", "8"], "--window 9 / --overlap 8: overlap 8 frames"),
    ],
)
def test_cli_bad_numbers_are_one_error_line_and_leave_nothing(tmp_path, tiny, extra, expect):
    out = tmp_path / "o.mp4"
    r = _cli(*_generate_args(tiny, out), *extra)
    err = r.stderr.strip()
    assert r.returncode == 1 and err.startswith("error:") and err.count("\n") == 0, err
    assert expect in err, err
    assert not any(tmp_path.iterdir())  # no video, no .state, no .partial


def test_cli_out_folder_or_unwritable_fails_before_any_work(tmp_path, tiny):
    folder = tmp_path / "existing"
    folder.mkdir()
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    for out, expect in [(folder, "is a folder"), (blocker / "sub" / "o.mp4", "is a file, not a folder"),
                        (Path("/proc/magicinfinite/o.mp4"), "cannot write into")]:
        t0 = time.monotonic()
        r = _cli(*_generate_args(tiny, out))
        err = r.stderr.strip()
        assert r.returncode == 1 and err.startswith("error:") and err.count("\n") == 0 and expect in err, err
        assert time.monotonic() - t0 < 60
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "existing"]
    assert not any(folder.iterdir())


def test_cli_run_after_errors_still_works_and_reports_no_fallback_unasked(tmp_path, tiny):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(grey)
    base = ["generate", "--model", tiny["model"], "--portrait", str(grey), "--audio", tiny["audio"], "--prompt", "x",
            "--window", "9", "--overlap", "4", "--steps", "1", "-q"]
    r = _cli(*base, "--out", str(tmp_path / "a.mp4"))
    assert r.returncode == 1 and "no face found" in r.stderr and "--face-fallback" not in r.stdout
    assert not (tmp_path / "a.mp4").exists()
    r = _cli(*base, "--out", str(tmp_path / "b.mp4"), "--face-fallback", "centre")
    assert r.returncode == 0, r.stderr
    assert "note: no face found; using 1 centred region(s)" in r.stderr and "the fallback you chose" in r.stderr
    assert (tmp_path / "b.mp4").is_file()


# --------------------------------------------------------------------------------- 4. bundle paths


@pytest.mark.parametrize(
    ("key", "value", "expect"),
    [
        ("dit", "/etc/passwd.safetensors", "absolute paths are refused"),
        ("dit", "../../../outside/dit.safetensors", "leaves the bundle folder"),
        ("vae.weights", "../vae.safetensors", "leaves the bundle folder"),
        ("text_encoder.weights", "sub/../../x.safetensors", "leaves the bundle folder"),
    ],
)
def test_bundle_paths_must_stay_inside_the_bundle(tmp_path, tiny, key, value, expect):
    import shutil

    d = tmp_path / "b"
    shutil.copytree(tiny["model"], d)
    (tmp_path / "outside").mkdir()
    shutil.copy(d / "dit.safetensors", tmp_path / "outside" / "dit.safetensors")  # a real file it must not read
    spec = json.loads((d / "bundle.json").read_text())
    if "." in key:
        spec[key.split(".")[0]][key.split(".")[1]] = value
    else:
        spec[key] = value
    (d / "bundle.json").write_text(json.dumps(spec))
    with pytest.raises(CheckpointError, match=expect):
        load_bundle(d)
    assert load_bundle(tiny["model"]).height == 32  # a clean bundle still loads


# ------------------------------------------------------------------------------------ 6. faces


@pytest.fixture(scope="module")
def astronaut():
    import skimage.data

    return skimage.data.astronaut()


def test_low_score_and_frame_filling_detections_are_not_faces(astronaut):
    with FaceDetector(min_confidence=0.95) as det:  # the astronaut scores ~0.92
        assert det.detect(astronaut) == [] and det.rejected and det.rejected[0].score < 0.95
        with pytest.raises(MaskError, match=r"ignored as not faces: score 0\.9"):
            speaker_masks(astronaut, 1, detector=det)
    with FaceDetector() as det:
        face = det.detect(astronaut)[0]
        cx, cy = face.center
        h = int(face.width * 0.7)
        close = np.ascontiguousarray(astronaut[int(cy - h): int(cy + h), int(cx - h): int(cx + h)])
        assert det.detect(close) == []  # the detector's box would cover most of the frame
        assert all(b.width * b.height > MAX_FACE_AREA * close.shape[0] * close.shape[1] for b in det.rejected)
        notes: list[str] = []
        m = speaker_masks(close, 1, detector=det, fallback="center", report=notes)
        assert m.mean() < 0.4 and "no face found" in notes[0] and "ignored as not faces" in notes[0]


def test_two_small_faces_are_found_on_the_full_portrait_and_mapped_into_the_crop(astronaut):
    person = np.asarray(Image.fromarray(astronaut).resize((500, 500), Image.LANCZOS))  # faces ~100 px
    duo = np.full((1024, 1024, 3), 90, np.uint8)
    duo[300:800, 12:512], duo[300:800, 512:1012] = person, person[:, ::-1]
    model_size = np.asarray(Image.fromarray(duo).resize((64, 64), Image.LANCZOS))
    with pytest.raises(MaskError, match="found 1 face|no face found"):  # detecting on the 64x64 crop fails
        pixel_speaker_masks(model_size, 2)
    notes: list[str] = []
    masks = pixel_speaker_masks(model_size, 2, portrait=duo, notes=notes)
    assert masks.shape == (2, 64, 64) and not notes  # both found: no fallback, nothing to report
    centres = [np.nonzero(m)[1].mean() for m in masks]
    assert abs(centres[0] - 235 / 16) < 4 and abs(centres[1] - 795 / 16) < 4, centres
    assert all(0.005 < m.mean() < 0.2 for m in masks)


# ----------------------------------------------------------------------------------- 8. huge portrait


def test_huge_portrait_is_read_with_bounded_memory(tmp_path, tiny):
    side = 10000
    yy = np.linspace(0, 255, side, dtype=np.float32)
    img = np.empty((side, side, 3), np.uint8)
    img[..., 0] = yy[:, None].astype(np.uint8)
    img[..., 1] = yy[None, :].astype(np.uint8)
    img[..., 2] = 128
    Image.fromarray(img).save(tmp_path / "huge.png", compress_level=1)
    del img
    r = _cli(*_generate_args(tiny, tmp_path / "o.mp4"), "--portrait", str(tmp_path / "huge.png"),
             "--speaker-box", "4,4,28,28", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert any("10000x10000" in n and "reduced to" in n for n in report["notes"]), report["notes"]
    # decoded RGB alone is 300 MB; before, the full-size copies took the peak to ~1.9 GB
    assert report["peak_rss_mb"] < 1300, report["peak_rss_mb"]
    assert math.isfinite(report["wall_s"])


# ----------------------------------------------------------------------- 5. batch killed in decode


@pytest.mark.comfyui
def test_batch_killed_during_decode_resumes_into_its_own_name(comfyui_install, tmp_path):
    import csv
    import shutil
    import signal

    from magicinfinite_core.media.video_io import probe_video

    from .comfyui_server import WORKFLOWS_DIR, magic_workflow
    from .comfyui_server import write_wav as write_tone

    models = tmp_path / "models"
    save_bundle(random_bundle(0, height=64, width=64), models / "diffusion_models" / "mi_kill_bundle")
    write_tone(tmp_path / "voice.wav", seconds=8.0)  # 200 frames, decoded two latent frames per chunk
    shutil.copy(WORKFLOWS_DIR / "assets" / "portrait_one_speaker.jpg", tmp_path / "face.png")
    (tmp_path / "wf.json").write_text(json.dumps(magic_workflow("single_speaker", "mi_kill_bundle", "unused.wav")))
    (tmp_path / "jobs.csv").write_text("id,portrait,3.audio,7.decode_chunk\nk1,face.png,voice.wav,2\n")
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "runner.cli", "batch", str(tmp_path / "jobs.csv"), "--workflow",
            str(tmp_path / "wf.json"), "--out", str(out), "--map", "portrait=2.image", "--models-dir", str(models),
            "--comfyui", str(comfyui_install), "--cpu"]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    videos = out / "k1" / "MagicInfinite"
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 400
        while not list(videos.glob("*.partial.mp4")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the batch finished before it could be killed during decode"
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    left = [p.name for p in videos.iterdir()]
    assert left == ["single_speaker_00001_.partial.mp4"], left  # what a crash leaves behind

    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    with (out / "results.csv").open() as f:
        row = next(csv.DictReader(f))
    assert row["status"] == "ok" and row["output"].endswith("single_speaker_00001_.mp4"), row
    assert [p.name for p in videos.iterdir()] == ["single_speaker_00001_.mp4"]  # no partial, no _00002_
    assert probe_video(row["output"]).frames == 200
    assert not (out / "k1" / "magicinfinite_state" / "batch_k1").exists()  # resume state cleaned up
