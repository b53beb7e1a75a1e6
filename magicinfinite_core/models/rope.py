"""3D rotary position embedding over (t, h, w) token grids, interleaved pairs (HunyuanVideo)."""

from __future__ import annotations

import torch


def rope_1d(dim: int, positions: torch.Tensor, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim))
    angles = torch.outer(positions.double(), freqs)  # [L, dim/2]
    cos = angles.cos().repeat_interleave(2, dim=1)
    sin = angles.sin().repeat_interleave(2, dim=1)
    return cos.float(), sin.float()


def rope_3d(
    grid: tuple[int, int, int], dims: tuple[int, int, int], theta: float, t_offset: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [T*H*W, head_dim] for a t-major token grid.

    `t_offset` shifts the time axis so a sliding window can use the positions it has in the
    whole video (or its own, when 0).
    """
    t, h, w = grid
    axes = torch.meshgrid(
        torch.arange(t_offset, t_offset + t), torch.arange(h), torch.arange(w), indexing="ij"
    )
    parts = [rope_1d(d, a.reshape(-1), theta) for d, a in zip(dims, axes, strict=True)]
    return torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, L, H, D]; rotates each (even, odd) pair by the position's angle."""
    xf = x.float()
    x_even, x_odd = xf[..., 0::2], xf[..., 1::2]
    rotated = torch.stack([-x_odd, x_even], dim=-1).flatten(-2)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return (xf * cos + rotated * sin).to(x.dtype)
