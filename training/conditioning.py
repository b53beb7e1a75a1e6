"""Condition dropout and batch assembly for the DiT trainer.

Why dropout: classifier-free guidance (guidance.py, Eq. 7 normalised) needs the model to predict
u(T, I, A), u(T, I, 0) and u(0, 0, 0); it only can if training showed it those inputs. We drop, per
sample and independently, the audio (speaker masks zeroed: the NO_AUDIO pass), the text (the empty
prompt's embedding) and the image tokens, and with a separate probability all three at once (the
UNCOND pass). Why window sampling: the sliding-window sampler (sliding_window.py) gives only window 0
the frame-0 latent concat; every other window starts mid-video with a zero concat, so training takes
random latent windows of the cached clips and drops the concat often even at the clip start.
Every random choice comes from an explicit torch.Generator, so a draw is reproducible from a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from magicinfinite_core.models.dit import concat_image_condition


@dataclass(frozen=True)
class DropoutConfig:
    audio: float = 0.15  # NO_AUDIO: speaker masks zeroed
    text: float = 0.1  # empty-prompt text
    image: float = 0.1  # no image tokens
    all: float = 0.1  # UNCOND: text, image and audio dropped together
    concat: float = 0.5  # frame-0 concat dropped although the window starts at frame 0
    start_at_zero: float = 0.5  # windows that start at the clip's first latent frame
    window_lengths: tuple[int, ...] = (5, 9)  # latent frames per training window
    window_probs: tuple[float, ...] = (0.6, 0.4)


@dataclass
class Draw:
    """One batch's random choices (all [B] bool except the window)."""

    audio: torch.Tensor
    text: torch.Tensor
    image: torch.Tensor
    concat: torch.Tensor  # True = the frame-0 concat is present
    starts: torch.Tensor  # [B] first latent frame of each sample's window
    length: int


def draw_dropout(
    batch: int, total_latents: int, cfg: DropoutConfig, generator: torch.Generator, use_audio: bool = True
) -> Draw:
    """Deterministic (given the generator state) dropout + window choice for a batch.

    A window longer than the clip is clipped to the clip. Mid-clip windows never get the concat.
    """
    probs = torch.tensor(cfg.window_probs, dtype=torch.float64)
    k = int(torch.multinomial(probs / probs.sum(), 1, generator=generator))
    length = min(cfg.window_lengths[k], total_latents)
    u = torch.rand(batch, 6, generator=generator)
    drop_all = u[:, 0] < cfg.all
    audio = (u[:, 1] < cfg.audio) | drop_all | (not use_audio)
    text = (u[:, 2] < cfg.text) | drop_all
    image = (u[:, 3] < cfg.image) | drop_all
    max_start = total_latents - length
    at_zero = (u[:, 4] < cfg.start_at_zero) | (max_start == 0)
    mid = 1 + (torch.rand(batch, generator=generator) * max(max_start, 1)).long().clamp_max(max(max_start - 1, 0))
    starts = torch.where(at_zero, torch.zeros_like(mid), mid)
    concat = (starts == 0) & (u[:, 5] >= cfg.concat)
    return Draw(audio=audio, text=text, image=image, concat=concat, starts=starts, length=length)


def _window(x: torch.Tensor, starts: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    return torch.stack([xi.narrow(dim - 1, int(s), length) for xi, s in zip(x, starts, strict=True)])


def assemble(
    items: dict[str, torch.Tensor],
    draw: Draw,
    null_text: dict[str, torch.Tensor],
    use_audio: bool,
) -> dict[str, torch.Tensor]:
    """Cached tensors stacked over the batch -> clean latent window + DiT conditions + loss masks.

    items: latent [B, C, T, h, w], audio [B, T, fpl, win, D], face_tokens [B, T, th, tw],
    face_latent / mouth_latent [B, h, w], text_tokens [B, L, Dt], text_mask [B, L], pooled [B, Dt],
    image_tokens [B, N, Di]. Returns the DiT keyword inputs (without x / timestep), the clean window
    `data` [B, C, W, h, w], the frame-0 `image_latent` (None entries = zeros) and the masks.
    """
    b = items["latent"].shape[0]
    # the portrait condition: its latent, or (motion latents) its appearance on the latent grid
    portrait = items["reference_latent"].float() if "reference_latent" in items else items["latent"][:, :, :1].float()
    data = _window(items["latent"].float(), draw.starts, draw.length, dim=2)
    keep = lambda m: m.view(b, *([1] * (items["text_tokens"].ndim - 1)))  # noqa: E731
    txt = torch.where(keep(draw.text), null_text["text_tokens"].float()[None], items["text_tokens"].float())
    txt_mask = torch.where(draw.text[:, None], null_text["text_mask"][None], items["text_mask"])
    pooled = torch.where(draw.text[:, None], null_text["pooled"].float()[None], items["pooled"].float())
    out: dict[str, torch.Tensor] = {
        "data": data,
        "txt": txt,
        "txt_mask": txt_mask.bool(),
        "pooled": pooled,
        "image_tokens": items["image_tokens"].float(),
        "image_tokens_mask": ~draw.image[:, None].expand(b, items["image_tokens"].shape[1]),
        "image_latent": portrait * draw.concat.view(b, 1, 1, 1, 1).float(),
        "concat": draw.concat,
        # every_frame models: the portrait (the clip's frame 0) in every window, dropped with the image
        # tokens; the frame-0 mask marks windows that start the clip.
        "portrait_latent": portrait,
        "reference": ~draw.image,
        "first": draw.starts == 0,
        "face_latent": items["face_latent"].float(),
        "mouth_latent": items["mouth_latent"].float(),
        "audio_on": ~draw.audio,
    }
    # A sample whose image tokens are all masked would attend to nothing in them; the text tokens
    # keep the joint attention non-empty, and the null prompt always has its [CLS]/[SEP] tokens.
    if use_audio:
        out["audio"] = _window(items["audio"].float(), draw.starts, draw.length, dim=1)[:, None]
        face = _window(items["face_tokens"].float(), draw.starts, draw.length, dim=1)
        out["speaker_mask"] = (face * (~draw.audio).float().view(b, 1, 1, 1))[:, None]
    return out


def model_input(noisy: torch.Tensor, batch: dict[str, torch.Tensor], every_frame: bool = False) -> torch.Tensor:
    """I2V channel concat per sample (models.dit.concat_image_condition with per-row switches).

    first_frame: the frame-0 latent + mask only where the concat is kept. every_frame: the portrait in
    every latent frame where the image condition is kept, the mask where the window starts the clip.
    """
    if every_frame:
        return concat_image_condition(noisy, batch["portrait_latent"], every_frame=True,
                                      keep=batch["reference"], first=batch["first"])
    return concat_image_condition(noisy, batch["image_latent"], keep=batch["concat"])
