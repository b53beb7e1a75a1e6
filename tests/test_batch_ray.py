"""runner.ray_batch: the batch runner on a local Ray (2 workers) against the plain runner, with the
embedded demo model, real espeak-ng speech and a real ComfyUI in every worker.

One Ray per module (starting it costs ~10 s). The driver is this process; it imports ``runner`` as a
top-level package (not ``..runner``) because Ray's workers import the actor class by that name.
Videos are compared as mp4 bytes: the same frames, audio and muxing give the same file (PyAV writes no
wall-clock timestamps), so byte equality is the strict form of "the same video".
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from magicinfinite_core.distributed.ray_runtime import init_ray
from runner import batch as rbatch
from runner import ray_batch

from .audio_fixtures import make_speech
from .comfyui_server import REPO_ROOT, WORKFLOWS_DIR

WORKFLOW = WORKFLOWS_DIR / "single_speaker_api.json"  # the embedded demo model, 4-step generator
GOOD = ["a", "b", "c", "d", "e", "f"]
LONG_JOB = "e"  # more steps, so a SIGKILL lands while it samples


# ---------------------------------------------------------------- pure helpers (no Ray, no ComfyUI)


def test_worker_shape_per_gpu_per_usp_group_and_on_cpu():
    wf = json.loads(WORKFLOW.read_text())
    assert ray_batch.sampler_processes(wf, [{}]) == 0
    assert ray_batch.sampler_processes(wf, [{}, {"6.backend": ray_batch.USP_BACKEND, "6.processes": 4}]) == 4
    gpus = {"CPU": 32, "GPU": 8}
    assert ray_batch.worker_shape(0, gpus) == ray_batch.WorkerShape(cpus=1, gpus=1)
    usp = ray_batch.worker_shape(4, gpus)
    assert (usp.gpus, usp.cpus, usp.usp_processes) == (4, 1, 4)
    assert ray_batch.worker_count(usp, gpus, None, jobs=100) == 2  # two USP groups of 4 on 8 GPUs
    cpu_only = {"CPU": 6}
    assert ray_batch.worker_shape(0, cpu_only) == ray_batch.WorkerShape(cpus=1, gpus=0)
    assert ray_batch.worker_shape(2, cpu_only).cpus == 2  # gloo USP: its processes share the CPUs
    assert ray_batch.worker_count(ray_batch.worker_shape(0, cpu_only), cpu_only, None, jobs=4) == 4
    assert ray_batch.worker_shape(0, gpus, cpu=True).gpus == 0
    with pytest.raises(rbatch.BatchError, match="has none; pass --cpu"):
        ray_batch.worker_shape(0, cpu_only, worker_gpus=1)
    with pytest.raises(rbatch.BatchError, match="at least 1"):
        ray_batch.worker_count(usp, gpus, 0, jobs=3)


def test_model_cache_size_and_bad_flags(tmp_path, capsys):
    wf = json.loads(WORKFLOW.read_text())
    assert rbatch.model_cache_size(wf, None) == 1 and rbatch.model_cache_size(wf, 0) == 0
    with pytest.raises(rbatch.BatchError, match=">= 0"):
        rbatch.model_cache_size(wf, -1)
    jobs = tmp_path / "j.csv"
    jobs.write_text("id,6.seed\na,1\n")
    argv = [str(jobs), "--workflow", str(WORKFLOW), "--out", str(tmp_path / "o")]
    from runner import cli

    assert cli.main(["batch", *argv, "--ray", "--server", "http://127.0.0.1:1"]) == 2  # `magicinfinite batch`
    assert "pick one" in capsys.readouterr().err


# ---------------------------------------------------------------- Ray + ComfyUI


@pytest.fixture(scope="module")
def local_ray():
    from magicinfinite_core.distributed.ray_runtime import require_ray

    started = not require_ray().is_initialized()
    ray = init_ray(num_cpus=2)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def jobs_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ray_jobs")
    make_speech(d / "voice.wav", "Hello, welcome.")  # ~1.4 s: 35 frames, two sliding windows
    (d / "broken.wav").write_bytes(b"RIFF this is not audio at all")
    lines = ["id,3.audio,6.seed,6.steps"]
    lines += [f"{j},voice.wav,{i + 1},{24 if j == LONG_JOB else 4}" for i, j in enumerate(GOOD)]
    (d / "good.csv").write_text("\n".join(lines) + "\n")
    (d / "mixed.csv").write_text("\n".join([*lines[:4], "bad,broken.wav,9,4", *lines[4:]]) + "\n")
    return d


def _table(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _video(out: Path, job: str) -> Path:
    videos = sorted((out / job).rglob("*.mp4"))
    assert len(videos) == 1, f"job {job}: expected exactly one mp4, found {videos}"
    return videos[0]


@pytest.fixture(scope="module")
def plain_run(comfyui_install, jobs_dir, tmp_path_factory):
    """The plain runner (a fresh process, one torch thread) over the mixed jobs: the reference videos."""
    out = tmp_path_factory.mktemp("plain")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "runner.batch", str(jobs_dir / "mixed.csv"), "--workflow", str(WORKFLOW),
         "--out", str(out), "--torch-threads", "1", "--cpu", "--comfyui", str(comfyui_install)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]  # the corrupt job fails, the rest finish
    return out, proc.stderr


def _ray_argv(jobs: Path, out: Path, comfyui: Path) -> list[str]:
    return [str(jobs), "--workflow", str(WORKFLOW), "--out", str(out), "--ray", "--workers", "2",
            "--torch-threads", "1", "--cpu", "--comfyui", str(comfyui)]


@pytest.mark.comfyui
@pytest.mark.slow
def test_plain_runner_loads_the_model_once(plain_run):
    out, stderr = plain_run
    assert "model loads: 1 in 1 process(es); reused a loaded model: 6 time(s)" in stderr
    rows = {r["id"]: r for r in _table(out / "results.csv")}
    assert all(rows[j]["status"] == "ok" for j in GOOD) and rows["bad"]["status"] == "error"


@pytest.mark.comfyui
@pytest.mark.slow
def test_ray_two_workers_same_videos_as_plain_runner(local_ray, plain_run, comfyui_install, jobs_dir, tmp_path,
                                                     capsys):
    plain_out, _ = plain_run
    out = tmp_path / "ray"
    args = rbatch.build_parser().parse_args(_ray_argv(jobs_dir / "mixed.csv", out, comfyui_install))
    run = rbatch.run_batch(args)
    rows = {r["id"]: r for r in run.rows}
    assert [r["id"] for r in _table(out / "results.csv")] == ["a", "b", "c", "bad", "d", "e", "f"]
    assert all(rows[j]["status"] == "ok" and rows[j]["attempts"] == 1 for j in GOOD)
    assert len({rows[j]["worker"] for j in GOOD}) == 2  # both workers ran jobs
    assert run.model_cache == {"loads": 2, "hits": 5}  # one load per worker; 7 jobs (bad reaches the loader)
    for j in GOOD:
        assert _video(out, j).read_bytes() == _video(plain_out, j).read_bytes(), f"job {j} differs"

    # The corrupt input: failed with a one-line reason, nothing else affected.
    bad = rows["bad"]
    assert bad["status"] == "error" and bad["output"] == ""
    assert bad["error"].startswith("node 3 (LoadAudio) failed:") and "broken.wav" in bad["error"]
    assert "\n" not in bad["error"]

    # The same command again (the good jobs): every one is skipped and no worker starts.
    capsys.readouterr()
    assert rbatch.main(_ray_argv(jobs_dir / "good.csv", out, comfyui_install)) == 0
    assert all(r["status"] == "skipped" for r in _table(out / "results.csv"))
    assert "ray:" not in capsys.readouterr().err  # nothing left to run: Ray was not even asked for workers


def _run_and_kill(argv: list[str], out: Path, job: str,
                  results: Path | None = None) -> tuple[int | None, tuple[int, int, int] | None]:
    """Run the batch in a thread; SIGKILL the worker running ``job`` once its sampler saved a step.

    Returns (the batch's exit code, (killed pid, steps saved then, total steps)).
    """
    result: dict[str, int] = {}
    driver = threading.Thread(target=lambda: result.setdefault("rc", rbatch.main(argv)))
    driver.start()
    state_json = out / job / "magicinfinite_state" / f"batch_{job}" / "state.json"
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and driver.is_alive() and time.monotonic() < deadline:
        try:
            state = json.loads(state_json.read_text())
        except (OSError, ValueError):
            time.sleep(0.01)
            continue
        if int(state["step"]) >= 1:
            worker = rbatch.read_results(results or out / "results.csv")[job]["worker"]
            killed = (int(re.search(r"pid=(\d+)", worker).group(1)), int(state["step"]), int(state["total_steps"]))
            os.kill(killed[0], signal.SIGKILL)
    driver.join(300)
    return result.get("rc"), killed


@pytest.mark.comfyui
@pytest.mark.slow
def test_sigkill_of_a_worker_mid_job_requeues_and_resumes(local_ray, plain_run, comfyui_install, jobs_dir,
                                                          tmp_path):
    plain_out, _ = plain_run
    out = tmp_path / "killed"
    rc, killed = _run_and_kill(_ray_argv(jobs_dir / "good.csv", out, comfyui_install), out, LONG_JOB)
    assert killed is not None, "the long job never saved a sampler step"
    pid, step, total = killed
    assert step < total  # killed while sampling, not after
    assert rc == 0

    table = _table(out / "results.csv")
    assert sorted(r["id"] for r in table) == sorted(GOOD)  # every job once
    rows = {r["id"]: r for r in table}
    assert all(rows[j]["status"] == "ok" for j in GOOD)
    assert rows[LONG_JOB]["attempts"] == "2" and f"pid={pid}" not in rows[LONG_JOB]["worker"]
    assert all(rows[j]["attempts"] == "1" and rows[j]["resumed_from"] == "" for j in GOOD if j != LONG_JOB)
    # resumed from its saved sampler state: at least the step seen before the kill (at most one step lost)
    done, of = (int(v) for v in rows[LONG_JOB]["resumed_from"].split("/"))
    assert of == total and step <= done < total
    print(f"killed pid {pid} at step {step}/{total}; the re-queued run resumed from {done}/{of}")
    for j in GOOD:  # one video each (none duplicated), and the killed job's equals the uninterrupted run's
        assert _video(out, j).read_bytes() == _video(plain_out, j).read_bytes(), f"job {j} differs"
    state_json = out / LONG_JOB / "magicinfinite_state" / f"batch_{LONG_JOB}" / "state.json"
    assert not state_json.exists()  # the resumed run finished and cleared its state


@pytest.mark.comfyui
@pytest.mark.slow
def test_a_job_whose_worker_keeps_dying_fails_and_a_rerun_resumes_it(local_ray, plain_run, comfyui_install,
                                                                     jobs_dir, tmp_path):
    """--max-attempts 1: the first lost worker ends the job as an error with the reason (no endless
    loop); the same command again resumes it from the sampler state it left. JSONL table this time."""
    plain_out, _ = plain_run
    jobs = tmp_path / "one.csv"
    jobs.write_text(f"id,3.audio,6.seed,6.steps\n{LONG_JOB},{jobs_dir / 'voice.wav'},5,24\n")  # = plain's 'e'
    out = tmp_path / "gave_up"
    results = out / "results.jsonl"
    argv = [*_ray_argv(jobs, out, comfyui_install), "--results", str(results)]
    argv[argv.index("--workers") + 1] = "1"
    rc, killed = _run_and_kill([*argv, "--max-attempts", "1"], out, LONG_JOB, results)
    assert killed is not None and rc == 1
    row = rbatch.read_results(results)[LONG_JOB]
    assert row["status"] == "error" and row["attempts"] == 1
    assert row["error"].startswith("worker lost (") and row["error"].endswith("gave up after 1 run(s)")

    assert rbatch.main(argv) == 0
    row = rbatch.read_results(results)[LONG_JOB]
    assert row["status"] == "ok" and row["attempts"] == 2
    assert int(row["resumed_from"].split("/")[0]) >= killed[1]
    assert _video(out, LONG_JOB).read_bytes() == _video(plain_out, LONG_JOB).read_bytes()
