"""Order-free noise: every latent frame's noise is keyed by (seed, step, frame), not drawn from one stream.

Why: the sweep sampler used to draw all noise from ONE generator in frame order, step after step, so
the noise a frame got depended on the order the sampler visited frames. The wavefront sampler visits
(step, window) pairs in a different order; with keyed noise both orders give the same latent, bit
for bit, and a resume needs no generator state. Each key seeds its own CPU `torch.Generator` (the
key is a 64-bit BLAKE2b hash of the three numbers), which draws exactly one latent frame [C, 1, h, w],
so the values depend neither on window sizes, nor on the device, nor on what was drawn before.

Step `INITIAL` (-1) is the starting noise; step j >= 0 is the re-noising after step j (distilled mode).
"""

from __future__ import annotations

import hashlib
import struct

import torch

INITIAL = -1  # the step index of the initial noise (before step 0)


def noise_key(seed: int, step: int, frame: int) -> int:
    """The 64-bit generator seed of one (seed, step, latent frame)."""
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be in 0..2**64-1, got {seed}")
    if int(frame) < 0 or int(step) < INITIAL:
        raise ValueError(f"frame must be >= 0 and step >= {INITIAL}, got frame {frame}, step {step}")
    blob = struct.pack("<Qqq", int(seed), int(step), int(frame))
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8, person=b"magicinf-noise").digest(), "little")


def frame_noise(seed: int, step: int, frame: int, shape: tuple[int, int, int]) -> torch.Tensor:
    """Standard normal noise [C, 1, h, w] (float32, CPU) of one latent frame; `shape` is (C, h, w)."""
    c, h, w = shape
    g = torch.Generator(device="cpu")
    g.manual_seed(noise_key(seed, step, frame))
    return torch.randn((c, 1, h, w), generator=g, dtype=torch.float32)


def keyed_noise(seed: int, step: int, start: int, end: int, shape: tuple[int, int, int]) -> torch.Tensor:
    """Noise [C, end - start, h, w] of latent frames [start, end) at `step`, frame by frame."""
    c, h, w = shape
    out = torch.empty((c, max(0, end - start), h, w), dtype=torch.float32)
    for i, f in enumerate(range(start, end)):
        out[:, i : i + 1] = frame_noise(seed, step, f, shape)
    return out


def fill_keyed_noise(latent: torch.Tensor, seed: int, step: int = INITIAL, start: int = 0,
                     end: int | None = None) -> None:
    """Write the keyed noise of frames [start, end) into a [C, T, h, w] latent (index = latent frame).

    Frame by frame, not through `keyed_noise`: the latent may be a memory-mapped whole-video file, and
    one frame at a time keeps the RAM it needs bounded."""
    c, t, h, w = latent.shape
    end = t if end is None else end
    for f in range(start, end):
        latent[:, f : f + 1] = frame_noise(seed, step, f, (c, h, w))
