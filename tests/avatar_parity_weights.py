"""Weights of the Avatar parity fixture, derived from a seed instead of stored (the fixture stays small).

Both sides use this: scripts/avatar_parity_fixture.py fills the reference modules with it, and
tests/test_avatar_parity.py fills ours. Every parameter is random, including those the reference
initialises to zero (`to_out`, the final layer, the modulations): with zeros a comparison would pass
trivially.

Rule, per parameter name (sorted order does not matter: each name has its own generator):
  r = torch.randn(shape, generator=Generator().manual_seed(seed * 1_000_003 + crc32(name)))
  matrices / conv kernels: r / sqrt(fan_in); norm weights: 1 + 0.1 r; norm biases: 0.1 r;
  other vectors (biases): 0.02 r.
"""

from __future__ import annotations

import math
import zlib

import torch


def derived_tensor(name: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    r = torch.randn(shape, generator=g, dtype=torch.float32)
    if len(shape) >= 2:
        return r / math.sqrt(math.prod(shape[1:]))
    leaf = name.rsplit(".", 2)
    if "norm" in leaf[-2] if len(leaf) > 1 else False:
        return 1 + 0.1 * r if name.endswith("weight") else 0.1 * r
    return 0.02 * r


@torch.no_grad()
def fill_derived(module: torch.nn.Module, seed: int, names: set[str] | None = None) -> None:
    """Overwrite every parameter of `module` (or only `names`) with its derived value, in place."""
    for name, p in module.named_parameters():
        if names is None or name in names:
            p.copy_(derived_tensor(name, tuple(p.shape), seed))
