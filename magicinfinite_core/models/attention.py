"""Attention dispatch: the one seam where faster or distributed attention plugs in.

Blocks call `joint_attention` with the video part and the text part kept apart, because a
sequence-parallel backend (USP) shards only the video tokens and treats text as joint tokens
replicated on every rank. Backends never require changes to block code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol

import torch
import torch.nn.functional as F

try:  # optional fast path
    from flash_attn import flash_attn_func as _flash_attn_func  # type: ignore[import-not-found]
except Exception:  # noqa: BLE001 - any import failure means "not available"
    _flash_attn_func = None


def sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """q, k, v: [B, L, H, D]; key_mask: [B, Lk] bool (True = attend). Returns [B, Lq, H, D]."""
    if (
        key_mask is None
        and _flash_attn_func is not None
        and q.is_cuda
        and q.dtype in (torch.float16, torch.bfloat16)
    ):
        return _flash_attn_func(q, k, v)
    mask = None if key_mask is None else key_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
    )
    return out.transpose(1, 2)


class AttentionBackend(Protocol):
    def joint(
        self,
        img_q: torch.Tensor,
        img_k: torch.Tensor,
        img_v: torch.Tensor,
        txt_q: torch.Tensor,
        txt_k: torch.Tensor,
        txt_v: torch.Tensor,
        txt_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


class LocalAttention:
    """Single-process full attention over [video; text] (SDPA, or flash-attn when present)."""

    def joint(self, img_q, img_k, img_v, txt_q, txt_k, txt_v, txt_mask):
        n_img = img_q.shape[1]
        q = torch.cat([img_q, txt_q], dim=1)
        k = torch.cat([img_k, txt_k], dim=1)
        v = torch.cat([img_v, txt_v], dim=1)
        key_mask = None
        if txt_mask is not None and not bool(txt_mask.all()):
            ones = torch.ones(img_k.shape[:2], dtype=torch.bool, device=img_k.device)
            key_mask = torch.cat([ones, txt_mask.bool()], dim=1)
        out = sdpa(q, k, v, key_mask)
        return out[:, :n_img], out[:, n_img:]


_backend: AttentionBackend = LocalAttention()


def joint_attention(
    img_q, img_k, img_v, txt_q, txt_k, txt_v, txt_mask=None
) -> tuple[torch.Tensor, torch.Tensor]:
    return _backend.joint(img_q, img_k, img_v, txt_q, txt_k, txt_v, txt_mask)


@contextlib.contextmanager
def attention_backend(backend: AttentionBackend) -> Iterator[AttentionBackend]:
    """Use `backend` for every joint attention inside the block (e.g. a USP backend per rank)."""
    global _backend
    previous, _backend = _backend, backend
    try:
        yield backend
    finally:
        _backend = previous
