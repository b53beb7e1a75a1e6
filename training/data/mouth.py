"""Audio -> mouth ground truth, and the inverse check: mouth opening measured from pixels.

The world's lips are driven by one fixed, deterministic function of the waveform so that
"audio -> lips" is learnable and the evaluator knows the exact target for any audio.

Definitions (25 fps video, 16 kHz audio, so one video frame = 640 samples):

* Frame ``t`` is analysed with a 1280-sample (80 ms) Hann window centred on the middle of the
  frame (sample ``640 * t + 320``).
* Opening: RMS in dB, normalised per clip: ``(dB - (peak - 24)) / 20`` clipped to 0..1, where
  ``peak`` is the clip's loudest frame. Frames quieter than -50 dBFS (absolute) are silent -> 0;
  an all-silent clip is all zeros.
* Width: spectral centroid on a log scale, 450 Hz -> 0 (rounded "oo"), 2600 Hz -> 1 (spread "ee",
  "s"); silent frames get the neutral 0.5.
* Both are smoothed with a [1, 2, 1] / 4 kernel (lips cannot jump in 40 ms).
* Lip lead: real lips move before the sound they make (the mouth opens, then the voice starts);
  we use a fixed lead of ONE frame (40 ms): ``opening[t] = raw[t + 1]``, the last frame repeats.
  Evaluators searching for the best audio/video offset should find +1 frame of lips ahead.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
FPS = 25
HOP = SAMPLE_RATE // FPS  # 640
WIN = 2 * HOP  # 1280
LIP_LEAD_FRAMES = 1
SILENCE_DBFS = -50.0
DYN_RANGE_DB = 24.0
SPAN_DB = 20.0
CENTROID_LO_HZ = 450.0
CENTROID_HI_HZ = 2600.0
INTERIOR_LUM = 0.10  # luminance of the rendered mouth interior
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # Rec. 601 grey level of an RGB pixel


def _frames(wave: np.ndarray, num_frames: int) -> np.ndarray:
    """[F, WIN] analysis windows centred on each video frame's midpoint."""
    need = num_frames * HOP
    w = np.zeros(need + WIN, dtype=np.float64)
    n = min(len(wave), need)
    w[HOP : HOP + n] = wave[:n]  # pad HOP on the left so window t starts at t*HOP
    idx = np.arange(num_frames)[:, None] * HOP + np.arange(WIN)[None, :]
    # original sample s sits at w[s + HOP]; window t then starts at sample t*HOP + HOP/2 - HOP,
    # i.e. it is centred on the frame midpoint t*HOP + HOP/2
    return w[idx + HOP // 2]


def _smooth(x: np.ndarray) -> np.ndarray:
    if len(x) < 3:
        return x
    p = np.concatenate([x[:1], x, x[-1:]])
    return 0.25 * p[:-2] + 0.5 * p[1:-1] + 0.25 * p[2:]


def _lead(x: np.ndarray, k: int) -> np.ndarray:
    if k <= 0 or len(x) == 0:
        return x
    return np.concatenate([x[k:], np.repeat(x[-1:], min(k, len(x)))])


def mouth_from_audio(waveform16k: np.ndarray, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth lips for 16 kHz audio: (opening[F], width[F]) in 0..1, see module doc."""
    wave = np.asarray(waveform16k, dtype=np.float64).reshape(-1)
    if num_frames <= 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    fr = _frames(wave, num_frames)
    win = np.hanning(WIN)
    xw = fr * win
    rms = np.sqrt(np.mean(xw**2, axis=1) / np.mean(win**2) + 1e-20)
    db = 20.0 * np.log10(rms + 1e-10)
    silent = db < SILENCE_DBFS
    if silent.all():
        opening = np.zeros(num_frames)
    else:
        peak = db[~silent].max()
        opening = np.clip((db - (peak - DYN_RANGE_DB)) / SPAN_DB, 0.0, 1.0)
        opening[silent] = 0.0
    spec = np.abs(np.fft.rfft(xw, axis=1)) ** 2
    freqs = np.fft.rfftfreq(WIN, 1.0 / SAMPLE_RATE)
    centroid = (spec * freqs).sum(1) / (spec.sum(1) + 1e-20)
    lo, hi = np.log(CENTROID_LO_HZ), np.log(CENTROID_HI_HZ)
    width = np.clip((np.log(np.maximum(centroid, 1.0)) - lo) / (hi - lo), 0.0, 1.0)
    width[silent] = 0.5
    opening = _lead(_smooth(opening), LIP_LEAD_FRAMES)
    width = _lead(_smooth(width), LIP_LEAD_FRAMES)
    return opening.astype(np.float32), width.astype(np.float32)


def measure_mouth_opening(frame: np.ndarray, mouth_box: np.ndarray | tuple[float, ...]) -> float:
    """Mouth opening read back from pixels, so generated videos can be scored against ground truth.

    ``mouth_box`` is (x0, y0, x1, y1) in pixels: the box the mouth interior fills at full opening
    (the renderer's ``gt["mouth_box"]``). The interior is much darker than lips and skin, so each
    pixel's darkness is mapped linearly between the local lip/skin luminance (median of a ring
    around the box) and the interior's luminance (~0.1): a pixel half covered by the interior
    counts one half, which keeps tiny mouths measurable. The dark area is divided by the area of
    the fully open interior (an ellipse filling the box): ~0 closed, ~0.8-1 fully open (teeth
    hide part of it). Lossy decoding is fine; faces under ~20 px wide get noisy.
    """
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in mouth_box)
    bw, bh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    # margin: a slightly displaced mouth (generated video) is still inside, and the ring gives
    # the reference lip/skin brightness
    mx, my = 0.25 * bw + 1.0, 0.4 * bh + 1.0
    xa, xb = int(np.floor(max(x0 - mx, 0))), int(np.ceil(min(x1 + mx, w)))
    ya, yb = int(np.floor(max(y0 - my, 0))), int(np.ceil(min(y1 + my, h)))
    if xb <= xa or yb <= ya:
        return 0.0
    crop = frame[ya:yb, xa:xb].astype(np.float32) / (255.0 if frame.dtype == np.uint8 else 1.0)
    lum = crop @ LUMA
    yy = np.arange(ya, yb)[:, None] + 0.5
    xx = np.arange(xa, xb)[None, :] + 0.5
    ex, ey = 0.1 * bw + 0.5, 0.1 * bh + 0.5  # counted region: the box plus a thin margin
    inside = (xx >= x0 - ex) & (xx <= x1 + ex) & (yy >= y0 - ey) & (yy <= y1 + ey)
    ring = lum[~inside]
    ref = float(np.median(ring)) if ring.size else 0.5
    dark = np.clip((ref - lum) / max(ref - INTERIOR_LUM, 0.1), 0.0, 1.0)
    return float(dark[inside].sum() / (np.pi / 4.0 * bw * bh))
