"""x0-prediction error by region on held-out cache clips, against "copy the portrait" (one JSON).

Why: it separates what a DiT gets wrong from what sampling does with it. At each noise level the
model sees the clip noised once; the error of its clean-video estimate in the mouth, the rest of the
face and the background is set beside the error of predicting the portrait itself. docs/demo_model.md
quotes it: v2 did worse than copying on the faces of still-head clips (it invents motion), and its
low-noise mouth error equalled its high-noise one (its sampling steps never refine).

    python bench/x0_error.py --dit magicinfinite_core/assets/demo/dit.safetensors \
        --cache out/v2/cache_heldout [--actions still] [--clips 16]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from magicinfinite_core.models.dit import concat_image_condition  # noqa: E402
from magicinfinite_core.weights.checkpoints import load_state_dict  # noqa: E402
from magicinfinite_core.weights.transformer_layouts import load_transformer  # noqa: E402
from training.preprocess import read_cache_manifest  # noqa: E402


def region_errors(model, item: dict, sigmas: list[float], g: torch.Generator) -> dict[str, list[float]]:
    """{"sigma/region": [model MSE, copy MSE]} over latent frames 1.. of one cached clip."""
    x0 = item["latent"][None].float()
    ref = x0[:, :, :1]
    mouth = item["mouth_latent"].bool()
    face = item["face_latent"].bool()
    regions = {"mouth": mouth, "face": face & ~mouth, "background": ~face}
    eps = torch.randn(x0.shape, generator=g)
    out = {}
    for s in sigmas:
        xt = (1 - s) * x0 + s * eps
        with torch.no_grad():
            v = model(concat_image_condition(xt, ref, every_frame=True, first=True), torch.tensor([s * 1000.0]),
                      txt=item["text_tokens"][None].float(), txt_mask=item["text_mask"][None].bool(),
                      pooled=item["pooled"][None].float(), audio=item["audio"][None, None].float(),
                      speaker_mask=item["face_tokens"][None, None].float())
        pred = xt - s * v
        for name, m in regions.items():
            err = (pred - x0)[:, :, 1:][..., m].pow(2).mean().item()
            copy = (ref - x0)[:, :, 1:][..., m].pow(2).mean().item()
            out[f"{s}/{name}"] = [err, copy]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dit", required=True, help="a DiT .safetensors with an every-frame portrait condition")
    p.add_argument("--cache", required=True, help="a training.preprocess cache with held-out clips")
    p.add_argument("--actions", nargs="*", default=None, help="only clips with these head actions (still, nodding, ...)")
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.9, 0.5, 0.2, 0.05])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = load_transformer(a.dit).eval().float()
    if not model.cfg.every_frame_reference:
        p.error("this measure needs a DiT with image_condition 'every_frame' (the portrait at every frame)")
    rows = [r for r in read_cache_manifest(a.cache) if r.get("split") == "heldout"]
    if a.actions:
        rows = [r for r in rows if (r.get("controls") or {}).get("action") in a.actions]
    rows = rows[: a.clips]
    if not rows:
        p.error(f"{a.cache} has no held-out clips{' with actions ' + str(a.actions) if a.actions else ''}")
    g = torch.Generator().manual_seed(a.seed)
    sums: dict[str, list[float]] = {}
    for r in rows:
        for k, (err, copy) in region_errors(model, load_state_dict(Path(a.cache) / r["file"]), a.sigmas, g).items():
            acc = sums.setdefault(k, [0.0, 0.0])
            acc[0] += err / len(rows)
            acc[1] += copy / len(rows)
    table = {k: {"model": round(v[0], 4), "copy_portrait": round(v[1], 4)} for k, v in sums.items()}
    print(json.dumps({"bench": "x0_error", "dit": a.dit, "clips": len(rows), "actions": a.actions,
                      "latent_mse": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
