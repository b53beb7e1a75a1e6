"""The predictor: run-constant conditions + one window of latent -> the guided velocity of that window.

CFG passes (guidance.py): FULL = text + portrait + audio; NO_AUDIO = the same with every speaker
mask zeroed (switches the audio cross-attention off); UNCOND = null prompt, no portrait (zero
concat, image tokens masked out) and no audio; ZERO_AUDIO / NEG_ZERO_AUDIO = the prompt / the
negative prompt with zero audio features under the kept masks (HunyuanVideo-Avatar's guidance).

Avatar models (`DiTConfig.avatar`) take the portrait as `ref_latent` over the whole window (every pass)
instead of the I2V concat, and Whisper windows of the window's video frames as they come
(`avatar_audio_window`), one stream and one face mask per speaker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from magicinfinite_core.inputs.encoders import LatentPatchTokens
from magicinfinite_core.inputs.masks import (
    token_masks,
)
from magicinfinite_core.models.dit import MagicInfiniteDiT, concat_image_condition
from magicinfinite_core.sampling.guidance import (
    FULL,
    NEG_ZERO_AUDIO,
    NO_AUDIO,
    UNCOND,
    ZERO_AUDIO,
    CFGConfig,
    decayed_velocity,
    guided_velocity,
)
from magicinfinite_core.sampling.schedule import timestep_from_sigma
from magicinfinite_core.sampling.sliding_window import Window

if TYPE_CHECKING:  # the bundle module imports this package's guidance; annotations only
    from magicinfinite_core.weights.bundle import ModelBundle


def audio_for_latents(features: torch.Tensor, start: int, end: int, fpl: int = 4, window: int = 5) -> torch.Tensor:
    """[K, F, D] -> [K, end-start, fpl, window, D]: the latent frames [start, end) of
    models.audio_layers.group_audio_by_latent_frame, without grouping the whole track."""
    n = features.shape[-2]
    k = torch.arange(start, end)[:, None]
    j = torch.arange(fpl)[None, :]
    centre = torch.where(k == 0, torch.zeros_like(j), (k - 1) * fpl + 1 + j)
    idx = (centre[..., None] + torch.arange(window) - window // 2).clamp(0, n - 1)
    return features[:, idx.reshape(-1)].reshape(features.shape[0], end - start, fpl, window, -1)


def avatar_audio_window(features: torch.Tensor, start: int, end: int, frames_per_latent: int = 4) -> torch.Tensor:
    """Whisper features [K, F, D] -> the video frames HunyuanVideo-Avatar feeds a latent window [start, end):
    [K, fpl*(end-start) - (fpl-1), D], starting at video frame fpl*start (its sampler's indexing), zeros
    past the end of the audio."""
    n = features.shape[1]
    idx = frames_per_latent * start + torch.arange(frames_per_latent * (end - start) - (frames_per_latent - 1))
    padded = torch.cat([features, features.new_zeros(features.shape[0], 1, features.shape[2])], dim=1)
    return padded[:, idx.clamp(max=n)]


@dataclass
class PassConditions:
    """The conditions of B samples before the CFG passes are applied (every tensor has B rows).

    The one description of what the DiT is conditioned on, shared by sampling (one window, B = 1),
    distillation (the real and fake scores) and stage-2 evaluation, so the passes mean the same there.
    """

    txt: torch.Tensor  # [B, L, text_dim] the prompt (+ image tokens when the encoder speaks text_dim)
    txt_mask: torch.Tensor  # [B, L] bool
    pooled: torch.Tensor  # [B, pooled_dim]
    null_txt: torch.Tensor  # [B, L0, text_dim] the empty prompt (the UNCOND pass)
    null_txt_mask: torch.Tensor  # [B, L0]
    null_pooled: torch.Tensor  # [B, pooled_dim]
    image_latent: torch.Tensor | None = None  # [B, C, 1, h, w] portrait latent (the I2V concat)
    first: torch.Tensor | bool = True  # [B] the window starts the video (first_frame: only those see the portrait)
    image_tokens: torch.Tensor | None = None  # [B, Li, image_token_dim]
    audio: torch.Tensor | None = None  # [B, K, T, fpl, window, D] (Avatar: [B, K, 4T-3, window, layers, width])
    speaker_mask: torch.Tensor | None = None  # [B, K, T, h, w] token-space masks
    ref_latent: bool = False  # Avatar: image_latent goes in as `ref_latent` over the window, in every pass
    mask_scale: float = 1.0  # factor on the speaker masks of every pass (Avatar's early-step 0.6)


def pad_tokens(t: torch.Tensor, length: int) -> torch.Tensor:
    if t.shape[1] == length:
        return t
    return torch.cat([t, t.new_zeros(t.shape[0], length - t.shape[1], *t.shape[2:])], dim=1)


def pass_inputs(
    x: torch.Tensor, passes: tuple[str, ...], c: PassConditions, image_mode: str | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(DiT input x with the image channels, DiT keyword conditions) for x = len(passes) x B rows, pass-major.

    FULL = prompt + portrait + audio; NO_AUDIO = the same with the speaker masks zeroed; UNCOND = the
    empty prompt, no portrait (zero concat, image tokens masked out), no audio. image_mode:
    "first_frame" / "every_frame" (DiTConfig.image_condition) or None for a DiT without the I2V concat.
    """
    n = len(passes)
    b = c.txt.shape[0]
    if x.shape[0] != n * b:
        raise ValueError(f"x has {x.shape[0]} rows, expected {n} passes x batch {b}")
    unknown = [p for p in passes if p not in (FULL, NO_AUDIO, UNCOND, ZERO_AUDIO, NEG_ZERO_AUDIO)]
    if unknown:
        raise ValueError(f"unknown condition pass {unknown[0]!r}")
    cond = [p not in (UNCOND, NEG_ZERO_AUDIO) for p in passes]
    txts = [c.txt if k else c.null_txt for k in cond]
    length = max(t.shape[1] for t in txts)
    kw: dict[str, torch.Tensor] = {
        "txt": torch.cat([pad_tokens(t, length) for t in txts]),
        "txt_mask": torch.cat([pad_tokens((c.txt_mask if k else c.null_txt_mask).bool(), length) for k in cond]),
        "pooled": torch.cat([c.pooled if k else c.null_pooled for k in cond]),
    }
    if c.image_tokens is not None:
        kw["image_tokens"] = c.image_tokens.repeat(n, 1, 1)
        on = torch.tensor(cond, device=x.device).repeat_interleave(b)
        kw["image_tokens_mask"] = on[:, None].expand(n * b, c.image_tokens.shape[1])
    if c.audio is not None and c.speaker_mask is not None:
        zero = (ZERO_AUDIO, NEG_ZERO_AUDIO)
        kw["audio"] = torch.cat([torch.zeros_like(c.audio) if p in zero else c.audio for p in passes])
        mask = c.speaker_mask * c.mask_scale if c.mask_scale != 1.0 else c.speaker_mask
        kw["speaker_mask"] = torch.cat([mask if p in (FULL, *zero) else torch.zeros_like(mask) for p in passes])
    if c.ref_latent:
        ref = c.image_latent[:, :, :1].expand(b, -1, x.shape[2], -1, -1).to(x.dtype)
        kw["ref_latent"] = ref.repeat(n, 1, 1, 1, 1)
    if image_mode is None:
        return x, kw
    keep = torch.tensor(cond, dtype=x.dtype, device=x.device).repeat_interleave(b)
    first = torch.as_tensor(c.first, dtype=x.dtype, device=x.device).expand(b).repeat(n)
    image = None if c.image_latent is None else c.image_latent.expand(b, -1, -1, -1, -1).repeat(n, 1, 1, 1, 1)
    x_in = concat_image_condition(x, image, every_frame=image_mode == "every_frame", keep=keep, first=first)
    return x_in, kw


@dataclass
class Conditions:
    """Run-constant conditions on the compute device (per-window parts are cut in WindowPredictor)."""

    txt: torch.Tensor  # [2, L, text_dim]: row 0 prompt (+ image tokens), row 1 null
    txt_mask: torch.Tensor  # [2, L]
    pooled: torch.Tensor  # [2, pooled_dim]
    image_tokens: torch.Tensor | None  # [1, Li, image_token_dim] when the DiT projects them itself
    image_latent: torch.Tensor  # [1, C, 1, h, w]
    features: torch.Tensor | None  # [K, F, D] per video frame (CPU, float16 ok), or None with audio_windows
    token_mask: torch.Tensor  # [K, h_tok, w_tok] static speaker masks in token space, or [K, T, h, w]
    # Audio already grouped per latent frame [K, T, fpl, window, D] for the whole video (training caches
    # store it this way); used instead of `features` when given.
    audio_windows: torch.Tensor | None = None


class WindowPredictor:
    """predict(x_window, sigma, window) for the sampler: builds each window's conditions and runs all
    CFG passes in one batched DiT forward."""

    def __init__(self, dit: MagicInfiniteDiT, cond: Conditions, cfg: CFGConfig, dtype: torch.dtype = torch.float32,
                 forward: Any = None, sigmas: Any = None):
        """`sigmas`: the run's sigma list (noise to data); a step-indexed guidance schedule
        (`CFGConfig.decay`) reads the step from it."""
        self.dit, self.cond, self.cfg, self.dtype = dit, cond, cfg, dtype
        self.forward = forward or dit
        a = dit.cfg.audio
        self.fpl, self.win = (a.frames_per_latent, a.frame_window) if a is not None else (4, 5)
        self.scales = (torch.tensor([float(cfg.audio_scale)]), torch.tensor([float(cfg.text_scale)]))
        self.sigmas = None if sigmas is None else [float(s) for s in sigmas]
        if cfg.enabled and cfg.decay is not None and self.sigmas is None:
            raise ValueError("a step-indexed guidance schedule needs the run's sigma list (sigmas=)")

    def step_of(self, sigma: float) -> int:
        """The step whose starting sigma is `sigma` (the nearest one of the run's list)."""
        return min(range(len(self.sigmas) - 1), key=lambda i: abs(self.sigmas[i] - sigma))

    def __call__(self, x: torch.Tensor, sigma: float, win: Window) -> torch.Tensor:
        if self.cfg.enabled and self.cfg.decay is not None:
            return decayed_velocity(lambda xr, passes, m: self._forward(xr, passes, sigma, win, m), x,
                                    self.step_of(sigma), len(self.sigmas) - 1, self.cfg.decay)
        return guided_velocity(lambda xr, passes: self._forward(xr, passes, sigma, win), x, sigma, self.cfg, self.scales)

    def _forward(self, x_rep: torch.Tensor, passes: tuple[str, ...], sigma: float, win: Window,
                 mask_scale: float = 1.0) -> torch.Tensor:
        c, dev, dt = self.cond, x_rep.device, self.dtype
        dit_cfg = self.dit.cfg
        audio = speaker_mask = None
        if dit_cfg.avatar is not None and c.features is not None:
            av = dit_cfg.avatar
            audio = avatar_audio_window(c.features, win.start, win.end, av.frames_per_latent).to(dev, dt)
            audio = audio.reshape(*audio.shape[:2], av.audio_window, av.audio_layers, av.audio_channels)
            tm = c.token_mask.to(dev, dt)
            speaker_mask = tm[:, win.start : win.end] if tm.ndim == 4 else tm[:, None].expand(-1, win.length, -1, -1)
            audio, speaker_mask = audio[None], speaker_mask[None]
        elif dit_cfg.audio is not None and (c.audio_windows is not None or c.features is not None):
            if c.audio_windows is not None:
                audio = c.audio_windows[:, win.start : win.end].to(dev, dt)
            else:
                audio = audio_for_latents(c.features, win.start, win.end, self.fpl, self.win).to(dev, dt)
            tm = c.token_mask.to(dev, dt)
            speaker_mask = tm[:, win.start : win.end] if tm.ndim == 4 else tm[:, None].expand(-1, win.length, -1, -1)
            audio, speaker_mask = audio[None], speaker_mask[None]
        window = PassConditions(
            txt=c.txt[:1].to(dt), txt_mask=c.txt_mask[:1], pooled=c.pooled[:1].to(dt),
            null_txt=c.txt[1:].to(dt), null_txt_mask=c.txt_mask[1:], null_pooled=c.pooled[1:].to(dt),
            image_latent=c.image_latent, first=win.is_first,
            # a model without image tokens ignores them
            image_tokens=c.image_tokens.to(dt) if c.image_tokens is not None and dit_cfg.image_token_dim else None,
            audio=audio, speaker_mask=speaker_mask, ref_latent=dit_cfg.avatar is not None, mask_scale=mask_scale,
        )
        x_in, kwargs = pass_inputs(x_rep, passes, window, dit_cfg.image_mode)
        t = timestep_from_sigma(sigma).to(dev).expand(len(passes))
        return self.forward(x_in.to(dt), t, **kwargs).float()


def build_conditions(
    bundle: ModelBundle, portrait: torch.Tensor, prompt: str, features: torch.Tensor, pixel_masks: np.ndarray,
    device: torch.device, negative_prompt: str = "",
) -> Conditions:
    dit_cfg = bundle.dit.cfg
    with torch.no_grad():
        te = bundle.text_encoder
        if dit_cfg.avatar is not None and getattr(te, "takes_portrait", False):  # Avatar: the portrait in LLaVA
            face = portrait.region() if hasattr(portrait, "region") else portrait
            negative_prompt = negative_prompt or getattr(te, "default_negative", "")
            pos, neg = te(prompt, portrait=face), te(negative_prompt, portrait=face)
        else:
            pos, neg = te(prompt), te(negative_prompt)
        n = max(pos.tokens.shape[1], neg.tokens.shape[1])  # encoders may pad each prompt to its own length
        txt = torch.cat([F.pad(e.tokens, (0, 0, 0, n - e.tokens.shape[1])) for e in (pos, neg)]).to(device)
        txt_mask = torch.cat([F.pad(e.mask.bool(), (0, n - e.mask.shape[1])) for e in (pos, neg)]).to(device)
        pooled = torch.cat([pos.pooled, neg.pooled]).to(device)
        from magicinfinite_core.media.autoencoders import reference_latent  # media imports sampling

        image_latent = reference_latent(bundle.vae, portrait.to(device))
        image_tokens = None
        if bundle.image_encoder is not None:
            if isinstance(bundle.image_encoder, LatentPatchTokens):
                tok = bundle.image_encoder.from_latent(image_latent)
            else:
                tok = bundle.image_encoder(portrait.to(device))
            if dit_cfg.image_token_dim:
                image_tokens = tok
            else:  # the encoder already speaks text_dim: prepend to the prompt row, masked in the null row
                txt = torch.cat([torch.cat([tok, torch.zeros_like(tok)]), txt], dim=1)
                txt_mask = torch.cat([torch.tensor([[True], [False]], device=device).expand(2, tok.shape[1]), txt_mask], 1)
    h, w = image_latent.shape[-2:]
    grid = bundle.dit.token_grid((1, h, w))[1:]
    tmask = token_masks(pixel_masks, 1, grid)[:, 0]
    return Conditions(txt, txt_mask, pooled, image_tokens, image_latent, features, tmask)


