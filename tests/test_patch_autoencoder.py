"""The demo v2 autoencoder (linear causal patch code) and the every-frame portrait condition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magicinfinite_core.config import AudioLayerConfig, DiTConfig, SamplerConfig
from magicinfinite_core.errors import CheckpointError
from magicinfinite_core.media.autoencoders import decode_fn, load_autoencoder, save_autoencoder
from magicinfinite_core.media.patch_autoencoder import PatchAutoencoder, PatchAutoencoderConfig
from magicinfinite_core.media.streamed_decode import streamed_decode
from magicinfinite_core.models.dit import MagicInfiniteDiT, concat_image_condition
from magicinfinite_core.sampling.sampler import sample
from training.fit_autoencoder import fit_patch_autoencoder, psnr

CFG = PatchAutoencoderConfig(patch=4, spatial_channels=12, temporal_channels=6)


def moving_video(frames: int = 17, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Smooth blobs drifting across a gradient: a small, compressible but non-trivial video."""
    g = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    out = []
    for t in range(frames):
        cx, cy = 0.3 + 0.02 * t + 0.1 * g.random(), 0.5
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.02)
        rgb = np.stack([0.6 * blob + 0.2 * x, 0.5 * y, 0.4 * blob + 0.1], 0)
        out.append(rgb * 2 - 1)
    return torch.tensor(np.stack(out, 1), dtype=torch.float32)


@pytest.fixture(scope="module")
def fitted() -> PatchAutoencoder:
    ae, info = fit_patch_autoencoder((moving_video(seed=s) for s in range(6)), CFG)
    assert info["spatial_variance_kept"] > 0.99
    return ae


def test_bases_are_orthonormal_and_latents_unit_std(fitted):
    for b in (fitted.spatial_basis, fitted.temporal_basis):
        assert torch.allclose(b @ b.T, torch.eye(b.shape[0]), atol=1e-5)
    z = fitted.encode(moving_video(seed=0)[None])
    assert 0.7 < float(z.std()) < 1.3


def test_time_grid_is_causal_and_exact(fitted):
    v = moving_video(frames=17, seed=9)[None]
    z = fitted.encode(v)
    assert z.shape == (1, CFG.latent_channels, 5, 4, 4) == (1, *fitted.latent_shape(17, 16, 16))
    # latent frame k depends only on frames up to 4k: a prefix encodes to a prefix
    assert torch.equal(fitted.encode(v[:, :, :9]), z[:, :, :3])
    # decoding latent frames [a, b) never looks outside them: streamed == one shot, bit for bit
    one = fitted.decode(z)[0]
    streamed = torch.cat(list(streamed_decode(z[0], decode_fn(fitted), num_frames=17, chunk=2, context=1)), 1)
    assert torch.equal(streamed, one)
    assert psnr(one, v[0]) > 28


def test_still_video_latents_equal_the_portrait_latent(fitted):
    still = moving_video(frames=1, seed=3).expand(-1, 13, -1, -1)[None]
    z = fitted.encode(still)
    cs = CFG.spatial_channels
    assert torch.allclose(z[:, :cs], z[:, :cs, :1].expand_as(z[:, :cs]), atol=1e-5)
    assert z[:, cs:].abs().max() < 1e-5


def test_save_load_round_trip_and_misfit_names_keys(fitted, tmp_path):
    path = save_autoencoder(tmp_path / "ae.safetensors", fitted, dtype=torch.float16)
    again = load_autoencoder(path)
    assert again.cfg == fitted.cfg
    v = moving_video(seed=1)[None]
    assert torch.equal(again.encode(v), fitted.encode(v))  # bases stay float32 even when fp16 is asked
    other = PatchAutoencoder(PatchAutoencoderConfig(patch=4, spatial_channels=10, temporal_channels=6))
    bad = save_autoencoder(tmp_path / "bad.safetensors", other)
    from magicinfinite_core.media.autoencoders import load_autoencoder_state
    from magicinfinite_core.weights.checkpoints import load_state_dict

    with pytest.raises(CheckpointError, match="spatial_basis"):
        load_autoencoder_state(PatchAutoencoder(CFG), load_state_dict(bad), bad)


def test_odd_sizes_are_refused(fitted):
    with pytest.raises(ValueError, match="multiple of 4"):
        fitted.encode(torch.zeros(1, 3, 5, 18, 16))


def test_every_frame_condition_layout():
    noisy, image = torch.randn(2, 4, 3, 2, 2), torch.randn(2, 4, 1, 2, 2)
    x = concat_image_condition(noisy, image, every_frame=True, keep=torch.tensor([1.0, 0.0]), first=False)
    assert torch.equal(x[0, 4:8], image[0, :, 0:1].expand(-1, 3, -1, -1))  # the portrait at every frame
    assert x[1, 4:].abs().sum() == 0  # dropped row: nothing
    assert x[:, 8].abs().sum() == 0  # not the video's first window: no frame-0 mark
    x = concat_image_condition(noisy, image, every_frame=True, first=True)
    assert x[:, 8, 0].eq(1).all() and x[:, 8, 1:].eq(0).all()
    # the paper's layout is unchanged by the new arguments
    ff = concat_image_condition(noisy, image)
    assert torch.equal(x[:, :4], ff[:, :4]) and torch.equal(ff[:, 4:8, 0], image[:, :, 0]) and ff[:, 4:8, 1:].eq(0).all()


def test_reference_skip_samples_a_still_portrait_exactly():
    """With the blocks' output zeroed, the skip alone is the exact velocity of a still video: the
    sliding-window sampler then returns the portrait latent at every frame, from pure noise."""
    cfg = DiTConfig(in_channels=9, out_channels=4, image_condition="every_frame", reference_skip=True,
                    audio=AudioLayerConfig(feature_dim=8))
    dit = MagicInfiniteDiT(cfg).eval()
    torch.nn.init.zeros_(dit.final_layer.linear.weight)
    torch.nn.init.zeros_(dit.final_layer.linear.bias)
    ref = torch.randn(1, 4, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    txt, pooled = torch.randn(1, 3, cfg.text_dim), torch.randn(1, cfg.pooled_dim)

    def predict(x, sigma, win):
        x_in = concat_image_condition(x, ref, every_frame=True, first=win.is_first)
        with torch.no_grad():
            return dit(x_in, torch.tensor([sigma * 1000.0]), txt, None, pooled)

    sc = SamplerConfig(steps=6, shift=3.0, window_frames=9, overlap_frames=4)
    out = sample(predict, (4, 7, 4, 4), config=sc, seed=1)
    assert torch.allclose(out, ref[0].expand(-1, 7, -1, -1), atol=1e-4)


def test_reference_skip_config_needs_every_frame():
    with pytest.raises(ValueError, match="every_frame"):
        DiTConfig(reference_skip=True)
    with pytest.raises(ValueError, match="image_condition"):
        DiTConfig(image_condition="sometimes")


def test_fit_command_fits_the_train_split_and_scores_the_heldout_split(tmp_path):
    """The shipped sample clips: two train, two held-out; the report names only held-out clips."""
    import json
    from pathlib import Path

    from training.fit_autoencoder import main

    sample = Path(__file__).resolve().parent.parent / "training" / "data" / "sample"
    out = tmp_path / "ae.safetensors"
    assert main(["--data", str(sample), "--heldout", str(sample), "--out", str(out), "--patch", "8",
                 "--spatial", "48", "--temporal", "16"]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert sorted(report["heldout_psnr"]) == ["heldout_000000", "heldout_000001"]
    assert report["heldout_psnr_mean"] > 25
    assert load_autoencoder(out).cfg.latent_channels == 64
    with pytest.raises(SystemExit):
        main(["--data", str(tmp_path / "missing"), "--out", str(out)])


def test_bundle_with_patch_autoencoder_generates_through_the_pipeline(tmp_path):
    """save_bundle -> load_bundle -> generate(): the pipeline holds a patch autoencoder and an every-frame
    DiT without branching; the mp4 decodes back to the audio's length at the bundle's size."""
    from PIL import Image

    from magicinfinite_core.generate import generate
    from magicinfinite_core.media.video_io import probe_video, write_wav
    from magicinfinite_core.weights.bundle import load_bundle, random_bundle, save_bundle

    dit_cfg = DiTConfig(in_channels=2 * CFG.latent_channels + 1, out_channels=CFG.latent_channels,
                        image_condition="every_frame", reference_skip=True, audio=AudioLayerConfig(feature_dim=64))
    bundle = random_bundle(0, height=32, width=32, dit_cfg=dit_cfg)
    ae, _ = fit_patch_autoencoder((moving_video(size=32, seed=s) for s in range(3)), CFG)
    bundle.vae = ae
    d = save_bundle(bundle, tmp_path / "bundle")
    again = load_bundle(d)
    assert type(again.vae) is PatchAutoencoder and torch.equal(again.vae.spatial_basis, ae.spatial_basis)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    t = np.arange(16000) / 16000
    wav = write_wav(tmp_path / "a.wav", (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000)
    out, report = generate(tmp_path / "p.png", wav, "a person talking", model=again, out=tmp_path / "o.mp4",
                           steps=2, speakers=[[4, 4, 28, 28]])
    info = probe_video(out)
    assert info.frames == report.frames == 25 and (info.width, info.height) == (32, 32)
