"""Nods and shakes in the world follow the voice's emphasis (training/data/head_rhythm.py).

Why it matters: a nod whose rate and phase are random cannot be predicted from portrait, voice and
prompt, so a model trained on it learns no motion; one timed by the voice can be learned."""

from __future__ import annotations

import numpy as np
import pytest

from training.data import splits
from training.data.head_rhythm import speech_rhythm
from training.data.mouth import FPS, mouth_from_audio
from training.data.render import WorldConfig, sample_identity, sample_scene
from training.data.speech import sample_voice, speech_track


def _speech(seed: int, n: int = 50) -> np.ndarray:
    rng = np.random.default_rng(seed)
    audio, _ = speech_track(rng, sample_voice(rng, "train"), n)
    return mouth_from_audio(audio, n)[0]


def test_rhythm_is_zero_at_rest_and_dips_on_a_louder_voice():
    assert speech_rhythm(np.zeros(0), FPS).shape == (0,)
    assert np.all(speech_rhythm(np.zeros(40), FPS) == 0)
    assert np.all(speech_rhythm(np.full(40, 0.7), FPS) == 0)  # steady sound: the head is at rest
    step = np.r_[np.zeros(10), np.full(90, 0.8)].astype(np.float32)
    r = speech_rhythm(step, FPS)
    assert r[0] == 0 and r[:10].max() == 0
    assert r[12] > 0.5  # the voice gets louder: the head dips
    assert abs(r[-1]) < 0.05  # and comes back once the loudness is steady
    assert np.all(np.abs(r) <= 1)
    # causal: what the voice does later never moves the head earlier
    other = step.copy()
    other[60:] = 0.1
    assert np.array_equal(speech_rhythm(other, FPS)[:60], r[:60])


def test_photo_nods_are_timed_by_the_voice_not_by_chance():
    pytest.importorskip("skimage")
    pytest.importorskip("mediapipe")
    from training.data import photo_face

    def dy(seed: int, op: np.ndarray, action: str = "nodding", key: str = "dy") -> np.ndarray:
        ctl = {"emotion": "neutral", "action": action, "background": "static"}
        sc = photo_face.sample_photo_scene(np.random.default_rng(seed), "luispedro", op, np.full(len(op), 0.5, np.float32),
                                           ctl, 128, 128, (0.2, 0.3))
        return sc.head[key]

    a, b = _speech(2), _speech(5)
    assert speech_rhythm(a, FPS).std() > 0.3  # this voice has emphasis to nod on
    # other crops, sizes and amplitudes (other scene seeds), the same voice: the same nods
    assert np.corrcoef(dy(1, a), dy(7, a))[0, 1] > 0.99
    assert np.corrcoef(dy(1, a), dy(1, b))[0, 1] < 0.8  # another voice, other nods
    assert np.corrcoef(dy(1, a, "shaking", "dx"), speech_rhythm(a, FPS))[0, 1] > 0.99
    assert dy(1, a)[0] == 0 and np.all(dy(1, a, "still") == 0)


def test_drawn_nods_are_timed_by_the_voice():
    op = _speech(3)
    ident = sample_identity(splits.sample_identity_id(np.random.default_rng(0), "train"), style="realistic")

    def pitch(seed: int) -> np.ndarray:
        ctl = {"emotion": "neutral", "action": "nodding", "background": "static"}
        sc = sample_scene(np.random.default_rng(seed), [ident], 0, op, np.full(len(op), 0.5, np.float32), ctl,
                          WorldConfig(64, 64, face_min=0.15, face_max=0.2))
        return sc.chars[0].pitch

    assert np.corrcoef(pitch(1), pitch(9))[0, 1] > 0.99
    assert np.corrcoef(pitch(1), speech_rhythm(op, FPS))[0, 1] > 0.99
