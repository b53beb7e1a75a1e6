"""Long-input sampler bench on CPU with the seeded random tiny model (prints JSON).

Usage: python bench/sampler_long.py [--seconds 10 60] [--steps 4] [--size 64] [--out bench_out/]

Each duration runs in its own subprocess (a clean peak RSS): the full generate() path - audio
features, per-window conditions, CFG-batched DiT forward (three-fold CFG, batch 3), sliding-window
sampler, streamed VAE decode, mp4 + AAC mux. Reported per run: video seconds generated per wall
second, peak RSS, and seam scores read back from the mp4: the mean absolute frame-to-frame change
across window boundaries divided by the mean change elsewhere (1.0 = seams invisible in motion
statistics). `seam_last_step` uses the last denoising step's window edges, `seam_all_steps` the edges
of every step, `seam_decode` the streamed decoder's chunk edges.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def _child(seconds: float, steps: int, size: int, out_dir: Path) -> dict:
    import torch

    from magicinfinite_core.config import SamplerConfig
    from magicinfinite_core.generate import generate
    from magicinfinite_core.media.streamed_decode import decode_chunks
    from magicinfinite_core.media.video_io import iter_video_frames, write_wav
    from magicinfinite_core.sampling.guidance import CFGConfig
    from magicinfinite_core.sampling.sampler import step_plans
    from magicinfinite_core.sampling.sliding_window import video_frames_of_latent
    from magicinfinite_core.weights.bundle import random_bundle

    torch.manual_seed(0)
    rate = 16000
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(0)
    syll = (np.sin(2 * np.pi * 3.1 * t) > 0.2).astype(np.float32)  # ~3 syllables/s on/off envelope
    wav = 0.3 * syll * np.sin(2 * np.pi * (150 + 40 * np.sin(2 * np.pi * 0.3 * t)) * t) + 0.005 * rng.standard_normal(t.size)
    out_dir.mkdir(parents=True, exist_ok=True)
    audio = write_wav(out_dir / f"speech_{seconds:g}s.wav", wav.astype(np.float32), rate)
    yy, xx = np.mgrid[0:size, 0:size]
    face = ((yy - size / 2) ** 2 / (0.35 * size) ** 2 + (xx - size / 2) ** 2 / (0.28 * size) ** 2) < 1
    img = np.stack([80 + 120 * face, 60 + 100 * face, 90 + 60 * face], -1).astype(np.uint8)
    bundle = random_bundle(0, height=size, width=size)
    box = [[size * 0.2, size * 0.1, size * 0.8, size * 0.9]]
    out = out_dir / f"long_{seconds:g}s.mp4"
    _, rep = generate(img, audio, "a person talks calmly", model=bundle, out=out, steps=steps,
                      cfg=CFGConfig(audio_scale=4.0, text_scale=3.0), speakers=box, seed=0, device="cpu")
    # seam statistics from the file itself
    prev, change = None, []
    for fr in iter_video_frames(out):
        f = fr.astype(np.float32)
        if prev is not None:
            change.append(float(np.abs(f - prev).mean()))
        prev = f
    change = np.array(change)  # change[i] = |frame i+1 - frame i|
    scfg = SamplerConfig(steps=steps, shift=7.0)
    plans = step_plans(rep.latent_shape[1], scfg, steps)

    def edges(plan) -> set[int]:
        e = set()
        for a, b in zip(plan, plan[1:], strict=False):
            e.add(video_frames_of_latent(b.start)[0])  # the next window starts contributing
            e.add(video_frames_of_latent(a.end - 1)[1])  # the previous window stops contributing
        return e

    def score(frames: set[int]) -> float | None:
        idx = np.array(sorted(f - 1 for f in frames if 1 <= f < rep.frames))
        if idx.size == 0:
            return None
        mask = np.zeros(change.size, bool)
        mask[idx] = True
        return float(change[mask].mean() / max(change[~mask].mean(), 1e-9))

    all_edges = set().union(*(edges(p) for p in plans))
    dec = {video_frames_of_latent(a)[0] for _, a, _ in decode_chunks(rep.latent_shape[1], 8, 2) if a > 0}
    return {
        "audio_seconds": seconds,
        "frames": rep.frames,
        "latent_shape": rep.latent_shape,
        "steps": rep.steps,
        "windows_per_step": sorted(set(rep.windows_per_step)),
        "wall_s": round(rep.wall_s, 2),
        "sample_s": round(rep.sample_s, 2),
        "decode_s": round(rep.decode_s, 2),
        "video_s_per_wall_s": round(rep.seconds / rep.wall_s, 4),
        "peak_rss_mb": round(rep.peak_rss_mb, 1),
        "seam_last_step": score(edges(plans[-1])),
        "seam_all_steps": score(all_edges),
        "seam_decode": score(dec),
        "mean_frame_change": float(change.mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, nargs="+", default=[10.0, 60.0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--out", default=None, help="keep the videos here (default: a temporary folder)")
    ap.add_argument("--child", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(_child(args.child, args.steps, args.size, Path(args.out))))
        return
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="mi_bench_"))
    runs = []
    for s in args.seconds:
        cmd = [sys.executable, __file__, "--child", str(s), "--steps", str(args.steps), "--size", str(args.size),
               "--out", str(out)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit(f"bench child for {s} s failed:\n{res.stderr[-2000:]}")
        runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    result = {"bench": "sampler_long", "device": "cpu", "size": args.size, "steps": args.steps,
              "cfg": "two-fold/three-fold, batched", "runs": runs}
    if len(runs) >= 2:
        base, longest = runs[0], runs[-1]
        ratio = longest["peak_rss_mb"] / base["peak_rss_mb"]
        result["peak_rss_ratio_longest_vs_shortest"] = round(ratio, 3)
        result["peak_rss_within_25pct"] = ratio <= 1.25
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
