"""Log-mel building blocks in numpy: librosa's Slaney mel filter bank and a framed STFT, without librosa.

Why: `import librosa` (numba, scipy.signal) cost more than a second before the first streamed frame,
and the demo's audio features need only a filter bank and an FFT. `mel_filter_bank` follows
`librosa.filters.mel` (Slaney mel scale and area normalisation, float32) step for step and `power_frames`
`librosa.stft(center=False)`'s framing and scipy's float32 FFT, so the features are the ones the demo model was
trained on (tests/test_streaming_live.py compares them with librosa's).
"""

from __future__ import annotations

import numpy as np

_F_SP = 200.0 / 3  # Slaney: linear below 1 kHz, 200/3 Hz per mel
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    f = np.asanyarray(hz, dtype=np.float64)
    mels = f / _F_SP
    return np.where(f >= _MIN_LOG_HZ, _MIN_LOG_MEL + np.log(np.maximum(f, 1e-12) / _MIN_LOG_HZ) / _LOGSTEP, mels)


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    m = np.asanyarray(mels, dtype=np.float64)
    return np.where(m >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL)), _F_SP * m)


def mel_filter_bank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """[n_mels, 1 + n_fft // 2] float32 triangular filters, Slaney-normalised (librosa's defaults)."""
    fmax = float(sr) / 2 if fmax is None else fmax
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, np.newaxis]
    return weights


def power_frames(y: np.ndarray, n_fft: int, hop: int, window: np.ndarray) -> np.ndarray:
    """|STFT|^2 [1 + n_fft // 2, frames] (float32) of frames y[hop*j : hop*j + n_fft] (no centring)."""
    from scipy import fft  # librosa's FFT backend (pocketfft in single precision): the same numbers

    n = 1 + (y.shape[0] - n_fft) // hop
    frames = np.lib.stride_tricks.as_strided(y, shape=(n_fft, n), strides=(y.strides[0], hop * y.strides[0]))
    spec = fft.rfft(window.reshape(-1, 1) * frames, axis=-2).astype(np.complex64)
    return (spec.real**2 + spec.imag**2).astype(np.float32)
