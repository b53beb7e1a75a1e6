"""ComfyUI entry point of the MagicInfinite node pack (V3 API: ``comfy_entrypoint``).

ComfyUI imports this file as a package from ``custom_nodes/<folder>/``. Outside ComfyUI (pytest
collecting the repo root, tools importing it) ``comfy_api`` is missing and this module defines
nothing, so importing it is harmless.

Deliberately no ``NODE_CLASS_MAPPINGS``: ComfyUI 0.3.75 takes the V1 path whenever that name exists
and would then never call ``comfy_entrypoint``.
"""

from __future__ import annotations

import importlib.util
import os
import sys

_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
# The frontend extension that shows the pack's warnings as toasts (web/magicinfinite_warnings.js).
WEB_DIRECTORY = "./web"


def _make_core_importable() -> None:
    """Let ``import magicinfinite_core`` work when the pack is only copied into custom_nodes/.

    Appended (not prepended) so ComfyUI's own top-level modules (``nodes``, ``utils``...) keep
    precedence over same-named folders of this repo.
    """
    if importlib.util.find_spec("magicinfinite_core") is None and _PACK_DIR not in sys.path:
        sys.path.append(_PACK_DIR)


try:
    from comfy_api.latest import ComfyExtension, io
except ImportError:  # not inside ComfyUI
    ComfyExtension = None  # type: ignore[assignment,misc]

if ComfyExtension is not None:

    class MagicInfiniteExtension(ComfyExtension):
        """Registers the pack's V3 nodes with ComfyUI."""

        async def get_node_list(self) -> list[type[io.ComfyNode]]:
            _make_core_importable()
            from .nodes import NODE_CLASSES

            return list(NODE_CLASSES)

    async def comfy_entrypoint() -> MagicInfiniteExtension:
        """Called by ComfyUI's loader (``nodes.load_custom_node``) once per process."""
        return MagicInfiniteExtension()
