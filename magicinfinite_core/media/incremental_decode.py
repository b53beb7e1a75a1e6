"""Push-based streamed decoding: latent frames go in as they become final, video frames come out.

Why: `streamed_decode` pulls slices from a whole latent; the wavefront sampler instead *produces*
final latent frames one group at a time, and with live audio the length is not even known until the
end. `IncrementalDecoder` runs the same chunk plan (`streamed_decode.decode_chunks`: `chunk` latent
frames with `context` frames of left context, the context's duplicate frames cross-faded) on what
has arrived, so its frames equal `streamed_decode`'s exactly (tests/test_streaming_output.py), and it
holds at most chunk + context (+ the decoder's look-ahead) latent frames.
"""

from __future__ import annotations

import torch

from magicinfinite_core.config import TEMPORAL_RATIO, latent_frames
from magicinfinite_core.media.streamed_decode import DecodeFn, chunk_needs, decode_chunk


class IncrementalDecoder:
    """`push(frames)` final latent frames [C, n, h, w] in order; each call returns decoded video frames
    [3, m, H, W] (CPU, float32, [-1, 1]; m may be 0). `finish(num_frames)` decodes the rest and trims
    the video to `num_frames` (None: `num_frames` given at construction, else every frame)."""

    def __init__(self, decode_fn: DecodeFn, *, chunk: int = 8, context: int = 2, num_frames: int | None = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 ratio: int = TEMPORAL_RATIO, crossfade: bool = True) -> None:
        if chunk < context or context < 1:
            raise ValueError(f"need chunk >= context >= 1 latent frames, got chunk {chunk}, context {context}")
        chunk, context, self.lookahead, crossfade = chunk_needs(decode_fn, chunk, context, crossfade)
        self.decode_fn, self.chunk, self.context = decode_fn, chunk, context
        self.num_frames, self.device, self.dtype, self.ratio = num_frames, device, dtype, ratio
        self.n_fade = ratio * (context - 1) if crossfade else 0
        self.crossfade = crossfade
        self.buf: torch.Tensor | None = None  # latent frames [lo, hi)
        self.lo = self.hi = 0
        self.a = 0  # start of the next chunk
        self.held: torch.Tensor | None = None
        self.emitted = 0
        self.total = None if num_frames is None else latent_frames(num_frames, ratio)

    def push(self, frames: torch.Tensor) -> torch.Tensor:
        frames = frames.detach().to("cpu", torch.float32)
        self.buf = frames if self.buf is None else torch.cat([self.buf, frames], dim=1)
        self.hi += frames.shape[1]
        if self.total is not None and self.hi > self.total:
            raise ValueError(f"{self.hi} latent frames pushed, the video has {self.total}")
        out = []
        while self.a + self.chunk <= self.hi:
            b = self.a + self.chunk
            last = self.total is not None and b == self.total
            if not last and self.hi < b + self.lookahead:  # its look-ahead frames are not final yet
                break
            out.append(self._decode(b, last=last))
        return self._cat(out)

    def finish(self, num_frames: int | None = None) -> torch.Tensor:
        """Decode what is left (the last, possibly short, chunk) and check the frame count."""
        if num_frames is not None:
            self.num_frames = num_frames
            if latent_frames(num_frames, self.ratio) != self.hi:
                raise ValueError(f"{num_frames} video frames need {latent_frames(num_frames, self.ratio)} latent "
                                 f"frames, {self.hi} were pushed")
        out = []
        if self.a < self.hi:
            out.append(self._decode(self.hi, last=True))
        elif self.held is not None:  # the previous chunk was the last one after all: its tail as decoded
            out.append(self._emit(self.held))
            self.held = None
        result = self._cat(out)
        expected = self.num_frames if self.num_frames is not None else 1 + self.ratio * (self.hi - 1)
        if self.emitted != expected:
            raise RuntimeError(f"decoded {self.emitted} frames, expected {expected}")
        return result

    def _cat(self, parts: list[torch.Tensor]) -> torch.Tensor:
        parts = [p for p in parts if p.shape[1]]
        if len(parts) == 1:  # one chunk (the usual case): no copy of its full-size frames
            return parts[0]
        if parts:
            return torch.cat(parts, dim=1)
        assert self.buf is not None
        return torch.empty((3, 0, 0, 0))

    def _emit(self, x: torch.Tensor) -> torch.Tensor:
        if self.num_frames is not None:
            x = x[:, : self.num_frames - self.emitted]
        self.emitted += x.shape[1]
        return x

    def _decode(self, b: int, last: bool) -> torch.Tensor:
        """One chunk [a, b) with its context, through streamed_decode's own chunk step."""
        a0 = max(0, self.a - self.context)
        ahead = min(self.lookahead, self.hi - b)
        out, self.held = decode_chunk(self.decode_fn, self.buf[:, a0 - self.lo : b + ahead - self.lo], a0, self.a,
                                      self.held, ratio=self.ratio, crossfade=self.crossfade, n_fade=self.n_fade,
                                      last=last, device=self.device, dtype=self.dtype, lookahead=ahead)
        self.a = b
        drop = max(0, b - self.context) - self.lo  # keep only the next chunk's context
        if drop > 0:
            self.buf, self.lo = self.buf[:, drop:].clone(), self.lo + drop
        return self._emit(out)
