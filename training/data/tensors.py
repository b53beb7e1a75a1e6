"""Clip arrays <-> model tensors, and box masks: the conversions the trainers and the evaluation share."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 [F, H, W, 3] -> float [3, F, H, W] in [-1, 1] (the VAE's input range)."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)


def tensor_to_frames(video: torch.Tensor) -> np.ndarray:
    """float [3, F, H, W] in [-1, 1] -> uint8 [F, H, W, 3]."""
    x = ((video.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()


def box_mask(boxes: np.ndarray, height: int, width: int, margin: float = 0.0) -> np.ndarray:
    """Boxes [F, 4] (x0, y0, x1, y1) px -> bool masks [F, H, W]; `margin` grows each side by a fraction."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    x0, x1 = b[:, 0] - margin * w, b[:, 2] + margin * w
    y0, y1 = b[:, 1] - margin * h, b[:, 3] + margin * h
    xs = np.arange(width, dtype=np.float32) + 0.5
    ys = np.arange(height, dtype=np.float32) + 0.5
    inx = (xs[None, :] >= x0[:, None]) & (xs[None, :] <= x1[:, None])
    iny = (ys[None, :] >= y0[:, None]) & (ys[None, :] <= y1[:, None])
    return iny[:, :, None] & inx[:, None, :]


def speaker_mouth_boxes(gt: dict[str, np.ndarray], meta: dict) -> np.ndarray:
    """[F, 4] mouth box of the clip's speaker (the region the lips fill at full opening)."""
    return np.asarray(gt["mouth_box"][:, int(meta.get("speaker", 0))], np.float32)


def latent_mask(mask_hw: np.ndarray, latent_hw: tuple[int, int], mode: str) -> torch.Tensor:
    """Pixel mask [H, W] -> binary mask at latent resolution.

    'cover': a latent pixel is in when >= half its area is (the face, paper's M_face);
    'touch': in when any of it is (the mouth, so a 1-latent-pixel mouth is never lost).
    """
    m = torch.from_numpy(np.asarray(mask_hw, np.float32))[None, None]
    if mode == "cover":
        return (F.adaptive_avg_pool2d(m, latent_hw)[0, 0] >= 0.5).float()
    if mode == "touch":
        return (F.adaptive_max_pool2d(m, latent_hw)[0, 0] > 0).float()
    raise ValueError(f"unknown latent mask mode {mode!r}; use 'cover' or 'touch'")
