"""Name maps between HunyuanVideo's original state-dict keys (ours) and diffusers' layout.

Fused tensors are split or joined (qkv, single-block linear1) and the final adaLN halves are
swapped: the original stores (shift, scale), diffusers' AdaLayerNormContinuous (scale, shift).
"""

from __future__ import annotations

import re

import torch

_RENAMES_DOUBLE = {
    "img_mod.linear": "norm1.linear",
    "txt_mod.linear": "norm1_context.linear",
    "img_attn_q_norm": "attn.norm_q",
    "img_attn_k_norm": "attn.norm_k",
    "img_attn_proj": "attn.to_out.0",
    "img_mlp.fc1": "ff.net.0.proj",
    "img_mlp.fc2": "ff.net.2",
    "txt_attn_q_norm": "attn.norm_added_q",
    "txt_attn_k_norm": "attn.norm_added_k",
    "txt_attn_proj": "attn.to_add_out",
    "txt_mlp.fc1": "ff_context.net.0.proj",
    "txt_mlp.fc2": "ff_context.net.2",
}
_RENAMES_SINGLE = {
    "linear2": "proj_out",
    "q_norm": "attn.norm_q",
    "k_norm": "attn.norm_k",
    "modulation.linear": "norm.linear",
}
_RENAMES_REFINER = {
    "norm1": "norm1",
    "norm2": "norm2",
    "self_attn_proj": "attn.to_out.0",
    "mlp.fc1": "ff.net.0.proj",
    "mlp.fc2": "ff.net.2",
    "adaLN_modulation.1": "norm_out.linear",
}
_RENAMES_TOP = {
    "img_in.proj": "x_embedder.proj",
    "txt_in.input_embedder": "context_embedder.proj_in",
    "txt_in.t_embedder.mlp.0": "context_embedder.time_text_embed.timestep_embedder.linear_1",
    "txt_in.t_embedder.mlp.2": "context_embedder.time_text_embed.timestep_embedder.linear_2",
    "txt_in.c_embedder.linear_1": "context_embedder.time_text_embed.text_embedder.linear_1",
    "txt_in.c_embedder.linear_2": "context_embedder.time_text_embed.text_embedder.linear_2",
    "time_in.mlp.0": "time_text_embed.timestep_embedder.linear_1",
    "time_in.mlp.2": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.mlp.0": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.mlp.2": "time_text_embed.guidance_embedder.linear_2",
    "final_layer.linear": "proj_out",
}
_FINAL_ADALN = "final_layer.adaLN_modulation.1"


def _swap_halves(t: torch.Tensor) -> torch.Tensor:
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def original_to_diffusers(sd: dict[str, torch.Tensor], mlp_ratio: float = 4.0) -> dict[str, torch.Tensor]:
    """Backbone keys only; unknown keys (our audio layers, image_in) raise so nothing is silently lost."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        stem, _, leaf = key.rpartition(".")
        if stem in _RENAMES_TOP:
            out[f"{_RENAMES_TOP[stem]}.{leaf}"] = value
        elif stem == _FINAL_ADALN:
            out[f"norm_out.linear.{leaf}"] = _swap_halves(value)
        elif m := re.fullmatch(r"double_blocks\.(\d+)\.(.+)", stem):
            n, rest = m.groups()
            base = f"transformer_blocks.{n}"
            if rest in ("img_attn_qkv", "txt_attn_qkv"):
                names = (
                    ("to_q", "to_k", "to_v")
                    if rest.startswith("img")
                    else ("add_q_proj", "add_k_proj", "add_v_proj")
                )
                for name, part in zip(names, value.chunk(3, dim=0), strict=True):
                    out[f"{base}.attn.{name}.{leaf}"] = part
            else:
                out[f"{base}.{_RENAMES_DOUBLE[rest]}.{leaf}"] = value
        elif m := re.fullmatch(r"single_blocks\.(\d+)\.(.+)", stem):
            n, rest = m.groups()
            base = f"single_transformer_blocks.{n}"
            if rest == "linear1":
                hidden = value.shape[-1] if leaf == "weight" else int(value.shape[0] / (3 + mlp_ratio))
                q, k, v, mlp = value.split([hidden, hidden, hidden, value.shape[0] - 3 * hidden], dim=0)
                for name, part in zip(
                    ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), (q, k, v, mlp), strict=True
                ):
                    out[f"{base}.{name}.{leaf}"] = part
            else:
                out[f"{base}.{_RENAMES_SINGLE[rest]}.{leaf}"] = value
        elif m := re.fullmatch(r"txt_in\.individual_token_refiner\.blocks\.(\d+)\.(.+)", stem):
            n, rest = m.groups()
            base = f"context_embedder.token_refiner.refiner_blocks.{n}"
            if rest == "self_attn_qkv":
                for name, part in zip(("to_q", "to_k", "to_v"), value.chunk(3, dim=0), strict=True):
                    out[f"{base}.attn.{name}.{leaf}"] = part
            else:
                out[f"{base}.{_RENAMES_REFINER[rest]}.{leaf}"] = value
        else:
            raise KeyError(f"no diffusers name for key {key!r}")
    return out


def diffusers_to_original(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `original_to_diffusers` (exact: only splits, joins and renames)."""
    inv_top = {v: k for k, v in _RENAMES_TOP.items()}
    inv_double = {v: k for k, v in _RENAMES_DOUBLE.items()}
    inv_single = {v: k for k, v in _RENAMES_SINGLE.items()}
    inv_refiner = {v: k for k, v in _RENAMES_REFINER.items()}
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        stem, _, leaf = key.rpartition(".")
        if stem in inv_top:
            out[f"{inv_top[stem]}.{leaf}"] = value
        elif stem == "norm_out.linear":
            out[f"{_FINAL_ADALN}.{leaf}"] = _swap_halves(value)
        elif m := re.fullmatch(r"transformer_blocks\.(\d+)\.(.+)", stem):
            n, rest = m.groups()
            if m2 := re.fullmatch(r"attn\.(to_q|to_k|to_v|add_q_proj|add_k_proj|add_v_proj)", rest):
                stream = "img" if m2.group(1).startswith("to_") else "txt"
                fused.setdefault(f"double_blocks.{n}.{stream}_attn_qkv.{leaf}", {})[m2.group(1)] = value
            else:
                out[f"double_blocks.{n}.{inv_double[rest]}.{leaf}"] = value
        elif m := re.fullmatch(r"single_transformer_blocks\.(\d+)\.(.+)", stem):
            n, rest = m.groups()
            if rest in ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"):
                fused.setdefault(f"single_blocks.{n}.linear1.{leaf}", {})[rest] = value
            else:
                out[f"single_blocks.{n}.{inv_single[rest]}.{leaf}"] = value
        elif m := re.fullmatch(r"context_embedder\.token_refiner\.refiner_blocks\.(\d+)\.(.+)", stem):
            n, rest = m.groups()
            if rest in ("attn.to_q", "attn.to_k", "attn.to_v"):
                fused.setdefault(f"txt_in.individual_token_refiner.blocks.{n}.self_attn_qkv.{leaf}", {})[
                    rest
                ] = value
            else:
                out[f"txt_in.individual_token_refiner.blocks.{n}.{inv_refiner[rest]}.{leaf}"] = value
        else:
            raise KeyError(f"no original name for diffusers key {key!r}")
    orders = (
        ("to_q", "to_k", "to_v"),
        ("add_q_proj", "add_k_proj", "add_v_proj"),
        ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
        ("attn.to_q", "attn.to_k", "attn.to_v"),
    )
    for key, parts in fused.items():
        order = next(o for o in orders if set(o) == set(parts))
        out[key] = torch.cat([parts[name] for name in order], dim=0)
    return out
