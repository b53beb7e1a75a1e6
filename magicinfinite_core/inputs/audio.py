"""Audio loading for MagicInfinite: any common file (or ComfyUI AUDIO) -> 16 kHz mono float32.

Why this module exists: the video is exactly as long as the audio (DESIGN.md §5), so every later stage
depends on one decoded, resampled waveform and one frame count derived from it. Decoding streams in
blocks (mix to mono and resample block by block with soxr, the resampler librosa uses by default) so
a one-hour file never needs a second full-length copy at the source rate.

Decoders: libsndfile (``soundfile``: wav, flac, ogg/vorbis, mp3, aiff, ...) first, then PyAV/FFmpeg
(m4a/aac, opus, the audio track of mp4/mkv/mov/webm video, anything else FFmpeg reads).

Bad input policy (each raises :class:`AudioError` with a line that says what to do, or warns):

* missing / empty / corrupt files, no audio track, a codec FFmpeg cannot decode -> error;
* zero samples, or shorter than one video frame (40 ms) -> error;
* NaN / Inf samples, or samples beyond +60 dBFS (e.g. 1e30) -> error (the file is damaged);
* longer than ``limits.MAX_VIDEO_SECONDS`` -> error, while decoding (memory stays bounded);
* sample rates below 4 kHz or above 768 kHz -> error; 192 kHz etc. is simply resampled;
* more than 2 channels -> mixed to mono with a warning (use ``load_speaker_tracks(...,
  split_channels=True)`` when channels are separate speakers); more than 64 channels -> error (almost
  always a transposed array);
* all-silent audio -> allowed, with an :class:`AudioWarning` (the mouth stays closed).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from magicinfinite_core.config import AUDIO_SAMPLE_RATE, VIDEO_FPS
from magicinfinite_core.errors import AudioError
from magicinfinite_core.limits import MAX_VIDEO_SECONDS

log = logging.getLogger(__name__)

MIN_SAMPLE_RATE = 4_000
MAX_SAMPLE_RATE = 768_000
MAX_CHANNELS = 64
SILENCE_PEAK = 1e-4  # -80 dBFS: below this the whole track counts as silent
MAX_SAMPLE_PEAK = 1000.0  # +60 dBFS: a float sample beyond this is damage, not loud speech
_BLOCK = 1 << 17  # frames per decode block at the source rate

AudioSource = str | os.PathLike | dict | tuple


class AudioWarning(UserWarning):
    """Audio that is usable but probably not what the user meant (silent, many channels, ...)."""


@dataclass(frozen=True)
class LoadedAudio:
    """A decoded track: mono float32 waveform at ``sample_rate`` and the video length it implies."""

    waveform: np.ndarray  # float32 [T]
    sample_rate: int
    duration_s: float
    num_frames: int  # video frames at 25 fps: round(duration_s * 25)
    source: str = ""

    @property
    def num_samples(self) -> int:
        return int(self.waveform.shape[0])


# --------------------------------------------------------------------------------------------- frames


def num_video_frames(duration_s: float, fps: int = VIDEO_FPS) -> int:
    """Video frames for an audio duration: round(duration_s * fps), halves rounded up.

    The output video is exactly as long as the audio, so this is the single place the length is set.
    """
    if not math.isfinite(duration_s) or duration_s < 0:
        raise AudioError(f"audio duration {duration_s!r} is not a usable length in seconds")
    return int(math.floor(duration_s * fps + 0.5))


def num_video_frames_for_samples(num_samples: int, sample_rate: int, fps: int = VIDEO_FPS) -> int:
    """Same as :func:`num_video_frames` in exact integer arithmetic (no float rounding at .5 edges)."""
    return (2 * int(num_samples) * fps + sample_rate) // (2 * sample_rate)


def samples_per_frame(sample_rate: int = AUDIO_SAMPLE_RATE, fps: int = VIDEO_FPS) -> int:
    """Audio samples per video frame (640 at 16 kHz / 25 fps)."""
    if sample_rate % fps:
        raise AudioError(f"sample rate {sample_rate} is not a multiple of {fps} fps")
    return sample_rate // fps


# ------------------------------------------------------------------------------------------ streaming


def check_samples(block: np.ndarray, name: str, offset: int, rate: int) -> None:
    """Refuse NaN / infinite samples and absurd levels (block [n, C] or [C, n], ``offset`` samples in).

    Why: such samples become NaN features and the sampler then reported a non-finite prediction ("check
    guidance/shift"), blaming the settings for a damaged file. Float WAVs may exceed 1.0 a little;
    ``MAX_SAMPLE_PEAK`` (+60 dBFS) is far above any real recording.
    """
    bad = ~np.isfinite(block)
    if bad.any() or float(np.abs(np.where(bad, 0, block)).max(initial=0.0)) > MAX_SAMPLE_PEAK:
        if bad.any():
            what, first = "NaN or infinite samples", np.argwhere(bad)[0]
        else:
            what, first = f"samples of {float(np.abs(block).max()):.3g} (full scale is 1.0)", \
                np.argwhere(np.abs(block) > MAX_SAMPLE_PEAK)[0]
        at = (offset + int(first[0] if block.shape[0] >= block.shape[-1] else first[-1])) / rate
        raise AudioError(f"{name} contains {what} (first at {at:.3f} s); the audio is damaged - re-export it "
                         "from your audio editor or pick another take")


class _Accumulator:
    """Receives [n, C] float32 blocks at the source rate; mixes/resamples them as they arrive."""

    def __init__(self, name: str, sr_in: int, channels: int, sr_out: int, mono: bool, expected: int | None):
        _check_rate_and_channels(name, sr_in, channels)
        self.name = name
        self.sr_in = sr_in
        self.sr_out = sr_out
        self.channels = channels
        self.mono = mono
        self.out_channels = 1 if mono else channels
        self.samples_in = 0
        self.peak = 0.0
        self._stream = (
            soxr.ResampleStream(sr_in, sr_out, self.out_channels, dtype="float32", quality="HQ")
            if sr_in != sr_out
            else None
        )
        self._chunks: list[np.ndarray] = []
        self._buf: np.ndarray | None = None
        self._filled = 0
        if expected is not None and expected > MAX_VIDEO_SECONDS * sr_in:
            raise AudioError(f"{name} is {expected / sr_in / 3600:.1f} hours long; the longest video made in one "
                             f"run is {MAX_VIDEO_SECONDS // 3600} hours: split it")
        if expected is not None and expected > 0:
            # Preallocate so the end needs no concatenated second copy (1 h at 16 kHz = 230 MB).
            n_out = int(math.ceil(expected * sr_out / sr_in)) + 64
            self._buf = np.empty((n_out, self.out_channels), dtype=np.float32)

    def add(self, block: np.ndarray) -> None:
        block = np.asarray(block, dtype=np.float32)
        if block.ndim == 1:
            block = block[:, None]
        if block.shape[0] == 0:
            return
        check_samples(block, self.name, self.samples_in, self.sr_in)
        self.samples_in += block.shape[0]
        if self.samples_in > MAX_VIDEO_SECONDS * self.sr_in:
            raise AudioError(f"{self.name} is longer than {MAX_VIDEO_SECONDS // 3600} hours, the longest video "
                             "made in one run; split it")
        self.peak = max(self.peak, float(np.abs(block).max()))
        if self.mono and block.shape[1] > 1:
            block = block.mean(axis=1, keepdims=True, dtype=np.float32)
        if self._stream is not None:
            block = self._stream.resample_chunk(np.ascontiguousarray(block))
            if block.ndim == 1:
                block = block[:, None]
        self._push(block)

    def _push(self, block: np.ndarray) -> None:
        n = block.shape[0]
        if n == 0:
            return
        if self._buf is not None and self._filled + n <= self._buf.shape[0]:
            self._buf[self._filled : self._filled + n] = block
            self._filled += n
            return
        if self._buf is not None:  # longer than announced: fall back to a list
            self._chunks.append(self._buf[: self._filled].copy())
            self._buf = None
        self._chunks.append(np.array(block, dtype=np.float32, copy=True))

    def finish(self) -> np.ndarray:
        """[C_out, T_out] float32."""
        if self._stream is not None:
            tail = self._stream.resample_chunk(np.zeros((0, self.out_channels), np.float32), last=True)
            if tail.ndim == 1:
                tail = tail[:, None]
            self._push(tail)
        if self._buf is not None:
            out = self._buf[: self._filled]
        elif self._chunks:
            out = np.concatenate(self._chunks, axis=0)
        else:
            out = np.zeros((0, self.out_channels), np.float32)
        self._chunks = []
        # Exact length the duration implies; soxr may differ by a sample or two.
        want = int(round(self.samples_in * self.sr_out / self.sr_in))
        if out.shape[0] > want:
            out = out[:want]
        elif out.shape[0] < want:
            out = np.concatenate([out, np.zeros((want - out.shape[0], out.shape[1]), np.float32)])
        return np.ascontiguousarray(out.T)


def _check_rate_and_channels(name: str, sr: int, channels: int) -> None:
    if not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise AudioError(f"{name}: sample rate {sr!r} is invalid; it must be a positive integer in Hz")
    if sr < MIN_SAMPLE_RATE:
        raise AudioError(
            f"{name}: sample rate {sr} Hz is too low to carry speech (need >= {MIN_SAMPLE_RATE} Hz); "
            "use the original recording"
        )
    if sr > MAX_SAMPLE_RATE:
        raise AudioError(f"{name}: sample rate {sr} Hz is above {MAX_SAMPLE_RATE} Hz; export at 48 kHz")
    if channels < 1:
        raise AudioError(f"{name} has no audio channels; pick a file with sound")
    if channels > MAX_CHANNELS:
        raise AudioError(
            f"{name}: {channels} channels is not plausible audio; if this is an array, pass it as "
            "[channels, samples] (ComfyUI AUDIO: waveform [batch, channels, samples])"
        )


def _decode_soundfile(path: Path, acc_factory) -> tuple[_Accumulator, int] | None:
    """Decode with libsndfile; None if libsndfile does not know the format."""
    import soundfile as sf

    try:
        f = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None
    with f:
        if f.format == "MP3":
            # libsndfile/mpg123 pads a truncated mp3 to the header's length with stale samples;
            # FFmpeg reports the damage instead, so let PyAV decode mp3.
            return None
        acc = acc_factory(f.samplerate, f.channels, f.frames if f.frames > 0 else None)
        try:
            for block in f.blocks(blocksize=_BLOCK, dtype="float32", always_2d=True):
                acc.add(block)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise AudioError(f"{path.name} is truncated or corrupt ({e}); re-export the file") from e
        return acc, f.channels


def _av_blocks(container, stream) -> Iterator[np.ndarray]:
    import av

    resampler = av.AudioResampler(format="fltp")  # keep layout and rate, float planar
    for frame in container.decode(stream):
        for out in resampler.resample(frame):
            yield out.to_ndarray().T  # (C, n) -> (n, C)
    for out in resampler.resample(None):
        yield out.to_ndarray().T


def _decode_av(path: Path, acc_factory) -> tuple[_Accumulator, int]:
    import av

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise AudioError(
            f"cannot read {path.name}: it is corrupt or not an audio/video file ({e.strerror or e}); "
            "export it again as wav, flac, mp3, ogg or m4a"
        ) from e
    with container:
        if not container.streams.audio:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "nothing"
            raise AudioError(
                f"{path.name} has no audio track (it contains {kinds}); pick a file with sound or add "
                "the voice track to the video"
            )
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        if ctx is None:
            raise AudioError(
                f"{path.name}: its audio codec is not supported by this FFmpeg build; convert it to "
                "wav, flac or mp3 (e.g. `sox in.xxx out.wav` or Audacity)"
            )
        channels = ctx.channels or (len(ctx.layout.channels) if ctx.layout else 0)
        acc = acc_factory(ctx.sample_rate or stream.rate, channels, None)
        try:
            for block in _av_blocks(container, stream):
                acc.add(block)
        except av.error.DecoderNotFoundError as e:
            raise AudioError(
                f"{path.name}: codec {ctx.name!r} cannot be decoded here; convert it to wav or flac"
            ) from e
        except av.error.FFmpegError as e:
            if acc.samples_in == 0:
                raise AudioError(f"{path.name} is truncated or corrupt ({e}); re-export the file") from e
            got = acc.samples_in / acc.sr_in
            warnings.warn(
                f"{path.name} is truncated or damaged after {got:.2f} s; using the {got:.2f} s that decoded. "
                "Re-export or re-upload the file if it should be longer.",
                AudioWarning,
                stacklevel=4,
            )
        return acc, channels


def _decode(source: AudioSource, *, sample_rate: int, mono: bool) -> tuple[np.ndarray, int, int, str, float]:
    """-> (waveform [C, T] at sample_rate, source rate, source channels, name, source peak)."""
    if isinstance(source, dict):
        return _decode_comfy(source, sample_rate=sample_rate, mono=mono)
    if isinstance(source, tuple):
        if len(source) != 2:
            raise AudioError(
                "pass raw audio as (array, sample_rate) with array [samples] or [channels, samples]"
            )
        return _decode_array(source[0], source[1], "audio array", sample_rate=sample_rate, mono=mono)
    if not isinstance(source, (str, os.PathLike)):
        raise AudioError(
            f"cannot load audio from {type(source).__name__}; pass a file path, a ComfyUI AUDIO dict or "
            "(array, sample_rate)"
        )
    path = Path(source)
    if not path.exists():
        raise AudioError(f"audio file {str(path)!r} does not exist; check the path")
    if path.is_dir():
        raise AudioError(f"{str(path)!r} is a folder; pick an audio file inside it")
    if path.stat().st_size == 0:
        raise AudioError(f"{path.name} is empty (0 bytes); the upload or export failed - save it again")

    def factory(sr: int, ch: int, expected: int | None) -> _Accumulator:
        return _Accumulator(path.name, int(sr), int(ch), sample_rate, mono, expected)

    res = _decode_soundfile(path, factory)
    if res is None:
        res = _decode_av(path, factory)
    acc, channels = res
    return acc.finish(), acc.sr_in, channels, path.name, acc.peak


def _decode_array(
    array: Any, sr: Any, name: str, *, sample_rate: int, mono: bool
) -> tuple[np.ndarray, int, int, str, float]:
    try:
        import torch

        if isinstance(array, torch.Tensor):
            array = array.detach().to("cpu", torch.float32).numpy()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    arr = np.asarray(array)
    if arr.dtype.kind not in "fiu":
        raise AudioError(f"{name} has dtype {arr.dtype}; audio must be float (-1..1) or integer PCM")
    if arr.dtype.kind in "iu":
        info = np.iinfo(arr.dtype)
        scale = float(max(abs(info.min), info.max + 1))
        offset = 0.0 if info.min < 0 else scale / 2
        arr = (arr.astype(np.float32) - offset) / (scale if info.min < 0 else offset)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2:
        raise AudioError(f"{name} has shape {tuple(arr.shape)}; expected [samples] or [channels, samples]")
    try:
        sr = int(sr)
    except (TypeError, ValueError):
        raise AudioError(f"{name}: sample rate {sr!r} is not a number of Hz") from None
    channels, n = arr.shape
    if n == 0:
        raise AudioError(f"{name} has zero samples; record or pick audio with sound in it")
    acc = _Accumulator(name, sr, channels, sample_rate, mono, n)
    for i in range(0, n, _BLOCK):
        acc.add(arr[:, i : i + _BLOCK].T)
    return acc.finish(), sr, channels, name, acc.peak


def _decode_comfy(audio: dict, *, sample_rate: int, mono: bool) -> tuple[np.ndarray, int, int, str, float]:
    if "waveform" not in audio or "sample_rate" not in audio:
        raise AudioError(
            f"a ComfyUI AUDIO must be a dict with 'waveform' and 'sample_rate', got keys {sorted(audio)}"
        )
    wf = audio["waveform"]
    shape = tuple(getattr(wf, "shape", ()))
    if len(shape) == 3:
        if shape[0] == 0:
            raise AudioError("the ComfyUI AUDIO batch is empty; connect a Load Audio node with a file")
        if shape[0] > 1:
            warnings.warn(
                f"ComfyUI AUDIO has a batch of {shape[0]} clips; using the first one",
                AudioWarning,
                stacklevel=3,
            )
        wf = wf[0]
    elif len(shape) not in (1, 2):
        raise AudioError(f"ComfyUI AUDIO waveform has shape {shape}; expected [batch, channels, samples]")
    return _decode_array(wf, audio["sample_rate"], "ComfyUI AUDIO", sample_rate=sample_rate, mono=mono)


# -------------------------------------------------------------------------------------------- public


def normalize_loudness(
    waveform: np.ndarray, target_dbfs: float = -20.0, peak_limit: float = 0.99
) -> np.ndarray:
    """Scale speech to a standard level (RMS of the active 40 ms blocks) without clipping.

    Why: quiet and loud recordings of the same words should drive the mouth the same way. Blocks more
    than 40 dB below the loudest block are ignored so pauses do not inflate the gain. Silent input is
    returned unchanged.
    """
    x = np.asarray(waveform, dtype=np.float32)
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak < SILENCE_PEAK:
        return x.copy()
    n = 640
    m = (x.shape[0] // n) * n
    blocks = x[:m].reshape(-1, n) if m else x[None]
    rms = np.sqrt(np.mean(blocks.astype(np.float64) ** 2, axis=1))
    active = rms[rms > rms.max() * 10 ** (-40 / 20)]
    level = float(np.sqrt(np.mean(active**2)))
    gain = 10 ** (target_dbfs / 20) / max(level, 1e-12)
    gain = min(gain, peak_limit / peak)
    return (x * np.float32(gain)).astype(np.float32)


def _finish(
    wave: np.ndarray, sample_rate: int, name: str, peak: float, normalize: bool, channels: int
) -> LoadedAudio:
    n = int(wave.shape[-1])
    if n == 0:
        raise AudioError(f"{name} has zero samples; record or pick audio with sound in it")
    if n * VIDEO_FPS < sample_rate:
        raise AudioError(
            f"{name} is {1000 * n / sample_rate:.1f} ms long, shorter than one video frame "
            f"({1000 // VIDEO_FPS} ms); use at least {1000 // VIDEO_FPS} ms of audio"
        )
    if peak < SILENCE_PEAK:
        warnings.warn(
            f"{name} is silent (peak {peak:.1e}); the video will be made but the mouth will stay closed. "
            "Check that the right track is connected.",
            AudioWarning,
            stacklevel=3,
        )
    elif normalize:
        wave = normalize_loudness(wave)
    return LoadedAudio(
        waveform=np.ascontiguousarray(wave, dtype=np.float32),
        sample_rate=sample_rate,
        duration_s=n / sample_rate,
        num_frames=num_video_frames_for_samples(n, sample_rate),
        source=name,
    )


def load_audio(
    source: AudioSource, *, sample_rate: int = AUDIO_SAMPLE_RATE, normalize: bool = False
) -> LoadedAudio:
    """Decode a file, a ComfyUI AUDIO dict or ``(array, sample_rate)`` to mono float32 at 16 kHz.

    Why: the audio encoder runs at 16 kHz mono and the output video length is derived from here.
    ``normalize=True`` levels speech to about -20 dBFS (see :func:`normalize_loudness`).
    """
    wave, _, channels, name, peak = _decode(source, sample_rate=sample_rate, mono=True)
    if channels > 2:
        warnings.warn(
            f"{name} has {channels} channels; mixing them to mono. If each channel is a different "
            "speaker, use load_speaker_tracks(path, split_channels=True).",
            AudioWarning,
            stacklevel=2,
        )
    return _finish(wave[0], sample_rate, name, peak, normalize, channels)


def audio_from_comfy(
    audio: dict, *, sample_rate: int = AUDIO_SAMPLE_RATE, normalize: bool = False
) -> LoadedAudio:
    """ComfyUI AUDIO {"waveform": [B, C, T] tensor, "sample_rate": int} -> LoadedAudio (first clip)."""
    if not isinstance(audio, dict):
        raise AudioError(f"expected a ComfyUI AUDIO dict, got {type(audio).__name__}")
    return load_audio(audio, sample_rate=sample_rate, normalize=normalize)


def to_comfy_audio(audio: LoadedAudio) -> dict:
    """LoadedAudio -> ComfyUI AUDIO dict (so nodes can pass the trimmed/resampled track on)."""
    import torch

    return {"waveform": torch.from_numpy(audio.waveform.copy())[None, None], "sample_rate": audio.sample_rate}


def pad_to_length(audio: LoadedAudio, num_samples: int) -> LoadedAudio:
    """Append silence so the track has ``num_samples`` samples (shorter speakers in a dialogue)."""
    n = audio.num_samples
    if num_samples < n:
        raise AudioError(f"cannot pad {audio.source} of {n} samples down to {num_samples}")
    if num_samples == n:
        return audio
    wave = np.concatenate([audio.waveform, np.zeros(num_samples - n, np.float32)])
    return replace(
        audio,
        waveform=wave,
        duration_s=num_samples / audio.sample_rate,
        num_frames=num_video_frames_for_samples(num_samples, audio.sample_rate),
    )


def load_speaker_tracks(
    sources: AudioSource | list[AudioSource],
    *,
    split_channels: bool = False,
    sample_rate: int = AUDIO_SAMPLE_RATE,
    normalize: bool = False,
) -> list[LoadedAudio]:
    """K speakers' tracks of equal length, from K sources or one multi-channel source split by channel.

    Why: each speaker gets its own feature stream and face mask; streams must cover the same frames,
    so shorter tracks are padded with silence at the end (their features are then features of zeros,
    i.e. a closed mouth). Speaker order = list order (or channel order: left = speaker 0). Pass
    several sources as a ``list``; a ``tuple`` is read as raw ``(array, sample_rate)``.
    """
    if split_channels:
        if isinstance(sources, list):
            if len(sources) != 1:
                raise AudioError("split_channels=True takes one multi-channel source, not a list of them")
            sources = sources[0]
        wave, _, channels, name, _ = _decode(sources, sample_rate=sample_rate, mono=False)
        if channels < 2:
            raise AudioError(
                f"{name} is mono, so it cannot be split into speakers; give one file per speaker or a "
                "stereo file with one speaker per channel"
            )
        tracks = []
        for c in range(channels):
            ch = wave[c]
            peak = float(np.abs(ch).max()) if ch.size else 0.0
            tracks.append(_finish(ch, sample_rate, f"{name} channel {c}", peak, normalize, 1))
    else:
        if not isinstance(sources, list):
            sources = [sources]
        sources = list(sources)
        if not sources:
            raise AudioError("no audio tracks given; connect one audio input per speaker")
        tracks = [load_audio(s, sample_rate=sample_rate, normalize=normalize) for s in sources]
    longest = max(t.num_samples for t in tracks)
    for t in tracks:
        if longest - t.num_samples > sample_rate:
            log.info("padding %s with %.2f s of silence", t.source, (longest - t.num_samples) / sample_rate)
    return [pad_to_length(t, longest) for t in tracks]
