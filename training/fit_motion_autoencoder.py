"""Fit the motion autoencoder's residual code and scales in closed form, and score its round trip.

    python -m training.fit_motion_autoencoder --data W/photo W/drawn --heldout W/photo_heldout \
        --out out/v4/motion_ae.safetensors --residual 8

The flow part needs no fitting (it is measured: OpenCV DIS flow, averaged per cell). What is fitted:
the PCA basis of what the warp leaves over in a cell (the mouth interior, teeth, shading), and two
scales that put the flow and the residual codes near unit size where the video moves, so the DiT's
flow-matching noise is on the scale of the motion. Only train-split clips are fitted; `--heldout`
clips are scored (PSNR of the round trip, all pixels and inside/outside the mouth boxes, against
copying the portrait), and the JSON report is printed and written beside the weights.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from magicinfinite_core.media.autoencoders import save_autoencoder
from magicinfinite_core.media.motion_autoencoder import MotionAutoencoder, MotionAutoencoderConfig, warp
from magicinfinite_core.media.patch_autoencoder import patchify
from training.data.clip import list_clips, read_clip
from training.data.tensors import frames_to_tensor
from training.fit_autoencoder import psnr
from training.preprocess import speaker_mouth_boxes


def _mouth_mask(clip, size: tuple[int, int]) -> torch.Tensor:
    m = torch.zeros(size, dtype=torch.bool)
    for x0, y0, x1, y1 in np.asarray(speaker_mouth_boxes(clip.gt, clip.meta)).reshape(-1, 4):
        m[max(int(y0), 0): int(np.ceil(y1)), max(int(x0), 0): int(np.ceil(x1))] = True
    return m


def _clips(roots: list[str], split: str | None, limit: int | None):
    n = 0
    for root in roots:
        for d in list_clips(root):
            c = read_clip(d)
            if split is not None and c.meta.get("split", "train") != split:
                continue
            yield d.name, c
            n += 1
            if limit is not None and n >= limit:
                return


def fit(cfg: MotionAutoencoderConfig, roots: list[str], limit: int | None = None) -> tuple[MotionAutoencoder, dict]:
    """Residual PCA over all cells of all frames, then the two scales (RMS over moving cells -> 1)."""
    probe = MotionAutoencoder(replace(cfg, residual_channels=0))
    n = 3 * cfg.cell**2
    s2 = torch.zeros(n, n, dtype=torch.float64)
    flow_sq, flow_count, clips = 0.0, 0, 0
    for _, c in _clips(roots, "train", limit):
        x = frames_to_tensor(c.frames).transpose(0, 1)  # [F, 3, H, W]
        flow = probe._cell_flow(x[1:], x[0])
        h, w = x.shape[-2:]
        warped = warp(x[:1].expand(len(x) - 1, -1, -1, -1), probe._upsample(flow, h, w))
        cells = patchify((x[1:] - warped).transpose(0, 1)[None], cfg.cell).reshape(-1, n).double()
        s2 += cells.T @ cells
        moving = flow.norm(dim=1) > 0.25
        if moving.any():
            flow_sq += float(flow.permute(0, 2, 3, 1)[moving].square().sum()) / 2
            flow_count += int(moving.sum())
        clips += 1
    if not clips:
        raise SystemExit(f"no train-split clips under {roots}")
    evals, evecs = torch.linalg.eigh(s2)
    basis = evecs[:, torch.argsort(evals, descending=True)[: cfg.residual_channels]].T.float()
    # residual scale: RMS of the codes over cells whose residual is not negligible
    code_sq, code_count = 0.0, 0
    for _, c in _clips(roots, "train", min(limit or 40, 40)):
        x = frames_to_tensor(c.frames).transpose(0, 1)
        flow = probe._cell_flow(x[1:], x[0])
        warped = warp(x[:1].expand(len(x) - 1, -1, -1, -1), probe._upsample(flow, *x.shape[-2:]))
        cells = patchify((x[1:] - warped).transpose(0, 1)[None], cfg.cell).reshape(-1, n)
        code = cells @ basis.T
        active = code.norm(dim=1) > 0.5
        code_sq += float(code[active].square().sum())
        code_count += int(active.sum()) * max(cfg.residual_channels, 1)
    flow_rms = (flow_sq / max(flow_count, 1)) ** 0.5
    code_rms = (code_sq / max(code_count, 1)) ** 0.5 if code_count else 1.0
    ae = MotionAutoencoder(cfg)
    ae.set_fit(basis, flow_scale=1.0 / max(flow_rms, 0.25), residual_scale=1.0 / max(code_rms, 1e-3))
    explained = float(evals.sort(descending=True).values[: cfg.residual_channels].sum() / evals.sum())
    return ae.eval(), {"clips": clips, "flow_rms_px": flow_rms, "residual_code_rms": code_rms,
                       "residual_variance_explained": explained}


def score(ae: MotionAutoencoder, roots: list[str], limit: int | None = None) -> dict:
    """Round-trip PSNR (dB) of held-out clips: all pixels, outside and inside the mouth boxes, and copy."""
    rows = []
    for name, c in _clips(roots, None, limit):
        x = frames_to_tensor(c.frames)[None]
        y = ae.decode(ae.encode(x), x[:, :, 0])[:, :, : x.shape[2]]
        m = _mouth_mask(c, x.shape[-2:])
        copy = x[:, :, :1].expand_as(x)
        sl = (slice(None), slice(None), slice(1, None))
        rows.append({
            "clip": name, "action": c.meta.get("controls", {}).get("action"),
            "all": psnr(y[sl], x[sl]), "outside_mouth": psnr(y[sl][..., ~m], x[sl][..., ~m]),
            "mouth": psnr(y[sl][..., m], x[sl][..., m]) if m.any() else None,
            "copy_all": psnr(copy[sl], x[sl]),
        })
    mean = {k: float(np.mean([r[k] for r in rows if r[k] is not None])) for k in ("all", "outside_mouth", "mouth", "copy_all")}
    return {"mean": mean, "clips": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.fit_motion_autoencoder", description=__doc__.split("\n")[0])
    p.add_argument("--data", nargs="+", required=True, help="world clip folders (the train split is fitted)")
    p.add_argument("--out", required=True, help="the .safetensors file to write")
    p.add_argument("--heldout", nargs="*", default=[], help="clip folders scored, never fitted")
    p.add_argument("--cell", type=int, default=8)
    p.add_argument("--working-size", type=int, default=128)
    p.add_argument("--residual", type=int, default=8, help="residual PCA channels per frame")
    p.add_argument("--limit", type=int, default=None, help="fit on at most this many clips")
    a = p.parse_args(argv)
    cfg = MotionAutoencoderConfig(cell=a.cell, working_size=a.working_size, residual_channels=a.residual)
    ae, report = fit(cfg, a.data, a.limit)
    if a.heldout:
        report["heldout"] = score(ae, a.heldout)
    out = save_autoencoder(a.out, ae)
    report["config"] = ae.cfg.to_dict()
    Path(out).with_suffix(".json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "heldout"} | (
        {"heldout_mean": report["heldout"]["mean"]} if "heldout" in report else {}), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
