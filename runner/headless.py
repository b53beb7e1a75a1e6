"""Run an API-format ComfyUI workflow in-process: no server, no browser, the same node classes.

    python -m runner.headless workflow_api.json --set 3.seed=5 --set 7.text='"hello"' --out out/

Why in-process ComfyUI rather than our own graph walker: a workflow that runs here runs the same
way in the UI (ComfyUI's own ``execution.validate_prompt`` and ``execution.PromptExecutor``, ComfyUI's
built-in nodes, our pack loaded through ComfyUI's own ``nodes.load_custom_node``). ComfyUI itself
comes from ``$MAGICINFINITE_COMFYUI`` / ``--comfyui`` (default: the cache that
``scripts/install_comfyui.sh`` fills); its Python dependencies must be in the running environment.

ComfyUI is process-global state (``sys.path``, ``folder_paths``, ``nodes.NODE_CLASS_MAPPINGS``), so it
is bootstrapped once per process; later calls only change the output/input directories.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import copy
import importlib
import json
import logging
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PACK_DIR = Path(__file__).resolve().parent.parent
COMFY_VERSION = "0.3.75"
DEFAULT_COMFYUI = Path.home() / ".cache" / "magicinfinite" / f"comfyui-{COMFY_VERSION}"
MODEL_FOLDERS = (
    "checkpoints",
    "diffusion_models",
    "vae",
    "text_encoders",
    "clip_vision",
    "loras",
    "audio_encoders",
    "model_patches",
    "upscale_models",
)
_CLIENT_ID = "magicinfinite-headless"

log = logging.getLogger("magicinfinite.headless")


class HeadlessError(Exception):
    """An error the CLI reports as one line (exit code 1) instead of a traceback."""


class WorkflowFormatError(HeadlessError):
    """The file is not an API-format workflow, or an override does not apply to it."""


class WorkflowValidationError(HeadlessError):
    """ComfyUI's ``validate_prompt`` rejected the workflow (what /prompt answers with HTTP 400)."""

    def __init__(self, message: str, error: dict[str, Any], node_errors: dict[str, Any]):
        super().__init__(message)
        self.error = error
        self.node_errors = node_errors


class NodeExecutionError(HeadlessError):
    """A node raised while the workflow ran (ComfyUI's ``execution_error`` message)."""

    def __init__(self, message: str, details: dict[str, Any]):
        super().__init__(message)
        self.details = details


# --------------------------------------------------------------------------- workflow handling


def load_workflow(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an API-format workflow file (``{"<id>": {"class_type", "inputs"}}`` or ``{"prompt": ...}``)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise WorkflowFormatError(f"workflow file not found: {path}") from e
    except json.JSONDecodeError as e:
        raise WorkflowFormatError(f"workflow {path} is not valid JSON: {e}") from e
    except UnicodeDecodeError as e:
        raise WorkflowFormatError(f"workflow {path} is not UTF-8 text (byte {e.start}); save it as UTF-8 JSON") from None
    except OSError as e:
        raise WorkflowFormatError(f"cannot read workflow {path}: {e.strerror or e}") from None
    return normalize_workflow(data)


def normalize_workflow(data: Any) -> dict[str, Any]:
    """Return the API-format node dict; refuse UI-format graphs with a message saying what to do."""
    if isinstance(data, dict) and "prompt" in data and isinstance(data["prompt"], dict):
        data = data["prompt"]
    if not isinstance(data, dict):
        raise WorkflowFormatError("workflow must be a JSON object")
    if "nodes" in data and "links" in data:
        raise WorkflowFormatError(
            "this is a UI-format workflow; export it with 'Export (API)' in ComfyUI and run that file"
        )
    for node_id, node in data.items():
        if not isinstance(node, dict) or "class_type" not in node:
            raise WorkflowFormatError(f"node {node_id!r} has no class_type: not an API-format workflow")
        node.setdefault("inputs", {})
    return {str(k): v for k, v in data.items()}


def parse_value(text: str) -> Any:
    """Parse a ``--set`` value: JSON first (ints, floats, true/false, null, lists, "strings"),
    then True/False/yes/no, else the raw text as a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    low = text.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    return text


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["3.seed=5", "7.text=hi"]`` → ``{"3.seed": 5, "7.text": "hi"}``."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise WorkflowFormatError(f"--set expects NODE.INPUT=VALUE, got {item!r}")
        overrides[key.strip()] = parse_value(value)
    return overrides


def apply_overrides(workflow: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``workflow`` with ``{"NODE.INPUT": value}`` set; unknown nodes are errors."""
    wf = copy.deepcopy(workflow)
    for key, value in overrides.items():
        node_id, _, input_name = key.partition(".")
        if node_id not in wf:
            raise WorkflowFormatError(f"--set {key}: no node with id {node_id!r} in the workflow")
        if not input_name:
            raise WorkflowFormatError(f"--set {key}: missing input name after the node id")
        wf[node_id]["inputs"][input_name] = value
    return wf


def node_inputs(class_type: str) -> set[str] | None:
    """The inputs (required and optional) ComfyUI's node class declares; None when ComfyUI is not loaded
    in this process or the class is unknown (ComfyUI's validation names an unknown class itself)."""
    if _Comfy.nodes is None:
        return None
    cls = _Comfy.nodes.NODE_CLASS_MAPPINGS.get(class_type)
    if cls is None:
        return None
    spec = cls.INPUT_TYPES()
    return set(spec.get("required", {})) | set(spec.get("optional", {}))


def unknown_input_error(workflow: dict[str, Any], key: str,
                        declared: Callable[[str], set[str] | None] = node_inputs) -> str | None:
    """Error text when ``NODE.INPUT`` names no node of ``workflow`` or an input that node does not have.

    Why: ComfyUI's validation ignores inputs a node does not declare, so ``--set 6.sed=1`` (for
    ``seed``) or a batch column ``6.nosuch`` used to run the workflow unchanged without a word. The
    inputs are the workflow node's own plus, where known, the class's declared ones (an optional input
    the exported workflow leaves out is still settable).
    """
    node_id, _, name = key.partition(".")
    node = workflow.get(node_id)
    if node is None:
        return f"the workflow has no node {node_id!r} (its nodes: {', '.join(sorted(workflow, key=_id_order))})"
    if not name:
        return "missing input name after the node id"
    klass = node.get("class_type")
    decl = declared(klass)
    if name in node.get("inputs", {}) or decl is None or name in decl:
        return None  # decl None: no declaration to judge an input the workflow leaves out
    known = set(node.get("inputs", {})) | decl
    import difflib

    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"node {node_id} ({klass}) has no input {name!r}{hint}; its inputs: {', '.join(sorted(known))}"


def _id_order(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if node_id.isdigit() else (1 << 30, node_id)


# --------------------------------------------------------------------------- ComfyUI bootstrap


class _HeadlessServer:
    """The few ``PromptServer`` attributes ``execution.PromptExecutor`` and nodes touch.

    Messages are the same events the websocket would carry (``executing``, ``progress_state``,
    ``executed``, ``execution_error``...); kept for the caller and logged at debug level.
    """

    def __init__(self) -> None:
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.last_prompt_id: str | None = None
        self.sockets_metadata: dict[str, Any] = {}
        self.messages: list[tuple[str, Any]] = []

    def send_sync(self, event: Any, data: Any, sid: str | None = None) -> None:
        if isinstance(event, str):
            self.messages.append((event, data))
            if event == "executing" and isinstance(data, dict) and data.get("node") is not None:
                log.info("executing node %s", data["node"])

    def send_progress_text(self, text: str, node_id: str, sid: str | None = None) -> None:
        self.messages.append(("progress_text", {"node_id": node_id, "text": text}))

    def queue_updated(self) -> None:
        pass


def _install_prompt_server(server: _HeadlessServer) -> None:
    """Make ``server`` ComfyUI's ``PromptServer.instance`` unless a real server is already there.

    Newer ComfyUI also registers node replacements on the instance; its own manager class is used
    when it exists, so those registrations behave as they do in the server.
    """
    try:
        manager_mod = importlib.import_module("app.node_replace_manager")
        server.node_replace_manager = manager_mod.NodeReplaceManager()
    except Exception as e:  # older ComfyUI (0.3.75) has no node replacements
        log.debug("no node replacement manager: %s", e)
    try:
        comfy_server = importlib.import_module("server")
    except Exception as e:  # pragma: no cover - aiohttp missing etc.; only some nodes need it
        log.debug("PromptServer stub not installed: %s", e)
        return
    if getattr(comfy_server.PromptServer, "instance", None) is None:
        comfy_server.PromptServer.instance = server  # type: ignore[attr-defined]


class _NoCacheArgs(dict):
    """``cache_args`` for a fresh, cache-less ``PromptExecutor`` on any ComfyUI version.

    Why a dict that answers 0 for every key: the executor indexes ``cache_args`` directly and each
    ComfyUI release may add a key (0.3.75: ``lru``, ``ram``; upstream since #13802 also
    ``ram_inactive``). 0 means "no size-based cache" for all of them; the CLASSIC cache type is used.
    """

    KNOWN_KEYS = ("lru", "ram", "ram_inactive")

    def __init__(self) -> None:
        super().__init__({key: 0 for key in self.KNOWN_KEYS})

    def __missing__(self, key: str) -> int:
        return 0


def new_executor(execution: Any, server: Any) -> Any:
    """A ``PromptExecutor`` without cross-run caching, built for the installed ComfyUI."""
    return execution.PromptExecutor(server, cache_type=execution.CacheType.CLASSIC, cache_args=_NoCacheArgs())


class _Comfy:
    """Handles to the bootstrapped ComfyUI modules (set once per process)."""

    dir: Path | None = None
    server: _HeadlessServer | None = None
    folder_paths: Any = None
    execution: Any = None
    nodes: Any = None
    temp_dir: str | None = None


def resolve_comfyui_dir(comfyui: str | os.PathLike[str] | None = None) -> Path:
    """Where ComfyUI lives: argument, else ``$MAGICINFINITE_COMFYUI``, else the install script's cache."""
    path = Path(comfyui or os.environ.get("MAGICINFINITE_COMFYUI") or DEFAULT_COMFYUI).expanduser()
    if not (path / "main.py").is_file() or not (path / "execution.py").is_file():
        raise HeadlessError(
            f"no ComfyUI at {path}; run scripts/install_comfyui.sh (or pass --comfyui / set MAGICINFINITE_COMFYUI)"
        )
    return path.resolve()


def _check_module_shadowing(comfy_dir: Path) -> None:
    """ComfyUI uses top-level names (``nodes``, ``utils``, ``server``...) that this repo also has
    (``nodes/``): if ours was imported first, ComfyUI would silently get the wrong module."""
    for name in ("nodes", "execution", "folder_paths", "server", "utils", "comfy"):
        mod = sys.modules.get(name)
        if mod is None:
            continue
        origin = getattr(mod, "__file__", None) or ""
        if origin and not Path(origin).resolve().is_relative_to(comfy_dir):
            raise HeadlessError(
                f"module {name!r} is already imported from {origin}, not from ComfyUI at {comfy_dir}; "
                "run the headless runner in a fresh process"
            )


def bootstrap(
    comfyui: str | os.PathLike[str] | None = None,
    *,
    cpu: bool = False,
    models_dir: str | os.PathLike[str] | None = None,
    extra_model_paths: Sequence[str | os.PathLike[str]] = (),
    all_custom_nodes: bool = False,
) -> Path:
    """Import ComfyUI in this process and register its built-in nodes plus this pack (idempotent).

    ``cpu`` and the model paths only take effect on the first call of a process (ComfyUI reads them
    at import time). ``models_dir`` is a folder laid out like ComfyUI's ``models/`` whose subfolders
    (``diffusion_models``, ``audio_encoders``...) are searched before ComfyUI's own.
    """
    if _Comfy.dir is not None:
        return _Comfy.dir
    comfy_dir = resolve_comfyui_dir(comfyui)
    _check_module_shadowing(comfy_dir)
    if str(comfy_dir) not in sys.path:
        sys.path.insert(0, str(comfy_dir))

    # ComfyUI's top-level modules are imported by name via importlib so nobody (ruff, readers) takes
    # `nodes` for this repo's nodes/ package. comfy.options must precede comfy.cli_args: without
    # enable_args_parsing() ComfyUI parses no argv and uses its defaults, which we then adjust.
    importlib.import_module("comfy.options")
    args = importlib.import_module("comfy.cli_args").args
    import torch

    # No usable GPU (a CPU-only torch, or none visible): ComfyUI would still ask CUDA for a device.
    args.cpu = bool(cpu) or args.cpu or not torch.cuda.is_available()
    args.disable_api_nodes = True  # no network from a batch job
    folder_paths = importlib.import_module("folder_paths")
    extra_config = importlib.import_module("utils.extra_config")

    own_yaml = comfy_dir / "extra_model_paths.yaml"
    for cfg in ([own_yaml] if own_yaml.is_file() else []) + [Path(p) for p in extra_model_paths]:
        extra_config.load_extra_path_config(str(cfg))
    if models_dir is not None:
        add_models_dir(models_dir)

    execution = importlib.import_module("execution")
    nodes = importlib.import_module("nodes")
    # The pack copies its demo inputs into ComfyUI's input folder on load; here the input folder is
    # only known per run (--input-dir), so run_workflow does it instead.
    os.environ["MAGICINFINITE_NO_DEMO_INPUTS"] = "1"

    # Before the built-in nodes load: some of them (upstream's nodes_replacements.py) register
    # themselves with PromptServer.instance at import time and fail to import without it.
    server = _HeadlessServer()
    _install_prompt_server(server)

    async def _load() -> None:
        await nodes.init_extra_nodes(init_custom_nodes=all_custom_nodes, init_api_nodes=False)
        loaded = {os.path.realpath(p) for p in nodes.LOADED_MODULE_DIRS.values()}
        if os.path.realpath(PACK_DIR) not in loaded:
            ok = await nodes.load_custom_node(str(PACK_DIR), ignore=set(), module_parent="custom_nodes")
            if not ok:
                raise HeadlessError(
                    f"ComfyUI could not load the MagicInfinite pack from {PACK_DIR} (see log)"
                )

    asyncio.run(_load())

    comfy_utils = importlib.import_module("comfy.utils")

    def _progress(
        value: float, total: float, preview: Any, prompt_id: str | None = None, node_id: str | None = None
    ):
        node = node_id or server.last_node_id
        server.messages.append(
            ("progress", {"value": value, "max": total, "node": node, "prompt_id": prompt_id})
        )
        log.info("node %s: %d/%d", node, value, total)

    comfy_utils.set_progress_bar_global_hook(_progress)

    _Comfy.temp_dir = tempfile.mkdtemp(prefix="magicinfinite-headless-")
    atexit.register(shutil.rmtree, _Comfy.temp_dir, ignore_errors=True)
    folder_paths.set_temp_directory(_Comfy.temp_dir)
    _Comfy.dir, _Comfy.server = comfy_dir, server
    _Comfy.folder_paths, _Comfy.execution, _Comfy.nodes = folder_paths, execution, nodes
    return comfy_dir


def input_directory(input_dir: str | os.PathLike[str] | None = None) -> Path:
    """ComfyUI's input folder for the next run: ``input_dir`` (what ``run_workflow`` will set) or
    ComfyUI's current one. Call after :func:`bootstrap`."""
    if input_dir is not None:
        return Path(input_dir).resolve()
    if _Comfy.folder_paths is None:
        raise HeadlessError("ComfyUI is not loaded yet; call bootstrap() first")
    return Path(_Comfy.folder_paths.get_input_directory()).resolve()


def add_models_dir(models_dir: str | os.PathLike[str]) -> None:
    """Search ``models_dir/<folder>`` first for every ComfyUI model folder name (creating none)."""
    folder_paths = importlib.import_module("folder_paths")
    root = Path(models_dir).resolve()
    for name in MODEL_FOLDERS:
        folder_paths.add_model_folder_path(name, str(root / name), is_default=True)


# --------------------------------------------------------------------------- running


DEMO_ASSETS = PACK_DIR / "workflows" / "assets"
DEMO_PREFIX = "magicinfinite_demo_"  # same names as nodes/assets.py gives them


def install_demo_inputs(input_dir: Path) -> None:
    """Copy the example workflows' portrait/voices into a custom input folder, refreshing stale copies.

    The pack does this for ComfyUI's own input folder when it loads (nodes/assets.py, same rule: a
    ``magicinfinite_demo_`` file whose bytes differ from the pack's is replaced); ``--input-dir``
    replaces that folder afterwards, so the runner repeats it there and the example workflows run as-is.
    """
    for src in sorted(DEMO_ASSETS.glob("*")):
        dst = input_dir / f"{DEMO_PREFIX}{src.name}"
        if src.is_file() and not (dst.is_file() and dst.read_bytes() == src.read_bytes()):
            input_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst.with_name(dst.name + ".tmp"))
            os.replace(dst.with_name(dst.name + ".tmp"), dst)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def exception_name(kind: Any) -> str:
    """ComfyUI's ``exception_type`` as the user should read it: a module path that is a folder is dropped.

    Why: ComfyUI imports a custom node pack under its folder's path, so an exception class of the pack
    is reported as ``/home/me/ComfyUI/custom_nodes/<pack>.nodes.common.NodeInputError`` (a temporary
    folder in tests); a real module path (``av.error.InvalidDataError``) is kept.
    """
    kind = str(kind or "error")
    module, _, name = kind.rpartition(".")
    if module and not all(part.isidentifier() for part in module.split(".")):
        return name
    return kind


def node_failure_line(details: dict[str, Any]) -> str:
    """One line for a node's ``execution_error``: which node failed, and why."""
    return _one_line(
        f"node {details.get('node_id')} ({details.get('node_type')}) failed: "
        f"{exception_name(details.get('exception_type'))}: {details.get('exception_message', 'unknown error')}"
    )


def _validation_message(error: dict[str, Any], node_errors: dict[str, Any], prompt: dict[str, Any]) -> str:
    """ComfyUI's validation errors as one line. A node's ``validate_inputs`` message is attached by
    ComfyUI to every input that function takes (``"window - <msg>"``, ``"mode - <msg>"``...): said once,
    without the misleading input label, when several inputs carry the same message."""
    parts = []
    for node_id, info in node_errors.items():
        reasons = info.get("errors", [])
        shared: dict[str, int] = {}
        for reason in reasons:
            if reason.get("type") == "custom_validation_failed":
                _, _, text = str(reason.get("details", "")).partition(" - ")
                shared[text] = shared.get(text, 0) + 1
        said: set[str] = set()
        for reason in reasons:
            details = reason.get("details")
            if reason.get("type") == "custom_validation_failed":
                _, _, text = str(details).partition(" - ")
                if text in said:
                    continue
                said.add(text)
                details = text if shared[text] > 1 else details
            parts.append(f"node {node_id} ({info.get('class_type')}): {reason.get('message')}: {details}")
    if not parts:
        parts.append(f"{error.get('message')}: {error.get('details')}".rstrip(": "))
    return _one_line("invalid workflow: " + "; ".join(parts))


def _saved_files(outputs: dict[str, Any], folder_paths: Any) -> list[str]:
    """Files named by UI outputs (``{"filename", "subfolder", "type"}`` entries), as absolute paths."""
    found = []
    for node_out in outputs.values():
        for values in node_out.values():
            if not isinstance(values, (list, tuple)):
                continue
            for item in values:
                if (
                    isinstance(item, dict)
                    and "filename" in item
                    and item.get("type") in ("output", "temp", "input")
                ):
                    base = folder_paths.get_directory_by_type(item["type"])
                    if base:
                        found.append(str(Path(base, item.get("subfolder", ""), item["filename"]).resolve()))
    return found


def _list_files(root: Path) -> set[str]:
    return {str(p.resolve()) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def validate_workflow(workflow: dict[str, Any], overrides: dict[str, Any] | None = None, *,
                      input_dir: str | os.PathLike[str] | None = None) -> None:
    """ComfyUI's own validation (what /prompt does, the nodes' ``validate_inputs`` included) without
    running anything; raises :class:`WorkflowValidationError` with one line. ComfyUI must be
    bootstrapped. Why: a batch checks every job before the first one runs."""
    folder_paths, execution = _Comfy.folder_paths, _Comfy.execution
    prompt = apply_overrides(normalize_workflow(copy.deepcopy(workflow)), overrides or {})
    if input_dir is not None:
        folder_paths.set_input_directory(str(Path(input_dir).resolve()))
    install_demo_inputs(Path(folder_paths.get_input_directory()))
    valid, error, _, node_errors = asyncio.run(execution.validate_prompt(str(uuid.uuid4()), prompt, None))
    if not valid:
        raise WorkflowValidationError(_validation_message(error or {}, node_errors, prompt), error or {}, node_errors)


def run_workflow(
    workflow: dict[str, Any],
    overrides: dict[str, Any] | None = None,
    out_dir: str | os.PathLike[str] = "out",
    *,
    input_dir: str | os.PathLike[str] | None = None,
    comfyui: str | os.PathLike[str] | None = None,
    cpu: bool = False,
    models_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Validate and execute an API-format workflow with ComfyUI's own executor, in this process.

    Returns ``{"prompt_id", "outputs", "files", "messages"}``: ``outputs`` is what /history shows
    (UI outputs per output node), ``files`` every file the run wrote under ``out_dir`` or named in its
    outputs, ``messages`` the websocket-equivalent events. Raises :class:`WorkflowValidationError` or
    :class:`NodeExecutionError` (both :class:`HeadlessError`) with a one-line message.
    """
    bootstrap(comfyui, cpu=cpu, models_dir=models_dir)
    folder_paths, execution = _Comfy.folder_paths, _Comfy.execution
    server = _Comfy.server
    assert server is not None

    prompt = apply_overrides(normalize_workflow(copy.deepcopy(workflow)), overrides or {})
    out = Path(out_dir).resolve()
    folder_paths.set_output_directory(str(out))  # made only once the workflow is valid: a refusal leaves nothing
    if input_dir is not None:
        folder_paths.set_input_directory(str(Path(input_dir).resolve()))
    install_demo_inputs(Path(folder_paths.get_input_directory()))
    before = _list_files(out)

    prompt_id = str(uuid.uuid4())
    valid, error, good_outputs, node_errors = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
    if not valid:
        raise WorkflowValidationError(
            _validation_message(error or {}, node_errors, prompt), error or {}, node_errors
        )

    out.mkdir(parents=True, exist_ok=True)
    server.messages = []
    server.last_prompt_id = prompt_id
    executor = new_executor(execution, server)
    executor.execute(prompt, prompt_id, {"client_id": _CLIENT_ID}, good_outputs)
    messages = list(server.messages)
    if not executor.success:
        details = next((d for ev, d in executor.status_messages if ev == "execution_error"), {})
        if not details:
            details = next((d for ev, d in messages if ev == "execution_error"), {})
        raise NodeExecutionError(node_failure_line(details), details)

    outputs = executor.history_result.get("outputs", {})
    files = sorted(set(_saved_files(outputs, folder_paths)) | (_list_files(out) - before))
    return {"prompt_id": prompt_id, "outputs": outputs, "files": files, "messages": messages}


# --------------------------------------------------------------------------- CLI


EXIT_CODES = ("exit codes: 0 done; 1 the workflow, an input or a node failed (one 'error:' line); "
              "2 bad command-line arguments; 130 interrupted (Ctrl-C)")


def build_parser() -> argparse.ArgumentParser:
    """Argument parser for ``magicinfinite run`` / ``python -m runner.headless``."""
    p = argparse.ArgumentParser(
        prog="magicinfinite run", description="Run an API-format ComfyUI workflow without a server.",
        epilog=EXIT_CODES,
    )
    p.add_argument("workflow", help="API-format workflow JSON (ComfyUI: Export (API))")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NODE.INPUT=VALUE",
        help='override a node input; VALUE is JSON if it parses (5, 0.5, true, [1,2], "text"), else text',
    )
    p.add_argument("--out", default="out", help="output directory (ComfyUI's output folder for this run)")
    p.add_argument("--input-dir", default=None, help="ComfyUI input folder (LoadImage/LoadAudio files)")
    p.add_argument(
        "--models-dir", default=None, help="folder laid out like ComfyUI's models/, searched first"
    )
    p.add_argument("--extra-model-paths-config", action="append", default=[], help="extra_model_paths.yaml")
    p.add_argument(
        "--comfyui",
        default=None,
        help=f"ComfyUI folder (default $MAGICINFINITE_COMFYUI or {DEFAULT_COMFYUI})",
    )
    p.add_argument("--cpu", action="store_true", help="run everything on the CPU (automatic without a GPU)")
    p.add_argument(
        "--all-custom-nodes", action="store_true", help="also load every pack in ComfyUI's custom_nodes/"
    )
    p.add_argument("--json", action="store_true", help="print the result (outputs, files) as JSON")
    p.add_argument(
        "-v", "--verbose", action="store_true", help="log ComfyUI's INFO messages and node progress"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: exit code 0 on success, 1 with one ``error:`` line on stderr on any workflow error, 2 for
    bad arguments (argparse), 130 on Ctrl-C (:data:`EXIT_CODES`, shown by ``--help``)."""
    args = build_parser().parse_args(argv)
    # Quiet by default: ComfyUI logs a node's traceback at ERROR level; the CLI's contract is one
    # "error:" line, and -v brings ComfyUI's log (tracebacks included) back.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL, format="%(message)s")
    try:
        if Path(args.out).exists() and not Path(args.out).is_dir():
            raise WorkflowFormatError(f"--out {args.out} is a file; --out is the folder the outputs go to")
        given = load_workflow(args.workflow)
        overrides = parse_overrides(args.overrides)
        workflow = apply_overrides(given, overrides)  # fail on a bad --set before ComfyUI loads
        bootstrap(
            args.comfyui,
            cpu=args.cpu,
            models_dir=args.models_dir,
            extra_model_paths=args.extra_model_paths_config,
            all_custom_nodes=args.all_custom_nodes,
        )
        for key in overrides:  # an input the node does not have is ignored by ComfyUI: refuse it here
            err = unknown_input_error(given, key)
            if err:
                raise WorkflowFormatError(f"--set {key}: {err}")
        result = run_workflow(workflow, None, args.out, input_dir=args.input_dir)
    except HeadlessError as e:
        hint = (
            " (rerun with -v for ComfyUI's log)"
            if isinstance(e, NodeExecutionError) and not args.verbose
            else ""
        )
        print(f"error: {e}{hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps({k: result[k] for k in ("prompt_id", "outputs", "files")}, indent=2, default=str))
    else:
        for node_id, out in result["outputs"].items():
            for text in out.get("text", []):
                print(f"node {node_id}: {text}")
        temp = str(Path(_Comfy.folder_paths.get_temp_directory()).resolve())
        for f in result["files"]:  # results only: a preview node's temporary PNG is not one
            if not Path(f).resolve().is_relative_to(temp):
                print(f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
