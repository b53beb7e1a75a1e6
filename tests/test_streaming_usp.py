"""The USP backend under the wavefront order: 2 gloo ranks (yunchang Ulysses) give the single-process
sweep's latent (fp32 tolerance, as tests/test_usp.py), two speakers, batched two- and three-fold CFG."""

from __future__ import annotations

import pytest
import torch

from magicinfinite_core.config import SamplerConfig
from magicinfinite_core.sampling.guidance import CFGConfig
from magicinfinite_core.sampling.sampler import sample, sampling_sigmas
from magicinfinite_core.sampling.wavefront import sample_wavefront
from tests.test_usp import CFG, TOL, checkpoint, pool, reference, two_speaker_mask, window_predictor  # noqa: F401


@pytest.mark.slow
def test_usp_in_wavefront_order_equals_the_single_process_sweep(pool, reference):  # noqa: F811
    g = torch.Generator().manual_seed(99)
    t, h, w = 14, 6, 6  # several windows per step, moving boundaries
    a = CFG.audio
    empty = torch.zeros(1, 7, dtype=torch.bool)
    empty[:, 0] = True
    cond = dict(
        image_latent=torch.randn(1, CFG.out_channels, 1, h, w, generator=g),
        audio=torch.randn(1, 2, t, a.frames_per_latent, a.frame_window, a.feature_dim, generator=g),
        speaker_mask=two_speaker_mask(1, t, h // 2, w // 2),
        txt=torch.randn(1, 7, CFG.text_dim, generator=g),
        txt_mask=torch.tensor([[1, 1, 1, 1, 1, 0, 0]], dtype=torch.bool),
        empty_mask=empty,
        pooled=torch.randn(1, CFG.pooled_dim, generator=g),
    )
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
