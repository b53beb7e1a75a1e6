"""Audio projection and masked per-frame audio cross-attention (paper §3.2–3.3, Eq. 2)."""

from __future__ import annotations

import torch
from torch import nn

from magicinfinite_core.config import AudioLayerConfig, latent_frames
from magicinfinite_core.models.attention import sdpa
from magicinfinite_core.models.blocks import split_heads
from magicinfinite_core.models.layers import RMSNorm, layer_norm


def group_audio_by_latent_frame(
    features: torch.Tensor, frames_per_latent: int = 4, window: int = 5
) -> torch.Tensor:
    """Per-video-frame features [..., F, D] -> per-latent-frame windows [..., T_lat, fpl, window, D].

    Latent frame 0 sees video frame 0 (repeated); latent frame k sees video frames 4k-3..4k, each
    with a +-window//2 frame context clamped at the ends of the whole track. Done once for the whole
    video so that slicing latent frames for a sliding window stays exactly aligned.
    """
    n = features.shape[-2]
    t_lat = latent_frames(n, frames_per_latent)
    k = torch.arange(t_lat)[:, None]
    j = torch.arange(frames_per_latent)[None, :]
    centre = torch.where(k == 0, torch.zeros_like(j), (k - 1) * frames_per_latent + 1 + j)  # [T_lat, fpl]
    offsets = torch.arange(window) - window // 2
    idx = (centre[..., None] + offsets).clamp(0, n - 1)  # [T_lat, fpl, window]
    return features[..., idx.reshape(-1), :].reshape(
        *features.shape[:-2], t_lat, frames_per_latent, window, -1
    )


class AudioProjection(nn.Module):
    """Turns each latent frame's window of audio features into a few context tokens."""

    def __init__(self, cfg: AudioLayerConfig):
        super().__init__()
        self.cfg = cfg
        self.frame_in = nn.Linear(cfg.frame_window * cfg.feature_dim, cfg.proj_dim)
        self.group_in = nn.Linear(cfg.frames_per_latent * cfg.proj_dim, cfg.proj_dim)
        self.tokens_out = nn.Linear(cfg.proj_dim, cfg.tokens_per_latent_frame * cfg.context_dim)
        self.norm = nn.LayerNorm(cfg.context_dim)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """[..., T, fpl, window, D] -> [..., T, tokens, context_dim]."""
        c = self.cfg
        h = nn.functional.silu(self.frame_in(audio.flatten(-2)))  # [..., T, fpl, proj]
        h = nn.functional.silu(self.group_in(h.flatten(-2)))  # [..., T, proj]
        return self.norm(self.tokens_out(h).unflatten(-1, (c.tokens_per_latent_frame, c.context_dim)))


class AudioCrossAttention(nn.Module):
    """h + sum_k Attn(h, A_k) * M_k, attention computed independently per latent frame.

    The output projection starts at zero so adding these layers to a stage-1 model changes nothing.
    """

    def __init__(self, hidden: int, cfg: AudioLayerConfig, eps: float = 1e-6):
        super().__init__()
        self.heads, self.eps = cfg.num_heads, eps
        head_dim = hidden // cfg.num_heads
        self.q = nn.Linear(hidden, hidden)
        self.kv = nn.Linear(cfg.context_dim, 2 * hidden)
        self.q_norm = RMSNorm(head_dim, eps)
        self.k_norm = RMSNorm(head_dim, eps)
        self.proj = nn.Linear(hidden, hidden)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, img: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """img [B, T*S, C]; context [B, K, T, n, Cc]; mask [B, K, T*S] -> img with audio added."""
        b, n_img, c = img.shape
        _, k_spk, t, n_ctx, _ = context.shape
        s = n_img // t
        q = self.q_norm(split_heads(self.q(layer_norm(img, self.eps)), 1, self.heads)[0])  # [B, L, H, D]
        q = q.view(b, 1, t, s, self.heads, -1).expand(b, k_spk, t, s, self.heads, q.shape[-1])
        kk, vv = split_heads(self.kv(context.reshape(b * k_spk * t, n_ctx, -1)), 2, self.heads)
        out = sdpa(q.reshape(b * k_spk * t, s, self.heads, -1), self.k_norm(kk), vv)  # [BKT, S, H, D]
        out = self.proj(out.reshape(b, k_spk, n_img, c))
        return img + (out * mask.to(out.dtype).unsqueeze(-1)).sum(dim=1)
