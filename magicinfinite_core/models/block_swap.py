"""Block swap: keep most DiT blocks in (pinned) CPU memory and stream each in just before it runs.

Why: the 13B DiT is 26 GB in bf16; on a 24-48 GB card the weights alone do not fit next to the
activations of a 33-frame window. With block swap only `resident` blocks live on the device, and at
most `1 + prefetch` of the others: while block i computes on the default stream, block i+1's weights
are copied host->device on a side stream, so the copy hides behind compute whenever a block's compute
time exceeds its transfer time (13B at 544 px: a double block is 0.68 GB, 27 ms at ~25 GB/s, against
~8 ms of compute; keep as many blocks resident as fit).

How: forward pre-/post-hooks on each swapped module (no change to the model code). A swapped-out
module holds zero-size placeholder parameters, so a block that somehow ran without being loaded fails
loudly instead of computing with stale weights. The unit order is `execution_order(model)`, which
mirrors `MagicInfiniteDiT.run_blocks`; a unit that arrives out of order is loaded synchronously
(counted in `stats["misses"]`), so the output never depends on the order being right, only the speed.

Inference only (no autograd through swapped weights); do not combine with torch.compile of the same
blocks (the hooks would be traced). On the CPU the "device" copy is a fresh tensor each time, which
exercises the whole mechanism; tests check the output is bit-identical to the unswapped model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def execution_order(model: nn.Module) -> list[nn.Module]:
    """The DiT's big modules in the order `run_blocks` calls them (double, its audio layer, ...).

    HunyuanVideo-Avatar's adapters follow the double blocks they sit after (`AvatarConfig.adapter_after_double`).
    """
    order: list[nn.Module] = []
    audio_double = getattr(model, "audio_double_blocks", None)
    audio_single = getattr(model, "audio_single_blocks", None)
    adapters = getattr(model, "audio_adapter_blocks", None)
    adapter_of = getattr(model, "_adapter_of", {})
    for i, block in enumerate(model.double_blocks):
        order.append(block)
        if audio_double is not None:
            order.append(audio_double[i])
        if adapters is not None and i in adapter_of:
            order.append(adapters[adapter_of[i]])
    every = model.cfg.audio.single_block_every if model.cfg.audio is not None else 0
    for i, block in enumerate(model.single_blocks):
        order.append(block)
        if audio_single is not None and (i + 1) % every == 0:
            order.append(audio_single[i // every])
    return order


class BlockSwap:
    """Attach to a model whose swapped blocks are on the CPU; everything else is moved to `device`.

    resident: how many units (in execution order) stay on the device for good; prefetch: how many
    units ahead are copied while one computes (1 is enough when compute >= transfer per block).
    """

    def __init__(self, model: nn.Module, device: torch.device | str, *, resident: int = 0, prefetch: int = 1,
                 pin_memory: bool | None = None) -> None:
        self.device = torch.device(device)
        self.model = model
        order = execution_order(model)
        self.units = order[resident:]
        self.prefetch = max(0, int(prefetch))
        pin = self.device.type == "cuda" if pin_memory is None else pin_memory
        swapped = {id(m) for m in self.units}
        self._store: list[dict[str, torch.Tensor]] = []
        for unit in self.units:  # host copies, then zero-size placeholders in the module
            store = {}
            for name, t in _tensors(unit):
                host = t.detach().to("cpu")
                store[name] = host.pin_memory() if pin else host.clone()
            self._store.append(store)
        _move_except(model, swapped, self.device)
        for unit in self.units:
            _assign(unit, {name: _placeholder(t) for name, t in _tensors(unit)})
        self._index = {id(m): i for i, m in enumerate(self.units)}
        self._loaded: dict[int, tuple[dict[str, torch.Tensor], Any]] = {}  # unit -> (device tensors, event)
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self.stats = {"loads": 0, "misses": 0, "bytes": 0}
        self._handles = []
        for unit in self.units:
            self._handles.append(unit.register_forward_pre_hook(self._before))
            self._handles.append(unit.register_forward_hook(self._after))

    @property
    def swapped_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for s in self._store for t in s.values())

    def _issue(self, i: int) -> None:
        """Start copying unit i to the device (async on CUDA); no-op when already in flight."""
        if i in self._loaded:
            return
        src = self._store[i]
        if self._stream is not None:
            with torch.cuda.stream(self._stream):
                dev = {k: v.to(self.device, non_blocking=True) for k, v in src.items()}
                event = torch.cuda.Event()
                event.record(self._stream)
        else:
            dev = {k: torch.empty_like(v, device=self.device).copy_(v) for k, v in src.items()}
            event = None
        self._loaded[i] = (dev, event)
        self.stats["loads"] += 1
        self.stats["bytes"] += sum(v.numel() * v.element_size() for v in src.values())

    def _before(self, module: nn.Module, args: Any) -> None:
        i = self._index[id(module)]
        if i not in self._loaded:
            self.stats["misses"] += 1
            self._issue(i)
        dev, event = self._loaded[i]
        if event is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)
            for t in dev.values():  # the allocator must not hand these blocks to the copy stream early
                t.record_stream(current)
        _assign(module, dev)
        n = len(self.units)
        for j in range(1, self.prefetch + 1):  # overlap the next copies with this unit's compute
            if n > 1:
                self._issue((i + j) % n)

    def _after(self, module: nn.Module, args: Any, output: Any) -> None:
        i = self._index[id(module)]
        _assign(module, {name: _placeholder(t) for name, t in _tensors(module)})
        self._loaded.pop(i, None)

    def remove(self) -> None:
        """Detach the hooks and put every swapped unit back on the device, as it was before."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._loaded.clear()
        for unit, store in zip(self.units, self._store, strict=True):
            _assign(unit, {k: v.to(self.device) for k, v in store.items()})
        self._store.clear()


def _tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return list(module.named_parameters()) + list(module.named_buffers())


def _placeholder(t: torch.Tensor) -> torch.Tensor:
    return torch.empty(0, dtype=t.dtype, device=t.device)


def _assign(module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Point each parameter / buffer at a new tensor without creating new Parameter objects."""
    for name, value in tensors.items():
        owner_name, _, attr = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        if attr in owner._parameters:
            owner._parameters[attr].data = value
        else:
            owner._buffers[attr] = value


def _move_except(model: nn.Module, skip: set[int], device: torch.device) -> None:
    """model.to(device) for every module not in `skip` (by id), recursing around the skipped ones."""
    for child in model.children():
        if id(child) in skip:
            continue
        if any(id(m) in skip for m in child.modules()):
            _move_except(child, skip, device)
        else:
            child.to(device)
    for p in model._parameters.values():
        if p is not None:
            p.data = p.data.to(device)
    for name, b in list(model._buffers.items()):
        if b is not None:
            model._buffers[name] = b.to(device)
