"""Wavefront sampler and order-free noise: the wavefront order gives the sweep's latent bit for bit.

The equality runs the real pipeline predictor (tiny random bundle, batched CFG, per-window audio and
speaker masks) on 61 s of audio features with moving window boundaries; everything else uses a
small seeded conv predictor.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magicinfinite_core.config import SamplerConfig, latent_frames
from magicinfinite_core.errors import MagicInfiniteError
from magicinfinite_core.inputs.portrait import load_portrait, pixel_speaker_masks
from magicinfinite_core.sampling.guidance import CFGConfig
from magicinfinite_core.sampling.noise_keys import INITIAL, frame_noise, keyed_noise, noise_key
from magicinfinite_core.sampling.predictor import WindowPredictor, build_conditions
from magicinfinite_core.sampling.sampler import sample, sampling_sigmas
from magicinfinite_core.sampling.wavefront import FixedPlans, GrowingPlans, WavefrontSampler, sample_wavefront
from magicinfinite_core.weights.bundle import random_bundle
from tests.test_sampler import TinyConv

CFG = SamplerConfig(steps=5, shift=3.0)


def test_keyed_noise_depends_only_on_its_key():
    a = frame_noise(3, 1, 10, (4, 2, 2))
    assert torch.equal(a, frame_noise(3, 1, 10, (4, 2, 2)))
    assert not torch.equal(a, frame_noise(3, 1, 11, (4, 2, 2)))
    assert not torch.equal(a, frame_noise(3, 2, 10, (4, 2, 2)))
    assert not torch.equal(a, frame_noise(4, 1, 10, (4, 2, 2)))
    block = keyed_noise(3, 1, 8, 12, (4, 2, 2))
    assert torch.equal(block[:, 2:3], a)  # a range is its frames, whatever the range
    assert noise_key(2**64 - 1, INITIAL, 0) != noise_key(0, INITIAL, 0)
    with pytest.raises(ValueError, match="seed"):
        noise_key(-1, 0, 0)


def _pipeline_predictor(speakers: int, cfg: CFGConfig, seconds: float = 61.0):
    """The generate() predictor on a tiny random model: conditions from a portrait, features, masks."""
    bundle = random_bundle(0)
    rng = np.random.default_rng(0)
    img, u8 = load_portrait(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), 64, 64)
    n = int(seconds * 25)
    feats = torch.from_numpy(rng.standard_normal((speakers, n, 64)).astype(np.float16))
    boxes = [[0, 0, 64, 64]] if speakers == 1 else [[0, 0, 32, 64], [32, 0, 64, 64]]
    masks = pixel_speaker_masks(u8, speakers, boxes)
    cond = build_conditions(bundle, img, "a person talks", feats, masks, torch.device("cpu"))
    shape = (bundle.dit.cfg.out_channels, latent_frames(n), 8, 8)
    return WindowPredictor(bundle.dit, cond, cfg), shape


@pytest.mark.parametrize("speakers", [1, 2])
@pytest.mark.parametrize("mode", ["base-cfg", "distilled"])
def test_wavefront_equals_sweep_bit_for_bit_on_61s(mode, speakers):
    torch.set_num_threads(1)
    distilled = mode == "distilled"
    cfg = CFGConfig.off() if distilled else CFGConfig(audio_scale=2.0, text_scale=1.5, boundary=0.75)
    predict, shape = _pipeline_predictor(speakers, cfg)
    sc = SamplerConfig(steps=2, shift=3.0, shift_windows=True)  # moving window boundaries
    ref = sample(predict, shape, config=sc, distilled=distilled, seed=11)
    out = sample_wavefront(predict, shape, sampling_sigmas(sc, distilled).tolist(), sc, distilled=distilled, seed=11)
    assert shape[1] == 382 and torch.equal(out, ref)


@pytest.mark.parametrize("distilled", [False, True])
def test_both_orders_of_the_engine_equal_the_sweep_sampler(distilled):
    shape = (4, 97, 4, 4)
    ref = sample(TinyConv(), shape, config=CFG, distilled=distilled, seed=3)
    sig = sampling_sigmas(CFG, distilled).tolist()
    for order in ("sweep", "wavefront"):
        assert torch.equal(sample_wavefront(TinyConv(), shape, sig, CFG, distilled=distilled, seed=3, order=order), ref)


def _first_yield_and_peak(total: int) -> tuple[int, int]:
    sig = sampling_sigmas(CFG).tolist()
    eng = WavefrontSampler(TinyConv(), (4, 4, 4), FixedPlans(total, CFG, 5), sig, seed=0)
    first = None
    for _ in eng.run():
        first = eng.windows_done if first is None else first
    return first, eng.peak_in_flight


def test_frames_in_flight_and_first_frame_do_not_grow_with_the_length():
    short, long = _first_yield_and_peak(60), _first_yield_and_peak(600)
    assert short[0] == long[0]  # the same windows run before the first final frame
    assert abs(short[1] - long[1]) <= 2  # in flight: set by steps and window, not the length (last window)
    assert long[1] <= CFG.steps * (9 + 2) and long[0] <= 3 * CFG.steps


def test_resume_from_the_in_flight_state_gives_the_same_frames():
    shape, sig = (4, 120, 4, 4), sampling_sigmas(CFG, True).tolist()
    ref = sample_wavefront(TinyConv(), shape, sig, CFG, distilled=True, seed=5)
    eng = WavefrontSampler(TinyConv(), (4, 4, 4), FixedPlans(120, CFG, 4), sig, distilled=True, seed=5)
    got = torch.empty(shape)
    it = eng.run()
    for _ in range(6):
        s, f = next(it)
        got[:, s : s + f.shape[1]] = f
    state = {k: v.clone() for k, v in eng.state().items()}
    del eng, it  # "killed"
    again = WavefrontSampler(TinyConv(), (4, 4, 4), FixedPlans(120, CFG, 4), sig, distilled=True, seed=5, state=state)
    for s, f in again.run():
        got[:, s : s + f.shape[1]] = f
    assert torch.equal(got, ref)


def test_growing_plans_fed_bit_by_bit_give_the_fixed_result():
    """Live input: the length is known only at the end; the result is the fixed-length one."""
    total, sig = 77, sampling_sigmas(CFG).tolist()
    ref = sample_wavefront(TinyConv(), (4, total, 4, 4), sig, CFG, seed=2)
    feed = iter(range(5, total, 5))

    def wait(plans: GrowingPlans) -> bool:
        nxt = next(feed, None)
        if nxt is None:
            plans.finish(total)
            return False
        plans.extend(nxt)
        return True

    got = torch.empty_like(ref)
    eng = WavefrontSampler(TinyConv(), (4, 4, 4), GrowingPlans(CFG, 5, wait), sig, seed=2)
    for s, f in eng.run():
        got[:, s : s + f.shape[1]] = f
    assert torch.equal(got, ref)


def test_unknown_order_is_refused():
    with pytest.raises(MagicInfiniteError, match="order must be one of"):
        WavefrontSampler(TinyConv(), (4, 4, 4), FixedPlans(10, CFG, 5), sampling_sigmas(CFG).tolist(), order="zigzag")
