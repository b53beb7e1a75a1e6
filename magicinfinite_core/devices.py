"""Which torch device a run may use, checked before the model is loaded.

Why: ``--device tpu:3`` ended in torch's "Expected one of cpu, cuda, ... device type" traceback and
``--device cuda`` on a machine without a GPU in "Torch not compiled with CUDA enabled" after the model
was loaded; the sampler node already refused both in one line.
"""

from __future__ import annotations

import torch

from magicinfinite_core.errors import MagicInfiniteError


def check_device(name: str | None, option: str = "--device") -> torch.device:
    """The device ``name`` (None: cuda when present, else cpu) if this machine has it; else one clear error."""
    if name is None or str(name).strip() in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(str(name).strip())
    except (RuntimeError, ValueError):
        raise MagicInfiniteError(f"{option} {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise MagicInfiniteError(f"{option} {name!r}: only cpu and cuda devices are supported")
    if not torch.cuda.is_available():
        raise MagicInfiniteError(f"{option} {name!r}: no CUDA GPU is available on this machine; use cpu")
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise MagicInfiniteError(f"{option} {name!r}: this machine has {count} GPU(s), cuda:0..cuda:{count - 1}")
    return dev
