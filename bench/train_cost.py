"""ESTIMATE of the training cost of the 13B DiT: GPU-hours per 1,000 clips, from the analytic FLOPs.

    python bench/train_cost.py [--frames 129] [--size 544] [--mfu 0.4] [--peak-tflops 989] [--clips 1000]

Prints JSON. Nothing is measured and nothing runs on a GPU: the DiT forward FLOPs of one clip come
from `magicinfinite_core.models.flops` (the counter `bench/gpu_check.py` reports MFU with, checked against
torch's FlopCounterMode in tests/test_gpu_check.py), a training step costs forward + backward
(about 3x the forward; 4x with gradient checkpointing, which runs each block's forward again), and
the GPU delivers `mfu` of its dense bf16 peak (default: 40 % of an H100 SXM's 989 TFLOP/s, an
assumption, not a measurement). One clip = one training sample of all its frames (129 frames at
544x544 = 33 latent frames of 34x34 tokens) with the text stream of gpu_check (256 prompt + 576
image tokens) and one speaker. Not included: preprocessing (VAE / text / audio encoding, once per
clip), the held-out evaluation, data loading, checkpoint writes, FSDP communication not hidden
behind compute. Costs are per pass over the clips (an epoch); a run makes as many passes as its
steps x batch x GPUs / clips.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/train_cost.py` from anywhere
    sys.path.insert(0, str(ROOT))

from magicinfinite_core.config import dit_preset, latent_frames  # noqa: E402
from magicinfinite_core.models.flops import ForwardShape, dit_forward_flops  # noqa: E402

TEXT_TOKENS, IMAGE_TOKENS = 256, 576  # as bench/gpu_check.py: LLaVA prompt tokens + portrait tokens
H100_BF16_DENSE_TFLOPS = 989.0
BACKWARD_FACTOR = 3.0  # forward + backward (the backward ~ 2 forwards)
CHECKPOINTING_FACTOR = 4.0  # ... + the recomputed forward of gradient checkpointing


def estimate(frames: int = 129, size: int = 544, mfu: float = 0.4, peak_tflops: float = H100_BF16_DENSE_TFLOPS,
             clips: int = 1000, preset: str = "hunyuan-13b") -> dict:
    """The estimate as a dict (see the module doc for what it includes)."""
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu must be in (0, 1], got {mfu}")
    if size % 16:
        raise ValueError(f"size must be a multiple of 16 px (8x VAE, 2x patch), got {size}")
    cfg = dit_preset(preset)
    t = latent_frames(frames)
    shape = ForwardShape.for_window(cfg, (t, size // 8, size // 8), TEXT_TOKENS + IMAGE_TOKENS, speakers=1)
    fwd = dit_forward_flops(cfg, shape)
    rate = peak_tflops * 1e12 * mfu

    def hours(factor: float) -> float:
        return clips * factor * fwd["total"] / rate / 3600.0

    return {
        "label": "ESTIMATE from analytic FLOPs at an assumed MFU, not a measurement",
        "model": preset, "frames": frames, "size_px": size, "latent_frames": t,
        "video_tokens": shape.video_tokens, "text_stream_tokens": shape.text_tokens,
        "forward_pflop_per_clip": round(fwd["total"] / 1e15, 4),
        "attention_share": round((fwd["double_attention"] + fwd["single_attention"] + fwd["audio_attention"])
                                 / fwd["total"], 3),
        "assumed_mfu": mfu, "peak_tflops_bf16_dense": peak_tflops,
        "train_step_factor": BACKWARD_FACTOR,
        "gpu_s_per_clip": round(BACKWARD_FACTOR * fwd["total"] / rate, 2),
        "clips": clips,
        "gpu_hours": round(hours(BACKWARD_FACTOR), 2),
        "gpu_hours_with_gradient_checkpointing": round(hours(CHECKPOINTING_FACTOR), 2),
        "not_included": "preprocessing (VAE/text/audio encoding), evaluation, data loading, checkpoints, "
                        "exposed FSDP communication",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/train_cost.py", description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=129, help="video frames per training clip")
    p.add_argument("--size", type=int, default=544, help="square frame size in px (multiple of 16)")
    p.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOP utilisation (0-1]")
    p.add_argument("--peak-tflops", type=float, default=H100_BF16_DENSE_TFLOPS,
                   help="GPU dense bf16 peak (H100 SXM 989)")
    p.add_argument("--clips", type=int, default=1000)
    p.add_argument("--preset", default="hunyuan-13b")
    a = p.parse_args(argv)
    try:
        res = estimate(a.frames, a.size, a.mfu, a.peak_tflops, a.clips, a.preset)
    except (ValueError, KeyError) as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
