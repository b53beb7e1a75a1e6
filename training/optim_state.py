"""Optimizer state as named tensors, so trainer checkpoints stay safetensors (shared by all trainers)."""

from __future__ import annotations

import torch


def optimizer_tensors(opt: torch.optim.Optimizer, names: dict[int, str]) -> dict[str, torch.Tensor]:
    """Per-parameter optimizer state as named tensors `name::key` (safetensors cannot hold pickles)."""
    out: dict[str, torch.Tensor] = {}
    for group in opt.param_groups:
        for p in group["params"]:
            for k, v in opt.state.get(p, {}).items():
                out[f"{names[id(p)]}::{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return out


def load_optimizer_tensors(
    opt: torch.optim.Optimizer, names: dict[int, str], tensors: dict[str, torch.Tensor]
) -> None:
    """Inverse of optimizer_tensors; refuses state for parameters the optimizer does not have."""
    by_param: dict[str, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        name, k = key.split("::", 1)
        by_param.setdefault(name, {})[k] = v
    known = set(names.values())
    if not set(by_param) <= known:
        raise ValueError(f"optimizer state names unknown parameters: {sorted(set(by_param) - known)[:5]}")
    for group in opt.param_groups:
        for p in group["params"]:
            st = by_param.get(names[id(p)])
            if st:  # `step` stays a CPU tensor (torch's AdamW keeps it there unless fused/capturable)
                opt.state[p] = {
                    k: (v.clone() if k == "step" else v.to(p.device, p.dtype)) for k, v in st.items()
                }
