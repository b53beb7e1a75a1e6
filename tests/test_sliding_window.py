import pytest
import torch

from magicinfinite_core.config import latent_frames
from magicinfinite_core.sampling.sliding_window import (
    blend_weights,
    coverage,
    max_shift,
    step_shift,
    video_frames_of_latent,
    window_plan,
    window_sizes,
)


def test_latent_frame_arithmetic():
    assert window_sizes(33, 8) == (9, 2)
    assert latent_frames(1) == 1 and latent_frames(5) == 2 and latent_frames(6) == 3 and latent_frames(33) == 9
    assert video_frames_of_latent(0) == (0, 1) and video_frames_of_latent(1) == (1, 5)
    # latent frames tile the video frames with no gap or overlap
    ranges = [video_frames_of_latent(k) for k in range(10)]
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    with pytest.raises(ValueError):
        window_sizes(33, 20)


@pytest.mark.parametrize("window,overlap", [(9, 2), (9, 0), (9, 4), (5, 1), (2, 0)])
def test_windows_cover_every_frame_exactly(window, overlap):
    for total in list(range(1, 60)) + [376, 1001]:
        for shift in range(max_shift(window, overlap) + 1):
            plan = window_plan(total, window, overlap, shift)
            cov = coverage(plan, total)
            assert cov.min() >= 1 and cov.max() <= 2, (total, shift)
            assert plan[0].start == 0 and plan[-1].end == total
            assert all(w.length <= window for w in plan)
            assert all(b.start > a.start and b.end > a.end for a, b in zip(plan, plan[1:], strict=False))
            acc = torch.zeros(total, dtype=torch.float64)
            for k, w in enumerate(plan):
                wk = blend_weights(plan, k)
                assert wk.min() > 0 and wk.max() <= 1
                acc[w.start : w.end] += wk
            torch.testing.assert_close(acc, torch.ones(total, dtype=torch.float64), rtol=0, atol=1e-12)


def test_last_window_is_never_a_sliver():
    plan = window_plan(17, 9, 2)  # natural windows [0,9) [7,16) [14,23) -> last reaches back
    assert plan[-1].end == 17 and plan[-1].length >= 9 - 2
    assert [(w.start, w.end) for w in window_plan(9, 9, 2)] == [(0, 9)]
    assert [(w.start, w.end) for w in window_plan(3, 9, 2)] == [(0, 3)]


def test_ramp_is_linear_and_paper_formula_is_out_of_range():
    plan = window_plan(16, 9, 2)
    assert [(w.start, w.end) for w in plan] == [(0, 9), (7, 16)]
    assert blend_weights(plan, 0)[-2:].tolist() == pytest.approx([2 / 3, 1 / 3])
    assert blend_weights(plan, 1)[:2].tolist() == pytest.approx([1 / 3, 2 / 3])
    o = 4  # the paper's printed w_orig at i = 0 exceeds 1; ours never does
    assert ((o - 1) - 0) / (o - 2) > 1


def test_shifts_move_seams_and_are_deterministic():
    shifts = [step_shift(j, 9, 2) for j in range(8)]
    assert shifts[0] == 0 and len(set(shifts)) > 2 and max(shifts) <= max_shift(9, 2)
    assert shifts == [step_shift(j, 9, 2) for j in range(8)]
    assert all(step_shift(j, 9, 2, enabled=False) == 0 for j in range(8))
    seams = {tuple(w.start for w in window_plan(60, 9, 2, s)) for s in set(shifts)}
    assert len(seams) == len(set(shifts))
