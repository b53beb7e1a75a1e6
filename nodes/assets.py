"""Demo inputs: copy the pack's example portrait/voices into ComfyUI's input folder.

Why: the example workflows use ComfyUI's own Load Image / Load Audio, which read from the input
folder; copying the (small) demo files there once makes a dragged-in workflow run as-is.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent.parent / "workflows" / "assets"
DEMO_PREFIX = "magicinfinite_demo_"

log = logging.getLogger(__name__)


def install_demo_inputs(input_dir: str | Path | None = None) -> Path | None:
    """Copy the demo assets to ``<input>/magicinfinite_demo_<name>``, refreshing stale copies; never raises.

    Top level of the input folder (not a sub-folder) so they appear in Load Image / Load Audio lists.
    The ``magicinfinite_demo_`` names belong to the pack: a copy whose bytes differ from the pack's
    file (left by an older version) is replaced, so an updated pack never runs its workflows on an
    old portrait. Other files in the input folder are never touched.
    """
    if os.environ.get("MAGICINFINITE_NO_DEMO_INPUTS"):  # the headless runner copies them itself
        return None
    try:
        if input_dir is None:
            import folder_paths

            input_dir = folder_paths.get_input_directory()
        dest = Path(input_dir)
        for src in sorted(ASSETS_DIR.glob("*")):
            target = dest / f"{DEMO_PREFIX}{src.name}"
            if src.is_file() and not _same_bytes(src, target):
                dest.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(target.name + ".tmp")
                shutil.copyfile(src, tmp)
                os.replace(tmp, target)
        return dest
    except Exception as e:  # noqa: BLE001 - a read-only input folder must not break the pack
        log.warning("MagicInfinite: could not copy the demo inputs: %s", e)
        return None


def _same_bytes(a: Path, b: Path) -> bool:
    if not b.is_file() or a.stat().st_size != b.stat().st_size:
        return False
    return a.read_bytes() == b.read_bytes()
