"""Streamed mp4 writing (H.264 yuv420p + AAC) and small readers, with PyAV.

`VideoWriter` takes frames in chunks as the decoder produces them and interleaves the audio track as
the video advances, so neither the frame stack nor the encoded audio is ever held whole. It writes
to `<out>.partial.mp4` and renames on close, so a crash never leaves a truncated file at `out`. The
audio track is written at a rate AAC takes (a 192 kHz voice is resampled to 48 kHz).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from magicinfinite_core.cancellation import check_cancelled
from magicinfinite_core.config import VIDEO_FPS
from magicinfinite_core.errors import AudioError, MagicInfiniteError
from magicinfinite_core.media.autoencoders import decode_fn, video_size
from magicinfinite_core.media.background_writer import BackgroundWriter
from magicinfinite_core.media.streamed_decode import streamed_decode
from magicinfinite_core.sampling.sampler import ProgressCallback

AudioSource = str | Path | tuple[np.ndarray, int]  # a file, or (waveform [C, N] float32, sample_rate)
_AUDIO_CHUNK = 4096


VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov")  # what an H.264 + AAC MP4 file may be named


def partial_path(out: str | Path) -> Path:
    """The temporary name a video grows under beside ``out`` (renamed to ``out`` when it is complete)."""
    p = Path(out)
    return p.with_name(p.stem + ".partial" + p.suffix)


def check_output_audio(source: AudioSource) -> None:
    """Open the AAC encoder the video's audio track will use, before any sampling.

    Why: an audio format the encoder refuses used to fail only when the first frames were muxed.
    """
    _chunks, rate, channels = _audio_chunks(source)
    ctx = av.CodecContext.create("aac", "w")
    ctx.sample_rate, ctx.layout, ctx.format = rate, "mono" if channels == 1 else "stereo", "fltp"
    try:
        ctx.open()
    except av.error.FFmpegError as exc:
        raise AudioError(f"the audio cannot be encoded as AAC at {rate} Hz, {channels} channel(s) ({exc})") from None


def frames_to_uint8(frames: torch.Tensor) -> np.ndarray:
    """[3, F, H, W] (or [1, 3, F, H, W]) in [-1, 1] -> uint8 [F, H, W, 3] for the encoder."""
    if frames.ndim == 5:
        if frames.shape[0] != 1:
            raise ValueError(f"expected one video, got a batch of {frames.shape[0]}")
        frames = frames[0]
    # one float buffer in the encoder's layout, worked in place: a 1024 px frame took 6 ms, now 2.5 ms
    x = torch.empty(*frames.shape[1:], 3, dtype=torch.float32)
    x.copy_(frames.detach().permute(1, 2, 3, 0))
    return x.clamp_(-1, 1).add_(1).mul_(127.5).round_().to(torch.uint8).numpy()


def aac_rate(rate: int) -> int:
    """The sample rate the AAC track is written at: ``rate`` when AAC takes it, else the nearest one above
    (48 kHz above AAC's 96 kHz maximum). Why: a 192 kHz WAV made the encoder fail only after sampling."""
    rates = sorted(av.codec.Codec("aac", "w").audio_rates or (48000,))
    if rate in rates:
        return int(rate)
    if rate > rates[-1]:
        return 48000 if 48000 in rates else rates[-1]
    return next(r for r in rates if r >= rate)


def resample_chunks(chunks: Iterator[np.ndarray], rate: int, out_rate: int, channels: int) -> Iterator[np.ndarray]:
    """Planar float32 [C, n] chunks at ``rate`` -> the same sound at ``out_rate`` (FFmpeg's resampler)."""
    if rate == out_rate:
        yield from chunks
        return
    layout = "mono" if channels == 1 else "stereo"
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=out_rate)
    pts = 0
    for chunk in chunks:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk, dtype=np.float32), format="fltp", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, pts, Fraction(1, rate)
        pts += chunk.shape[1]
        for out in resampler.resample(frame):
            yield out.to_ndarray().astype(np.float32, copy=False)
    for out in resampler.resample(None):
        yield out.to_ndarray().astype(np.float32, copy=False)


def _audio_chunks(source: AudioSource) -> tuple[Iterator[np.ndarray], int, int]:
    """(iterator of planar float32 [C, n] chunks, sample rate, channels) of any audio source, at a rate AAC takes."""
    if isinstance(source, tuple):
        wav, rate = source
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim == 1:
            wav = wav[None]
        if wav.ndim != 2 or wav.shape[0] not in (1, 2):
            raise AudioError(f"waveform must be [channels (1 or 2), samples], got {wav.shape}")

        def it() -> Iterator[np.ndarray]:
            for i in range(0, wav.shape[1], _AUDIO_CHUNK):
                yield np.ascontiguousarray(wav[:, i : i + _AUDIO_CHUNK])

        out_rate = aac_rate(int(rate))
        return resample_chunks(it(), int(rate), out_rate, wav.shape[0]), out_rate, wav.shape[0]
    path = Path(source)
    try:
        probe = av.open(str(path))
        stream = probe.streams.audio[0]
    except (av.error.FFmpegError, IndexError, OSError) as exc:
        raise AudioError(f"cannot read audio from {path}: {exc}") from None
    rate, channels = aac_rate(stream.rate), min(stream.channels, 2)
    probe.close()

    def it_file() -> Iterator[np.ndarray]:
        layout = "mono" if channels == 1 else "stereo"
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        with av.open(str(path)) as src:
            for frame in src.decode(audio=0):
                for out in resampler.resample(frame):
                    yield out.to_ndarray().astype(np.float32, copy=False)
            for out in resampler.resample(None):
                yield out.to_ndarray().astype(np.float32, copy=False)

    return it_file(), rate, channels


class VideoWriter:
    """Incremental mp4 writer: `write(frames)` any number of times, then `close()`."""

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fps: int = VIDEO_FPS,
        audio: AudioSource | None = None,
        crf: int = 18,
        preset: str = "medium",
        threads: int = 1,
    ):
        if width % 2 or height % 2:
            raise MagicInfiniteError(f"H.264 yuv420p needs even frame sizes, got {width}x{height}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self._target_path()
        self.fps, self.width, self.height = fps, width, height
        self.frames_written = 0
        self.container = av.open(str(self.tmp), mode="w", format="mp4", options=self._container_options())
        self.vstream = self.container.add_stream("libx264", rate=fps)
        self.vstream.width, self.vstream.height, self.vstream.pix_fmt = width, height, "yuv420p"
        # threads=1 + tune=zerolatency (no lookahead / B-frames): otherwise the same frames gave different
        # packets from run to run in one test process (measured, PyAV 18 / libx264; threads=1 alone and
        # sync-lookahead=0 did not suffice), which breaks "same seed -> same video". Costs some file size;
        # encoding is never the bottleneck next to the DiT.
        self.vstream.options = {"crf": str(crf), "preset": preset, "threads": str(threads),
                                "tune": "zerolatency"}
        self.vstream.codec_context.time_base = Fraction(1, fps)
        self.astream = None
        self.audio_samples = 0
        if audio is not None:
            self._chunks, self.audio_rate, channels = _audio_chunks(audio)
            self.astream = self.container.add_stream("aac", rate=self.audio_rate)
            self.astream.layout = "mono" if channels == 1 else "stereo"
            self._layout = self.astream.layout.name
            self._audio_done = False

    def _target_path(self) -> Path:
        """Where the file grows: a temporary name beside `path`, renamed on close."""
        return partial_path(self.path)

    def _container_options(self) -> dict[str, str]:
        return {}

    def write(self, frames: np.ndarray | torch.Tensor) -> None:
        """uint8 [N, H, W, 3], or a float tensor [3, N, H, W] in [-1, 1] (converted frame by frame).

        The cancellation check (cancellation.py) is polled before every frame: encoding one large
        frame takes a second or more, a decode chunk holds dozens."""
        if isinstance(frames, torch.Tensor):
            if frames.ndim == 5 and frames.shape[0] == 1:
                frames = frames[0]
            shape = (frames.shape[1], *frames.shape[2:], frames.shape[0]) if frames.ndim == 4 else tuple(frames.shape)
            images = (frames_to_uint8(frames[:, i : i + 1])[0] for i in range(frames.shape[1]))
            dtype = np.uint8
        else:
            shape, images, dtype = frames.shape, iter(frames), frames.dtype
        if len(shape) != 4 or tuple(shape[1:]) != (self.height, self.width, 3) or dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [N, {self.height}, {self.width}, 3], got {tuple(shape)} {dtype}")
        try:
            for img in images:
                check_cancelled()
                vf = av.VideoFrame.from_ndarray(img, format="rgb24")
                vf.pts = self.frames_written
                self.frames_written += 1
                for pkt in self.vstream.encode(vf):
                    self.container.mux(pkt)
            self._pump_audio(self.frames_written / self.fps + 0.5)
        except OSError as exc:
            self._raise_disk_full(exc)
            raise

    def _raise_disk_full(self, exc: OSError) -> None:
        """A full disk: drop the partial file (a resume writes it again) and say which file it was."""
        from magicinfinite_core.output_files import disk_full_error

        err = disk_full_error(self.tmp, exc)
        if err is not None:
            self.discard()
            raise err from None

    def _pump_audio(self, until_s: float | None) -> None:
        """Encode audio up to `until_s` seconds (None: to the end), keeping the streams interleaved."""
        if self.astream is None or self._audio_done:
            return
        while until_s is None or self.audio_samples < until_s * self.audio_rate:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._audio_done = True
                break
            self._encode_audio(chunk)

    def _encode_audio(self, chunk: np.ndarray) -> None:
        """Encode one planar float32 chunk [C, n] at the next audio timestamp."""
        af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=self._layout)
        af.sample_rate, af.pts = self.audio_rate, self.audio_samples
        af.time_base = Fraction(1, self.audio_rate)
        self.audio_samples += chunk.shape[1]
        for pkt in self.astream.encode(af):
            self.container.mux(pkt)

    def close(self) -> Path:
        """Flush both encoders and move the finished file into place."""
        if self.container is None:
            return self.path
        try:
            for pkt in self.vstream.encode(None):
                self.container.mux(pkt)
            if self.astream is not None:
                self._pump_audio(None)
                for pkt in self.astream.encode(None):
                    self.container.mux(pkt)
            self.container.close()
        except OSError as exc:
            self._raise_disk_full(exc)
            raise
        self.container = None
        if self.tmp != self.path:
            os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        """Close without finishing and remove the partial file."""
        if self.container is not None:
            try:
                self.container.close()
            except Exception:  # the file is being discarded anyway
                pass
            self.container = None
        self.tmp.unlink(missing_ok=True)

    abort = discard  # the error path's name for the same thing

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    fps: float
    width: int
    height: int
    video_codec: str
    audio_codec: str | None
    audio_rate: int | None
    audio_seconds: float | None  # decoded samples / rate


def probe_video(path: str | Path) -> VideoInfo:
    """Decode the whole file (video frames counted, audio samples summed) - for tests and checks."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        frames = sum(1 for _ in c.decode(video=0))
        info = dict(fps=float(vs.average_rate), width=vs.width, height=vs.height, video_codec=vs.codec_context.name)
    audio_codec = audio_rate = audio_seconds = None
    with av.open(str(path)) as c:
        if c.streams.audio:
            a = c.streams.audio[0]
            audio_codec, audio_rate = a.codec_context.name, a.rate
            audio_seconds = sum(f.samples for f in c.decode(audio=0)) / a.rate
    return VideoInfo(frames, info["fps"], info["width"], info["height"], info["video_codec"],
                     audio_codec, audio_rate, audio_seconds)


def iter_video_frames(path: str | Path) -> Iterator[np.ndarray]:
    """uint8 [H, W, 3] frames one at a time."""
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            yield f.to_ndarray(format="rgb24")


def write_wav(path: str | Path, waveform: np.ndarray, rate: int) -> Path:
    """16-bit PCM WAV via PyAV (tests, benches)."""
    wav = np.asarray(waveform, dtype=np.float32)
    wav = wav[None] if wav.ndim == 1 else wav
    pcm = (np.clip(wav, -1, 1) * 32767).astype(np.int16)
    layout = "mono" if pcm.shape[0] == 1 else "stereo"
    with av.open(str(path), mode="w", format="wav") as c:
        s = c.add_stream("pcm_s16le", rate=rate)
        s.layout = layout
        for i in range(0, pcm.shape[1], _AUDIO_CHUNK):
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, i : i + _AUDIO_CHUNK].T.reshape(1, -1)),
                                            format="s16", layout=layout)
            fr.sample_rate, fr.pts = rate, i
            for pkt in s.encode(fr):
                c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    return Path(path)


def check_output_path(out: str | Path) -> Path:
    """The mp4 path ``out`` if a video can be written there; else a MagicInfiniteError, creating nothing.

    Why: the path used to be tried only after sampling and decoding (an ``IsADirectoryError``
    traceback after the whole run, with ``<out>.partial`` left behind).
    """
    import os

    p = Path(out)
    if str(out).endswith(("/", os.sep)) or p.is_dir():
        raise MagicInfiniteError(f"the output path {out} is a folder; give the path of the .mp4 file to write, e.g. {p / 'talk.mp4'}")
    if p.suffix.lower() not in VIDEO_SUFFIXES:
        raise MagicInfiniteError(f"the output {out} would be an H.264 + AAC MP4 video; name it "
                                 f"{p.with_suffix('.mp4').name} ({' / '.join(VIDEO_SUFFIXES)})")
    if p.exists() and not os.access(p, os.W_OK):
        raise MagicInfiniteError(f"the output path {out} exists and is not writable")
    parent = p.parent if str(p.parent) else Path(".")
    existing = parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise MagicInfiniteError(f"the output path {out}: {existing} is a file, not a folder")
    import tempfile

    try:  # os.access says yes to root even on read-only or virtual file systems: really try
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise MagicInfiniteError(f"the output path {out}: cannot write into {existing} ({exc.strerror})") from None
    return p


# x264 settings of the videos we hand the user: "veryfast" at crf 16 encodes a 1024 px frame 2.6x as fast as
# "medium" at crf 18 (which alone kept 1024 px output below real time on 2 cores), 0.5 dB closer to the decoded
# frames (42.9 dB), for a 45 % larger file. At crf 18 "veryfast" lost 0.2-0.7 dB and its noise moved face mesh's
# reading of a still open smile (the bench's 3-speaker row 0.13 -> 0.33; crf 16: 0.15). Training clips keep
# VideoWriter's defaults.
OUTPUT_PRESET = "veryfast"
OUTPUT_CRF = 16


def decode_to_mp4(
    latent: torch.Tensor,
    vae: Any,
    num_frames: int,
    out: str | Path,
    audio: Any = None,
    *,
    chunk: int = 8,
    context: int = 2,
    device: torch.device | str = "cpu",
    callback: ProgressCallback | None = None,
    portrait: Any = None,
) -> Path:
    """Stream-decode a [C, T, h, w] latent into an mp4 of exactly `num_frames` frames with the audio.

    `portrait`: what a motion latent moves (`autoencoders.decode_fn`); the video then has its size."""
    decode = decode_fn(vae, portrait)
    height, width = video_size(vae, latent.shape[-2:], portrait)
    file = VideoWriter(out, width, height, fps=VIDEO_FPS, audio=audio, crf=OUTPUT_CRF, preset=OUTPUT_PRESET)
    with BackgroundWriter(file) as writer:  # the next chunk decodes while this one is encoded
        for frames in streamed_decode(latent, decode, num_frames=num_frames, chunk=chunk, context=context,
                                      device=device, callback=callback):
            writer.write(frames)
    return Path(out)
