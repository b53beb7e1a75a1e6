"""`torchrun --nproc-per-node 2 -m runner.cli generate ...` on CPU/gloo equals one process."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from magicinfinite_core.config import DiTConfig
from magicinfinite_core.media.video_io import iter_video_frames
from magicinfinite_core.sampling.state import load_state
from magicinfinite_core.streaming import FINAL_LATENTS
from magicinfinite_core.weights.bundle import random_bundle, save_bundle


def _frames(path):
    return np.stack(list(iter_video_frames(path)))


def _free_port() -> int:
    """A port nothing listens on now: a fixed one fails when another test run shares the machine."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("order", ["sweep", "wavefront"])
def test_torchrun_two_ranks_matches_single_process(tmp_path, order):
    bundle = random_bundle(3, height=32, width=32, dit_cfg=DiTConfig())
    model = save_bundle(bundle, tmp_path / "model")
    portrait = tmp_path / "p.png"
    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)).save(portrait)
    t = np.arange(int(16000 * 0.8)) / 16000
    sf.write(tmp_path / "a.wav", 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)), 16000)
    common = ["generate", "--portrait", str(portrait), "--audio", str(tmp_path / "a.wav"), "--prompt", "hi",
              "--model", str(model), "--steps", "2", "--window", "9", "--overlap", "4", "--speaker-box",
              "4,4,28,28", "-q", "--device", "cpu", "--keep-state"] + (["--sweep"] if order == "sweep" else [])
    scratch = tmp_path / "tmp"  # the ranks' temporary folder: rank 1's throwaway video must not stay behind
    scratch.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(scratch)}
    single = subprocess.run([sys.executable, "-m", "runner.cli", *common, "--out", str(tmp_path / "one.mp4")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr
    dist = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
         "-m", "runner.cli", *common, "--out", str(tmp_path / "two.mp4")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert dist.returncode == 0, dist.stderr[-3000:]
    if order == "sweep":
        one, two = load_state(tmp_path / "one.mp4.state"), load_state(tmp_path / "two.mp4.state")
        assert one.step == two.step == 2
        assert (one.latent - two.latent).abs().max() < 1e-4  # the SP forward equals one process to ~1e-6
    else:  # the streamed run keeps the final latent frames it decoded (streaming.FINAL_LATENTS)
        one, two = (np.fromfile(tmp_path / f"{n}.mp4.state" / FINAL_LATENTS, np.float32) for n in ("one", "two"))
        assert one.size == two.size > 0 and np.abs(one - two).max() < 1e-4
    assert _frames(tmp_path / "two.mp4").shape == _frames(tmp_path / "one.mp4").shape == (20, 32, 32, 3)
    assert not list(scratch.glob("magicinfinite-rank-*"))
