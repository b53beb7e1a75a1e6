"""Train the demo VAE (diffusers ``AutoencoderKLHunyuanVideo``, small config) on the world.

    python -m training.train_vae --data out/demo/world --out out/demo/vae --minutes 10

Writes OUT/vae.safetensors (the model, rewritten at every save with the latent scale measured
then), OUT/vae_state.safetensors (resume state: rerun the same command), OUT/log.jsonl (JSON lines)
and OUT/vae_summary.json. Trains on the train-split clips only; held-out clips give the PSNR.

Why our own loop: the loss weights the mouth box (1 + mouth_weight) because the mouth is a few pixels
of a small frame and an unweighted reconstruction loss blurs it away first -- and lip sync can
never be better than what the VAE can reconstruct. L1 + MSE on pixels plus a small KL keeps the
latent near unit variance (the latent is then rescaled by its measured std: ``scaling_factor``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from magicinfinite_core.config import VAEConfig
from magicinfinite_core.media.autoencoders import save_autoencoder
from magicinfinite_core.media.vae import VideoVAE
from magicinfinite_core.weights.checkpoints import load_state_dict
from training.data.clip import list_clips, read_clip
from training.data.tensors import box_mask, frames_to_tensor, speaker_mouth_boxes
from training.training_state import load_training_state, save_training_state


def clip_split(clip_dir: Path) -> str | None:
    """The split recorded in a clip's meta.json (None when it records none)."""
    return json.loads((Path(clip_dir) / "meta.json").read_text()).get("split")


def clips_by_split(roots: list[str | Path]) -> dict[str, list[Path]]:
    """Finished clip folders of the roots grouped by split (a world folder may hold both)."""
    out: dict[str, list[Path]] = {}
    for d in (d for r in roots for d in list_clips(r)):
        out.setdefault(clip_split(d) or "unknown", []).append(d)
    return out


def load_frames(dirs: list[Path], limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips as uint8 frames [N, F, H, W, 3] and mouth-box masks [N, F, H, W] (kept in RAM)."""
    frames, mouths = [], []
    for d in dirs[:limit]:
        c = read_clip(d)
        frames.append(torch.from_numpy(c.frames))
        h, w = c.frames.shape[1:3]
        mouths.append(torch.from_numpy(box_mask(speaker_mouth_boxes(c.gt, c.meta), h, w, margin=0.15)))
    n = min(f.shape[0] for f in frames)
    return torch.stack([f[:n] for f in frames]), torch.stack([m[:n] for m in mouths])


def crop_batch(
    frames: torch.Tensor,
    mouths: torch.Tensor,
    idx: torch.Tensor,
    start: torch.Tensor,
    span: int,
    crop: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial crops (the VAE is convolutional): half of them centred on the mouth, so the part
    that matters most for lip sync is seen every step at a quarter of the compute of full frames."""
    xs, ms = [], []
    h, w = frames.shape[2:4]
    crop = min(crop, h, w)
    for i, s in zip(idx.tolist(), start.tolist(), strict=True):
        m = mouths[i, s : s + span]
        if crop < h and float(torch.rand(1, generator=generator)) < 0.5 and m.any():
            ys, xs_ = torch.nonzero(m.any(0), as_tuple=True)
            cy, cx = int(ys.float().mean()), int(xs_.float().mean())
            jy, jx = (torch.randint(-crop // 4, crop // 4 + 1, (2,), generator=generator)).tolist()
            y0 = min(max(cy - crop // 2 + jy, 0), h - crop)
            x0 = min(max(cx - crop // 2 + jx, 0), w - crop)
        else:
            y0 = int(torch.randint(0, h - crop + 1, (1,), generator=generator))
            x0 = int(torch.randint(0, w - crop + 1, (1,), generator=generator))
        y0, x0 = y0 // 8 * 8, x0 // 8 * 8  # keep the latent grid phase of full frames
        xs.append(frames_to_tensor(frames[i, s : s + span, y0 : y0 + crop, x0 : x0 + crop].numpy()))
        ms.append(m[:, y0 : y0 + crop, x0 : x0 + crop])
    return torch.stack(xs), torch.stack(ms)


def vae_loss(
    vae: VideoVAE,
    x: torch.Tensor,
    mouth: torch.Tensor,
    generator: torch.Generator,
    mouth_weight: float,
    kl_weight: float,
    sample: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mouth-weighted L1 + MSE reconstruction plus KL to N(0, 1).

    `sample=False` decodes the posterior mean (a plain autoencoder, with the KL only bounding the
    mean): on a CPU budget it converges several times faster, because early on the posterior noise
    (std ~1 at init) swamps the decoder's input. The DiT only ever sees posterior means anyway.
    """
    dist = vae.model.encode(x).latent_dist
    z = dist.mean
    if sample:
        z = z + dist.std * torch.randn(dist.mean.shape, generator=generator, dtype=dist.mean.dtype)
    rec = vae.model.decode(z).sample
    w = 1.0 + mouth_weight * mouth[:, None].float()
    err = rec.float() - x
    l1 = (w * err.abs()).mean() / w.mean()
    l2 = (w * err.square()).mean() / w.mean()
    kl = 0.5 * (dist.mean.square() + dist.var - 1.0 - dist.logvar).mean()
    loss = l1 + l2 + kl_weight * kl
    return loss, {"l1": l1.item(), "mse": l2.item(), "kl": kl.item()}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of [-1, 1] images (peak-to-peak 2)."""
    mse = float((a.float() - b.float()).square().mean())
    return 10.0 * np.log10(4.0 / max(mse, 1e-12))


@torch.no_grad()
def measure_scaling(vae: VideoVAE, frames: torch.Tensor, n: int = 16) -> float:
    """1 / std of posterior means over a few clips, so the DiT sees unit-variance latents."""
    z = torch.cat([vae.model.encode(frames_to_tensor(f.numpy())[None]).latent_dist.mode() for f in frames[:n]])
    return float(1.0 / z.float().std().clamp_min(1e-4))


MODEL_FILE = "vae.safetensors"  # the trained VAE (rewritten at every save): what preprocess and export use
STATE_FILE = "vae_state.safetensors"  # optimizer, RNG and step: what a resumed run continues from
LOG_FILE = "log.jsonl"
SUMMARY_FILE = "vae_summary.json"


def _save(out: Path, vae: VideoVAE, cfg: VAEConfig, frames: torch.Tensor, fixed_scale: float | None,
          opt, names, gens, step: int) -> float:
    """The model file (with the latent scale measured now) and the resume state; returns the scale."""
    was = vae.model.training
    vae.model.eval()
    with torch.no_grad():
        # a frozen encoder keeps its scaling factor: cached latents were made with it
        scale = fixed_scale if fixed_scale is not None else measure_scaling(vae, frames)
    vae.model.train(was)
    final = VideoVAE(VAEConfig(**{**cfg.to_dict(), "scaling_factor": scale,
                                  "block_out_channels": cfg.block_out_channels}))
    final.model.load_state_dict(vae.model.state_dict())
    save_autoencoder(out / MODEL_FILE, final)
    save_training_state(out / STATE_FILE, opt, names, gens, step)
    return scale


def train(args: argparse.Namespace) -> Path:
    """Train on the train-split clips of --data; PSNR on held-out clips (never trained on)."""
    from training.runconfig import describe_counts, progress, split_counts, trim_log

    torch.manual_seed(args.seed)
    out = Path(args.out)
    groups = clips_by_split(args.data + list(args.heldout or []))
    counts = split_counts(s for s, ds in groups.items() for _ in ds)
    if args.init:
        # Decoder fine-tuning: the encoder (and so every cached latent and the scaling factor) stays
        # fixed while the decoder keeps improving -- the DiT can train on the frozen latents meanwhile.
        from magicinfinite_core.media.autoencoders import load_autoencoder

        vae = load_autoencoder(args.init)
        cfg = vae.cfg
    else:
        cfg = VAEConfig(
            latent_channels=args.latent_channels,
            block_out_channels=tuple(args.channels),
            layers_per_block=1,
            norm_num_groups=8,
            spatial_compression_ratio=args.spatial_ratio,
        )
        vae = VideoVAE(cfg)
    vae.model.train()
    if args.freeze_encoder:
        for mod in (vae.model.encoder, vae.model.quant_conv):
            mod.requires_grad_(False)
            mod.eval()
    frames, mouths = load_frames(groups["train"], args.limit)
    n_frames = frames.shape[1]
    held = groups.get("heldout", [])[: args.heldout_clips]
    held_f, held_m = load_frames(held) if held else (None, None)
    print(describe_counts("vae", counts) + f"; held-out PSNR on {len(held)} clips", flush=True)
    trainable = [p for p in vae.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0)
    names = {id(p): n for n, p in vae.model.named_parameters()}
    gen = torch.Generator().manual_seed(args.seed)
    gens = {"data": gen}
    step = 0
    out.mkdir(parents=True, exist_ok=True)
    model_file, state = out / MODEL_FILE, out / STATE_FILE
    legacy = out / "vae_last.safetensors"  # runs saved before the file names were unified
    weights = legacy if legacy.is_file() and not model_file.is_file() else model_file
    if weights.is_file() and state.is_file():
        vae.model.load_state_dict({k: v.float() for k, v in load_state_dict(weights).items()})
        step = load_training_state(state, opt, names, gens)
        print(f"resumed at step {step}", flush=True)
    trim_log(out / LOG_FILE, step)
    log = open(out / LOG_FILE, "a")
    log.write(json.dumps({"event": "start", "start_step": step, "clips": counts}) + "\n")
    fixed = vae.cfg.scaling_factor if args.init else None
    t0 = time.time()
    last_save = t0
    span = 4 * ((args.clip_frames - 1) // 4) + 1
    bar = progress(args.steps, step, "vae", not args.no_progress)
    while step < args.steps and (time.time() - t0) < args.minutes * 60:
        idx = torch.randint(0, frames.shape[0], (args.batch,), generator=gen)
        start = torch.randint(0, n_frames - span + 1, (args.batch,), generator=gen)
        x, m = crop_batch(frames, mouths, idx, start, span, args.crop, gen)
        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        loss, parts = vae_loss(vae, x, m, gen, args.mouth_weight, args.kl_weight, args.posterior == "sample")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}",  # --minutes ends the run before the step ETA does
                        stops_in=f"{max(0.0, args.minutes - (time.time() - t0) / 60):.1f}min", refresh=False)
        if step % args.log_every == 0:
            rec = {"step": step, "loss": round(loss.item(), 6), **{k: round(v, 6) for k, v in parts.items()},
                   "time_s": round(time.time() - t0, 1)}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            bar.write(json.dumps(rec))
        if (args.save_every and step % args.save_every == 0) or time.time() - last_save > args.save_minutes * 60:
            _save(out, vae, cfg, frames, fixed, opt, names, gens, step)
            last_save = time.time()
    bar.close()
    vae.model.eval()
    scale = _save(out, vae, cfg, frames, fixed, opt, names, gens, step)
    summary = {"steps": step, "minutes": round((time.time() - t0) / 60, 2), "scaling_factor": scale,
               "clips": counts, "heldout_psnr": None, "heldout_mouth_psnr": None}
    if held_f is not None:
        with torch.no_grad():
            x = torch.stack([frames_to_tensor(f.numpy()) for f in held_f])
            rec = vae.model.decode(vae.model.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
            # (raw latents: encode/decode through diffusers directly, so the scaling factor cancels)
            mouth = held_m[:, None].expand_as(x)
            summary["heldout_psnr"] = round(float(psnr(rec, x)), 2)
            summary["heldout_mouth_psnr"] = round(float(psnr(rec[mouth], x[mouth])), 2)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
    log.write(json.dumps({"event": "end", **summary}) + "\n")
    log.close()
    print(json.dumps(summary), flush=True)
    return out / MODEL_FILE


PROG = "python -m training.train_vae"


def input_problems(a: argparse.Namespace) -> list[str]:
    """Missing inputs, found before anything is written."""
    from training.runconfig import missing_inputs

    checks = [(Path(d).is_dir(), f"--data {d} is not a folder") for d in a.data]
    checks += [(Path(d).is_dir(), f"--heldout {d} is not a folder") for d in (a.heldout or [])]
    checks.append((not a.init or Path(a.init).is_file(), f"--init {a.init} does not exist"))
    checks.append((not a.freeze_encoder or bool(a.init), "--freeze-encoder needs --init (a trained VAE)"))
    problems = missing_inputs(checks)
    if not problems and not clips_by_split(a.data).get("train"):
        problems.append(f"no train-split clips in {' '.join(a.data)} (build them: python -m training.data.build "
                        "--split train ...)")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.train_vae", description=__doc__.split("\n")[0])
    p.add_argument("--data", nargs="+", required=True,
                   help="world folders; their train-split clips are trained on, held-out ones only measured")
    p.add_argument("--heldout", nargs="*", default=[], help="extra folders with held-out clips (PSNR only)")
    p.add_argument("--heldout-clips", type=int, default=4, help="held-out clips for the final PSNR")
    p.add_argument("--out", required=True, help="output folder: vae.safetensors, vae_state, log.jsonl, summary")
    p.add_argument("--latent-channels", type=int, default=8)
    p.add_argument("--init", default=None, help="start from this VAE file (its config wins)")
    p.add_argument("--freeze-encoder", action="store_true", help="train the decoder only (needs --init)")
    p.add_argument("--channels", type=int, nargs="+", default=[16, 32, 32, 32])
    p.add_argument("--spatial-ratio", type=int, default=8, help="8 (HunyuanVideo) or 4 (small demo frames)")
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--clip-frames", type=int, default=9)
    p.add_argument("--crop", type=int, default=32, help="square spatial crop (pixels) per sample")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--mouth-weight", type=float, default=10.0)
    p.add_argument("--kl-weight", type=float, default=1e-4)
    p.add_argument("--posterior", choices=("sample", "mode"), default="mode",
                   help="decode a posterior sample (classic VAE) or the mean (faster to train)")
    p.add_argument("--limit", type=int, default=None, help="at most this many train clips")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--save-every", type=int, default=500, help="save (model + resume state) every N steps")
    p.add_argument("--save-minutes", type=float, default=3.0, help="... and every M minutes")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    from training.runconfig import fail

    problems = input_problems(a)
    if problems:
        return fail(problems, PROG)
    torch.set_num_threads(a.threads)
    print(f"vae: {train(a)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
