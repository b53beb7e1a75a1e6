"""Ingest real talking-head footage into training clips (the clip format of ``docs/world.md``).

    python -m training.data.ingest SRC... --out DATA [--frames 33] [--size 256] [--workers N]

SRC: video files, folders (searched recursively) or CSV / JSONL lists (``ingest_sources``). Each
source is decoded onto the 25 fps / 16 kHz timeline, split at shot cuts into clips of ``--frames``
frames, filtered (faces, motion, speech; every reject has a reason), cropped around the face into a
resolution bucket and written as a clip folder ``DATA/<source>-<hash>_<start frame>/`` that
``training/preprocess.py`` reads unchanged. Steps and thresholds: ``ingest_process``.

Outputs: ``DATA/manifest.jsonl`` (one row per clip: the clip manifest's keys plus ``source``,
``start_s``, ``end_s``, ``caption_source``, ``bucket``; sorted by path), ``DATA/rejects.jsonl``
(source, segment, reason, measured values; sorted), ``DATA/ingest.json`` (the settings) and
``DATA/.ingest/<source>.json`` (one record per finished source).

Scale-out: the sources run as one Ray Data pipeline (``ray.data.from_items(...).map(...)``, one CPU
task per source) on a local Ray with ``--workers`` CPUs, or unchanged on a cluster when
``RAY_ADDRESS`` (or ``--address``) names one. Resumable: a source whose record exists is skipped,
clip folders and records are written atomically, half-written folders of a killed run are removed, so
rerunning the same command after a crash (even SIGKILL) ends with every clip exactly once. The
result does not depend on the worker count or the order tasks finish in.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from training.data.ingest_config import IngestConfig
from training.data.ingest_sources import Source, collect_sources
from training.data.jsonl import write_text_atomic

RECORDS = ".ingest"


def record_path(out: Path, key: str) -> Path:
    """Where the finished-source record of ``key`` lives."""
    return out / RECORDS / f"{key}.json"


def _source_from_dict(d: dict) -> Source:
    boxes = tuple(tuple(b) for b in d["boxes"]) if d.get("boxes") else None
    return Source(d["path"], d.get("caption"), d.get("start"), d.get("end"), boxes, int(d.get("speaker") or 0))


_CAPTIONERS: dict[str, object] = {}  # per worker process: Ray reuses workers, a model loads once


def _captioner(folder: str | None):
    if not folder:
        return None
    if folder not in _CAPTIONERS:
        from training.data.ingest_captions import LocalCaptioner

        _CAPTIONERS[folder] = LocalCaptioner(folder)
    return _CAPTIONERS[folder]


def ingest_row(row: dict, out: str, cfg: dict) -> dict:
    """The Ray Data map function: ingest one source, write its record; returns a small status row."""
    import cv2

    from training.data.ingest_process import ingest_source

    cv2.setNumThreads(1)
    config = IngestConfig(**cfg)
    src = _source_from_dict(json.loads(row["source"]))
    t0 = time.time()
    try:
        record = ingest_source(src, out, config, _captioner(config.captioner))
    except Exception as e:  # one bad file must not stop a million-clip run; it is a reject with a reason
        from training.data.ingest_process import _reject

        record = {"source": src.to_dict(), "key": src.key, "clips": [],
                  "rejects": [_reject(src, None, "error", f"{type(e).__name__}: {e}",
                                      trace=traceback.format_exc(limit=3)[-800:])]}
    record["seconds"] = round(time.time() - t0, 3)
    write_text_atomic(record_path(Path(out), src.key), json.dumps(record, sort_keys=True))
    return {"key": src.key, "clips": len(record["clips"]), "rejects": len(record["rejects"])}


def _check_settings(out: Path, cfg: IngestConfig) -> None:
    path = out / "ingest.json"
    want = json.loads(json.dumps(cfg.to_dict()))
    if path.is_file():
        have = json.loads(path.read_text())
        if have != want:
            diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
            raise ValueError(f"{out} holds clips ingested with other settings {diff}; use a new --out folder")
    else:
        write_text_atomic(path, json.dumps(want, indent=1, sort_keys=True))


def _clean_partial(out: Path) -> int:
    """Remove temporary folders / files a killed run left (never finished clips)."""
    n = 0
    for d in (out, out / RECORDS):
        for p in d.iterdir():
            if ".tmp" in p.name:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
                n += 1
    return n


@dataclass
class IngestResult:
    """What a run produced (also in manifest.jsonl / rejects.jsonl)."""

    manifest: Path
    rejects: Path
    clips: int
    reject_reasons: dict[str, int]
    processed: int  # sources run in this invocation (the rest were done already)
    seconds: float


def write_outputs(out: Path, sources: list[Source]) -> tuple[Path, Path, int, dict[str, int]]:
    """manifest.jsonl and rejects.jsonl from the records of ``sources``, sorted; removes clip folders of
    these sources that no record lists (left by a run with a crash between clip and record)."""
    clips, rejects = [], []
    for s in sources:
        rec = json.loads(record_path(out, s.key).read_text())
        clips += rec["clips"]
        rejects += rec["rejects"]
    clips.sort(key=lambda r: r["path"])
    rejects.sort(key=lambda r: (r["source_key"], (r["segment"] or {}).get("frames", [-1])[0], r["reason"]))
    listed = {r["path"] for r in clips}
    keys = tuple(f"{s.key}_" for s in sources)
    for p in out.iterdir():
        if p.is_dir() and p.name.startswith(keys) and p.name not in listed:
            shutil.rmtree(p)
    man, rej = out / "manifest.jsonl", out / "rejects.jsonl"
    write_text_atomic(man, "".join(json.dumps(r, sort_keys=True) + "\n" for r in clips))
    write_text_atomic(rej, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rejects))
    reasons: dict[str, int] = {}
    for r in rejects:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    return man, rej, len(clips), dict(sorted(reasons.items()))


def ingest(srcs: list[str], out: str | Path, cfg: IngestConfig | None = None, *, workers: int | None = None,
           address: str | None = None, progress: bool = True) -> IngestResult:
    """Ingest the sources into ``out`` on Ray Data (module docstring)."""
    from magicinfinite_core.distributed.ray_runtime import init_ray

    t0 = time.time()
    cfg = (cfg or IngestConfig()).check()
    if cfg.captioner and not (Path(cfg.captioner) / "config.json").is_file():
        raise FileNotFoundError(f"--captioner {cfg.captioner}: no config.json there; give the folder of a "
                                "transformers image-to-text model (nothing is downloaded)")
    sources = collect_sources([str(s) for s in srcs])
    out = Path(out)
    (out / RECORDS).mkdir(parents=True, exist_ok=True)
    _check_settings(out, cfg)
    _clean_partial(out)
    todo = [s for s in sources if not record_path(out, s.key).is_file()]
    if todo:
        ray = init_ray(address, num_cpus=workers)
        ray.data.DataContext.get_current().enable_progress_bars = progress
        items = [{"key": s.key, "source": json.dumps(s.to_dict())} for s in todo]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        compute = ray.data.TaskPoolStrategy(size=workers) if workers else None
        ds = ds.map(ingest_row, fn_kwargs={"out": str(out.resolve()), "cfg": cfg.to_dict()}, num_cpus=1,
                    compute=compute)
        for i, row in enumerate(ds.iter_rows(), 1):
            if progress:
                print(f"[{i}/{len(todo)}] {row['key']}: {row['clips']} clips, {row['rejects']} rejects", flush=True)
    man, rej, n, reasons = write_outputs(out, sources)
    return IngestResult(man, rej, n, reasons, len(todo), round(time.time() - t0, 2))


def build_parser() -> argparse.ArgumentParser:
    d = IngestConfig()
    p = argparse.ArgumentParser(prog="python -m training.data.ingest", description=__doc__.split("\n")[0])
    p.add_argument("src", nargs="+", help="video files, folders, or .csv / .jsonl lists")
    p.add_argument("--out", required=True, help="dataset folder (created; a rerun resumes)")
    p.add_argument("--frames", type=int, default=d.frames, help="frames per clip at 25 fps (129 full scale)")
    p.add_argument("--stride", type=int, default=None, help="frames between clip starts (default: --frames)")
    p.add_argument("--size", type=int, default=d.size, help="resolution bucket base (area ~ size^2)")
    p.add_argument("--bucket-step", type=int, default=d.bucket_step)
    p.add_argument("--max-ratio", type=float, default=d.max_ratio)
    p.add_argument("--aspect", default=d.aspect, help="source, square or W:H")
    p.add_argument("--context", type=float, default=d.context, help="crop side / face side")
    p.add_argument("--min-face-px", type=float, default=d.min_face_px)
    p.add_argument("--static-motion", type=float, default=d.static_motion)
    p.add_argument("--min-speech-share", type=float, default=d.min_speech_share)
    p.add_argument("--split", choices=("train", "heldout"), default=d.split)
    p.add_argument("--heldout-fraction", type=float, default=d.heldout_fraction,
                   help="share of source files that go to the held-out split (by hash of file and seed)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--crf", type=int, default=d.crf,
                   help="video.mp4 H.264 quality (0 = lossless, ~7x larger)")
    p.add_argument("--captioner", default=None, help="local folder of a transformers image-to-text model")
    p.add_argument("--workers", type=int, default=None, help="local Ray CPUs (default: all); ignored on a cluster")
    p.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else local)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see module docstring)."""
    a = build_parser().parse_args(argv)
    from magicinfinite_core.distributed.ray_runtime import RayUnavailableError

    try:
        cfg = IngestConfig(
            frames=a.frames, stride=a.stride or a.frames, size=a.size, bucket_step=a.bucket_step,
            max_ratio=a.max_ratio, aspect=a.aspect, context=a.context, min_face_px=a.min_face_px,
            static_motion=a.static_motion, min_speech_share=a.min_speech_share, split=a.split,
            heldout_fraction=a.heldout_fraction, seed=a.seed, captioner=a.captioner, crf=a.crf,
        ).check()
        res = ingest(a.src, a.out, cfg, workers=a.workers, address=a.address, progress=not a.no_progress)
    except (ValueError, FileNotFoundError, RayUnavailableError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    why = ", ".join(f"{k} {v}" for k, v in res.reject_reasons.items()) or "none"
    print(f"manifest: {res.manifest} ({res.clips} clips); rejects: {res.rejects} ({why}); "
          f"{res.processed} sources processed in {res.seconds} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
