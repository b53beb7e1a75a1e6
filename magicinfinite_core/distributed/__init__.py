"""Multi-GPU (USP) inference: sequence-parallel DiT forward, attention backends, worker group.

Two ways in:
  * a persistent `SequenceParallelWorkerGroup(n, ModelSpec(...))` whose `predict(**forward_kwargs)`
    replaces the DiT forward in a single-process caller (ComfyUI, tests);
  * `torchrun --nproc-per-node N -m runner.cli generate ... --sp-ulysses U --sp-ring R`:
    every rank runs the same pipeline (same seed, so the same windows) and the CLI wraps its model
    with `wrap_for_torchrun`; only `is_main_process()` writes files.

The CLI adapter is the two functions at the bottom of this file, kept apart from the CLI itself.
"""

from __future__ import annotations

import argparse
import os

from torch import nn

from magicinfinite_core.distributed.parallel_dit import SequenceParallelDiT
from magicinfinite_core.distributed.usp import (
    ParallelGroups,
    ReplicatedTailAttention,
    ShardPlan,
    USPUnavailableError,
    XFuserUSPAttention,
    YunchangUlyssesAttention,
    gather_tokens,
    make_backend,
)
from magicinfinite_core.distributed.worker_group import (
    ModelSpec,
    SequenceParallelWorkerGroup,
    init_process,
    resolve,
)

__all__ = [
    "ModelSpec",
    "ParallelGroups",
    "ReplicatedTailAttention",
    "SequenceParallelDiT",
    "SequenceParallelWorkerGroup",
    "ShardPlan",
    "USPUnavailableError",
    "XFuserUSPAttention",
    "YunchangUlyssesAttention",
    "add_sp_arguments",
    "gather_tokens",
    "is_main_process",
    "make_backend",
    "wrap_for_torchrun",
]


def add_sp_arguments(parser: argparse.ArgumentParser) -> None:
    """--sp-ulysses / --sp-ring / --sp-cfg / --sp-attention for a torchrun launch."""
    g = parser.add_argument_group("multi-GPU (USP, launch with torchrun)")
    g.add_argument("--sp-ulysses", type=int, default=None,
                   help="Ulysses degree (default: processes / (ring x cfg))")
    g.add_argument("--sp-ring", type=int, default=1, help="ring-attention degree (xfuser only)")
    g.add_argument("--sp-cfg", type=int, default=1, help="split the CFG passes over this many groups")
    g.add_argument("--sp-attention", choices=("auto", "xfuser", "yunchang"), default="auto",
                   help="auto: xfuser on CUDA/NCCL, yunchang Ulysses on CPU/gloo")


def wrap_for_torchrun(model: nn.Module, *, ulysses: int | None = None, ring: int = 1, cfg: int = 1,
                      attention: str = "auto") -> nn.Module:
    """The model as is when not under torchrun with >1 process (and no forced backend), else its
    SP wrapper on this rank's device. Every rank must then call it with the same inputs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 and attention != "xfuser" and (ulysses or 1) * ring * cfg == 1:
        return model
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    ulysses, backend, attention = resolve(world, ulysses, ring, cfg, "auto", attention,
                                          model.cfg.num_heads)
    if world == 1 and "MASTER_ADDR" not in os.environ:  # a plain `python -m` run asking for xfuser
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29531")
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
    groups, device = init_process(rank=rank, world=world, ulysses=ulysses, ring=ring, cfg=cfg,
                                  backend=backend, attention=attention, local_rank=local_rank)
    model = model.to(device)
    return SequenceParallelDiT(model, groups, make_backend(attention, groups))


def is_main_process() -> bool:
    """Rank 0 (or no torch.distributed at all): the one process that writes outputs."""
    return int(os.environ.get("RANK", "0")) == 0
