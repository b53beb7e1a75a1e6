"""A linear causal patch autoencoder: the demo model's video autoencoder.

Why linear: a closed-form PCA code fitted in seconds keeps far more of a face than a 3D-conv VAE
trained on two CPU cores (DESIGN.md §11: +7 dB), and identity is capped by the autoencoder.

Why this layout: the latent must be exactly causal with HunyuanVideo's time grid (frame 0 alone,
latent frame k <-> video frames 4k-3..4k) so the sliding-window sampler, the audio grouping and the
streamed decoder work unchanged. Each latent frame has two parts:

* ``spatial`` channels: the PCA code of one frame's p x p patches (frame 0 itself, or the mean of the
  group's 4 frames), in ONE basis for both - so a still video's latent frames all equal the portrait's
  frame-0 latent, and "copy the portrait" is the identity map for the DiT;
* ``temporal`` channels: the PCA code of the group's 4 frames minus their mean (motion within 160 ms);
  zero for frame 0 and for anything still.

Decoding is per latent frame and per patch (no context, no overlap), so chunked decode equals one-shot
decode exactly. Latents are multiplied by one global `scaling_factor` (orthonormal bases keep latent
MSE proportional to pixel MSE, so the flow loss weighs pixels, not PCA components, evenly).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from magicinfinite_core.config import latent_frames

KIND = "linear_patch"


@dataclass(frozen=True)
class PatchAutoencoderConfig:
    patch: int = 8  # pixels per latent cell, each side
    spatial_channels: int = 64  # PCA components of one frame's patch (3 * patch**2 values)
    temporal_channels: int = 16  # PCA components of a group's within-group detail (4 * 3 * patch**2 values)
    temporal_compression_ratio: int = 4
    scaling_factor: float = 1.0

    @property
    def latent_channels(self) -> int:
        return self.spatial_channels + self.temporal_channels

    @property
    def spatial_compression_ratio(self) -> int:
        return self.patch

    @property
    def patch_values(self) -> int:
        return 3 * self.patch * self.patch

    def __post_init__(self) -> None:
        if self.patch < 1 or self.temporal_compression_ratio < 1:
            raise ValueError(f"patch and temporal ratio must be >= 1, got {self.patch}, {self.temporal_compression_ratio}")
        if not 1 <= self.spatial_channels <= self.patch_values:
            raise ValueError(f"spatial_channels must be in 1..{self.patch_values}, got {self.spatial_channels}")
        if not 0 <= self.temporal_channels <= self.patch_values * self.temporal_compression_ratio:
            raise ValueError(f"temporal_channels {self.temporal_channels} out of range")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PatchAutoencoderConfig:
        d = {k: v for k, v in d.items() if k != "kind"}
        return cls(**d)


def patchify(frames: torch.Tensor, p: int) -> torch.Tensor:
    """[B, 3, T, H, W] -> [B, T, H/p, W/p, 3*p*p] (values ordered c, y, x)."""
    b, c, t, h, w = frames.shape
    x = frames.reshape(b, c, t, h // p, p, w // p, p).permute(0, 2, 3, 5, 1, 4, 6)
    return x.reshape(b, t, h // p, w // p, c * p * p)


def unpatchify(patches: torch.Tensor, p: int) -> torch.Tensor:
    """Inverse of `patchify`: [B, T, h, w, 3*p*p] -> [B, 3, T, h*p, w*p]."""
    b, t, h, w, _ = patches.shape
    x = patches.reshape(b, t, h, w, 3, p, p).permute(0, 4, 1, 2, 5, 3, 6)
    return x.reshape(b, 3, t, h * p, w * p)


class PatchAutoencoder(nn.Module):
    """Same interface as `vae.VideoVAE`: encode/decode/latent_shape/spatial_ratio/temporal_ratio/dtype."""

    def __init__(self, cfg: PatchAutoencoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n, r = cfg.patch_values, cfg.temporal_compression_ratio
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("spatial_basis", torch.eye(n)[: cfg.spatial_channels].clone())  # [Cs, n] rows orthonormal
        self.register_buffer("temporal_basis", torch.eye(n * r)[: cfg.temporal_channels].clone())  # [Ct, r*n]

    # ------------------------------------------------------------------ interface shared with VideoVAE
    @property
    def spatial_ratio(self) -> int:
        return self.cfg.patch

    @property
    def temporal_ratio(self) -> int:
        return self.cfg.temporal_compression_ratio

    @property
    def dtype(self) -> torch.dtype:
        return self.mean.dtype

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        p = self.cfg.patch
        if height % p or width % p:
            raise ValueError(f"frame size {height}x{width} must be a multiple of {p} for this autoencoder")
        return (self.cfg.latent_channels, latent_frames(frames, self.temporal_ratio), height // p, width // p)

    def enable_tiling(self, tile: int = 256) -> None:
        """Nothing to tile: every patch is coded on its own, so memory is already linear in the frame size."""

    def encode(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """[B, 3, F, H, W] in [-1, 1] -> [B, C, 1 + ceil((F-1)/r), H/p, W/p]. Deterministic (generator unused)."""
        p, r = self.cfg.patch, self.temporal_ratio
        b, _, f, h, w = frames.shape
        self.latent_shape(f, h, w)
        x = patchify(frames.to(self.dtype), p) - self.mean  # [B, F, h, w, n]
        first = x[:, :1]
        rest = x[:, 1:]
        groups = latent_frames(f, r) - 1
        if groups and rest.shape[1] < groups * r:  # a short last group repeats its last frame
            pad = rest[:, -1:].expand(-1, groups * r - rest.shape[1], -1, -1, -1)
            rest = torch.cat([rest, pad], dim=1)
        zs = [first @ self.spatial_basis.T]
        zt = [first.new_zeros(*first.shape[:-1], self.cfg.temporal_channels)]
        if groups:
            g = rest.reshape(b, groups, r, h // p, w // p, -1)
            m = g.mean(dim=2)
            detail = (g - m[:, :, None]).permute(0, 1, 3, 4, 2, 5).reshape(b, groups, h // p, w // p, -1)
            zs.append(m @ self.spatial_basis.T)
            zt.append(detail @ self.temporal_basis.T)
        z = torch.cat([torch.cat(zs, dim=1), torch.cat(zt, dim=1)], dim=-1)  # [B, T, h, w, C]
        return z.permute(0, 4, 1, 2, 3) * self.cfg.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """[B, C, T, h, w] -> [B, 3, 1 + r(T-1), H, W] in [-1, 1]; latent frame 0 decodes as one frame."""
        p, r, cs = self.cfg.patch, self.temporal_ratio, self.cfg.spatial_channels
        z = latents.to(self.dtype).permute(0, 2, 3, 4, 1) / self.cfg.scaling_factor  # [B, T, h, w, C]
        b, t, h, w, _ = z.shape
        base = z[..., :cs] @ self.spatial_basis + self.mean  # [B, T, h, w, n]
        out = [base[:, :1]]
        if t > 1:
            detail = (z[:, 1:, ..., cs:] @ self.temporal_basis).reshape(b, t - 1, h, w, r, -1)
            frames = base[:, 1:, :, :, None] + detail  # [B, T-1, h, w, r, n]
            out.append(frames.permute(0, 1, 4, 2, 3, 5).reshape(b, (t - 1) * r, h, w, -1))
        return unpatchify(torch.cat(out, dim=1), p).clamp(-1, 1)

    # ------------------------------------------------------------------ weights
    def set_bases(self, mean: torch.Tensor, spatial: torch.Tensor, temporal: torch.Tensor, scaling: float) -> None:
        cfg = self.cfg
        if spatial.shape != self.spatial_basis.shape or temporal.shape != self.temporal_basis.shape:
            raise ValueError(
                f"bases {tuple(spatial.shape)}/{tuple(temporal.shape)} do not fit the config "
                f"({tuple(self.spatial_basis.shape)}/{tuple(self.temporal_basis.shape)})"
            )
        self.mean.copy_(mean)
        self.spatial_basis.copy_(spatial)
        self.temporal_basis.copy_(temporal)
        self.cfg = PatchAutoencoderConfig(**{**asdict(cfg), "scaling_factor": float(scaling)})


def is_patch_autoencoder_config(d: dict[str, Any]) -> bool:
    return d.get("kind") == KIND
