"""TensorBoard logging: a few real steps of the tiny stage-2 trainer (with the held-out evaluation)
and of the distillation write event files whose tags are read back with TensorBoard's own reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from magicinfinite_core.weights.checkpoints import save_state_dict
from tests.test_training import TINY_DIT, tiny_config

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

C, T, H, W, L, DT, D, FRAMES = 4, 5, 4, 4, 6, 16, 64, 17


def make_eval_cache(root: Path, n: int = 3, heldout: int = 1, seed: int = 0) -> Path:
    """A synthetic cache with everything the held-out evaluation reads (lip target, boxes, portrait);
    64 mel features as the real extractor's, frames 4x the latent size as the test VAE decodes."""
    g = torch.Generator().manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        face = torch.zeros(H, W)
        face[1:3, 1:3] = 1
        t = {
            "latent": torch.randn(C, T, H, W, generator=g), "audio": torch.randn(T, 4, 5, D, generator=g).half(),
            "face_tokens": torch.ones(T, H // 2, W // 2), "face_latent": face, "mouth_latent": face.clone(),
            "text_tokens": torch.randn(L, DT, generator=g).half(), "text_mask": torch.tensor([True] * 4 + [False] * 2),
            "pooled": torch.randn(DT, generator=g), "image_tokens": torch.randn((H // 2) * (W // 2), 4 * C, generator=g),
            "mouth_open": torch.rand(FRAMES, generator=g), "mouth_box": torch.tensor([[5.0, 9.0, 11.0, 13.0]] * FRAMES),
            "face_box": torch.tensor([[2.0, 2.0, 14.0, 14.0]] * FRAMES),
            "portrait": torch.randint(0, 255, (4 * H, 4 * W, 3), generator=g, dtype=torch.uint8),
        }
        save_state_dict(root / f"clip{i}.safetensors", t, kind="magicinfinite-cache-clip", extra={"meta": "{}"})
        rows.append({"name": f"clip{i}", "file": f"clip{i}.safetensors", "split": "heldout" if i < heldout else "train"})
    save_state_dict(root / "null_text.safetensors", {
        "text_tokens": torch.zeros(L, DT).half(), "text_mask": torch.tensor([True, True] + [False] * (L - 2)),
        "pooled": torch.zeros(DT)}, kind="null")
    from training.shards import write_manifests

    write_manifests(root, rows)
    return root


def _test_vae(path: Path) -> Path:
    from magicinfinite_core.config import VAEConfig
    from magicinfinite_core.media.autoencoders import save_autoencoder as save_vae
    from magicinfinite_core.media.vae import VideoVAE

    torch.manual_seed(0)
    return save_vae(path, VideoVAE(VAEConfig(spatial_compression_ratio=4)))


def _events(folder: Path) -> EventAccumulator:
    files = sorted(folder.glob("events.out.tfevents.*"))
    assert files, f"no event file in {folder}"
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_stage2_logs_losses_lr_throughput_heldout_metrics_and_frames(tmp_path):
    from training.trainer import run

    cfg = tiny_config(tmp_path)
    cfg.cache = str(make_eval_cache(tmp_path / "evalcache"))
    cfg.vae = str(_test_vae(tmp_path / "vae.safetensors"))
    cfg.dit = {**TINY_DIT, "audio": {**TINY_DIT["audio"], "feature_dim": D}}
    cfg.eval_minutes, cfg.eval_clips, cfg.eval_steps = 1e-9, 1, 2  # evaluate after every step
    run(cfg, 2, max_steps=3)
    ev = _events(Path(cfg.out) / "stage2")
    scalars = set(ev.Tags()["scalars"])
    want = {"loss/total", "loss/base", "loss/face", "loss/mouth", "lr/backbone", "lr/audio",
            "throughput/steps_per_s", "throughput/clips_per_s", "heldout/lipsync_r", "heldout/muted_r",
            "heldout/psnr_portrait"}
    assert want <= scalars, want - scalars
    assert [e.step for e in ev.Scalars("loss/total")] == [1, 2, 3]
    rec = [json.loads(x) for x in (Path(cfg.out) / "stage2" / "log.jsonl").read_text().splitlines()]
    assert ev.Scalars("loss/total")[-1].value == pytest.approx(next(r for r in rec if r.get("step") == 3
                                                                    and "loss" in r)["loss"], abs=1e-5)
    assert "heldout/sample" in ev.Tags()["images"]
    img = ev.Images("heldout/sample")[-1]
    assert (img.height, img.width) == (16, 16 * 7)  # the portrait + 6 frames, side by side


def test_tensorboard_off_writes_no_events(tmp_path):
    from training.trainer import run

    cfg = tiny_config(tmp_path)
    cfg.tensorboard = False
    run(cfg, 1, max_steps=1)
    assert not list((Path(cfg.out) / "stage1").glob("events.out.tfevents.*"))


def test_distillation_logs_its_loss_terms_and_rates(tmp_path):
    from training.distill.trainer import main

    base = tmp_path / "base.safetensors"
    from magicinfinite_core.config import AudioLayerConfig, DiTConfig
    from magicinfinite_core.models.dit import MagicInfiniteDiT
    from magicinfinite_core.weights.checkpoints import save_dit

    d = dict(TINY_DIT)
    audio = d.pop("audio")
    torch.manual_seed(0)
    dcfg = DiTConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()},
                     audio=AudioLayerConfig(**audio))
    save_dit(base, MagicInfiniteDiT(dcfg))
    out = tmp_path / "distill"
    rc = main(["--base", str(base), "--synthetic", "2", "--latent-frames", "3", "--latent-size", "4", "4",
               "--out", str(out), "--steps", "2", "--log-every", "1", "--save-every", "0", "--lora-rank", "2",
               "--gen-every", "1", "--curriculum-steps", "1", "--no-progress"])
    assert rc == 0
    ev = _events(out)
    scalars = set(ev.Tags()["scalars"])
    want = {"loss/gen_loss", "loss/fake", "curriculum/w_base", "curriculum/w_dm", "lr/generator", "lr/critic",
            "throughput/steps_per_s", "throughput/clips_per_s"}
    assert want <= scalars, want - scalars
    assert [e.step for e in ev.Scalars("loss/fake")] == [1, 2]


def test_frame_strip_puts_the_portrait_first():
    from training.tracking import frame_strip

    frames = np.stack([np.full((2, 3, 3), i, np.uint8) for i in range(10)])
    strip = frame_strip(frames, count=3, portrait=np.full((2, 3, 3), 99, np.uint8))
    assert strip.shape == (2, 12, 3) and list(strip[0, ::3, 0]) == [99, 0, 4, 9]


def test_without_tensorboard_the_trainer_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    import sys

    from training.tracking import TrackingUnavailableError, tracker_kwargs
    from training.trainer import main

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` fails as if not installed
    with pytest.raises(TrackingUnavailableError, match=r'pip install "comfyui-magicinfinite\[train\]"'):
        tracker_kwargs(True, tmp_path)
    assert tracker_kwargs(False, tmp_path) == {}
    cfg = tiny_config(tmp_path)
    path = tmp_path / "cfg.json"
    from dataclasses import asdict

    path.write_text(json.dumps(asdict(cfg)))
    assert main(["--stage", "1", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "needs tensorboard" in err and "--set tensorboard=false" in err
    assert not (Path(cfg.out) / "stage1").exists()


def test_distillation_evaluates_held_out_lip_sync_and_logs_it(tmp_path):
    from magicinfinite_core.config import AudioLayerConfig, DiTConfig
    from magicinfinite_core.models.dit import MagicInfiniteDiT
    from magicinfinite_core.weights.checkpoints import save_dit
    from training.distill.trainer import main

    cache = make_eval_cache(tmp_path / "cache", n=3, heldout=1)
    vae = _test_vae(tmp_path / "vae.safetensors")
    d = {**TINY_DIT}
    audio = {**d.pop("audio"), "feature_dim": D}
    torch.manual_seed(0)
    save_dit(tmp_path / "base.safetensors", MagicInfiniteDiT(DiTConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}, audio=AudioLayerConfig(**audio))))
    out = tmp_path / "distill"
    rc = main(["--base", str(tmp_path / "base.safetensors"), "--data", str(cache), "--vae", str(vae),
               "--out", str(out), "--steps", "2", "--log-every", "1", "--save-every", "0", "--lora-rank", "2",
               "--gen-every", "1", "--curriculum-steps", "1", "--latent-frames", "3", "--eval-every", "2",
               "--eval-clips", "1", "--shift", "3", "--no-progress"])
    assert rc == 0
    evals = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if '"eval": true' in x]
    assert len(evals) == 1 and evals[0]["step"] == 2 and "lipsync_r" in evals[0] and "muted_r" in evals[0]
    ev = _events(out)
    assert {"heldout/lipsync_r", "heldout/muted_r", "heldout/psnr_portrait"} <= set(ev.Tags()["scalars"])
    assert "heldout/sample" in ev.Tags()["images"]
