"""Voice activity: does a clip's audio hold speech, loud enough to learn lips from?

Why a rule and not a model: it must run offline on CPU in every ingestion task, and the two things
it has to tell apart are clear-cut: speech is loud *and* harmonic / formant-shaped, while silence is
quiet and steady noise (hum, hiss, wind) is spectrally flat or unvarying.

Per 25 ms window (400 samples, 10 ms hop, 16 kHz) a window is *voiced* when all hold:

* energy above ``VOICE_DBFS`` (-45 dBFS) and above the clip's noise floor (10th percentile of window
  energies) + ``FLOOR_MARGIN_DB`` (6 dB);
* spectral flatness (geometric / arithmetic mean of the power spectrum, 100-4000 Hz) below
  ``MAX_FLATNESS`` (0.35): white noise measures ~0.55-0.6, espeak-ng and human speech 0.01-0.2.

A clip is ``too_quiet`` when its loudest 100 ms is below ``QUIET_DBFS`` (-40 dBFS), else
``no_speech`` when under ``MIN_SPEECH_SHARE`` (20 %) of its windows are voiced. Measured on the test
audio (``tests/test_ingest.py``): espeak-ng sentences 45-90 % voiced, white noise at -20 dBFS 0 %,
digital silence and -60 dBFS hiss too quiet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.data.mouth import SAMPLE_RATE

WIN = 400
HOP = 160
VOICE_DBFS = -45.0
FLOOR_MARGIN_DB = 6.0
MAX_FLATNESS = 0.35
QUIET_DBFS = -40.0
MIN_SPEECH_SHARE = 0.2


@dataclass(frozen=True)
class VoiceActivity:
    """Per-clip voice-activity summary (stored in meta.json / rejects.jsonl)."""

    speech_share: float  # fraction of 25 ms windows that are voiced
    peak_dbfs: float  # loudest 100 ms (RMS) in dBFS
    voiced: np.ndarray  # bool per 10 ms hop

    def to_dict(self) -> dict:
        return {"speech_share": round(self.speech_share, 4), "peak_dbfs": round(self.peak_dbfs, 2)}


def _windows(x: np.ndarray, win: int, hop: int) -> np.ndarray:
    if len(x) < win:
        x = np.pad(x, (0, win - len(x)))
    n = 1 + (len(x) - win) // hop
    idx = np.arange(n)[:, None] * hop + np.arange(win)[None, :]
    return x[idx]


def voice_activity(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> VoiceActivity:
    """Voiced windows of 16 kHz mono audio (module docstring)."""
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"voice_activity expects {SAMPLE_RATE} Hz audio, got {sample_rate}")
    x = np.asarray(audio, np.float64).reshape(-1)
    fr = _windows(x, WIN, HOP)
    win = np.hanning(WIN)
    xw = fr * win
    power = np.mean(xw**2, axis=1) / np.mean(win**2)
    db = 10.0 * np.log10(power + 1e-12)
    spec = np.abs(np.fft.rfft(xw, axis=1)) ** 2 + 1e-12
    freqs = np.fft.rfftfreq(WIN, 1.0 / SAMPLE_RATE)
    band = (freqs >= 100) & (freqs <= 4000)
    s = spec[:, band]
    flat = np.exp(np.mean(np.log(s), axis=1)) / np.mean(s, axis=1)
    floor = float(np.percentile(db, 10))
    voiced = (db > VOICE_DBFS) & (db > floor + FLOOR_MARGIN_DB) & (flat < MAX_FLATNESS)
    long = _windows(x, 1600, 800)
    peak = float(10.0 * np.log10(np.mean(long**2, axis=1).max() + 1e-12))
    return VoiceActivity(float(voiced.mean()), peak, voiced)


def speech_problem(va: VoiceActivity, min_share: float = MIN_SPEECH_SHARE) -> str | None:
    """``too_quiet`` / ``no_speech`` / None for a clip's voice activity."""
    if va.peak_dbfs < QUIET_DBFS:
        return "too_quiet"
    if va.speech_share < min_share:
        return "no_speech"
    return None
