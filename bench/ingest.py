"""Ingestion throughput on one CPU core: clips per minute for 256x256 and 1280x720 inputs (prints JSON).

Usage: OMP_NUM_THREADS=1 python bench/ingest.py [--seconds 8] [--frames 33] [--size 256] [--repeats 1]

Input: a real talking-head video made here (an animated photograph of the world with espeak-ng speech,
25 fps, H.264 + AAC) scaled to each input size. Each source runs ``ingest_process.ingest_source``
in this process (what one Ray task does), so the numbers are per core; a cluster multiplies them by
its cores (the tasks share nothing). Reported per input size:

* ``clips_per_min_core``: accepted clips / minute of the whole pipeline (wall time, after one warm-up
  run); ``clips_per_cpu_min`` the same per minute of this process's CPU time (robust on a busy box);
* ``decode_face_tracking_clips_per_min_core``: the same counting only decoding + face detection on
  every frame (the pass every source needs, accepted or not);
* ``share``: each stage's share of the time (``ingest_process.STAGES``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import ingest_fixtures as fx  # noqa: E402
from training.data.ingest_config import IngestConfig  # noqa: E402
from training.data.ingest_process import STAGES, ingest_source  # noqa: E402
from training.data.ingest_sources import Source  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each input video")
    ap.add_argument("--frames", type=int, default=33, help="frames per clip")
    ap.add_argument("--size", type=int, default=256, help="output bucket base")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    n = int(round(args.seconds * 25))
    clip = fx.world_clip(21, n)
    results = {}
    try:
        for label, wh in (("256x256", (256, 256)), ("1280x720", (1280, 720))):
            frames, _ = fx.place(clip.frames, wh)
            src = fx.encode(tmp / f"in_{label}.mp4", frames, 25, clip.audio)
            cfg = IngestConfig(frames=args.frames, size=args.size)
            ingest_source(Source(str(src)), tmp / f"warm_{label}", cfg)  # imports, model graphs, codecs
            tot = {k: 0.0 for k in STAGES}
            clips, wall, cpu = 0, 0.0, 0.0
            for r in range(args.repeats):
                out = tmp / f"out_{label}_{r}"
                t0, c0 = time.perf_counter(), time.process_time()
                rec = ingest_source(Source(str(src)), out, cfg)
                wall += time.perf_counter() - t0
                cpu += time.process_time() - c0
                clips += len(rec["clips"])
                for k, v in rec["timings"].items():
                    tot[k] += v
                shutil.rmtree(out)
            scan = tot["decode"] + tot["face_detect"]
            results[label] = {
                "input_seconds": args.seconds, "clips": clips // args.repeats,
                "rejects": len(rec["rejects"]), "bucket": rec["clips"][0]["bucket"] if rec["clips"] else None,
                "wall_s": round(wall / args.repeats, 3), "cpu_s": round(cpu / args.repeats, 3),
                "clips_per_min_core": round(60 * clips / wall, 1),
                "clips_per_cpu_min": round(60 * clips / cpu, 1),
                "decode_face_tracking_clips_per_min_core": round(60 * clips / scan, 1) if scan else None,
                "share": {k: round(v / wall, 3) for k, v in tot.items()},
                "other_share": round(1 - sum(tot.values()) / wall, 3),
            }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"frames_per_clip": args.frames, "bucket_base": args.size, "threads": 1,
                      "results": results, "numpy": np.__version__}, indent=1))


if __name__ == "__main__":
    main()
