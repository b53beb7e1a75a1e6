"""The 4-step recipe for HunyuanVideo-Avatar at tiny scale: a few DMD2 steps from an Avatar-layout file with
our trainer, the exported generator loads as an Avatar model and generates in 4 steps without CFG."""

from __future__ import annotations

import json
import shutil

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
