"""Issue 29 cases 4 and 16 on the real entry points: a choice (COMBO) value that is not offered, and a
filename_prefix that cannot be a file name, are refused at validation with one line naming the input
(and the allowed values) — by a real ComfyUI 0.3.75 server, ``magicinfinite run --set`` and batch
columns — and nothing is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .comfyui_server import REPO_ROOT, PromptRejected, magic_workflow, write_wav

pytestmark = pytest.mark.comfyui

SAMPLER_MODES = "'distilled', 'base (CFG)'"
# (override, node id, words the one message must hold)
BAD_CHOICES = [
    ({"6.mode": "distiled"}, "6", ["mode 'distiled' is not an allowed value", SAMPLER_MODES]),
    ({"1.transformer": "8-step"}, "1", ["transformer '8-step'", "'base', '4-step distilled'"]),
    ({"6.backend": "gpu-farm"}, "6", ["backend 'gpu-farm'", "'single device', 'multi-process (USP)'"]),
    ({"30.mode": "triple"}, "30", ["mode 'triple'", "'two-fold only', 'off'"]),
    ({"5.source": "magic"}, "5", ["source 'magic'", "'detect faces, else centre'"]),
    ({"6.device": "tpu:7"}, "6", ["device 'tpu:7'", "'auto', 'cpu', 'cuda'"]),
    ({"7.device": "tpu:7"}, "7", ["device 'tpu:7'", "'auto', 'cpu', 'cuda'"]),
    ({"40.weight_dtype": "int8"}, "40", ["weight_dtype 'int8'", "'bfloat16', 'float16', 'float32'"]),
    ({"7.filename_prefix": "mi_nul/a\x00b"}, "7", ["filename_prefix contains the control character '\\x00'"]),
    ({"7.filename_prefix": "x" * 5000}, "7", ["filename_prefix is 5000 characters long"]),
]
IDS = ["mode", "transformer", "backend", "cfg-mode", "source", "sampler-device", "save-device", "weight_dtype",
       "prefix-nul", "prefix-5000"]


def _workflow(bundle: str, voice: str, overrides: dict) -> dict:
    """The single-speaker workflow with a CFG node (30) and a DiT loader (40 → Model From Parts 41)."""
    wf = magic_workflow("single_speaker", bundle, voice, **{"6.mode": "base (CFG)"})
    wf["30"] = {"class_type": "MagicInfiniteCFG",
                "inputs": {"mode": "off", "audio_scale": 1.0, "text_scale": 1.0, "boundary": 0.5}}
    wf["40"] = {"class_type": "MagicInfiniteDiTLoader",
                "inputs": {"dit_name": f"{bundle}/dit.safetensors", "weight_dtype": "auto"}}
    wf["41"] = {"class_type": "MagicInfiniteModelFromParts",
                "inputs": {"dit": ["40", 0], "base_model": ["1", 0], "height": 0, "width": 0}}
    wf["6"]["inputs"].update(cfg=["30", 0], model=["41", 0])
    for key, value in overrides.items():
        node, _, name = key.partition(".")
        wf[node]["inputs"][name] = value
    return wf


@pytest.fixture(scope="module")
def voice(comfyui_server) -> str:
    write_wav(comfyui_server.server.input_dir / "mi_choice_voice.wav", seconds=0.6)
    return "mi_choice_voice.wav"


@pytest.mark.parametrize(("override", "node", "words"), BAD_CHOICES, ids=IDS)
def test_server_refuses_values_not_offered(comfyui_server, magic_test_bundle, voice, override, node, words):
    out = comfyui_server.server.output_dir
    before = sorted(out.rglob("*"))
    with pytest.raises(PromptRejected) as exc:
        comfyui_server.queue_prompt(_workflow(magic_test_bundle, voice, override))
    assert exc.value.status == 400
    errors = exc.value.body["node_errors"]
    assert list(errors) == [node], errors  # only the node that holds the bad value
    details = {e["details"] for e in errors[node]["errors"]}
    assert all(all(w in d for w in words) for d in details), details
    assert sorted(out.rglob("*")) == before  # nothing written


def test_the_good_workflow_passes_validation(comfyui_server, magic_test_bundle, voice):
    """The reference workflow the cases above break is itself valid (so each refusal is the bad value's)."""
    from .comfyui_server import ComfyClient

    assert isinstance(comfyui_server, ComfyClient)
    import requests

    wf = _workflow(magic_test_bundle, voice, {"7.filename_prefix": "mi_choice_ok/v"})
    r = requests.post(comfyui_server.base_url + "/prompt", json={"prompt": wf}, timeout=30)
    assert r.status_code == 200, r.text
    comfyui_server.wait_history(r.json()["prompt_id"], timeout=300)


@pytest.mark.parametrize(("override", "node", "words"), BAD_CHOICES, ids=IDS)
def test_run_set_refuses_with_one_line(comfyui_install, comfyui_models, magic_test_bundle, tmp_path, capsys,
                                       override, node, words):
    """``magicinfinite run --set`` (the CLI's main, in this process): exit 1, one ``error:`` line, no files."""
    from runner import headless

    write_wav(tmp_path / "v.wav", seconds=0.6)
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(_workflow(magic_test_bundle, "v.wav", {})))
    (key, value), = override.items()
    out = tmp_path / "out"
    code = headless.main([str(wf), "--set", f"{key}={json.dumps(value)}", "--out", str(out), "--cpu",
                          "--input-dir", str(tmp_path), "--models-dir", str(comfyui_models),
                          "--comfyui", str(comfyui_install)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith(f"error: invalid workflow: node {node} (") and all(w in err[0] for w in words), err
    assert not out.exists()  # refused before the output folder was made


def test_run_subprocess_refuses_a_typo_before_sampling(comfyui_install, comfyui_models, magic_test_bundle, tmp_path):
    """The real CLI in a fresh process: ``run --set 6.mode=distiled`` exits 1 with one line, writes nothing."""
    write_wav(tmp_path / "v.wav", seconds=0.6)
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(_workflow(magic_test_bundle, "v.wav", {})))
    out = tmp_path / "out"
    env = dict(os.environ, MAGICINFINITE_COMFYUI=str(comfyui_install))
    proc = subprocess.run(
        [sys.executable, "-m", "runner.cli", "run", str(wf),
         "--set", "6.mode=distiled", "--out", str(out), "--cpu", "--input-dir", str(tmp_path),
         "--models-dir", str(comfyui_models)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert "node 6 (MagicInfiniteSampler)" in lines[0] and "mode 'distiled'" in lines[0] and SAMPLER_MODES in lines[0]
    assert not out.exists()  # refused before the output folder was made


def test_interrupt_lands_within_seconds(comfyui_server, magic_test_bundle, voice):
    """Case 18: POST /interrupt while a job samples at 4x the bundle's size; the job ends within seconds
    (the pack's nodes check ComfyUI's interrupt flag after every step and chunk and between stages)."""
    import time
    import uuid

    import requests
    import websocket

    wf = _workflow(magic_test_bundle, voice, {"6.steps": 200, "41.height": 256, "41.width": 256,
                                              "7.filename_prefix": "mi_interrupt/v"})
    cid = uuid.uuid4().hex
    ws = websocket.create_connection(f"{comfyui_server.ws_url}?clientId={cid}", timeout=120)
    try:
        pid = comfyui_server.queue_prompt(wf, cid)
        t_interrupt = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            raw = ws.recv()
            if isinstance(raw, bytes):
                continue
            m = json.loads(raw)
            d = m.get("data", {})
            if t_interrupt is None and m["type"] == "progress" and d.get("node") == "6" and d.get("value", 0) >= 2:
                t_interrupt = time.monotonic()
                requests.post(comfyui_server.base_url + "/interrupt", json={}, timeout=10)
            if m["type"] in ("execution_interrupted", "execution_error", "execution_success") and d.get(
                    "prompt_id") == pid:
                break
        latency = time.monotonic() - t_interrupt
    finally:
        ws.close()
    assert m["type"] == "execution_interrupted", m
    print(f"/interrupt to execution_interrupted: {latency:.2f} s")
    assert latency < 5, latency
    assert not (comfyui_server.server.output_dir / "mi_interrupt").exists()
