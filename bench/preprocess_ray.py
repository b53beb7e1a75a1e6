"""Preprocessing on Ray Data, local mode: wall time and clips/s with 1 and with N encoder workers,
and whether the two caches are byte-identical.

    python bench/preprocess_ray.py [--clips 8] [--frames 17] [--size 32] [--workers 2] [--threads 1]

Prints JSON. It builds a small procedural world (espeak-ng speech) and a random causal VAE in a
temporary folder, starts one local Ray with workers + 1 CPUs, warms its worker processes up on a
few clips, and caches the same clips twice (the encoder actors load the VAE, MiniLM and the mel
extractor inside each timed run, as a real run does).
On a shared 2-core machine the speed-up says little; the equality check is the point.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/preprocess_ray.py` from anywhere
    sys.path.insert(0, str(ROOT))


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/preprocess_ray.py", description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    import torch

    from magicinfinite_core.config import VAEConfig
    from magicinfinite_core.distributed.ray_runtime import init_ray
    from magicinfinite_core.media.autoencoders import save_autoencoder
    from magicinfinite_core.media.vae import VideoVAE
    from training.data.clip import make_clip, save_clip
    from training.data.render import WorldConfig
    from training.data.speech import espeak_available
    from training.preprocess import preprocess

    if not espeak_available():
        print(f"{p.prog}: error: espeak-ng is needed to build the clips (apt-get install espeak-ng)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        vae = save_autoencoder(root / "vae.safetensors", VideoVAE(VAEConfig(spatial_compression_ratio=4)))
        for i in range(a.clips):
            save_clip(make_clip(i, "train", a.frames, WorldConfig(a.size, a.size, 0.3, 0.4, 1, 0.0)),
                      root / "data" / f"c{i:03d}")
        t0 = time.perf_counter()
        ray = init_ray(num_cpus=a.workers + 1)
        start_s = time.perf_counter() - t0
        runs = {}
        try:
            # warm-up (not timed): Ray's worker processes import torch once, then are reused
            preprocess([root / "data"], vae, root / "warm", workers=a.workers, threads=a.threads, log_every=0,
                       limit=a.workers)
            for w in sorted({1, a.workers}):
                t = time.perf_counter()
                preprocess([root / "data"], vae, root / f"cache{w}", workers=w, threads=a.threads, log_every=0)
                s = time.perf_counter() - t
                runs[w] = {"wall_s": round(s, 2), "clips_per_s": round(a.clips / s, 3)}
        finally:
            ray.shutdown()
        same = _hashes(root / "cache1") == _hashes(root / f"cache{a.workers}")
    print(json.dumps({"clips": a.clips, "frames": a.frames, "size": a.size, "threads_per_worker": a.threads,
                      "ray_start_s": round(start_s, 2), "runs": {f"workers_{w}": r for w, r in runs.items()},
                      "byte_identical": same}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
