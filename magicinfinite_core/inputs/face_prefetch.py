"""Find the portrait's faces in a second process while this one imports torch and loads the model.

Why: a command's first seconds are two independent jobs of about a second each on 2 cores: importing
torch and loading the model, and finding the faces (importing mediapipe, which pulls in matplotlib, then
one detection on the picture and one on the framed region). `start` forks a child, before torch is
imported, that prepares the portrait exactly as generation will and records every face detection it makes.
`recall` hands a detection back only for the same pixels (a hash) and the same request, so a prefetch never
changes a result: on a miss, or when the child failed, the caller detects as usual, and errors (no face
found) are raised there, by the same code.

Measured (bench/cli_first_frame.py): 2.67 -> 2.59 s to the first frame. The child imports torch too (the
portrait is read and framed by torch code), so it answers ~0.4 s after the command asks; a torch-free
child would save ~0.5 s.

Off where fork is unavailable, once torch is imported (forking its thread pools is unsafe), and with
``MAGICINFINITE_FACE_PREFETCH=0`` (to time a command without it).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from typing import Any

WAIT_S = 300.0  # how long the parent waits for the child's answer (a loaded machine), never forever
ENV_SWITCH = "MAGICINFINITE_FACE_PREFETCH"

_memo: dict[tuple[str, int], tuple[list[Any], list[Any]]] = {}  # (pixels hash, min_faces) -> (faces, rejected)
_recording = False  # True in the child only
_pending: tuple[Any, Any] | None = None  # (process, receiving end) of a running child


def _key(rgb: Any, min_faces: int) -> tuple[str, int]:
    h = hashlib.blake2b(memoryview(rgb).cast("B") if rgb.flags.c_contiguous else rgb.tobytes(), digest_size=16)
    h.update(repr(tuple(rgb.shape)).encode())
    return h.hexdigest(), int(min_faces)


def start(job: Callable[[], object]) -> bool:
    """Fork a child that runs `job` (preparing the portrait exactly as generation will; the CLI's
    `_prefetch_faces`) and records every face detection it makes; True when the child runs."""
    global _pending
    if os.environ.get(ENV_SWITCH, "1") == "0" or "torch" in sys.modules or _pending is not None:
        return False
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        return False
    ctx = mp.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, job), name="magicinfinite-face-prefetch", daemon=True)
    proc.start()
    send.close()
    _pending = (proc, receive)
    return True


def _child(send: Any, job: Callable[[], object]) -> None:
    global _recording
    _recording = True
    try:
        import warnings

        warnings.simplefilter("ignore")  # the parent reports the portrait's warnings itself
        job()
    except BaseException:  # noqa: BLE001, S110 - whatever failed, the parent detects and reports it itself
        pass
    finally:
        try:
            send.send(dict(_memo))
        finally:
            send.close()


def _collect() -> None:
    """Take the child's detections (waits for it the first time it is asked)."""
    global _pending
    if _pending is None:
        return
    proc, receive = _pending
    _pending = None
    try:
        if receive.poll(WAIT_S):
            _memo.update(receive.recv())
    except (EOFError, OSError):  # the child died: detect here
        pass
    finally:
        receive.close()
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()


def recall(rgb: Any, min_faces: int) -> tuple[list[Any], list[Any]] | None:
    """The prefetched (faces, rejected) of `detect_faces` on exactly these uint8 pixels, else None."""
    _collect()
    if not _memo:
        return None
    hit = _memo.get(_key(rgb, min_faces))
    return None if hit is None else (list(hit[0]), list(hit[1]))


def remember(rgb: Any, min_faces: int, faces: list[Any], rejected: list[Any]) -> None:
    """Record a detection (in the child only)."""
    if _recording:
        _memo[_key(rgb, min_faces)] = (list(faces), list(rejected))
