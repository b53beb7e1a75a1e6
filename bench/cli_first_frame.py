"""Command -> first frame of `magicinfinite generate`, with and without the face prefetch, side by side.

    python bench/cli_first_frame.py --runs 5 --out bench/results/cli_first_frame.json

Each run is a new process, as a user types the command (the 4-step demo, a 512 px portrait, 4 s of a
held-out voice, streamed); the two settings alternate so a busy machine slows both alike. Prints JSON:
per setting every run's command -> first frame and its median, and the ratio of the medians. The
target (issue 26) is <= 3 s on 2 CPU cores; run it on a quiet machine (`uptime`'s load is in the JSON).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _inputs(folder: Path, seconds: float) -> tuple[Path, Path]:
    from PIL import Image
    from scipy.io import wavfile

    from training.eval.real_photos import SAMPLE_RATE, heldout_speech

    photo = ROOT / "training" / "data" / "photo_assets" / "luispedro.jpg"
    im = Image.open(photo).convert("RGB")
    s = 512 / max(im.size)
    portrait = folder / "portrait.png"
    im.resize((round(im.size[0] * s), round(im.size[1] * s)), Image.LANCZOS).save(portrait)
    wav, _ = heldout_speech(seconds, 0)
    audio = folder / "voice.wav"
    wavfile.write(audio, SAMPLE_RATE, (np.clip(wav, -1, 1) * 32767).astype(np.int16))
    return portrait, audio


def _run(portrait: Path, audio: Path, out: Path, prefetch: bool, threads: int) -> float:
    env = {**os.environ, "MAGICINFINITE_FACE_PREFETCH": "1" if prefetch else "0", "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "runner.cli", "generate", "--portrait", str(portrait), "--audio", str(audio),
           "--prompt", "a person talking with a still head", "--out", str(out), "--distilled", "--quiet", "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=True)
    return float(json.loads(res.stdout)["first_frame_since_process_s"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per setting (alternating)")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the command (a user's default)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        portrait, audio = _inputs(Path(tmp), a.seconds)
        _run(portrait, audio, Path(tmp) / "warm.mp4", True, a.threads)  # file caches warm, not timed
        times: dict[str, list[float]] = {"prefetch": [], "no_prefetch": []}
        for i in range(a.runs):
            for name in (("prefetch", "no_prefetch") if i % 2 == 0 else ("no_prefetch", "prefetch")):
                times[name].append(_run(portrait, audio, Path(tmp) / f"{name}{i}.mp4", name == "prefetch", a.threads))
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {"command_to_first_frame_s": times, "median_s": med, "ratio_prefetch_over_none": med["prefetch"] / med["no_prefetch"],
           "target_s": 3.0, "load_average": os.getloadavg(), "threads": a.threads, "runs": a.runs}
    text = json.dumps(res, indent=1)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
