"""Fixtures for tests against a real ComfyUI 0.3.75 (``@pytest.mark.comfyui``).

- ``comfyui_install``: the cached install (installed on first use); FAILS with the reason when it
  cannot be installed, unless ``MAGICINFINITE_SKIP_COMFYUI=1`` asks to skip.
- ``comfyui_server``: one server per test session (``--cpu``, free port, isolated base directory),
  yielded as a :class:`ComfyClient` whose ``.server`` is the :class:`ComfyServer`.
- ``comfyui_models``: the server's ``models/`` folder (``diffusion_models/``, ``audio_encoders/``...).

A failing ``comfyui`` test gets the tail of the server log attached to its report.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .comfyui_server import ComfyClient, ComfyServer, ComfyUIUnavailable, ensure_comfyui

_SERVER: ComfyServer | None = None


def _skip_requested() -> bool:
    return os.environ.get("MAGICINFINITE_SKIP_COMFYUI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def comfyui_install() -> Path:
    """Path of the ComfyUI install whose deps are importable in this interpreter."""
    if _skip_requested():
        pytest.skip("MAGICINFINITE_SKIP_COMFYUI=1: ComfyUI integration tests skipped on request")
    try:
        return ensure_comfyui()
    except ComfyUIUnavailable as e:
        reason = str(e)
    pytest.fail(reason, pytrace=False)


@pytest.fixture(scope="session")
def comfyui_server(comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyClient]:
    """A running ComfyUI with this pack in custom_nodes/; stopped at the end of the session."""
    global _SERVER
    server = ComfyServer(comfyui_install, tmp_path_factory.mktemp("comfyui"))
    reason = None
    try:
        server.start()
    except ComfyUIUnavailable as e:
        reason = str(e)
    if reason is not None:
        pytest.fail(reason, pytrace=False)
    _SERVER = server
    client = server.client()
    client.server = server  # type: ignore[attr-defined]
    try:
        yield client
    finally:
        server.stop()


@pytest.fixture(scope="session")
def comfyui_models(comfyui_server: ComfyClient) -> Path:
    """The server's models folder; files put in its subfolders show up in ComfyUI's model combos."""
    return comfyui_server.server.models_dir  # type: ignore[attr-defined]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Attach the ComfyUI server log to failed ``comfyui`` tests."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _SERVER is not None and item.get_closest_marker("comfyui") is not None:
        report.sections.append(("ComfyUI server log (tail)", _SERVER.log_tail()))


TEST_BUNDLE = "mi_test_bundle"


@pytest.fixture(scope="session")
def magic_test_bundle(comfyui_models: Path) -> str:
    """A seeded random tiny MagicInfinite bundle (64x64) in the server's diffusion_models folder.

    Returns its name for the Model Loader's ``model`` input (the demo model may not exist yet).
    """
    from magicinfinite_core.weights.bundle import random_bundle, save_bundle

    dest = comfyui_models / "diffusion_models" / TEST_BUNDLE
    if not (dest / "bundle.json").is_file():
        save_bundle(random_bundle(0, height=64, width=64), dest)
    return TEST_BUNDLE
