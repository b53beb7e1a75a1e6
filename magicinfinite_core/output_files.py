"""The files a run writes: never one of its inputs, one writer at a time, a full disk named.

Why: ``--out voice.wav`` (or a symlink to it, or ``--latent-file portrait.png``) overwrote the input and
exited 0; two runs with the same ``--out`` both wrote the file and shared ``OUT.state/`` (the result
was the second video plus the tail of the first); a full disk said ``[Errno 28]`` without a path and
left a half-written state file behind.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from magicinfinite_core.errors import MagicInfiniteError

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
LOCK_SUFFIX = ".lock"


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths are one file after symlinks (hard links included when both exist)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def refuse_inputs_as_outputs(outputs: dict[str, str | Path | None], inputs: Iterable[str | Path]) -> None:
    """A MagicInfiniteError when an output (by option name) resolves, after symlinks, to an input file.

    A folder output (the state folder) is refused when it is an input or holds one.
    """
    ins = [Path(p) for p in inputs if p is not None and str(p) != "-"]
    for option, out in outputs.items():
        if out is None:
            continue
        o = Path(out)
        for i in ins:
            real_o, real_i = os.path.realpath(o), os.path.realpath(i)
            if _same_file(o, i) or (o.is_dir() and real_i.startswith(real_o.rstrip(os.sep) + os.sep)):
                raise MagicInfiniteError(
                    f"{option} {out} is the input {i}" + ("" if str(o) == str(i) else f" (both are {real_i})")
                    + "; writing it would destroy the input: choose another output path"
                )


def disk_full_error(path: str | Path, exc: OSError) -> MagicInfiniteError | None:
    """One line for a write that failed for lack of space (ENOSPC, quota, file-size limit), naming the
    file; None for any other OSError."""
    if exc.errno not in DISK_FULL_ERRNOS:
        return None
    return MagicInfiniteError(f"no space left writing {path} ({os.strerror(exc.errno)}); free some space, "
                              "then run the same command with --resume to continue from the last saved step")


@contextmanager
def naming_full_disk(path: str | Path, *remove: str | Path) -> Iterator[None]:
    """Turn a disk-full OSError inside the block into one line naming ``path``, removing the half-written
    files ``remove`` first (what was saved before stays, for --resume)."""
    try:
        yield
    except OSError as exc:
        err = disk_full_error(path, exc)
        if err is None:
            raise
        for f in remove:
            try:
                Path(f).unlink(missing_ok=True)
            except OSError:
                pass
        raise err from None


def write_file_synced(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it (the caller renames it into place)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class OutputLock:
    """An exclusive lock on an output path (``<path>.lock``, flock), held for the run.

    Why flock: the kernel drops it when the holder dies, so a lock left by a killed run is simply taken
    over; the file says who holds it (pid) for the message of a second run.
    """

    def __init__(self, target: str | Path, option: str = "--out") -> None:
        self.target, self.option = Path(target), option
        self.path = Path(str(target) + LOCK_SUFFIX)
        self.fd: int | None = None

    def acquire(self) -> OutputLock:
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder(fd)
                os.close(fd)
                raise MagicInfiniteError(
                    f"{self.option} {self.target} is being written by another run (pid {holder}, lock "
                    f"{self.path}); wait for it to finish or choose another {self.option}"
                ) from None
            try:  # the holder before us may have removed the file it locked: lock the one at the path
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    @staticmethod
    def _holder(fd: int) -> str:
        deadline = time.monotonic() + 2.0
        while True:  # the holder writes its pid right after locking
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            if text or time.monotonic() > deadline:
                return text or "unknown"
            time.sleep(0.02)

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class OutputLocks:
    """Several OutputLocks taken in order and released together (the video and a separate state folder)."""

    def __init__(self, targets: dict[str, str | Path]) -> None:
        self.locks = [OutputLock(t, option) for option, t in targets.items()]

    def __enter__(self) -> OutputLocks:
        taken: list[OutputLock] = []
        try:
            for lock in self.locks:
                taken.append(lock.acquire())
        except BaseException:
            for lock in taken:
                lock.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for lock in reversed(self.locks):
            lock.release()
