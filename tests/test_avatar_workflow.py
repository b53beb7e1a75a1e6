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


def test_llava_and_clip_from_text_encoders_drive_the_avatar_workflow(comfyui_server, comfyui_models, avatar_models):
    """The Text Encoder Loader's LLaVA + CLIP-L choice (two folders in models/text_encoders) and the Model
    Loader's one-file Avatar model whose text widths are theirs (found through ComfyUI's folder_paths)."""
    from dataclasses import replace

    from magicinfinite_core.config import dit_preset

    from .comfyui_server import PromptRejected
    from .llava_fixtures import write_clip_text, write_llava

    name = "hunyuan_video_avatar_llava_tiny.safetensors"
    write_avatar_models(comfyui_models, cfg=replace(dit_preset("tiny-avatar"), text_dim=32, pooled_dim=24),
                        dit_name=name)
    write_llava(comfyui_models / "text_encoders" / "llava-llama-3-tiny", 32)
    write_clip_text(comfyui_models / "text_encoders" / "clip-l-tiny", 24)
    info = comfyui_server.object_info("MagicInfiniteTextEncoderLoader")["MagicInfiniteTextEncoderLoader"]["input"]
    assert "llava-llama-3-tiny" in json.dumps(info["required"]["text_encoder"])
    assert "clip-l-tiny" in json.dumps(info["optional"]["clip_l"])

    server = comfyui_server.server
    write_wav(server.input_dir / "mi_avatar_llava.wav", seconds=0.4, freq=200.0)
    wf = json.loads((WORKFLOWS_DIR / "hunyuan_avatar_api.json").read_text())
    wf["1"]["inputs"]["model"] = name
    wf["3"]["inputs"]["audio"] = wf["8"]["inputs"]["audio"] = "mi_avatar_llava.wav"
    wf["9"]["inputs"]["duration"] = 0.0
    wf["6"]["inputs"]["steps"] = 2
    del wf["11"]  # the mask preview: with another output left, ComfyUI would run that and ignore node 7
    wf["13"] = {"class_type": "MagicInfiniteTextEncoderLoader",
                "inputs": {"text_encoder": "llava-llama-3-tiny", "clip_l": "none"}}
    wf["14"] = {"class_type": "MagicInfiniteModelFromParts",
                "inputs": {"base_model": ["1", 0], "text_encoder": ["13", 0], "height": 0, "width": 0}}
    for node in ("4", "6", "7"):
        wf[node]["inputs"]["model"] = ["14", 0]
    with pytest.raises(PromptRejected, match="pick its CLIP-L folder"):
        comfyui_server.queue_prompt(wf)
    wf["13"]["inputs"]["clip_l"] = "clip-l-tiny"
    result = comfyui_server.run(wf, timeout=300)
    assert result.succeeded, result.history.get("status")
    assert "13" in result.executed_nodes() and "7" in result.executed_nodes()
