"""Checking a batch before its first job runs: every ``--map``, every column, every row.

Why a module of its own: a batch of 1000 jobs with a typo in row 1000 used to fail after 999 jobs, and a
column or ``--map`` that named no real input (``6.nosuch``, ``voice=3.nosuch``) was ignored by ComfyUI
without a word. The plain runner and the Ray driver both call this before anything is written; it
imports neither runner.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import headless
from .job_runner import BatchError, stage_input_file

# a job: (job id, {"NODE.INPUT": value}, {"NODE.INPUT": local file})
Job = tuple[str, dict[str, Any], dict[str, Path]]
MAX_LISTED = 3  # bad rows named in the one error line; the rest are counted


def job_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Every column any job has, in first-seen order (``id`` left out)."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update((k, None) for k in row if k != "id")
    return list(seen)


def check_mapping(mapping: dict[str, str], columns: list[str], jobs_path: Path) -> None:
    """Every ``--map COLUMN=NODE.INPUT`` must name a column of the jobs file."""
    for col, key in mapping.items():
        if col not in columns:
            raise BatchError(f"--map {col}={key}: {jobs_path.name} has no column {col!r} "
                             f"(its columns: {', '.join(columns) or 'none'})")


def check_inputs(workflow: dict[str, Any], mapping: dict[str, str], columns: list[str],
                 declared: Callable[[str], set[str] | None]) -> None:
    """Every mapped target and every ``NODE.INPUT`` column must be an input of a node of the workflow."""
    for col, key in mapping.items():
        err = headless.unknown_input_error(workflow, key, declared)
        if err:
            raise BatchError(f"--map {col}={key}: {err}")
    for col in columns:
        if col in mapping:
            continue
        if "." not in col:
            raise BatchError(f"column {col!r} is neither NODE.INPUT nor mapped with --map {col}=NODE.INPUT")
        err = headless.unknown_input_error(workflow, col, declared)
        if err:
            raise BatchError(f"column {col!r}: {err}")


def bootstrap_for_checks(args: argparse.Namespace) -> None:
    """ComfyUI in this process (as the in-process runner starts it), so nodes and values can be checked."""
    headless.bootstrap(args.comfyui, cpu=True if args.ray is not None else args.cpu)
    if args.models_dir:
        headless.add_models_dir(args.models_dir)


def validate_jobs(workflow: dict[str, Any], todo: list[Job], input_dir: str | None) -> None:
    """ComfyUI's own validation of every job's workflow (ranges, choices, files, the nodes'
    ``validate_inputs``) before the first runs; one line naming the bad jobs. ComfyUI must be
    bootstrapped in this process."""
    bad: list[str] = []
    inputs = headless.input_directory(input_dir)
    for job_id, overrides, files in todo:
        try:  # files as the runner hands them over: copied into the input folder (ComfyUI refuses others)
            staged = {k: stage_input_file(p, inputs) for k, p in files.items()}
            headless.validate_workflow(workflow, {**overrides, **staged}, input_dir=input_dir)
        except headless.HeadlessError as e:
            bad.append(f"job {job_id}: {e}")
    if bad:
        more = f" (and {len(bad) - MAX_LISTED} more)" if len(bad) > MAX_LISTED else ""
        raise BatchError(f"{len(bad)} of {len(todo)} job(s) are invalid; nothing was run. "
                         + " | ".join(bad[:MAX_LISTED]) + more)


def server_inputs(url: str) -> Callable[[str], set[str] | None]:
    """A ``declared`` lookup from a running ComfyUI's /object_info (one request, made on first use)."""
    import requests

    cache: dict[str, Any] = {}

    def declared(class_type: str) -> set[str] | None:
        if "info" not in cache:
            try:
                r = requests.get(url.rstrip("/") + "/object_info", timeout=60)
                r.raise_for_status()
                cache["info"] = r.json()
            except (requests.RequestException, ValueError):
                cache["info"] = {}
        spec = cache["info"].get(class_type, {}).get("input")
        if not isinstance(spec, dict):
            return None
        return set(spec.get("required", {})) | set(spec.get("optional", {}))

    return declared
