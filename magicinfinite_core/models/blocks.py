"""HunyuanVideo's transformer blocks: token refiner, dual-stream and single-stream blocks."""

from __future__ import annotations

import torch
from torch import nn

from magicinfinite_core.models.attention import joint_attention, sdpa
from magicinfinite_core.models.layers import (
    MLP,
    Modulation,
    RMSNorm,
    TextProjection,
    TimestepEmbedder,
    gate,
    layer_norm,
    modulate,
)
from magicinfinite_core.models.rope import apply_rope


def split_heads(x: torch.Tensor, parts: int, heads: int) -> tuple[torch.Tensor, ...]:
    """[B, L, parts*H*D] -> `parts` tensors of [B, L, H, D]."""
    b, n, _ = x.shape
    return x.view(b, n, parts, heads, -1).unbind(2)


class RefinerBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_ratio: float, qkv_bias: bool, eps: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=True, eps=eps)
        self.self_attn_qkv = nn.Linear(hidden, 3 * hidden, bias=qkv_bias)
        self.self_attn_proj = nn.Linear(hidden, hidden, bias=qkv_bias)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=True, eps=eps)
        self.mlp = MLP(hidden, int(hidden * mlp_ratio), act="silu")
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        gate_msa, gate_mlp = self.adaLN_modulation(c).chunk(2, dim=-1)
        q, k, v = split_heads(self.self_attn_qkv(self.norm1(x)), 3, self.heads)
        if attn_mask is None:
            attn = sdpa(q, k, v)
        else:  # full [B, 1, L, L] mask
            attn = nn.functional.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=attn_mask
            ).transpose(1, 2)
        x = x + gate(self.self_attn_proj(attn.flatten(2)), gate_msa)
        return x + gate(self.mlp(self.norm2(x)), gate_mlp)


class IndividualTokenRefiner(nn.Module):
    def __init__(self, hidden: int, heads: int, depth: int, mlp_ratio: float, qkv_bias: bool, eps: float):
        super().__init__()
        self.blocks = nn.ModuleList(
            RefinerBlock(hidden, heads, mlp_ratio, qkv_bias, eps) for _ in range(depth)
        )

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        attn_mask = None
        if mask is not None and not bool(mask.all()):
            m = mask.bool()
            attn_mask = (m[:, None, :, None] & m[:, None, None, :]).clone()
            attn_mask[:, :, :, 0] = True  # every query sees token 0, so padded rows never go NaN
        for block in self.blocks:
            x = block(x, c, attn_mask)
        return x


class TokenRefiner(nn.Module):
    """Refines text tokens conditioned on time and on their own masked mean (`txt_in`)."""

    def __init__(self, in_dim: int, hidden: int, heads: int, depth: int, qkv_bias: bool, eps: float):
        super().__init__()
        self.input_embedder = nn.Linear(in_dim, hidden)
        self.t_embedder = TimestepEmbedder(hidden)
        self.c_embedder = TextProjection(in_dim, hidden)
        self.individual_token_refiner = IndividualTokenRefiner(hidden, heads, depth, 4.0, qkv_bias, eps)

    def forward(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:
            pooled = x.mean(dim=1)
        else:
            m = mask.to(x.dtype).unsqueeze(-1)
            pooled = (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1)
        c = self.t_embedder(t) + self.c_embedder(pooled)
        return self.individual_token_refiner(self.input_embedder(x), c, mask)


class DoubleStreamBlock(nn.Module):
    """Video and text keep their own weights and attend jointly."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float, qkv_bias: bool, eps: float):
        super().__init__()
        self.heads, self.eps = heads, eps
        head_dim, mlp_hidden = hidden // heads, int(hidden * mlp_ratio)
        for s in ("img", "txt"):
            setattr(self, f"{s}_mod", Modulation(hidden, 6))
            setattr(self, f"{s}_attn_qkv", nn.Linear(hidden, 3 * hidden, bias=qkv_bias))
            setattr(self, f"{s}_attn_q_norm", RMSNorm(head_dim, eps))
            setattr(self, f"{s}_attn_k_norm", RMSNorm(head_dim, eps))
            setattr(self, f"{s}_attn_proj", nn.Linear(hidden, hidden, bias=qkv_bias))
            setattr(self, f"{s}_mlp", MLP(hidden, mlp_hidden))

    def _qkv(self, s: str, x: torch.Tensor, shift, scale):
        q, k, v = split_heads(
            getattr(self, f"{s}_attn_qkv")(modulate(layer_norm(x, self.eps), shift, scale)), 3, self.heads
        )
        return getattr(self, f"{s}_attn_q_norm")(q), getattr(self, f"{s}_attn_k_norm")(k), v

    def forward(self, img, txt, vec, rope, txt_mask):
        img_mod = self.img_mod(vec)
        txt_mod = self.txt_mod(vec)
        img_q, img_k, img_v = self._qkv("img", img, img_mod[0], img_mod[1])
        txt_q, txt_k, txt_v = self._qkv("txt", txt, txt_mod[0], txt_mod[1])
        img_q, img_k = apply_rope(img_q, *rope), apply_rope(img_k, *rope)
        img_attn, txt_attn = joint_attention(img_q, img_k, img_v, txt_q, txt_k, txt_v, txt_mask)
        img = self._residual("img", img, img_attn, img_mod)
        txt = self._residual("txt", txt, txt_attn, txt_mod)
        return img, txt

    def _residual(self, s: str, x, attn, mod):
        shift1, scale1, gate1, shift2, scale2, gate2 = mod
        x = x + gate(getattr(self, f"{s}_attn_proj")(attn.flatten(2)), gate1)
        h = getattr(self, f"{s}_mlp")(modulate(layer_norm(x, self.eps), shift2, scale2))
        return x + gate(h, gate2)


class SingleStreamBlock(nn.Module):
    """One weight set over [video; text], attention and MLP in parallel (`linear1` / `linear2`)."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float, eps: float):
        super().__init__()
        self.heads, self.eps, self.hidden = heads, eps, hidden
        self.mlp_hidden = int(hidden * mlp_ratio)
        head_dim = hidden // heads
        self.linear1 = nn.Linear(hidden, 3 * hidden + self.mlp_hidden)
        self.linear2 = nn.Linear(hidden + self.mlp_hidden, hidden)
        self.q_norm = RMSNorm(head_dim, eps)
        self.k_norm = RMSNorm(head_dim, eps)
        self.modulation = Modulation(hidden, 3)

    def forward(self, x, vec, rope, n_img: int, txt_mask):
        shift, scale, g = self.modulation(vec)
        qkv, mlp = self.linear1(modulate(layer_norm(x, self.eps), shift, scale)).split(
            [3 * self.hidden, self.mlp_hidden], dim=-1
        )
        q, k, v = split_heads(qkv, 3, self.heads)
        q, k = self.q_norm(q), self.k_norm(k)
        img_q, img_k = apply_rope(q[:, :n_img], *rope), apply_rope(k[:, :n_img], *rope)
        img_attn, txt_attn = joint_attention(
            img_q, img_k, v[:, :n_img], q[:, n_img:], k[:, n_img:], v[:, n_img:], txt_mask
        )
        attn = torch.cat([img_attn, txt_attn], dim=1).flatten(2)
        out = self.linear2(torch.cat([attn, nn.functional.gelu(mlp, approximate="tanh")], dim=-1))
        return x + gate(out, g)


class FinalLayer(nn.Module):
    """adaLN (shift, scale — the original order; diffusers stores scale first) + linear."""

    def __init__(self, hidden: int, out_dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.linear = nn.Linear(hidden, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(vec).chunk(2, dim=-1)
        return self.linear(modulate(layer_norm(x, self.eps), shift, scale))
