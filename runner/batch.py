"""Run many (portrait, audio, prompt, ...) jobs through one API-format workflow.

    magicinfinite batch jobs.csv --workflow workflows/single_speaker_api.json --out out/batch
    magicinfinite batch jobs.jsonl --workflow W --server http://127.0.0.1:8188

Jobs file: CSV (header row) or JSONL (one object per line). Column ``id`` names the job (default
``job0001``...); every column named ``NODE.INPUT`` (e.g. ``6.prompt``, ``3.audio``) overrides that
input; ``--map portrait=2.image`` maps other column names. Values of Load Image / Load Audio / Load
Video inputs that are existing local files (relative to the jobs file) are used as files: copied
into ComfyUI's input folder in-process (ComfyUI refuses paths outside it), uploaded there with
``--server``; both under ``magicinfinite_batch/<content hash>_<name>``.

Why a results table and not just output files: a re-run must know what finished. A job whose row
says ``ok``/``skipped`` and whose output file still exists is skipped; every other job runs again,
and because each job's sampler gets its own ``resume_dir`` (``batch_<id>``, unless the jobs set
one), an interrupted job continues from its last finished sampler step instead of starting over.
The table (``--results``, default ``<out>/results.csv``; ``.jsonl`` also works) is rewritten after
every change with id, status (ok / error / skipped / running / requeued / interrupted), output, seconds,
worker, attempts, resumed_from (``5/48`` when a run continued from a saved state), error and warnings
(the pack's node warnings: a face fallback the workflow chose, a silent voice, a reduced portrait).
Only this process (the driver) writes it; docs/batch.md describes every column.

``--ray [ADDRESS]`` runs the same jobs on Ray workers that keep their model loaded (runner/ray_batch.py);
without it the jobs run here one after another, and jobs on the same model load it once (model cache).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from . import headless, job_checks
from .interrupts import SigintInterrupts
from .job_runner import (
    SAMPLER_CLASS,
    STAGED_SUBFOLDER,
    BatchError,
    InProcessRunner,
    discard_previous_outputs,
    error_line,
    main_output,
    model_cache_size,
    node_warnings,
    prepare_process,
    previous_attempts,
    print_cache_summary,
    saved_progress,
    staged_name,
    worker_label,
)

FILE_INPUTS = {("LoadImage", "image"), ("LoadAudio", "audio"), ("LoadVideo", "file"), ("LoadImageMask", "image")}
RESULT_FIELDS = ["id", "status", "output", "seconds", "worker", "attempts", "resumed_from", "error", "warnings"]
FINISHED = ("ok", "skipped")


# --------------------------------------------------------------------------------- jobs


def read_jobs(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a CSV (strings, parsed like ``--set`` values) or JSONL (typed) jobs file.

    Every job must give every column a value: an empty CSV cell or a JSONL row without a key the other
    rows have used to fall back silently to the workflow's own value (the demo voice or portrait).
    """
    p = Path(path)
    if not p.is_file():
        raise BatchError(f"jobs file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = p.read_bytes()[: e.start].count(b"\n") + 1
        raise BatchError(f"{p}:{line}: not UTF-8 text (byte 0x{e.object[e.start]:02x}); save the jobs file "
                         "as UTF-8") from None
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    if p.suffix.lower() in (".jsonl", ".ndjson"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise BatchError(f"{p}:{n}: not valid JSON ({e})") from None
            if not isinstance(row, dict):
                raise BatchError(f"{p}:{n}: each line must be a JSON object")
            rows.append(row)
            lines.append(n)
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        for row in reader:
            lines.append(reader.line_num)
            if None in row:
                raise BatchError(f"{p}:{reader.line_num}: more cells than the header has columns")
            rows.append({k.strip(): None if v is None or not v.strip() else headless.parse_value(v)
                         for k, v in row.items() if k and k.strip()})
    ids = [str(r["id"]) if r.get("id") is not None else f"job{i + 1:04d}" for i, r in enumerate(rows)]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise BatchError(f"job ids must be unique; repeated: {sorted(dup)}")
    columns = list(dict.fromkeys(k for r in rows for k in r if k != "id"))
    for i, (row, job_id) in enumerate(zip(rows, ids, strict=True)):
        err = _bad_id(job_id)
        if err:
            raise BatchError(f"job {i + 1}: {err}")
        row["id"] = job_id
        missing = [c for c in columns if row.get(c) is None]
        if missing:
            raise BatchError(f"{p}:{lines[i]}: job {job_id} has no value for column {missing[0]!r}; give every "
                             "job a value (or drop the column to use the workflow's own)")
    return rows


def _bad_id(job_id: str) -> str | None:
    if not job_id or job_id in (".", "..") or any(c in job_id for c in "/\\:") or job_id.startswith("."):
        return f"id {job_id!r} must be a plain name (it becomes a folder name)"
    return None


def job_overrides(
    row: dict[str, Any], workflow: dict[str, Any], mapping: dict[str, str], base_dir: Path
) -> tuple[dict[str, Any], dict[str, Path]]:
    """``({"NODE.INPUT": value}, {"NODE.INPUT": local file to upload/pass})`` for one job."""
    overrides: dict[str, Any] = {}
    files: dict[str, Path] = {}
    for col, value in row.items():
        if col == "id":
            continue
        key = mapping.get(col, col)
        if "." not in key:
            raise BatchError(
                f"job {row['id']}: column {col!r} is neither NODE.INPUT nor mapped with --map {col}=NODE.INPUT"
            )
        node_id, _, name = key.partition(".")
        node = workflow.get(node_id)
        if node is None:
            raise BatchError(f"job {row['id']}: column {col!r}: the workflow has no node {node_id!r}")
        overrides[key] = value
        if (node["class_type"], name) in FILE_INPUTS and isinstance(value, str):
            cand = Path(value).expanduser()
            cand = cand if cand.is_absolute() else base_dir / cand
            if cand.is_file():
                files[key] = cand.resolve()
    for node_id, node in workflow.items():
        key = f"{node_id}.resume_dir"
        if node.get("class_type") == SAMPLER_CLASS and key not in overrides:
            overrides[key] = f"batch_{row['id']}"
    return overrides, files


# --------------------------------------------------------------------------------- results


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    if path.suffix.lower() == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    return {str(r["id"]): r for r in rows if r.get("id")}


def write_results(path: Path, rows: list[dict[str, Any]]) -> None:
    """Atomic rewrite, so an interrupted batch never leaves a half-written table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        if path.suffix.lower() == ".jsonl":
            for r in rows:
                f.write(json.dumps({k: r.get(k, "") for k in RESULT_FIELDS}) + "\n")
        else:
            w = csv.DictWriter(f, fieldnames=RESULT_FIELDS)
            w.writeheader()
            for r in rows:
                w.writerow({k: r.get(k, "") for k in RESULT_FIELDS})
    os.replace(tmp, path)


def is_finished(row: dict[str, Any] | None) -> bool:
    return bool(row) and row.get("status") in FINISHED and bool(row.get("output")) and Path(row["output"]).is_file()


# --------------------------------------------------------------------------------- runners


class ServerRunner:
    """Submits jobs to a running ComfyUI through its HTTP API (/upload/image, /prompt, /history, /view)."""

    def __init__(self, url: str, timeout: float) -> None:
        import requests

        self.requests = requests
        self.url = url.rstrip("/")
        self.timeout = timeout
        try:
            requests.get(self.url + "/system_stats", timeout=10).raise_for_status()
        except requests.RequestException as e:
            raise BatchError(f"no ComfyUI answering at {self.url}: {e}") from None

    def upload(self, path: Path) -> str:
        with path.open("rb") as f:
            r = self.requests.post(
                self.url + "/upload/image",
                files={"image": (staged_name(path), f)},
                data={"subfolder": STAGED_SUBFOLDER, "type": "input", "overwrite": "true"},
                timeout=120,
            )
        r.raise_for_status()
        info = r.json()
        return f"{info['subfolder']}/{info['name']}" if info.get("subfolder") else info["name"]

    def run(self, workflow: dict[str, Any], overrides: dict[str, Any], files: dict[str, Path],
            out: Path) -> tuple[str, str]:
        """(main output file, warnings cell) of one job."""
        overrides = {**overrides, **{k: self.upload(p) for k, p in files.items()}}
        prompt = headless.apply_overrides(workflow, overrides)
        r = self.requests.post(self.url + "/prompt", json={"prompt": prompt}, timeout=60)
        body = r.json() if r.content else {}
        if r.status_code != 200 or "prompt_id" not in body:
            msg = headless._validation_message(body.get("error", {}) or {}, body.get("node_errors", {}) or {}, prompt)
            raise headless.WorkflowValidationError(msg, body.get("error", {}), body.get("node_errors", {}))
        prompt_id = body["prompt_id"]
        deadline = time.monotonic() + self.timeout
        while True:
            entry = self.requests.get(f"{self.url}/history/{prompt_id}", timeout=30).json().get(prompt_id)
            status = (entry or {}).get("status", {})
            if status.get("status_str") in ("success", "error") and status.get("completed") is not None:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"prompt {prompt_id} not finished after {self.timeout:.0f} s")
            time.sleep(0.2)
        if status["status_str"] == "error":
            details = next((m[1] for m in status.get("messages", []) if m[0] == "execution_error"), {})
            raise headless.NodeExecutionError(headless.node_failure_line(details), details)
        out.mkdir(parents=True, exist_ok=True)
        saved = []
        for node_out in entry.get("outputs", {}).values():
            for values in node_out.values():
                for item in values if isinstance(values, list) else []:
                    if isinstance(item, dict) and item.get("type") == "output" and "filename" in item:
                        data = self.requests.get(
                            self.url + "/view",
                            params={"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                                    "type": "output"},
                            timeout=300,
                        )
                        data.raise_for_status()
                        dest = out / Path(item["filename"]).name
                        dest.write_bytes(data.content)
                        saved.append(str(dest.resolve()))
        return main_output(saved), node_warnings(entry.get("outputs", {}))


# --------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="magicinfinite batch", description="Run many jobs through one workflow.",
                                epilog="exit codes: 0 every job finished; 1 some job failed (see the results table); "
                                "2 bad arguments, workflow or jobs file (one 'error:' line, nothing run); "
                                "130 interrupted (Ctrl-C; run the same command again to resume)")
    p.add_argument("jobs", help="jobs.csv or jobs.jsonl (columns: id, NODE.INPUT...)")
    p.add_argument("--workflow", required=True, help="API-format workflow JSON")
    p.add_argument("--out", default="out/batch", help="one sub-folder per job (default out/batch)")
    p.add_argument("--results", default=None, help="results table (.csv or .jsonl; default <out>/results.csv)")
    p.add_argument("--map", action="append", default=[], metavar="COLUMN=NODE.INPUT",
                   help="map a jobs column to a node input")
    p.add_argument("--server", default=None, help="submit to a running ComfyUI (e.g. http://127.0.0.1:8188)")
    p.add_argument("--timeout", type=float, default=24 * 3600, help="per job, --server mode (seconds)")
    p.add_argument("--rerun", action="store_true", help="run finished jobs again")
    p.add_argument("--stop-on-error", action="store_true", help="stop at the first failed job")
    p.add_argument("--input-dir", default=None)
    p.add_argument("--models-dir", default=None)
    p.add_argument("--comfyui", default=None)
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--model-cache", type=int, default=None, metavar="N",
                   help="loaded models each process keeps between jobs (default: one per loader node; 0: reload)")
    p.add_argument("--torch-threads", type=int, default=0, metavar="N",
                   help="torch CPU threads per process (default: torch's own; on Ray: the worker's CPUs). "
                   "Runs to compare bit for bit need the same value")
    r = p.add_argument_group("Ray (runner/ray_batch.py, docs/batch.md)")
    r.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run the jobs on Ray workers: join ADDRESS (or $RAY_ADDRESS), else start Ray here")
    r.add_argument("--workers", type=int, default=None,
                   help="Ray workers (default: as many as the cluster's GPUs, or CPUs, hold)")
    r.add_argument("--worker-cpus", type=float, default=None, help="CPUs per worker (default 1; USP on CPU: N)")
    r.add_argument("--worker-gpus", type=float, default=None,
                   help="GPUs per worker (default 1 when the cluster has GPUs, N for a USP sampler of N; 0 with --cpu)")
    r.add_argument("--max-attempts", type=int, default=3,
                   help="runs of a job whose worker died (node lost, OOM) before it is recorded as failed")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


class ResultsTable:
    """The batch's rows in job order, rewritten atomically after every change (by the driver only)."""

    def __init__(self, path: Path, order: list[str], rows: dict[str, dict[str, Any]]) -> None:
        self.path, self.order, self.rows = path, order, rows

    def set(self, job_id: str, row: dict[str, Any], announce: bool = True) -> None:
        self.rows[job_id] = row
        self.write()
        if announce:
            print(f"{job_id}: {row['status']} {row.get('output') or row.get('error', '')} "
                  f"({row.get('seconds', '')} s, {row.get('worker', '')})", file=sys.stderr)
            if row.get("warnings"):
                print(f"{job_id}: warning: {row['warnings']}", file=sys.stderr)

    def write(self) -> None:
        write_results(self.path, [self.rows[i] for i in self.order])

    def in_order(self) -> list[dict[str, Any]]:
        return [self.rows[i] for i in self.order]


class BatchRun(NamedTuple):
    """What :func:`run_batch` did: result rows in job order, the table's path, model loads / reuses."""

    rows: list[dict[str, Any]]
    results_path: Path
    model_cache: dict[str, int]


def run_batch(args: argparse.Namespace) -> BatchRun:
    """Run every job (here, on a ComfyUI server, or on Ray) and keep the results table."""
    jobs_path = Path(args.jobs)
    workflow = headless.load_workflow(args.workflow)
    jobs = read_jobs(jobs_path)
    mapping = {}
    for item in args.map:
        col, sep, key = item.partition("=")
        if not sep or "." not in key:
            raise BatchError(f"--map expects COLUMN=NODE.INPUT, got {item!r}")
        mapping[col.strip()] = key.strip()
    if args.ray is not None and args.server:
        raise BatchError("--ray and --server are two ways to run the jobs; pick one")
    cache_size = model_cache_size(workflow, args.model_cache)
    out_root = Path(args.out).resolve()
    results_path = Path(args.results).resolve() if args.results else out_root / "results.csv"
    if out_root.exists() and not out_root.is_dir():
        raise BatchError(f"--out {args.out} is a file; --out is the folder the jobs' outputs go to")
    if results_path.is_dir():
        raise BatchError(f"--results {results_path} is a folder; give a .csv or .jsonl file name")
    # every --map, column and row is checked before the first job runs and before anything is written
    columns = job_checks.job_columns(jobs)
    job_checks.check_mapping(mapping, columns, jobs_path)
    runner: Any = None
    if args.server:
        runner, worker = ServerRunner(args.server, args.timeout), f"server {args.server}"
        declared = job_checks.server_inputs(args.server)
    else:
        job_checks.bootstrap_for_checks(args)
        declared = headless.node_inputs
    job_checks.check_inputs(workflow, mapping, columns, declared)
    previous = read_results(results_path)
    plans = [(row, *job_overrides(row, workflow, mapping, jobs_path.parent.resolve())) for row in jobs]

    rows: dict[str, dict[str, Any]] = {r["id"]: previous.get(r["id"], {"id": r["id"], "status": "pending"}) for r in jobs}
    table = ResultsTable(results_path, [r["id"] for r in jobs], rows)
    todo = []
    for row, overrides, files in plans:
        job_id = row["id"]
        if not args.rerun and is_finished(previous.get(job_id)):
            rows[job_id] = {**previous[job_id], "status": "skipped"}
            print(f"{job_id}: skipped (finished: {previous[job_id]['output']})", file=sys.stderr)
            continue
        todo.append((job_id, overrides, files))
    if not args.server:  # the server validates each job when it is queued; here every job is checked first
        job_checks.validate_jobs(workflow, todo, args.input_dir)
    if args.ray is not None:
        from . import ray_batch

        stats = ray_batch.run_on_ray(args, workflow, todo, out_root, table, cache_size) if todo else {}
        table.write()
        return BatchRun(table.in_order(), results_path, stats)

    if not args.server:
        prepare_process(args.torch_threads, cache_size)
        runner, worker = InProcessRunner(args), worker_label()
    with SigintInterrupts() as ctrl_c:
        for job_id, overrides, files in todo:
            if ctrl_c.requested:
                raise KeyboardInterrupt
            attempts = previous_attempts(previous.get(job_id)) + 1
            table.set(job_id, {"id": job_id, "status": "running", "worker": worker, "attempts": attempts},
                      announce=False)
            t0 = time.perf_counter()
            base = {"id": job_id, "worker": worker, "attempts": attempts,
                    "resumed_from": "" if args.server else saved_progress(workflow, overrides, out_root / job_id)}
            if not args.server:
                discard_previous_outputs(out_root / job_id)
            try:
                output, warned = runner.run(workflow, overrides, files, out_root / job_id)
                row = {**base, "status": "ok", "output": output, "seconds": round(time.perf_counter() - t0, 2),
                       "error": "", "warnings": warned}
            except Exception as e:  # noqa: BLE001 - every failure becomes a row; the batch goes on
                row = {**base, "status": "error", "output": "", "seconds": round(time.perf_counter() - t0, 2),
                       "error": error_line(e)}
                if ctrl_c.requested:  # the job stopped because of Ctrl-C: it resumes on the next run
                    row.update(status="interrupted", error="interrupted")
            except KeyboardInterrupt:
                table.set(job_id, {**base, "status": "interrupted", "output": "",
                                   "seconds": round(time.perf_counter() - t0, 2), "error": "interrupted"},
                          announce=False)
                raise
            table.set(job_id, row)  # a job that finished as Ctrl-C came is recorded as the success it is
            if ctrl_c.requested:
                raise KeyboardInterrupt
            if row["status"] == "error" and args.stop_on_error:
                break
    table.write()
    stats: dict[str, int] = {}
    if not args.server:
        from magicinfinite_core.weights.model_cache import model_cache

        stats = model_cache().stats()
        print_cache_summary(1, stats)
    return BatchRun(table.in_order(), results_path, stats)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0: every job ok or skipped; 1: some job failed; 2: bad arguments / jobs file; 130: Ctrl-C."""
    import logging

    from magicinfinite_core.errors import MagicInfiniteError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL, format="%(message)s")
    try:
        rows, results_path, _ = run_batch(args)
    except (BatchError, headless.HeadlessError, MagicInfiniteError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    failed = [r for r in rows if r["status"] not in FINISHED]
    print(f"{len(rows) - len(failed)}/{len(rows)} jobs finished; results: {results_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
