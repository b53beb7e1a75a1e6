"""Safetensors save/load with a strict loader that names every key that does not fit.

Never unpickles. Our own files carry their model config as JSON in the safetensors metadata, so a
file alone is enough to rebuild the model it came from.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from magicinfinite_core.errors import CheckpointError
from magicinfinite_core.models.dit import MagicInfiniteDiT

FORMAT_KEY = "magicinfinite_format"
CONFIG_KEY = "config"


def save_state_dict(
    path: str | Path,
    state_dict: dict[str, torch.Tensor],
    *,
    kind: str,
    config: dict | None = None,
    extra: dict[str, str] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Atomic write (tmp + rename) so an interrupted save never leaves a half file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().cpu()
        for k, v in state_dict.items()
    }
    meta = {FORMAT_KEY: kind, **(extra or {})}
    if config is not None:
        meta[CONFIG_KEY] = json.dumps(config)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    with _open(path) as f:
        return dict(f.metadata() or {})


def load_state_dict(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    with _open(path, device) as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def _open(path: str | Path, device: str | torch.device = "cpu"):
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}")
    if path.suffix != ".safetensors":
        raise CheckpointError(
            f"{path.name}: only .safetensors weights are loaded (never pickled .pt/.ckpt/.bin)"
        )
    try:
        return safe_open(str(path), framework="pt", device=str(device))
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt headers
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({e}); re-download or re-export it"
        ) from e


def load_into(
    model: torch.nn.Module,
    state_dict: dict[str, torch.Tensor],
    *,
    allow_missing: Iterable[str] = (),
    source: str = "checkpoint",
) -> None:
    """Copy weights into `model`, refusing any missing, unexpected or misshapen key.

    `allow_missing` lists key prefixes that may be absent and keep their init (e.g. the zero-init
    audio layers when a stage-1 checkpoint starts stage 2).
    """
    allow = tuple(allow_missing)
    own = model.state_dict()
    missing = (
        [k for k in own if k not in state_dict and not k.startswith(allow)]
        if allow
        else [k for k in own if k not in state_dict]
    )
    unexpected = [k for k in state_dict if k not in own]
    misshapen = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in state_dict
        if k in own and state_dict[k].shape != own[k].shape
    ]
    problems = []
    if misshapen:
        problems.append("wrong shape: " + "; ".join(misshapen[:10]) + (" ..." if len(misshapen) > 10 else ""))
    if missing:
        problems.append(
            f"missing {len(missing)} keys: " + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        )
    if unexpected:
        problems.append(
            f"unexpected {len(unexpected)} keys: "
            + ", ".join(unexpected[:10])
            + (" ..." if len(unexpected) > 10 else "")
        )
    if problems:
        raise CheckpointError(f"{source} does not fit the model — " + " | ".join(problems))
    with torch.no_grad():
        for k, v in state_dict.items():
            own[k].copy_(v.to(own[k].dtype))


def save_dit(
    path: str | Path, model: MagicInfiniteDiT, *, dtype: torch.dtype | None = None, extra: dict | None = None
) -> Path:
    return save_state_dict(
        path,
        model.state_dict(),
        kind="magicinfinite-dit",
        config=model.cfg.to_dict(),
        dtype=dtype,
        extra=extra,
    )
