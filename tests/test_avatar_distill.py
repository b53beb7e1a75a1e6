"""The 4-step recipe for HunyuanVideo-Avatar at tiny scale: a few DMD2 steps from an Avatar-layout file with
our trainer, the exported generator loads as an Avatar model and generates in 4 steps without CFG."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from magicinfinite_core.config import DISTILLED_TIMESTEPS
from magicinfinite_core.generate import generate
from magicinfinite_core.weights.bundle import load_bundle
from magicinfinite_core.weights.transformer_layouts import load_transformer
from training.distill.batch import run_dit, synthetic_examples
from training.distill.lora import lora_target_modules
from training.distill.trainer import main

from .avatar_fixtures import portrait, voice, write_avatar_models


def test_avatar_batches_feed_the_reference_path_and_whisper_windows(tmp_path):
    paths = write_avatar_models(tmp_path / "models")
    dit = load_transformer(paths["dit"])
    assert any(n.startswith("audio_adapter_blocks.") and n.endswith("to_out") for n in lora_target_modules(dit))
    ex = synthetic_examples(dit.cfg, 1, (3, 8, 8))[0]
    assert ex.ref_latent.shape == (4, 1, 8, 8) and ex.audio.shape[1] == 9  # 4T-3 video frames
    from training.distill.batch import collate

    batch = collate([ex])
    x = torch.randn(1, 4, 3, 8, 8)
    with torch.no_grad():
        v = run_dit(dit, x, torch.tensor([0.5]), batch, image_mode=dit.cfg.image_mode)
        by_hand = dit(x, torch.tensor([500.0]), batch.txt, batch.txt_mask, batch.pooled, audio=batch.audio,
                      speaker_mask=batch.speaker_mask, ref_latent=batch.ref_latent.expand(-1, -1, 3, -1, -1))
    assert torch.equal(v, by_hand)


def test_dmd2_distils_an_avatar_file_into_a_4_step_generator(tmp_path):
    paths = write_avatar_models(tmp_path / "models")
    out = tmp_path / "distill"
    args = ["--base", str(paths["dit"]), "--synthetic", "2", "--out", str(out), "--steps", "3", "--gen-every", "1",
            "--shift", "5", "--save-every", "0", "--log-every", "1", "--no-tensorboard", "--no-progress",
            "--batch-size", "1"]
    assert main(args) == 0
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in logs if "step" in r and "event" not in r]
    assert steps and all(torch.isfinite(torch.tensor(v)) for r in steps for v in r.values() if isinstance(v, float))
    gen = load_transformer(out / "generator.safetensors")
    assert gen.cfg.avatar is not None and gen.cfg.text_dim == 384
    # the generator beside the VAE and Whisper: a one-file Avatar model, sampled in 4 steps without CFG
    target = paths["dit"].parent / "avatar_4step.safetensors"
    shutil.copy(out / "generator.safetensors", target)
    bundle = load_bundle(target, distilled=True)  # what `generate --model FILE --distilled` loads
    assert bundle.distilled == {"timesteps": list(DISTILLED_TIMESTEPS), "shift": 5.0}
    path, report = generate(portrait(), voice(0.5, 200), "a person talks", model=bundle, out=tmp_path / "g.mp4",
                            distilled=True, speakers=[(8, 8, 56, 56)], device="cpu")
    assert path.is_file() and report.steps == 4 and report.mode == "distilled"


@pytest.mark.slow
def test_preprocess_writes_an_avatar_cache_that_dmd2_trains_from(tmp_path):
    """`training.preprocess --audio-encoder whisper` on real (world-generator) clips: the sampler's Whisper
    windows, frame 0's latent as ref_latent, the face mask; then 2 DMD2 steps from that cache."""
    pytest.importorskip("ray")
    from magicinfinite_core.distributed.ray_runtime import init_ray
    from magicinfinite_core.inputs.audio_features import WhisperExtractor
    from magicinfinite_core.media.autoencoders import load_autoencoder, reference_latent
    from magicinfinite_core.sampling.predictor import avatar_audio_window
    from magicinfinite_core.weights.checkpoints import load_state_dict
    from training.data.clip import make_clip, read_clip, save_clip
    from training.data.render import WorldConfig
    from training.data.speech import espeak_available
    from training.data.tensors import frames_to_tensor
    from training.distill.batch import open_examples
    from training.preprocess import main as preprocess_main

    if not espeak_available():
        pytest.skip("espeak-ng is needed to build world clips")
    from dataclasses import replace

    from magicinfinite_core.config import dit_preset
    from magicinfinite_core.inputs.text_encoders import AVATAR_NEGATIVE, HunyuanTextEncoder

    from .llava_fixtures import write_clip_text, write_llava

    # the model's text widths are the tiny LLaVA's / CLIP's: the Avatar text (portrait in <image>) is cached
    paths = write_avatar_models(tmp_path / "models", cfg=replace(dit_preset("tiny-avatar"), text_dim=32, pooled_dim=24))
    llava, clip_l = write_llava(tmp_path / "te" / "llava", 32), write_clip_text(tmp_path / "te" / "clip", 24)
    for i in range(2):
        save_clip(make_clip(i, "train", 9, WorldConfig(64, 64, 0.3, 0.4, 1, 0.0)), tmp_path / "data" / f"c{i}")
    cache = tmp_path / "cache"
    ray = init_ray(num_cpus=2)
    try:
        assert preprocess_main(["--data", str(tmp_path / "data"), "--vae", str(paths["vae"]), "--out", str(cache),
                                "--audio-encoder", "whisper", "--whisper", str(paths["whisper"]), "--patch", "2", "2",
                                "--text-encoder", "hunyuan", "--llava", str(llava), "--clip", str(clip_l),
                                "--threads", "1"]) == 0
    finally:
        ray.shutdown()
    assert '"audio_extractor": "whisper:whisper-tiny-random"' in (cache / "cache.json").read_text()
    clip, sd = read_clip(tmp_path / "data" / "c0"), load_state_dict(cache / "c0.safetensors")
    whisper, vae = WhisperExtractor.from_path(paths["whisper"]), load_autoencoder(paths["vae"])
    windows = whisper.windows(clip.audio, 9)
    assert torch.equal(sd["audio"], windows.half())  # the sampler's windows, per video frame
    with torch.no_grad():
        ref = reference_latent(vae, frames_to_tensor(clip.frames)[None][:, :, 0])[0]
    assert torch.allclose(sd["ref_latent"], ref, atol=1e-5) and sd["face_tokens"].shape == (3, 4, 4)
    te = HunyuanTextEncoder(llava, clip_l, dtype=torch.float32)
    want_text = te.encode_avatar([clip.meta["prompt"]], [clip.frames[0]])
    n = want_text.tokens.shape[1]
    real = want_text.tokens[0] * want_text.mask[0, :, None]  # the cache zeroes the padding rows
    assert torch.allclose(sd["text_tokens"][:n].float(), real.half().float(), atol=1e-3)
    assert torch.equal(sd["text_mask"][:n], want_text.mask[0]) and not sd["text_mask"][n:].any()
    null = te.encode_avatar([AVATAR_NEGATIVE], [clip.frames[0]])  # the negative prompt with the same portrait
    assert torch.equal(sd["null_text_mask"][:n], null.mask[0]) and torch.allclose(sd["null_pooled"], null.pooled[0])
    ex = open_examples(cache, 3)[0]
    assert torch.equal(ex.uncond_txt_mask, sd["null_text_mask"])
    want = avatar_audio_window(windows.float().flatten(1)[None], 0, 3).reshape(1, 9, *windows.shape[1:])
    assert torch.equal(ex.audio, want) and torch.equal(ex.ref_latent, sd["ref_latent"])

    out = tmp_path / "distill"
    args = ["--base", str(paths["dit"]), "--data", str(cache), "--latent-frames", "3", "--out", str(out), "--steps",
            "2", "--gen-every", "1", "--shift", "5", "--save-every", "0", "--log-every", "1", "--no-tensorboard",
            "--no-progress", "--batch-size", "1"]
    assert main(args) == 0
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in logs if "step" in r and "event" not in r]
    assert len(steps) == 2 and all(torch.isfinite(torch.tensor(v)) for r in steps for v in r.values()
                                   if isinstance(v, float))


def test_a_cache_for_another_kind_of_model_is_one_line(tmp_path, capsys):
    from dataclasses import replace

    from magicinfinite_core.config import dit_preset
    from training.cache_encoders import EncoderSpec
    from training.distill.batch import check_examples
    from training.preprocess import main as preprocess_main

    avatar = replace(dit_preset("tiny-avatar"), text_dim=384, pooled_dim=384)
    plain = replace(dit_preset("tiny"), text_dim=384, pooled_dim=384)
    assert "--audio-encoder whisper --whisper WHISPER" in check_examples(avatar, synthetic_examples(plain, 1))
    assert "made for HunyuanVideo-Avatar" in check_examples(plain, synthetic_examples(avatar, 1))
    assert "the cache's text is 384-dim" in check_examples(replace(avatar, text_dim=32), synthetic_examples(avatar, 1))
    assert check_examples(avatar, synthetic_examples(avatar, 1)) is None
    assert EncoderSpec(audio="whisper").problems() == [
        "--audio-encoder whisper needs --whisper PATH (openai/whisper-tiny folder or .safetensors); got none"]
    (tmp_path / "data").mkdir()
    (tmp_path / "vae.safetensors").write_bytes(b"x")
    rc = preprocess_main(["--data", str(tmp_path / "data"), "--vae", str(tmp_path / "vae.safetensors"), "--out",
                          str(tmp_path / "out"), "--audio-encoder", "whisper"])
    assert rc == 2 and "needs --whisper PATH" in capsys.readouterr().err
