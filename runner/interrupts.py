"""Ctrl-C during an in-process job: stop the running node at its next step, not after the whole job.

Why: ComfyUI's executor runs a workflow under ``asyncio.run``, whose SIGINT handler only cancels the
main task; a node computing synchronously never yields, so Ctrl-C in ``magicinfinite batch`` waited
for the whole job (25 s here) and the finished job was then recorded as ``interrupted``. This handler
raises ComfyUI's own interrupt flag instead (what /interrupt does in a server): the pack's nodes check
it between sampler steps, decode chunks and the other long loops, so the job ends within a step.
A second Ctrl-C raises KeyboardInterrupt at once.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType, TracebackType


class SigintInterrupts:
    """Context manager: while active, SIGINT sets :attr:`requested` and ComfyUI's interrupt flag."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: object = None
        self._installed = False

    def __enter__(self) -> SigintInterrupts:
        if threading.current_thread() is threading.main_thread():  # signals go to the main thread only
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        mm = sys.modules.get("comfy.model_management")
        if mm is not None:
            mm.interrupt_current_processing(True)
        print("interrupting: the job stops at its next step (Ctrl-C again to quit at once)", file=sys.stderr)
