"""Sequence-parallel DiT on CPU/gloo (yunchang Ulysses): 2 and 4 ranks equal one process (fp32).

The worker groups are spawned once per layout (module-scoped fixture); starting processes is most
of this file's time on 2 cores. Shapes are chosen so shards split latent frames and leave a
replicated tail (L % N != 0), the hard cases for per-frame audio cross-attention and mask gating.
"""

from __future__ import annotations

import pytest
import torch

from magicinfinite_core.config import SamplerConfig, dit_preset
from magicinfinite_core.distributed.usp import (
    ReplicatedTailAttention,
    ShardPlan,
    YunchangUlyssesAttention,
    check_layout,
)
from magicinfinite_core.distributed.worker_group import ModelSpec, SequenceParallelWorkerGroup, resolve
from magicinfinite_core.models.attention import LocalAttention
from magicinfinite_core.models.dit import concat_image_condition
from magicinfinite_core.sampling.guidance import FULL, UNCOND, CFGConfig, guided_velocity
from magicinfinite_core.sampling.sampler import sample
from magicinfinite_core.weights.checkpoints import save_dit
from magicinfinite_core.weights.transformer_layouts import load_transformer

TOL = 1e-5
CFG = dit_preset("tiny")
# (ranks, ulysses, cfg); the two 4-rank layouts share one spawned group (`set_layout`).
LAYOUTS = {"2ranks-ulysses2": (2, 2, 1), "4ranks-ulysses4": (4, 4, 1), "4ranks-ulysses2-cfg2": (4, 2, 2),
           "4ranks-cfg4": (4, 1, 4)}  # CFG-parallel alone: no SP group


def two_speaker_mask(b: int, t: int, h: int, w: int) -> torch.Tensor:
    """Speaker 0 owns the left columns, speaker 1 the right ones, and nobody the top row."""
    m = torch.zeros(b, 2, t, h, w)
    m[:, 0, :, 1:, : w // 2] = 1
    m[:, 1, :, 1:, w // 2 :] = 1
    return m


def forward_inputs(b: int, t: int, hw: tuple[int, int], seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    a = CFG.audio
    txt_mask = torch.ones(b, 7, dtype=torch.bool)
    txt_mask[:, 5:] = False  # padded prompt tokens
    txt_mask[-1, 2:] = False  # a shorter prompt in the last sample
    return dict(
        x=torch.randn(b, CFG.in_channels, t, *hw, generator=g),
        timestep=torch.linspace(900.0, 300.0, b),
        txt=torch.randn(b, 7, CFG.text_dim, generator=g),
        txt_mask=txt_mask,
        pooled=torch.randn(b, CFG.pooled_dim, generator=g),
        audio=torch.randn(b, 2, t, a.frames_per_latent, a.frame_window, a.feature_dim, generator=g),
        speaker_mask=two_speaker_mask(b, t, hw[0] // 2, hw[1] // 2),
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    # Random N(0, 0.1) weights so the zero-initialised audio output projections are live.
    model = ModelSpec(config=CFG, seed=1234, init_std=0.1).build()
    return str(save_dit(tmp_path_factory.mktemp("usp") / "tiny.safetensors", model))


@pytest.fixture(scope="module")
def reference(checkpoint):
    return load_transformer(checkpoint)


@pytest.fixture(scope="module")
def pool(checkpoint):
    """At most one live worker group (2 cores): a request for another size closes the current one."""
    live: dict[int, SequenceParallelWorkerGroup] = {}

    def get(n: int) -> SequenceParallelWorkerGroup:
        if n not in live:
            for old in live.values():
                old.close()
            live.clear()
            live[n] = SequenceParallelWorkerGroup(
                n, ModelSpec(checkpoint=checkpoint), backend="gloo", attention="yunchang", threads=1
            )
        return live[n]

    yield get
    for grp in live.values():
        grp.close()


@pytest.fixture(scope="module", params=list(LAYOUTS), ids=list(LAYOUTS))
def group(request, pool):
    n, ulysses, cfg = LAYOUTS[request.param]
    grp = pool(n)
    if (grp.layout["ulysses"], grp.layout["cfg"]) != (ulysses, cfg):
        grp.set_layout(ulysses=ulysses, cfg=cfg)
    return grp


# --- no processes -------------------------------------------------------------------------------


@pytest.mark.parametrize("total,world,s", [(27, 2, 9), (27, 4, 9), (48, 4, 16), (36, 2, 9), (60, 4, 12)])
def test_shard_plan_covers_every_token_once_and_runs_stay_in_their_frame(total, world, s):
    seen = torch.zeros(total, dtype=torch.long)
    for r in range(world):
        plan = ShardPlan(total, world, r, s)
        idx = plan.index()
        assert len(idx) == plan.local_len == plan.shard_len + plan.tail
        seen[idx[: plan.shard_len]] += 1
        for a, e, f0, f1 in plan.frame_runs():
            frames = idx[a:e] // s
            assert frames.min() == f0 and frames.max() == f1 - 1
            if f1 - f0 > 1:
                assert e - a == (f1 - f0) * s  # multi-frame runs are whole frames
    seen[total - ShardPlan(total, world, 0, s).tail :] += 1  # the replicated tail, counted once
    assert bool((seen == 1).all())


def test_one_rank_backend_with_replicated_tail_equals_local_attention():
    g = torch.Generator().manual_seed(0)
    img = [torch.randn(2, 11, 4, 8, generator=g) for _ in range(3)]
    txt = [torch.randn(2, 5, 4, 8, generator=g) for _ in range(3)]
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    ref = LocalAttention().joint(*img, *txt, mask)
    out = ReplicatedTailAttention(YunchangUlyssesAttention(), tail=3).joint(*img, *txt, mask)
    for o, r in zip(out, ref, strict=True):
        assert (o - r).abs().max() < 1e-6


def test_layouts_that_cannot_work_are_refused_before_spawning():
    with pytest.raises(ValueError, match="must equal"):
        check_layout(4, 2, 1, 1)
    with pytest.raises(ValueError, match="heads"):
        check_layout(3, 3, 1, 1, heads=4)
    with pytest.raises(ValueError, match="ring"):
        resolve(4, 2, 2, 1, "gloo", "yunchang")
    with pytest.raises(ValueError, match="CUDA"):
        resolve(2, 2, 1, 1, "gloo", "xfuser")


def test_speaker_masks_reach_the_output(reference):
    """Guard for the tests below: swapping the two speakers' masks changes the prediction."""
    inp = forward_inputs(1, 3, (6, 6), seed=5)
    swapped = dict(inp, speaker_mask=inp["speaker_mask"].flip(1))
    with torch.no_grad():
        assert (reference(**inp) - reference(**swapped)).abs().max() > 1e-2


# --- spawned gloo ranks ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "b,t,hw",
    [(1, 3, (6, 6)), (2, 3, (8, 8)), (3, 5, (6, 8))],
    ids=["27tok-tail", "48tok-partial-frames", "60tok-batch3"],
)
def test_sequence_parallel_forward_equals_single_process(group, reference, b, t, hw):
    inp = forward_inputs(b, t, hw, seed=b * 10 + t)
    with torch.no_grad():
        ref = reference(**inp)
    out = group(**inp)
    assert out.shape == ref.shape
    assert (out - ref).abs().max() < TOL


def window_predictor(forward, cond: dict, cfg: CFGConfig):
    """What a pipeline's predictor does per window: I2V concat, per-window audio/masks, batched CFG."""

    def predict(x_win: torch.Tensor, sigma: float, win) -> torch.Tensor:
        x_in = concat_image_condition(x_win, cond["image_latent"] if win.is_first else None)
        audio = cond["audio"][:, :, win.start : win.end]
        smask = cond["speaker_mask"][:, :, win.start : win.end]

        def fwd(x_rep: torch.Tensor, passes: tuple[str, ...]) -> torch.Tensor:
            txt, tmask, sm = [], [], []
            for p in passes:
                empty = p == UNCOND
                txt.append(cond["txt"] * (0 if empty else 1))
                tmask.append(cond["empty_mask"] if empty else cond["txt_mask"])
                sm.append(smask * (1 if p == FULL else 0))
            n = len(passes)
            return forward(
                x=x_rep, timestep=torch.full((n,), sigma * 1000.0), txt=torch.cat(txt),
                txt_mask=torch.cat(tmask), pooled=cond["pooled"].expand(n, -1),
                audio=audio.expand(n, *audio.shape[1:]), speaker_mask=torch.cat(sm),
            )

        scales = (torch.tensor([cfg.audio_scale]), torch.tensor([cfg.text_scale]))
        return guided_velocity(fwd, x_in, sigma, cfg, scales=scales)

    return predict


def two_speaker_conditions(t: int, h: int, w: int, seed: int = 99) -> dict:
    """Seeded random window conditions for the tiny model: two speakers, a padded prompt, a portrait."""
    g = torch.Generator().manual_seed(seed)
    a = CFG.audio
    empty = torch.zeros(1, 7, dtype=torch.bool)
    empty[:, 0] = True
    return dict(
        image_latent=torch.randn(1, CFG.out_channels, 1, h, w, generator=g),
        audio=torch.randn(1, 2, t, a.frames_per_latent, a.frame_window, a.feature_dim, generator=g),
        speaker_mask=two_speaker_mask(1, t, h // 2, w // 2),
        txt=torch.randn(1, 7, CFG.text_dim, generator=g),
        txt_mask=torch.tensor([[1, 1, 1, 1, 1, 0, 0]], dtype=torch.bool),
        empty_mask=empty,
        pooled=torch.randn(1, CFG.pooled_dim, generator=g),
    )


@pytest.mark.slow
def test_sliding_window_generation_equals_single_process(group, reference):
    """The colleague's sampler (3 steps, 3-latent-frame windows) over 6 latent frames, two speakers,
    two-fold then three-fold CFG batched into one forward (batches of 2 and 3)."""
    t, h, w = 6, 6, 6
    cond = two_speaker_conditions(t, h, w)
    cfg = CFGConfig(audio_scale=2.0, text_scale=1.5, boundary=0.75)
    sampler_cfg = SamplerConfig(steps=3, shift=3.0, window_frames=9, overlap_frames=4)
    shape = (CFG.out_channels, t, h, w)

    def plain(**kw):
        with torch.no_grad():
            return reference(**kw)

    ref = sample(window_predictor(plain, cond, cfg), shape, config=sampler_cfg, seed=7)
    out = sample(window_predictor(group, cond, cfg), shape, config=sampler_cfg, seed=7)
    assert (out - ref).abs().max() < TOL
