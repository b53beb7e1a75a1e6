"""Issue 14's target table for one model bundle, base and 4-step generator side by side (one JSON).

    python bench/demo_quality.py --out out/demo_quality.json --strips out/demo_quality_strips
    python bench/demo_quality.py --model BUNDLE --heldout out/demo_heldout --long out/demo_long
    python bench/demo_quality.py --seconds 2 --clips 1 --skip-long --speakers 2   # quick check

Everything goes through `magicinfinite_core.generate.generate` (the bundle's own sampler settings:
base = its recommended steps and CFG, distilled = its few-step list, no CFG) on REAL photographs
(training.eval.real_photos: identity, face detection, lip sync vs reversed audio, muted audio, text
control nodding vs still, 2 and 3 speakers, and a 60 s video for drift and seams). With --heldout
the world-clip evaluation (training.eval.evaluate) runs for both models too. Speed = video-seconds
per wall-second of sampling + decode, summed over every timed video of the same run (after an
untimed warm-up). The printed JSON has a "table" (one row per target of issue 14, with the target),
"real_photos" (every measure per model and per video) and "world" (with --heldout).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from magicinfinite_core.weights.bundle import BUNDLE_FILE, DEMO_MODEL_DIR, load_bundle
from training.eval import real_photos as rp


def _get(d: dict | None, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


# (measure, target text, path into one model's result)
ROWS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("identity PSNR outside the mouth vs the portrait, real photographs (dB)", ">= 24",
     ("real", "summary", "psnr")),
    ("identity SSIM outside the mouth, real photographs", "beside PSNR", ("real", "summary", "ssim")),
    ("identity PSNR, real photographs: frame 0 (dB)", "(diagnostic)",
     ("real", "summary", "psnr_frame0")),
    ("identity PSNR, real photographs: last second (dB)", "(diagnostic)", ("real", "summary", "psnr_last_second")),
    ("identity PSNR outside the mouth, world clips (dB)", ">= 25", ("world", "psnr_portrait_all")),
    ("identity SSIM, world clips", "beside PSNR", ("world", "ssim_portrait_all")),
    ("identity drift, first vs last second of the 60 s real-photo video (dB)", "<= 1", ("real", "long", "drift_db")),
    ("lip sync, world clips: per-clip r at lag 0", ">= 0.6", ("world", "lipsync_r_mean")),
    ("lip sync, real photos: lip gap vs audio envelope, best lag within +-2", ">= 0.4",
     ("real", "summary", "lipsync_r")),
    ("lip sync, real photos: margin over the time-reversed audio", ">= 0.25", ("real", "summary", "lipsync_r_margin")),
    ("lip sync, real photos, no detection needed: mouth-box darkness vs envelope, best lag within +-2", "(diagnostic)",
     ("real", "summary", "darkness_r")),
    ("same with the time-reversed audio", "(diagnostic: well below the above)", ("real", "summary", "darkness_r_reversed")),
    ("face detected by mediapipe in the output, real photos (share of frames)", ">= 0.95",
     ("real", "summary", "face_detected")),
    ("face mesh reads the lips in the output, real photos (share of frames; stricter than detection)", "(diagnostic)",
     ("real", "summary", "lip_measured_frames")),
    ("muted audio: mean lip gap minus the portrait's (closed) lip gap", "<= 0", ("real", "summary", "muted_excess")),
    ("muted audio: mouth-box darkness minus the portrait's", "(diagnostic: <= 0)",
     ("real", "summary", "muted_darkness_excess")),
    ("text control: nodding vs still AUC, real photos", ">= 0.85", ("real", "control", "nod_vs_still_auc")),
    ("text control: nodding vs still AUC, world clips", ">= 0.85", ("world", "nod_vs_still_auc")),
    ("2 speakers: silent / active mouth motion, worst speaker (pixels)", "<= 0.2",
     ("real", "speakers_2", "pixel_ratio_max")),
    ("2 speakers: same by |delta lip gap|", "<= 0.2", ("real", "speakers_2", "gap_ratio_max")),
    ("3 speakers: silent / active mouth motion, worst speaker (pixels)", "<= 0.2",
     ("real", "speakers_3", "pixel_ratio_max")),
    ("3 speakers: same by |delta lip gap|", "<= 0.2", ("real", "speakers_3", "gap_ratio_max")),
    ("seams in the 60 s real-photo video (frame change at seams / elsewhere)", "<= 1.3",
     ("real", "long", "seam_score")),
    ("seams in the 60 s world video", "<= 1.3", ("world", "long", "seam_score")),
    ("speed, sampling + decode: video-seconds per wall-second (all videos of this run)", ">= 1 (4-step)",
     ("real", "speed", "video_s_per_wall_s")),
    ("speed on the 60 s video alone", ">= 1 (4-step)", ("real", "long", "speed_video_s_per_wall_s")),
)


def table(per_model: dict[str, dict]) -> list[dict]:
    """One row per target of issue 14: the measure, the target, base and 4-step values."""
    return [{"measure": m, "target": t, **{mode: _get(res, *path) for mode, res in per_model.items()}}
            for m, t, path in ROWS]


def vae_file(model: str | Path) -> Path:
    spec = json.loads((Path(model) / BUNDLE_FILE).read_text())
    return Path(model) / spec["vae"]["weights"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEMO_MODEL_DIR), help="bundle folder with a 'distilled' entry (default: the demo)")
    ap.add_argument("--portraits", nargs="+", default=None,
                    help="real portrait images (default: skimage's astronaut and matplotlib's grace_hopper)")
    ap.add_argument("--prompt", default=None, help="prompt of the talking videos (default: held-out 'still' phrasings)")
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each short video")
    ap.add_argument("--clips", type=int, default=2, help="held-out voices / phrasings per portrait")
    ap.add_argument("--long-seconds", type=float, default=60.0)
    ap.add_argument("--skip-long", action="store_true", help="no 60 s video (drift, seams)")
    ap.add_argument("--speakers", type=int, nargs="*", default=[2, 3], help="multi-speaker composites to test")
    ap.add_argument("--no-control", action="store_true", help="skip the nodding vs still videos")
    ap.add_argument("--modes", nargs="+", default=["base", "distilled"], choices=["base", "distilled"])
    ap.add_argument("--heldout", default=None, help="held-out world clips: also run training.eval.evaluate")
    ap.add_argument("--long", default=None, help="folder with one long held-out world clip (with --heldout)")
    ap.add_argument("--world-clips", type=int, default=16)
    ap.add_argument("--control-clips", type=int, default=8)
    ap.add_argument("--videos", default=None, help="folder for the generated mp4s (default: temp)")
    ap.add_argument("--strips", default=None, help="folder for frame-strip PNGs of every real-photo video")
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.time()
    load_start = os.getloadavg()[0]
    work = Path(a.videos) if a.videos else rp.temp_dir("demo_quality_")
    work.mkdir(parents=True, exist_ok=True)
    portraits = [Path(p) for p in a.portraits] if a.portraits else rp.default_portraits(work)
    settings = rp.Settings(seconds=a.seconds, clips=a.clips, long_seconds=a.long_seconds, skip_long=a.skip_long,
                           speakers=tuple(a.speakers), control=not a.no_control, prompt=a.prompt, seed=a.seed,
                           device=a.device)
    device = a.device or "cpu"
    per_model: dict[str, dict] = {}
    with rp.FaceMeter() as meter, torch.inference_mode():
        for mode in a.modes:
            distilled = mode == "distilled"
            bundle = load_bundle(a.model, device, distilled=distilled)
            per_model[mode] = {"real": rp.evaluate_model(bundle, distilled, portraits, settings, work,
                                                         Path(a.strips) if a.strips else None, meter)}
            per_model[mode]["sampler"] = dict(zip(("steps", "shift"), bundle.resolve_sampling(distilled)[:2], strict=True))
    if a.heldout:
        from training.eval.evaluate import evaluate

        for mode in a.modes:
            distilled = mode == "distilled"
            bundle = load_bundle(a.model, "cpu", distilled=distilled)
            steps, shift, cfg, ts = bundle.resolve_sampling(distilled)
            ev = evaluate(bundle.dit_path, vae_file(a.model), a.heldout, long_dir=a.long, clips=a.world_clips,
                          control_clips=a.control_clips, steps=steps, shift=shift, audio_scale=cfg.audio_scale,
                          text_scale=cfg.text_scale, seed=a.seed, distilled=distilled, distilled_timesteps=ts)
            per_model[mode]["world"] = ev["summary"]
    result = {
        "bench": "demo_quality",
        "model": str(a.model),
        "portraits": [str(p) for p in portraits],
        "settings": {k: v for k, v in vars(settings).items()},
        "table": table(per_model),
        "real_photos": {m: r["real"] for m, r in per_model.items()},
        "world": {m: r.get("world") for m, r in per_model.items()},
        "sampler": {m: r["sampler"] for m, r in per_model.items()},
        "videos": str(work),
        "strips": a.strips,
        "device": str(a.device or ("cuda" if torch.cuda.is_available() else "cpu")),
        "torch": torch.__version__,
        # speed on shared cores depends on what else runs: the 1-minute load average at start and end
        "load_average": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "minutes": round((time.time() - t0) / 60, 2),
    }
    text = json.dumps(rp.json_safe(result), indent=1)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
