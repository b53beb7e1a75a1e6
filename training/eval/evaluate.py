"""Evaluate a demo-size model on held-out world clips (lip sync, muted audio, identity, text control,
seams and drift over a long video).

    python -m training.eval.evaluate --dit magicinfinite_core/assets/demo/dit.safetensors \
        --vae magicinfinite_core/assets/demo/vae.safetensors --heldout out/demo_heldout \
        --long out/demo_long --out out/eval.json

Generation goes through the library's sliding-window sampler (magicinfinite_core.sampler.sample), the
same code the pipeline uses: window 0 gets the frame-0 latent concat, every window gets the portrait's
image tokens, the prompt and its slice of the audio windows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from magicinfinite_core.checkpoints import load_state_dict
from magicinfinite_core.config import SamplerConfig
from magicinfinite_core.guidance import FULL, UNCOND, CFGConfig, guided_velocity
from magicinfinite_core.models.audio_layers import group_audio_by_latent_frame
from magicinfinite_core.models.dit import MagicInfiniteDiT, concat_image_condition
from magicinfinite_core.sampler import sample
from training.eval import metrics
from training.preprocess import tensor_to_frames


@dataclass
class Conditions:
    """Everything one generation needs, for the whole video (windows slice it)."""

    image_latent: torch.Tensor  # [1, C, 1, h, w]
    image_tokens: torch.Tensor  # [1, N, Di]
    txt: torch.Tensor  # [1, L, Dt]
    txt_mask: torch.Tensor  # [1, L]
    pooled: torch.Tensor  # [1, Dt]
    audio: torch.Tensor | None  # [T, fpl, win, D] whole video
    face_tokens: torch.Tensor | None  # [T, th, tw]
    null_txt: torch.Tensor
    null_mask: torch.Tensor
    null_pooled: torch.Tensor


def conditions_from_cache(item: dict[str, torch.Tensor], null: dict[str, torch.Tensor]) -> Conditions:
    return Conditions(
        image_latent=item["latent"][None, :, :1].float(),
        image_tokens=item["image_tokens"][None].float(),
        txt=item["text_tokens"][None].float(),
        txt_mask=item["text_mask"][None].bool(),
        pooled=item["pooled"][None].float(),
        audio=item["audio"].float() if "audio" in item else None,
        face_tokens=item["face_tokens"].float() if "face_tokens" in item else None,
        null_txt=null["text_tokens"][None].float(),
        null_mask=null["text_mask"][None].bool(),
        null_pooled=null["pooled"][None].float(),
    )


def silent_audio(num_frames: int, n_mels: int = 64, n_fft: int = 1024) -> torch.Tensor:
    """Per-latent-frame windows of the mel features of digital silence (the muted test)."""
    from magicinfinite_core.audio_features import MelExtractor

    feats = MelExtractor(n_mels=n_mels, n_fft=n_fft).silence(num_frames).float()
    return group_audio_by_latent_frame(feats)


def make_predictor(model: MagicInfiniteDiT, cond: Conditions, guidance: CFGConfig, use_audio: bool):
    """predict(x_win, sigma, win) for the sliding-window sampler, with batched multi-condition CFG."""
    dtype = next(model.parameters()).dtype

    def forward(x_rep: torch.Tensor, passes: tuple[str, ...]) -> torch.Tensor:
        n = len(passes)
        win = forward.win
        txt = torch.cat([cond.null_txt if p == UNCOND else cond.txt for p in passes])
        txt_mask = torch.cat([cond.null_mask if p == UNCOND else cond.txt_mask for p in passes])
        pooled = torch.cat([cond.null_pooled if p == UNCOND else cond.pooled for p in passes])
        img_mask = torch.tensor([p != UNCOND for p in passes])[:, None].expand(n, cond.image_tokens.shape[1])
        x = concat_image_condition(x_rep, cond.image_latent.expand(n, -1, -1, -1, -1) if win.is_first else None)
        kw = {}
        if use_audio and cond.audio is not None and model.cfg.audio is not None:
            a = cond.audio[win.start : win.end][None, None].expand(n, 1, -1, -1, -1, -1)
            on = torch.tensor([p == FULL for p in passes], dtype=torch.float32).view(n, 1, 1, 1, 1)
            m = cond.face_tokens[win.start : win.end][None, None].expand(n, 1, -1, -1, -1) * on
            kw = {"audio": a.to(dtype), "speaker_mask": m}
        t = torch.full((n,), forward.sigma * 1000.0)
        return model(x.to(dtype), t, txt.to(dtype), txt_mask, pooled.to(dtype),
                     image_tokens=cond.image_tokens.expand(n, -1, -1).to(dtype),
                     image_tokens_mask=img_mask, **kw).float()

    def predict(x_win: torch.Tensor, sigma: float, win) -> torch.Tensor:
        forward.win, forward.sigma = win, sigma
        return guided_velocity(forward, x_win, sigma, guidance, scales=(
            torch.tensor([guidance.audio_scale]), torch.tensor([guidance.text_scale])))

    return predict


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
) -> np.ndarray:
    """Frames uint8 [F, H, W, 3] for one video."""
    _, c, _, h, w = cond.image_latent.shape
    t = 1 + (num_frames - 1) // 4
    latent = sample(make_predictor(model, cond, guidance, use_audio), (c, t, h, w), config=sampler, seed=seed)
    video = vae.decode(latent[None])[0]
    return tensor_to_frames(video)[:num_frames]


class QuickEval:
    """Held-out lip sync during training: r with the real audio vs with silence, identity PSNR.

    Uses the preprocessing cache of the held-out split (so it costs only sampling + decoding).
    """

    def __init__(self, cache: str | Path, vae_path: str | Path, clips: int = 8, steps: int = 12,
                 shift: float = 3.0, use_audio: bool = True, seed: int = 0) -> None:
        from training.preprocess import load_vae, read_cache_manifest

        cache = Path(cache)
        rows = read_cache_manifest(cache)[:clips]
        self.items = [load_state_dict(cache / r["file"]) for r in rows]
        self.null = load_state_dict(cache / "null_text.safetensors")
        self.vae = load_vae(vae_path)
        self.sampler = SamplerConfig(steps=steps, shift=shift, window_frames=33, overlap_frames=8)
        self.use_audio = use_audio
        self.seed = seed

    def __call__(self, model: MagicInfiniteDiT) -> dict[str, float]:
        model.eval()
        t0 = time.time()
        rs, rs_muted, open_a, open_m, psnrs = [], [], [], [], []
        for i, item in enumerate(self.items):
            cond = conditions_from_cache(item, self.null)
            n = int(item["mouth_open"].shape[0])
            target = item["mouth_open"].numpy()
            boxes = item["mouth_box"].numpy()
            frames = generate(model, self.vae, cond, n, self.sampler, CFGConfig.off(), self.seed + i, self.use_audio)
            pred = metrics.mouth_openings(frames, boxes)
            rs.append(metrics.pearson(pred, target))
            open_a.append(float(pred.mean()))
            keep = metrics.non_mouth_mask(boxes, *frames.shape[1:3])
            psnrs.append(metrics.masked_psnr(frames, item["portrait"].numpy(), keep))
            if self.use_audio:
                cond.audio = silent_audio(n)
                frames_m = generate(model, self.vae, cond, n, self.sampler, CFGConfig.off(), self.seed + i, True)
                pm = metrics.mouth_openings(frames_m, boxes)
                rs_muted.append(metrics.pearson(pm, target))
                open_m.append(float(pm.mean()))
        out = {"lipsync_r": float(np.mean(rs)), "open_mean": float(np.mean(open_a)),
               "psnr_portrait": float(np.mean(psnrs)), "eval_s": round(time.time() - t0, 1)}
        if rs_muted:
            out.update({"muted_r": float(np.mean(rs_muted)), "muted_open_mean": float(np.mean(open_m))})
        return out
