"""Window-by-window decoding of a long latent with the causal VAE, frames yielded as they come.

The HunyuanVideo VAE is causal in time (left-only temporal padding, causal mid-block attention), so
an output frame depends on its own and earlier latent frames - but its GroupNorms pool statistics
over every frame of the clip being decoded, and its receptive field reaches a few latent frames
back. Decoding disjoint chunks therefore shows a seam. We decode each chunk of `chunk` latent
frames together with `context` latent frames of left context and drop the context's output frames:
every kept frame then sees (nearly) the history it would see in a one-shot decode, and memory is
bounded by chunk + context whatever the video length.

Frame bookkeeping: decoding latents [a0, b) yields 1 + 4*(b - a0 - 1) frames (the first latent frame
alone, as a causal first frame); latent frames [a, b) with a > a0 are the last 4*(b - a) of them.
The stream is trimmed to exactly `num_frames` (the audio length at 25 fps).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import torch

from .sampler import Progress, ProgressCallback
from .sliding_window import TEMPORAL_RATIO, latent_frames

DecodeFn = Callable[[torch.Tensor], torch.Tensor]  # [1, C, t, h, w] -> [1, 3, 1 + 4(t-1), H, W] in [-1, 1]


def decode_chunks(total: int, chunk: int, context: int) -> list[tuple[int, int, int]]:
    """(context_start, start, end) latent ranges; [start, end) tile [0, total) without overlap."""
    if chunk < 1 or context < 1:
        # context 0 cannot work: a chunk's first latent frame decodes as a causal first frame (1 frame, not 4)
        raise ValueError(f"chunk and context must be >= 1 latent frame, got {chunk}, {context}")
    return [(max(0, a - context), a, min(a + chunk, total)) for a in range(0, total, chunk)]


def streamed_decode(
    latent: torch.Tensor,
    decode_fn: DecodeFn,
    *,
    num_frames: int | None = None,
    chunk: int = 8,
    context: int = 2,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    ratio: int = TEMPORAL_RATIO,
    callback: ProgressCallback | None = None,
) -> Iterator[torch.Tensor]:
    """Yield decoded frames [3, n, H, W] (CPU, float32, [-1, 1]) chunk by chunk, `num_frames` in all."""
    total = latent.shape[1]
    full = 1 + ratio * (total - 1)
    num_frames = full if num_frames is None else num_frames
    if latent_frames(num_frames, ratio) != total:
        raise ValueError(f"{num_frames} video frames need {latent_frames(num_frames, ratio)} latent frames, got {total}")
    plan = decode_chunks(total, chunk, context)
    emitted, t0 = 0, time.perf_counter()
    for i, (a0, a, b) in enumerate(plan):
        z = latent[:, a0:b].unsqueeze(0).to(device=device, dtype=dtype)
        with torch.no_grad():
            frames = decode_fn(z)[0]
        expected = 1 + ratio * (b - a0 - 1)
        if frames.shape[1] != expected:
            raise RuntimeError(f"decoder returned {frames.shape[1]} frames for {b - a0} latent frames, expected {expected}")
        keep = frames if a == 0 else frames[:, frames.shape[1] - ratio * (b - a) :]
        keep = keep[:, : num_frames - emitted].to("cpu", torch.float32)
        emitted += keep.shape[1]
        del frames, z
        if callback is not None:
            el = time.perf_counter() - t0
            callback(Progress("decode", 1, 1, i + 1, len(plan), i + 1, len(plan), el, el / (i + 1) * (len(plan) - i - 1)))
        if keep.shape[1]:
            yield keep
    if emitted != num_frames:
        raise RuntimeError(f"decoded {emitted} frames, expected {num_frames}")


def diffusers_decode_fn(model, scaling_factor: float | None = None) -> DecodeFn:
    """Decode with a diffusers `AutoencoderKLHunyuanVideo` (or our `VideoVAE`, which wraps one).

    Calls the decoder directly: our chunks already bound temporal memory, so diffusers' own frame-wise
    temporal tiling (on by default, 4-latent-frame tiles) would only add work; spatial tiling is kept
    when enabled for large frames.
    """
    if hasattr(model, "model") and hasattr(model, "cfg"):  # VideoVAE
        scaling_factor = model.cfg.scaling_factor if scaling_factor is None else scaling_factor
        model = model.model
    scale = float(model.config.scaling_factor if scaling_factor is None else scaling_factor)
    param = next(model.parameters())

    def fn(z: torch.Tensor) -> torch.Tensor:
        z = z.to(device=param.device, dtype=param.dtype) / scale
        sr = model.spatial_compression_ratio
        too_big = z.shape[-1] > model.tile_sample_min_width // sr or z.shape[-2] > model.tile_sample_min_height // sr
        if model.use_tiling and too_big:
            out = model.tiled_decode(z, return_dict=False)[0]
        else:
            out = model.decoder(model.post_quant_conv(z))
        return out.clamp(-1, 1)

    return fn
