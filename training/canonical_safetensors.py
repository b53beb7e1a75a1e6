"""Safetensors files whose bytes depend only on their tensors and metadata.

Why: the safetensors writer keeps the metadata in a hash map whose order changes from process to
process, so the same cache clip written by two Ray workers differed in its header bytes although
every tensor was equal. The preprocessing caches promise byte-identical files for any number of
workers (compared by hash in the tests), so their header is rewritten as JSON with sorted keys.
Readers see an ordinary safetensors file (the data offsets are relative to the end of the header).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch
from safetensors.torch import save

from magicinfinite_core.weights.checkpoints import FORMAT_KEY


def canonical_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The safetensors serialisation with a sorted, compact, space-padded (8-byte aligned) header."""
    raw = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + raw[8 + n:]


def save_canonical(path: str | Path, tensors: dict[str, torch.Tensor], *, kind: str,
                   extra: dict[str, str] | None = None) -> Path:
    """Like `checkpoints.save_state_dict` (same format key, atomic tmp + rename), byte-stable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(canonical_bytes(tensors, {FORMAT_KEY: kind, **(extra or {})}))
    os.replace(tmp, path)
    return path
