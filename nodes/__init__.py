"""ComfyUI node classes of the MagicInfinite pack (V3 schema, ``comfy_api.latest``).

Imported only inside a ComfyUI process (the server or ``runner.headless``): every module here may
import ``comfy_api`` / ``folder_paths``. Model math lives in ``magicinfinite_core``; nodes are thin
wrappers so that the CLI, the headless runner and ComfyUI all run the same code.

Add a node: write its class in a module here and append it to ``NODE_CLASSES``.
"""

from __future__ import annotations

from .assets import install_demo_inputs
from .audio_nodes import MagicInfiniteAudioEncode, MagicInfiniteAudioFrameCount
from .common import CATEGORY
from .loaders import (
    MagicInfiniteAudioEncoderLoader,
    MagicInfiniteDiTLoader,
    MagicInfiniteLoRA,
    MagicInfiniteModelFromParts,
    MagicInfiniteModelLoader,
    MagicInfiniteTextEncoderLoader,
    MagicInfiniteVAELoader,
)
from .mask_nodes import MagicInfiniteSpeakerMasks
from .sampler_nodes import MagicInfiniteCFG, MagicInfiniteSampler
from .video_nodes import MagicInfiniteDecode, MagicInfiniteSaveVideo

NODE_CLASSES: list[type] = [
    MagicInfiniteModelLoader,
    MagicInfiniteDiTLoader,
    MagicInfiniteVAELoader,
    MagicInfiniteTextEncoderLoader,
    MagicInfiniteAudioEncoderLoader,
    MagicInfiniteModelFromParts,
    MagicInfiniteLoRA,
    MagicInfiniteAudioEncode,
    MagicInfiniteAudioFrameCount,
    MagicInfiniteSpeakerMasks,
    MagicInfiniteCFG,
    MagicInfiniteSampler,
    MagicInfiniteSaveVideo,
    MagicInfiniteDecode,
]

install_demo_inputs()

__all__ = ["CATEGORY", "NODE_CLASSES", *[c.__name__ for c in NODE_CLASSES]]
