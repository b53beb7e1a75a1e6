"""The model bundle: one folder, one bundle.json, the weights it names — the format the demo model ships in.

Everything about that format lives here: the file name, the schema written by `bundle_spec`, saving,
loading (base DiT or the few-step "distilled" entry), the path checks and the recommended settings.
The autoencoder and audio modules are imported where a bundle is loaded or saved, so that reading
the format (the node pack at ComfyUI's start, the CLI's argument checks) stays light.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from magicinfinite_core.config import (
    DEFAULT_SHIFT,
    DISTILLED_TIMESTEPS,
    DiTConfig,
    VAEConfig,
)
from magicinfinite_core.errors import CheckpointError, MagicInfiniteError
from magicinfinite_core.inputs.encoders import ByteTextEncoder, PatchImageEncoder, encoder_from_config
from magicinfinite_core.limits import (
    MAX_BUNDLE_JSON_BYTES,
    MAX_CONFIG_DEPTH,
    MAX_DISTILLED_STEPS,
    MAX_STEPS,
    POSITIVE,
    RESOLUTION_RANGE,
    check_count,
    check_vae_config,
    check_window,
    config_depth,
    float_error,
)
from magicinfinite_core.models.dit import MagicInfiniteDiT
from magicinfinite_core.weights.checkpoints import load_state_dict, save_dit, save_state_dict
from magicinfinite_core.weights.model_bundle import (  # noqa: F401 (re-exported: the old import path)
    ModelBundle,
    model_sampler_defaults,
    recommended_guidance,
)
from magicinfinite_core.weights.transformer_layouts import load_transformer

log = logging.getLogger(__name__)


BUNDLE_FILE = "bundle.json"  # the one definition of the name
DIT_FILE = "dit.safetensors"
VAE_FILE = "vae.safetensors"
DISTILLED_DIT_FILE = "dit_4step.safetensors"  # the few-step generator beside the base DiT
BUNDLE_FORMAT = "magicinfinite-bundle/1"
DEMO_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo"


def _seeded_init(module: nn.Module, generator: torch.Generator, std: float = 0.02) -> None:
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif "norm" in name and p.ndim == 1:
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=generator) * std)


def random_bundle(
    seed: int = 0,
    *,
    height: int = 64,
    width: int = 64,
    dit_cfg: DiTConfig | None = None,
    vae_cfg: Any = None,
    std: float = 0.05,
) -> ModelBundle:
    """Seeded random tiny models (tests, benches): every weight drawn from one generator.

    Output projections that are zero-initialised for training are random here too, so the random
    model's velocity actually depends on its inputs.
    """
    from magicinfinite_core.inputs.audio_features import MelExtractor
    from magicinfinite_core.media.vae import VideoVAE

    dit_cfg = dit_cfg or DiTConfig()
    vae_cfg = vae_cfg or VAEConfig(latent_channels=dit_cfg.out_channels)
    g = torch.Generator().manual_seed(int(seed))
    dit = MagicInfiniteDiT(dit_cfg)
    _seeded_init(dit, g, std)
    if isinstance(vae_cfg, VAEConfig):
        vae = VideoVAE(vae_cfg)
        _seeded_init(vae.model, g, std=0.2)
    else:  # another autoencoder kind (a motion autoencoder): its config as is, no weights to draw
        from magicinfinite_core.media.autoencoders import autoencoder_from_config

        vae = autoencoder_from_config(vae_cfg.to_dict())
    text = ByteTextEncoder(dit_cfg.text_dim, dit_cfg.pooled_dim)
    _seeded_init(text, g, 0.5)
    image = PatchImageEncoder(dit_cfg.image_token_dim or dit_cfg.text_dim)
    _seeded_init(image, g, 0.5)
    n_mels = dit_cfg.audio.feature_dim if dit_cfg.audio is not None else 64
    bundle = ModelBundle(dit.eval(), vae.eval(), text.eval(), image.eval(), MelExtractor(n_mels=n_mels),
                         height, width, name=f"random-tiny-{seed}")
    return bundle


def bundle_spec(
    *,
    name: str,
    height: int,
    width: int,
    vae_config: dict[str, Any],
    audio: dict[str, Any],
    text_encoder: dict[str, Any],
    image_encoder: dict[str, Any] | None = None,
    sampler: dict[str, Any] | None = None,
    distilled: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The bundle.json schema, written in this one place (save_bundle, the trainer's export, distillation).

    text_encoder / image_encoder: {"config": {...}} plus "weights" when the encoder has its own file;
    audio: {"kind": "mel", "n_mels", "n_fft"} or {"kind": ..., "path": file}; sampler: the settings the
    model was tuned for; distilled: {"dit", "timesteps", "shift"} of a few-step generator; training:
    free-form provenance (run, step), never read by the loader.
    """
    spec: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "name": name,
        "resolution": [int(height), int(width)],
        "dit": DIT_FILE,
        "vae": {"weights": VAE_FILE, "config": vae_config},
        "audio": audio,
        "text_encoder": text_encoder,
    }
    if image_encoder is not None:
        spec["image_encoder"] = image_encoder
    if sampler:
        spec["sampler"] = dict(sampler)
    if distilled is not None:
        spec["distilled"] = dict(distilled)
    if training:
        spec["training"] = training
    return spec


def write_bundle_spec(folder: str | Path, spec: dict[str, Any]) -> Path:
    """Write bundle.json atomically (a reader never sees half a file)."""
    import os

    path = Path(folder) / BUNDLE_FILE
    tmp = path.with_name(BUNDLE_FILE + ".tmp")
    tmp.write_text(json.dumps(spec, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def read_bundle_spec(path: str | Path) -> tuple[dict[str, Any], Path]:
    """(spec, path of bundle.json) for a bundle folder or its bundle.json; a CheckpointError if unreadable."""
    p = Path(path)
    spec_path = p / BUNDLE_FILE if p.is_dir() else p
    if spec_path.suffix == ".safetensors":
        raise CheckpointError(f"{path} is one weights file, not a bundle folder ({BUNDLE_FILE})")
    if not spec_path.is_file():
        raise CheckpointError(f"no model at {path}: expected a folder with {BUNDLE_FILE}")
    if spec_path.stat().st_size > MAX_BUNDLE_JSON_BYTES:
        raise CheckpointError(f"{spec_path} is {spec_path.stat().st_size} bytes; a bundle.json is a few KB "
                              f"(limit {MAX_BUNDLE_JSON_BYTES}): is this the right file?")
    try:
        spec = json.loads(spec_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{spec_path} is not valid JSON ({exc})") from None
    except RecursionError:
        raise CheckpointError(f"{spec_path} is nested deeper than any bundle.json (limit {MAX_CONFIG_DEPTH} "
                              "levels)") from None
    if not isinstance(spec, dict) or "dit" not in spec:
        raise CheckpointError(f"{spec_path} names no DiT file (\"dit\"); is this a MagicInfinite bundle?")
    try:
        check_bundle_spec(spec)
    except MagicInfiniteError as exc:
        raise CheckpointError(f"{spec_path}: {exc}") from None
    return spec, spec_path


def check_bundle_spec(spec: dict[str, Any]) -> None:
    """The one schema check of a bundle.json, before anything is built or read: every field typed and bounded.

    Why: hostile or damaged values (``n_mels: 1e9``, ``resolution: [0, 0]``, a NaN scaling factor, a
    negative overlap, an unknown kind) used to end in a ZeroDivisionError / KeyError / hang far from
    the file. A MagicInfiniteError names the field; `read_bundle_spec` adds the file.
    """
    from magicinfinite_core.media.patch_autoencoder import KIND as PATCH_KIND

    if config_depth(spec) > MAX_CONFIG_DEPTH:
        raise MagicInfiniteError(f"nested deeper than {MAX_CONFIG_DEPTH} levels; not a bundle.json")
    fmt = spec.get("format", BUNDLE_FORMAT)
    if fmt != BUNDLE_FORMAT:
        raise MagicInfiniteError(f"'format' is {fmt!r}; this version reads {BUNDLE_FORMAT!r} bundles")
    if not isinstance(spec.get("name", ""), str):
        raise MagicInfiniteError(f"'name' must be a string, got {spec['name']!r}")
    res = spec.get("resolution", [64, 64])
    if not isinstance(res, list) or len(res) != 2:
        raise MagicInfiniteError(f"'resolution' must be [height, width], got {res!r}")
    for label, v in zip(("height", "width"), res, strict=True):
        check_count(f"'resolution' {label}", v, RESOLUTION_RANGE)
    vae = spec.get("vae")
    if not isinstance(vae, dict) or not isinstance(vae.get("weights"), str) or "config" not in vae:
        raise MagicInfiniteError("'vae' must be {\"weights\": file, \"config\": {...}}")
    check_vae_config(vae["config"], "'vae' 'config'")
    cfg = vae["config"]
    ratio = int(cfg.get("patch", 8) if cfg.get("kind") == PATCH_KIND else cfg.get("spatial_compression_ratio", 8))
    if cfg.get("kind") in (PATCH_KIND, None) and any(int(v) % ratio for v in res):  # pixel-latent kinds
        raise MagicInfiniteError(f"'resolution' {res} must be a multiple of the autoencoder's {ratio} pixels per "
                                 "latent cell")
    audio = spec.get("audio", {"kind": "mel"})
    if not isinstance(audio, dict) or not isinstance(audio.get("kind"), str):
        raise MagicInfiniteError(f"'audio' must be {{\"kind\": ...}}, got {audio!r}")
    if audio["kind"] == "mel":
        check_count("'audio' 'n_mels'", audio.get("n_mels", 64), "mel_bins")
        check_count("'audio' 'n_fft'", audio.get("n_fft", 1024), "fft")
    elif not isinstance(audio.get("path"), str):
        raise MagicInfiniteError(f"'audio' of kind {audio['kind']!r} must name its weights ('path')")
    for key in ("text_encoder", "image_encoder"):
        entry = spec.get(key)
        if entry is None and key == "image_encoder":
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
            raise MagicInfiniteError(f"{key!r} must be {{\"config\": {{\"kind\": ...}}}}, got {entry!r}")
        check_encoder_config(entry["config"], f"{key!r} 'config'")
        if "weights" in entry and not isinstance(entry["weights"], str):
            raise MagicInfiniteError(f"{key!r} 'weights' must be a file name, got {entry['weights']!r}")
    check_sampler_settings(spec.get("sampler", {}), "'sampler'")
    info = spec.get("distilled")
    if info is not None:
        if not isinstance(info, dict):
            raise MagicInfiniteError(f"'distilled' must be an object, got {info!r}")
        steps = info.get("timesteps", list(DISTILLED_TIMESTEPS))
        if not isinstance(steps, list) or not 1 <= len(steps) <= MAX_DISTILLED_STEPS:
            raise MagicInfiniteError(f"'distilled' 'timesteps' must be a list of 1..{MAX_DISTILLED_STEPS} numbers")
        for e in [float_error("'distilled' 'timesteps' entry", t, 0.0, 1000.0) for t in steps] + \
                 [float_error("'distilled' 'shift'", info["shift"], *POSITIVE) if "shift" in info else None]:
            if e:
                raise MagicInfiniteError(e)


ENCODER_COUNTS = {"bytes": {"text_dim": "width", "pooled_dim": "width", "max_len": "tokens"},
                  "patches": {"token_dim": "width", "grid": "patch", "patch": "patch"},
                  "minilm": {"max_length": "tokens"}, "latent_patches": {}}


def check_encoder_config(cfg: dict[str, Any], where: str) -> None:
    """A text / image encoder entry: a known kind and bounded sizes (``max_length: 0`` is refused)."""
    kind = cfg.get("kind")
    if kind not in ENCODER_COUNTS:
        raise MagicInfiniteError(f"{where}: unknown encoder kind {kind!r}; known: {sorted(ENCODER_COUNTS)}")
    for name, count_kind in ENCODER_COUNTS[kind].items():
        if name in cfg:
            check_count(f"{where} {name!r}", cfg[name], count_kind)
    if kind == "latent_patches":
        patch = cfg.get("patch", [2, 2])
        if not isinstance(patch, list) or len(patch) != 2:
            raise MagicInfiniteError(f"{where} 'patch' must be [h, w], got {patch!r}")
        for v in patch:
            check_count(f"{where} 'patch'", v, "patch")


def check_sampler_settings(d: Any, where: str) -> None:
    """bundle.json "sampler": the model's recommended steps, shift, window and guidance, bounded like the CLI's."""
    if not isinstance(d, dict):
        raise MagicInfiniteError(f"{where} must be an object, got {d!r}")
    if "steps" in d:
        check_count(f"{where} 'steps'", d["steps"], (1, MAX_STEPS))
    if "window_frames" in d or "overlap_frames" in d:
        check_window(d.get("window_frames", 33), d.get("overlap_frames", 8), f"{where} 'window_frames'/'overlap_frames'")
    for key, lo, hi in (("shift", 1e-6, 1e6), ("audio_scale", 0.0, 100.0), ("text_scale", 0.0, 100.0),
                        ("boundary", 0.0, 1.0)):
        if key in d and (e := float_error(f"{where} {key!r}", d[key], lo, hi)):
            raise MagicInfiniteError(e)


def _encoder_entry(key: str, mod: Any, folder: Path) -> dict[str, Any] | None:
    """An encoder's bundle.json entry, saving its weights beside it when it has any."""
    if isinstance(mod, nn.Module):
        save_state_dict(folder / f"{key}.safetensors", mod.state_dict(), kind=f"magicinfinite-{key}", config=mod.config)
        return {"weights": f"{key}.safetensors", "config": mod.config}
    if mod is not None:  # weightless adapters (packaged MiniLM, latent patches)
        return {"config": mod.config}
    return None


def save_bundle(bundle: ModelBundle, directory: str | Path) -> Path:
    """Write a bundle folder: bundle.json + dit / vae / text / image safetensors (our formats)."""
    from magicinfinite_core.media.autoencoders import save_autoencoder

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_dit(d / DIT_FILE, bundle.dit)
    save_autoencoder(d / VAE_FILE, bundle.vae)
    ex = bundle.audio_extractor
    spec = bundle_spec(
        name=bundle.name, height=bundle.height, width=bundle.width, vae_config=bundle.vae.cfg.to_dict(),
        audio={"kind": getattr(ex, "name", "mel"), "n_mels": getattr(ex, "n_mels", 64), "n_fft": getattr(ex, "n_fft", 1024)},
        text_encoder=_encoder_entry("text_encoder", bundle.text_encoder, d),
        image_encoder=_encoder_entry("image_encoder", bundle.image_encoder, d),
        sampler=bundle.sampler_defaults,
        # the DiT is itself a few-step generator: say so, with its step list
        distilled=None if bundle.distilled is None else {"dit": DIT_FILE, **bundle.distilled},
    )
    write_bundle_spec(d, spec)
    return d


def bundle_with_generator(
    base: str | Path, generator: str | Path, out: str | Path, timesteps: Sequence[float], shift: float,
) -> Path:
    """A copy of the base bundle plus a few-step generator as its "distilled" DiT.

    The base stays the bundle's DiT (CFG sampling still works); `load_bundle(..., distilled=True)`, the
    CLI's default and the loader node's 4-step variant take the generator, with its step list and shift.
    """
    import shutil

    spec, spec_path = read_bundle_spec(base)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for f in spec_path.parent.iterdir():
        if f.is_file() and f.name not in (BUNDLE_FILE, DISTILLED_DIT_FILE):
            shutil.copy2(f, out / f.name)
    shutil.copy2(generator, out / DISTILLED_DIT_FILE)
    spec["distilled"] = {"dit": DISTILLED_DIT_FILE, "timesteps": [float(t) for t in timesteps], "shift": float(shift)}
    write_bundle_spec(out, spec)
    return out


def bundle_sampler_defaults(path: str | Path) -> dict[str, Any]:
    """bundle.json's "sampler" section (the model's recommended settings) without loading weights."""
    try:
        return dict(read_bundle_spec(path)[0].get("sampler", {}))
    except (CheckpointError, OSError, AttributeError, TypeError, ValueError):
        return {}


def bundle_files(spec: dict[str, Any], folder: Path, spec_path: Path | str = BUNDLE_FILE) -> dict[str, Path]:
    """Every file a bundle.json names ({"dit": path, "vae.weights": path, ...}), each checked to lie in its folder.

    Why: bundle folders come from anywhere (downloads, shared drives); a ``bundle.json`` naming
    ``/abs/path`` or ``../../x`` must not make the loader read files outside the bundle. Relative
    names without ``..`` only; a symlink the user placed inside the folder is followed.
    """
    import os

    found: dict[str, Any] = {"dit": spec.get("dit")}
    if isinstance(spec.get("distilled"), dict) and "dit" in spec["distilled"]:
        found["distilled.dit"] = spec["distilled"]["dit"]
    for key in ("vae", "text_encoder", "image_encoder"):
        if isinstance(spec.get(key), dict) and "weights" in spec[key]:
            found[f"{key}.weights"] = spec[key]["weights"]
    if isinstance(spec.get("audio"), dict) and "path" in spec["audio"]:
        found["audio.path"] = spec["audio"]["path"]
    out: dict[str, Path] = {}
    base = os.path.normpath(os.path.abspath(folder))
    for key, name in found.items():
        if not isinstance(name, str) or not name.strip():
            raise CheckpointError(f"{spec_path}: {key!r} must name a file inside the bundle folder, got {name!r}")
        parts = Path(name.replace("\\", "/")).parts
        if os.path.isabs(name) or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
            raise CheckpointError(
                f"{spec_path}: {key!r} is the absolute path {name!r}; bundle files must be named relative to the "
                "bundle folder (absolute paths are refused)"
            )
        cand = os.path.normpath(os.path.join(base, name))
        if ".." in parts or os.path.commonpath([base, cand]) != base:
            raise CheckpointError(
                f"{spec_path}: {key!r} = {name!r} leaves the bundle folder ('..' is refused); put the file inside it"
            )
        out[key] = Path(cand)
    return out


def bundle_has_generator(path: str | Path) -> bool:
    """Whether bundle.json names a few-step distilled generator (its "distilled" entry), without loading."""
    try:
        info = read_bundle_spec(path)[0].get("distilled")
    except (CheckpointError, OSError):
        return False
    return isinstance(info, dict) and "dit" in info


def load_bundle(path: str | Path, device: torch.device | str = "cpu", distilled: bool = False) -> ModelBundle:
    """Load a bundle folder written by save_bundle (the demo model ships in this format).

    distilled: load the bundle's few-step generator (bundle.json "distilled": {"dit", "timesteps",
    "shift"}, written by training.distill) instead of its base DiT; everything else is shared.
    """
    from magicinfinite_core.inputs.audio_features import MelExtractor, load_extractor
    from magicinfinite_core.media.autoencoders import load_autoencoder

    if Path(path).is_file() and Path(path).suffix == ".safetensors":  # one transformer file, parts found beside it
        from magicinfinite_core.weights.avatar_bundle import load_file_bundle

        bundle = load_file_bundle(path, device)
        if distilled:  # the file is itself a few-step generator (our DMD2 export): the 4-step list, its shift
            bundle.distilled = {"timesteps": list(DISTILLED_TIMESTEPS),
                                "shift": float(bundle.sampler_defaults.get("shift", DEFAULT_SHIFT))}
            bundle.name += "-4step"
        return bundle
    spec, spec_path = read_bundle_spec(path)
    d = spec_path.parent
    dit_file, info = spec["dit"], None
    if distilled:
        info = spec.get("distilled")
        if not isinstance(info, dict) or "dit" not in info:
            raise CheckpointError(
                f"{spec_path} has no distilled generator (no 'distilled' entry naming a DiT file): distil it with "
                "python -m training.distill.trainer, or sample it in base mode (CFG, more steps)"
            )
        dit_file = info["dit"]
        info = {k: v for k, v in info.items() if k != "dit"}
    files = bundle_files(spec, d, spec_path)  # every path checked before anything is read
    needed = ["distilled.dit" if distilled else "dit", "vae.weights", "text_encoder.weights", "image_encoder.weights",
              "audio.path"]
    for key in [k for k in needed if k in files and not files[k].exists()]:
        raise CheckpointError(f"{spec_path}: {key!r} names {files[key].name}, which is not in {d}; copy the "
                              "bundle folder whole")
    dit = load_transformer(files["dit" if not distilled else "distilled.dit"], device=device)
    try:
        vae = load_autoencoder(files["vae.weights"], config=spec["vae"]["config"])
    except (TypeError, ValueError) as exc:  # a config the autoencoder refuses (a size off its grid): name the file
        raise CheckpointError(f"{spec_path}: its vae config does not load: {exc}") from None
    encoders = {}
    for key in ("text_encoder", "image_encoder"):
        if spec.get(key):
            mod = encoder_from_config(spec[key]["config"])
            if isinstance(mod, nn.Module):
                mod.load_state_dict(load_state_dict(files[f"{key}.weights"]))
                mod.eval()
            encoders[key] = mod
    if "text_encoder" not in encoders:
        raise CheckpointError(f"{spec_path} names no text encoder")
    audio = spec.get("audio", {"kind": "mel"})
    if audio["kind"] == "mel":
        extractor = MelExtractor(n_mels=audio.get("n_mels", 64), n_fft=audio.get("n_fft", 1024))
    else:
        extractor = load_extractor(files["audio.path"])
    h, w = spec.get("resolution", [64, 64])
    name = spec.get("name", d.name) + ("-4step" if distilled else "")
    return ModelBundle(dit.eval(), vae.eval(), encoders["text_encoder"], encoders.get("image_encoder"), extractor,
                       int(h), int(w), name=name, dit_path=d / str(dit_file),
                       sampler_defaults=model_sampler_defaults(dit.cfg, spec.get("sampler")), distilled=info).to(device)


