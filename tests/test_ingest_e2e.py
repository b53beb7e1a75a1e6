"""Ingested real footage through the demo's commands, and a SIGKILLed ingestion that resumes.

Both run the CLIs as a user would (``python -m training.data.ingest``, ``training.train_vae``,
``training.preprocess``, ``training.trainer --stage 2``, ``training.eval.evaluate``), on world clips
re-encoded at 30 / 24 fps, 1280x720, AAC / Opus, mp4 / mkv / webm.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests import ingest_fixtures as fx
from training.data import speech

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not speech.espeak_available(), reason="espeak-ng not installed")]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def run(*args: str, timeout: float = 300) -> str:
    res = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=_env(), text=True, capture_output=True,
                         timeout=timeout)
    assert res.returncode == 0, f"{args}\n--- stdout\n{res.stdout[-3000:]}\n--- stderr\n{res.stderr[-3000:]}"
    return res.stdout


def _session_pids(sid: int) -> list[int]:
    """Processes of session ``sid`` (the ingestion we started and the Ray processes it spawned)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid:
                pids.append(int(d.name))
    return pids


def kill_after_records(cmd: list[str], records: Path, n: int = 2) -> int:
    """Start the ingestion CLI, SIGKILL it (and the Ray processes it started) once ``n`` sources are done."""
    proc = subprocess.Popen([sys.executable, "-m", *cmd], cwd=REPO, env=_env(), text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 240
    done = 0
    while time.time() < deadline and proc.poll() is None:
        done = len(list(records.glob("*.json"))) if records.is_dir() else 0
        if done >= n:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the ingestion ended before it could be killed:\n{proc.communicate()[1][-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    for _ in range(50):  # Ray's workers / actors live in the same session, in other process groups
        left = _session_pids(proc.pid)
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    return done


def make_sources(d: Path) -> None:
    d.mkdir(parents=True)
    c1, c2, c3 = fx.world_clip(11, 50), fx.world_clip(12, 50), fx.world_clip(13, 50)
    fx.encode(d / "a30.mp4", fx.place(fx.retime(c1.frames, 25, 30), (1280, 720))[0], 30, c1.audio)
    fx.encode(d / "b24.mkv", fx.place(fx.retime(c2.frames, 25, 24), (1280, 720))[0], 24, c2.audio,
              "libx264", "libopus", 48000)
    fx.encode(d / "c30.webm", fx.place(fx.retime(c3.frames, 25, 30), (640, 360))[0], 30, c3.audio,
              "libvpx-vp9", "libopus", 48000)
    fx.encode(d / "d25.mp4", np.concatenate([c2.frames, c1.frames]), 25, np.concatenate([c2.audio, c1.audio]))


def _split_seed(src: Path) -> int:
    """A seed whose hash split puts sources in both splits (the keys hold absolute paths)."""
    from training.data.ingest_config import IngestConfig
    from training.data.ingest_process import source_split
    from training.data.ingest_sources import collect_sources

    sources = collect_sources([str(src)])
    for seed in range(100):
        cfg = IngestConfig(heldout_fraction=0.5, seed=seed)
        splits = [source_split(s, cfg) for s in sources]
        if splits.count("heldout") == 1:
            return seed
    raise AssertionError("no seed splits the sources")


def test_killed_ingestion_resumes_then_stage2_and_eval_run(tmp_path):
    from training.data.clip import load_clip

    src, runf = tmp_path / "src", tmp_path / "run"
    make_sources(src)
    seed = _split_seed(src)
    args = ["training.data.ingest", str(src), "--frames", "17", "--size", "32", "--aspect", "square",
            "--heldout-fraction", "0.5", "--seed", str(seed), "--workers", "1", "--no-progress"]
    world = runf / "world"
    out = run(*args, "--out", str(world))
    assert "processed" in out and (world / "manifest.jsonl").is_file()
    ref = [json.loads(x) for x in (world / "manifest.jsonl").read_text().splitlines()]
    assert {r["split"] for r in ref} == {"train", "heldout"} and len(ref) >= 8

    # --- SIGKILL mid-run, rerun the same command: every clip exactly once, same bytes
    killed = tmp_path / "killed"
    done = kill_after_records([*args, "--out", str(killed)], killed / ".ingest", n=2)
    assert 2 <= done < 4
    run(*args, "--out", str(killed))
    assert (killed / "manifest.jsonl").read_text() == (world / "manifest.jsonl").read_text()
    dirs = sorted(p.name for p in killed.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert dirs == sorted(r["path"] for r in ref) and not list(killed.rglob("*.tmp*"))
    for r in ref:
        a, b = load_clip(world / r["path"]), load_clip(killed / r["path"])
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio) and a.meta == b.meta

    # --- the demo's commands on the ingested clips: VAE, caches, a few stage-2 steps, the evaluation
    run("training.train_vae", "--data", str(world), "--out", str(runf / "vae"), "--spatial-ratio", "4",
        "--latent-channels", "4", "--channels", "8", "16", "16", "--steps", "6", "--batch", "2", "--crop", "32",
        "--warmup", "2", "--log-every", "2", "--clip-frames", "9", "--no-progress")
    out = run("training.preprocess", "--data", str(world), "--vae", str(runf / "vae" / "vae.safetensors"),
              "--out", str(runf / "cache"), "--threads", "1")
    n_held = sum(r["split"] == "heldout" for r in ref)
    assert f"train {len(ref) - n_held}" in out and f"heldout {n_held}" in out
    out = run("training.trainer", "--stage", "2", "--config", "training/configs/toy.json", "--out", str(runf),
              "--set", "stage2.init=none", "--steps", "3", "--no-progress", "--cpu")
    assert f"stage 2: training on {len(ref) - n_held} train clips" in out
    losses = [json.loads(x) for x in (runf / "stage2" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in losses if "loss" in r] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) for r in losses if "loss" in r)
    run("training.eval.evaluate", "--dit", str(runf / "stage2" / "dit_last.safetensors"), "--vae",
        str(runf / "vae" / "vae.safetensors"), "--heldout", str(world), "--clips", "1", "--control-clips", "1",
        "--steps", "2", "--threads", "1", "--out", str(runf / "eval.json"))
    summary = json.loads((runf / "eval.json").read_text())["summary"]
    assert summary["clips"] == 1 and np.isfinite(summary["psnr_portrait_all"])
