"""Starting or joining Ray, shared by the ingestion pipeline, the preprocessing caches and the batch runner.

Why one place: every Ray user in the project must behave the same way — join the cluster named by
``address`` or ``RAY_ADDRESS``, else start Ray locally on this machine — and must fail with the same
actionable line when Ray is not installed. Ray is imported lazily so the core never needs it.
"""

from __future__ import annotations

import os
from typing import Any

from magicinfinite_core.errors import MagicInfiniteError

RAY_INSTALL_HINT = 'pip install "comfyui-magicinfinite[ray]"  (or: pip install "ray[data]>=2.40")'


class RayUnavailableError(MagicInfiniteError):
    """Ray was asked for but is not installed."""


def require_ray() -> Any:
    """The ``ray`` module, or an error that says how to install it."""
    try:
        import ray
    except ImportError as e:
        raise RayUnavailableError(f"this needs Ray, which is not installed: {RAY_INSTALL_HINT}") from e
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool = True) -> Any:
    """Join ``address`` (or ``$RAY_ADDRESS``) if given, else start a local Ray with ``num_cpus`` CPUs.

    Idempotent: a process that already called it gets the running Ray back. ``num_cpus`` only applies
    to a local start (a cluster reports its own resources).
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"ignore_reinit_error": True}
    if quiet:
        kwargs.update(log_to_driver=False, logging_level="ERROR", include_dashboard=False)
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)
    return ray
