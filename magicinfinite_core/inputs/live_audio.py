"""Live audio input: a WAV stream on stdin, a named pipe or a growing file, read as it arrives.

Why: a live voice has no end yet, so neither its length nor its features exist up front. A reader
thread takes the stream in ~0.1 s blocks (as fast as it comes: the source sets the real-time rate);
`LiveAudio.wait`, called by the wavefront sampler when no window can run, hands the new samples to
the muxer's audio track, extends the per-frame features with the extractor's own chunking
(`audio_features.ChunkedExtractor`: frames [a, b) from audio [a - ctx, b + ctx), so the features equal
the whole-file ones away from the end) and tells the window plans how far they are known
(`wavefront.GrowingPlans`). At the end of the stream the length is fixed and the last windows run.

Input: RIFF/WAV, PCM 16-bit or float 32-bit, any rate and channel count (the header's data size is
ignored, so `sox ... -t wav -` or `ffmpeg ... -f wav -` piped in works). Features use the 16 kHz mono
mix (linear resampling, continuous across blocks); the mp4 gets the stream's own samples. A growing
file has ended when it has not grown for `idle_timeout_s`.

Latency: a frame can be final only when the windows of every step around it are known, which needs
audio about steps x window + overlap latent frames ahead of it (4 steps x 9 + 2 latent frames = ~6 s
for the demo), plus the compute of those windows; `LiveAudio.latency()` measures, for every muxed
frame, the wall time from the arrival of its audio to its muxing.
"""

from __future__ import annotations

import os
import queue
import stat
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from magicinfinite_core.config import AUDIO_SAMPLE_RATE, latent_frames
from magicinfinite_core.errors import AudioError
from magicinfinite_core.inputs.audio import check_samples, num_video_frames_for_samples

BLOCK_S = 0.1


def is_live_source(source: Any) -> bool:
    """'-' (stdin) or a named pipe: always live. A regular file is live only when asked (--live)."""
    if isinstance(source, str) and source == "-":
        return True
    try:
        return isinstance(source, (str, Path)) and stat.S_ISFIFO(os.stat(source).st_mode)
    except OSError:
        return False


class WavStream:
    """Reads a WAV header, then float32 [channels, n] blocks from a byte stream that may still grow."""

    def __init__(self, f: BinaryIO, growing: bool = False, idle_timeout_s: float = 2.0, poll_s: float = 0.02) -> None:
        self.f, self.growing, self.idle, self.poll = f, growing, idle_timeout_s, poll_s
        head = self._exact(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise AudioError("live audio must be a WAV stream (RIFF/WAVE header); convert with "
                             "`ffmpeg -i IN -f wav -` or `sox IN -t wav -`")
        fmt = None
        while True:
            cid, size = struct.unpack("<4sI", self._exact(8))
            if cid == b"fmt ":
                body = self._exact(size + (size & 1))
                tag, ch, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
                if tag == 0xFFFE and size >= 40:  # WAVE_FORMAT_EXTENSIBLE: the sub-format's first 2 bytes
                    tag = struct.unpack("<H", body[24:26])[0]
                fmt = (tag, ch, rate, bits)
            elif cid == b"data":
                break
            else:
                self._exact(size + (size & 1))
        if fmt is None:
            raise AudioError("the live WAV stream has no 'fmt ' chunk before its data")
        tag, self.channels, self.rate, bits = fmt
        if (tag, bits) not in ((1, 16), (3, 32)):
            raise AudioError(f"live WAV must be 16-bit PCM or 32-bit float, got format {tag} with {bits} bits; "
                             "convert with `ffmpeg -i IN -f wav -acodec pcm_s16le -`")
        if self.channels < 1 or self.rate < 8000:
            raise AudioError(f"live WAV: {self.channels} channels at {self.rate} Hz is not usable")
        self.dtype = np.int16 if bits == 16 else np.float32
        self.frame_bytes = self.channels * bits // 8
        self._rest = b""
        self.samples_read = 0

    def _read_some(self, n: int) -> bytes:
        """Up to n bytes; b"" only at the end (EOF of a pipe, or a file idle for `idle` seconds)."""
        last = time.monotonic()
        while True:
            data = self.f.read1(n) if hasattr(self.f, "read1") else self.f.read(n)
            if data:
                return data
            if not self.growing or time.monotonic() - last > self.idle:
                return b""
            time.sleep(self.poll)

    def _exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            d = self._read_some(n - len(out))
            if not d:
                raise AudioError("the live audio ended inside the WAV header")
            out += d
        return out

    def read_block(self, seconds: float = BLOCK_S) -> np.ndarray | None:
        """Next block [channels, n] float32 in [-1, 1] (n >= 1), or None at the end of the stream."""
        want = max(1, int(self.rate * seconds)) * self.frame_bytes
        data = self._rest
        while len(data) < self.frame_bytes:
            d = self._read_some(want)
            if not d:
                return None
            data += d
        usable = len(data) // self.frame_bytes * self.frame_bytes
        self._rest = data[usable:]
        x = np.frombuffer(data[:usable], dtype=self.dtype).reshape(-1, self.channels).T
        x = (x.astype(np.float32) / 32768.0) if self.dtype == np.int16 else x.astype(np.float32)
        check_samples(x, "the live audio", self.samples_read, self.rate)
        self.samples_read += x.shape[1]
        return x


class LinearResampler:
    """Mono mix + linear resampling to 16 kHz, continuous across blocks (one sample of history)."""

    def __init__(self, rate: int, target: int = AUDIO_SAMPLE_RATE) -> None:
        self.step = rate / target
        self.t = 0.0  # position of the next output sample, in input samples since `base`
        self.prev: np.ndarray = np.zeros(0, np.float32)

    def __call__(self, block: np.ndarray) -> np.ndarray:
        mono = block.mean(axis=0).astype(np.float32)
        if self.step == 1.0:
            return mono
        x = np.concatenate([self.prev, mono])
        n = int(np.floor((x.size - 1 - self.t) / self.step)) + 1 if x.size > 1 else 0
        pos = self.t + self.step * np.arange(max(0, n))
        i = np.floor(pos).astype(np.int64)
        frac = (pos - i).astype(np.float32)
        out = x[i] * (1 - frac) + x[np.minimum(i + 1, x.size - 1)] * frac
        self.t = (self.t + self.step * max(0, n)) - (x.size - 1)
        self.prev = x[-1:]
        return out.astype(np.float32)


class LiveAudio:
    """The live source for `streaming.generate_live`: reader thread, audio for the muxer, features."""

    def __init__(self, source: str | Path, extractor: Any, *, idle_timeout_s: float = 2.0) -> None:
        self.extractor = extractor
        self.file: BinaryIO = sys.stdin.buffer if str(source) == "-" else open(source, "rb")  # noqa: SIM115
        growing = str(source) != "-" and not is_live_source(source)
        self.stream = WavStream(self.file, growing=growing, idle_timeout_s=idle_timeout_s)
        self.rate_channels = (self.stream.rate, min(self.stream.channels, 2))
        self.resample = LinearResampler(self.stream.rate)
        self.queue: queue.Queue = queue.Queue()
        self.wav16 = np.zeros(0, np.float32)  # the 16 kHz mono mix received so far
        self.features = torch.zeros((1, 0, extractor.feature_dim), dtype=torch.float16)
        self.num_frames: int | None = None
        self.writer: Any = None
        self.cond: Any = None  # pipeline.Conditions whose features grow
        self.arrivals: list[tuple[int, float]] = []  # (16 kHz samples received, wall time)
        self.latencies: list[float] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while True:
                block = self.stream.read_block()
                self.queue.put((time.perf_counter(), block))
                if block is None:
                    return
        except BaseException as exc:  # handed to the sampler thread, which raises it
            self.error = exc
            self.queue.put((time.perf_counter(), None))

    def wait(self, plans: Any) -> bool:
        """Block for new audio, take everything that came; False at the end (plans then finished)."""
        items = [self.queue.get()]
        while True:
            try:
                items.append(self.queue.get_nowait())
            except queue.Empty:
                break
        ended = False
        for t, block in items:
            if block is None:
                ended = True
                break
            if self.writer is not None:
                self.writer.push_audio(block[:2])
            self.wav16 = np.concatenate([self.wav16, self.resample(block)])
            self.arrivals.append((self.wav16.size, t))
        if isinstance(self.error, AudioError):
            raise self.error
        if self.error is not None:
            raise AudioError(f"reading the live audio failed: {self.error}")
        if ended:
            self.num_frames = num_video_frames_for_samples(self.wav16.size, AUDIO_SAMPLE_RATE)
            if self.num_frames < 1:
                raise AudioError("the live audio ended before one video frame (40 ms) arrived")
            self._extend_features(final=True)
            plans.finish(latent_frames(self.num_frames))
            return False
        ready = self._extend_features(final=False)
        plans.extend(max(0, (ready - 3) // 4))
        return True

    def _extend_features(self, final: bool) -> int:
        """Features of every frame whose audio (and the extractor's context) has arrived."""
        ex, spf = self.extractor, self.extractor.spf
        done, ctx = self.features.shape[1], ex.context_frames
        if final:
            n = self.num_frames
            w = np.concatenate([self.wav16, np.zeros(max(0, n * spf - self.wav16.size), np.float32)])[: n * spf]
            end = n
        else:
            w = self.wav16
            end = w.size // spf - ctx - 1
        if end <= done:
            return done
        new = []
        for start in range(done, end, ex.chunk_frames):
            stop = min(end, start + ex.chunk_frames)
            a = max(0, start - ctx)
            b = min(w.size // spf, stop + ctx) if not final else min(end, stop + ctx)
            feats = ex._frames(w[a * spf : b * spf], b - a, ex._prepare(w[a * spf : b * spf]))
            new.append(feats[start - a : stop - a].to(torch.float16))
        self.features = torch.cat([self.features, torch.cat(new)[None]], dim=1)
        if self.cond is not None:
            self.cond.features = self.features
        return self.features.shape[1]

    def frames_muxed(self, total_frames: int) -> None:
        """Record the latency of the newest muxed frame: now minus when its audio arrived."""
        need = total_frames * self.extractor.spf
        for n, t in self.arrivals:
            if n >= need:
                self.latencies.append(time.perf_counter() - t)
                return

    def latency(self) -> dict[str, float]:
        lat = self.latencies or [0.0]
        return {"mean_s": float(np.mean(lat)), "max_s": float(np.max(lat)), "last_s": float(lat[-1])}

    def close(self) -> None:
        if self.file is not sys.stdin.buffer:
            self.file.close()
