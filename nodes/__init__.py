"""ComfyUI node classes of the MagicInfinite pack (V3 schema, ``comfy_api.latest``).

Imported only inside a ComfyUI process (the server or ``runner.headless``): every module here may
import ``comfy_api`` / ``folder_paths``. Model math lives in ``magicinfinite_core``; nodes are thin
wrappers so that the CLI, the headless runner and ComfyUI all run the same code.

Add a node: write its class in a module here and append it to ``NODE_CLASSES``.
"""

from __future__ import annotations

from .audio_nodes import MagicInfiniteAudioFrameCount
from .common import CATEGORY

NODE_CLASSES: list[type] = [
    MagicInfiniteAudioFrameCount,
]

__all__ = ["CATEGORY", "NODE_CLASSES", "MagicInfiniteAudioFrameCount"]
