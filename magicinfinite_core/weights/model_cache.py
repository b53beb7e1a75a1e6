"""A small per-process cache of loaded models, so a batch of jobs on one model loads it once.

Why a cache of our own and not ComfyUI's: the headless runner gives every job a fresh executor (a
job must not see another job's node outputs), and a Ray worker outlives many jobs; both would reload
the model for every job. The key is what makes a loaded model the same: the resolved path, every
file's size and mtime (a file replaced on disk is loaded again), and the load options (distilled,
dtype, device). Capacity 0, the default, caches nothing — in a ComfyUI server ComfyUI's own cache
already keeps an unchanged loader's output; the batch runner turns this cache on
(``MAGICINFINITE_MODEL_CACHE=N`` does so for any process). ``loads`` and ``hits`` count misses and
reuses, so tests and the runner's summary can say what was reloaded without timing anything.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
ENV_CAPACITY = "MAGICINFINITE_MODEL_CACHE"
CacheKey = tuple[Any, ...]


def file_stats(path: str | os.PathLike[str]) -> tuple[tuple[str, int, int], ...]:
    """``(relative name, size, mtime_ns)`` of a file, or of every file under a folder (sorted); a shard
    index (``*.index.json``) stands for the files beside it."""
    p = Path(path)
    if p.is_file() and p.name.endswith(".index.json"):
        return ((p.name, p.stat().st_size, p.stat().st_mtime_ns),) + tuple(
            (f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(p.parent.iterdir()) if f.is_file()
        )
    if p.is_file():
        st = p.stat()
        return ((p.name, st.st_size, st.st_mtime_ns),)
    if not p.is_dir():
        raise FileNotFoundError(f"no model file or folder at {p}")
    out = []
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        st = f.stat()
        out.append((f.relative_to(p).as_posix(), st.st_size, st.st_mtime_ns))
    return tuple(out)


def cache_key(kind: str, path: str | os.PathLike[str], **options: Any) -> CacheKey:
    """What identifies a loaded model: kind, resolved path, file sizes/mtimes, load options."""
    resolved = Path(path).resolve()
    return (kind, str(resolved), file_stats(resolved), tuple(sorted((k, str(v)) for k, v in options.items())))


class ModelCache:
    """Least-recently-used models, at most ``capacity`` of them (0: load every time, keep nothing)."""

    def __init__(self, capacity: int = 0) -> None:
        self._items: OrderedDict[CacheKey, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.capacity = 0
        self.loads = 0  # calls that ran the loader
        self.hits = 0  # calls answered from the cache
        self.set_capacity(capacity)

    def set_capacity(self, capacity: int) -> None:
        """Change how many models are kept; extra ones are dropped (oldest first)."""
        if int(capacity) < 0:
            raise ValueError(f"model cache capacity must be >= 0, got {capacity}")
        with self._lock:
            self.capacity = int(capacity)
            self._trim()

    def get(self, kind: str, path: str | os.PathLike[str], loader: Callable[[], T], **options: Any) -> T:
        """The model loaded from ``path`` with ``options``; ``loader()`` runs only on a miss."""
        key = cache_key(kind, path, **options)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            # A different version of the same model (files changed, other options) is never reused.
            self.loads += 1
        value = loader()
        with self._lock:
            if self.capacity > 0:
                self._items[key] = value
                self._items.move_to_end(key)
                self._trim()
        return value

    def stats(self) -> dict[str, int]:
        """``{"loads", "hits", "cached", "capacity"}`` (for summaries and tests)."""
        with self._lock:
            return {"loads": self.loads, "hits": self.hits, "cached": len(self._items), "capacity": self.capacity}

    def clear(self) -> None:
        """Drop every cached model and reset the counters."""
        with self._lock:
            self._items.clear()
            self.loads = self.hits = 0

    def _trim(self) -> None:
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)


def _env_capacity() -> int:
    raw = os.environ.get(ENV_CAPACITY, "").strip()
    if not raw:
        return 0
    try:
        return max(0, int(raw))
    except ValueError:
        raise ValueError(f"{ENV_CAPACITY}={raw!r} must be a whole number of models to keep (0: off)") from None


_SHARED: ModelCache | None = None


def model_cache() -> ModelCache:
    """This process's cache (the loader nodes, the batch runner and Ray workers all use it)."""
    global _SHARED
    if _SHARED is None:
        _SHARED = ModelCache(_env_capacity())
    return _SHARED
