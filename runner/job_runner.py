"""Running jobs in one process: the in-process runner, its per-process settings, and the cells of a
results row that a job's process knows (worker, resumed_from, error).

Why a module of its own: the plain runner (runner/batch.py) and every Ray worker (runner/ray_batch.py)
run a job the same way, so both import this, and neither imports the other.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

from . import headless

SAMPLER_CLASS = "MagicInfiniteSampler"
# Loader nodes whose models the process keeps between jobs (magicinfinite_core.weights.model_cache).
MODEL_LOADERS = {"MagicInfiniteModelLoader", "MagicInfiniteDiTLoader", "MagicInfiniteVAELoader"}
STATE_SUBFOLDER = "magicinfinite_state"  # where the sampler node keeps resume_dir states (nodes/common.py)
# Where a job's local input files go inside ComfyUI's input folder (in-process copy or server upload).
STAGED_SUBFOLDER = "magicinfinite_batch"


class BatchError(Exception):
    """A problem with the jobs file or the arguments (reported as one line, exit code 2)."""


def main_output(files: list[str]) -> str:
    videos = [f for f in files if f.endswith(".mp4")]
    return (videos or files or [""])[0]


def node_warnings(outputs: dict[str, Any]) -> str:
    """The pack's warnings in a run's outputs (the ``warnings`` list of each node's UI output), one
    cell: ``node 5: no face found; ... | node 4: ... is silent``. Why: a fallback the user chose, a silent
    voice or a downscaled portrait must show in the results table, not only in a server log."""
    parts = []
    for node_id, out in (outputs or {}).items():
        for w in (out or {}).get("warnings", []) if isinstance(out, dict) else []:
            parts.append(f"node {node_id}: {w}")
    return headless._one_line(" | ".join(parts)) if parts else ""


def model_cache_size(workflow: dict[str, Any], requested: int | None) -> int:
    """How many loaded models a process keeps: ``requested``, else one per loader node of the workflow."""
    if requested is not None:
        if requested < 0:
            raise BatchError(f"--model-cache must be >= 0 (0: reload the model for every job), got {requested}")
        return requested
    return max(1, sum(1 for n in workflow.values() if n.get("class_type") in MODEL_LOADERS))


def prepare_process(torch_threads: int, cache_capacity: int) -> None:
    """Per-process settings every job runner applies once: torch's CPU threads (0: leave torch's
    default) and the model cache size.

    Why fix the thread count: a CPU matmul or reduction splits its sums across threads, so a run with
    4 threads and one with 1 can differ in the last bits and hence in a few pixels. Runs meant to give
    the same video bit for bit (the plain runner vs a Ray worker) use the same count.
    """
    from magicinfinite_core.weights.model_cache import model_cache

    if torch_threads > 0:
        import torch

        torch.set_num_threads(int(torch_threads))
    model_cache().set_capacity(cache_capacity)


def saved_progress(workflow: dict[str, Any], overrides: dict[str, Any], out: Path) -> str:
    """``"5/48"`` (steps done / total) when a sampler of this job left a saved state in the job's output
    folder, so this run resumes from it; ``""`` for a fresh start. The results table's ``resumed_from``."""
    for node_id, node in workflow.items():
        if node.get("class_type") != SAMPLER_CLASS:
            continue
        name = overrides.get(f"{node_id}.resume_dir", node.get("inputs", {}).get("resume_dir", ""))
        if not isinstance(name, str) or not name.strip():
            continue
        try:
            meta = json.loads((out / STATE_SUBFOLDER / name.strip() / "state.json").read_text())
            return f"{int(meta['step'])}/{int(meta['total_steps'])}"
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return ""


def staged_name(path: Path) -> str:
    """``<first 16 hex of sha256>_<file name>``: the name a job's input file gets in ComfyUI's input folder.

    Why content-addressed: jobs that share a portrait share one copy, two different files with the
    same name never overwrite each other, and parallel workers copying the same file agree on its name.
    """
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return f"{digest.hexdigest()[:16]}_{path.name}"


def stage_input_file(path: Path, input_dir: Path) -> str:
    """Copy ``path`` into ComfyUI's input folder; returns the name Load Image / Load Audio take.

    Why copy: ComfyUI refuses absolute paths and anything outside its input folder (upstream
    GHSA-779p-m5rp-r4h4), so the in-process runners hand over input-folder names exactly as the
    ``--server`` runner does after its upload. The copy is atomic (temporary file + rename).
    """
    name = staged_name(path)
    folder = input_dir / STAGED_SUBFOLDER
    dest = folder / name
    if not dest.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        shutil.copyfile(path, tmp)
        os.replace(tmp, dest)
    return f"{STAGED_SUBFOLDER}/{name}"


def worker_label(prefix: str = "local") -> str:
    """``local host pid=123``: which process ran a job (the results table's ``worker`` cell)."""
    return f"{prefix} {socket.gethostname()} pid={os.getpid()}"


class InProcessRunner:
    """Runs jobs with :func:`runner.headless.run_workflow` (ComfyUI bootstrapped once)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ready = False

    def run(self, workflow: dict[str, Any], overrides: dict[str, Any], files: dict[str, Path],
            out: Path) -> tuple[str, str]:
        """(main output file, warnings cell) of one job."""
        if not self.ready:  # models_dir also when ComfyUI was bootstrapped earlier in this process
            headless.bootstrap(self.args.comfyui, cpu=self.args.cpu)
            if self.args.models_dir:
                headless.add_models_dir(self.args.models_dir)
            self.ready = True
        input_dir = headless.input_directory(self.args.input_dir)
        overrides = {**overrides, **{k: stage_input_file(p, input_dir) for k, p in files.items()}}
        result = headless.run_workflow(
            workflow, overrides, out, input_dir=self.args.input_dir, comfyui=self.args.comfyui,
            cpu=self.args.cpu, models_dir=self.args.models_dir,
        )
        return main_output(result["files"]), node_warnings(result["outputs"])


def error_line(e: BaseException) -> str:
    """One line for the results table: our own errors as they are, anything else with its type."""
    msg = str(e) if isinstance(e, headless.HeadlessError) else f"{type(e).__name__}: {e}"
    return headless._one_line(msg)


def previous_attempts(row: dict[str, Any] | None) -> int:
    """Attempts an unfinished job already had (interrupted / failed rows count; a new job: 0)."""
    try:
        return int((row or {}).get("attempts") or 0)
    except (TypeError, ValueError):
        return 0


def print_cache_summary(workers: int, stats: dict[str, int]) -> None:
    print(f"model loads: {stats['loads']} in {workers} process(es); reused a loaded model: {stats['hits']} time(s)",
          file=sys.stderr)


def discard_previous_outputs(out: Path) -> list[Path]:
    """Remove the videos an earlier, unrecorded attempt of this job left in its own folder ``out``.

    Why: the results table is what says a job is done; a video that landed without its table row (the
    process was killed between the two, or Ctrl-C came as the job finished) is not a result, and
    ComfyUI's file counter would give the rerun ``_00002_`` beside it. Removing it first makes the
    rerun write the same name again, so "video written" and "job done" never disagree for long. The
    sampler's resume state (``magicinfinite_state/``) is kept: the rerun continues from it.
    """
    if not out.is_dir():
        return []
    removed = []
    for p in sorted(out.rglob("*.mp4")):
        if STATE_SUBFOLDER not in p.relative_to(out).parts and p.is_file():
            p.unlink()
            removed.append(p)
    return removed
