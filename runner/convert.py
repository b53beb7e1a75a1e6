"""`magicinfinite convert IN.pt OUT.safetensors`: the one place a pickled checkpoint is ever read.

Why: HunyuanVideo-Avatar publishes `mp_rank_00_model_states.pt` (and its fp8 file and scale map),
pickles under "module". The loaders and nodes never unpickle user files; this command reads the file
once with torch's restricted loader (`weights_only=True`: tensors and plain containers only, no code
runs) and writes safetensors, which every loader then reads.
"""

from __future__ import annotations

from pathlib import Path

import torch

from magicinfinite_core.errors import CheckpointError

STATE_KEYS = ("module", "state_dict", "model")  # where training frameworks nest the weights


def read_pt_weights(src: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .pt checkpoint via `torch.load(weights_only=True)` (memory-mapped when possible)."""
    if not src.is_file():
        raise CheckpointError(f"{src}: no such file")
    try:
        try:
            obj = torch.load(src, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:  # legacy (non-zip) pickles cannot be memory-mapped
            if "mmap" not in str(e):
                raise
            obj = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure of the safe loader ends here
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{src}: torch's safe loader (weights_only) cannot read it ({first}); it is damaged or holds "
            "objects other than tensors. Download the original checkpoint again."
        ) from None
    for key in STATE_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{src}: holds no tensor dictionary (found {type(obj).__name__})")
    bad = next((k for k, v in obj.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise CheckpointError(f"{src}: entry {bad!r} is not a tensor ({type(obj[bad]).__name__}); not a weights file")
    return obj


def convert(src: str | Path, dst: str | Path) -> int:
    """Write `src`'s tensors to the safetensors file `dst`; returns how many tensors were written."""
    from safetensors.torch import save_file

    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise CheckpointError(f"{dst}: the output must end in .safetensors")
    sd = read_pt_weights(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp), metadata={"converted_from": src.name})
    tmp.replace(dst)
    return len(sd)
