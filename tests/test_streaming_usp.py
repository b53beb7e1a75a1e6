"""The USP backend under the wavefront order: 2 gloo ranks (yunchang Ulysses) give the single-process
sweep's latent (fp32 tolerance, as tests/test_usp.py), two speakers, batched two- and three-fold CFG."""

from __future__ import annotations

import pytest
import torch

from magicinfinite_core.config import SamplerConfig
from magicinfinite_core.sampling.guidance import CFGConfig
from magicinfinite_core.sampling.sampler import sample, sampling_sigmas
from magicinfinite_core.sampling.wavefront import sample_wavefront
from tests.test_usp import (  # noqa: F401
    CFG,
    TOL,
    checkpoint,
    pool,
    reference,
    two_speaker_conditions,
    window_predictor,
)


@pytest.mark.slow
def test_usp_in_wavefront_order_equals_the_single_process_sweep(pool, reference):  # noqa: F811
    t, h, w = 14, 6, 6  # several windows per step, moving boundaries
    cond = two_speaker_conditions(t, h, w)
    cfg = CFGConfig(audio_scale=2.0, text_scale=1.5, boundary=0.75)
    sc = SamplerConfig(steps=3, shift=3.0, window_frames=13, overlap_frames=4)
    shape = (CFG.out_channels, t, h, w)

    def plain(**kw):
        with torch.no_grad():
            return reference(**kw)

    ref = sample(window_predictor(plain, cond, cfg), shape, config=sc, seed=7)
    group = pool(2)
    out = sample_wavefront(window_predictor(group, cond, cfg), shape, sampling_sigmas(sc).tolist(), sc, seed=7)
    assert (out - ref).abs().max() < TOL
