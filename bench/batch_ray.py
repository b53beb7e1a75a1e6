"""Batch throughput on a local Ray: 1 vs 2 workers, model reuse vs a reload per job (JSON on stdout).

Usage: python bench/batch_ray.py [--jobs 8] [--cpus 2] [--rounds 2] [--out /tmp/batch_ray_bench]

Every configuration runs the same jobs (the embedded demo model, 128x128, its 4-step generator, ~1.4 s
of espeak-ng speech, one seed per job) through ``magicinfinite batch --ray`` from this process, one
torch thread per worker. Two throughputs per configuration:

- ``jobs_per_hour_wall``: jobs / the batch's wall time, worker start-up (ComfyUI bootstrap, ~7 s
  here) included — what a short batch sees;
- ``jobs_per_hour_steady``: each worker's jobs after its first, over their summed run times, added
  over workers — what a long batch (thousands of jobs) converges to.

The ratios compare configurations measured in this one invocation, on a machine shared with other
work, so they carry its noise; ``videos_identical`` checks that every configuration wrote the same
mp4 bytes for every job (reuse changes nothing but the time).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from magicinfinite_core.distributed.ray_runtime import init_ray  # noqa: E402
from runner import batch  # noqa: E402

WORKFLOW = REPO / "workflows" / "single_speaker_api.json"
CONFIGS = [  # (name, workers, model cache: None = reuse, 0 = reload every job)
    ("1 worker, reuse", 1, None),
    ("2 workers, reuse", 2, None),
    ("1 worker, reload", 1, 0),
]

NOTE = (
    "On a GPU cluster each worker is one GPU (or one USP group of N GPUs) running jobs independently, so "
    "steady throughput scales with the number of workers as long as (a) the jobs outnumber the workers, "
    "(b) the shared filesystem keeps up with reading inputs and writing mp4s (a few MB per minute of "
    "video), and (c) the driver is not the bottleneck: it rewrites the results table after every event, "
    "O(jobs) each time (results_table_rewrite_ms_10k_rows, measured here). Here the two workers share two CPU cores with each "
    "other and with other work, so 2 workers cannot reach 2x. Model reuse saves one model load per job: "
    "~0.15 s for the 28 MB demo next to a ~1 s job; for the published 13B transformer (26 GB in bf16) "
    "a load is ~15-30 s from a local NVMe or a fast shared filesystem (assumed 1-2 GB/s) plus moving it "
    "to the GPU, saved on every job after a worker's first. These GPU figures are assumptions, not "
    "measurements; run this bench on the cluster to measure them."
)


def _steady(rows: list[dict]) -> float:
    """Jobs/hour after each worker's first job: sum over workers of jobs / their summed run seconds."""
    per_worker: dict[str, list[float]] = {}
    for r in rows:  # rows are in job order; a worker's first job in that order is not always its first run
        per_worker.setdefault(r["worker"], []).append(float(r["seconds"]))
    rate = 0.0
    for secs in per_worker.values():
        later = sorted(secs)[:-1]  # drop the slowest: the first job on a worker pays the ComfyUI bootstrap
        if later:
            rate += len(later) / sum(later) * 3600
    return rate


def run_config(name: str, workers: int, cache: int | None, jobs_csv: Path, out: Path, cpus: int) -> dict:
    argv = [str(jobs_csv), "--workflow", str(WORKFLOW), "--out", str(out), "--ray", "--workers", str(workers),
            "--torch-threads", "1", "--cpu"]
    if cache is not None:
        argv += ["--model-cache", str(cache)]
    t0 = time.perf_counter()
    run = batch.run_batch(batch.build_parser().parse_args(argv))
    wall = time.perf_counter() - t0
    failed = [r["id"] for r in run.rows if r["status"] != "ok"]
    if failed:
        raise SystemExit(f"{name}: jobs failed: {failed} (see {run.results_path})")
    return {
        "config": name,
        "workers": workers,
        "model_reuse": cache != 0,
        "wall_s": round(wall, 2),
        "jobs_per_hour_wall": round(len(run.rows) / wall * 3600, 1),
        "jobs_per_hour_steady": round(_steady(run.rows), 1),
        "median_job_s": round(sorted(float(r["seconds"]) for r in run.rows)[len(run.rows) // 2], 3),
        "model_loads": run.model_cache.get("loads"),
        "model_reuses": run.model_cache.get("hits"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=8)
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    p.add_argument("--out", default="/tmp/batch_ray_bench")
    p.add_argument("--rounds", type=int, default=2, choices=(1, 2), help="1: A B C; 2: A B C C B A")
    a = p.parse_args()
    root = Path(a.out)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    if shutil.which("espeak-ng") is None:
        raise SystemExit("this bench needs espeak-ng for its speech (apt-get install espeak-ng)")
    subprocess.run(["espeak-ng", "-w", str(root / "voice.wav"), "Hello, welcome."], check=True, capture_output=True)
    import soundfile as sf

    audio_s = sf.info(str(root / "voice.wav")).duration
    jobs_csv = root / "jobs.csv"
    jobs_csv.write_text("id,3.audio,6.seed\n" + "".join(f"j{i:02d},voice.wav,{i}\n" for i in range(a.jobs)))

    table = [{"id": f"job{i:05d}", "status": "ok", "output": f"/shared/out/job{i:05d}/v.mp4", "seconds": 61.5,
              "worker": "ray w3 gpu-node-7 pid=12345", "attempts": 1} for i in range(10_000)]
    t0 = time.perf_counter()
    for _ in range(5):
        batch.write_results(root / "table_10k.csv", table)
    rewrite_ms = (time.perf_counter() - t0) / 5 * 1000

    from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR, load_bundle

    load_bundle(DEMO_MODEL_DIR, distilled=True)  # imports and page cache warm, as in a worker after its first job
    t0 = time.perf_counter()
    for _ in range(3):
        load_bundle(DEMO_MODEL_DIR, distilled=True)
    load_s = (time.perf_counter() - t0) / 3

    init_ray(num_cpus=a.cpus)
    # Rounds in alternating order (A B C, then C B A), so a change in the machine's other load over the
    # run does not favour whichever configuration came first; each configuration's figures are the mean.
    order = list(CONFIGS) + (list(CONFIGS)[::-1] if a.rounds == 2 else [])
    runs: dict[str, list[dict]] = {}
    for r, (n, w, c) in enumerate(order):
        runs.setdefault(n, []).append(run_config(n, w, c, jobs_csv, root / f"out{r}", a.cpus))
    results = []
    for got in runs.values():
        mean = {key: round(sum(g[key] for g in got) / len(got), 2)
                for key in ("wall_s", "jobs_per_hour_wall", "jobs_per_hour_steady", "median_job_s")}
        results.append({**got[0], **mean, "rounds": [{k: g[k] for k in mean} for g in got]})
    by = {r["config"]: r for r in results}

    def ratio(x: str, y: str, key: str) -> float:
        return round(by[x][key] / by[y][key], 3)

    identical = all(len({v.read_bytes() for v in root.glob(f"out*/j{i:02d}/**/*.mp4")}) == 1 for i in range(a.jobs))
    print(json.dumps({
        "bench": "batch_ray",
        "model": "embedded demo (128x128, 4-step distilled generator)",
        "jobs": a.jobs,
        "audio_s": round(audio_s, 2),
        "ray_cpus": a.cpus,
        "machine_cpus": os.cpu_count(),
        "configs": results,
        "ratios": {
            "2_vs_1_workers_wall": ratio("2 workers, reuse", "1 worker, reuse", "jobs_per_hour_wall"),
            "2_vs_1_workers_steady": ratio("2 workers, reuse", "1 worker, reuse", "jobs_per_hour_steady"),
            "reuse_vs_reload_wall": ratio("1 worker, reuse", "1 worker, reload", "jobs_per_hour_wall"),
            "reuse_vs_reload_steady": ratio("1 worker, reuse", "1 worker, reload", "jobs_per_hour_steady"),
        },
        "videos_identical": identical,
        "model_load_s": round(load_s, 3),  # what reuse saves per job (the demo bundle, warm page cache)
        "results_table_rewrite_ms_10k_rows": round(rewrite_ms, 1),
        "note": NOTE,
    }, indent=1))


if __name__ == "__main__":
    main()
