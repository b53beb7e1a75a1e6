"""Streaming output: incremental decode == streamed decode, fragmented MP4 plays when cut short,
streaming generate == sweep generate frame for frame, and a killed CLI run resumes to the same file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from magicinfinite_core.config import VAEConfig, latent_frames
from magicinfinite_core.generate import sample_latent
from magicinfinite_core.media.autoencoders import decode_fn
from magicinfinite_core.media.incremental_decode import IncrementalDecoder
from magicinfinite_core.media.patch_autoencoder import PatchAutoencoder, PatchAutoencoderConfig
from magicinfinite_core.media.stream_mux import FragmentedVideoWriter
from magicinfinite_core.media.streamed_decode import streamed_decode
from magicinfinite_core.media.vae import VideoVAE
from magicinfinite_core.media.video_io import write_wav
from magicinfinite_core.streaming import STREAM_STATE, generate_streaming
from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR, random_bundle
from tests.audio_fixtures import make_speech

ROOT = Path(__file__).resolve().parent.parent


def _vae() -> VideoVAE:
    torch.manual_seed(0)
    return VideoVAE(VAEConfig()).eval()


@pytest.mark.parametrize("kind", ["hunyuan-vae", "patch"])
@pytest.mark.parametrize("length_known", [True, False])
def test_incremental_decoder_equals_streamed_decode(kind, length_known):
    ae = _vae() if kind == "hunyuan-vae" else PatchAutoencoder(PatchAutoencoderConfig(patch=4, spatial_channels=8,
                                                                                      temporal_channels=4))
    c = ae.cfg.latent_channels
    num_frames = 4 * 16 + 3  # a short last latent frame (3 of 4 frames kept)
    z = torch.randn(c, latent_frames(num_frames), 2, 2, generator=torch.Generator().manual_seed(1))
    ref = torch.cat(list(streamed_decode(z, decode_fn(ae), num_frames=num_frames, chunk=4, context=2)), dim=1)
    dec = IncrementalDecoder(decode_fn(ae), chunk=4, context=2, num_frames=num_frames if length_known else None)
    got, i = [], 0
    for n in (1, 3, 2, 5, 1, 4, 2):  # uneven arrivals, like the wavefront's
        got.append(dec.push(z[:, i : i + n]))
        i += n
    got.append(dec.finish(num_frames))
    got = torch.cat([g for g in got if g.shape[1]], dim=1)
    assert i == z.shape[1] and torch.equal(got, ref)


def test_fragmented_mp4_cut_short_still_plays(tmp_path):
    wav = np.sin(np.linspace(0, 2000, 16000 * 4)).astype(np.float32) * 0.3
    out = tmp_path / "grow.mp4"
    with FragmentedVideoWriter(out, 32, 32, audio=(wav, 16000)) as w:
        for i in range(100):  # 4 s: 4 fragments of 25 frames
            w.write(np.full((1, 32, 32, 3), (i * 9) % 255, np.uint8))
    data = out.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with av.open(str(cut)) as c:
        frames = sum(1 for _ in c.decode(video=0))
    assert 25 <= frames < 100
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 100


def test_streaming_generate_equals_sweep_frame_for_frame(tmp_path):
    """Same bundle, inputs and seed: the streamed frames are the sweep latent's streamed decode."""
    bundle = random_bundle(0)
    wav = (np.sin(np.linspace(0, 3000, 16000 * 3)) * 0.3).astype(np.float32)
    audio = write_wav(tmp_path / "a.wav", wav, 16000)
    portrait = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    kw = dict(speakers=[[8, 8, 56, 56]], distilled=True, seed=4, window=17, overlap=4)
    got = []
    path, rep = generate_streaming(portrait, str(audio), "hi", model=bundle, out=tmp_path / "s.mp4",
                                   on_frames=got.append, **kw)
    from magicinfinite_core.inputs.audio import load_speaker_tracks
    from magicinfinite_core.inputs.audio_features import extract_speaker_features

    tracks = load_speaker_tracks([str(audio)])
    feats = extract_speaker_features(tracks, bundle.audio_extractor, tracks[0].num_frames)
    sampled = sample_latent(bundle, portrait, feats, tracks[0].num_frames, "hi", **kw)
    ref = torch.cat(list(streamed_decode(sampled.latent, decode_fn(bundle.vae), num_frames=75)), dim=1)
    assert rep.frames == 75 and torch.equal(torch.cat(got, dim=1), ref)
    assert rep.first_frame_s is not None and rep.first_frame_s < rep.run_s
    with av.open(str(path)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 75 and c.streams.audio


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "runner.cli", "generate", *args]


@pytest.mark.skipif(not (DEMO_MODEL_DIR / "bundle.json").is_file(), reason="demo model not installed")
def test_killed_run_leaves_a_playable_mp4_and_resume_gives_the_same_file(tmp_path):
    speech = make_speech(tmp_path / "s.wav", "This is a longer sentence, so that the video lasts a few seconds. " * 2)
    from PIL import Image

    portrait = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(portrait)
    common = ["--portrait", str(portrait), "--audio", str(speech), "--speaker-box", "16,16,112,112", "-q",
              "--save-every", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    ref = tmp_path / "ref.mp4"
    done = subprocess.run(_cli(*common, "--out", str(ref)), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "first frame" in done.stderr

    out, state, growing = tmp_path / "cut.mp4", tmp_path / "cut.mp4.state", tmp_path / "cut.partial.mp4"
    proc = subprocess.Popen(_cli(*common, "--out", str(out)), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:  # kill once two seconds of video are muxed
        if (state / STREAM_STATE).is_file() and growing.is_file() and growing.stat().st_size > 0.3 * ref.stat().st_size:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # the video grows under a temporary name; `out` appears only when complete
    with av.open(str(growing)) as c:  # the partial file plays
        partial = sum(1 for _ in c.decode(video=0))
    with av.open(str(ref)) as c:
        full = sum(1 for _ in c.decode(video=0))
    assert 0 < partial < full

    done = subprocess.run(_cli(*common, "--out", str(out), "--resume"), env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == ref.read_bytes()
    assert not state.exists() and not growing.exists()


def test_resume_with_other_settings_is_refused_and_bad_cli_options_are_one_line_errors(tmp_path, capsys):
    from magicinfinite_core.errors import MagicInfiniteError
    from runner.cli import main

    bundle = random_bundle(0)
    wav = (np.sin(np.linspace(0, 8000, 16000 * 8)) * 0.3).astype(np.float32)
    audio = str(write_wav(tmp_path / "a.wav", wav, 16000))
    portrait = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    kw = dict(speakers=[[8, 8, 56, 56]], distilled=True, window=17, overlap=4, state_dir=tmp_path / "st")

    class Crash(RuntimeError):
        pass

    def crash(p) -> None:  # once frames were muxed and a state was saved
        if (tmp_path / "o.partial.mp4").is_file() and (tmp_path / "st" / STREAM_STATE).is_file():
            raise Crash

    with pytest.raises(Crash):
        generate_streaming(portrait, audio, "hi", model=bundle, out=tmp_path / "o.mp4", callback=crash,
                           save_every_s=0, seed=1, **kw)
    with av.open(str(tmp_path / "o.partial.mp4")) as c:  # an exception closes the fragmented file: it plays
        assert 0 < sum(1 for _ in c.decode(video=0)) < 200
    with pytest.raises(MagicInfiniteError, match="different inputs or settings"):
        generate_streaming(portrait, audio, "hi", model=bundle, out=tmp_path / "o.mp4", resume=True, seed=2, **kw)

    base = ["generate", "--portrait", audio, "--out", str(tmp_path / "x.mp4")]
    for extra, msg in ((["--audio", audio, "--save-every", "nan"], "--save-every must be a finite number"),
                       (["--audio", "-", "--audio", audio], "exactly one --audio"),
                       (["--audio", "-", "--resume"], "cannot be resumed")):
        assert main([*base, *extra]) == 1
        assert msg in capsys.readouterr().err
