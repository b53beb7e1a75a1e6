"""A persistent group of N sequence-parallel worker processes that serves DiT forwards.

Why: a ComfyUI process (or any single-process caller) must stay single-process, yet USP needs N
ranks that each hold the model and meet in collectives. The group spawns N processes once
(torch.multiprocessing, spawn), each initialises torch.distributed (gloo on CPU, NCCL on CUDA),
loads the model from a `ModelSpec` and wraps it in `SequenceParallelDiT`. `predict(**forward_kwargs)`
sends the same inputs to every rank and returns rank 0's velocity, so the group is a drop-in for
the DiT forward callable the sampler's predictor calls.

Also here: `init_process`, the per-process setup shared by the workers and by torchrun launches.
"""

from __future__ import annotations

import itertools
import os
import queue
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from magicinfinite_core.config import DiTConfig
from magicinfinite_core.distributed.parallel_dit import SequenceParallelDiT
from magicinfinite_core.distributed.spawn_env import clean_spawn_environment
from magicinfinite_core.distributed.usp import (
    ParallelGroups,
    check_layout,
    init_xfuser_groups,
    make_backend,
    new_groups,
)
from magicinfinite_core.models.dit import MagicInfiniteDiT
from magicinfinite_core.weights.transformer_layouts import load_transformer

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelSpec:
    """How each worker builds its copy of the DiT (picklable: workers are spawned, not forked).

    `checkpoint`: any file `load_transformer` reads (config from our metadata or, e.g. for a
    HunyuanVideo-Avatar file, from its shapes), or with `config` a published backbone file. Without a checkpoint: `config` initialised from `seed` (benchmarks, tests); with
    `init_std` every parameter is drawn from N(0, init_std) so zero-initialised layers (the audio
    output projections) are exercised too.
    """

    checkpoint: str | None = None
    config: DiTConfig | None = None
    seed: int = 0
    init_std: float | None = None
    dtype: str = "float32"

    def build(self, device: torch.device | str = "cpu") -> MagicInfiniteDiT:
        dtype = _DTYPES[self.dtype]
        if self.checkpoint is not None:

            return load_transformer(self.checkpoint, self.config, device=device, dtype=dtype)
        if self.config is None:
            raise ValueError("a ModelSpec needs a checkpoint or a config")
        gen = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = MagicInfiniteDiT(self.config)
        if self.init_std is not None:
            with torch.no_grad():
                for p in model.parameters():
                    p.copy_(torch.randn(p.shape, generator=gen) * self.init_std)
        return model.to(device=device, dtype=dtype).eval()


def _spec_config(spec: ModelSpec) -> DiTConfig:
    """The model config without loading tensors: the given one, else what `load_transformer` will settle
    on from the file's headers (our metadata, or the shapes, e.g. a HunyuanVideo-Avatar file)."""
    if spec.config is not None:
        return spec.config
    if spec.checkpoint is None:
        raise ValueError("a ModelSpec needs a checkpoint or a config")
    from magicinfinite_core.weights.transformer_layouts import plan_load

    return plan_load(spec.checkpoint)[0]


def resolve(world: int, ulysses: int | None, ring: int, cfg: int, backend: str, attention: str,
            heads: int | None = None) -> tuple[int, str, str]:
    """Fill in defaults and refuse layouts that cannot work, before anything is spawned."""
    if ulysses is None:
        if world % (ring * cfg):
            raise ValueError(f"{world} processes cannot be split into ring {ring} x cfg {cfg} groups")
        ulysses = world // (ring * cfg)
    check_layout(world, ulysses, ring, cfg, heads)
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() and torch.cuda.device_count() >= world else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"unknown torch.distributed backend {backend!r}; use 'gloo' or 'nccl'")
    if attention == "auto":
        attention = "xfuser" if backend == "nccl" else "yunchang"
    if attention == "yunchang" and ring != 1:
        raise ValueError("ring > 1 needs attention='xfuser' on CUDA (yunchang's ring is wrong on CPU)")
    if attention == "xfuser" and backend != "nccl":
        raise ValueError("the xfuser backend runs on CUDA with NCCL only; use attention='yunchang' on CPU")
    return ulysses, backend, attention


def init_process(
    *, rank: int, world: int, ulysses: int, ring: int, cfg: int, backend: str, attention: str,
    init_method: str = "env://", local_rank: int | None = None,
) -> tuple[ParallelGroups, torch.device]:
    """torch.distributed + SP/CFG groups for this process; returns the groups and its device."""
    if backend == "nccl":
        device = torch.device("cuda", rank if local_rank is None else local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if attention == "xfuser":
        groups = init_xfuser_groups(ulysses, ring, cfg, rank=rank, world=world, init_method=init_method)
    else:
        if not dist.is_initialized():
            dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world)
        groups = new_groups(ulysses, ring, cfg)
    return groups, device


def _to_device(kwargs: dict[str, Any], device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Float model inputs in the model's dtype; timesteps, guidance and masks as they came."""
    cast = {"x", "txt", "pooled", "image_tokens", "audio", "ref_latent"}
    out = {}
    for k, v in kwargs.items():
        if torch.is_tensor(v):
            v = v.to(device, dtype) if k in cast and v.is_floating_point() else v.to(device)
        out[k] = v
    return out


def _worker_main(rank: int, world: int, init_method: str, spec: ModelSpec, layout: dict[str, Any],
                 threads: int, requests: Any, results: Any) -> None:
    """One rank: set up, load, then serve forwards until told to stop. Rank 0 returns the output."""
    try:
        torch.set_num_threads(threads)
        groups, device = init_process(rank=rank, world=world, init_method=init_method, **layout)
        model = spec.build(device)
        sp_model = SequenceParallelDiT(model, groups, make_backend(layout["attention"], groups))
        dtype = next(model.parameters()).dtype
        results.put(("ready", rank, None))
    except Exception:  # noqa: BLE001 - reported to the parent, which raises it
        results.put(("error", rank, traceback.format_exc()))
        return
    parent = os.getppid()
    while True:
        try:
            msg = requests.get(timeout=2.0)
        except queue.Empty:
            if os.getppid() != parent:  # the parent died without close() (e.g. ComfyUI was killed)
                break
            continue
        if msg[0] == "stop":
            break
        kind, rid, payload = msg
        try:
            if kind == "layout":  # new SP/CFG groups over the same world; the model stays loaded
                layout = {**layout, **payload}
                groups = new_groups(layout["ulysses"], layout["ring"], layout["cfg"])
                sp_model = SequenceParallelDiT(model, groups, make_backend(layout["attention"], groups))
                out = None
            else:
                with torch.inference_mode():
                    out = sp_model(**_to_device(payload, device, dtype)).float().cpu()
            if rank == 0:
                results.put(("ok", rid, out))
        except Exception:  # noqa: BLE001
            results.put(("error", rank, traceback.format_exc()))
            break
    if dist.is_initialized():
        dist.destroy_process_group()
    # Skip the interpreter's slow teardown of torch (seconds per process on a busy machine) once
    # everything this worker queued has been flushed to the parent.
    results.close()
    results.join_thread()
    os._exit(0)


class SequenceParallelWorkerGroup:
    """N persistent SP ranks behind one `predict` (same keyword arguments as the DiT forward).

    ulysses x ring x cfg must equal n (ulysses defaults to what is left); backend 'auto' picks NCCL
    when n GPUs are present, else gloo; attention 'auto' picks xfuser on NCCL, yunchang on gloo.
    `threads` is torch's intra-op thread count per worker on CPU (default: cores / n).
    """

    def __init__(
        self, n: int, model: ModelSpec, *, ulysses: int | None = None, ring: int = 1, cfg: int = 1,
        backend: str = "auto", attention: str = "auto", threads: int | None = None,
        start_timeout_s: float = 300.0, timeout_s: float = 3600.0,
    ):
        heads = _spec_config(model).num_heads
        ulysses, backend, attention = resolve(n, ulysses, ring, cfg, backend, attention, heads)
        self.n, self.timeout_s, self.heads = n, timeout_s, heads
        self.layout = dict(ulysses=ulysses, ring=ring, cfg=cfg, backend=backend, attention=attention)
        threads = threads or max(1, (os.cpu_count() or 1) // n)
        ctx = mp.get_context("spawn")
        self._tmp = tempfile.mkdtemp(prefix="mi_usp_")  # file rendezvous: no port to collide on
        init_method = f"file://{os.path.join(self._tmp, 'rendezvous')}"
        self._requests = [ctx.Queue() for _ in range(n)]
        self._results = ctx.Queue()
        self._ids = itertools.count()
        self._procs = [
            ctx.Process(
                target=_worker_main,
                args=(r, n, init_method, model, self.layout, threads, self._requests[r], self._results),
                daemon=True,
            )
            for r in range(n)
        ]
        with clean_spawn_environment():  # inside ComfyUI: no re-run of its main.py, no comfy/ on sys.path
            for p in self._procs:
                p.start()
        ready: set[int] = set()
        try:
            while len(ready) < n:
                kind, rank, payload = self._get(start_timeout_s, "start")
                if kind == "error":
                    raise RuntimeError(f"USP worker {rank} failed to start:\n{payload}")
                ready.add(rank)
        except BaseException:
            self.close()
            raise

    def _get(self, timeout: float, what: str) -> tuple:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._results.get(timeout=1.0)
            except queue.Empty:
                dead = [r for r, p in enumerate(self._procs) if not p.is_alive()]
                if dead:
                    raise RuntimeError(f"USP worker(s) {dead} exited during {what}") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"USP worker group: no answer within {timeout:.0f} s ({what})") from None

    def set_layout(self, ulysses: int | None = None, ring: int = 1, cfg: int = 1) -> None:
        """Re-split the same N ranks (e.g. CFG-parallel for the base sampler's 2-3 passes, pure SP
        for the distilled one) without reloading the model. yunchang only: xfuser's parallel state
        is process-global and set once."""
        if self.layout["attention"] != "yunchang":
            raise ValueError("changing the layout of a running group needs attention='yunchang'")
        ulysses, _, _ = resolve(self.n, ulysses, ring, cfg, self.layout["backend"], "yunchang", self.heads)
        new = dict(ulysses=ulysses, ring=ring, cfg=cfg)
        self._ask("layout", new)
        self.layout.update(new)

    def _ask(self, kind: str, payload: Any) -> Any:
        if not self._procs:
            raise RuntimeError("this USP worker group is closed")
        rid = next(self._ids)
        for q in self._requests:
            q.put((kind, rid, payload))
        try:
            while True:
                answer, key, value = self._get(self.timeout_s, kind)
                if answer == "error":
                    raise RuntimeError(f"USP worker {key} failed:\n{value}")
                if answer == "ok" and key == rid:
                    return value
        except BaseException:
            self.close()  # a failed rank leaves the others stuck in a collective
            raise

    def predict(self, x: torch.Tensor, timestep: torch.Tensor, txt: torch.Tensor,
                txt_mask: torch.Tensor | None, pooled: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Velocity for one (possibly CFG-batched) window; CPU float32, the shape of x."""
        payload = dict(x=x, timestep=torch.as_tensor(timestep), txt=txt, txt_mask=txt_mask, pooled=pooled,
                       **kwargs)
        payload = {k: (v.detach().cpu() if torch.is_tensor(v) else v) for k, v in payload.items()}
        return self._ask("predict", payload).clone()

    __call__ = predict

    def close(self) -> None:
        """Stop the workers (politely, then by terminating the processes this group started)."""
        procs, self._procs = self._procs, []
        for q in self._requests[: len(procs)]:
            try:
                q.put(("stop",))
            except Exception:  # noqa: BLE001, S110 - queue already broken: terminate below
                pass
        for p in procs:
            p.join(timeout=10)
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> SequenceParallelWorkerGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; call close() or use `with`
        if getattr(self, "_procs", None):
            self.close()
