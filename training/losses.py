"""Flow-matching losses for the DiT, including the adaptive face loss (paper §3.3, Eq. 3-4).

Our reading of Eq. 3 (DESIGN.md §5): L_adap is the flow loss restricted to the face-mask positions
and normalised by the face area, i.e. the MEAN squared error inside the face. Relative to L_base
(the mean over the whole latent) a face pixel then weighs (1 + lambda * HW / |M_face|) times a
background pixel, so the smaller the face, the larger its per-pixel weight -- exactly Eq. 3's
H*W / sum(M_face) factor. L_total = L_base + lambda_adap * L_adap with lambda_adap = 10 (§4.1.2).

`mouth_weight` adds the same kind of term for the mouth box (the DESIGN.md §9 probe: weighting the
mouth region is what made a small model listen to the audio). It is our addition; 0 disables it.

`temporal_weight` adds the masked mean of the error's change from one latent frame to the next inside
the face (issue 26): a motion-latent model whose per-frame errors are small but independent draws a
head that jumps at every latent frame, and only this term sees that. Also ours; 0 disables it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from magicinfinite_core.sampling.schedule import add_noise, shift_sigmas, velocity_target


@dataclass(frozen=True)
class LossConfig:
    face_weight: float = 10.0  # lambda_adap; 0 = stage 1 (plain flow loss)
    mouth_weight: float = 0.0  # our extra masked-mean term on the mouth box
    train_shift: float = 3.0  # sigma = shift(u), u ~ U(0, 1): matches a shifted sampler schedule
    temporal_weight: float = 0.0  # the face's frame-to-frame error change (latent time); 0 = off


def masked_mean(err: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of err [B, C, T, H, W] over positions where mask [B, 1|T, H, W] (or [B, H, W]) is on.

    Samples with an empty mask contribute 0 (they have no face to weigh).
    """
    b = err.shape[0]
    if mask.ndim == 3:  # [B, H, W] static mask
        mask = mask[:, None]
    m = mask.to(err.dtype)[:, None].expand_as(err)  # [B, C, T, H, W]
    num = (err * m).reshape(b, -1).sum(1)
    den = m.reshape(b, -1).sum(1)
    return torch.where(den > 0, num / den.clamp_min(1.0), torch.zeros_like(num))


def adaptive_flow_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    face_mask: torch.Tensor | None,
    mouth_mask: torch.Tensor | None,
    cfg: LossConfig,
    sample_weight: torch.Tensor | None = None,
    sample_scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_total = L_base + face_weight * L_adap(face) + mouth_weight * L_adap(mouth)
    + temporal_weight * L_adap(face, error change along latent time), batch-averaged.

    `sample_weight` [B] in {0, 1} switches the face / mouth terms per sample (e.g. off when the
    audio is dropped, so those samples are plain flow matching). `sample_scale` [B] multiplies each
    sample's total (`low_noise_scale`). Returns (loss, parts per sample).
    """
    err = (pred.float() - target.float()).square()
    base = err.reshape(err.shape[0], -1).mean(1)
    total = base
    parts = {"base": base.detach()}
    sw = torch.ones_like(base) if sample_weight is None else sample_weight.to(base)
    if cfg.face_weight and face_mask is not None:
        face = masked_mean(err, face_mask)
        total = total + cfg.face_weight * sw * face
        parts["face"] = face.detach()
    if cfg.mouth_weight and mouth_mask is not None:
        mouth = masked_mean(err, mouth_mask)
        total = total + cfg.mouth_weight * sw * mouth
        parts["mouth"] = mouth.detach()
    if cfg.temporal_weight and face_mask is not None and pred.shape[2] > 1:
        change = temporal_error_change(pred.float() - target.float())
        mask = face_mask
        if mask.ndim == 4 and mask.shape[1] > 1:  # a per-frame mask: on in both frames of the pair
            mask = mask[:, 1:] * mask[:, :-1]
        temporal = masked_mean(change, mask)
        total = total + cfg.temporal_weight * temporal
        parts["temporal"] = temporal.detach()
    if sample_scale is not None:
        total = total * sample_scale.to(total)
    return total.mean(), parts


def temporal_error_change(diff: torch.Tensor) -> torch.Tensor:
    """Squared change of a prediction error [B, C, T, H, W] from each latent frame to the next: [B, C, T-1, H, W].

    Zero when every frame is wrong by the same amount (a steady offset), large when errors flip from one
    frame to the next (a jittering head)."""
    return (diff[:, :, 1:] - diff[:, :, :-1]).square()


def low_noise_scale(sigma: torch.Tensor, below: float) -> torch.Tensor:
    """min(1, (sigma / below)^2) per sample: sigma^2 times a velocity error is a data-space error
    (x0 = x - sigma * v), so below `below` the loss stops growing like 1/sigma^2 (0: all ones)."""
    if below <= 0:
        return torch.ones_like(sigma)
    return (sigma / below).square().clamp(max=1.0)


def sample_sigmas(batch: int, shift: float, generator: torch.Generator,
                  levels: tuple[float, ...] = ()) -> torch.Tensor:
    """Training noise levels: u ~ U(0, 1) warped by the sampler's time shift (more high-noise steps). `levels`:
    draw from these only instead (a few-step generator's own sigmas, which it is only ever asked at)."""
    if levels:
        return torch.tensor(levels, dtype=torch.float32)[torch.randint(0, len(levels), (batch,), generator=generator)]
    u = torch.rand(batch, generator=generator)
    return shift_sigmas(u, shift).clamp(1e-3, 1.0)


def noisy_pair(
    data: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_sigma, velocity target) for clean latents [B, C, T, H, W] (scheduler.py convention)."""
    noise = torch.randn(data.shape, generator=generator, dtype=data.dtype)
    return add_noise(data, noise, sigma), velocity_target(data, noise)
