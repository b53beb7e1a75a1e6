"""The small prompt and portrait encoders of tiny and demo models, and the adapters around real ones.

Why here: a bundle names its encoders by kind (bundle.json "text_encoder" / "image_encoder");
`encoder_from_config` turns that entry back into the object, whatever the kind.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from magicinfinite_core.errors import CheckpointError
from magicinfinite_core.models.dit import image_tokens_from_latent

log = logging.getLogger(__name__)


@dataclass
class TextEmbedding:
    tokens: torch.Tensor  # [1, L, text_dim]
    mask: torch.Tensor  # [1, L] bool
    pooled: torch.Tensor  # [1, pooled_dim]


class ByteTextEncoder(nn.Module):
    """UTF-8 bytes -> token embeddings + pooled vector: a tiny, offline, trainable prompt encoder.

    Why: tiny/test models need a text stream of the DiT's shape without any downloaded tokenizer;
    a byte vocabulary never fails on a prompt. Token 256 = BOS (always present, so the null prompt
    still has one valid token), 257 = padding.
    """

    def __init__(self, text_dim: int, pooled_dim: int, max_len: int = 64):
        super().__init__()
        self.config = {"kind": "bytes", "text_dim": text_dim, "pooled_dim": pooled_dim, "max_len": max_len}
        self.max_len = max_len
        self.embed = nn.Embedding(258, text_dim)
        self.pos = nn.Parameter(torch.zeros(max_len, text_dim))
        self.pool = nn.Linear(text_dim, pooled_dim)

    def forward(self, prompt: str) -> TextEmbedding:
        ids = [256] + list(prompt.encode("utf-8"))[: self.max_len - 1]
        n = len(ids)
        ids = torch.tensor(ids + [257] * (self.max_len - n), device=self.pos.device)
        mask = torch.arange(self.max_len, device=ids.device) < n
        tok = self.embed(ids) + self.pos
        pooled = self.pool(tok[:n].mean(0))
        return TextEmbedding(tok[None], mask[None], pooled[None])


class PatchImageEncoder(nn.Module):
    """Portrait -> a grid of image tokens (avg-pooled patches, linear): the tiny model's identity tokens."""

    def __init__(self, token_dim: int, grid: int = 4, patch: int = 4):
        super().__init__()
        self.config = {"kind": "patches", "token_dim": token_dim, "grid": grid, "patch": patch}
        self.grid, self.patch = grid, patch
        self.proj = nn.Linear(3 * patch * patch, token_dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """[1, 3, H, W] in [-1, 1] -> [1, grid*grid, token_dim]."""
        g, p = self.grid, self.patch
        image = image.to(self.proj.weight.dtype)  # portraits arrive in float32; the encoder may be bf16
        x = F.adaptive_avg_pool2d(image, (g * p, g * p))  # [1, 3, gp, gp]
        x = x.view(1, 3, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(1, g * g, 3 * p * p)
        return self.proj(x)


class PromptEncoder:
    """Adapts a `text_encoders` encoder (`encode(list) -> TextEmbeddings`) to `encoder(prompt)`.

    The demo model's prompt encoder is the packaged MiniLM (kind "minilm", no weights in the bundle).
    """

    def __init__(self, encoder: Any, name: str = "minilm", max_length: int = 64) -> None:
        self.encoder, self.name = encoder, name
        self.config = {"kind": name, "max_length": max_length}
        self.token_dim, self.pooled_dim = int(encoder.token_dim), int(encoder.pooled_dim)

    def __call__(self, prompt: str) -> TextEmbedding:
        e = self.encoder.encode([prompt or ""])
        return TextEmbedding(e.tokens, e.mask, e.pooled)

    @classmethod
    def minilm(cls, max_length: int = 64) -> PromptEncoder:
        from magicinfinite_core.inputs.text_encoders import MiniLMTextEncoder

        return cls(MiniLMTextEncoder(max_length=max_length), "minilm", max_length)


class HunyuanPromptEncoder:
    """Adapts `text_encoders.HunyuanTextEncoder` (LLaVA-llama-3 + CLIP-L) to `encoder(prompt[, portrait])`.

    Why a portrait argument: HunyuanVideo-Avatar's text carries the portrait through LLaVA's `<image>`
    token (`encode_avatar`); `predictor.build_conditions` passes it for Avatar models. Without a
    portrait the prompt goes through HunyuanVideo's text-only template.
    """

    takes_portrait = True

    def __init__(self, encoder: Any, name: str = "llava-llama-3") -> None:
        from magicinfinite_core.inputs.text_encoders import AVATAR_NEGATIVE

        self.encoder, self.name = encoder, name
        self.config = {"kind": "hunyuan", "name": name}
        self.token_dim, self.pooled_dim = int(encoder.token_dim), int(encoder.pooled_dim)
        self.default_negative = AVATAR_NEGATIVE  # the reference's negative prompt when the caller gives none

    def __call__(self, prompt: str, portrait: torch.Tensor | None = None) -> TextEmbedding:
        """`portrait`: [1, 3, H, W] in [-1, 1] (the pipeline's portrait tensor)."""
        if portrait is None:
            e = self.encoder.encode([prompt or ""])
        else:
            image = ((portrait[:1].float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu()
            e = self.encoder.encode_avatar([prompt or ""], image)
        return TextEmbedding(e.tokens, e.mask, e.pooled)


class LatentPatchTokens:
    """Image tokens = the portrait's VAE latent in 2D patches (kind "latent_patches", no weights)."""

    def __init__(self, patch: Sequence[int] = (2, 2)) -> None:
        self.patch = (int(patch[0]), int(patch[1]))
        self.config = {"kind": "latent_patches", "patch": list(self.patch)}

    def from_latent(self, latent: torch.Tensor) -> torch.Tensor:
        return image_tokens_from_latent(latent, self.patch)


def encoder_from_config(cfg: dict) -> Any:
    kind = cfg.get("kind")
    if kind == "bytes":
        return ByteTextEncoder(cfg["text_dim"], cfg["pooled_dim"], cfg["max_len"])
    if kind == "patches":
        return PatchImageEncoder(cfg["token_dim"], cfg["grid"], cfg["patch"])
    if kind == "minilm":
        return PromptEncoder.minilm(cfg.get("max_length", 64))
    if kind == "latent_patches":
        return LatentPatchTokens(cfg.get("patch", (2, 2)))
    raise CheckpointError(f"unknown encoder kind {kind!r} in the model bundle")


