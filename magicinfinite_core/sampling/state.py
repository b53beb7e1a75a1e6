"""Resumable sampler state: latent + step index + generator state + config hash, saved atomically.

One safetensors file is the unit of truth (tensors, and the step index / config hash in its
metadata), written to a temporary name and moved into place with `os.replace`, so a crash leaves
either the previous step's file or the new one, never a torn file. A `state.json` beside it repeats
the metadata for humans and tools; it is written the same way but never trusted on load.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save

from magicinfinite_core.errors import MagicInfiniteError
from magicinfinite_core.output_files import naming_full_disk, write_file_synced

STATE_FILE = "state.safetensors"
STATE_JSON = "state.json"
FORMAT_VERSION = "1"


def config_hash(payload: dict[str, Any]) -> str:
    """Stable hash of everything that shapes the result (canonical JSON, sorted keys)."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=_jsonable)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return hashlib.sha256(obj.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(obj)
    raise TypeError(f"cannot hash {type(obj).__name__} into a config hash")


@dataclass
class SamplerState:
    latent: torch.Tensor  # [C, T, H, W], float32, CPU
    step: int  # steps already completed
    total_steps: int
    generator_state: torch.Tensor  # torch.Generator.get_state() (uint8)
    config_hash: str


def save_state(directory: str | Path, state: SamplerState) -> Path:
    """Write the state atomically; returns the safetensors path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT_VERSION,
        "step": str(state.step),
        "total_steps": str(state.total_steps),
        "config_hash": state.config_hash,
        "latent_shape": json.dumps(list(state.latent.shape)),
    }
    path = directory / STATE_FILE
    tmp = directory / (STATE_FILE + ".tmp")
    blob = save({"latent": state.latent.detach().cpu().contiguous(), "generator_state": state.generator_state.cpu()},
                metadata=meta)
    with naming_full_disk(tmp, tmp):  # a full disk: the previous step's state stays for --resume
        write_file_synced(tmp, blob)
        os.replace(tmp, path)
    jtmp = directory / (STATE_JSON + ".tmp")
    with naming_full_disk(jtmp, jtmp):
        text = json.dumps({k: (json.loads(v) if k == "latent_shape" else v) for k, v in meta.items()}, indent=1)
        write_file_synced(jtmp, text.encode())
        os.replace(jtmp, directory / STATE_JSON)
    return path


def load_state(directory: str | Path, expected_hash: str | None = None) -> SamplerState:
    """Read a saved state; refuses one made with a different configuration."""
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise MagicInfiniteError(f"no sampler state to resume at {path}; run without --resume first")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except Exception as exc:  # a torn or foreign file: say so in one line
        raise MagicInfiniteError(f"sampler state {path} cannot be read ({exc}); delete it and start again") from None
    if meta.get("format") != FORMAT_VERSION:
        raise MagicInfiniteError(f"sampler state {path} has format {meta.get('format')!r}, expected {FORMAT_VERSION}")
    if expected_hash is not None and meta.get("config_hash") != expected_hash:
        raise MagicInfiniteError(
            f"sampler state {path} was made with different inputs or settings "
            f"(hash {meta.get('config_hash')} != {expected_hash}); resume with the same ones or delete it"
        )
    return SamplerState(
        latent=tensors["latent"],
        step=int(meta["step"]),
        total_steps=int(meta["total_steps"]),
        generator_state=tensors["generator_state"],
        config_hash=meta["config_hash"],
    )


def has_state(directory: str | Path | None) -> bool:
    return directory is not None and (Path(directory) / STATE_FILE).is_file()


def clear_state(directory: str | Path) -> None:
    """Remove a finished job's state files (and the folder if it is then empty)."""
    directory = Path(directory)
    for name in (STATE_FILE, STATE_JSON, STATE_FILE + ".tmp", STATE_JSON + ".tmp"):
        (directory / name).unlink(missing_ok=True)
    try:
        directory.rmdir()
    except OSError:
        pass

