"""Issue 29 case 9 with the real CLI in a subprocess: Ctrl-C (SIGINT) stops a local batch within a few
seconds and the job resumes on the rerun; a SIGKILL mid-job, or between the video landing and the
results table saying so, never leaves an orphaned ``_00001_`` beside a rerun's ``_00002_``."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .comfyui_server import REPO_ROOT, WORKFLOWS_DIR, magic_workflow, write_wav

pytestmark = pytest.mark.comfyui


def _wait_for(cond, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"batch exited ({proc.returncode}) before {what}")
        time.sleep(0.05)
    raise AssertionError(f"no {what} after {timeout} s")


def _rows(out: Path) -> dict[str, dict]:
    with (out / "results.csv").open() as f:
        return {r["id"]: r for r in csv.DictReader(f)}


def _videos(out: Path) -> list[str]:
    return sorted(p.name for p in out.rglob("*.mp4") if "magicinfinite_state" not in p.parts)


@pytest.fixture
def batch_cmd(comfyui_install, comfyui_models, magic_test_bundle, tmp_path):
    write_wav(tmp_path / "voice.wav", seconds=1.2)
    (tmp_path / "face.png").write_bytes((WORKFLOWS_DIR / "assets" / "portrait_one_speaker.jpg").read_bytes())
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(magic_workflow("single_speaker", magic_test_bundle, "unused.wav", **{"6.steps": 30})))
    (tmp_path / "jobs.csv").write_text("id,2.image,3.audio\nj1,face.png,voice.wav\n")
    env = dict(os.environ, MAGICINFINITE_COMFYUI=str(comfyui_install), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "runner.cli", "batch", str(tmp_path / "jobs.csv"), "--workflow", str(wf),
           "--out", str(tmp_path / "out"), "--cpu", "--models-dir", str(comfyui_models), "--torch-threads", "1"]

    def start() -> subprocess.Popen:
        return subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    return start, tmp_path / "out"


def _sampling(out: Path):
    state = out / "j1" / "magicinfinite_state" / "batch_j1" / "state.json"
    return lambda: state.is_file() and int(json.loads(state.read_text()).get("step", 0)) >= 2


def test_ctrl_c_stops_the_job_within_seconds_and_the_rerun_resumes(batch_cmd):
    start, out = batch_cmd
    proc = start()
    try:
        _wait_for(_sampling(out), 240, "sampler step saved", proc)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        stop_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert proc.returncode == 130, err
    assert stop_s < 10, f"Ctrl-C took {stop_s:.1f} s"
    print(f"Ctrl-C to exit: {stop_s:.2f} s")
    row = _rows(out)["j1"]
    assert row["status"] == "interrupted" and _videos(out) == [], (row, _videos(out))

    rerun = start()
    assert rerun.wait(timeout=600) == 0, rerun.stderr.read()
    row = _rows(out)["j1"]
    assert row["status"] == "ok" and row["resumed_from"] and row["output"].endswith("_00001_.mp4"), row
    assert _videos(out) == ["single_speaker_00001_.mp4"]


def test_sigkill_before_the_table_update_leaves_no_orphan(batch_cmd):
    start, out = batch_cmd
    proc = start()
    try:  # a real SIGKILL mid-sampling
        _wait_for(_sampling(out), 240, "sampler step saved", proc)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _rows(out)["j1"]["status"] == "running"
    assert start().wait(timeout=600) == 0
    first = _rows(out)["j1"]
    assert first["status"] == "ok" and _videos(out) == ["single_speaker_00001_.mp4"]
    # the disk as a SIGKILL between the mp4's rename and the table update leaves it: video there, row running
    table = (out / "results.csv").read_text().replace(",ok,", ",running,")
    (out / "results.csv").write_text(table)
    again = start()
    assert again.wait(timeout=600) == 0, again.stderr.read()
    row = _rows(out)["j1"]
    assert row["status"] == "ok" and row["output"] == first["output"], row
    assert _videos(out) == ["single_speaker_00001_.mp4"]  # replaced, not _00002_ beside an orphan
