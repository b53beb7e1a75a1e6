"""Base sampler vs the 4-step distilled generator on the same input: wall time and speed-up (JSON).

    python bench/distill_speed.py --base BUNDLE --generator OUT/generator.safetensors
    python bench/distill_speed.py --base BUNDLE --generator OUT/bundle --seconds 10 --require 20

Both runs go through `magicinfinite_core.pipeline.generate` (sliding windows, streamed decode, mp4),
the base one with `--steps` Euler steps and multi-condition CFG (two-fold above the boundary,
three-fold below, all passes batched), the distilled one with the 4-step list and no CFG. The input
is a portrait image and a voice file, or (default) a seeded synthetic portrait and a `--seconds`
long synthetic voice-like tone, so the two runs see exactly the same input. The speed-up is reported
for the denoising loop (`sample_s`, what distillation changes) and for the whole call (`wall_s`,
incl. the VAE decode both share). The paper's claim (§3.4): about 20x.
The side-by-side evaluation table (lip sync, identity) needs the evaluation module; not done here.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from magicinfinite_core.checkpoints import load_dit
from magicinfinite_core.guidance import CFGConfig
from magicinfinite_core.pipeline import BUNDLE_FILE, generate, load_bundle


def synthetic_input(
    seconds: float, size: tuple[int, int], seed: int
) -> tuple[np.ndarray, tuple[np.ndarray, int]]:
    """A seeded portrait-like image and a syllable-modulated tone (speech-like envelope)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([0.5 + 0.3 * np.sin(6 * xx + c) * np.cos(5 * yy - c) for c in rng.uniform(0, 3, 3)], -1)
    face = ((xx - 0.5) ** 2 + (yy - 0.45) ** 2) < 0.06
    img[face] = [0.85, 0.7, 0.6]
    sr = 16000
    t = np.arange(int(seconds * sr)) / sr
    envelope = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)), 0, None) ** 2
    voice = 0.3 * envelope * np.sin(2 * np.pi * (140 + 30 * np.sin(2 * np.pi * 0.5 * t)) * t)
    return (img * 255).clip(0, 255).astype(np.uint8), (voice.astype(np.float32)[None], sr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="base model bundle folder")
    ap.add_argument(
        "--generator", required=True, help="distilled DiT .safetensors, or a distilled bundle folder"
    )
    ap.add_argument("--portrait", default=None, help="portrait image (default: synthetic)")
    ap.add_argument("--audio", default=None, help="voice file (default: synthetic, --seconds long)")
    ap.add_argument("--prompt", default="a person talks calmly, looking at the camera")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--audio-scale", type=float, default=CFGConfig().audio_scale)
    ap.add_argument("--text-scale", type=float, default=CFGConfig().text_scale)
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="folder for the two videos (default: a temp folder)")
    ap.add_argument(
        "--require", type=float, default=0.0, help="exit 1 if the sampling speed-up is below this"
    )
    a = ap.parse_args(argv)

    base = load_bundle(a.base, a.device or "cpu")
    gen_path = Path(a.generator)
    if (gen_path / BUNDLE_FILE).is_file():
        distilled = load_bundle(gen_path, a.device or "cpu")
        spec = json.loads((gen_path / BUNDLE_FILE).read_text()).get("distilled", {})
    else:
        distilled = load_bundle(a.base, a.device or "cpu")
        distilled.dit = load_dit(gen_path, device=a.device or "cpu").eval()
        distilled._fingerprint = None
        spec = {}
    timesteps = tuple(spec.get("timesteps", (1000.0, 750.0, 500.0, 250.0)))
    shift = float(spec.get("shift", 7.0))

    portrait, audio = synthetic_input(a.seconds, (base.height, base.width), a.seed)
    portrait = a.portrait or portrait
    audio = a.audio or audio
    out = Path(a.out or tempfile.mkdtemp(prefix="distill_speed_"))
    out.mkdir(parents=True, exist_ok=True)
    cfg = CFGConfig(audio_scale=a.audio_scale, text_scale=a.text_scale)
    with torch.inference_mode():
        # The distilled run goes first and so pays any one-time warm-up: the speed-up is conservative.
        _, rd = generate(
            portrait,
            audio,
            a.prompt,
            model=distilled,
            out=out / "distilled.mp4",
            distilled=True,
            distilled_timesteps=timesteps,
            shift=shift,
            seed=a.seed,
            device=a.device,
        )
        _, rb = generate(
            portrait,
            audio,
            a.prompt,
            model=base,
            out=out / "base.mp4",
            steps=a.steps,
            cfg=cfg,
            shift=shift,
            seed=a.seed,
            device=a.device,
        )
    result = {
        "bench": "distill_speed",
        "seconds": rb.seconds,
        "latent_shape": rb.latent_shape,
        "base": {
            "steps": rb.steps,
            "cfg": "two-fold/three-fold",
            "sample_s": rb.sample_s,
            "wall_s": rb.wall_s,
        },
        "distilled": {"steps": rd.steps, "cfg": "none", "sample_s": rd.sample_s, "wall_s": rd.wall_s},
        "speedup_sampling": rb.sample_s / rd.sample_s,
        "speedup_total": rb.wall_s / rd.wall_s,
        "videos": [rb.path, rd.path],
        "device": str(a.device or ("cuda" if torch.cuda.is_available() else "cpu")),
        "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))
    if a.require and result["speedup_sampling"] < a.require:
        print(f"sampling speed-up {result['speedup_sampling']:.1f}x is below {a.require}x", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
