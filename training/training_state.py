"""Training state as named tensors (optimizer moments, RNG states, step): safetensors, shared by all trainers.

One home for it, so the trainers import this module and never each other.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from magicinfinite_core.weights.checkpoints import load_state_dict, save_state_dict


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


def rng_tensors(generators: dict[str, torch.Generator]) -> dict[str, torch.Tensor]:
    return {f"rng::{k}": g.get_state() for k, g in generators.items()}


def load_rng_tensors(generators: dict[str, torch.Generator], tensors: dict[str, torch.Tensor]) -> None:
    for k, g in generators.items():
        key = f"rng::{k}"
        if key in tensors:
            g.set_state(tensors[key].to(torch.uint8))


def save_training_state(
    path: str | Path,
    opt: torch.optim.Optimizer,
    names: dict[int, str],
    generators: dict[str, torch.Generator],
    step: int,
    extra: dict | None = None,
) -> Path:
    tensors = {**optimizer_tensors(opt, names), **rng_tensors(generators)}
    tensors["step"] = torch.tensor(step, dtype=torch.int64)
    return save_state_dict(
        path, tensors, kind="magicinfinite-train-state", extra={"info": json.dumps(extra or {})}
    )


def load_training_state(
    path: str | Path, opt: torch.optim.Optimizer, names: dict[int, str], generators: dict[str, torch.Generator]
) -> int:
    tensors = load_state_dict(path)
    load_optimizer_tensors(opt, names, {k: v for k, v in tensors.items() if "::" in k and not k.startswith("rng::")})
    load_rng_tensors(generators, tensors)
    return int(tensors["step"])
