"""Sequence parallelism for HunyuanVideo-Avatar on CPU/gloo: 4 spawned ranks equal one process (fp32).

The blocks see T + 1 token frames, frame 0 being the reference frame's tokens, so the shapes are chosen
so that shards cut the reference frame, hold it together with video frames in one run, and leave a
replicated tail. One worker group serves every test (spawning is most of the time on 2 cores): Ulysses 4,
Ulysses 2 x CFG 2, CFG 4 alone, and finally the sampler path (`sample_latent(forward=group)`, what the ComfyUI
sampler node's USP backend runs) on the one-file Avatar model, whose config comes from its shapes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from magicinfinite_core.distributed.worker_group import ModelSpec, SequenceParallelWorkerGroup
from magicinfinite_core.generate import sample_latent
from magicinfinite_core.inputs.audio import load_speaker_tracks
from magicinfinite_core.inputs.audio_features import extract_speaker_features
from magicinfinite_core.sampling.state import load_state
from magicinfinite_core.weights.bundle import load_bundle
from runner.cli import main as cli_main

from .avatar_fixtures import portrait, two_speaker_masks, voice, write_avatar_models

TOL = 1e-5
LAYOUTS = {"ulysses4": dict(ulysses=4, cfg=1), "ulysses2-cfg2": dict(ulysses=2, cfg=2), "cfg4": dict(ulysses=1, cfg=4)}
# (batch, latent frames, latent h x w). Token frames of 9 / 4 / 12 tokens, T + 1 of them:
#   27 tokens: shards of 6 (U4) or 13 (U2) cut the reference frame and leave a tail;
#   16 tokens: U2 shards hold the reference frame and frame 1 in one run; batch 2 splits over CFG;
#   36 tokens: shards of 9 (U4) / 18 (U2) cut frames; batch 3 is padded for CFG 2.
SHAPES = {"27tok-ref-split-tail": (1, 2, (6, 6)), "16tok-ref-in-run": (2, 3, (4, 4)), "36tok-batch3": (3, 2, (6, 8))}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return write_avatar_models(tmp_path_factory.mktemp("comfy") / "models")


@pytest.fixture(scope="module")
def bundle(models):
    return load_bundle(models["dit"])


@pytest.fixture(scope="module")
def group(models):
    # as the sampler node builds it: the checkpoint file only (no config, no metadata in an Avatar file)
    with SequenceParallelWorkerGroup(4, ModelSpec(checkpoint=str(models["dit"])), ulysses=4, backend="gloo",
                                     attention="yunchang", threads=1) as grp:
        yield grp


def avatar_inputs(cfg, b: int, t: int, hw: tuple[int, int], seed: int) -> dict:
    """Random Avatar forward inputs: two speakers (left / right face masks), padded prompts, per-sample
    timesteps and motion / fps values (so the CFG split has to keep them with their samples)."""
    g = torch.Generator().manual_seed(seed)
    av = cfg.avatar
    h, w = hw[0] // 2, hw[1] // 2
    mask = torch.zeros(b, 2, t, h, w)
    mask[:, 0, :, 1:, : w // 2] = 1
    mask[:, 1, :, 1:, w // 2 :] = 1
    txt_mask = torch.ones(b, 7, dtype=torch.bool)
    txt_mask[:, 5:] = False
    txt_mask[-1, 2:] = False
    x = torch.randn(b, cfg.in_channels, t, *hw, generator=g)
    return dict(
        x=x, timestep=torch.linspace(900.0, 300.0, b), txt=torch.randn(b, 7, cfg.text_dim, generator=g),
        txt_mask=txt_mask, pooled=torch.randn(b, cfg.pooled_dim, generator=g),
        audio=torch.randn(b, 2, av.frames_per_latent * (t - 1) + 1, av.audio_window, av.audio_layers,
                          av.audio_channels, generator=g),
        speaker_mask=mask, ref_latent=torch.randn(x.shape, generator=g),
        motion_exp=torch.rand(b, av.motion_values, generator=g) * 40, motion_pose=torch.rand(b, av.motion_values, generator=g) * 40,
        fps=torch.linspace(20.0, 30.0, b),
    )


def test_face_masks_and_reference_reach_the_output(bundle):
    """Guard for the comparisons below: the adapters and the reference path are live in this model."""
    inp = avatar_inputs(bundle.dit.cfg, 1, 2, (6, 6), seed=3)
    with torch.no_grad():
        out = bundle.dit(**inp)
        swapped = bundle.dit(**dict(inp, speaker_mask=inp["speaker_mask"].flip(1)))
        other_ref = bundle.dit(**dict(inp, ref_latent=inp["ref_latent"].flip(2)))
    assert (out - swapped).abs().max() > 1e-3 and (out - other_ref).abs().max() > 1e-2  # >> TOL


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(LAYOUTS), ids=list(LAYOUTS))
def test_sequence_parallel_avatar_forward_equals_single_process(group, bundle, layout):
    if (group.layout["ulysses"], group.layout["cfg"]) != tuple(LAYOUTS[layout].values()):
        group.set_layout(**LAYOUTS[layout])
    for i, (b, t, hw) in enumerate(SHAPES.values()):
        inp = avatar_inputs(bundle.dit.cfg, b, t, hw, seed=i)
        with torch.no_grad():
            ref = bundle.dit(**inp)
        out = group(**inp)
        assert out.shape == ref.shape
        assert (out - ref).abs().max() < TOL, (layout, list(SHAPES)[i])


@pytest.mark.slow
def test_sampler_with_the_worker_group_equals_single_process(group, bundle):
    """Two speakers, 2 steps of Avatar's decaying guidance (2 passes per forward: one per CFG group),
    windows of 3 latent frames over 7: the sampled latent equals the single-process one."""
    group.set_layout(**LAYOUTS["ulysses2-cfg2"])
    tracks = load_speaker_tracks([voice(1.0, 150), voice(1.0, 230)])
    n = max(t.num_frames for t in tracks)
    features = extract_speaker_features(tracks, bundle.audio_extractor, n)
    kw = dict(speakers=two_speaker_masks(), steps=2, window=9, overlap=4, device="cpu")
    one = sample_latent(bundle, portrait(), features, n, "two people talk", **kw)
    par = sample_latent(bundle, portrait(), features, n, "two people talk", forward=group, **kw)
    assert one.shape == par.shape == (4, 7, 8, 8)
    assert (one.latent - par.latent).abs().max() < 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_cli_on_the_avatar_file_equals_one_process(models, tmp_path):
    """`torchrun --nproc-per-node 2 -m runner.cli generate --model AVATAR_FILE` (Ulysses 2) keeps the latent
    of the same command in one process."""
    Image.fromarray(portrait()).save(tmp_path / "face.png")
    for i, f in enumerate((150, 230)):
        sf.write(tmp_path / f"v{i}.wav", *voice(0.6, f))
        Image.fromarray((two_speaker_masks()[i] * 255).astype(np.uint8)).save(tmp_path / f"m{i}.png")
    common = ["generate", "--model", str(models["dit"]), "--portrait", str(tmp_path / "face.png"),
              "--audio", str(tmp_path / "v0.wav"), "--audio", str(tmp_path / "v1.wav"), "--speaker-mask",
              str(tmp_path / "m0.png"), "--speaker-mask", str(tmp_path / "m1.png"), "--prompt", "hi", "--steps", "2",
              "--window", "9", "--overlap", "4", "--device", "cpu", "-q", "--keep-state", "--sweep"]
    assert cli_main([*common, "--out", str(tmp_path / "one.mp4")]) == 0
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
         "-m", "runner.cli", *common, "--out", str(tmp_path / "two.mp4")],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one, par = load_state(tmp_path / "one.mp4.state"), load_state(tmp_path / "two.mp4.state")
    assert one.step == par.step == 2 and (one.latent - par.latent).abs().max() < 1e-4
