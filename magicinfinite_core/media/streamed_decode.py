"""Window-by-window decoding of a long latent with the causal VAE, frames yielded as they come.

The HunyuanVideo VAE is causal in time (left-only temporal padding, causal mid-block attention), so
an output frame depends on its own and earlier latent frames - but its GroupNorms pool statistics
over every frame of the clip being decoded, and its receptive field reaches a few latent frames
back. Decoding disjoint chunks therefore shows a seam. We decode each chunk of `chunk` latent
frames together with `context` latent frames of left context and drop the context's output frames:
every kept frame then sees (nearly) the history it would see in a one-shot decode, and memory is
bounded by chunk + context whatever the video length. The context's frames (minus the causal first
one) duplicate the previous chunk's last 4*(context-1) frames; the two versions are cross-faded with
a linear ramp, which spreads the remaining GroupNorm jump over those frames instead of one cut
(`crossfade=False` drops them instead: exact for a strictly causal decoder whose reach back fits in
the context, but the jump then lands on one frame).

A decoder whose frames also read the next latent frame (the motion autoencoder's flow smoothing) says
so on its decode function (`chunk_needs`): each chunk is then decoded with that many latent frames of
look-ahead, whose frames are dropped, and its context frames are exact, so they are not cross-faded.

Frame bookkeeping: decoding latents [a0, b) yields 1 + 4*(b - a0 - 1) frames (the first latent frame
alone, as a causal first frame); latent frames [a, b) with a > a0 are the last 4*(b - a) of them.
The stream is trimmed to exactly `num_frames` (the audio length at 25 fps).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import torch

from magicinfinite_core.cancellation import check_cancelled
from magicinfinite_core.config import TEMPORAL_RATIO, latent_frames
from magicinfinite_core.sampling.sampler import Progress, ProgressCallback

DecodeFn = Callable[[torch.Tensor], torch.Tensor]  # [1, C, t, h, w] -> [1, 3, 1 + 4(t-1), H, W] in [-1, 1]


def decode_chunks(total: int, chunk: int, context: int) -> list[tuple[int, int, int]]:
    """(context_start, start, end) latent ranges; [start, end) tile [0, total) without overlap."""
    if chunk < context or context < 1:
        # context 0 cannot work: a chunk's first latent frame decodes as a causal first frame (1 frame, not 4)
        raise ValueError(f"need chunk >= context >= 1 latent frames, got chunk {chunk}, context {context}")
    return [(max(0, a - context), a, min(a + chunk, total)) for a in range(0, total, chunk)]


def chunk_needs(decode_fn: DecodeFn, chunk: int, context: int, crossfade: bool) -> tuple[int, int, int, bool]:
    """(chunk, context, lookahead, crossfade) for chunked decoding with `decode_fn`: a decoder whose frames
    read nearby latent frames on both sides (the motion autoencoder's flow smoothing) says so with the
    attributes `lookahead` (latent frames after the chunk), `min_context` and `crossfade` (False: its
    context frames are exact, so they are dropped, not blended); a chunk is never shorter than its context."""
    context = max(int(context), int(getattr(decode_fn, "min_context", 1)))
    return (max(int(chunk), context), context, int(getattr(decode_fn, "lookahead", 0)),
            bool(crossfade and getattr(decode_fn, "crossfade", True)))


def decode_chunk(
    decode_fn: DecodeFn,
    z: torch.Tensor,
    a0: int,
    a: int,
    held: torch.Tensor | None,
    *,
    ratio: int,
    crossfade: bool,
    n_fade: int,
    last: bool,
    device: torch.device | str,
    dtype: torch.dtype,
    lookahead: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Decode latent frames [a0, b) = `z` ([C, b-a0+lookahead, h, w]; a0..a is left context, the last
    `lookahead` frames right context) into the frames to emit and the tail held back for the next chunk's
    cross-fade (None after the last chunk).

    The one chunk step of `streamed_decode` and of the incremental decoder, so both give the same frames.
    """
    n = z.shape[1]
    zz = z.unsqueeze(0).to(device=device, dtype=dtype)
    with torch.no_grad():
        frames = decode_fn(zz)[0].to("cpu", torch.float32)
    del zz
    expected = 1 + ratio * (n - 1)
    if frames.shape[1] != expected:
        raise RuntimeError(f"decoder returned {frames.shape[1]} frames for {n} latent frames, expected {expected}")
    if lookahead:
        frames = frames[:, : frames.shape[1] - ratio * lookahead]
    out = []
    if a == 0:
        new = frames
    else:
        n_ov = ratio * (a - a0 - 1)  # frames of latents a0+1..a-1, already decoded by the previous chunk
        new = frames[:, 1 + n_ov :]
        if held is not None and n_ov and crossfade:
            w = (torch.arange(1, n_ov + 1, dtype=torch.float32) / (n_ov + 1)).view(1, -1, 1, 1)
            out.append(held[:, -n_ov:] * (1 - w) + frames[:, 1 : 1 + n_ov] * w)
    keep = new.shape[1] if last else new.shape[1] - min(n_fade, new.shape[1])
    out.append(new[:, :keep])
    return (torch.cat(out, dim=1) if len(out) > 1 else out[0]), None if last else new[:, keep:]


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
    crossfade: bool = True,
    callback: ProgressCallback | None = None,
) -> Iterator[torch.Tensor]:
    """Yield decoded frames [3, n, H, W] (CPU, float32, [-1, 1]) chunk by chunk, `num_frames` in all."""
    total = latent.shape[1]
    full = 1 + ratio * (total - 1)
    num_frames = full if num_frames is None else num_frames
    if latent_frames(num_frames, ratio) != total:
        raise ValueError(f"{num_frames} video frames need {latent_frames(num_frames, ratio)} latent frames, got {total}")
    chunk, context, lookahead, crossfade = chunk_needs(decode_fn, chunk, context, crossfade)
    plan = decode_chunks(total, chunk, context)
    emitted, t0 = 0, time.perf_counter()
    held: torch.Tensor | None = None  # the previous chunk's last frames, to be cross-faded
    n_fade = ratio * (context - 1) if crossfade else 0

    def emit(x: torch.Tensor) -> torch.Tensor:
        nonlocal emitted
        x = x[:, : num_frames - emitted]
        emitted += x.shape[1]
        return x

    for i, (a0, a, b) in enumerate(plan):
        check_cancelled()
        last = i == len(plan) - 1
        ahead = min(lookahead, total - b)
        out, held = decode_chunk(decode_fn, latent[:, a0 : b + ahead], a0, a, held, ratio=ratio,
                                 crossfade=crossfade, n_fade=n_fade, last=last, device=device, dtype=dtype,
                                 lookahead=ahead)
        chunk_out = emit(out)
        if callback is not None:
            el = time.perf_counter() - t0
            callback(Progress("decode", 1, 1, i + 1, len(plan), i + 1, len(plan), el, el / (i + 1) * (len(plan) - i - 1)))
        if chunk_out.shape[1]:
            yield chunk_out
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
    _check_between_decoder_blocks(model)

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


def _check_between_decoder_blocks(model) -> None:
    """Poll `check_cancelled` before each of the decoder's mid/up blocks and each resnet, attention and
    upsampler inside them (and so per spatial tile): one chunk of a large video is a long decode, and
    one full-resolution up block alone took seconds at 512x512 (cancellation.py). Installed once per model."""
    if getattr(model, "_cancel_hooks_installed", False):
        return
    decoder = getattr(model, "decoder", None)
    for block in [getattr(decoder, "mid_block", None), *getattr(decoder, "up_blocks", [])]:
        if block is None:
            continue
        parts = [m for name in ("resnets", "attentions", "upsamplers") for m in (getattr(block, name, None) or [])]
        for module in (block, *[m for m in parts if m is not None]):
            module.register_forward_pre_hook(lambda module, args: check_cancelled())
    model._cancel_hooks_installed = True
