"""The headless runner: the same workflow as the server test, executed in-process by ComfyUI's own
executor (``runner.headless.run_workflow``), plus the CLI contract (one error line, exit code 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ..runner import headless
from .comfyui_server import REPO_ROOT, frame_count_workflow, write_wav

# ---------------------------------------------------------------- pure helpers (no ComfyUI needed)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("5", 5),
        ("0.5", 0.5),
        ("true", True),
        ("False", False),
        ("null", None),
        ("[1, 2]", [1, 2]),
        ('"07"', "07"),
        ("hello world", "hello world"),
        ("voice.wav", "voice.wav"),
    ],
)
def test_parse_value(text, value):
    assert headless.parse_value(text) == value


def test_overrides_apply_to_a_copy_and_reject_unknown_nodes():
    wf = frame_count_workflow("a.wav")
    out = headless.apply_overrides(wf, headless.parse_overrides(["1.audio=b.wav"]))
    assert out["1"]["inputs"]["audio"] == "b.wav" and wf["1"]["inputs"]["audio"] == "a.wav"
    with pytest.raises(headless.WorkflowFormatError, match="no node with id '9'"):
        headless.apply_overrides(wf, {"9.x": 1})
    with pytest.raises(headless.WorkflowFormatError, match="NODE.INPUT=VALUE"):
        headless.parse_overrides(["seed5"])


def test_cache_args_answer_every_key_any_comfyui_version_asks_for():
    """0.3.75 reads ``lru`` and ``ram``; upstream (#13802) also ``ram_inactive``; later keys read 0."""
    args = headless._NoCacheArgs()
    assert args["lru"] == args["ram"] == args["ram_inactive"] == 0
    assert args["a_key_from_the_future"] == 0 and set(args) == {"lru", "ram", "ram_inactive"}


def test_ui_format_workflow_is_refused_with_advice():
    with pytest.raises(headless.WorkflowFormatError, match="Export \\(API\\)"):
        headless.normalize_workflow({"nodes": [], "links": [], "version": 0.4})


# ---------------------------------------------------------------- in-process ComfyUI


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("headless_input")
    write_wav(d / "voice.wav", seconds=2.25)
    write_wav(d / "short.wav", seconds=0.5, sample_rate=22050)
    (d / "broken.wav").write_bytes(b"RIFF this is not audio")
    return d


@pytest.mark.comfyui
def test_run_workflow_in_process(comfyui_install, audio_dir, tmp_path):
    result = headless.run_workflow(
        frame_count_workflow("voice.wav"),
        {},
        tmp_path / "out",
        input_dir=audio_dir,
        comfyui=comfyui_install,
        cpu=True,
    )
    assert result["outputs"]["2"]["text"] == ["56 frames at 25 fps (2.250 s)"]
    assert result["outputs"]["3"]["text"] == ["56"]
    assert result["files"] == []  # nothing saved by this workflow
    executing = [d["node"] for ev, d in result["messages"] if ev == "executing" and d.get("node")]
    assert "2" in executing

    again = headless.run_workflow(
        frame_count_workflow("voice.wav"), {"1.audio": "short.wav"}, tmp_path / "out2", input_dir=audio_dir
    )
    assert again["outputs"]["3"]["text"] == ["13"]  # 0.5 s * 25 = 12.5 frames: halves round up


@pytest.mark.comfyui
def test_run_workflow_errors_are_one_line(comfyui_install, audio_dir, tmp_path):
    with pytest.raises(headless.NodeExecutionError) as exc:
        headless.run_workflow(
            frame_count_workflow("broken.wav"), {}, tmp_path, input_dir=audio_dir, comfyui=comfyui_install
        )
    assert str(exc.value).startswith("node 1 (LoadAudio) failed: ")
    assert "\n" not in str(exc.value)

    with pytest.raises(headless.WorkflowValidationError, match="node 1 \\(LoadAudio\\).*nope.wav"):
        headless.run_workflow(frame_count_workflow("nope.wav"), {}, tmp_path, input_dir=audio_dir)
    # the wording differs by ComfyUI version ("... does not exist", "... not found"): the node's name is the fact
    with pytest.raises(headless.WorkflowValidationError, match="invalid workflow: .*NoSuchNode"):
        headless.run_workflow({"1": {"class_type": "NoSuchNode", "inputs": {}}}, {}, tmp_path)


@pytest.mark.comfyui
def test_cli_main_in_process(comfyui_install, audio_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MAGICINFINITE_COMFYUI", str(comfyui_install))
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(frame_count_workflow("voice.wav")))
    argv = [str(wf), "--input-dir", str(audio_dir), "--out", str(tmp_path / "o"), "--cpu"]

    assert headless.main([*argv, "--set", "1.audio=short.wav"]) == 0
    assert "node 2: 13 frames at 25 fps (0.500 s)" in capsys.readouterr().out

    assert headless.main([*argv, "--set", "1.audio=nope.wav"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: invalid workflow: node 1 (LoadAudio): Custom validation failed for node: "
        "audio - Invalid audio file: nope.wav"
    ]


@pytest.mark.comfyui
def test_cli_in_a_fresh_process_exits_1_with_one_line(comfyui_install, audio_dir, tmp_path):
    """``python -m runner.headless`` from the repo root (where our nodes/ could shadow ComfyUI's nodes.py)."""
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(frame_count_workflow("voice.wav")))
    cmd = [
        sys.executable,
        "-m",
        "runner.headless",
        str(wf),
        "--input-dir",
        str(audio_dir),
        "--cpu",
        "--out",
        str(tmp_path / "o"),
        "--set",
        "1.audio=broken.wav",
    ]
    env = dict(os.environ, MAGICINFINITE_COMFYUI=str(comfyui_install))
    bad = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: node 1 (LoadAudio) failed:"), bad.stderr


@pytest.mark.comfyui
def test_readme_demo_workflow_with_the_embedded_demo_model(comfyui_install, tmp_path):
    """What `scripts/demo.sh` runs: the single-speaker workflow as shipped, the embedded demo model."""
    import av

    env = {**os.environ, "MAGICINFINITE_COMFYUI": str(comfyui_install)}
    proc = subprocess.run(
        [sys.executable, "-m", "runner.headless", str(REPO_ROOT / "workflows" / "single_speaker_api.json"),
         "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    videos = list(tmp_path.rglob("single_speaker_*.mp4"))
    assert len(videos) == 1, proc.stdout
    with av.open(str(videos[0])) as c:
        frames = sum(1 for _ in c.decode(video=0))
        size = (c.streams.video[0].width, c.streams.video[0].height)
        audio = c.streams.audio[0]
        seconds = float(audio.duration * audio.time_base)
    assert size == (512, 512)  # issue 26: the demo workflows render at 512 x 512, the portrait's own size
    assert frames == 111  # workflows/assets/voice_one_speaker.wav is 4.44 s
    assert abs(seconds - 4.44) < 0.05
    # a newcomer sees the result, not noise: no TF Lite / absl start-up lines, no temporary preview PNG
    assert "XNNPACK" not in proc.stderr and "W0000" not in proc.stderr, proc.stderr[-2000:]
    files = [line for line in proc.stdout.splitlines() if line.startswith("/")]
    assert files == [str(videos[0].resolve())], proc.stdout


_PROMPT_SERVER_ORDER = """
import asyncio, importlib, sys
comfy = sys.argv[1]
sys.path.insert(0, comfy)
importlib.import_module("comfy.options")
importlib.import_module("comfy.cli_args").args.cpu = True
importlib.import_module("utils.extra_config")  # first, as main.py does: nodes.py puts comfy/ on sys.path
server = importlib.import_module("server")
nodes = importlib.import_module("nodes")
seen = []
original = nodes.init_extra_nodes

async def recording(*args, **kwargs):
    seen.append(server.PromptServer.instance)
    return await original(*args, **kwargs)

nodes.init_extra_nodes = recording
from runner import headless
headless.bootstrap(comfy, cpu=True)
assert seen and seen[0] is headless._Comfy.server, seen
print("stand-in installed before built-in nodes")
"""


@pytest.mark.comfyui
def test_prompt_server_stand_in_exists_before_built_in_nodes_load(comfyui_install):
    """Upstream's nodes_replacements.py registers with PromptServer.instance when it is imported."""
    done = subprocess.run([sys.executable, "-c", _PROMPT_SERVER_ORDER, str(comfyui_install)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "stand-in installed" in done.stdout, done.stderr[-2000:]
