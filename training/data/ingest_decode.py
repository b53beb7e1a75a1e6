"""Decode any video file PyAV (the user's ffmpeg build) reads onto the training timeline: 25 fps frames
and 16 kHz mono audio with exactly 640 samples per frame.

Why its own module: every later stage (shot cuts, faces, crops) works on "frame k of the 25 fps
timeline" and "audio samples [640 k, 640 (k + 1))"; getting that mapping right once, for any container,
codec, frame rate and audio start offset, is what keeps lips and sound in sync.

Timeline: time 0 is the first decoded video frame. Output frame k shows the source frame nearest
to time k / 25 s (ties to the earlier one), like ffmpeg's ``fps`` filter; the video lasts until the
last source frame's end. Audio is decoded at its own rate, mixed to mono by libswresample, resampled
to 16 kHz with soxr (linear phase, delay compensated) and shifted by its start time relative to the
first video frame (the container's timestamps), so an audio track that starts late is padded with
silence and one that starts early is cut.

Broken inputs raise :class:`SourceError` with a ``reason`` that the ingestion records in
``rejects.jsonl``: ``corrupt`` (the demuxer / decoder fails), ``truncated`` (fewer frames than the
container states), ``no_video``, ``no_audio`` (no audio stream) and ``audio_short`` (the audio ends
more than ``AUDIO_SLACK_S`` before the video).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.data.mouth import FPS, HOP, SAMPLE_RATE

AUDIO_SLACK_S = 0.1  # an audio track may end this much before the video (encoder padding); zero-filled
TRUNCATED_SLACK_S = 0.5  # decoded video may fall this much (or 5 %) short of the stated duration


class SourceError(Exception):
    """A source file that cannot be ingested; ``reason`` is the rejects.jsonl reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SourceInfo:
    """What the container says about a file, plus the timeline facts decoding found."""

    width: int
    height: int
    fps: float  # the source's average frame rate
    video_codec: str
    audio_codec: str | None
    audio_rate: int | None
    audio_channels: int | None
    num_frames: int  # frames of the 25 fps timeline
    first_time: float  # time of the first video frame in the container (s)
    stated_duration: float | None  # what the container / stream header claims (s)

    def to_dict(self) -> dict:
        """JSON-able form (meta.json ``ingest.source_info``)."""
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in vars(self).items()}


def _open(path: str):
    import av

    try:
        return av.open(str(path))
    except FileNotFoundError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise SourceError("corrupt", f"{path}: ffmpeg cannot open it ({e}); re-download or re-encode the file") from e


def _stated_duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / 1e6
    return None


def _frame_times(path: str, on_frame: Callable[[Any], Any] | None = None
                 ) -> tuple[list[float], float, dict, list]:
    """Presentation times (s) of every decoded video frame, the last frame's duration, stream facts,
    and ``on_frame(av.VideoFrame)`` of each frame (the analysis pass rides on this decode)."""
    import av

    with _open(path) as c:
        if not c.streams.video:
            raise SourceError("no_video", f"{path}: no video stream; give a video file")
        vs = c.streams.video[0]
        rate = float(vs.average_rate) if vs.average_rate else float(vs.guessed_rate or FPS)
        facts = {
            "width": int(vs.codec_context.width), "height": int(vs.codec_context.height), "fps": rate,
            "video_codec": vs.codec_context.name, "stated": _stated_duration(c, vs),
        }
        times: list[float] = []
        results: list = []
        try:
            for fr in c.decode(vs):
                t = fr.time if fr.time is not None else (times[-1] + 1.0 / rate if times else 0.0)
                times.append(float(t))
                if on_frame is not None:
                    results.append(on_frame(fr))
        except av.error.FFmpegError as e:
            raise SourceError("corrupt", f"{path}: decoding failed after {len(times)} frames ({e})") from e
    if not times:
        raise SourceError("corrupt", f"{path}: the video stream has no decodable frame")
    return times, 1.0 / rate, facts, results


def timeline(times: list[float], last_duration: float) -> tuple[np.ndarray, int]:
    """(source frame index for each 25 fps frame, number of 25 fps frames) for frame times ``times``.

    Frame k takes the source frame nearest to time t0 + k / 25 (ties to the earlier frame)."""
    order = np.argsort(np.asarray(times, np.float64), kind="stable")  # decoders output in presentation order;
    t = np.asarray(times, np.float64)[order]  # sorting only guards against broken timestamps
    t = t - t[0]
    end = t[-1] + last_duration
    n = int(math.floor(end * FPS + 0.05))  # mkv / webm store times in ms: 1.9997 s is 2 s
    grid = np.arange(n, dtype=np.float64) / FPS
    mids = (t[1:] + t[:-1]) / 2.0  # frame i owns [mid_{i-1}, mid_i); a tie goes to the earlier frame
    src = np.searchsorted(mids, grid, side="left")
    return order[np.minimum(src, len(t) - 1)], n


def decode_audio(path: str, video_start: float, num_frames: int) -> tuple[np.ndarray, dict]:
    """16 kHz mono float32 audio of exactly ``num_frames * 640`` samples on the video's timeline."""
    import av
    import librosa

    with _open(path) as c:
        if not c.streams.audio:
            raise SourceError("no_audio", f"{path}: no audio stream; the speech is what the model learns from")
        st = c.streams.audio[0]
        rate = int(st.codec_context.sample_rate or st.rate)
        facts = {"audio_codec": st.codec_context.name, "audio_rate": rate,
                 "audio_channels": int(st.codec_context.channels)}
        res = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks: list[np.ndarray] = []
        first: float | None = None
        try:
            for fr in c.decode(st):
                if first is None and fr.time is not None:
                    first = float(fr.time)
                for out in res.resample(fr):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in res.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as e:
            raise SourceError("corrupt", f"{path}: audio decoding failed ({e})") from e
    wave = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if wave.size == 0:
        raise SourceError("no_audio", f"{path}: the audio stream holds no samples")
    if rate != SAMPLE_RATE:
        wave = librosa.resample(wave, orig_sr=rate, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    shift = int(round(((first if first is not None else video_start) - video_start) * SAMPLE_RATE))
    wave = np.concatenate([np.zeros(shift, np.float32), wave]) if shift >= 0 else wave[-shift:]
    need = num_frames * HOP
    short = (need - len(wave)) / SAMPLE_RATE
    if short > AUDIO_SLACK_S:
        raise SourceError(
            "audio_short",
            f"{path}: the audio ends {short:.2f} s before the video; trim the video or fix the audio track",
        )
    facts["audio_end_s"] = round(len(wave) / SAMPLE_RATE, 4)
    out = np.zeros(need, np.float32)
    out[: min(need, len(wave))] = wave[:need]
    return out, facts


@dataclass
class DecodedSource:
    """A source on the 25 fps timeline: which source frame each output frame shows, and the audio."""

    path: str
    info: SourceInfo
    frame_map: np.ndarray  # [num_frames] source frame index (decode order) of each 25 fps frame
    audio: np.ndarray  # float32 [num_frames * 640] at 16 kHz
    analysis: list  # on_frame's result per SOURCE frame (index with frame_map)

    def frames(self, start: int = 0, stop: int | None = None, size: tuple[int, int] | None = None
               ) -> Iterator[tuple[int, np.ndarray]]:
        """(k, uint8 RGB frame) for 25 fps frames k in [start, stop), decoded in one forward pass.

        ``size`` = (width, height) scales in the decoder (swscale), so big sources are never held at
        full size when a smaller picture is all the caller needs."""
        import av

        stop = self.info.num_frames if stop is None else min(stop, self.info.num_frames)
        if start >= stop:
            return
        wanted: dict[int, list[int]] = {}
        for k in range(start, stop):
            wanted.setdefault(int(self.frame_map[k]), []).append(k)
        last = max(wanted)
        kw = {"format": "rgb24"} if size is None else {"format": "rgb24", "width": size[0], "height": size[1]}
        with _open(self.path) as c:
            try:
                for i, fr in enumerate(c.decode(c.streams.video[0])):
                    if i in wanted:
                        arr = fr.reformat(**kw).to_ndarray()
                        for k in wanted[i]:
                            yield k, arr
                    if i >= last:
                        break
            except av.error.FFmpegError as e:
                raise SourceError("corrupt", f"{self.path}: decoding failed at frame {i} ({e})") from e


def open_source(path: str, on_frame: Callable[[Any], Any] | None = None) -> DecodedSource:
    """Check and map a source onto the 25 fps / 16 kHz timeline (frames are decoded later, on demand);
    ``on_frame`` runs on every decoded source frame in the same pass (see ``DecodedSource.analysis``)."""
    times, last_dur, facts, results = _frame_times(path, on_frame)
    frame_map, n = timeline(times, last_dur)
    decoded = max(times) - min(times) + last_dur
    stated = facts["stated"]
    if stated is not None and decoded < stated - max(TRUNCATED_SLACK_S, 0.05 * stated):
        raise SourceError(
            "truncated",
            f"{path}: the header says {stated:.2f} s but only {decoded:.2f} s of video decode; the file "
            "was cut short (re-download it)",
        )
    if n < 1:
        raise SourceError("corrupt", f"{path}: shorter than one 25 fps frame")
    audio, afacts = decode_audio(path, min(times), n)
    info = SourceInfo(
        width=facts["width"], height=facts["height"], fps=facts["fps"], video_codec=facts["video_codec"],
        audio_codec=afacts["audio_codec"], audio_rate=afacts["audio_rate"],
        audio_channels=afacts["audio_channels"], num_frames=n, first_time=float(min(times)),
        stated_duration=stated,
    )
    return DecodedSource(str(path), info, frame_map, audio, results)
