"""HunyuanVideo-Avatar through our pipeline at tiny scale: one-file loading from ComfyUI-style model folders,
its decaying guidance schedule, several speakers, generate() and the CLI (streamed), block swap and fp8."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from magicinfinite_core.config import AVATAR_SAMPLER
from magicinfinite_core.errors import CheckpointError
from magicinfinite_core.generate import generate
from magicinfinite_core.inputs.audio_features import WhisperExtractor, load_extractor
from magicinfinite_core.inputs.portrait import load_portrait
from magicinfinite_core.models.avatar_layers import face_mask_to_tokens
from magicinfinite_core.models.block_swap import BlockSwap, execution_order
from magicinfinite_core.models.fp8 import quantize_linears
from magicinfinite_core.sampling.guidance import NEG_ZERO_AUDIO, ZERO_AUDIO, CFGConfig, DecayingGuidance
from magicinfinite_core.sampling.predictor import WindowPredictor, avatar_audio_window, build_conditions
from magicinfinite_core.sampling.schedule import flow_sigmas, timestep_from_sigma
from magicinfinite_core.sampling.sliding_window import Window
from magicinfinite_core.weights.avatar_bundle import load_file_bundle
from magicinfinite_core.weights.bundle import load_bundle
from runner.cli import main as cli_main

from .avatar_fixtures import portrait, random_avatar_dit, two_speaker_masks, voice, write_avatar_models


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return write_avatar_models(tmp_path_factory.mktemp("comfy") / "models")


@pytest.fixture(scope="module")
def bundle(models):
    return load_bundle(models["dit"])


def test_one_file_bundle_takes_its_parts_and_defaults_from_the_model_folders(bundle, models):
    assert bundle.dit.cfg.avatar is not None and (bundle.height, bundle.width) == (64, 64)
    assert bundle.sampler_defaults == AVATAR_SAMPLER
    assert isinstance(bundle.audio_extractor, WhisperExtractor)
    assert bundle.audio_extractor.feature_dim == bundle.dit.cfg.avatar.audio_feature_dim
    steps, shift, cfg, _ = bundle.resolve_sampling(False)
    assert (steps, shift, cfg.decay) == (50, 5.0, DecayingGuidance())
    assert bundle.resolve_windows() == (129, 8) and bundle.resolve_windows(33, 4) == (33, 4)


def test_decaying_guidance_schedule_is_the_reference_one():
    g = DecayingGuidance()
    passes, scale, mask = g.at(0, 50)
    assert passes[1] == NEG_ZERO_AUDIO and scale == pytest.approx(7.5) and mask == 0.6
    passes, scale, mask = g.at(9, 50)
    assert passes[1] == NEG_ZERO_AUDIO and scale == pytest.approx((1 - 9 / 50) * 5.5 + 2) and mask == 0.6
    passes, scale, mask = g.at(10, 50)
    assert passes[1] == ZERO_AUDIO and scale == pytest.approx((1 - 10 / 50) * 3.0 + 3.5) and mask == 1.0
    with pytest.raises(ValueError, match="early_mask_scale"):
        DecayingGuidance(early_mask_scale=2.0)


def test_avatar_audio_window_follows_the_reference_indexing():
    feats = torch.arange(1, 31, dtype=torch.float32).reshape(1, 30, 1)  # 30 video frames
    w = avatar_audio_window(feats, 2, 5)  # latents 2..4 -> video frames 8 .. 8 + 4*3 - 3
    assert w.shape == (1, 9, 1) and w[0, :, 0].tolist() == list(range(9, 18))
    tail = avatar_audio_window(feats, 6, 9)  # past the audio: zeros
    assert tail[0, :, 0].tolist() == [25, 26, 27, 28, 29, 30, 0, 0, 0]


@pytest.mark.parametrize("step", [3, 20])
def test_predictor_runs_the_decaying_schedule_in_the_dit(bundle, step):
    """The guided velocity equals u_u + s (u_c - u_u) built by hand from DiT calls (early: negative prompt,
    zero audio, mask x 0.6; late: the same prompt, zero audio, full mask)."""
    dit, av = bundle.dit, bundle.dit.cfg.avatar
    img, img_u8 = load_portrait(portrait(), 64, 64)
    masks = two_speaker_masks()
    feats = torch.stack([bundle.audio_extractor.extract(voice(0.5, f)[0], 13) for f in (150, 230)])
    cond = build_conditions(bundle, img, "a person talks", feats, masks, torch.device("cpu"), "blurry")
    sigmas = flow_sigmas(50, 5.0)
    pred = WindowPredictor(dit, cond, CFGConfig.avatar(), sigmas=sigmas)
    x = torch.randn(1, 4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    sigma = float(sigmas[step])
    with torch.no_grad():
        v = pred(x, sigma, Window(0, 1, 0, 4))
        audio = avatar_audio_window(feats, 0, 4).reshape(2, 13, av.audio_window, av.audio_layers, av.audio_channels)
        tmask = cond.token_mask[:, None].expand(-1, 4, -1, -1)[None]
        early = step < 10
        m = tmask * (0.6 if early else 1.0)
        ref = cond.image_latent.expand(-1, -1, 4, -1, -1)
        t = timestep_from_sigma(sigma).expand(1)

        def run(row, a):
            return dit(x, t, cond.txt[row : row + 1], cond.txt_mask[row : row + 1], cond.pooled[row : row + 1],
                       audio=a[None], speaker_mask=m, ref_latent=ref)

        u_c, u_u = run(0, audio), run(1 if early else 0, torch.zeros_like(audio))
    _, scale, _ = DecayingGuidance().at(step, 50)
    assert torch.allclose(v, u_u + scale * (u_c - u_u), atol=1e-5)


def test_two_speakers_each_drive_their_own_face_region():
    """One adapter, one audio stream and one mask per speaker: speaker 2's audio never reaches speaker 1's
    tokens, and a second speaker with an empty mask changes nothing."""
    dit = random_avatar_dit(1)
    adapter, av = dit.audio_adapter_blocks[0], dit.cfg.avatar
    grid = (2, 4, 4)
    g = torch.Generator().manual_seed(0)
    img = torch.randn(1, 1 + 32, dit.cfg.hidden_size, generator=g)  # 1 reference token + 2 x 16 video tokens
    ctx = torch.randn(1, 2, 2, 4 * av.tokens_per_frame, dit.cfg.hidden_size, generator=g)
    mask = face_mask_to_tokens(torch.tensor(two_speaker_masks(4, 4))[None, :, None], grid).flatten(2)
    from magicinfinite_core.models.dit import BlockInputs

    def run(c, m):
        m = torch.cat([m.new_zeros(*m.shape[:2], 1), m], dim=2)  # the mask covers the reference token too
        s = BlockInputs(img, None, None, None, None, c, m, grid, n_ref=1)
        with torch.no_grad():
            return dit._avatar_audio(adapter, img, s)[:, 1:].reshape(1, 2, 4, 4, -1)

    out = run(ctx, mask)
    other = ctx.clone()
    other[:, 1] = torch.randn(other[:, 1].shape, generator=g)
    out2 = run(other, mask)
    assert torch.equal(out[..., :2, :], out2[..., :2, :])  # speaker 1's half (left) untouched
    assert not torch.allclose(out[..., 2:, :], out2[..., 2:, :])  # speaker 2's half follows its audio
    one = run(ctx[:, :1], mask[:, :1])
    silent = run(ctx, torch.cat([mask[:, :1], torch.zeros_like(mask[:, 1:])], dim=1))
    assert torch.allclose(one, silent, atol=1e-6)


def test_generate_two_speakers_from_the_file(models, tmp_path):
    path, report = generate(portrait(), [voice(1.0, 150), voice(1.0, 230)], "two people talk", model=models["dit"],
                            out=tmp_path / "two.mp4", speakers=two_speaker_masks(), steps=2, window=9, overlap=4,
                            device="cpu")
    assert path.is_file() and report.frames == 25 and report.latent_shape == [4, 7, 8, 8]
    assert report.windows_per_step[0] >= 2 and report.steps == 2


def test_cli_generate_model_file_streams(models, tmp_path):
    from PIL import Image

    Image.fromarray(portrait()).save(tmp_path / "face.png")
    import soundfile as sf

    for i, f in enumerate((150, 230)):
        sf.write(tmp_path / f"v{i}.wav", *voice(0.6, f))
        Image.fromarray((two_speaker_masks()[i] * 255).astype(np.uint8)).save(tmp_path / f"m{i}.png")
    args = ["--model", str(models["dit"]), "--portrait", str(tmp_path / "face.png"), "--audio", str(tmp_path / "v0.wav"),
            "--audio", str(tmp_path / "v1.wav"), "--speaker-mask", str(tmp_path / "m0.png"), "--speaker-mask",
            str(tmp_path / "m1.png"), "--prompt", "two people talk", "--steps", "2", "--window", "9", "--overlap",
            "4", "--device", "cpu", "--quiet", "--json"]
    assert cli_main(["generate", *args, "--out", str(tmp_path / "a.mp4")]) == 0
    assert (tmp_path / "a.mp4").stat().st_size > 0


def test_whisper_single_file_equals_its_folder(models, tmp_path):
    from safetensors.torch import save_file
    from transformers import WhisperModel

    model = WhisperModel.from_pretrained(str(models["whisper"]), local_files_only=True)
    single = tmp_path / "whisper_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(single))
    wave = voice(0.8, 180)[0]
    assert torch.equal(load_extractor(single).extract(wave), load_extractor(models["whisper"]).extract(wave))
    bad = tmp_path / "not_whisper.safetensors"
    save_file({"encoder.conv1.weight": torch.zeros(8, 80, 3)}, str(bad))
    with pytest.raises(CheckpointError, match="not a Whisper encoder we can read"):
        load_extractor(bad)


def test_one_file_loading_errors_are_one_line(models, tmp_path):
    from magicinfinite_core.config import DiTConfig
    from magicinfinite_core.models.dit import MagicInfiniteDiT
    from magicinfinite_core.weights.avatar_bundle import text_encoder_for
    from magicinfinite_core.weights.checkpoints import save_dit

    root = tmp_path / "models"
    shutil.copytree(models["dit"].parent.parent, root)
    dit = root / "diffusion_models" / models["dit"].name
    shutil.copy(root / "vae" / models["vae"].name, root / "vae" / "other_vae.safetensors")
    assert load_file_bundle(dit).vae is not None  # two VAEs, one named hunyuan: that one
    (root / "vae" / models["vae"].name).rename(root / "vae" / "a_vae.safetensors")
    with pytest.raises(CheckpointError, match=r"several VAEs in .*vae \(a_vae.safetensors, other_vae.safetensors\)"):
        load_file_bundle(dit)
    (root / "vae" / "other_vae.safetensors").unlink()
    shutil.rmtree(root / "audio_encoders")
    with pytest.raises(CheckpointError, match="no Whisper encoder found in .*audio_encoders; put openai/whisper-tiny"):
        load_file_bundle(dit)
    plain = save_dit(root / "diffusion_models" / "plain.safetensors", MagicInfiniteDiT(DiTConfig()))
    with pytest.raises(CheckpointError, match="not HunyuanVideo-Avatar"):
        load_file_bundle(plain)
    with pytest.raises(CheckpointError, match="64-dim text"):
        text_encoder_for(replace(random_avatar_dit(0).cfg, text_dim=64, pooled_dim=32))


def test_block_swap_covers_the_adapters_and_changes_nothing(bundle):
    dit = random_avatar_dit(2)
    order = execution_order(dit)
    assert [m for m in order if m in list(dit.audio_adapter_blocks)] == list(dit.audio_adapter_blocks)
    assert order.index(dit.audio_adapter_blocks[0]) == order.index(dit.double_blocks[1]) + 1
    g = torch.Generator().manual_seed(3)
    av = dit.cfg.avatar
    x = torch.randn(1, 4, 2, 8, 8, generator=g)
    kw = dict(audio=torch.randn(1, 2, 5, av.audio_window, av.audio_layers, av.audio_channels, generator=g),
              speaker_mask=face_mask_to_tokens(torch.tensor(two_speaker_masks(8, 8))[None, :, None], (2, 4, 4)),
              ref_latent=torch.randn(x.shape, generator=g))
    args = (x, torch.tensor([500.0]), torch.randn(1, 5, 384, generator=g), None, torch.randn(1, 384, generator=g))
    with torch.no_grad():
        want = dit(*args, **kw)
        swap = BlockSwap(dit, "cpu", resident=1)
        got = dit(*args, **kw)
        assert swap.stats["loads"] >= len(dit.audio_adapter_blocks)
        swap.remove()
        replaced = quantize_linears(dit, mode="dequant")
        names = [n for n, m in dit.named_modules() if type(m).__name__ == "FP8Linear"]
        fp8 = dit(*args, **kw)
    assert torch.equal(want, got)
    assert any(n.startswith("audio_adapter_blocks.") for n in names) and replaced
    assert (fp8 - want).abs().max() / want.abs().max() < 0.05

