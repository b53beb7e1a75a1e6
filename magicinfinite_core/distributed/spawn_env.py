"""What a spawned worker process inherits from its parent: a clean ``sys.path`` and no main script.

Why: ``multiprocessing``'s spawn start method gives each child the parent's ``sys.path`` and re-runs
the parent's main script (as ``__mp_main__``) before unpickling the target. Inside ComfyUI that
main script is ComfyUI's ``main.py``, which imports ComfyUI's ``utils`` package, and the parent's
``sys.path`` starts with ComfyUI's ``comfy/`` folder (``nodes.py`` inserts it), where ``comfy/utils.py``
hides that package: the child dies with "No module named 'utils.install_util'" before it runs a
line of ours. Our worker targets live in importable modules, so the child needs neither.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager


def is_package_dir_under_another_entry(entry: str, entries: list[str]) -> bool:
    """True for a ``sys.path`` entry that is a package folder whose parent folder is also on the path.

    Such an entry (ComfyUI's ``comfy/``) makes the package's modules importable as top-level names
    (``utils``, ``options``...) that shadow real top-level packages. A package folder whose parent is
    not on the path (a checkout root with an ``__init__.py``) is kept: it may be the only way in.
    """
    path = os.path.abspath(entry or os.curdir)
    if not os.path.isfile(os.path.join(path, "__init__.py")):
        return False
    parent = os.path.dirname(path)
    return any(os.path.abspath(e or os.curdir) == parent for e in entries)


def child_sys_path(entries: list[str] | None = None) -> list[str]:
    """``sys.path`` for a spawned child: the parent's, minus shadowing package folders."""
    entries = list(sys.path if entries is None else entries)
    return [e for e in entries if not is_package_dir_under_another_entry(e, entries)]


@contextmanager
def clean_spawn_environment() -> Iterator[None]:
    """While starting spawn-context processes: a cleaned ``sys.path`` and a ``__main__`` without a file.

    The spawn start method records both when ``Process.start()`` is called, so the swap only has to
    last for the ``start()`` calls; everything is restored afterwards, even on error.
    """
    saved_path = list(sys.path)
    saved_main = sys.modules.get("__main__")
    sys.path[:] = child_sys_path(saved_path)
    sys.modules["__main__"] = types.ModuleType("__main__")  # no __file__ / __spec__: the child imports no main
    try:
        yield
    finally:
        sys.path[:] = saved_path
        if saved_main is not None:
            sys.modules["__main__"] = saved_main
