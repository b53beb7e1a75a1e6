"""Evaluate a demo-size model on held-out world clips (lip sync, muted audio, identity, text control,
seams and drift over a long video).

    python -m training.eval.evaluate --dit magicinfinite_core/assets/demo/dit.safetensors \
        --vae magicinfinite_core/assets/demo/vae.safetensors --heldout out/demo_heldout \
        --long out/demo_long --out out/eval.json
    python -m training.eval.evaluate --bundle magicinfinite_core/assets/demo --distilled \
        --heldout out/demo_heldout --videos out/eval_videos   # what a user gets: the bundle's decode settings

With `--bundle`, a motion-latent model decodes as the pipeline decodes it: the bundle's decode settings, with the
lip seams and rigid upper face that face mesh finds on each clip's portrait (`clip_reference`); a bare `--vae`
file decodes with its own config only (no lips parted, no face held). `--videos` writes each clip's generated
video with its voice, to look at.

Generation goes through the library's sliding-window sampler (magicinfinite_core.sampling.sampler.sample), the
same code the pipeline uses: window 0 gets the frame-0 latent concat, every window gets the portrait's
image tokens, the prompt and its slice of the audio windows.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from magicinfinite_core.config import DISTILLED_TIMESTEPS, SamplerConfig, latent_frames
from magicinfinite_core.media.autoencoders import decode_video
from magicinfinite_core.models.audio_layers import group_audio_by_latent_frame
from magicinfinite_core.models.dit import MagicInfiniteDiT
from magicinfinite_core.sampling.guidance import CFGConfig
from magicinfinite_core.sampling.predictor import Conditions, WindowPredictor
from magicinfinite_core.sampling.sampler import sample
from magicinfinite_core.sampling.sliding_window import seam_frames
from magicinfinite_core.weights.checkpoints import load_state_dict
from magicinfinite_core.weights.transformer_layouts import load_transformer
from training.data.tensors import tensor_to_frames
from training.eval import metrics


def clip_reference(vae: Any, portrait: torch.Tensor | np.ndarray) -> Any:
    """What decoding moves for a clip's portrait (uint8 [H, W, 3]): for a motion autoencoder whose decode settings
    use face parts (parted lips, a drawn expression, a rigid upper face), the whole portrait as the region with the parts face mesh
    finds on it, as `framing.frame_portrait` gives a photograph; else the portrait itself."""
    from magicinfinite_core.inputs.face_parts import find_face_parts
    from magicinfinite_core.media.autoencoders import moves_portrait, portrait_tensor
    from magicinfinite_core.media.motion_autoencoder import MotionReference

    if not moves_portrait(vae):
        return portrait
    cfg = vae.cfg
    mouths = cfg.needs_mouths
    if not (mouths or cfg.rigid_upper_face > 0):
        return portrait
    picture = np.ascontiguousarray(np.asarray(portrait, np.uint8))
    seams, rigid = find_face_parts(picture, [(0, 0, picture.shape[1], picture.shape[0])])
    return dataclasses.replace(MotionReference.whole(portrait_tensor(picture)), seams=seams if mouths else (),
                               rigid_faces=rigid if cfg.rigid_upper_face > 0 else ())


def write_clip_video(frames: np.ndarray, clip_dir: Path, out: Path) -> Path:
    """Generated frames (uint8 [F, H, W, 3]) as an mp4 with the clip's own voice (its audio.wav, when present)."""
    from magicinfinite_core.media.video_io import VideoWriter

    wav = clip_dir / "audio.wav"
    h, w = frames.shape[1:3]
    with VideoWriter(out, w - w % 2, h - h % 2, audio=str(wav) if wav.is_file() else None) as writer:
        writer.write(frames[:, : h - h % 2, : w - w % 2])
    return out


def conditions_from_cache(item: dict[str, torch.Tensor], null: dict[str, torch.Tensor]) -> Conditions:
    """A cached clip as the pipeline's conditions: prompt row + null row, per-latent-frame audio and masks."""
    has_audio = "audio" in item
    return Conditions(
        txt=torch.stack([item["text_tokens"], null["text_tokens"]]).float(),
        txt_mask=torch.stack([item["text_mask"], null["text_mask"]]).bool(),
        pooled=torch.stack([item["pooled"], null["pooled"]]).float(),
        image_tokens=item["image_tokens"][None].float(),
        image_latent=(item["reference_latent"] if "reference_latent" in item else item["latent"][:, :1])[None].float(),
        features=None,
        token_mask=item["face_tokens"][None].float() if has_audio else torch.zeros(1, 1, 1, 1),
        audio_windows=item["audio"][None].float() if has_audio else None,
    )


def silent_audio(num_frames: int, n_mels: int = 64, n_fft: int = 1024) -> torch.Tensor:
    """Per-latent-frame windows of the mel features of digital silence (the muted test)."""
    from magicinfinite_core.inputs.audio_features import MelExtractor

    feats = MelExtractor(n_mels=n_mels, n_fft=n_fft).silence(num_frames).float()
    return group_audio_by_latent_frame(feats)


@torch.no_grad()
def generate(
    model: MagicInfiniteDiT,
    vae,
    cond: Conditions,
    num_frames: int,
    sampler: SamplerConfig,
    guidance: CFGConfig,
    seed: int = 0,
    use_audio: bool = True,
    distilled: bool = False,
    portrait: np.ndarray | torch.Tensor | None = None,
) -> np.ndarray:
    """Frames uint8 [F, H, W, 3] for one video (distilled: the sampler's few-step list, no CFG).

    `portrait` (uint8 [H, W, 3]) is what a motion autoencoder moves; pixel-latent kinds ignore it."""
    _, _, _, h, w = cond.image_latent.shape
    c = model.cfg.out_channels
    t = latent_frames(num_frames)  # ceil: the decoded video is cut back to num_frames
    if not use_audio:
        cond = dataclasses.replace(cond, audio_windows=None, token_mask=torch.zeros_like(cond.token_mask))
    if distilled:
        guidance = CFGConfig.off()
    predictor = WindowPredictor(model, cond, guidance, dtype=next(model.parameters()).dtype)
    latent = sample(predictor, (c, t, h, w), config=sampler, distilled=distilled, seed=seed)
    video = decode_video(vae, latent[None], portrait)[0]
    return tensor_to_frames(video)[:num_frames]


class QuickEval:
    """Held-out lip sync during training: r with the real audio vs with silence, identity PSNR.

    Uses the preprocessing cache of the held-out split (so it costs only sampling + decoding).
    """

    def __init__(self, cache: str | Path, vae_path: str | Path, clips: int = 8, steps: int = 12,
                 shift: float = 3.0, use_audio: bool = True, seed: int = 0,
                 distilled_timesteps: tuple[float, ...] | None = None) -> None:
        from training.shards import split_rows

        cache = Path(cache)
        rows = split_rows(cache, "heldout", limit=clips)  # reads only held-out shards where sharded
        if not rows:  # never fall back to training clips: the score would measure memorisation
            raise ValueError(f"{cache} holds no held-out clips (manifest split 'heldout'); the evaluation "
                             "refuses clips of the train split")
        self.items = [load_state_dict(cache / r["file"]) for r in rows]
        self.null = load_state_dict(cache / "null_text.safetensors")
        self.vae_path = Path(vae_path)
        self._vae_mtime = None
        self.vae = None
        self.sampler = SamplerConfig(steps=steps, shift=shift, window_frames=33, overlap_frames=8)
        # a distilled generator samples its few-step list (no CFG) instead of `steps` steps
        self.distilled = distilled_timesteps is not None
        if self.distilled:
            self.sampler = dataclasses.replace(self.sampler, distilled_timesteps=tuple(distilled_timesteps))
        self.use_audio = use_audio
        self.seed = seed
        self.sample: np.ndarray | None = None  # frames of the first clip (portrait first), for the trackers

    def __call__(self, model: MagicInfiniteDiT) -> dict[str, float]:
        from magicinfinite_core.media.autoencoders import load_autoencoder

        if not self.vae_path.is_file():
            return {"eval_skipped": f"{self.vae_path} does not exist yet"}
        if self.vae_path.stat().st_mtime != self._vae_mtime:  # a decoder may still be training next to us
            self._vae_mtime = self.vae_path.stat().st_mtime
            self.vae = load_autoencoder(self.vae_path)
        model.eval()
        t0 = time.time()
        rs, rs_muted, open_a, open_m, psnrs = [], [], [], [], []
        for i, item in enumerate(self.items):
            cond = conditions_from_cache(item, self.null)
            n = int(item["mouth_open"].shape[0])
            target = item["mouth_open"].numpy()
            boxes = item["mouth_box"].numpy()
            frames = generate(model, self.vae, cond, n, self.sampler, CFGConfig.off(), self.seed + i, self.use_audio,
                              self.distilled, item["portrait"])
            if i == 0:
                from training.tracking import frame_strip

                self.sample = frame_strip(frames, portrait=item["portrait"].numpy())
            pred = metrics.mouth_openings(frames, boxes)
            rs.append(metrics.pearson(pred, target))
            open_a.append(float(pred.mean()))
            keep = metrics.non_mouth_mask(boxes, *frames.shape[1:3])
            psnrs.append(metrics.masked_psnr(frames, item["portrait"].numpy(), keep))
            if self.use_audio:
                cond.audio_windows = silent_audio(n)[None]
                frames_m = generate(model, self.vae, cond, n, self.sampler, CFGConfig.off(), self.seed + i, True,
                                    self.distilled, item["portrait"])
                pm = metrics.mouth_openings(frames_m, boxes)
                rs_muted.append(metrics.pearson(pm, target))
                open_m.append(float(pm.mean()))
        out = {"lipsync_r": float(np.mean(rs)), "open_mean": float(np.mean(open_a)),
               "psnr_portrait": float(np.mean(psnrs)), "eval_s": round(time.time() - t0, 1)}
        if rs_muted:
            out.update({"muted_r": float(np.mean(rs_muted)), "muted_open_mean": float(np.mean(open_m))})
        return out


# -------------------------------------------------------------------------------------------- CLI
def _swap_action(prompt_controls: dict, action: str, rng: np.random.Generator, style: str, split: str) -> str:
    from training.data.prompts import make_prompt

    return make_prompt({**prompt_controls, "action": action}, rng, split, style)


def _still_static(row: dict) -> bool:
    return row["action"] == "still" and row["background"] == "static"


def heldout_clips(root: str | Path) -> list[Path]:
    """The held-out clips of a folder; train clips are refused (skipped, and counted in a message).

    A world folder may hold both splits (docs/world.md); scoring a clip the model was trained on
    would measure memorisation, so only meta.json split == "heldout" is evaluated.
    """
    from training.data.clip import list_clips

    dirs = list_clips(root)
    split = {d: json.loads((d / "meta.json").read_text()).get("split") for d in dirs}
    keep = [d for d in dirs if split[d] == "heldout"]
    refused = len(dirs) - len(keep)
    if refused:
        print(f"evaluation: refusing {refused} clips of {root} that are not held-out (train split)", flush=True)
    if not keep:
        raise ValueError(f"{root} holds no held-out clips (meta.json split 'heldout'); the evaluation refuses "
                         "clips of the train split")
    return keep


def _mean_where(rows: list[dict], key: str) -> float:
    vals = [r[key] for r in rows if _still_static(r)]
    return float(np.mean(vals)) if vals else float("nan")


def evaluate(
    dit_path: str | Path | None,
    vae_path: str | Path | None,
    heldout: str | Path,
    *,
    bundle: str | Path | None = None,
    videos: str | Path | None = None,
    long_dir: str | Path | None = None,
    clips: int = 24,
    control_clips: int = 8,
    steps: int = 20,
    shift: float = 3.0,
    audio_scale: float = 0.0,
    text_scale: float = 0.0,
    seed: int = 0,
    mediapipe: bool = False,
    distilled: bool = False,
    distilled_timesteps: tuple[float, ...] = DISTILLED_TIMESTEPS,
) -> dict:
    """Full held-out evaluation; returns a JSON-able dict of per-clip rows and summary numbers.

    distilled: sample with the few-step list (`distilled_timesteps` warped by `shift`) and no CFG,
    as the pipeline runs a distilled generator; `steps` and the guidance scales are then unused.
    bundle: a bundle folder instead of `dit_path` and `vae_path` (its distilled DiT with `distilled`), decoded
    with its decode settings (`clip_reference`). videos: a folder for each clip's generated video.
    """
    from magicinfinite_core.inputs.audio_features import MelExtractor
    from magicinfinite_core.media.autoencoders import load_autoencoder
    from training.data.clip import read_clip
    from training.preprocess import CacheSettings, MiniLMText, cache_clip

    if bundle is not None:
        from magicinfinite_core.weights.bundle import load_bundle

        loaded = load_bundle(bundle, "cpu", distilled=distilled)
        model, vae = loaded.dit.eval(), loaded.vae
    elif dit_path is None or vae_path is None:
        raise ValueError("evaluate needs a bundle folder, or both a DiT file and a VAE file")
    else:
        model = load_transformer(dit_path).eval()
        vae = load_autoencoder(vae_path)
    text = MiniLMText()
    extractor = MelExtractor()
    settings = CacheSettings(vae_sha="")
    null_tokens, null_mask, null_pooled = text.encode([""])
    null = {"text_tokens": null_tokens[0], "text_mask": null_mask[0], "pooled": null_pooled[0]}
    guidance = CFGConfig(audio_scale=audio_scale, text_scale=text_scale) if (audio_scale or text_scale) else CFGConfig.off()
    sampler = SamplerConfig(steps=steps, shift=shift, window_frames=33, overlap_frames=8,
                            distilled_timesteps=tuple(distilled_timesteps))
    gen = functools.partial(generate, distilled=distilled)
    rows = []
    t0 = time.time()
    dirs = heldout_clips(heldout)[:clips]
    for i, d in enumerate(dirs):
        clip = read_clip(d)
        item = cache_clip(clip, vae, text, extractor, settings)
        cond = conditions_from_cache(item, null)
        n = clip.frames.shape[0]
        boxes = item["mouth_box"].numpy()
        target = item["mouth_open"].numpy()
        keep = metrics.non_mouth_mask(boxes, *clip.frames.shape[1:3])
        ref = clip_reference(vae, item["portrait"])
        frames = gen(model, vae, cond, n, sampler, guidance, seed + i, portrait=ref)
        if videos is not None:
            write_clip_video(frames, d, Path(videos) / f"{d.name}.mp4")
        pred = metrics.mouth_openings(frames, boxes)
        gt_open = metrics.mouth_openings(clip.frames, boxes)
        ls = metrics.lipsync(pred, target)
        recon = tensor_to_frames(decode_video(vae, item["latent"][None], ref)[0])[:n]  # the VAE's own ceiling
        cond.audio_windows = silent_audio(n)[None]
        frames_m = gen(model, vae, cond, n, sampler, guidance, seed + i, portrait=ref)
        pm = metrics.mouth_openings(frames_m, boxes)
        row = {
            "clip": d.name, "action": clip.meta["controls"]["action"],
            "background": clip.meta["controls"].get("background", ""),
            "r": ls["r"], "r_lag1": ls["r_lag1"], "best_r": ls["best_r"], "best_lag": ls["best_lag"],
            "r_rendered_gt": metrics.pearson(gt_open, target),
            "muted_r": metrics.pearson(pm, target),
            "open_mean": float(pred.mean()), "muted_open_mean": float(pm.mean()),
            "muted_closed_frac": float((pm < 0.15).mean()), "gt_open_mean": float(gt_open.mean()),
            "gt_closed_level": float(np.percentile(gt_open, 10)),
            "psnr_portrait": metrics.masked_psnr(frames, clip.frames[0], keep),
            "ssim_portrait": metrics.ssim(frames, clip.frames[0], keep),
            "psnr_video": metrics.masked_psnr(frames, clip.frames, keep),
            "vae_psnr_video": metrics.masked_psnr(recon, clip.frames, keep),
            "vae_psnr_portrait": metrics.masked_psnr(recon, clip.frames[0], keep),
            # the ground truth's own distance from its first frame: what following the prompt's
            # motion (nods, flashing lights) costs on this measure
            "gt_psnr_portrait": metrics.masked_psnr(clip.frames, clip.frames[0], keep),
            "r_vae_recon": metrics.pearson(metrics.mouth_openings(recon, boxes), target),
        }
        if mediapipe:
            mp = metrics.mediapipe_mouth_openings(frames)
            ok = np.isfinite(mp)
            row["mediapipe_detected"] = float(ok.mean())
            row["mediapipe_r"] = metrics.pearson(mp[ok], target[ok]) if ok.sum() > 3 else float("nan")
        rows.append(row)
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)

    # text control: same portrait + audio, prompt says "nodding" or "still"
    control = []
    for i, d in enumerate(dirs[:control_clips]):
        clip = read_clip(d)
        item = cache_clip(clip, vae, text, extractor, settings)
        n = clip.frames.shape[0]
        fbox = np.asarray(clip.gt["face_box"][0, int(clip.meta.get("speaker", 0))])
        excl = ~metrics.non_mouth_mask(item["mouth_box"].numpy(), *clip.frames.shape[1:3])
        res = {"clip": d.name}
        ref = clip_reference(vae, item["portrait"])
        for action in ("still", "nodding"):
            rng = np.random.default_rng(seed + i)
            prompt = _swap_action(clip.meta["controls"], action, rng, clip.meta["style"], "heldout")
            tok, msk, pooled = text.encode([prompt])
            cond = conditions_from_cache({**item, "text_tokens": tok[0], "text_mask": msk[0], "pooled": pooled[0]}, null)
            frames = gen(model, vae, cond, n, sampler, guidance, seed + i, portrait=ref)
            res[action] = metrics.head_motion(frames, fbox, exclude=excl)["motion_y"]
        control.append(res)
        print(json.dumps(res), flush=True)
    sep = metrics.separability([c["still"] for c in control], [c["nodding"] for c in control])
    gt_motion = {"still": [], "nodding": []}
    for d in dirs:
        clip = read_clip(d)
        a = clip.meta["controls"]["action"]
        if a in gt_motion:
            fbox = np.asarray(clip.gt["face_box"][0, int(clip.meta.get("speaker", 0))])
            gt_motion[a].append(metrics.head_motion(clip.frames, fbox)["motion_y"])

    summary = {
        "clips": len(rows),
        "lipsync_r_mean": float(np.mean([r["r"] for r in rows])),
        "lipsync_r_median": float(np.median([r["r"] for r in rows])),
        "lipsync_r_lag1_mean": float(np.mean([r["r_lag1"] for r in rows])),
        "lipsync_best_r_mean": float(np.mean([r["best_r"] for r in rows])),
        "best_lag_median": float(np.median([r["best_lag"] for r in rows])),
        "rendered_gt_r_mean": float(np.mean([r["r_rendered_gt"] for r in rows])),
        "muted_r_mean": float(np.mean([r["muted_r"] for r in rows])),
        "muted_abs_r_mean": float(np.mean([abs(r["muted_r"]) for r in rows])),
        "open_mean": float(np.mean([r["open_mean"] for r in rows])),
        "muted_open_mean": float(np.mean([r["muted_open_mean"] for r in rows])),
        "muted_closed_frac": float(np.mean([r["muted_closed_frac"] for r in rows])),
        "gt_open_mean": float(np.mean([r["gt_open_mean"] for r in rows])),
        "gt_closed_level": float(np.mean([r["gt_closed_level"] for r in rows])),
        "psnr_portrait_still_clips": float(np.mean([r["psnr_portrait"] for r in rows if r["action"] == "still"] or [np.nan])),
        "psnr_portrait_all": float(np.mean([r["psnr_portrait"] for r in rows])),
        "gt_psnr_portrait_all": float(np.mean([r["gt_psnr_portrait"] for r in rows])),
        # clips whose ground truth stays on the portrait (no head action, static background):
        # identity preservation proper, not confounded by prompted motion
        "psnr_portrait_still_static": _mean_where(rows, "psnr_portrait"),
        "vae_psnr_portrait_still_static": _mean_where(rows, "vae_psnr_portrait"),
        "gt_psnr_portrait_still_static": _mean_where(rows, "gt_psnr_portrait"),
        "still_static_clips": sum(_still_static(r) for r in rows),
        "ssim_portrait_all": float(np.mean([r["ssim_portrait"] for r in rows])),
        "psnr_video_all": float(np.mean([r["psnr_video"] for r in rows])),
        "vae_psnr_video_all": float(np.mean([r["vae_psnr_video"] for r in rows])),
        "vae_psnr_portrait_all": float(np.mean([r["vae_psnr_portrait"] for r in rows])),
        "r_vae_recon_mean": float(np.mean([r["r_vae_recon"] for r in rows])),
        "motion_y_still": float(np.mean([c["still"] for c in control])) if control else float("nan"),
        "motion_y_nodding": float(np.mean([c["nodding"] for c in control])) if control else float("nan"),
        "nod_vs_still_auc": sep["auc"],
        "nod_vs_still_cohen_d": sep["cohen_d"],
        "gt_motion_y_still": float(np.mean(gt_motion["still"])) if gt_motion["still"] else float("nan"),
        "gt_motion_y_nodding": float(np.mean(gt_motion["nodding"])) if gt_motion["nodding"] else float("nan"),
        "sampler": ({"distilled_timesteps": list(distilled_timesteps), "shift": shift, "cfg": "none"} if distilled
                    else {"steps": steps, "shift": shift, "audio_scale": audio_scale, "text_scale": text_scale}),
    }
    if long_dir is not None:
        summary["long"] = evaluate_long(model, vae, text, extractor, settings, null, long_dir, sampler, guidance, seed,
                                        distilled)
    summary["eval_minutes"] = round((time.time() - t0) / 60, 2)
    return {"summary": summary, "clips": rows, "control": control}


def evaluate_long(model, vae, text, extractor, settings, null, long_dir, sampler, guidance, seed,
                  distilled: bool = False) -> dict:
    """One long held-out video through the sliding window: seams and identity drift."""
    from magicinfinite_core.sampling.sampler import step_plans
    from training.data.clip import read_clip
    from training.preprocess import cache_clip

    d = heldout_clips(long_dir)[0]
    clip = read_clip(d)
    n = clip.frames.shape[0]
    item = cache_clip(clip, vae, text, extractor, settings)
    cond = conditions_from_cache(item, null)
    t0 = time.time()
    frames = generate(model, vae, cond, n, sampler, guidance, seed, distilled=distilled,
                      portrait=clip_reference(vae, item["portrait"]))
    gen_s = time.time() - t0
    boxes = item["mouth_box"].numpy()
    keep = metrics.non_mouth_mask(boxes, *clip.frames.shape[1:3])
    t_lat = item["latent"].shape[1]
    n_steps = len(sampler.distilled_timesteps) if distilled else sampler.steps
    plan = step_plans(t_lat, sampler, n_steps)[-1]
    seams = sorted({4 * k - 3 for k in seam_frames(plan) if k > 0})
    pred = metrics.mouth_openings(frames, boxes)
    # upper face (issue 26): the speaker's face box above its mouth box, in frame 0 (world clips have no landmarks)
    spk = int(clip.meta.get("speaker", 0))
    upper = metrics.upper_face_box_mask(clip.gt["face_box"][0, spk], float(np.asarray(boxes).reshape(-1, 4)[0, 1]),
                                        *clip.frames.shape[1:3])
    flick = metrics.flicker(frames, upper)
    return {
        "clip": d.name, "seconds": n / 25.0, "generate_s": round(gen_s, 1),
        "lipsync_r": metrics.pearson(pred, item["mouth_open"].numpy()),
        "seam_score": metrics.seam_score(frames, seams),
        "seam_score_upper": metrics.seam_score(frames, seams, mask=upper),
        "upper_flicker": flick["mean"], "upper_flicker_p95": flick["p95"],
        "upper_drift_db": metrics.drift(frames, clip.frames[0], upper, span_s=1.0)["drift_db"],
        **metrics.drift(frames, clip.frames[0], keep),
        "gt_drift": metrics.drift(clip.frames, clip.frames[0], keep),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.eval.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--dit", default=None, help="a DiT file (with --vae; or --bundle)")
    p.add_argument("--vae", default=None, help="an autoencoder file, decoded with its own config")
    p.add_argument("--bundle", default=None, help="a bundle folder: its DiT and autoencoder with the bundle's "
                   "decode settings, as the pipeline decodes (the distilled DiT with --distilled)")
    p.add_argument("--videos", default=None, help="write each clip's generated video (with its voice) here")
    p.add_argument("--heldout", required=True, help="held-out clip directory (training.data.build --split heldout)")
    p.add_argument("--long", default=None, help="directory with one long held-out clip (e.g. --seconds 60)")
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--control-clips", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--shift", type=float, default=3.0)
    p.add_argument("--audio-scale", type=float, default=0.0)
    p.add_argument("--text-scale", type=float, default=0.0)
    p.add_argument("--mediapipe", action="store_true")
    p.add_argument("--distilled", action="store_true",
                   help="few-step sampling without CFG (a distilled generator); --steps and scales unused")
    p.add_argument("--distilled-timesteps", type=float, nargs="+", default=list(DISTILLED_TIMESTEPS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="write the JSON result here")
    a = p.parse_args(argv)
    if (a.bundle is not None and (a.dit or a.vae)) or (a.bundle is None and not (a.dit and a.vae)):
        p.error("give --bundle DIR, or both --dit and --vae")
    torch.set_num_threads(a.threads)
    res = evaluate(a.dit, a.vae, a.heldout, bundle=a.bundle, videos=a.videos, long_dir=a.long, clips=a.clips,
                   control_clips=a.control_clips,
                   steps=a.steps, shift=a.shift, audio_scale=a.audio_scale, text_scale=a.text_scale,
                   seed=a.seed, mediapipe=a.mediapipe, distilled=a.distilled,
                   distilled_timesteps=tuple(a.distilled_timesteps))
    text = json.dumps(res, indent=1)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)
    print(json.dumps(res["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
