"""Shared pytest configuration.

The repo root has an ``__init__.py`` (it is the ComfyUI custom-node folder), so pytest imports this
file as ``<root-folder-name>.tests.conftest``; plugin modules are therefore named relative to this
package rather than as a fixed ``tests.xxx``.
"""

pytest_plugins = [f"{__package__}.conftest_comfyui" if __package__ else "tests.conftest_comfyui"]
