"""The bounds on every number that sizes memory or time, in one place, and the checks that use them.

Why: a count with no upper bound (``--steps 1e9``, ``depth_double: 1e7`` in a checkpoint's metadata,
``n_mels: 1e9`` in a bundle.json) grows memory until the kernel kills the process, or hangs while
building modules. Every entry point (the CLI, bundle and checkpoint loading, the nodes) checks these
bounds before anything is allocated, and names the setting and where it came from. The bounds hold
the 13B HunyuanVideo shapes with room to spare; they only stop values no real model has.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, fields, is_dataclass
from typing import Any

from magicinfinite_core.errors import MagicInfiniteError

MAX_STEPS = 200  # denoising steps (the sampler node's maximum)
WINDOW_RANGE = (5, 1025)  # video frames per sliding window
OVERLAP_RANGE = (0, 1024)  # video frames shared by neighbouring windows (0: windows side by side)
MAX_VIDEO_SECONDS = 4 * 3600  # audio / video length: the features of the whole voice are held in memory
RESOLUTION_RANGE = (16, 4096)  # model frame height and width, pixels
MAX_DISTILLED_STEPS = 64  # entries of a distilled generator's step list
MAX_CONFIG_DEPTH = 32  # nesting of a bundle.json (deeper is refused before it is walked)
MAX_BUNDLE_JSON_BYTES = 1 << 20
MAX_DIT_PARAMETERS = 60e9  # a rough count from the config, checked before the modules are built

# (lowest, highest) per kind of count; configs map their fields onto these kinds
COUNT_RANGES: dict[str, tuple[int, int]] = {
    "depth": (0, 512),  # transformer blocks of one kind
    "heads": (1, 512),
    "width": (1, 65536),  # hidden sizes, token and feature dims, channels
    "patch": (1, 64),  # pixels / latent cells per patch side, frames per patch
    "mel_bins": (8, 512),
    "fft": (16, 65536),
    "tokens": (1, 4096),  # prompt tokens, context tokens per frame
    "frames": (1, 64),  # small frame counts inside the model (audio window, frames per latent)
    "groups": (1, 4096),
    "layers": (1, 64),  # VAE layers per block, blocks per level
}


def count_error(name: str, value: Any, lo: int, hi: int) -> str | None:
    """Error text when ``value`` is not an integer in lo..hi (JSON ``1e9`` and ``true`` are not integers)."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer() and lo <= value <= hi:
            return None  # 64.0 from a JSON writer is 64
        return f"{name} must be an integer in {lo}..{hi}, got {value!r}"
    if not lo <= value <= hi:
        return f"{name} must be in {lo}..{hi}, got {value}"
    return None


def check_count(name: str, value: Any, kind_or_range: str | tuple[int, int], where: str = "") -> int:
    """``value`` as an int if it is a count within its bounds; else a MagicInfiniteError naming it."""
    lo, hi = COUNT_RANGES[kind_or_range] if isinstance(kind_or_range, str) else kind_or_range
    err = count_error(name, value, lo, hi)
    if err:
        raise MagicInfiniteError(f"{where}: {err}" if where else err)
    return int(value)


def float_error(name: str, value: Any, lo: float | None = None, hi: float | None = None) -> str | None:
    """Error text when ``value`` is not a finite number in [lo, hi] (strings and booleans are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{name} must be a number, got {value!r}"
    if not math.isfinite(value):
        return f"{name} must be a finite number, got {value!r}"
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        return f"{name} must be in {lo:g}..{hi:g}, got {value:g}" if hi is not None else \
            f"{name} must be at least {lo:g}, got {value:g}"
    return None


def check_window(window: Any, overlap: Any, where: str = "") -> None:
    """The sliding window's sizes: within their ranges, and a valid pair (overlap under half the window)."""
    from magicinfinite_core.sampling.sliding_window import window_sizes

    check_count("window", window, WINDOW_RANGE, where)
    check_count("overlap", overlap, OVERLAP_RANGE, where)
    try:
        window_sizes(int(window), int(overlap))
    except ValueError as exc:
        raise MagicInfiniteError(f"{where}: {exc}" if where else str(exc)) from None


def config_depth(value: Any, limit: int = MAX_CONFIG_DEPTH) -> int:
    """Nesting depth of a JSON value, stopping at ``limit + 1`` (so a hostile file costs nothing)."""
    stack, deepest = [(value, 1)], 0
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else ()
        stack.extend((c, d + 1) for c in children)
    return deepest


def check_config_dict(cls: type, d: Any, where: str, kinds: dict[str, str], ranges: dict | None = None) -> None:
    """A stored config (bundle.json entry, checkpoint metadata) against its dataclass, before it is built.

    Unknown and missing fields, wrong types, and every count outside its bound (``kinds``: field ->
    COUNT_RANGES kind; a tuple field checks each item) are refused naming ``where`` and the field.
    Why: ``DiTConfig(**metadata)`` with ``num_heads: 0`` died in a ZeroDivisionError, a string patch
    size in a TypeError, ``depth_double: 1e7`` hung building ten million blocks.
    """
    if not is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(d, dict):
        raise MagicInfiniteError(f"{where}: must be an object of {cls.__name__} fields, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls) if not f.name.startswith("_")}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise MagicInfiniteError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")
    for name, f in known.items():
        if name not in d:
            if f.default is MISSING and f.default_factory is MISSING:  # type: ignore[misc]
                raise MagicInfiniteError(f"{where}: the field {name!r} is missing")
            continue
        value, default = d[name], (f.default if f.default is not MISSING else None)
        label = f"{name!r}"
        if (ranges or {}).get(name):
            lo, hi = ranges[name]
            err = float_error(label, value, lo, hi) if isinstance(default, float) else count_error(label, value, lo, hi)
        elif name in kinds and isinstance(default, tuple):
            if not isinstance(value, list) or not value or len(value) > 16:
                err = f"{label} must be a list of 1..16 integers, got {value!r}"
            else:
                err = next((e for i, v in enumerate(value)
                            if (e := count_error(f"{label}[{i}]", v, *COUNT_RANGES[kinds[name]]))), None)
        elif name in kinds:
            err = count_error(label, value, *COUNT_RANGES[kinds[name]])
        elif isinstance(default, bool):
            err = None if isinstance(value, bool) else f"{label} must be true or false, got {value!r}"
        elif isinstance(default, float):
            err = float_error(label, value)
        elif isinstance(default, str):
            err = None if isinstance(value, str) else f"{label} must be a string, got {value!r}"
        else:
            err = None  # nested configs are checked by their own call
        if err:
            raise MagicInfiniteError(f"{where}: {err}")


DIT_KINDS = {"hidden_size": "width", "num_heads": "heads", "depth_double": "depth", "depth_single": "depth",
             "refiner_depth": "depth", "patch_size": "patch", "rope_dims": "width", "in_channels": "width",
             "out_channels": "width", "text_dim": "width", "pooled_dim": "width"}
AUDIO_LAYER_KINDS = {"feature_dim": "width", "frame_window": "frames", "frames_per_latent": "frames",
                     "proj_dim": "width", "tokens_per_latent_frame": "tokens", "context_dim": "width",
                     "num_heads": "heads", "single_block_every": "depth"}

AVATAR_KINDS = {"audio_window": "frames", "audio_layers": "layers", "audio_channels": "width", "audio_hidden": "width",
                "tokens_per_frame": "tokens", "frames_per_latent": "frames", "adapter_dim": "width",
                "adapter_after_double": "depth", "motion_values": "frames"}


def check_dit_config(d: Any, where: str) -> None:
    """A stored DiT config dict (checkpoint metadata) checked field by field, and its size as a whole."""
    from magicinfinite_core.config import AudioLayerConfig, DiTConfig

    check_config_dict(DiTConfig, d, where, DIT_KINDS, {"image_token_dim": (0, 65536), "mlp_ratio": (0.01, 64.0),
                                                       "condition_channels": (0, 65536)})
    if d.get("audio") is not None:
        check_config_dict(AudioLayerConfig, d["audio"], f"{where} 'audio'", AUDIO_LAYER_KINDS)
    if d.get("avatar") is not None:
        from magicinfinite_core.config import AvatarConfig

        check_config_dict(AvatarConfig, d["avatar"], f"{where} 'avatar'", AVATAR_KINDS, {"ref_time": (-4096, 4096)})
    hidden = int(d.get("hidden_size", 128))
    heads = int(d.get("num_heads", 4))
    if hidden % heads:
        raise MagicInfiniteError(f"{where}: 'hidden_size' {hidden} is not divisible by 'num_heads' {heads}")
    blocks = 2 * int(d.get("depth_double", 2)) + int(d.get("depth_single", 2)) + int(d.get("refiner_depth", 2))
    params = blocks * 12 * hidden * hidden
    if params > MAX_DIT_PARAMETERS:
        raise MagicInfiniteError(f"{where}: {blocks} blocks of width {hidden} would be ~{params / 1e9:.0f}B "
                                 f"parameters (limit {MAX_DIT_PARAMETERS / 1e9:.0f}B); the metadata is damaged")


VAE_KINDS = {"latent_channels": "width", "block_out_channels": "width", "layers_per_block": "layers",
             "norm_num_groups": "groups", "spatial_compression_ratio": "patch", "temporal_compression_ratio": "patch"}
PATCH_AE_KINDS = {"patch": "patch", "spatial_channels": "width", "temporal_channels": "width",
                  "temporal_compression_ratio": "patch"}
MOTION_AE_KINDS = {"cell": "patch", "residual_channels": "width", "reference_subcells": "patch",
                   "temporal_compression_ratio": "patch"}
POSITIVE = (1e-12, 1e12)


def check_vae_config(d: Any, where: str) -> None:
    """A bundle's autoencoder config: a known kind, every field typed and bounded, a finite scale."""
    from magicinfinite_core.config import VAEConfig
    from magicinfinite_core.media.motion_autoencoder import KIND as MOTION
    from magicinfinite_core.media.motion_autoencoder import SHARE_SETTINGS, MotionAutoencoderConfig
    from magicinfinite_core.media.patch_autoencoder import KIND as PATCH
    from magicinfinite_core.media.patch_autoencoder import PatchAutoencoderConfig

    if not isinstance(d, dict):
        raise MagicInfiniteError(f"{where}: must be an object, got {type(d).__name__}")
    kind = d.get("kind")
    fields_only = {k: v for k, v in d.items() if k != "kind"}
    if kind == PATCH:
        check_config_dict(PatchAutoencoderConfig, fields_only, where, PATCH_AE_KINDS,
                          {"scaling_factor": POSITIVE, "temporal_channels": (0, 65536)})
    elif kind == MOTION:
        check_config_dict(MotionAutoencoderConfig, fields_only, where, MOTION_AE_KINDS,
                          {"working_size": RESOLUTION_RANGE, "residual_channels": (0, 65536),
                           "flow_scale": POSITIVE, "residual_scale": POSITIVE, "still_gate": (-2.0, 2.0),
                           "flow_deadzone": (0.0, 64.0), "residual_gain": (0.0, 4.0),
                           "flow_smoothing": (0.0, 64.0), "expression_channels": (0, 1),
                           "expression_scale": POSITIVE, "expression_deadzone": (0.0, 1.0),
                           **dict.fromkeys(SHARE_SETTINGS, (0.0, 1.0))})
    elif kind is None:
        check_config_dict(VAEConfig, d, where, VAE_KINDS, {"scaling_factor": POSITIVE})
    else:
        raise MagicInfiniteError(f"{where}: unknown autoencoder kind {kind!r}; known: {PATCH!r}, {MOTION!r} or "
                                 "none (a 3D VAE)")
