"""Muxing on a second thread: the next frames are sampled and decoded while the last ones are encoded.

Why: at 1024 px one frame cost about 40 ms on one core, 15 of them turning it into uint8 and encoding it
with x264 (session 17's profile), and PyAV and torch release the GIL while they work, so on two cores the
encoder can run beside the decoder. One thread encodes every frame in order with the one encoder, so the
file holds the same video as writing in the caller's thread (tested). At most `depth` chunks wait: the
memory they hold is bounded. The first chunk is encoded in the caller's thread before `write` returns: the
first frame is what a user waits for, and a worker sharing a busy core with the decoder delayed it (1024 px
with one of the two cores taken: 3.12 -> 3.53 s, `bench/first_frame.py`).
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from magicinfinite_core.media.video_io import VideoWriter

_DONE = object()


class BackgroundWriter:
    """Wraps a `VideoWriter`: `write` hands frames to a worker thread and returns (the first frames it encodes
    itself); `close` waits for them
    and finishes the file; `abort` drops what still waits and keeps the file as the writer's `abort` does.
    An error raised while encoding (a full disk, a cancellation) comes back from the next `write` or from
    `close`. The worker runs in a copy of the caller's context, so `check_cancelled` sees the caller's check."""

    def __init__(self, writer: VideoWriter, depth: int = 1, on_written: Callable[[], None] | None = None) -> None:
        """`on_written`: called in the worker after each batch of frames is encoded (e.g. to time the first)."""
        self.writer, self.on_written = writer, on_written
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._error: BaseException | None = None
        self._dropping = False
        self._first = True
        self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._work,),
                                        name="magicinfinite-mux", daemon=True)
        self._thread.start()

    def _encode(self, frames: Any) -> None:
        self.writer.write(frames)
        if self.on_written is not None:
            self.on_written()

    def _work(self) -> None:
        while (frames := self._queue.get()) is not _DONE:
            if self._error is None and not self._dropping:
                try:
                    self._encode(frames)
                except BaseException as exc:  # handed to the caller's thread, which raises it
                    self._error = exc

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            self._dropping = True  # what still waits is not encoded after a failure
            raise error

    def write(self, frames: Any) -> None:
        """Queue frames (anything `VideoWriter.write` takes; not changed afterwards) for the worker."""
        self._raise_error()
        if not self._thread.is_alive():
            raise RuntimeError("the writer is closed")
        if self._first:
            self._first = False
            self._encode(frames)
        else:
            self._queue.put(frames)

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_DONE)
            self._thread.join()

    def close(self) -> Path:
        """Encode what waits, then flush and move the finished file into place (`VideoWriter.close`)."""
        self._stop()
        if self._error is not None:
            self.writer.abort()
            self._raise_error()
        return self.writer.close()

    def abort(self) -> None:
        """Stop on an error or interrupt: frames still waiting are dropped, the writer's `abort` runs."""
        self._dropping = True
        self._stop()
        self.writer.abort()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
