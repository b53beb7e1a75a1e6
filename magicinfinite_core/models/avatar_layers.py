"""HunyuanVideo-Avatar's audio modules: Whisper-window projection and face-masked perceiver adapters.

Module and parameter names follow the public Avatar checkpoint (`audio_proj.proj1..3`, `.norm`;
`audio_adapter_blocks.N.{norm1,norm2,to_q,to_kv,to_out}`) so its file loads without renaming.
Written from the facts of its public code (docs/hunyuan_avatar.md), checked against it by
tests/test_avatar_parity.py.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from magicinfinite_core.config import AvatarConfig


class AvatarAudioProjection(nn.Module):
    """One video frame's Whisper window [window, layers, channels] -> `tokens_per_frame` tokens of width hidden.

    Two ReLU layers and a LayerNorm over each token (the reference's AudioProjNet2).
    """

    def __init__(self, cfg: AvatarConfig, hidden: int):
        super().__init__()
        self.tokens, self.hidden = cfg.tokens_per_frame, hidden
        self.proj1 = nn.Linear(cfg.audio_feature_dim, cfg.audio_hidden)
        self.proj2 = nn.Linear(cfg.audio_hidden, cfg.audio_hidden)
        self.proj3 = nn.Linear(cfg.audio_hidden, cfg.tokens_per_frame * hidden)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """[..., F, window, layers, channels] (or [..., F, window*layers*channels]) -> [..., F, tokens, hidden]."""
        lead = audio.shape[:-3] if audio.shape[-1] != self.proj1.in_features else audio.shape[:-1]
        h = audio.reshape(*lead, self.proj1.in_features)
        h = torch.relu(self.proj2(torch.relu(self.proj1(h))))
        return self.norm(self.proj3(h).unflatten(-1, (self.tokens, self.hidden)))


def audio_tokens_per_latent(tokens: torch.Tensor, frames_per_latent: int) -> torch.Tensor:
    """Per-video-frame tokens [..., F, n, C] (F = 4T-3) -> per-latent-frame tokens [..., T, 4n, C].

    The causal VAE's latent frame 0 holds video frame 0 alone, so that frame's tokens are repeated
    to fill it (the reference pads with 3 copies of frame 0); later latent frames take 4 frames each.
    """
    f = tokens.shape[-3]
    if (f - 1) % frames_per_latent:
        raise ValueError(
            f"{f} video frames of audio do not fill whole latent frames; give 1 + {frames_per_latent}k frames"
        )
    pad = tokens[..., :1, :, :].expand(*tokens.shape[:-3], frames_per_latent - 1, *tokens.shape[-2:])
    full = torch.cat([pad, tokens], dim=-3)
    t = full.shape[-3] // frames_per_latent
    return full.reshape(*tokens.shape[:-3], t, frames_per_latent * tokens.shape[-2], tokens.shape[-1])


class PerceiverAudioAdapter(nn.Module):
    """Each latent frame's video tokens attend (one head) to that frame's audio tokens.

    `to_out` starts at zero, as in the reference, so a fresh adapter changes nothing. q and k are each
    scaled by dim^-1/4 before the product and the softmax runs in float32 (the reference's order).
    """

    def __init__(self, hidden: int, cfg: AvatarConfig):
        super().__init__()
        self.dim = cfg.adapter_dim
        self.norm1 = nn.LayerNorm(hidden, eps=cfg.adapter_norm_eps)  # audio tokens
        self.norm2 = nn.LayerNorm(hidden, eps=cfg.adapter_norm_eps)  # video tokens
        self.to_q = nn.Linear(hidden, cfg.adapter_dim, bias=False)
        self.to_kv = nn.Linear(hidden, 2 * cfg.adapter_dim, bias=False)
        self.to_out = nn.Linear(cfg.adapter_dim, hidden, bias=False)
        nn.init.zeros_(self.to_out.weight)

    def forward(self, audio: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        """audio [B, T, n, C]; video [B, T, S, C] -> the adapter's output [B, T, S, C] (not yet masked)."""
        q = self.to_q(self.norm2(video))
        k, v = self.to_kv(self.norm1(audio)).chunk(2, dim=-1)
        scale = 1.0 / math.sqrt(math.sqrt(self.dim))
        weight = (q * scale) @ (k * scale).transpose(-2, -1)
        weight = torch.softmax(weight.float(), dim=-1).to(weight.dtype)
        return self.to_out(weight @ v)


def masked_adapter(adapter: nn.Module, video: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """video + sum_k adapter(audio_k, video) * face_mask_k, for video tokens of whole frames or of one frame.

    video [B, L, C] are the tokens of f latent frames (L = f * S, or a part of one frame when f = 1),
    ctx [B, K, f, n, C] those frames' audio tokens, mask [B, K, L] the tokens' face masks. Each token
    attends only to its own frame's audio, so a sequence-parallel rank may run any frame-aligned run.
    One speaker is the reference's forward exactly; several speakers reuse the same adapter, one stream
    and one mask each, and their masked outputs add up (the paper's masked audio attention).
    """
    b, n, c = video.shape
    k, f = ctx.shape[1], ctx.shape[2]
    frames = video.reshape(b, 1, f, n // f, c).expand(-1, k, -1, -1, -1).reshape(b * k, f, n // f, c)
    # all speakers in one call (one load per block under block swap): rows are (sample, speaker)
    out = adapter(ctx.reshape(b * k, *ctx.shape[2:]), frames).reshape(b, k, n, c)
    return video + (out * mask[..., None]).sum(dim=1)


def face_mask_to_tokens(mask: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Face mask [B, K, T or 1, H, W] at latent (or any) size -> [B, K, T, h, w] on the token grid.

    Nearest resizing, as the reference does inside its forward; a single mask frame is repeated.
    """
    b, k = mask.shape[:2]
    m = mask.float().reshape(b * k, 1, *mask.shape[2:])
    if m.shape[2] == 1:
        m = m.expand(-1, -1, grid[0], -1, -1)
    m = nn.functional.interpolate(m, size=list(grid), mode="nearest")
    return m.reshape(b, k, *grid)
