"""Fragmented MP4 muxing of frames as they come: a file that is still growing, or cut short, plays.

Why: a normal MP4 has its index (moov) at the end, so until `close()` the file is unplayable and a
crash loses everything. With `movflags=frag_keyframe+empty_moov+default_base_moof` the header comes
first and every keyframe starts a self-contained fragment (moof + mdat); with a keyframe every
`gop` frames (default 25 = one second) a reader sees all but the last second of a growing file, and
a killed run leaves a playable partial video. The file grows under `<out stem>.partial.mp4` beside
`out` and is renamed to `out` when complete, so an existing `out` is never half overwritten. Audio is interleaved as the video advances, from a file / array (as
`VideoWriter`) or pushed live with `push_audio` (live input).
"""

from __future__ import annotations

from collections import deque
from fractions import Fraction
from pathlib import Path

import numpy as np

from magicinfinite_core.config import VIDEO_FPS
from magicinfinite_core.media.video_io import OUTPUT_CRF, OUTPUT_PRESET, AudioSource, VideoWriter, aac_rate

FRAGMENT_FLAGS = "frag_keyframe+empty_moov+default_base_moof"


class FragmentedVideoWriter(VideoWriter):
    """`VideoWriter` writing fragmented MP4 in place; `abort()` keeps what was written (it plays)."""

    def __init__(self, path: str | Path, width: int, height: int, fps: int = VIDEO_FPS,
                 audio: AudioSource | None = None, *, gop: int = VIDEO_FPS, live_audio: tuple[int, int] | None = None,
                 crf: int = OUTPUT_CRF, preset: str = OUTPUT_PRESET, threads: int = 1) -> None:
        """`live_audio=(sample_rate, channels)`: the audio track is fed with `push_audio` instead of `audio`."""
        if audio is not None and live_audio is not None:
            raise ValueError("give audio or live_audio, not both")
        super().__init__(path, width, height, fps=fps, audio=audio, crf=crf, preset=preset, threads=threads)
        # a keyframe (so a fragment) every `gop` frames, no scene-cut keyframes: fragments stay regular
        self.vstream.options = {**self.vstream.options, "g": str(int(gop)), "keyint_min": str(int(gop)),
                                "sc_threshold": "0"}
        self._live: deque[np.ndarray] | None = None
        if live_audio is not None:
            rate, channels = live_audio
            self.audio_rate = aac_rate(int(rate))
            self._live_rate, self._live_channels = int(rate), channels
            self.astream = self.container.add_stream("aac", rate=self.audio_rate)
            self.astream.layout = "mono" if channels == 1 else "stereo"
            self._layout = self.astream.layout.name
            self._audio_done = False
            self._live = deque()
            self._live_ended = False

    def _container_options(self) -> dict[str, str]:
        return {"movflags": FRAGMENT_FLAGS, "flush_packets": "1"}

    def push_audio(self, chunk: np.ndarray, end: bool = False) -> None:
        """Live audio: planar float32 [channels, n] in arrival order; `end=True` after the last chunk."""
        if self._live is None:
            raise RuntimeError("push_audio needs live_audio=(rate, channels)")
        if self._live_rate != self.audio_rate:  # a rate AAC does not take: resample as it arrives
            for out in self._live_resample(chunk, end):
                self._live.append(out)
        elif chunk.size:
            self._live.append(np.ascontiguousarray(chunk, dtype=np.float32))
        self._live_ended = self._live_ended or end

    def _live_resample(self, chunk: np.ndarray, end: bool) -> list[np.ndarray]:
        import av

        layout = "mono" if self._live_channels == 1 else "stereo"
        if getattr(self, "_resampler", None) is None:
            self._resampler, self._resampled_in = av.AudioResampler(format="fltp", layout=layout,
                                                                    rate=self.audio_rate), 0
        frames = []
        if chunk.size:
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk, dtype=np.float32), format="fltp",
                                               layout=layout)
            frame.sample_rate, frame.pts = self._live_rate, self._resampled_in
            frame.time_base = Fraction(1, self._live_rate)
            self._resampled_in += chunk.shape[1]
            frames += self._resampler.resample(frame)
        if end:
            frames += self._resampler.resample(None)
        return [f.to_ndarray().astype(np.float32, copy=False) for f in frames]

    def _pump_audio(self, until_s: float | None) -> None:
        if self._live is None:
            return super()._pump_audio(until_s)
        if until_s is None and getattr(self, "_resampler", None) is not None:  # closing: the resampler's tail
            self._live.extend(self._live_resample(np.zeros((self._live_channels, 0), np.float32), end=True))
            self._resampler = None
        while self._live and (until_s is None or self.audio_samples < until_s * self.audio_rate):
            self._encode_audio(self._live.popleft())

    def abort(self) -> None:
        """Close on an error or interrupt, keeping the partial file: the fragments written so far play."""
        if self.container is not None:
            try:
                for pkt in self.vstream.encode(None):
                    self.container.mux(pkt)
                self.container.close()
            except Exception:  # a broken encoder: the fragments already on disk still play
                pass
            self.container = None
