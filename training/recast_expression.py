"""Give a fitted motion autoencoder an expression channel: its last residual channel becomes the mouth corners' lift.

    python -m training.recast_expression --vae out/v86/vae.safetensors --out out/v10/motion_ae_expression.safetensors

Why recast rather than add: the latent keeps its width (the same 40 channels), so a DiT trained on the old latent is
fine-tuned as it is, and the residual channel given up is the PCA's smallest, unused at decode since v4 (the demo's
`residual_gain` is 0). The flow and the other residual channels encode exactly as before (tested). The channel's
meaning: `media/expression.py`; its settings: `MotionAutoencoderConfig.expression_*`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from magicinfinite_core.errors import MagicInfiniteError
from magicinfinite_core.media.autoencoders import load_autoencoder, save_autoencoder
from magicinfinite_core.media.motion_autoencoder import MotionAutoencoder


def recast_expression(ae: MotionAutoencoder, scale: float = 50.0) -> MotionAutoencoder:
    """A copy of `ae` whose last residual channel carries the mouth corners' lift (`scale` latent units per face
    height) instead."""
    if not isinstance(ae, MotionAutoencoder):
        raise MagicInfiniteError("only a motion autoencoder can carry an expression channel")
    if ae.cfg.expression_channels or ae.cfg.residual_channels < 1:
        raise MagicInfiniteError(f"this autoencoder has {ae.cfg.expression_channels} expression and "
                                 f"{ae.cfg.residual_channels} residual channels: nothing to recast")
    cfg = replace(ae.cfg, residual_channels=ae.cfg.residual_channels - 1, expression_channels=1, expression_scale=scale)
    out = MotionAutoencoder(cfg)
    out.residual_basis = ae.residual_basis[: cfg.residual_channels].clone()
    return out.eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.recast_expression", description=__doc__.split("\n")[0])
    p.add_argument("--vae", required=True, help="a motion autoencoder .safetensors with its config in the metadata (a "
                   "model folder's vae.safetensors: its decode settings stay in bundle.json)")
    p.add_argument("--out", required=True, help="the .safetensors file to write")
    p.add_argument("--scale", type=float, default=50.0, help="latent units per face height of lift")
    a = p.parse_args(argv)
    out = save_autoencoder(a.out, recast_expression(load_autoencoder(a.vae), a.scale))
    print(f"wrote {out}: {Path(out).stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
