import pytest
import torch

from magicinfinite_core.config import SamplerConfig
from magicinfinite_core.errors import MagicInfiniteError
from magicinfinite_core.sampling.sampler import Progress, fill_noise, sample, sampling_sigmas
from magicinfinite_core.sampling.state import has_state, load_state

SHAPE = (4, 23, 4, 4)  # 23 latent frames = 89 video frames: 3-4 windows of 9
CFG = SamplerConfig(steps=5, shift=3.0, window_frames=33, overlap_frames=8, shift_windows=True)


class TinyConv(torch.nn.Module):
    """Seeded stand-in predictor whose output depends on its whole window (temporal conv)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv3d(4, 4, 3, padding=1)
        with torch.no_grad():
            for p in self.conv.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)

    def __call__(self, x, sigma, win):
        return self.conv(x) + x.mean(dim=2, keepdim=True) * sigma


def test_constant_prediction_blends_to_the_same_constant():
    def const(x, sigma, win):
        return torch.full_like(x, 0.37)

    gen = torch.Generator().manual_seed(5)
    noise = torch.empty(SHAPE)
    fill_noise(noise, gen)
    out = sample(const, SHAPE, config=CFG, seed=5)
    torch.testing.assert_close(out, noise - 0.37, rtol=0, atol=1e-6)  # sum of sigma steps is -1


def test_framewise_predictor_matches_one_big_window():
    """Per-frame predictions are identical in every window, so blending must reproduce them exactly."""

    def framewise(x, sigma, win):
        idx = torch.arange(win.start, win.end, dtype=x.dtype).view(1, 1, -1, 1, 1)
        return 0.5 * x + torch.sin(idx) * sigma

    out = sample(framewise, SHAPE, config=CFG, seed=1)
    one = SamplerConfig(steps=5, shift=3.0, window_frames=1 + 4 * (SHAPE[1] - 1), overlap_frames=0)
    ref = sample(framewise, SHAPE, config=one, seed=1)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_same_seed_same_latent_bit_for_bit():
    a = sample(TinyConv(), SHAPE, config=CFG, seed=3)
    b = sample(TinyConv(), SHAPE, config=CFG, seed=3)
    c = sample(TinyConv(), SHAPE, config=CFG, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_distilled_mode_one_pass_per_window_and_step():
    calls = []

    def pred(x, sigma, win):
        calls.append((sigma, win.index))
        return TinyConv()(x, sigma, win)

    out = sample(pred, SHAPE, config=CFG, distilled=True, seed=0)
    sig = sampling_sigmas(CFG, distilled=True)
    assert len(sig) == 5 and float(sig[-1]) == 0.0
    assert sorted({s for s, _ in calls}, reverse=True) == pytest.approx(sig[:-1].tolist())
    assert len(calls) == len(set(calls))  # exactly one pass per (step, window)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("distilled", [False, True])
def test_resume_after_interruption_equals_uninterrupted(tmp_path, distilled):
    full = sample(TinyConv(), SHAPE, config=CFG, distilled=distilled, seed=7)

    class Crash(RuntimeError):
        pass

    def crash_mid_step(p: Progress):
        if p.step == 3 and p.window == 2:
            raise Crash

    state = tmp_path / "state"
    with pytest.raises(Crash):
        sample(TinyConv(), SHAPE, config=CFG, distilled=distilled, seed=7, state_dir=state, callback=crash_mid_step)
    assert has_state(state) and load_state(state).step == 2  # lost at most the step in flight
    resumed = sample(TinyConv(), SHAPE, config=CFG, distilled=distilled, seed=7, state_dir=state, resume=True)
    assert torch.equal(resumed, full)
    assert load_state(state).step == load_state(state).total_steps
    with pytest.raises(MagicInfiniteError, match="different inputs"):
        sample(TinyConv(), SHAPE, config=CFG, distilled=distilled, seed=8, state_dir=state, resume=True)


def test_memory_mapped_latent_matches_ram(tmp_path):
    a = sample(TinyConv(), SHAPE, config=CFG, seed=2)
    b = sample(TinyConv(), SHAPE, config=CFG, seed=2, latent_file=tmp_path / "latent.npy")
    assert torch.equal(a, b)


def test_progress_reports_every_window_with_eta():
    seen: list[Progress] = []
    sample(TinyConv(), SHAPE, config=CFG, seed=0, callback=seen.append)
    assert seen[-1].done == seen[-1].total == len(seen)
    assert {p.step for p in seen} == set(range(1, CFG.steps + 1))
    assert all(1 <= p.window <= p.windows for p in seen) and seen[-1].eta_s == 0
    assert "step 5/5" in str(seen[-1])
