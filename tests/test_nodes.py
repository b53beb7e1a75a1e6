"""The MagicInfinite nodes inside a real ComfyUI 0.3.75: registration, the single-speaker workflow over
HTTP + websocket with a tiny random bundle, our error messages, and path safety."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from .comfyui_server import PromptRejected, frame_count_workflow, magic_workflow, write_wav

pytestmark = pytest.mark.comfyui

NODES = {
    "MagicInfiniteModelLoader": (["model"], ["MAGICINFINITE_MODEL"]),
    "MagicInfiniteDiTLoader": (["dit_name", "weight_dtype"], ["MAGICINFINITE_DIT"]),
    "MagicInfiniteVAELoader": (["vae_name"], ["MAGICINFINITE_VAE"]),
    "MagicInfiniteTextEncoderLoader": (["text_encoder", "clip_l"], ["MAGICINFINITE_TEXT_ENCODER"]),
    "MagicInfiniteAudioEncoderLoader": (["audio_encoder", "n_mels"], ["MAGICINFINITE_AUDIO_ENCODER"]),
    "MagicInfiniteModelFromParts": (["height", "width"], ["MAGICINFINITE_MODEL"]),
    "MagicInfiniteLoRA": (["model", "lora_name", "strength"], ["MAGICINFINITE_MODEL"]),
    "MagicInfiniteAudioEncode": (["model", "audio_1", "normalize"], ["MAGICINFINITE_AUDIO", "INT", "AUDIO"]),
    "MagicInfiniteAudioFrameCount": (["audio"], ["INT", "FLOAT"]),
    "MagicInfiniteSpeakerMasks": (["image", "num_speakers", "source", "face_order"], ["MASK", "IMAGE"]),
    "MagicInfiniteCFG": (["mode", "audio_scale", "text_scale", "boundary"], ["MAGICINFINITE_CFG"]),
    "MagicInfiniteSampler": (
        ["model", "portrait", "audio_features", "prompt", "mode", "steps", "window", "overlap", "shift", "seed",
         "resume_dir", "backend", "device", "processes", "max_size", "head_motion", "head_deadzone"],
        ["MAGICINFINITE_LATENT"],
    ),
    "MagicInfiniteSaveVideo": (["model", "latent", "filename_prefix", "decode_chunk", "device"], ["VIDEO"]),
    "MagicInfiniteDecode": (["model", "latent", "max_seconds", "decode_chunk", "device"], ["IMAGE", "AUDIO", "VIDEO"]),
}
SECONDS = 1.6  # 40 frames at 25 fps exactly


@pytest.fixture(scope="module")
def voice(comfyui_server) -> str:
    write_wav(comfyui_server.server.input_dir / "mi_voice_1600ms.wav", seconds=SECONDS)
    return "mi_voice_1600ms.wav"


def test_object_info_lists_every_node(comfyui_server, magic_test_bundle):
    info = comfyui_server.object_info()
    for node, (inputs, outputs) in NODES.items():
        assert node in info, node
        spec = info[node]
        assert spec["category"] == "MagicInfinite"
        declared = {**spec["input"].get("required", {}), **spec["input"].get("optional", {})}
        assert set(inputs) <= set(declared), (node, sorted(declared))
        assert spec["output"] == outputs, node
        assert spec["description"], node
    # Installed bundles are listed (combo refreshed per request), next to the embedded demo.
    options = info["MagicInfiniteModelLoader"]["input"]["required"]["model"]
    values = options[1]["options"] if isinstance(options[0], str) else options[0]
    assert "embedded demo" in values and magic_test_bundle in values
    assert [f"audio_{i}" for i in (2, 3, 4)] == sorted(info["MagicInfiniteAudioEncode"]["input"]["optional"])


def test_single_speaker_workflow_writes_mp4_with_audio_and_progress(comfyui_server, magic_test_bundle, voice):
    import av

    wf = magic_workflow("single_speaker", magic_test_bundle, voice)
    # Also decode in memory and hand the VIDEO to ComfyUI's own SaveVideo.
    wf["20"] = {"class_type": "MagicInfiniteDecode",
                "inputs": {"model": ["1", 0], "latent": ["6", 0], "max_seconds": 20.0, "decode_chunk": 8,
                           "device": "auto"}}
    wf["21"] = {"class_type": "SaveVideo",
                "inputs": {"video": ["20", 2], "filename_prefix": "mi_test/builtin", "format": "auto",
                           "codec": "auto"}}
    result = comfyui_server.run(wf, timeout=300)
    assert result.succeeded, result.history.get("status")
    out_dir = comfyui_server.server.output_dir

    frames = round(SECONDS * 25)
    for node in ("7", "21"):
        item = result.outputs[node]["images"][0]
        path = out_dir / item["subfolder"] / item["filename"]
        with av.open(str(path)) as c:
            assert c.streams.audio, f"node {node}: no audio stream"
            assert sum(1 for _ in c.decode(video=0)) == frames, node
            assert c.streams.video[0].width == 64  # the tiny test bundle
    assert result.outputs["7"]["images"][0]["filename"].startswith("single_speaker_")

    # Our sampler drove a ComfyUI progress bar: windows x steps, ending at max.
    prog = [d for d in result.messages_of("progress") if d.get("node") == "6"]
    assert prog and prog[-1]["value"] == prog[-1]["max"] >= 2
    assert [d["value"] for d in prog] == sorted(d["value"] for d in prog)
    assert any(d.get("node") == "7" for d in result.messages_of("progress"))  # decode chunks


def test_max_size_input_shrinks_the_embedded_demo_video(comfyui_server, voice):
    """The Sampler's max_size caps the embedded (motion-latent) demo's output, which is otherwise the portrait's
    own size (the shipped workflow's 512 x 512 portrait)."""
    import av

    wf = magic_workflow("single_speaker", "embedded demo", voice,
                        **{"1.transformer": "4-step distilled", "6.steps": 4, "6.max_size": 256})
    result = comfyui_server.run(wf, timeout=300)
    assert result.succeeded, result.history.get("status")
    item = result.outputs["7"]["images"][0]
    with av.open(str(comfyui_server.server.output_dir / item["subfolder"] / item["filename"])) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (256, 256)
        assert sum(1 for _ in c.decode(video=0)) == round(SECONDS * 25)


def test_usp_backend_runs_in_worker_processes_and_matches_single_device(comfyui_server, magic_test_bundle, voice):
    """The sampler node hands windows to 2 persistent gloo workers; ComfyUI stays one process."""
    import av

    out_dir = comfyui_server.server.output_dir
    frames = {}
    runs = {"single": ("single device", 0), "usp": ("multi-process (USP)", 0), "other_seed": ("single device", 1)}
    for name, (backend, seed) in runs.items():
        wf = magic_workflow("single_speaker", magic_test_bundle, voice, **{
            "6.backend": backend, "6.processes": 2, "6.seed": seed, "7.filename_prefix": f"mi_usp/{name}"})
        result = comfyui_server.run(wf, timeout=300)
        assert result.succeeded, result.history.get("status")
        item = result.outputs["7"]["images"][0]
        with av.open(str(out_dir / item["subfolder"] / item["filename"])) as c:
            frames[name] = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(int)
    assert frames["single"].shape == frames["usp"].shape
    # The SP forward equals one process to ~1e-6 (tests/test_usp.py); the random test VAE amplifies such
    # differences, so compare against what another seed changes.
    same = np.abs(frames["single"] - frames["usp"]).mean()
    other = np.abs(frames["single"] - frames["other_seed"]).mean()
    assert same < 0.25 * other, (same, other)


def test_lora_node_merges_a_lora_from_models_loras(comfyui_server, comfyui_models, magic_test_bundle, voice):
    import torch

    from magicinfinite_core.weights.checkpoints import save_state_dict

    g = torch.Generator().manual_seed(0)
    hidden = 128
    save_state_dict(comfyui_models / "loras" / "mi_test_lora.safetensors", {
        "diffusion_model.double_blocks.0.img_attn_qkv.lora_A.weight": torch.randn(4, hidden, generator=g),
        "diffusion_model.double_blocks.0.img_attn_qkv.lora_B.weight": torch.randn(3 * hidden, 4, generator=g),
    }, kind="lora")
    wf = magic_workflow("single_speaker", magic_test_bundle, voice, **{"7.filename_prefix": "mi_lora/x"})
    wf["30"] = {"class_type": "MagicInfiniteLoRA",
                "inputs": {"model": ["1", 0], "lora_name": "mi_test_lora.safetensors", "strength": 0.5}}
    for node in wf.values():
        for key, value in node["inputs"].items():
            if value == ["1", 0] and node["class_type"] == "MagicInfiniteSampler":
                node["inputs"][key] = ["30", 0]
    result = comfyui_server.run(wf, timeout=300)
    assert result.succeeded, result.history.get("status")
    wf["30"]["inputs"]["lora_name"] = "mi_test_lora.pt"
    assert "only .safetensors" in _rejected(comfyui_server, wf)


def test_speaker_masks_detected_and_drawn(comfyui_server):
    inp = comfyui_server.server.input_dir
    Image.open(_asset("portrait_two_speakers.jpg")).save(inp / "mi_two.png")
    for i, (x0, x1) in enumerate([(10, 100), (140, 230)]):
        m = np.zeros((256, 256, 3), np.uint8)
        m[100:220, x0:x1] = 255
        Image.fromarray(m).save(inp / f"mi_mask{i}.png")
    wf = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "mi_two.png"}},
        "2": {"class_type": "MagicInfiniteSpeakerMasks",
              "inputs": {"image": ["1", 0], "num_speakers": 2, "source": "auto", "face_order": "1,0"}},
        "3": {"class_type": "LoadImageMask", "inputs": {"image": "mi_mask0.png", "channel": "red"}},
        "4": {"class_type": "LoadImageMask", "inputs": {"image": "mi_mask1.png", "channel": "red"}},
        "5": {"class_type": "MagicInfiniteSpeakerMasks",
              "inputs": {"image": ["1", 0], "num_speakers": 2, "source": "auto", "face_order": "",
                         "mask_1": ["3", 0], "mask_2": ["4", 0]}},
        "6": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 0]}},
        "7": {"class_type": "MaskToImage", "inputs": {"mask": ["5", 0]}},
        "8": {"class_type": "GetImageSize", "inputs": {"image": ["6", 0]}},
        "9": {"class_type": "GetImageSize", "inputs": {"image": ["7", 0]}},
        "10": {"class_type": "PreviewAny", "inputs": {"source": ["8", 2]}},
        "11": {"class_type": "PreviewAny", "inputs": {"source": ["9", 2]}},
    }
    result = comfyui_server.run(wf)
    assert result.succeeded, result.history.get("status")
    assert result.outputs["2"]["images"] and result.outputs["5"]["images"]  # overlay previews
    assert result.outputs["10"]["text"] == ["2"] and result.outputs["11"]["text"] == ["2"]  # one mask per speaker


def test_portrait_without_face_fails_with_our_message_then_server_runs_next(
    comfyui_server, magic_test_bundle, voice
):
    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(comfyui_server.server.input_dir / "mi_noface.png")
    wf = magic_workflow("single_speaker", magic_test_bundle, voice)
    wf["2"]["inputs"]["image"] = "mi_noface.png"
    wf["5"]["inputs"]["source"] = "detect faces"
    result = comfyui_server.run(wf, timeout=300)
    assert not result.succeeded
    err = result.messages_of("execution_error")[0]
    assert err["node_id"] == "5" and err["exception_type"].endswith("MaskError")
    assert "no face found" in err["exception_message"] and "mask editor" in err["exception_message"]

    write_wav(comfyui_server.server.input_dir / "mi_after.wav", seconds=1.0)
    after = comfyui_server.run(frame_count_workflow("mi_after.wav"))
    assert after.succeeded and after.outputs["3"]["text"] == ["25"]


def _rejected(client, wf) -> str:
    with pytest.raises(PromptRejected) as exc:
        client.queue_prompt(wf)
    assert exc.value.status == 400
    return " ".join(
        f"{e.get('message')} {e.get('details')}"
        for info in exc.value.body.get("node_errors", {}).values()
        for e in info.get("errors", [])
    )


def test_missing_model_is_a_validation_error_naming_the_folder(comfyui_server, voice):
    msg = _rejected(comfyui_server, magic_workflow("single_speaker", "no_such_bundle", voice))
    assert "'no_such_bundle' not found in models/diffusion_models" in msg


@pytest.mark.parametrize(
    ("key", "value", "expect"),
    [
        ("7.filename_prefix", "../escape/video", "must not contain '..'"),
        ("7.filename_prefix", "/tmp/mi_abs/video", "must be relative"),
        ("6.overlap", 40, "must be under half the window"),
        ("6.head_motion", 1.5, "bigger than max of 1.0"),
        ("6.head_deadzone", 0.5, "bigger than max of 0.1"),
        ("1.model", "../../../etc", "must not contain '..'"),
    ],
)
def test_paths_and_values_are_checked_up_front(comfyui_server, magic_test_bundle, voice, key, value, expect):
    msg = _rejected(comfyui_server, magic_workflow("single_speaker", magic_test_bundle, voice, **{key: value}))
    assert expect in msg, msg
    out = comfyui_server.server.output_dir
    assert not (out.parent / "escape").exists() and not __import__("os").path.exists("/tmp/mi_abs")


@pytest.mark.parametrize(("key", "value", "expect"), [("6.head_motion", 0.0, "head_motion below 1"),
                                                      ("6.head_deadzone", 0.02, "head_deadzone above 0")])
def test_head_holds_on_a_pixel_latent_model_say_what_they_need(comfyui_server, magic_test_bundle, voice, key, value,
                                                                expect):
    res = comfyui_server.run(magic_workflow("single_speaker", magic_test_bundle, voice, **{key: value}), timeout=300)
    err = res.messages_of("execution_error")[0]
    assert err["node_id"] == "6" and f"{expect} needs a motion-latent model" in err["exception_message"]


def test_bundle_without_distilled_generator_fails_first_thing_naming_it(comfyui_server, magic_test_bundle, voice):
    wf = magic_workflow("single_speaker", magic_test_bundle, voice, **{"1.transformer": "4-step distilled"})
    res = comfyui_server.run(wf, timeout=120)
    err = res.messages_of("execution_error")[0]
    assert err["node_id"] == "1" and "has no 4-step distilled generator" in err["exception_message"]
    assert res.executed_nodes()[:1] == ["1"]  # nothing else ran


def test_model_files_resolve_only_inside_model_folders_and_only_safetensors(comfyui_server, comfyui_models):
    (comfyui_models / "diffusion_models" / "weights.ckpt").write_bytes(b"not loaded")
    cases = {
        "../../../etc/passwd.safetensors": "must not contain '..'",
        "/etc/passwd.safetensors": "must be relative",
        "weights.ckpt": "only .safetensors weights are loaded",
        "absent.safetensors": "not found in models/diffusion_models",
    }
    for name, expect in cases.items():
        wf = {"1": {"class_type": "MagicInfiniteDiTLoader", "inputs": {"dit_name": name, "weight_dtype": "auto"}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
        assert expect in _rejected(comfyui_server, wf), name


def _asset(name: str):
    from .comfyui_server import WORKFLOWS_DIR

    return WORKFLOWS_DIR / "assets" / name
