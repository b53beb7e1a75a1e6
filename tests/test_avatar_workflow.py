"""workflows/hunyuan_avatar_api.json end to end in the real ComfyUI server, on the CPU, at a tiny shape.

The test writes a tiny random HunyuanVideo-Avatar file (Avatar key names), a tiny random HunyuanVideo VAE
(ComfyUI layout) and a tiny random Whisper (transformers folder) into the server's model folders; the
Model Loader finds the Avatar file in diffusion_models and its parts beside it, as with the real files.
"""

from __future__ import annotations

import json
import time

import pytest

from .avatar_fixtures import AVATAR_FILE, write_avatar_models
from .comfyui_server import WORKFLOWS_DIR, write_wav

pytestmark = pytest.mark.comfyui


@pytest.fixture(scope="module")
def avatar_models(comfyui_models):
    return write_avatar_models(comfyui_models)


def test_model_loader_lists_the_avatar_file(comfyui_server, avatar_models):
    options = comfyui_server.object_info("MagicInfiniteModelLoader")["MagicInfiniteModelLoader"]
    assert AVATAR_FILE in json.dumps(options["input"]["required"]["model"])


def test_hunyuan_avatar_workflow_runs_two_speakers(comfyui_server, avatar_models):
    server = comfyui_server.server
    write_wav(server.input_dir / "mi_avatar_a.wav", seconds=0.8, freq=180.0)
    write_wav(server.input_dir / "mi_avatar_b.wav", seconds=0.4, freq=260.0)
    wf = json.loads((WORKFLOWS_DIR / "hunyuan_avatar_api.json").read_text())
    wf["1"]["inputs"]["model"] = AVATAR_FILE
    wf["3"]["inputs"]["audio"] = "mi_avatar_a.wav"
    wf["8"]["inputs"]["audio"] = "mi_avatar_b.wav"
    wf["9"]["inputs"]["duration"] = 0.4  # speaker 2 answers after speaker 1
    wf["6"]["inputs"]["steps"] = 2
    t0 = time.perf_counter()
    result = comfyui_server.run(wf, timeout=300)
    took = time.perf_counter() - t0
    assert result.succeeded, result.history.get("status")
    assert "6" in result.executed_nodes() and "7" in result.executed_nodes()
    text = result.outputs["6"]["text"][0]
    assert "for 20 frames" in text, text  # 0.8 s of audio at 25 fps, the video cut to the audio's length
    videos = [p for p in (server.output_dir / "MagicInfinite").glob("hunyuan_avatar*.mp4")]
    assert videos and videos[0].stat().st_size > 0
    assert took < 60, f"the tiny Avatar workflow took {took:.0f} s"
