"""The pack inside a real ComfyUI 0.3.75 server: registration, a workflow over HTTP + websocket,
validation and execution errors, and recovery afterwards."""

from __future__ import annotations

import os
import struct
import time
import zlib

import pytest
import requests

from . import browser
from .comfyui_server import NODE, PromptRejected, frame_count_workflow, write_wav

pytestmark = pytest.mark.comfyui


def test_object_info_lists_our_node(comfyui_server):
    info = comfyui_server.object_info(NODE)[NODE]
    assert info["category"] == "MagicInfinite"
    assert info["display_name"] == "MagicInfinite Audio Frame Count"
    assert info["input"]["required"]["audio"][0] == "AUDIO"
    assert info["output"] == ["INT", "FLOAT"]
    assert info["output_name"] == ["frames", "duration_s"]
    assert info["output_node"] is True
    assert info["python_module"] == "custom_nodes.ComfyUI-MagicInfinite"
    # The pack loaded without import errors (ComfyUI logs failures instead of raising).
    log = comfyui_server.server.log_path.read_text(errors="replace")
    assert "IMPORT FAILED" not in log.split("Import times for custom nodes:")[-1].split("Starting server")[0]


def test_workflow_runs_and_reports_frames(comfyui_server):
    server = comfyui_server.server
    write_wav(server.input_dir / "voice_2250ms.wav", seconds=2.25)
    result = comfyui_server.run(frame_count_workflow("voice_2250ms.wav"))

    assert result.succeeded, result.history
    assert result.outputs["2"]["text"] == ["56 frames at 25 fps (2.250 s)"]  # round(2.25 * 25) = 56
    assert result.outputs["3"]["text"] == ["56"]
    assert float(result.outputs["4"]["text"][0]) == pytest.approx(2.25)
    # The websocket announced our node, then its UI output, then the end of the prompt.
    assert "2" in result.executed_nodes()
    executed = [d for d in result.messages_of("executed") if d.get("node") == "2"]
    assert executed and executed[0]["output"]["text"] == ["56 frames at 25 fps (2.250 s)"]
    assert result.messages_of("execution_success")


def test_missing_file_is_rejected_at_validation(comfyui_server):
    with pytest.raises(PromptRejected) as excinfo:
        comfyui_server.queue_prompt(frame_count_workflow("does_not_exist.wav"))
    assert excinfo.value.status == 400
    errors = excinfo.value.body["node_errors"]["1"]["errors"]
    assert errors[0]["type"] == "custom_validation_failed"
    assert "does_not_exist.wav" in errors[0]["details"]


def test_execution_error_then_server_still_runs(comfyui_server):
    server = comfyui_server.server
    (server.input_dir / "broken.wav").write_bytes(b"RIFF this is not audio")
    bad = comfyui_server.run(frame_count_workflow("broken.wav"))
    assert not bad.succeeded
    err = bad.messages_of("execution_error")
    assert err and err[0]["node_id"] == "1" and err[0]["node_type"] == "LoadAudio"
    assert "Invalid data" in err[0]["exception_message"]

    write_wav(server.input_dir / "voice_1s.wav", seconds=1.0, sample_rate=44100)
    good = comfyui_server.run(frame_count_workflow("voice_1s.wav"))
    assert good.succeeded, good.history
    assert good.outputs["3"]["text"] == ["25"]


# ---------------------------------------------------------------- the real frontend in headless Chromium

# A UI-format workflow as the 1.32.9 frontend saves it (trimmed of pure-layout fields it re-creates).
UI_WORKFLOW = {
    "last_node_id": 3,
    "last_link_id": 4,
    "nodes": [
        {
            "id": 1,
            "type": "LoadAudio",
            "pos": [100, 130],
            "size": [290, 136],
            "flags": {},
            "order": 0,
            "mode": 0,
            "inputs": [],
            "outputs": [{"name": "AUDIO", "type": "AUDIO", "links": [3]}],
            "properties": {"Node name for S&R": "LoadAudio"},
            "widgets_values": ["voice_ui.wav", None, ""],
        },
        {
            "id": 2,
            "type": NODE,
            "pos": [490, 130],
            "size": [270, 46],
            "flags": {},
            "order": 1,
            "mode": 0,
            "inputs": [{"name": "audio", "type": "AUDIO", "link": 3}],
            "outputs": [
                {"name": "frames", "type": "INT", "links": [4]},
                {"name": "duration_s", "type": "FLOAT", "links": None},
            ],
            "properties": {"Node name for S&R": NODE},
        },
        {
            "id": 3,
            "type": "PreviewAny",
            "pos": [860, 130],
            "size": [140, 26],
            "flags": {},
            "order": 2,
            "mode": 0,
            "inputs": [{"name": "source", "type": "*", "link": 4}],
            "outputs": [],
            "properties": {"Node name for S&R": "PreviewAny"},
            "widgets_values": [],
        },
    ],
    "links": [[3, 1, 0, 2, 0, "AUDIO"], [4, 2, 0, 3, 0, "*"]],
    "groups": [],
    "config": {},
    "extra": {},
    "version": 0.4,
}


def _require_chromium() -> None:
    if os.environ.get("MAGICINFINITE_SKIP_BROWSER", "").strip() in ("1", "true", "yes"):
        pytest.skip("MAGICINFINITE_SKIP_BROWSER=1: browser tests skipped on request")
    if browser.find_chromium() is None:
        pytest.fail(
            "chromium not installed: run scripts/install_test_system_deps.sh "
            "(or set MAGICINFINITE_SKIP_BROWSER=1)",
            pytrace=False,
        )


def _png_size_and_colours(path) -> tuple[int, int, int]:
    """(width, height, distinct byte values in the first rows): enough to tell a blank page."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    idat, pos = b"", 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    return width, height, len(set(raw[: min(len(raw), 4 * width * 200)]))


@pytest.fixture(scope="module")
def frontend_url(comfyui_server):
    """The server's page with the first-run templates dialog turned off (isolated user dir)."""
    _require_chromium()
    r = requests.post(comfyui_server.base_url + "/settings/Comfy.TutorialCompleted", json=True, timeout=10)
    r.raise_for_status()
    return comfyui_server.base_url + "/"


def test_frontend_renders_screenshot(frontend_url):
    out = browser.default_artifacts_dir() / "comfyui_frontend.png"
    out.unlink(missing_ok=True)
    browser.screenshot_cli(frontend_url, out, budget_ms=15000)
    width, height, colours = _png_size_and_colours(out)
    assert (width, height) == (1400, 900)
    assert colours > 20, "screenshot looks blank"


def test_frontend_loads_ui_workflow_with_our_node_and_runs_it(comfyui_server, frontend_url):
    write_wav(comfyui_server.server.input_dir / "voice_ui.wav", seconds=3.0)
    with browser.Browser() as b:
        browser.open_comfyui(b, frontend_url)
        assert NODE in browser.registered_node_types(b)

        loaded = browser.load_ui_workflow(b, UI_WORKFLOW)
        assert loaded["missing"] == []
        by_id = {n["id"]: n for n in loaded["nodes"]}
        assert by_id[2]["type"] == NODE and by_id[2]["title"] == "MagicInfinite Audio Frame Count"
        assert by_id[2]["outputs"] == [["frames", "INT"], ["duration_s", "FLOAT"]]
        assert by_id[1]["widgets"][0] == ["audio", "voice_ui.wav"]
        assert loaded["links"] == 2
        b.screenshot(browser.default_artifacts_dir() / "comfyui_workflow.png")

        # Queue it from the page, as a user pressing Run would.
        before = set(comfyui_server.get_json("/history"))
        b.evaluate("(window.comfyAPI?.app?.app ?? window.app).queuePrompt(0, 1)")
        deadline = time.monotonic() + 60
        new = []
        while time.monotonic() < deadline and not new:
            new = [k for k in comfyui_server.get_json("/history") if k not in before]
            time.sleep(0.2)
        assert new, "the page did not queue a prompt"
        entry = comfyui_server.wait_history(new[0])
        assert entry["status"]["status_str"] == "success"
        assert entry["outputs"]["2"]["text"] == ["75 frames at 25 fps (3.000 s)"]

        # A node type the server does not know is reported as missing.
        bogus = dict(
            UI_WORKFLOW, nodes=[*UI_WORKFLOW["nodes"][:1], dict(UI_WORKFLOW["nodes"][1], type="NoSuchNode")]
        )
        assert browser.load_ui_workflow(b, bogus)["missing"] == ["NoSuchNode"]
