"""Cancellation inside long loops: a caller-given check that raises to stop the work in flight.

Why: the progress callback (`sampling.sampler.Progress`) is called once per sampler window and once
per decode chunk, and a node raises ComfyUI's interrupt from it. At a large size one chunk is minutes
of work (a 4096x4096 decode chunk muxes 32 frames: an interrupt took 233 s to land), and one window
of a huge DiT is one long forward. The loops inside those units (DiT blocks, decoder blocks and
frame batches, frames muxed, portrait strips, face-detection tiles) call `check_cancelled()`, which
runs the check the caller installed with `cancel_check` - in ComfyUI the same
`throw_exception_if_processing_interrupted` the progress callback calls. The core stays free of
ComfyUI: it only holds a callable. Without a check installed (training, plain library use) the call
costs one context-variable read.

A context variable, not a parameter threaded through every function: the checks sit deep inside
modules (a DiT block loop, a video writer) whose signatures are shared with training and tests.
The pipeline runs in the caller's thread, so the check installed around a call is seen by all of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

CancelCheck = Callable[[], None]  # returns to go on; raises (any exception) to stop

_CHECK: ContextVar[CancelCheck | None] = ContextVar("magicinfinite_cancel_check", default=None)


@contextmanager
def cancel_check(check: CancelCheck | None) -> Iterator[None]:
    """While active, `check_cancelled()` calls `check` (None: no check). Nests; the inner check wins."""
    token = _CHECK.set(check)
    try:
        yield
    finally:
        _CHECK.reset(token)


def check_cancelled() -> None:
    """Call the installed check (it raises to stop the work); nothing when none is installed."""
    check = _CHECK.get()
    if check is not None:
        check()


def current_check() -> CancelCheck | None:
    """The installed check, e.g. to hand to a worker thread (threads start without this context)."""
    return _CHECK.get()
