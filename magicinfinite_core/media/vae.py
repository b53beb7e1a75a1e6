"""Thin wrapper over diffusers' causal 3D VAE (`AutoencoderKLHunyuanVideo`).

Frames are [B, 3, F, H, W] in [-1, 1]; latents are scaled by the config's scaling factor so the DiT
sees unit-variance inputs. F video frames <-> 1 + ceil((F-1)/4) latent frames (frame 0 alone).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLHunyuanVideo

from magicinfinite_core.config import VAEConfig, latent_frames


class FrameGroupNorm(torch.nn.GroupNorm):
    """GroupNorm whose statistics never mix frames: [B, C, T, H, W] is normalised per frame.

    Same parameters (and state-dict keys) as nn.GroupNorm, so weights move freely between the two.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            return super().forward(x)
        b, c, t, h, w = x.shape
        y = super().forward(x.transpose(1, 2).reshape(b * t, c, h, w))
        return y.reshape(b, t, c, h, w).transpose(1, 2)


def use_frame_group_norm(module: torch.nn.Module) -> None:
    for name, child in module.named_children():
        if type(child) is torch.nn.GroupNorm:
            new = FrameGroupNorm(child.num_groups, child.num_channels, child.eps, child.affine)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            use_frame_group_norm(child)


class VideoVAE(torch.nn.Module):
    def __init__(self, cfg: VAEConfig, model: AutoencoderKLHunyuanVideo | None = None):
        super().__init__()
        self.cfg = cfg
        self.model = model if model is not None else AutoencoderKLHunyuanVideo(**cfg.diffusers_kwargs())
        if cfg.causal_norm:
            use_frame_group_norm(self.model)
        # diffusers' framewise tiling blends overlapping time tiles; our streamed decoder bounds memory
        # instead, and without the blend a causal VAE decodes chunk by chunk exactly.
        self.model.use_framewise_encoding = False
        self.model.use_framewise_decoding = False
        self.model.eval()

    @property
    def spatial_ratio(self) -> int:
        return self.cfg.spatial_compression_ratio

    @property
    def temporal_ratio(self) -> int:
        return self.cfg.temporal_compression_ratio

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        s = self.spatial_ratio
        if height % s or width % s:
            raise ValueError(f"frame size {height}x{width} must be a multiple of {s} for this VAE")
        return (
            self.cfg.latent_channels,
            latent_frames(frames, self.temporal_ratio),
            height // s,
            width // s,
        )

    def encode(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Posterior mean by default; a sample when a generator is given (training augmentation)."""
        dist = self.model.encode(frames.to(self.dtype)).latent_dist
        z = (
            dist.mode()
            if generator is None
            else dist.mean
            + dist.std
            * torch.randn(
                dist.mean.shape, generator=generator, device=dist.mean.device, dtype=dist.mean.dtype
            )
        )
        return z * self.cfg.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.model.decode(latents.to(self.dtype) / self.cfg.scaling_factor).sample.clamp(-1, 1)

    def enable_tiling(self, tile: int = 256, overlap: int | None = None) -> None:
        """Spatial tiling for large frames (diffusers' own blended tiles of `tile` pixels).

        Tiles step by tile - overlap (default overlap tile // 4: 256 -> stride 192, diffusers' own
        default); the stride must be set with the tile, or a tile under diffusers' stride leaves gaps.
        """
        overlap = tile // 4 if overlap is None else overlap
        if not 0 <= overlap < tile or tile % self.spatial_ratio or overlap % self.spatial_ratio:
            raise ValueError(f"need 0 <= overlap < tile, both multiples of {self.spatial_ratio}; got {tile}, {overlap}")
        self.model.enable_tiling(tile_sample_min_height=tile, tile_sample_min_width=tile,
                                 tile_sample_stride_height=tile - overlap, tile_sample_stride_width=tile - overlap)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @classmethod
    def from_config_dict(cls, d: dict) -> VideoVAE:
        return cls(VAEConfig.from_dict(d))

    @classmethod
    def from_diffusers_folder(cls, path: str | Path, scaling_factor: float | None = None) -> VideoVAE:
        model = AutoencoderKLHunyuanVideo.from_pretrained(str(path), use_safetensors=True)
        c = model.config
        cfg = VAEConfig(
            latent_channels=c.latent_channels,
            block_out_channels=tuple(c.block_out_channels),
            layers_per_block=c.layers_per_block,
            norm_num_groups=c.norm_num_groups,
            spatial_compression_ratio=c.spatial_compression_ratio,
            temporal_compression_ratio=c.temporal_compression_ratio,
            scaling_factor=scaling_factor if scaling_factor is not None else c.scaling_factor,
            mid_block_add_attention=c.mid_block_add_attention,
            causal_norm=False,
        )
        return cls(cfg, model)
