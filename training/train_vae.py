"""Train the demo VAE (diffusers ``AutoencoderKLHunyuanVideo``, small config) on the world.

    python -m training.train_vae --data out/demo_world --out out/vae --minutes 10

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

from magicinfinite_core.checkpoints import load_state_dict, save_state_dict
from magicinfinite_core.config import VAEConfig
from magicinfinite_core.vae import VideoVAE
from training.preprocess import box_mask, frames_to_tensor, list_clips, read_clip, speaker_mouth_boxes
from training.trainer import load_training_state, save_training_state


def load_frames(roots: list[str | Path], limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All clips as uint8 frames [N, F, H, W, 3] and mouth-box masks [N, F, H, W] (kept in RAM)."""
    frames, mouths = [], []
    dirs = [d for r in roots for d in list_clips(r)]
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


def save_vae(path: str | Path, vae: VideoVAE, dtype: torch.dtype | None = None) -> Path:
    return save_state_dict(
        path, vae.model.state_dict(), kind="magicinfinite-vae", config=vae.cfg.to_dict(), dtype=dtype
    )


@torch.no_grad()
def measure_scaling(vae: VideoVAE, frames: torch.Tensor, n: int = 16) -> float:
    """1 / std of posterior means over a few clips, so the DiT sees unit-variance latents."""
    z = torch.cat([vae.model.encode(frames_to_tensor(f.numpy())[None]).latent_dist.mode() for f in frames[:n]])
    return float(1.0 / z.float().std().clamp_min(1e-4))


def train(args: argparse.Namespace) -> Path:
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.init:
        # Decoder fine-tuning: the encoder (and so every cached latent and the scaling factor) stays
        # fixed while the decoder keeps improving -- the DiT can train on the frozen latents meanwhile.
        from training.preprocess import load_vae

        vae = load_vae(args.init)
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
        if not args.init:
            raise SystemExit("--freeze-encoder needs --init (a trained VAE whose encoder to keep)")
        for mod in (vae.model.encoder, vae.model.quant_conv):
            mod.requires_grad_(False)
            mod.eval()
    frames, mouths = load_frames(args.data, args.limit)
    n_clips, n_frames = frames.shape[:2]
    held_f, held_m = frames[-4:], mouths[-4:]
    frames, mouths = frames[:-4], mouths[:-4]
    trainable = [p for p in vae.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0)
    names = {id(p): n for n, p in vae.model.named_parameters()}
    gen = torch.Generator().manual_seed(args.seed)
    gens = {"data": gen}
    step = 0
    ckpt, state = out / "vae_last.safetensors", out / "vae_state.safetensors"
    if ckpt.is_file() and state.is_file():
        vae.model.load_state_dict(load_state_dict(ckpt))
        step = load_training_state(state, opt, names, gens)
        print(f"resumed at step {step}", flush=True)
    log = open(out / "vae_log.jsonl", "a")
    t0 = time.time()
    last_save = t0
    span = 4 * ((args.clip_frames - 1) // 4) + 1
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
        if step % args.log_every == 0:
            rec = {"step": step, "loss": loss.item(), **parts, "time_s": round(time.time() - t0, 1)}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(rec, flush=True)
        if time.time() - last_save > args.save_minutes * 60:
            save_vae(ckpt, vae)
            save_training_state(state, opt, names, gens, step)
            last_save = time.time()
    vae.model.eval()
    save_vae(ckpt, vae)
    save_training_state(state, opt, names, gens, step)
    with torch.no_grad():
        # a frozen encoder keeps its scaling factor: cached latents were made with it
        scale = vae.cfg.scaling_factor if args.init else measure_scaling(vae, frames)
        x = torch.stack([frames_to_tensor(f.numpy()) for f in held_f])
        rec = vae.model.decode(vae.model.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        # (raw latents: encode/decode through diffusers directly, so the scaling factor cancels)
        mouth = held_m[:, None].expand_as(x)
        p_all = psnr(rec, x)
        p_mouth = psnr(rec[mouth], x[mouth])
    final = VideoVAE(VAEConfig(**{**cfg.to_dict(), "scaling_factor": scale, "block_out_channels": cfg.block_out_channels}))
    final.model.load_state_dict(vae.model.state_dict())
    path = save_vae(out / "vae.safetensors", final)
    summary = {
        "steps": step,
        "minutes": round((time.time() - t0) / 60, 2),
        "scaling_factor": scale,
        "heldout_psnr": round(float(p_all), 2),
        "heldout_mouth_psnr": round(float(p_mouth), 2),
        "clips": n_clips,
    }
    (out / "vae_summary.json").write_text(json.dumps(summary, indent=1))
    print(summary, flush=True)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.train_vae", description=__doc__.split("\n")[0])
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--out", required=True)
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
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--save-minutes", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    print(f"vae: {train(a)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
