import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from magicinfinite_core.config import SamplerConfig, VAEConfig, latent_frames
from magicinfinite_core.errors import CheckpointError, MagicInfiniteError
from magicinfinite_core.generate import generate
from magicinfinite_core.inputs.audio import load_audio, num_video_frames
from magicinfinite_core.media.vae import VideoVAE
from magicinfinite_core.media.video_io import decode_to_mp4, iter_video_frames, probe_video, write_wav
from magicinfinite_core.models.audio_layers import group_audio_by_latent_frame
from magicinfinite_core.sampling.guidance import CFGConfig
from magicinfinite_core.sampling.predictor import audio_for_latents
from magicinfinite_core.sampling.sampler import sample
from magicinfinite_core.sampling.state import load_state
from magicinfinite_core.weights.bundle import load_bundle, random_bundle, save_bundle

SMALL_VAE = VAEConfig(block_out_channels=(8, 8, 8, 8), norm_num_groups=4, mid_block_add_attention=False)
BOX = [[4, 4, 28, 28]]


def _speech(path, seconds, rate=16000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    wav = 0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 2.5 * t) > 0) + 0.01 * rng.standard_normal(t.size)
    return write_wav(path, wav.astype(np.float32), rate)


@pytest.fixture(scope="module")
def bundle():
    return random_bundle(0, height=32, width=32, vae_cfg=SMALL_VAE)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(d / "p.png")
    return d / "p.png", _speech(d / "a.wav", 1.0), d


@pytest.mark.parametrize("seconds", [1.0, 3.7, 61.0])
def test_output_frame_count_equals_audio_length(tmp_path, seconds):
    """Real sampler + streamed decode + muxer; a trivially cheap predictor and 1x1 latents keep 61 s fast."""
    wav = _speech(tmp_path / "a.wav", seconds)
    audio = load_audio(wav)
    assert audio.num_frames == num_video_frames(seconds)
    shape = (4, latent_frames(audio.num_frames), 1, 1)
    cfg = SamplerConfig(steps=2, shift=3.0)
    latent = sample(lambda x, s, w: 0.5 * x, shape, config=cfg, seed=0)
    torch.manual_seed(0)
    out = decode_to_mp4(latent, VideoVAE(SMALL_VAE), audio.num_frames, tmp_path / "o.mp4", wav, chunk=128)
    info = probe_video(out)
    assert info.frames == num_video_frames(seconds)
    assert info.audio_codec == "aac" and abs(info.audio_seconds - seconds) <= 1024 / 16000 + 1e-6


def test_per_window_audio_equals_whole_track_grouping():
    feats = torch.randn(2, 97, 8)
    whole = group_audio_by_latent_frame(feats)
    t = whole.shape[1]
    for a, b in [(0, 9), (7, 16), (3, 4), (t - 5, t), (0, t)]:
        assert torch.equal(audio_for_latents(feats, a, b), whole[:, a:b])


def test_generate_end_to_end_with_tiny_dit(tmp_path, bundle, inputs):
    portrait, wav, _ = inputs
    seen = []
    path, rep = generate(portrait, wav, "a calm speaker", model=bundle, out=tmp_path / "o.mp4", steps=2,
                         window=9, overlap=4, speakers=BOX, seed=3, callback=seen.append)
    info = probe_video(path)
    assert info.frames == rep.frames == 25 and (info.width, info.height) == (32, 32)
    assert info.audio_codec == "aac" and info.audio_seconds == pytest.approx(1.0, abs=0.07)
    assert rep.windows_per_step[0] > 1 and rep.mode == "base" and rep.peak_rss_mb > 0
    assert {p.phase for p in seen} == {"denoise", "decode"}
    frames = np.stack(list(iter_video_frames(path)))
    assert frames.std() > 1  # not a flat image


def test_same_seed_same_video_and_resume_is_bit_identical(tmp_path, bundle, inputs):
    portrait, wav, _ = inputs
    kw = dict(model=bundle, steps=3, window=9, overlap=4, speakers=BOX, keep_state=True,
              cfg=CFGConfig(audio_scale=2.0, text_scale=1.5))
    generate(portrait, wav, "hello", out=tmp_path / "a.mp4", seed=5, state_dir=tmp_path / "sa", **kw)
    generate(portrait, wav, "hello", out=tmp_path / "b.mp4", seed=5, state_dir=tmp_path / "sb", **kw)
    la, lb = load_state(tmp_path / "sa").latent, load_state(tmp_path / "sb").latent
    assert torch.equal(la, lb)
    fa, fb = (np.stack(list(iter_video_frames(tmp_path / n))) for n in ("a.mp4", "b.mp4"))
    assert np.array_equal(fa, fb)

    def crash(p):
        if p.phase == "denoise" and p.step == 2 and p.window == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(portrait, wav, "hello", out=tmp_path / "c.mp4", seed=5, state_dir=tmp_path / "sc",
                 callback=crash, **kw)
    assert not (tmp_path / "c.mp4").exists() and load_state(tmp_path / "sc").step == 1
    _, rep = generate(portrait, wav, "hello", out=tmp_path / "c.mp4", seed=5, state_dir=tmp_path / "sc",
                      resume=True, **kw)
    assert rep.resumed_from_step == 1
    assert torch.equal(load_state(tmp_path / "sc").latent, la)
    with pytest.raises(MagicInfiniteError, match="different inputs"):
        generate(portrait, wav, "another prompt", out=tmp_path / "d.mp4", seed=5, state_dir=tmp_path / "sc",
                 resume=True, **kw)


def test_distilled_two_speakers_and_bundle_roundtrip(tmp_path, bundle, inputs):
    portrait, wav, d = inputs
    wav2 = _speech(d / "b.wav", 0.6, seed=2)
    save_bundle(bundle, tmp_path / "model")
    loaded = load_bundle(tmp_path / "model")
    assert loaded.fingerprint() == bundle.fingerprint()
    two = {"window": 9, "overlap": 4, "speakers": [[0, 0, 16, 32], [16, 0, 32, 32]], "seed": 1}
    with pytest.raises(CheckpointError, match="no distilled generator"):  # a base-only bundle folder
        generate(portrait, [wav, wav2], "two people", model=tmp_path / "model", out=tmp_path / "o.mp4",
                 distilled=True, **two)
    path, rep = generate(portrait, [wav, wav2], "two people", model=loaded, out=tmp_path / "o.mp4",
                         distilled=True, **two)
    assert rep.mode == "distilled" and rep.steps == 4 and probe_video(path).frames == 25
    # a bundle whose DiT is marked as a generator: its own step list is what the sampler runs
    loaded.distilled = {"timesteps": [1000.0, 500.0], "shift": 5.0}
    save_bundle(loaded, tmp_path / "model4")
    again = load_bundle(tmp_path / "model4", distilled=True)
    assert again.distilled == loaded.distilled
    _, rep = generate(portrait, [wav, wav2], "two people", model=tmp_path / "model4", out=tmp_path / "p.mp4",
                      distilled=True, **two)
    assert rep.steps == 2


def test_sampling_settings_come_from_the_caller_then_the_bundle_then_the_library(bundle):
    b = dataclasses.replace(bundle, sampler_defaults={}, distilled=None)
    steps, shift, cfg, _ = b.resolve_sampling(False)
    assert (steps, shift, cfg.audio_scale, cfg.text_scale) == (30, 7.0, 4.0, 3.0)
    b.sampler_defaults = {"steps": 20, "shift": 3.0, "audio_scale": 3.0, "text_scale": 0.0}
    steps, shift, cfg, _ = b.resolve_sampling(False)
    assert (steps, shift, cfg.audio_scale, cfg.text_scale) == (20, 3.0, 3.0, 0.0)
    steps, shift, cfg, _ = b.resolve_sampling(False, steps=8, shift=5.0, cfg=CFGConfig.off())
    assert (steps, shift, cfg) == (8, 5.0, CFGConfig.off())
    b.distilled = {"timesteps": [1000.0, 600.0, 200.0], "shift": 2.0}
    steps, shift, cfg, ts = b.resolve_sampling(True, steps=50, cfg=CFGConfig())
    assert (steps, shift, cfg, ts) == (3, 2.0, CFGConfig.off(), (1000.0, 600.0, 200.0))
    assert b.resolve_sampling(True, distilled_timesteps=[900.0, 100.0])[3] == (900.0, 100.0)


def test_bad_inputs_raise_one_clear_error(tmp_path, bundle, inputs):
    portrait, wav, _ = inputs
    with pytest.raises(MagicInfiniteError, match="portrait"):
        generate(tmp_path / "missing.png", wav, "x", model=bundle, out=tmp_path / "o.mp4", speakers=BOX)
    with pytest.raises(MagicInfiniteError):
        generate(portrait, tmp_path / "missing.wav", "x", model=bundle, out=tmp_path / "o.mp4", speakers=BOX)
    with pytest.raises(ValueError, match="overlap"):
        generate(portrait, wav, "x", model=bundle, out=tmp_path / "o.mp4", window=9, overlap=8, speakers=BOX)
