"""Head nods and shakes that follow the voice's emphasis.

Why: a nod with a random rate and phase is a motion no model can predict from what it is given
(portrait, voice, prompt), so a regression-trained model learns its average, which is no motion
(the v4 demo nodded 0.1-1 px where its world nodded +-3 px). People nod on stressed words; a
nod driven by the loudness of the voice is both more natural and predictable from the audio.

The drive is a band-pass of the mouth opening (fast minus slow causal exponential average), so a
rise in loudness dips the head and a pause lets it come back; causal, so a window of the clip
sees everything its motion depends on but the last half second before it.
"""

from __future__ import annotations

import numpy as np

FAST_S = 0.08  # time constant of the fast average (s): follows words, not single syllables
SLOW_S = 0.40  # time constant of the slow average (s): the loudness the head is at rest with
GAIN = 7.0  # tanh gain: ordinary speech swings the head through most of its range


def _ema(x: np.ndarray, tau_frames: float) -> np.ndarray:
    a = 1.0 - np.exp(-1.0 / max(tau_frames, 1e-6))
    y = np.empty_like(x)
    acc = float(x[0])
    for i, v in enumerate(x):
        acc += a * (float(v) - acc)
        y[i] = acc
    return y


def speech_rhythm(opening: np.ndarray, fps: float) -> np.ndarray:
    """[F] motion drive in -1..1 from the mouth opening [F] (0..1): 0 on frame 0 and in steady sound
    or silence, positive when the voice gets louder."""
    x = np.asarray(opening, np.float64).reshape(-1)
    if x.size == 0:
        return np.zeros(0, np.float32)
    band = _ema(x, FAST_S * fps) - _ema(x, SLOW_S * fps)
    return np.tanh(GAIN * band).astype(np.float32)
