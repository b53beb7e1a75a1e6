"""Writes the example workflows: API format always; UI format via ComfyUI's own frontend (--ui).

    python workflows/make_workflows.py          # workflows/*_api.json
    python workflows/make_workflows.py --ui     # also *.json (UI format), needs ComfyUI + Chromium
    python workflows/make_workflows.py --ui hunyuan_avatar   # the UI format of the named workflows only

Why generated: the three workflows share most nodes; editing one Python source keeps node ids and
widget values consistent, and the UI files come from the frontend's own API→UI conversion so they
load in ComfyUI exactly as if built there.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEMO = "magicinfinite_demo_"  # nodes/assets.py copies workflows/assets/* into the input folder with this prefix

# Node ids every workflow shares (the batch runner's jobs and the tests refer to them).
MODEL, PORTRAIT, VOICE, ENCODE, MASKS, SAMPLER, SAVE = "1", "2", "3", "4", "5", "6", "7"


def _base(portrait: str, voice: str, prompt: str, prefix: str, *, speakers: int = 1,
          resume_dir: str = "") -> dict[str, Any]:
    """The shared graph: the demo's 4-step distilled generator (no CFG, shift 3 as distilled). For the
    base model set the loader's transformer to "base" and the sampler to "base (CFG)", 20 steps."""
    return {
        MODEL: {"class_type": "MagicInfiniteModelLoader",
                "inputs": {"model": "embedded demo", "transformer": "4-step distilled"},
                "_meta": {"title": "MagicInfinite Model Loader"}},
        PORTRAIT: {"class_type": "LoadImage", "inputs": {"image": DEMO + portrait},
                   "_meta": {"title": "Portrait"}},
        VOICE: {"class_type": "LoadAudio", "inputs": {"audio": DEMO + voice},
                "_meta": {"title": "Voice (speaker 1)"}},
        ENCODE: {"class_type": "MagicInfiniteAudioEncode",
                 "inputs": {"model": [MODEL, 0], "audio_1": [VOICE, 0], "normalize": False},
                 "_meta": {"title": "MagicInfinite Audio Encode"}},
        MASKS: {"class_type": "MagicInfiniteSpeakerMasks",
                "inputs": {"image": [PORTRAIT, 0], "num_speakers": speakers,
                           "source": "detect faces, else centre" if speakers == 1 else "auto", "face_order": ""},
                "_meta": {"title": "MagicInfinite Speaker Masks"}},
        SAMPLER: {"class_type": "MagicInfiniteSampler",
                  "inputs": {"model": [MODEL, 0], "portrait": [PORTRAIT, 0], "audio_features": [ENCODE, 0],
                             "speaker_masks": [MASKS, 0], "prompt": prompt, "negative_prompt": "",
                             "mode": "distilled", "steps": 4, "window": 33, "overlap": 8, "shift": 3.0,
                             "seed": 42, "resume_dir": resume_dir, "backend": "single device", "device": "auto"},
                  "_meta": {"title": "MagicInfinite Sliding-Window Sampler"}},
        SAVE: {"class_type": "MagicInfiniteSaveVideo",
               "inputs": {"model": [MODEL, 0], "latent": [SAMPLER, 0], "filename_prefix": prefix,
                          "decode_chunk": 8, "device": "auto"},
               "_meta": {"title": "MagicInfinite Save Video (streamed)"}},
    }


def single_speaker() -> dict[str, Any]:
    return _base("portrait_one_speaker.jpg", "voice_one_speaker.wav",
                 "A photo of a person talking with a warm smile, holding the head steady, in front of a still background.",
                 "MagicInfinite/single_speaker")


def two_speakers() -> dict[str, Any]:
    """Dialogue: speaker 1 (left face) talks first, speaker 2 (right face) answers after 4.5 s."""
    wf = _base("portrait_two_speakers.jpg", "voice_one_speaker.wav",
               "A photo of two people talking in turn, holding their heads steady, in front of a still background.",
               "MagicInfinite/two_speakers", speakers=2)
    wf["8"] = {"class_type": "LoadAudio", "inputs": {"audio": DEMO + "voice_second_speaker.wav"},
               "_meta": {"title": "Voice (speaker 2)"}}
    wf["9"] = {"class_type": "EmptyAudio", "inputs": {"duration": 4.5, "sample_rate": 16000, "channels": 1},
               "_meta": {"title": "Speaker 2 waits"}}
    wf["10"] = {"class_type": "AudioConcat", "inputs": {"audio1": ["8", 0], "audio2": ["9", 0],
                                                       "direction": "before"},
                "_meta": {"title": "Speaker 2 track"}}
    wf[ENCODE]["inputs"]["audio_2"] = ["10", 0]
    wf["11"] = {"class_type": "PreviewImage", "inputs": {"images": [MASKS, 1]},
                "_meta": {"title": "Who speaks where"}}
    return wf


def long_video() -> dict[str, Any]:
    """≥ 60 s: streamed save (frames go to disk as decoded) and a resume folder for interruptions."""
    return _base("portrait_one_speaker.jpg", "voice_long_60s.ogg",
                 "A photo of a person giving a calm, friendly talk, keeping the head still.",
                 "MagicInfinite/long_video", resume_dir="long_video_demo")


AVATAR_FILE = "hunyuan_video_avatar_720_bf16.safetensors"  # the public bf16 re-host (docs/hunyuan_avatar.md)
CFG = "12"


def hunyuan_avatar() -> dict[str, Any]:
    """HunyuanVideo-Avatar with two speakers (its own code drives one): the one-file model from
    models/diffusion_models (VAE from models/vae, Whisper from models/audio_encoders), its sampler
    settings (50 steps, shift 5, 129-frame windows) and its decaying guidance."""
    wf = two_speakers()
    wf[MODEL]["inputs"] = {"model": AVATAR_FILE, "transformer": "base"}
    wf[PORTRAIT]["_meta"]["title"] = "Portrait (704x768 works best)"
    wf[SAMPLER]["inputs"].update(mode="base (CFG)", steps=50, window=129, overlap=8, shift=5.0,
                                 prompt="Two people talking in turn in a quiet room.", cfg=[CFG, 0])
    wf[SAVE]["inputs"]["filename_prefix"] = "MagicInfinite/hunyuan_avatar"
    wf[CFG] = {"class_type": "MagicInfiniteCFG",
               "inputs": {"mode": "decaying (HunyuanVideo-Avatar)", "audio_scale": 4.0, "text_scale": 3.0,
                          "boundary": 0.75},
               "_meta": {"title": "HunyuanVideo-Avatar guidance"}}
    return wf


WORKFLOWS = {"single_speaker": single_speaker, "two_speakers": two_speakers, "long_video": long_video,
             "hunyuan_avatar": hunyuan_avatar}


def write_api() -> list[Path]:
    paths = []
    for name, fn in WORKFLOWS.items():
        p = HERE / f"{name}_api.json"
        p.write_text(json.dumps(fn(), indent=2) + "\n")
        paths.append(p)
    return paths


def write_ui(only: list[str] | None = None) -> list[Path]:
    """Convert with the ComfyUI frontend itself (a throwaway server + headless Chromium); `only`: these names."""
    import tempfile

    sys.path.insert(0, str(HERE.parent.parent))
    pkg = HERE.parent.name
    server_mod = __import__(f"{pkg}.tests.comfyui_server", fromlist=["x"])
    browser_mod = __import__(f"{pkg}.tests.browser", fromlist=["x"])
    paths = []
    with tempfile.TemporaryDirectory() as tmp:
        server = server_mod.ComfyServer(server_mod.ensure_comfyui(), Path(tmp))
        with server, browser_mod.Browser() as b:
            import requests

            requests.post(server.url + "/settings/Comfy.TutorialCompleted", json=True, timeout=10)
            browser_mod.open_comfyui(b, server.url)
            for name, fn in WORKFLOWS.items():
                if only and name not in only:
                    continue
                ui_wf = browser_mod.api_to_ui_workflow(b, fn())
                for node in ui_wf["nodes"]:  # the demo's seed stays fixed (frontend default: randomize)
                    vals = node.get("widgets_values") or []
                    if node["type"] == "MagicInfiniteSampler" and "randomize" in vals:
                        vals[vals.index("randomize")] = "fixed"
                p = HERE / f"{name}.json"
                p.write_text(json.dumps(ui_wf, indent=2) + "\n")
                paths.append(p)
    return paths


if __name__ == "__main__":
    names = [a for a in sys.argv[1:] if not a.startswith("--")]
    for p in write_api() + (write_ui(names or None) if "--ui" in sys.argv else []):
        print(p)
