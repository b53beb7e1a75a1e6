"""Streaming vs sweep on the demo model's 4-step generator: time to first frame, real-time factor, RSS.

    python bench/streaming.py                    # 10 s, 60 s and 600 s of speech, both orders
    python bench/streaming.py --seconds 10 60    # a subset
    python bench/streaming.py --live 30          # live voice through a named pipe: latency

Every (length, order) runs in a fresh process (peak RSS is per process), with the CLI's defaults
(state saved to OUT.state/, face detection on the demo portrait). Prints one JSON object:

* ``first_frame_after_load_s``: model loaded -> first decoded frame (audio features, face detection,
  conditions included; sweep: the first decode chunk after the whole latent is sampled);
* ``first_frame_s``: the same from the start of the sampler (wavefront) / of generate() (sweep);
* ``first_frame_since_process_s``: the process start (imports and model loading included) -> that frame;
* ``realtime_factor``: video seconds per wall second of sampling + decode + mux;
* ``peak_rss_mb``: the process's peak resident memory (VmHWM);
* ``load_avg``: the machine's 1-minute load average before and after (the cores are shared);
* ``ratios``: the longest run over the shortest, per order (first frame, peak RSS).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VOICE = ROOT / "workflows" / "assets" / "voice_long_60s.ogg"
PORTRAIT = ROOT / "workflows" / "assets" / "portrait_one_speaker.jpg"


def make_voice(seconds: float, folder: Path) -> Path:
    """`seconds` of real speech: the 60 s example voice, repeated, as a 16 kHz wav."""
    import numpy as np

    from magicinfinite_core.inputs.audio import load_audio
    from magicinfinite_core.media.video_io import write_wav

    base = load_audio(str(VOICE)).waveform
    n = int(seconds * 16000)
    wav = np.tile(base, -(-n // base.size))[:n]
    return write_wav(folder / f"voice_{int(seconds)}s.wav", wav, 16000)


def one(seconds: float, order: str, folder: Path) -> dict:
    """Runs in the child: load, generate, measure."""
    t0 = time.perf_counter()
    from magicinfinite_core.generate import GenerateOptions, generate
    from magicinfinite_core.streaming import generate_streaming, seconds_since_process_start
    from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR, load_bundle

    import_s = time.perf_counter() - t0
    bundle = load_bundle(DEMO_MODEL_DIR, distilled=True)
    load_s = time.perf_counter() - t0 - import_s
    loaded_at = seconds_since_process_start() or 0.0  # process start -> model ready
    voice = folder / f"voice_{int(seconds)}s.wav"
    out = folder / f"{order}_{int(seconds)}s.mp4"
    opts = GenerateOptions(distilled=True, state_dir=str(out) + ".state")
    if order == "wavefront":
        _, rep = generate_streaming(str(PORTRAIT), str(voice), "", model=bundle, out=out, options=opts)
        res = {"first_frame_s": rep.first_frame_s, "first_frame_since_process_s": rep.first_frame_since_process_s,
               "realtime_factor": rep.realtime_factor, "peak_rss_mb": rep.peak_rss_mb, "frames": rep.frames,
               "peak_in_flight_latent_frames": rep.peak_in_flight_latent_frames}
    else:
        marks: dict[str, float] = {}
        t_run = [0.0]

        def cb(p) -> None:
            if p.phase == "decode" and "first" not in marks:
                marks["first"] = time.perf_counter() - t_run[0]
                marks["since"] = seconds_since_process_start() or 0.0

        t_run[0] = time.perf_counter()
        _, rep = generate(str(PORTRAIT), str(voice), "", model=bundle, out=out, options=opts, callback=cb)
        # the first decoded chunk is written right after the callback; prep (features, faces) is included
        res = {"first_frame_s": marks["first"], "first_frame_since_process_s": marks["since"],
               "realtime_factor": rep.seconds / (rep.sample_s + rep.decode_s), "peak_rss_mb": rep.peak_rss_mb,
               "frames": rep.frames}
    res["first_frame_after_load_s"] = res["first_frame_since_process_s"] - loaded_at
    return {"seconds": seconds, "order": order, "import_s": import_s, "load_s": load_s,
            "model_ready_since_process_s": loaded_at, **res}


def live(seconds: float, folder: Path, window: int, overlap: int) -> dict:
    """Runs in the child: the voice written into a named pipe at real-time rate, generate_live reading it."""
    import threading

    from magicinfinite_core.streaming import generate_live
    from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR, load_bundle

    bundle = load_bundle(DEMO_MODEL_DIR, distilled=True)
    data = (folder / f"voice_{int(seconds)}s.wav").read_bytes()
    fifo = folder / "live.fifo"
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo)

    def feed() -> None:  # 16 kHz 16-bit mono: 3200 bytes = 0.1 s
        with open(fifo, "wb") as f:
            f.write(data[:44])
            t0 = time.perf_counter()
            for k, i in enumerate(range(44, len(data), 3200)):
                f.write(data[i : i + 3200])
                f.flush()
                time.sleep(max(0.0, t0 + 0.1 * (k + 1) - time.perf_counter()))

    threading.Thread(target=feed, daemon=True).start()
    t0 = time.perf_counter()
    _, rep = generate_live(str(PORTRAIT), str(fifo), "", model=bundle, out=folder / "live.mp4", distilled=True,
                           window=window, overlap=overlap)
    return {"seconds": seconds, "order": "live", "window": window, "overlap": overlap,
            "latency": rep.latency, "wall_s": time.perf_counter() - t0, "frames": rep.frames,
            "first_frame_s": rep.first_frame_s, "peak_rss_mb": rep.peak_rss_mb}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, nargs="+", default=[10, 60, 600])
    ap.add_argument("--orders", nargs="+", default=["wavefront", "sweep"], choices=["wavefront", "sweep"])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch/OpenMP threads per run (default 1: on shared cores more threads spin and stall)")
    ap.add_argument("--live", type=float, default=None, metavar="SECONDS",
                    help="instead: live latency, SECONDS of voice fed through a named pipe at real-time rate")
    ap.add_argument("--window", type=int, default=33, help="--live: window frames (default 33)")
    ap.add_argument("--overlap", type=int, default=8, help="--live: overlap frames (default 8)")
    ap.add_argument("--child-live", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--child", nargs=3, metavar=("SECONDS", "ORDER", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one(float(args.child[0]), args.child[1], Path(args.child[2]))))
        return
    if args.child_live:
        print(json.dumps(live(float(args.child_live[0]), Path(args.child_live[1]), int(args.child_live[2]),
                              int(args.child_live[3]))))
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads)}
    if args.live is not None:
        with tempfile.TemporaryDirectory(prefix="mi-bench-live-") as tmp:
            make_voice(args.live, Path(tmp))
            cmd = [sys.executable, __file__, "--child-live", str(args.live), tmp, str(args.window), str(args.overlap)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(done.stderr[-3000:])
            print(json.dumps({"threads_per_run": args.threads, "load_avg": os.getloadavg()[0],
                              **json.loads(done.stdout.strip().splitlines()[-1])}, indent=1))
        return
    runs = []
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="mi-bench-stream-") as tmp:
        for s in args.seconds:
            make_voice(s, Path(tmp))
            for order in args.orders:
                cmd = [sys.executable, __file__, "--child", str(s), order, tmp]
                done = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(done.stderr[-3000:])
                runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(json.dumps(runs[-1]), file=sys.stderr)
    by = {(r["order"], r["seconds"]): r for r in runs}
    ratios = {}
    for order in args.orders:
        lo, hi = by.get((order, min(args.seconds))), by.get((order, max(args.seconds)))
        if lo and hi and lo is not hi:
            ratios[order] = {"first_frame_long_over_short": hi["first_frame_after_load_s"] / lo["first_frame_after_load_s"],
                             "peak_rss_long_over_short": hi["peak_rss_mb"] / lo["peak_rss_mb"]}
    print(json.dumps({"model": "demo 4-step generator (dit_4step), 128x128", "cpus": os.cpu_count(),
                      "threads_per_run": args.threads,
                      "load_avg": [load0, os.getloadavg()[0]], "runs": runs, "ratios": ratios}, indent=1))


if __name__ == "__main__":
    main()
