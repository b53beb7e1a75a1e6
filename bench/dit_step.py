"""One denoising step of the tiny DiT on CPU: wall time and peak memory (prints JSON).

Usage: python bench/dit_step.py [--frames 33] [--size 64] [--repeats 5]
The window is one sliding window: 33 video frames = 9 latent frames, with two speakers and
three-fold CFG batched into one forward (batch 3), as the base sampler runs it.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch

from magicinfinite_core.config import dit_preset, latent_frames
from magicinfinite_core.models.dit import MagicInfiniteDiT, concat_image_condition, count_parameters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--size", type=int, default=64, help="frame height and width in pixels")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = dit_preset("tiny")
    a = cfg.audio
    torch.manual_seed(0)
    model = MagicInfiniteDiT(cfg).eval()
    t_lat, hw = latent_frames(args.frames), args.size // 8
    g = torch.Generator().manual_seed(0)
    results = {}
    for batch, label in ((1, "one_pass"), (3, "three_fold_cfg_batched")):
        x = concat_image_condition(
            torch.randn(batch, cfg.out_channels, t_lat, hw, hw, generator=g),
            torch.randn(batch, cfg.out_channels, 1, hw, hw, generator=g),
        )
        inputs = dict(
            timestep=torch.full((batch,), 500.0),
            txt=torch.randn(batch, 24, cfg.text_dim, generator=g),
            txt_mask=None,
            pooled=torch.randn(batch, cfg.pooled_dim, generator=g),
            audio=torch.randn(batch, 2, t_lat, a.frames_per_latent, a.frame_window, a.feature_dim, generator=g),
            speaker_mask=torch.ones(batch, 2, t_lat, hw // 2, hw // 2),
        )
        times = []
        with torch.inference_mode():
            model(x, **inputs)  # warm-up
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                model(x, **inputs)
                times.append(time.perf_counter() - t0)
        results[label] = {"median_s": statistics.median(times), "min_s": min(times), "batch": batch}
    print(
        json.dumps(
            {
                "bench": "dit_step",
                "preset": "tiny",
                "params": count_parameters(model),
                "video_frames": args.frames,
                "latent_frames": t_lat,
                "frame_size": args.size,
                "video_tokens": t_lat * (hw // 2) ** 2,
                "threads": args.threads,
                **results,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "torch": torch.__version__,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
