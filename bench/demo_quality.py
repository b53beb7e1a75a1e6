"""Issue 26's target table for one model bundle, base and 4-step generator side by side (one JSON).

    python bench/demo_quality.py --modes base distilled --out out/q.json --strips out/q_strips
    python bench/demo_quality.py --model BUNDLE --heldout out/demo_heldout --long out/demo_long
    python bench/demo_quality.py --seconds 2 --clips 1 --skip-long --speakers 2 --pictures   # quick check

Everything goes through `magicinfinite_core.generate.generate` (the bundle's own sampler settings:
base = its recommended steps and CFG, distilled = its few-step list, no CFG) on held-out REAL
photographs and held-out voices (training.eval.real_photos): identity, upper-face flicker and identity
(still-head prompt), face detection, lip sync vs reversed audio, muted audio, text control nodding vs
still, the hard test pictures (full-length, letterboxed, greyscale, open smile), 2 and 3 speakers, a
60 s video for drift and seams, and (4-step) a 512 x 512 speed video plus `magicinfinite generate`'s
command -> first frame. With --heldout the world-clip evaluation (training.eval.evaluate) runs too.
stdout is the JSON ("table": one row per target with base / distilled values and pass marks,
"real_photos": every measure per model and per video, "world" with --heldout); stderr gets the table
with targets and a check or a cross per column.
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

from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR, load_bundle
from training.eval import real_photos as rp


def _get(d: dict | None, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


# (measure, target text, path into one model's result, check or None (diagnostic), modes the target is for)
Check = tuple[str, float] | None
ALL = ("base", "distilled")
ROWS: tuple[tuple[str, str, tuple[str, ...], Check, tuple[str, ...]], ...] = (
    ("lip sync, real photos: inner-lip gap vs audio envelope, best lag +-2 (r)", ">= 0.5",
     ("real", "summary", "lipsync_r"), (">=", 0.5), ALL),
    ("lip sync, real photos: r above the same with the audio reversed", ">= 0.3",
     ("real", "summary", "lipsync_r_margin"), (">=", 0.3), ALL),
    ("same, with the audio reversed (r)", "(control)", ("real", "summary", "lipsync_r_reversed"), None, ALL),
    ("upper face (forehead to nose tip), still head: mean frame-to-frame change (grey levels)", "<= 1.0",
     ("real", "summary", "upper_flicker"), ("<=", 1.0), ALL),
    ("upper face: worst clip (grey levels)", "(diagnostic)", ("real", "summary", "upper_flicker_max"), None, ALL),
    ("upper face: 95th percentile of the change (grey levels)", "(diagnostic)",
     ("real", "summary", "upper_flicker_p95"), None, ALL),
    ("upper face vs the portrait, still head (dB)", ">= 32", ("real", "summary", "upper_psnr"), (">=", 32.0), ALL),
    ("upper face vs the portrait: worst clip (dB)", "(diagnostic)", ("real", "summary", "upper_psnr_min"), None, ALL),
    ("mid face (nose tip to upper lip, cheeks), still head: mean frame-to-frame change (grey levels)", "(diagnostic)",
     ("real", "summary", "mid_flicker"), None, ALL),
    ("mid face vs the portrait, still head (dB)", "(diagnostic)", ("real", "summary", "mid_psnr"), None, ALL),
    ("output size: share of videos at the picture's own size (<= 1024 a side)", "= 1",
     ("real", "output_size", "own_size_share"), (">=", 1.0), ALL),
    ("full-length, letterboxed, greyscale, open-smile, 2- and 3-person pictures: share that generate", "= 1",
     ("real", "all_pictures", "generated_share"), (">=", 1.0), ALL),
    ("same pictures: face found in the output, worst picture (share of frames)", ">= 0.95",
     ("real", "all_pictures", "face_found_min"), (">=", 0.95), ALL),
    ("muted audio: lip gap minus the portrait's own, worst clip / picture (open smile too)", "<= 0 (+0.005 mesh noise)",
     ("real", "all_pictures", "muted_excess_max"), ("<=", 0.005), ALL),
    ("text control: nodding vs still AUC, same photo and voice", ">= 0.85",
     ("real", "control", "nod_vs_still_auc"), (">=", 0.85), ALL),
    ("text control: share of same photo + voice pairs whose nodding video moves more", "(diagnostic)",
     ("real", "control", "nod_wins_same_photo_voice"), None, ALL),
    ("text control: nodding vs still AUC, head motion of the upper face only (the jaw excluded)", "(diagnostic)",
     ("real", "control", "nod_vs_still_auc_upper_face"), None, ALL),
    ("text control: nodding vs still AUC, worst held-out nodding phrase (each phrase: JSON)", "(diagnostic)",
     ("real", "control", "nod_vs_still_auc_worst_phrase"), None, ALL),
    ("2 speakers: silent / active mouth motion, worst speaker (pixels)", "<= 0.2",
     ("real", "speakers_2", "pixel_ratio_max"), ("<=", 0.2), ALL),
    ("2 speakers: same by |delta lip gap|", "<= 0.2", ("real", "speakers_2", "gap_ratio_max"), ("<=", 0.2), ALL),
    ("2 speakers: silent mouths' |delta lip gap| over face mesh's reading of that mouth held still (worst)", "(diagnostic)",
     ("real", "speakers_2", "gap_silent_over_floor_max"), None, ALL),
    ("3 speakers: silent / active mouth motion, worst speaker (pixels)", "<= 0.2",
     ("real", "speakers_3", "pixel_ratio_max"), ("<=", 0.2), ALL),
    ("3 speakers: same by |delta lip gap|", "<= 0.2", ("real", "speakers_3", "gap_ratio_max"), ("<=", 0.2), ALL),
    ("3 speakers: silent mouths' |delta lip gap| over face mesh's reading of that mouth held still (worst)", "(diagnostic)",
     ("real", "speakers_3", "gap_silent_over_floor_max"), None, ALL),
    ("60 s: upper-face identity, first minus last second (dB)", "<= 0.5",
     ("real", "long", "upper_drift_db"), ("<=", 0.5), ALL),
    ("60 s: upper-face drift, line through all 60 per-second PSNRs, fitted first minus last (dB)", "(diagnostic)",
     ("real", "long", "upper_drift_fitted_db"), None, ALL),
    ("60 s: seams, frame change at seams / at the other latent-frame starts (whole frame)", "<= 1.2",
     ("real", "long", "seam_score"), ("<=", 1.2), ALL),
    ("60 s: seams on the upper face", "<= 1.2", ("real", "long", "seam_score_upper"), ("<=", 1.2), ALL),
    ("60 s: seams on the upper face, p-value against random latent-frame starts (small = seams show)", "(diagnostic)",
     ("real", "long", "seam_p_value_upper"), None, ALL),
    ("60 s: seams on the upper face, estimator before session 12 (mean at seams / median elsewhere)", "(diagnostic)",
     ("real", "long", "seam_score_vs_median_upper"), None, ALL),
    ("speed, 4-step, 512x512 output: video-s per wall-s of sampling + decode + mux", ">= 1",
     ("real", "speed_512", "video_s_per_wall_s"), (">=", 1.0), ("distilled",)),
    ("speed: `magicinfinite generate` command -> first frame (s)", "<= 3",
     ("real", "speed_512", "cli", "first_frame_since_command_s"), ("<=", 3.0), ("distilled",)),
    ("identity PSNR outside the mouth vs the portrait, real photos (dB)", "(diagnostic)",
     ("real", "summary", "psnr"), None, ALL),
    ("face detected in the output, real photos (share of frames)", "(diagnostic)",
     ("real", "summary", "face_detected"), None, ALL),
    ("face mesh reads the lips, real photos (share of frames)", "(diagnostic)",
     ("real", "summary", "lip_measured_frames"), None, ALL),
    ("identity PSNR outside the mouth, world clips (dB)", "(diagnostic)", ("world", "psnr_portrait_all"), None, ALL),
    ("lip sync, world clips: per-clip r at lag 0", "(diagnostic)", ("world", "lipsync_r_mean"), None, ALL),
    ("speed, all videos of this run: video-s per wall-s of sampling + decode", "(diagnostic)",
     ("real", "speed", "video_s_per_wall_s"), None, ALL),
)


def passes(value: Any, check: Check) -> bool | None:
    """Whether a value meets its target (None: no target, or nothing measured)."""
    if check is None or value is None or not isinstance(value, (int, float)) or value != value:
        return None
    op, ref = check
    return value >= ref if op == ">=" else value <= ref


def table(per_model: dict[str, dict]) -> list[dict]:
    """One row per target of issue 26: the measure, the target, each mode's value and whether it passes."""
    rows = []
    for m, t, path, check, modes in ROWS:
        row: dict[str, Any] = {"measure": m, "target": t}
        for mode, res in per_model.items():
            row[mode] = _get(res, *path)
            row[f"{mode}_pass"] = passes(row[mode], check) if mode in modes else None
        rows.append(row)
    return rows


def format_table(rows: list[dict], modes: list[str]) -> str:
    """The table as text: measure, target, then per mode the value and a check or a cross."""
    def cell(row: dict, mode: str) -> str:
        v, ok = row.get(mode), row.get(f"{mode}_pass")
        text = "-" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))
        return f"{text} {'✔' if ok else '✘' if ok is False else ' '}"

    head = f"{'measure':<92} {'target':<26} " + " ".join(f"{m:>12}" for m in modes)
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['measure'][:92]:<92} {r['target'][:26]:<26} " + " ".join(f"{cell(r, m):>12}" for m in modes))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEMO_MODEL_DIR), help="bundle folder with a 'distilled' entry (default: the demo)")
    ap.add_argument("--portraits", nargs="+", default=None,
                    help="real portrait images (default: the held-out grace_hopper and an AI-generated open smile)")
    ap.add_argument("--pictures", nargs="*", default=None, choices=["full_length", "letterboxed", "greyscale", "open_smile"],
                    help="hard test pictures to generate (default: all; give none for none)")
    ap.add_argument("--speed-seconds", type=float, default=8.0, help="4-step 512x512 speed video length (0: none)")
    ap.add_argument("--no-cli", action="store_true", help="skip timing `magicinfinite generate` (command -> first frame)")
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
    group = portraits if a.portraits else rp.group_portraits(work)
    settings = rp.Settings(seconds=a.seconds, clips=a.clips, long_seconds=a.long_seconds, skip_long=a.skip_long,
                           speakers=tuple(a.speakers), control=not a.no_control, prompt=a.prompt, seed=a.seed,
                           device=a.device, speed_seconds=a.speed_seconds, cli_first_frame=not a.no_cli,
                           pictures=tuple(a.pictures) if a.pictures is not None else rp.Settings.pictures)
    device = a.device or "cpu"
    per_model: dict[str, dict] = {}
    pictures = [p for p in rp.test_pictures(work / "pictures") if p.name in settings.pictures]
    with rp.FaceMeter() as meter, torch.inference_mode():
        for mode in a.modes:
            distilled = mode == "distilled"
            bundle = load_bundle(a.model, device, distilled=distilled)
            per_model[mode] = {"real": rp.evaluate_model(bundle, distilled, portraits, settings, work,
                                                         Path(a.strips) if a.strips else None, meter,
                                                         model_path=a.model, group=group, pictures=pictures)}
            per_model[mode]["sampler"] = dict(zip(("steps", "shift"), bundle.resolve_sampling(distilled)[:2], strict=True))
    if a.heldout:
        from training.eval.evaluate import evaluate

        for mode in a.modes:
            distilled = mode == "distilled"
            bundle = load_bundle(a.model, "cpu", distilled=distilled)
            steps, shift, cfg, ts = bundle.resolve_sampling(distilled)
            ev = evaluate(None, None, a.heldout, bundle=a.model, long_dir=a.long, clips=a.world_clips,
                          control_clips=a.control_clips, steps=steps, shift=shift, audio_scale=cfg.audio_scale,
                          text_scale=cfg.text_scale, seed=a.seed, distilled=distilled, distilled_timesteps=ts)
            per_model[mode]["world"] = ev["summary"]
    result = {
        "bench": "demo_quality",
        "model": str(a.model),
        "portraits": [str(p) for p in portraits],
        "pictures": {p.name: {"file": str(p.path), "how": p.how} for p in pictures},
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
    print(format_table(result["table"], a.modes), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
