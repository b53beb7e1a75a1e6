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
    """Copy missing demo assets to ``<input>/magicinfinite_demo_<name>``; never overwrites, never raises.

    Top level of the input folder (not a sub-folder) so they appear in Load Image / Load Audio lists.
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
            if src.is_file() and not target.exists():
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, target)
        return dest
    except Exception as e:  # noqa: BLE001 - a read-only input folder must not break the pack
        log.warning("MagicInfinite: could not copy the demo inputs: %s", e)
        return None
