"""Issue 19 against a real ComfyUI 0.3.75 server: NaN and range checks with one message on the right
input, bundle.json escapes refused, warnings (silent voice, face fallback, huge portrait) sent to the
frontend, bounded memory for a 10000x10000 upload, and the next prompt still succeeding."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from .comfyui_server import PromptRejected, frame_count_workflow, magic_workflow, write_wav

pytestmark = pytest.mark.comfyui

WARNING_EVENT = "magicinfinite.warning"


@pytest.fixture(scope="module")
def voice(comfyui_server) -> str:
    write_wav(comfyui_server.server.input_dir / "mi_safety_voice.wav", seconds=0.8)
    return "mi_safety_voice.wav"


def _post(client, wf) -> requests.Response:
    """POST /prompt with NaN allowed in the JSON (what a script sending float('nan') produces)."""
    body = json.dumps({"prompt": wf}, allow_nan=True)
    return requests.post(client.base_url + "/prompt", data=body, headers={"Content-Type": "application/json"},
                         timeout=30)


def _errors(client, wf) -> list[tuple[str, str, str]]:
    """(node, input label, details) of every validation error for ``wf`` (which must be rejected)."""
    with pytest.raises(PromptRejected) as exc:
        client.queue_prompt(wf)
    assert exc.value.status == 400
    return [(node, e.get("extra_info", {}).get("input_name", ""), e.get("details", ""))
            for node, info in exc.value.body.get("node_errors", {}).items() for e in info.get("errors", [])]


def _still_serving(client) -> None:
    write_wav(client.server.input_dir / "mi_safety_after.wav", seconds=1.0)
    after = client.run(frame_count_workflow("mi_safety_after.wav"))
    assert after.succeeded and after.outputs["3"]["text"] == ["25"]


def _run_nan(client, wf, timeout=300):
    """Queue ``wf`` (with NaNs) while listening on the websocket; return (history entry, ws messages)."""
    import uuid

    import websocket

    cid = uuid.uuid4().hex
    ws = websocket.create_connection(f"{client.ws_url}?clientId={cid}", timeout=timeout)
    try:
        body = json.dumps({"prompt": wf, "client_id": cid}, allow_nan=True)
        r = requests.post(client.base_url + "/prompt", data=body, timeout=30)
        assert r.status_code == 200, r.text
        pid = r.json()["prompt_id"]
        msgs = []
        while True:
            raw = ws.recv()
            if isinstance(raw, bytes):
                continue
            m = json.loads(raw)
            msgs.append(m)
            d = m.get("data", {})
            if m["type"] in ("execution_error", "execution_success") and d.get("prompt_id") == pid:
                break
    finally:
        ws.close()
    return client.wait_history(pid, timeout=timeout), msgs


def test_nan_inputs_stop_with_a_clear_error_and_write_no_video(comfyui_server, magic_test_bundle, voice):
    out = comfyui_server.server.output_dir
    cases = {
        "6": ({"6.shift": float("nan"), "7.filename_prefix": "mi_nan/shift"}, "shift must be a finite number"),
        "30": ({"7.filename_prefix": "mi_nan/cfg"}, "audio_scale must be a finite number"),
    }
    for node, (inputs, expect) in cases.items():
        wf = magic_workflow("single_speaker", magic_test_bundle, voice, **{"6.mode": "base (CFG)", **inputs})
        if node == "30":
            wf["30"] = {"class_type": "MagicInfiniteCFG", "inputs": {"mode": CFG_MODE, "audio_scale": float("nan"),
                                                                   "text_scale": 1.0, "boundary": 0.75}}
            wf["6"]["inputs"]["cfg"] = ["30", 0]
        hist, msgs = _run_nan(comfyui_server, wf)
        assert hist["status"]["status_str"] == "error"
        err = [m["data"] for m in msgs if m["type"] == "execution_error"][0]
        assert err["node_id"] == node and expect in err["exception_message"], err
        assert not (out / "mi_nan").exists() or not any((out / "mi_nan").iterdir())
    _still_serving(comfyui_server)


CFG_MODE = "multi-condition (two-fold, then three-fold)"


def test_every_range_is_enforced_with_one_message_on_the_right_input(comfyui_server, magic_test_bundle, voice):
    def errs(**kw):
        return _errors(comfyui_server, magic_workflow("single_speaker", magic_test_bundle, voice, **kw))

    # ranges ComfyUI skipped before because validate_inputs took these inputs
    e = errs(**{"6.steps": 10000})
    assert [(n, label) for n, label, _ in e] == [("6", "steps")], e
    # ComfyUI labels a validate_inputs message with every input that function takes: the window/overlap
    # pair and the choices it checks (mode, backend, device), never steps, resume_dir...
    taken = {"window", "overlap", "mode", "backend", "device"}
    e = errs(**{"6.window": 2001})
    assert {label for _, label, _ in e} == taken and all("window 2001 must be in 5..1025" in d for _, _, d in e), e
    e = errs(**{"6.overlap": 40})
    assert {label for _, label, _ in e} == taken and len(e) == len(taken), e
    assert all("must be under half the window" in d for _, _, d in e)
    e = errs(**{"6.seed": -1})
    assert [(n, label) for n, label, _ in e] == [("6", "seed")], e
    e = errs(**{"5.num_speakers": 9})
    assert {label for _, label, _ in e} <= {"num_speakers", "face_order", "source"} and "1..4" in e[0][2], e
    # a NaN sent for a float is one message under its own label when ComfyUI can check it (not in validate_inputs)
    r = _post(comfyui_server, magic_workflow("single_speaker", magic_test_bundle, voice, **{"6.shift": 60.0}))
    body = r.json()
    assert r.status_code == 400 and [e["extra_info"]["input_name"] for e in body["node_errors"]["6"]["errors"]] == [
        "shift"]
    # a resume_dir escape: refused before the sampler does anything, one message naming resume_dir
    wf = magic_workflow("single_speaker", magic_test_bundle, voice, **{"6.resume_dir": "../../state"})
    res = comfyui_server.run(wf, timeout=300)
    err = res.messages_of("execution_error")[0]
    assert err["node_id"] == "6" and "resume_dir '../../state' must not contain '..'" in err["exception_message"]
    assert not (comfyui_server.server.output_dir.parent / "state").exists()
    _still_serving(comfyui_server)


def test_bundle_json_paths_outside_the_bundle_are_refused(comfyui_server, comfyui_models, magic_test_bundle, voice):
    src = comfyui_models / "diffusion_models" / magic_test_bundle
    outside = comfyui_models.parent / "outside.safetensors"
    shutil.copy(src / "dit.safetensors", outside)  # a real loadable file outside the model folders
    for name, dit in {"mi_escape_abs": str(outside), "mi_escape_up": "../../../outside.safetensors"}.items():
        dest = comfyui_models / "diffusion_models" / name
        shutil.copytree(src, dest, dirs_exist_ok=True)
        spec = json.loads((dest / "bundle.json").read_text())
        spec["dit"] = dit
        (dest / "bundle.json").write_text(json.dumps(spec))
        e = _errors(comfyui_server, magic_workflow("single_speaker", name, voice))
        # one message, labelled by ComfyUI with both inputs the loader's validate_inputs takes
        assert sorted((n, label) for n, label, _ in e) == [("1", "model"), ("1", "transformer")], e
        assert ("absolute paths are refused" if name.endswith("abs") else "leaves the bundle folder") in e[0][2], e
    _still_serving(comfyui_server)


def test_warnings_reach_the_frontend_and_the_history(comfyui_server, magic_test_bundle):
    inp = comfyui_server.server.input_dir
    write_wav(inp / "mi_silent.wav", seconds=0.8, freq=0.0)
    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(inp / "mi_cat.png")
    wf = magic_workflow("single_speaker", magic_test_bundle, "mi_silent.wav", **{"7.filename_prefix": "mi_warn/v"})
    wf["2"]["inputs"]["image"] = "mi_cat.png"  # no face; the workflow chose "detect faces, else centre"
    res = comfyui_server.run(wf, timeout=300)
    assert res.succeeded, res.status
    toasts = {m["data"]["node"]: m["data"]["messages"] for m in res.messages if m.get("type") == WARNING_EVENT}
    assert any("is silent" in t and "mouth will stay closed" in t for t in toasts["4"]), toasts
    assert any("no face found; using 1 centred region(s)" in t and "fallback you chose" in t for t in toasts["5"])
    assert res.outputs["4"]["warnings"] == toasts["4"] and res.outputs["5"]["warnings"] == toasts["5"]
    # the frontend extension that turns the event into a toast is served by ComfyUI
    exts = requests.get(comfyui_server.base_url + "/extensions", timeout=30).json()
    js = [e for e in exts if e.endswith("magicinfinite_warnings.js")]
    assert js and WARNING_EVENT in requests.get(comfyui_server.base_url + js[0], timeout=30).text


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _vm_rss_mb(pid: int) -> float:  # noqa: D103
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_huge_portrait_upload_is_downscaled_with_bounded_memory_and_a_warning(comfyui_server):
    side = 10000
    ramp = np.linspace(0, 255, side).astype(np.uint8)
    img = np.empty((side, side, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = ramp[:, None], ramp[None, :], 128
    Image.fromarray(img).save(comfyui_server.server.input_dir / "mi_huge.png", compress_level=1)
    del img
    pid = comfyui_server.server.proc.pid

    def peak_growth(wf) -> tuple[float, object]:
        before = _vm_rss_mb(pid)
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # restart the peak-RSS counter (VmHWM) here
        res = comfyui_server.run(wf, timeout=600)
        assert res.succeeded, res.status
        return _vm_hwm_mb(pid) - before, res

    load = {"1": {"class_type": "LoadImage", "inputs": {"image": "mi_huge.png"}},
            "9": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
            "10": {"class_type": "PreviewAny", "inputs": {"source": ["9", 0]}}}
    comfy_part, _ = peak_growth(load)  # ComfyUI's Load Image: PIL decode + float32 copies, ~3 GB
    wf = {**load,
          "2": {"class_type": "MagicInfiniteSpeakerMasks",
                "inputs": {"image": ["1", 0], "num_speakers": 1, "source": "detect faces, else centre",
                           "face_order": ""}},
          "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}
    ours, res = peak_growth(wf)  # Load Image is cached: only the pack's node runs on the 1.2 GB IMAGE
    warn = [m["data"] for m in res.messages if m.get("type") == WARNING_EVENT and m["data"]["node"] == "2"]
    assert warn and any("10000x10000" in t and "decompression-bomb" in t and "reduced to 2000x2000" in t
                        for t in warn[0]["messages"]), warn
    assert res.outputs["2"]["warnings"] == warn[0]["messages"]
    # before: float32 full-size temporaries took ~3.6 GB on top of the IMAGE
    assert ours < 600, (ours, comfy_part)
    _still_serving(comfyui_server)


def test_batch_results_table_reports_the_fallback_and_warnings(comfyui_server, magic_test_bundle, tmp_path):
    from runner import batch

    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(tmp_path / "cat.png")
    write_wav(tmp_path / "silent.wav", seconds=0.8, freq=0.0)
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(magic_workflow("single_speaker", magic_test_bundle, "unused.wav")))
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"id": "w1", "2.image": str(tmp_path / "cat.png"), "3.audio": str(tmp_path / "silent.wav"),
                                "7.filename_prefix": "mi_batch_warn/v"}) + "\n")
    argv = [str(jobs), "--workflow", str(wf), "--out", str(tmp_path / "out"), "--server", comfyui_server.base_url]
    assert batch.main(argv) == 0
    row = batch.read_results(tmp_path / "out" / "results.csv")["w1"]
    assert row["status"] == "ok" and row["output"].endswith(".mp4")
    assert "node 5: no face found; using 1 centred region(s)" in row["warnings"], row
    assert "node 4:" in row["warnings"] and "is silent" in row["warnings"], row


def test_warning_is_a_toast_in_the_real_frontend(comfyui_server, magic_test_bundle):
    """The page that queued a prompt shows the pack's warning as a toast (web/magicinfinite_warnings.js)."""
    import time

    from . import browser

    if browser.find_chromium() is None:
        pytest.fail("chromium not installed: run scripts/install_test_system_deps.sh")
    requests.post(comfyui_server.base_url + "/settings/Comfy.TutorialCompleted", json=True, timeout=10)
    write_wav(comfyui_server.server.input_dir / "mi_silent_ui.wav", seconds=0.6, freq=0.0)
    wf = {"1": {"class_type": "MagicInfiniteModelLoader", "inputs": {"model": magic_test_bundle, "transformer": "base"}},
          "2": {"class_type": "LoadAudio", "inputs": {"audio": "mi_silent_ui.wav"}},
          "3": {"class_type": "MagicInfiniteAudioEncode", "inputs": {"model": ["1", 0], "audio_1": ["2", 0],
                                                                     "normalize": False}},
          "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 1]}}}
    with browser.Browser() as b:
        browser.open_comfyui(b, comfyui_server.base_url + "/")
        b.wait_for("!!(window.comfyAPI?.api?.api?.clientId ?? window.comfyAPI?.api?.api?.initialClientId)")
        cid = b.evaluate("window.comfyAPI.api.api.clientId ?? window.comfyAPI.api.api.initialClientId")
        r = requests.post(comfyui_server.base_url + "/prompt", json={"prompt": wf, "client_id": cid}, timeout=30)
        assert r.status_code == 200, r.text
        comfyui_server.wait_history(r.json()["prompt_id"], timeout=120)
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline and "is silent" not in text:
            text = b.evaluate("[...document.querySelectorAll('.p-toast-message')].map(e => e.innerText).join('\\n')")
            time.sleep(0.25)
        b.screenshot(browser.default_artifacts_dir() / "magicinfinite_warning_toast.png")
    assert "is silent" in text and "mouth will stay closed" in text and "MagicInfinite" in text, text


def test_hostile_bundles_parts_and_symlinks_are_one_message_in_the_server(comfyui_server, comfyui_models,
                                                                          magic_test_bundle, voice, tmp_path):
    """Issue 29: the bundle.json schema check labels `model` (HTTP 400), bad checkpoint metadata is an
    execution error naming the field (not a ZeroDivisionError), Model From Parts' 7x7 and a model name
    `5` say what is wrong, and a symlink planted in output/ lets neither a prefix nor a resume_dir out."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    src = comfyui_models / "diffusion_models" / magic_test_bundle
    mels = comfyui_models / "diffusion_models" / "mi_hostile_mels"
    shutil.copytree(src, mels, dirs_exist_ok=True)
    spec = json.loads((mels / "bundle.json").read_text())
    spec["audio"]["n_mels"] = 1e9
    (mels / "bundle.json").write_text(json.dumps(spec))
    e = _errors(comfyui_server, magic_workflow("single_speaker", "mi_hostile_mels", voice))
    # ComfyUI files a validate_inputs message under every input the function takes (model, transformer)
    labels = [(n, label) for n, label, _ in e]
    assert labels[0] == ("1", "model") and set(labels) <= {("1", "model"), ("1", "transformer")}, e
    assert "'n_mels' must be an integer in 8..512" in e[0][2], e

    heads = comfyui_models / "diffusion_models" / "mi_hostile_heads"
    shutil.copytree(src, heads, dirs_exist_ok=True)
    with safe_open(str(heads / "dit.safetensors"), "pt") as f:
        meta = f.metadata()
    cfg = json.loads(meta["config"])
    cfg["num_heads"] = 0
    save_file(load_file(heads / "dit.safetensors"), str(heads / "dit.safetensors"),
              metadata={**meta, "config": json.dumps(cfg)})
    err = comfyui_server.run(magic_workflow("single_speaker", "mi_hostile_heads", voice)).messages_of("execution_error")[0]
    assert err["node_id"] == "1" and "'num_heads' must be in 1..512, got 0" in err["exception_message"], err
    assert err["exception_type"] != "ZeroDivisionError"

    e = _errors(comfyui_server, magic_workflow("single_speaker", magic_test_bundle, voice, **{"1.model": 5}))
    assert any("must be a name (text), got 5" in d for _, _, d in e), e

    wf = magic_workflow("single_speaker", magic_test_bundle, voice)
    wf["99"] = {"class_type": "MagicInfiniteModelFromParts", "inputs": {"base_model": ["1", 0], "height": 7, "width": 7}}
    wf["6"]["inputs"]["model"] = ["99", 0]
    err = comfyui_server.run(wf).messages_of("execution_error")[0]
    assert err["node_id"] == "99" and "height 7: use 0 (the base model's size) or 16..4096" in err["exception_message"]

    outside = tmp_path / "outside"
    outside.mkdir()
    out_dir = comfyui_server.server.output_dir
    (out_dir / "mi_planted").symlink_to(outside)
    (out_dir / "magicinfinite_state").mkdir(exist_ok=True)
    (out_dir / "magicinfinite_state" / "mi_planted").symlink_to(outside)
    e = _errors(comfyui_server, magic_workflow("single_speaker", magic_test_bundle, voice,
                                               **{"7.filename_prefix": "mi_planted/x"}))
    labels = [(n, label) for n, label, _ in e]  # Save Video's validate_inputs takes filename_prefix and device
    assert labels[0] == ("7", "filename_prefix") and set(labels) <= {("7", "filename_prefix"), ("7", "device")}, e
    assert "through a symlink" in e[0][2], e
    err = comfyui_server.run(magic_workflow("single_speaker", magic_test_bundle, voice,
                                            **{"6.resume_dir": "mi_planted/run"})).messages_of("execution_error")[0]
    assert err["node_id"] == "6" and "escapes the output folder" in err["exception_message"], err
    assert not any(outside.iterdir())
    _still_serving(comfyui_server)
