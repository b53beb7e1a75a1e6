"""Multi-condition CFG (normalised Eq. 7) and the flow-matching schedule."""

import pytest
import torch

from magicinfinite_core.config import dit_preset
from magicinfinite_core.models.dit import MagicInfiniteDiT
from magicinfinite_core.sampling import schedule as scheduler
from magicinfinite_core.sampling.guidance import (
    FULL,
    NO_AUDIO,
    PASSES,
    UNCOND,
    CFGConfig,
    cfg_coefficients,
    draw_scales,
    guided_velocity,
)


@pytest.mark.parametrize("mode", ["off", "two-fold", "three-fold"])
@pytest.mark.parametrize("wa,wt", [(0.0, 0.0), (4.5, 2.0), (1.0, 7.5)])
def test_coefficients_sum_to_one(mode, wa, wt):
    assert sum(cfg_coefficients(mode, wa, wt).values()) == pytest.approx(1.0)


def test_zero_scales_return_the_fully_conditioned_prediction():
    preds = {FULL: torch.randn(2, 3), NO_AUDIO: torch.randn(2, 3), UNCOND: torch.randn(2, 3)}
    from magicinfinite_core.sampling.guidance import combine

    for mode in ("two-fold", "three-fold"):
        assert torch.allclose(combine(preds, mode, 0.0, 0.0), preds[FULL])


def test_mode_switches_at_the_boundary():
    cfg = CFGConfig(boundary=0.75)
    assert cfg.mode(1.0) == "two-fold" and cfg.mode(0.75) == "two-fold" and cfg.mode(0.5) == "three-fold"
    assert CFGConfig.off().mode(0.9) == "off"
    with pytest.raises(ValueError):
        CFGConfig(boundary=1.5)


def test_dynamic_scales_are_seeded_and_centred():
    cfg = CFGConfig(audio_scale=4.0, text_scale=3.0, dynamic_std=0.5)
    a1, t1 = draw_scales(cfg, 4000, torch.Generator().manual_seed(0))
    a2, _ = draw_scales(cfg, 4000, torch.Generator().manual_seed(0))
    assert torch.equal(a1, a2)
    assert a1.mean().item() == pytest.approx(4.0, abs=0.05) and t1.mean().item() == pytest.approx(
        3.0, abs=0.05
    )


def test_batched_passes_equal_separate_passes():
    """All CFG passes run as one forward of the real tiny DiT; the result equals three forwards."""
    cfg = dit_preset("tiny")
    torch.manual_seed(0)
    model = MagicInfiniteDiT(cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    a = cfg.audio
    x = torch.randn(1, cfg.out_channels, 3, 8, 8, generator=g)
    image = torch.randn(1, cfg.out_channels, 1, 8, 8, generator=g)
    txt = {
        "cond": torch.randn(1, 6, cfg.text_dim, generator=g),
        "empty": torch.randn(1, 6, cfg.text_dim, generator=g),
    }
    pooled = torch.randn(1, cfg.pooled_dim, generator=g)
    audio = torch.randn(1, 1, 3, a.frames_per_latent, a.frame_window, a.feature_dim, generator=g)
    mask = torch.ones(1, 1, 3, 4, 4)
    from magicinfinite_core.models.dit import concat_image_condition

    def one_pass(xb, name):
        n = xb.shape[0]
        use_text = name != UNCOND
        return model(
            concat_image_condition(xb, image.expand(n, -1, -1, -1, -1)),
            torch.full((n,), 700.0),
            (txt["cond"] if use_text else txt["empty"]).expand(n, -1, -1),
            None,
            pooled.expand(n, -1),
            audio=audio.expand(n, -1, -1, -1, -1, -1),
            speaker_mask=mask.expand(n, -1, -1, -1, -1) * (1.0 if name == FULL else 0.0),
        )

    def forward(xrep, passes):
        chunks = xrep.chunk(len(passes))
        n = chunks[0].shape[0]
        return model(
            concat_image_condition(xrep, image.expand(xrep.shape[0], -1, -1, -1, -1)),
            torch.full((xrep.shape[0],), 700.0),
            torch.cat([(txt["cond"] if p != UNCOND else txt["empty"]).expand(n, -1, -1) for p in passes]),
            None,
            pooled.expand(xrep.shape[0], -1),
            audio=audio.expand(xrep.shape[0], -1, -1, -1, -1, -1),
            speaker_mask=torch.cat(
                [mask.expand(n, -1, -1, -1, -1) * (1.0 if p == FULL else 0.0) for p in passes]
            ),
        )

    cfg_g = CFGConfig(audio_scale=4.0, text_scale=2.5)
    with torch.no_grad():
        batched = guided_velocity(forward, x, 0.5, cfg_g)
        separate = {name: one_pass(x, name) for name in PASSES["three-fold"]}
    expected = 5.0 * separate[FULL] + (2.5 - 4.0) * separate[NO_AUDIO] - 2.5 * separate[UNCOND]
    assert torch.allclose(batched, expected, atol=1e-5)


def test_flow_schedule_and_euler():
    s = scheduler.flow_sigmas(10, shift=7.0)
    assert s[0] == 1 and s[-1] == 0 and torch.all(s[1:] < s[:-1])
    assert s[5] > 0.5  # the shift spends more steps at high noise
    data, noise = torch.randn(4, 3), torch.randn(4, 3)
    v = scheduler.velocity_target(data, noise)
    x = scheduler.add_noise(data, noise, 0.3)
    assert torch.allclose(scheduler.x0_from_velocity(x, v, 0.3), data, atol=1e-6)
    x_end = x  # exact velocity integrates exactly to the data
    sig = scheduler.flow_sigmas(4, shift=1.0)
    x_end = scheduler.add_noise(data, noise, 1.0)
    for a, b in zip(sig[:-1], sig[1:], strict=True):
        x_end = scheduler.euler_step(x_end, v, float(a), float(b))
    assert torch.allclose(x_end, data, atol=1e-5)


def test_distilled_step_list():
    s = scheduler.distilled_sigmas((1000, 750, 500, 250), shift=7.0)
    assert s.shape == (5,) and s[0] == 1 and s[-1] == 0
    assert torch.allclose(s[1], torch.tensor(7 * 0.75 / (1 + 6 * 0.75)))
    with pytest.raises(ValueError):
        scheduler.distilled_sigmas((250, 500))
