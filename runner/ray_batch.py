"""``magicinfinite batch ... --ray [ADDRESS]``: the same jobs, workflow and results table, on Ray workers.

Each worker is a Ray actor that bootstraps ComfyUI once and keeps its models loaded between jobs (the
model cache): one per GPU, one per group of N GPUs when the workflow's sampler uses the multi-process
(USP) backend with N processes, or one per CPU (N CPUs for USP) on a CPU-only cluster. The driver (this
process) hands a job to each idle worker, so jobs start as workers free up, and it alone writes the
results table.

Why the driver re-queues instead of letting Ray retry the call: a worker that dies (node lost, killed
for memory) is restarted by Ray (``max_restarts=-1``), but the driver decides where the job goes next
(the first idle worker, not necessarily the restarted one), counts the attempts, and gives up after
``--max-attempts``. The job resumes from its sampler state: every job's outputs and its per-step state
(``<out>/<id>/magicinfinite_state/batch_<id>``) live under the one output root, so the next worker
continues from the last finished step — at most one step is lost. On more than one machine the output
root and the input files must be on a filesystem every node sees at the same path.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import headless, job_runner

USP_BACKEND = "multi-process (USP)"
PACK_ROOT = Path(__file__).resolve().parent.parent
REPROBE_S = 1.0  # how often to ask a restarting worker whether it is back
WAIT_NOTICE_S = 60.0  # say so when no worker has answered for this long (e.g. the cluster is scaling up)


@dataclass(frozen=True)
class WorkerSettings:
    """What every worker process needs to run jobs (the in-process runner's options)."""

    comfyui: str | None = None
    cpu: bool = False
    models_dir: str | None = None
    input_dir: str | None = None
    torch_threads: int = 1
    model_cache: int = 1


@dataclass(frozen=True)
class WorkerShape:
    """Ray resources of one worker and the USP group size its sampler uses (0: single device)."""

    cpus: float
    gpus: float
    usp_processes: int = 0


def sampler_processes(workflow: dict[str, Any], overrides: list[dict[str, Any]]) -> int:
    """The largest USP process count any job's sampler asks for (0 when every job is single-device)."""
    most = 0
    for node_id, node in workflow.items():
        if node.get("class_type") != job_runner.SAMPLER_CLASS:
            continue
        inputs = node.get("inputs", {})
        for ov in overrides or [{}]:
            if ov.get(f"{node_id}.backend", inputs.get("backend")) == USP_BACKEND:
                most = max(most, int(ov.get(f"{node_id}.processes", inputs.get("processes", 2))))
    return most


def worker_shape(usp_processes: int, cluster: dict[str, float], cpu: bool = False,
                 worker_cpus: float | None = None, worker_gpus: float | None = None) -> WorkerShape:
    """Resources per worker: a GPU (N for a USP group of N) when the cluster has GPUs and ``cpu`` is off,
    else CPUs (N for USP: its processes share the worker's CPUs)."""
    group = max(1, usp_processes)
    use_gpu = not cpu and cluster.get("GPU", 0) > 0
    gpus = float(worker_gpus) if worker_gpus is not None else (float(group) if use_gpu else 0.0)
    if cpu and gpus > 0:
        raise job_runner.BatchError("--cpu with --worker-gpus > 0: drop one of them")
    cpus = float(worker_cpus) if worker_cpus is not None else (1.0 if gpus > 0 else float(group))
    if cpus <= 0 and gpus <= 0:
        raise job_runner.BatchError("a worker needs some CPUs or GPUs: set --worker-cpus or --worker-gpus above 0")
    if gpus > 0 and cluster.get("GPU", 0) <= 0:
        raise job_runner.BatchError(
            f"each worker needs {gpus:g} GPU(s) but the Ray cluster has none; pass --cpu (or --worker-gpus 0) "
            "to run on CPU workers, or start the cluster's nodes with GPUs"
        )
    return WorkerShape(cpus=cpus, gpus=gpus, usp_processes=usp_processes)


def worker_count(shape: WorkerShape, cluster: dict[str, float], requested: int | None, jobs: int) -> int:
    """``requested``, else as many workers as the cluster's GPUs (or CPUs) hold, never more than jobs."""
    if requested is not None:
        if requested < 1:
            raise job_runner.BatchError(f"--workers must be at least 1, got {requested}")
        return requested
    fit = cluster.get("GPU", 0) / shape.gpus if shape.gpus > 0 else cluster.get("CPU", 0) / max(shape.cpus, 1e-9)
    return max(1, min(jobs, int(fit)))


class BatchWorker:
    """One Ray actor: ComfyUI bootstrapped once in its process, models kept by the model cache."""

    def __init__(self, settings: WorkerSettings, index: int) -> None:
        from runner import console_warnings

        console_warnings.install()  # its stderr reaches the batch's console: one line per warning
        self.settings = settings
        self.index = index
        job_runner.prepare_process(settings.torch_threads, settings.model_cache)
        self.runner = job_runner.InProcessRunner(argparse.Namespace(**asdict(settings)))
        self.label = job_runner.worker_label(f"ray w{index}")

    def info(self) -> dict[str, Any]:
        """Who this worker is now (after a restart: the new process)."""
        return {"label": self.label, "pid": os.getpid()}

    def run_job(self, job_id: str, workflow: dict[str, Any], overrides: dict[str, Any],
                files: dict[str, str], out: str) -> dict[str, Any]:
        """Run one job; failures come back as an ``error`` row (one line), never as an exception."""
        from magicinfinite_core.weights.model_cache import model_cache

        t0 = time.perf_counter()
        row: dict[str, Any] = {"id": job_id, "worker": self.label,
                               "resumed_from": job_runner.saved_progress(workflow, overrides, Path(out))}
        try:
            job_runner.discard_previous_outputs(Path(out))  # an unrecorded earlier attempt's video: replaced
            output, warned = self.runner.run(workflow, overrides, {k: Path(v) for k, v in files.items()}, Path(out))
            row.update(status="ok", output=output, error="", warnings=warned)
        except Exception as e:  # noqa: BLE001 - every failure becomes a row; the batch goes on
            row.update(status="error", output="", error=job_runner.error_line(e))
        row["seconds"] = round(time.perf_counter() - t0, 2)
        row["model_cache"] = model_cache().stats()
        return row


def _worker_options(shape: WorkerShape) -> dict[str, Any]:
    # The workers import runner/ from this checkout (ComfyUI custom-node folders are rarely installed
    # with pip); on a cluster every node needs the pack at the same path, or installed. Ray expands
    # ${PYTHONPATH} to the worker node's own value, so that node's path is kept behind it.
    path = f"{PACK_ROOT}{os.pathsep}${{PYTHONPATH}}"
    return {
        "num_cpus": shape.cpus,
        "num_gpus": shape.gpus,
        "max_restarts": -1,
        "max_task_retries": 0,  # the driver re-queues a lost job itself (see the module docstring)
        "runtime_env": {"env_vars": {"PYTHONPATH": path}},
    }


def _lost_reason(e: BaseException) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return headless._one_line(f"worker lost ({type(e).__name__}: {first})")[:300]


def run_on_ray(args: argparse.Namespace, workflow: dict[str, Any],
               todo: list[tuple[str, dict[str, Any], dict[str, Path]]], out_root: Path,
               table: Any, cache_size: int) -> dict[str, int]:
    """Run ``todo`` (job id, overrides, local files) on Ray workers; rows go to ``table``.

    Returns the summed model-cache counters of every worker process (``loads``, ``hits``).
    """
    from magicinfinite_core.distributed.ray_runtime import init_ray, require_ray

    if args.max_attempts < 1:
        raise job_runner.BatchError(f"--max-attempts must be at least 1, got {args.max_attempts}")
    ray = require_ray()
    started_here = not ray.is_initialized()
    init_ray(args.ray or None)
    lost_errors = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                   ray.exceptions.NodeDiedError, ray.exceptions.OutOfMemoryError, ray.exceptions.ObjectLostError)
    actors: list[Any] = []
    inflight: dict[Any, tuple[int, str, int]] = {}  # job ref -> (worker, job id, attempt)
    try:
        cluster = ray.cluster_resources()
        shape = worker_shape(sampler_processes(workflow, [ov for _, ov, _ in todo]), cluster, args.cpu,
                             args.worker_cpus, args.worker_gpus)
        n = worker_count(shape, cluster, args.workers, len(todo))
        threads = args.torch_threads or max(1, int(shape.cpus))
        settings = WorkerSettings(comfyui=args.comfyui, cpu=args.cpu or shape.gpus == 0, models_dir=args.models_dir,
                                  input_dir=args.input_dir, torch_threads=threads, model_cache=cache_size)
        print(f"ray: {n} worker(s), each {shape.cpus:g} CPU / {shape.gpus:g} GPU"
              + (f", USP group of {shape.usp_processes}" if shape.usp_processes else "")
              + f"; cluster {cluster.get('CPU', 0):g} CPU / {cluster.get('GPU', 0):g} GPU", file=sys.stderr)
        remote = ray.remote(BatchWorker).options(**_worker_options(shape))
        actors = [remote.remote(settings, i) for i in range(n)]
        return _schedule(ray, lost_errors, args, workflow, todo, out_root, table, actors, inflight)
    except KeyboardInterrupt:
        for _, job_id, attempt in inflight.values():
            row = table.rows.get(job_id, {})
            table.set(job_id, {**row, "id": job_id, "status": "interrupted", "attempts": attempt,
                               "error": "interrupted"}, announce=False)
        raise
    finally:
        for actor in actors:
            ray.kill(actor)
        if started_here:
            ray.shutdown()


def _schedule(ray: Any, lost_errors: tuple[type[BaseException], ...], args: argparse.Namespace,
              workflow: dict[str, Any], todo: list[tuple[str, dict[str, Any], dict[str, Path]]], out_root: Path,
              table: Any, actors: list[Any],
              inflight: dict[Any, tuple[int, str, int]]) -> dict[str, int]:
    """The driver loop: a job to every ready worker, results in, lost jobs back to the front of the queue."""
    plans = {job_id: (overrides, {k: str(p) for k, p in files.items()}) for job_id, overrides, files in todo}
    pending = deque(job_id for job_id, _, _ in todo)
    attempts = {job_id: job_runner.previous_attempts(table.rows.get(job_id)) for job_id in plans}
    tries = dict.fromkeys(plans, 0)  # runs in this invocation (what --max-attempts counts)
    starting = {actor.info.remote(): i for i, actor in enumerate(actors)}  # workers not ready yet
    labels: dict[int, str] = {}
    reprobe: dict[int, float] = {}  # worker -> when to ask it again (it was restarting)
    gone: dict[int, str] = {}  # workers Ray will not bring back, with the reason
    idle: deque[int] = deque()
    cache: dict[str, dict[str, int]] = {}  # per worker process: its latest model-cache counters
    held: dict[int, tuple[str, int, int, str]] = {}  # worker -> its lost job, until the worker answers again
    stop = False

    def lost(job_id: str, i: int, attempt: int, reason: str) -> None:
        """A job whose worker died: back to the front of the queue, or failed after --max-attempts runs."""
        if tries[job_id] >= args.max_attempts:
            table.set(job_id, {"id": job_id, "status": "error", "output": "", "worker": labels.get(i, ""),
                               "attempts": attempt, "error": f"{reason}; gave up after {tries[job_id]} run(s)"})
        else:
            pending.appendleft(job_id)  # resumes from its sampler state on the next free worker
            table.set(job_id, {"id": job_id, "status": "requeued", "output": "", "worker": labels.get(i, ""),
                               "attempts": attempt, "error": reason})

    while (pending and not stop) or inflight or held:
        while idle and pending and not stop:
            i, job_id = idle.popleft(), pending.popleft()
            attempts[job_id] += 1
            tries[job_id] += 1
            overrides, files = plans[job_id]
            ref = actors[i].run_job.remote(job_id, workflow, overrides, files, str(out_root / job_id))
            inflight[ref] = (i, job_id, attempts[job_id])
            table.set(job_id, {"id": job_id, "status": "running", "worker": labels[i],
                               "attempts": attempts[job_id]}, announce=False)
        now = time.monotonic()
        for i in [i for i, t in reprobe.items() if t <= now]:
            del reprobe[i]
            starting[actors[i].info.remote()] = i
        if not inflight and not starting and not reprobe:
            break
        wait_s = min([WAIT_NOTICE_S, *(max(0.0, t - now) for t in reprobe.values())])
        refs = [*inflight, *starting]
        if not refs:  # only restarting workers: wait for the next time to ask them
            time.sleep(wait_s)
            continue
        ready, _ = ray.wait(refs, num_returns=1, timeout=wait_s)
        if not ready and reprobe:
            continue
        if not ready:
            print(f"ray: waiting for workers ({len(pending)} job(s) queued, {len(inflight)} running; "
                  f"{len(starting)} worker(s) not placed yet)", file=sys.stderr)
            continue
        ref = ready[0]
        if ref in starting:
            i = starting.pop(ref)
            try:
                labels[i] = ray.get(ref)["label"]
            except ray.exceptions.ActorDiedError as e:  # dead for good (e.g. its constructor failed)
                gone[i] = _lost_reason(e)
                print(f"ray: worker {i} is gone: {gone[i]}", file=sys.stderr)
                if i in held:
                    lost(*held.pop(i))
                if len(gone) == len(actors) and (pending or held):
                    raise job_runner.BatchError(f"every Ray worker is gone; the last: {gone[i]}") from None
                continue
            except ray.exceptions.RayError:  # unreachable or restarting: ask again in a moment
                reprobe[i] = time.monotonic() + REPROBE_S
                continue
            idle.append(i)
            if i in held:  # the worker answers again, so it no longer runs the job: now it may go elsewhere
                lost(*held.pop(i))
            continue
        i, job_id, attempt = inflight.pop(ref)
        try:
            row = ray.get(ref)
        except lost_errors as e:
            if isinstance(e, ray.exceptions.ActorUnavailableError):
                # Unreachable, not known dead: it may still be running the job. Its next answer (queued
                # behind run_job, or from the restarted process) says it no longer is; re-queue then,
                # so one job never runs on two workers at once.
                held[i] = (job_id, i, attempt, _lost_reason(e))
                table.set(job_id, {"id": job_id, "status": "requeued", "output": "", "worker": labels.get(i, ""),
                                   "attempts": attempt, "error": _lost_reason(e)}, announce=False)
            else:
                lost(job_id, i, attempt, _lost_reason(e))
            starting[actors[i].info.remote()] = i  # back in the pool once it answers (Ray restarts it)
            continue
        except ray.exceptions.RayTaskError as e:  # not a job failure the worker could report itself
            row = {"id": job_id, "status": "error", "output": "", "worker": labels.get(i, ""),
                   "error": job_runner.error_line(e.cause if getattr(e, "cause", None) else e)}
        cache_stats = row.pop("model_cache", None)
        if cache_stats:
            cache[row.get("worker", str(i))] = cache_stats
        table.set(job_id, {**row, "attempts": attempt})
        idle.append(i)
        if row["status"] == "error" and args.stop_on_error:
            stop = True
    totals = {"loads": sum(s["loads"] for s in cache.values()), "hits": sum(s["hits"] for s in cache.values())}
    job_runner.print_cache_summary(len(cache), totals)
    return totals
