"""Shared helpers for the pack's nodes: category, custom types, safe model/output paths, progress.

Why one module: every loader must resolve names the same safe way (inside ComfyUI's model folders,
``.safetensors`` only) and every saving node must stay inside the output folder; keeping those rules
in one place is what the safety tests exercise.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from comfy_api.latest import io

from magicinfinite_core.errors import InputError

CATEGORY = "MagicInfinite"

# Custom socket types: model objects never travel through ComfyUI's own MODEL/VAE sockets, so a
# MagicInfinite model cannot be wired into a KSampler by mistake (and vice versa).
MagicModel = io.Custom("MAGICINFINITE_MODEL")
MagicDiT = io.Custom("MAGICINFINITE_DIT")
MagicVAE = io.Custom("MAGICINFINITE_VAE")
MagicTextEncoder = io.Custom("MAGICINFINITE_TEXT_ENCODER")
MagicAudioEncoder = io.Custom("MAGICINFINITE_AUDIO_ENCODER")
MagicAudioFeatures = io.Custom("MAGICINFINITE_AUDIO")
MagicCFG = io.Custom("MAGICINFINITE_CFG")
MagicLatent = io.Custom("MAGICINFINITE_LATENT")

EMBEDDED_DEMO = "embedded demo"
STATE_SUBFOLDER = "magicinfinite_state"


# A user-fixable problem with a node input; the message says what to do. Defined in the core so that
# ComfyUI reports it as ``magicinfinite_core.errors.InputError``: a class of this pack's own modules is
# named after the pack's folder path (``/…/custom_nodes/<pack>.nodes.common.NodeInputError``).
NodeInputError = InputError


def audio_num_samples(audio: dict[str, Any]) -> tuple[int, int]:
    """``(num_samples, sample_rate)`` of a ComfyUI AUDIO ``{"waveform": [B, C, T], "sample_rate": int}``.

    Checked here so that a malformed AUDIO from another pack fails with a message naming the problem
    instead of an IndexError deep inside the pipeline.
    """
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise ValueError("AUDIO input must be a dict with 'waveform' and 'sample_rate'")
    waveform = audio["waveform"]
    sample_rate = int(audio["sample_rate"])
    if sample_rate <= 0:
        raise ValueError(f"AUDIO sample_rate must be positive, got {sample_rate}")
    if getattr(waveform, "ndim", None) != 3:
        raise ValueError(
            f"AUDIO waveform must be [batch, channels, samples], got shape {tuple(waveform.shape)}"
        )
    return int(waveform.shape[-1]), sample_rate


# --------------------------------------------------------------------------------- path safety


MAX_NAME_CHARS = 1024  # a whole relative name (prefix, resume_dir, model entry)
MAX_PART_BYTES = 200  # one folder/file name: NAME_MAX is 255 and "_00001_.partial.mp4" is appended


def check_relative_name(name: str, what: str) -> str | None:
    """Error text when ``name`` is absolute or climbs out with ``..`` (else None).

    Why: ComfyUI joins names onto folders with ``os.path.join``, which lets an absolute name or
    ``../`` escape the folder; names from workflows are untrusted.
    """
    if not isinstance(name, str):
        return f"{what} must be a name (text), got {name!r}"
    if not name.strip():
        return f"{what} is empty"
    bad = next((c for c in name if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        return f"{what} contains the control character {bad!r} (a NUL or line break cannot be in a file name); remove it"
    if len(name) > MAX_NAME_CHARS:
        return f"{what} is {len(name)} characters long; keep it under {MAX_NAME_CHARS}"
    sizes = {part: len(part.encode("utf-8", "surrogatepass")) for part in name.replace("\\", "/").split("/")}
    long_part = next((part for part, size in sizes.items() if size > MAX_PART_BYTES), None)
    if long_part is not None:
        return (f"{what}: the name part {long_part[:20]!r}... is {sizes[long_part]} bytes; file systems allow 255 "
                f"and the pack appends a counter and suffix: keep each part under {MAX_PART_BYTES} bytes")
    if os.path.isabs(name) or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return f"{what} {name!r} must be relative (absolute paths are not allowed)"
    parts = Path(name.replace("\\", "/")).parts
    if ".." in parts:
        return f"{what} {name!r} must not contain '..'"
    return None


def _inside(base: str, candidate: str) -> bool:
    base_n, cand_n = os.path.normpath(os.path.abspath(base)), os.path.normpath(os.path.abspath(candidate))
    return os.path.commonpath([base_n, cand_n]) == base_n


def model_folder_paths(folder: str) -> list[str]:
    """ComfyUI's search paths for a model folder (``[]`` when the folder name is unknown)."""
    import folder_paths

    try:
        return list(folder_paths.get_folder_paths(folder))
    except KeyError:
        return []


def resolve_model_path(folder: str, name: str, *, want: str = "file") -> Path:
    """Absolute path of ``name`` inside one of ComfyUI's ``models/<folder>`` paths.

    ``want``: "file" (a ``.safetensors`` file or a ``.safetensors.index.json`` shard index), "dir"
    (a folder), "weights" (file when the name ends in .safetensors, else a folder) or "any". Raises
    :class:`NodeInputError` naming the folder when it is missing.
    """
    err = check_relative_name(name, f"{folder} entry")
    if err:
        raise NodeInputError(err)
    if want == "weights":
        is_file = name.endswith((".safetensors", ".safetensors.index.json")) or Path(name).suffix.lower() in (
            ".ckpt", ".pt", ".pth", ".bin", ".pkl", ".gguf", ".sft", ".json")
        want = "file" if is_file else "dir"
    if want == "file" and not (name.endswith(".safetensors") or name.endswith(".safetensors.index.json")):
        raise NodeInputError(
            f"{name!r}: only .safetensors weights are loaded (convert .ckpt/.pt/.bin files to safetensors)"
        )
    bases = model_folder_paths(folder)
    for base in bases:
        cand = os.path.join(base, name)
        if not _inside(base, cand):
            continue
        ok = os.path.isfile(cand) if want == "file" else os.path.isdir(cand) if want == "dir" else os.path.exists(cand)
        if ok:
            return Path(cand)
    searched = ", ".join(bases) or f"models/{folder}"
    raise NodeInputError(
        f"{name!r} not found in models/{folder} (searched: {searched}); put it there or pick an "
        "installed entry from the list"
    )


def list_safetensors(folder: str) -> list[str]:
    """Loadable weight entries of a ComfyUI model folder (files, shard indexes, diffusers folders)."""
    from magicinfinite_core.weights.transformer_layouts import list_model_files

    found: set[str] = set()
    for base in model_folder_paths(folder):
        found.update(list_model_files(base))
    return sorted(found)


def list_dirs(folder: str, marker: str, max_depth: int = 3) -> list[str]:
    """Sub-folders (relative, ``/``-separated) of a model folder that contain ``marker``."""
    found: set[str] = set()
    for base in model_folder_paths(folder):
        if not os.path.isdir(base):
            continue
        for root, dirs, files in os.walk(base, followlinks=True):
            depth = len(Path(root).relative_to(base).parts)
            if depth >= max_depth:
                dirs[:] = []
            if depth > 0 and marker in files:
                found.add(Path(root).relative_to(base).as_posix())
    return sorted(found)


def state_dir_for(name: str) -> Path | None:
    """Resume-state folder for a sampler ``resume_dir`` name: inside the output folder, or None."""
    import folder_paths

    if not name or not name.strip():
        return None
    err = check_relative_name(name.strip(), "resume_dir")
    if err:
        raise NodeInputError(err)
    base = os.path.join(folder_paths.get_output_directory(), STATE_SUBFOLDER)
    path = os.path.join(base, name.strip())
    if not _inside(base, path) or not _inside_after_links(folder_paths.get_output_directory(), path):
        raise NodeInputError(f"resume_dir {name!r} escapes the output folder (through a symlink)")
    return Path(path)


def _inside_after_links(base: str, candidate: str) -> bool:
    """Whether ``candidate`` stays inside ``base`` once every symlink on the way is resolved.

    Why: a symlink planted inside output/ (``output/x -> /etc``) let a relative, '..'-free name write
    outside; models may be symlinked in on purpose, so only output paths get this check.
    """
    real_base = os.path.realpath(base)
    return os.path.commonpath([real_base, os.path.realpath(candidate)]) == real_base


def choice_error(name: str, value: Any, options: Sequence[Any]) -> str | None:
    """Error text when a choice (COMBO) input holds a value not among ``options`` (else None).

    Why the nodes check this themselves: ComfyUI 0.3.75 checks combo values only for V1 list-typed
    inputs (``isinstance(input_type, list)``); a V3 ``io.Combo`` is typed ``"COMBO"`` with the options
    in its extra info, so a typo (``distiled``) passed validation and silently changed behaviour.
    Current ComfyUI checks V3 combos, but skips every input a node's ``validate_inputs`` takes, so
    the check must be the node's own either way. ``None`` (a linked input, known only at run time)
    is not judged here.
    """
    if value is None or value in options:
        return None
    return f"{name} {value!r} is not an allowed value; choose one of: {', '.join(repr(o) for o in options)}"


def choices_error(**specs: tuple[Any, Sequence[Any]]) -> str | None:
    """The first :func:`choice_error` of ``name=(value, options)`` pairs (None when all are allowed)."""
    for name, (value, options) in specs.items():
        err = choice_error(name, value, options)
        if err:
            return err
    return None


def check_choices(**specs: tuple[Any, Sequence[Any]]) -> None:
    """Raise NodeInputError for the first choice input holding a value not among its options."""
    err = choices_error(**specs)
    if err:
        raise NodeInputError(err)


def check_prefix(prefix: str) -> str | None:
    """Error text for a ``filename_prefix`` that would write outside the output folder (else None)."""
    err = check_relative_name(prefix, "filename_prefix")
    if err is None:
        import folder_paths

        out = folder_paths.get_output_directory()
        if not _inside_after_links(out, os.path.join(out, prefix)):
            err = f"filename_prefix {prefix!r} leads outside the output folder through a symlink"
    return err


# --------------------------------------------------------------------------------- progress


def stop_if_interrupted() -> None:
    """Raise ComfyUI's interrupt (Cancel, /interrupt, Ctrl-C in a batch) here if one is pending.

    Why: ComfyUI cannot stop a node that computes synchronously; the node has to look. The progress
    callback looks after every sampler step and decode chunk; nodes also look between their other long
    stages (portrait reduction, face detection, audio features), so an interrupt lands within one stage.
    """
    import comfy.model_management

    comfy.model_management.throw_exception_if_processing_interrupted()


def interruptible(execute: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for a node's ``execute``: ComfyUI's interrupt is also polled inside the core's long
    loops (DiT blocks, decoder blocks, frames muxed, face-detection tiles; magicinfinite_core.cancellation),
    not only between windows and chunks, so Cancel lands within seconds at any size."""
    import functools

    @functools.wraps(execute)
    def run(cls: Any, *args: Any, **kwargs: Any) -> Any:
        import comfy.model_management

        from magicinfinite_core.cancellation import cancel_check

        with cancel_check(comfy.model_management.throw_exception_if_processing_interrupted):
            return execute(cls, *args, **kwargs)

    return run


def progress_callback(node_id: str | None) -> Callable[[Any], None]:
    """A ``magicinfinite_core.sampling.sampler.Progress`` callback driving a ComfyUI progress bar.

    One bar per phase (denoise: windows x steps, decode: chunks), text with the ETA under the node,
    and ComfyUI's Cancel honoured between windows.
    """
    import comfy.model_management
    import comfy.utils

    bars: dict[str, Any] = {}

    def cb(p: Any) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar = bars.get(p.phase)
        if bar is None:
            bar = bars[p.phase] = comfy.utils.ProgressBar(p.total, node_id=node_id)
        bar.update_absolute(p.done, p.total)
        try:
            from server import PromptServer

            if node_id is not None and PromptServer.instance is not None:
                PromptServer.instance.send_progress_text(str(p), node_id)
        except Exception:  # noqa: BLE001 - progress text is cosmetic
            pass

    def preview(image: Any) -> None:
        """Show a PIL image (a finished frame) on the node: ComfyUI's own preview of a running sampler."""
        bar = bars.get("denoise")
        if bar is not None:
            bar.update_absolute(bar.current, bar.total, ("JPEG", image, PREVIEW_MAX_SIDE))

    cb.preview = preview  # type: ignore[attr-defined]
    return cb


PREVIEW_MAX_SIDE = 512


# --------------------------------------------------------------------------------- checks and warnings

WARNING_EVENT = "magicinfinite.warning"  # websocket event; web/magicinfinite_warnings.js shows it as a toast


def float_error(name: str, value: Any, lo: float | None = None, hi: float | None = None) -> str | None:
    """Error text for a float input that is NaN/inf or outside [lo, hi] (ComfyUI's min/max lets NaN pass)."""
    from magicinfinite_core.errors import finite_error

    return finite_error(name, value, lo, hi)


def check_floats(**specs: tuple[Any, float | None, float | None]) -> None:
    """Raise NodeInputError for the first ``name=(value, lo, hi)`` that is not finite or out of range."""
    for name, (value, lo, hi) in specs.items():
        err = float_error(name, value, lo, hi)
        if err:
            raise NodeInputError(err)


def send_warnings(node_id: str | None, node_type: str, messages: list[str]) -> None:
    """Show ``messages`` in the frontend (toast via the pack's web extension) and the server log.

    Why: ComfyUI prints Python warnings only on the server console; the user looks at the canvas.
    ``PromptServer.send_sync`` to the prompt's client is ComfyUI's way for a node to talk to its UI.
    """
    import logging

    if not messages:
        return
    for m in messages:
        logging.getLogger("magicinfinite").warning("%s %s: %s", node_type, node_id, m)
    try:
        from server import PromptServer

        inst = PromptServer.instance
        if inst is not None:
            inst.send_sync(WARNING_EVENT, {"node": node_id, "node_type": node_type, "messages": list(messages)},
                           getattr(inst, "client_id", None))
    except Exception:  # noqa: BLE001 - the warning is also in the node's output and the log
        pass


def ui_output(ui_obj: Any, messages: list[str]) -> Any:
    """A node's UI dict: ``ui_obj`` (PreviewText/PreviewImage/...) plus ``warnings`` (also in /history,
    which the headless runner and the batch results table read) and a ``text`` line per warning."""
    if not messages:
        return ui_obj
    d = dict(ui_obj.as_dict()) if ui_obj is not None and hasattr(ui_obj, "as_dict") else dict(ui_obj or {})
    d["warnings"] = list(messages)
    d["text"] = [*d.get("text", []), *[f"warning: {m}" for m in messages]]
    return d


def caught_warnings(record: list[Any]) -> list[str]:
    """The user-facing messages (AudioWarning, PortraitWarning) of ``warnings.catch_warnings(record=True)``
    entries, de-duplicated, in order; any other warning (library deprecations...) is shown as usual."""
    import warnings

    from magicinfinite_core.inputs.audio import AudioWarning
    from magicinfinite_core.inputs.portrait import PortraitWarning

    out: list[str] = []
    for w in record:
        if not issubclass(w.category, (AudioWarning, PortraitWarning)):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
            continue
        text = str(w.message)
        if text not in out:
            out.append(text)
    return out


TORCH_DEVICE_CHOICES = ("auto", "cpu", "cuda")


def torch_device(choice: str) -> Any:
    """``auto`` → ComfyUI's device (respects ``--cpu``); otherwise the named torch device."""
    import torch

    check_choices(device=(choice, TORCH_DEVICE_CHOICES))  # 'tpu:7' would end in a raw torch error
    if choice == "auto":
        import comfy.model_management

        return comfy.model_management.get_torch_device()
    return torch.device(choice)
