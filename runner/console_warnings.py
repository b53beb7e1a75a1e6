"""Python warnings on the command line: one ``warning: <message>`` line each, no source line.

Why: Python's default ``showwarning`` prints ``/path/to/site-packages/x.py:123: UserWarning: msg``
and then the source line that called ``warnings.warn``, which tells a user of ``magicinfinite`` nothing
and breaks the one-line contract of its stderr. Installed by the command-line entry points only
(``runner.cli.main``, the batch's Ray workers), never by the library: a program that imports
magicinfinite_core keeps its own warning display.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, TextIO


def one_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:
    """A ``warnings.showwarning`` that writes ``warning: <message>`` (the first line of it) and nothing else."""
    stream = file if file is not None else sys.stderr
    if stream is None:  # pythonw: no console
        return
    text = " ".join(str(message).split()) or category.__name__
    try:
        stream.write(f"warning: {text}\n")
    except OSError:  # a closed pipe: the warning is lost, as with the default display
        pass


def format_one_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                    line: str | None = None) -> str:
    """The same line for ``warnings.formatwarning`` (what logging.captureWarnings and others use)."""
    return f"warning: {' '.join(str(message).split()) or category.__name__}\n"


def install() -> Any:
    """Make this process show warnings as one line each; returns the previous ``showwarning``."""
    previous = warnings.showwarning
    warnings.showwarning = one_line
    warnings.formatwarning = format_one_line
    return previous
