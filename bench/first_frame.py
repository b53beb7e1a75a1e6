"""Command -> first frame of `magicinfinite generate`, this checkout against another commit, side by side.

Each run is a new process, as a user types it (the 4-step default, a held-out photograph at its own size,
held-out speech); the two checkouts alternate `--repeats` times, so the machine's drift hits both alike.
Prints one JSON object: per checkout the runs and medians of

* ``first_frame_since_command_s``: process start -> first frame handed to the muxer (imports, model load,
  audio features, face detection, the first window and its decode included);
* ``first_frame_after_load_s``: the same from the sampler's start;
* ``video_s_per_wall_s``: video seconds per wall second of sampling + decode + mux;

and ``ratios`` (this checkout's median over the baseline's).

Usage: OMP_NUM_THREADS=1 python bench/first_frame.py --baseline 3f5974f [--repeats 5] [--seconds 6] [--side 1024]
(`--side`: the photograph resized so its longer side is that many px first; the video has its size.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MEASURES = {"first_frame_since_command_s": "first_frame_since_process_s", "first_frame_after_load_s": "first_frame_s",
            "video_s_per_wall_s": "realtime_factor"}


def run_cli(checkout: Path, portrait: Path, audio: Path, prompt: str, out: Path, threads: int) -> dict:
    """One `python -m runner.cli generate` in `checkout` (its own packages come first on the path)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "runner.cli", "generate", "--portrait", str(portrait), "--audio", str(audio),
           "--prompt", prompt, "--out", str(out), "--quiet", "--json"]
    done = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{checkout}: {(done.stderr.strip().splitlines() or ['failed'])[-1]}")
    report = json.loads(done.stdout)
    return {name: report[key] for name, key in MEASURES.items()}


def resized(photo: Path, side: int, work: Path) -> Path:
    from PIL import Image

    img = Image.open(photo).convert("RGB")
    s = side / max(img.size)
    out = work / f"{photo.stem}_{side}.png"
    img.resize((round(img.width * s), round(img.height * s)), Image.LANCZOS).save(out)
    return out


def main(argv: list[str] | None = None) -> int:
    from scipy.io import wavfile

    from training.eval import real_photos as rp

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="a commit to compare against (checked out in a temporary worktree)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--portrait", default=rp.HALF_LENGTH, help="a held-out photograph's name (training.data.photos)")
    ap.add_argument("--side", type=int, default=None, help="resize the photograph to this longer side first")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="first_frame_") as tmp:
        work = Path(tmp)
        photo = rp.heldout_photo(a.portrait, work)
        if a.side:
            photo = resized(photo, a.side, work)
        wav, voice = rp.heldout_speech(a.seconds, 0)
        audio = work / "voice.wav"
        wavfile.write(audio, rp.SAMPLE_RATE, (np.clip(wav, -1, 1) * 32767).astype(np.int16))
        base = work / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base), a.baseline], cwd=REPO, check=True)
        try:
            checkouts = {"this": REPO, "baseline": base}
            runs: dict[str, list[dict]] = {k: [] for k in checkouts}
            for _ in range(a.repeats):
                for name, checkout in checkouts.items():
                    runs[name].append(run_cli(checkout, photo, audio, rp.heldout_prompt(0, "still"),
                                              work / f"{name}.mp4", a.threads))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=REPO, check=False)
    medians = {k: {m: statistics.median(r[m] for r in rs) for m in MEASURES} for k, rs in runs.items()}
    out = {"baseline": a.baseline, "head": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                                        capture_output=True, text=True).stdout.strip(),
           "portrait": a.portrait, "side": a.side, "seconds": a.seconds, "voice": voice["voice"], "repeats": a.repeats,
           "load_avg": os.getloadavg()[0], "median": medians,
           "ratios": {m: medians["this"][m] / medians["baseline"][m] for m in MEASURES}, "runs": runs}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
