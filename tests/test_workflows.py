"""The example workflows: API files reference only existing nodes, UI files load in the real frontend
(headless Chromium, no missing node types; screenshots in test-artifacts/), both formats agree."""

from __future__ import annotations

import json
import os

import pytest
import requests

from . import browser
from .comfyui_server import WORKFLOWS_DIR

pytestmark = pytest.mark.comfyui

NAMES = ["single_speaker", "two_speakers", "long_video", "hunyuan_avatar"]


def _api(name: str) -> dict:
    return json.loads((WORKFLOWS_DIR / f"{name}_api.json").read_text())


def _ui(name: str) -> dict:
    return json.loads((WORKFLOWS_DIR / f"{name}.json").read_text())


def test_assets_are_small_and_referenced():
    assets = list((WORKFLOWS_DIR / "assets").iterdir())
    assert sum(p.stat().st_size for p in assets) < 1_000_000
    names = {p.name for p in assets}
    for name in NAMES:
        for node in _api(name).values():
            for key in ("image", "audio"):
                value = node["inputs"].get(key)
                if node["class_type"] in ("LoadImage", "LoadAudio") and key in node["inputs"]:
                    assert value.startswith("magicinfinite_demo_") and value[len("magicinfinite_demo_"):] in names


def test_long_workflow_audio_is_at_least_60_s():
    import soundfile as sf

    voice = _api("long_video")["3"]["inputs"]["audio"].removeprefix("magicinfinite_demo_")
    assert sf.info(str(WORKFLOWS_DIR / "assets" / voice)).duration >= 60


def test_api_workflows_use_only_existing_nodes(comfyui_server):
    known = set(comfyui_server.object_info())
    for name in NAMES:
        missing = {n["class_type"] for n in _api(name).values()} - known
        assert not missing, (name, missing)
    # The pack copied the demo inputs into the server's input folder at load time.
    assert (comfyui_server.server.input_dir / "magicinfinite_demo_portrait_one_speaker.jpg").is_file()


def test_ui_and_api_files_describe_the_same_graph():
    for name in NAMES:
        ui, api = _ui(name), _api(name)
        assert sorted(n["type"] for n in ui["nodes"]) == sorted(n["class_type"] for n in api.values()), name
        assert len(ui["links"]) == sum(isinstance(v, list) for n in api.values() for v in n["inputs"].values())


@pytest.fixture(scope="module")
def frontend(comfyui_server):
    if os.environ.get("MAGICINFINITE_SKIP_BROWSER", "").strip() in ("1", "true", "yes"):
        pytest.skip("MAGICINFINITE_SKIP_BROWSER=1: browser tests skipped on request")
    if browser.find_chromium() is None:
        pytest.fail("chromium not installed: run scripts/install_test_system_deps.sh", pytrace=False)
    requests.post(comfyui_server.base_url + "/settings/Comfy.TutorialCompleted", json=True, timeout=10)
    with browser.Browser(width=2000, height=1150) as b:
        browser.open_comfyui(b, comfyui_server.base_url + "/")
        yield b


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_loads_without_missing_nodes(frontend, name):
    loaded = browser.load_ui_workflow(frontend, _ui(name))
    assert loaded["missing"] == []
    assert len(loaded["nodes"]) == len(_api(name))
    assert loaded["links"] == len(_ui(name)["links"])
    # No node came back as a red "missing" placeholder (those lose their widgets/outputs).
    sampler = next(n for n in loaded["nodes"] if n["type"] == "MagicInfiniteSampler")
    assert sampler["outputs"], sampler
    frontend.evaluate("(window.comfyAPI?.app?.app ?? window.app).canvas.ds.scale = 0.8")
    frontend.evaluate("(window.comfyAPI?.app?.app ?? window.app).canvas.ds.offset = [10, 90]")
    frontend.evaluate("(window.comfyAPI?.app?.app ?? window.app).graph.setDirtyCanvas(true, true)")
    frontend.screenshot(browser.default_artifacts_dir() / f"workflow_{name}.png")
