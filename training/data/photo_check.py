"""Check animated real photographs the way the evaluation will read them, and save frame strips.

    python -m training.data.photo_check --clips 12 --out test-artifacts/photo_check

For each clip (alternating train / held-out photos, 33 frames at 128x128 by default) it prints
one JSON line: face-mesh detection rate (target >= 0.95), Pearson r of mediapipe's inner-lip gap
and of our pixel measure (``mouth.measure_mouth_opening``) against ``gt["mouth_open"]``, and the
largest frame-to-frame change outside the face box (0 for "still" on a static background).
A PNG strip per clip (frames spread over the clip, red bar = ground-truth opening) goes to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from training.data.clip import make_clip
from training.data.mouth import measure_mouth_opening
from training.data.preview import contact_sheet
from training.data.render import WorldConfig
from training.data.splits import clip_seed


def check_clip(clip) -> dict:  # noqa: ANN001 - training.data.clip.Clip
    """Detection rate, lip read-back r (mediapipe and ours), stillness outside the face."""
    from training.eval.metrics import head_motion, mediapipe_mouth_openings, non_mouth_mask, pearson

    gt = clip.gt
    target = gt["mouth_open"]
    ours = np.array([measure_mouth_opening(f, b) for f, b in zip(clip.frames, gt["mouth_box"][:, 0], strict=True)])
    mp = mediapipe_mouth_openings(clip.frames)
    ok = np.isfinite(mp)
    H, W = clip.frames.shape[1:3]
    x0, y0, x1, y1 = gt["face_box"][:, 0].min(0)[0], gt["face_box"][:, 0].min(0)[1], *gt["face_box"][:, 0].max(0)[2:]
    yy, xx = np.mgrid[:H, :W] + 0.5
    outside = ~((xx > x0) & (xx < x1) & (yy > y0) & (yy < y1 + 0.7 * (y1 - y0)))
    diff = np.abs(np.diff(clip.frames.astype(np.int16), axis=0)).max(axis=(0, 3))
    excl = ~non_mouth_mask(gt["mouth_box"][:, 0], H, W)  # as training/eval does for text control
    motion = head_motion(clip.frames, gt["face_box"][0, 0], exclude=excl)
    return {
        "photo": clip.meta["photo"]["name"],
        "split": clip.meta["split"],
        "controls": clip.meta["controls"],
        "face_half_width_px": round(float(gt["face_size"][0, 0]), 1),
        "mediapipe_detected": round(float(ok.mean()), 3),
        "r_mediapipe": round(pearson(mp[ok], target[ok]), 3) if ok.sum() > 3 else float("nan"),
        "r_pixels": round(pearson(ours, target), 3),
        "max_change_outside_face": int(diff[outside].max()) if outside.any() else 0,
        "motion_y": round(motion["motion_y"], 3),
        "motion_x": round(motion["motion_x"], 3),
    }


def main(argv: list[str] | None = None) -> int:
    """Render photo clips, check them, write strips and a summary JSON."""
    from PIL import Image

    p = argparse.ArgumentParser(prog="python -m training.data.photo_check")
    p.add_argument("--out", default="test-artifacts/photo_check")
    p.add_argument("--clips", type=int, default=12)
    p.add_argument("--frames", type=int, default=33)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = WorldConfig(a.size, a.size, photo_faces=1.0)
    rows = []
    for i in range(a.clips):
        split = "heldout" if i % 2 else "train"
        clip = make_clip(clip_seed(a.seed, split, i), split, a.frames, cfg)
        row = {"clip": f"{split}_{i:03d}", **check_clip(clip)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        Image.fromarray(contact_sheet([clip], cols=8)).save(out / f"{row['clip']}_{row['photo']}.png")
    from training.eval.metrics import separability

    det = [r["mediapipe_detected"] for r in rows]
    by_action = {a: [r["motion_y"] for r in rows if r["controls"]["action"] == a] for a in ("still", "nodding")}
    summary = {
        "clips": len(rows),
        "mediapipe_detected_mean": float(np.mean(det)),
        "mediapipe_detected_min": float(np.min(det)),
        "r_mediapipe_mean": float(np.nanmean([r["r_mediapipe"] for r in rows])),
        "r_mediapipe_min": float(np.nanmin([r["r_mediapipe"] for r in rows])),
        "r_pixels_mean": float(np.mean([r["r_pixels"] for r in rows])),
        "r_pixels_min": float(np.min([r["r_pixels"] for r in rows])),
        "gt_motion_y_still": float(np.mean(by_action["still"] or [np.nan])),
        "gt_motion_y_nodding": float(np.mean(by_action["nodding"] or [np.nan])),
        "gt_nod_vs_still_auc": separability(by_action["still"], by_action["nodding"])["auc"],
        "still_static_max_change_outside_face": max(
            [r["max_change_outside_face"] for r in rows
             if r["controls"]["action"] == "still" and r["controls"]["background"] == "static"] or [0]
        ),
    }
    (out / "summary.json").write_text(json.dumps({"summary": summary, "clips": rows}, indent=1))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
