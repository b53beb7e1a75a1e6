"""Transformer checkpoints in every published layout, loaded into `MagicInfiniteDiT`.

Why this module exists: the HunyuanVideo(-I2V) backbone is published as (1) the original
`mp_rank_00_model_states.pt` re-saved as safetensors (names of DESIGN.md §4, sometimes under
`module.`), (2) ComfyUI's repackaged single files (renamed keys, often under
`model.diffusion_model.`, bf16/fp16 or fp8 with per-tensor scales) and (3) diffusers folders
(`HunyuanVideoTransformer3DModel`, possibly sharded). Our DiT uses the original names, so every
layout is converted to those. Our audio layers are not in any published file: they stay at their
zero-initialised start (stage 2 begins there) or come from our own stage-2 / distilled files laid
over the backbone (`overlays=`).

Loading never materialises a second full copy: the file headers are read first (names, dtypes,
shapes; no tensor data), the whole conversion is checked on the meta device, the model is built on
the meta device, and the weights are then read block by block with `safe_open` straight onto the
target device and assigned (`load_state_dict(assign=True)`). Peak extra memory is one block.

ComfyUI names were checked against ComfyUI's own module tree (`comfy/ldm/hunyuan_video/model.py`,
`comfy/ldm/flux/layers.py`), and its fp8 conventions against `comfy/ops.py` and
`comfy/model_detection.py`: "fp8_scaled" files hold `<layer>.weight` as float8 plus a float32
`<layer>.scale_weight` (optional `<layer>.scale_input`, and a `scaled_fp8` marker tensor); the newer
mixed-precision files use `<layer>.weight_scale` / `<layer>.input_scale`. Dequantised weight =
float(weight) * scale.
"""

from __future__ import annotations

import json
import logging
import math
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from magicinfinite_core.config import DIT_PRESETS, AudioLayerConfig, DiTConfig
from magicinfinite_core.errors import CheckpointError
from magicinfinite_core.models.audio_layers import AudioCrossAttention, AudioProjection
from magicinfinite_core.models.dit import AUDIO_PREFIXES, MagicInfiniteDiT
from magicinfinite_core.weights import key_maps
from magicinfinite_core.weights.checkpoints import CONFIG_KEY, FORMAT_KEY, save_state_dict

log = logging.getLogger(__name__)

LAYOUTS = ("original", "comfyui", "diffusers", "magicinfinite", "avatar")
"""original: HunyuanVideo names; comfyui: ComfyUI's renames; diffusers: HunyuanVideoTransformer3DModel;
magicinfinite: our own files (original names + audio layers, config in the metadata); avatar:
HunyuanVideo-Avatar (original names + its own modules: `ref_in`, `audio_adapter_blocks`, ...)."""

# Keys only HunyuanVideo-Avatar files carry (its modules; the backbone keys are the original names).
AVATAR_MARKERS = ("audio_adapter_blocks.", "ref_in.proj.", "before_proj.", "motion_exp.", "motion_pose.", "fps_proj.")
# The sibling file holding the Avatar fp8 checkpoint's per-layer scales (its `*_fp8_map.pt`, converted).
FP8_MAP_SUFFIX = "_map.safetensors"
CONVERT_HINT = "convert it once with `magicinfinite convert IN.pt OUT.safetensors`"

# Prefixes wrapping the transformer's own keys, longest first.
_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "module.", "model.", "transformer.")

# Keys that carry no weights of their own (ComfyUI fp8 markers and activation scales).
_DROP_SUFFIXES = (".scale_input", ".input_scale")
_DROP_KEYS = ("scaled_fp8",)
_SCALE_SUFFIXES = (".scale_weight", ".weight_scale")

_ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)


# --------------------------------------------------------------------------------------------------
# ComfyUI <-> original names (a bijection on the backbone's keys)
# --------------------------------------------------------------------------------------------------

_BLK_D = r"(double_blocks\.\d+\.(?:img|txt))"
_BLK_R = r"(txt_in\.individual_token_refiner\.blocks\.\d+)"
_BLK_S = r"(single_blocks\.\d+)"
_EMB = r"(time_in|guidance_in|txt_in\.t_embedder)"

# (ComfyUI regex, original replacement, original regex, ComfyUI replacement)
_COMFY_RULES: tuple[tuple[str, str, str, str], ...] = (
    (_EMB + r"\.in_layer\.", r"\1.mlp.0.", _EMB + r"\.mlp\.0\.", r"\1.in_layer."),
    (_EMB + r"\.out_layer\.", r"\1.mlp.2.", _EMB + r"\.mlp\.2\.", r"\1.out_layer."),
    (
        r"txt_in\.c_embedder\.in_layer\.",
        "txt_in.c_embedder.linear_1.",
        r"txt_in\.c_embedder\.linear_1\.",
        "txt_in.c_embedder.in_layer.",
    ),
    (
        r"txt_in\.c_embedder\.out_layer\.",
        "txt_in.c_embedder.linear_2.",
        r"txt_in\.c_embedder\.linear_2\.",
        "txt_in.c_embedder.out_layer.",
    ),
    (
        _BLK_R + r"\.self_attn\.(qkv|proj)\.",
        r"\1.self_attn_\2.",
        _BLK_R + r"\.self_attn_(qkv|proj)\.",
        r"\1.self_attn.\2.",
    ),
    (_BLK_R + r"\.mlp\.0\.", r"\1.mlp.fc1.", _BLK_R + r"\.mlp\.fc1\.", r"\1.mlp.0."),
    (_BLK_R + r"\.mlp\.2\.", r"\1.mlp.fc2.", _BLK_R + r"\.mlp\.fc2\.", r"\1.mlp.2."),
    (_BLK_D + r"_mod\.lin\.", r"\1_mod.linear.", _BLK_D + r"_mod\.linear\.", r"\1_mod.lin."),
    (_BLK_D + r"_attn\.(qkv|proj)\.", r"\1_attn_\2.", _BLK_D + r"_attn_(qkv|proj)\.", r"\1_attn.\2."),
    (
        _BLK_D + r"_attn\.norm\.query_norm\.scale",
        r"\1_attn_q_norm.weight",
        _BLK_D + r"_attn_q_norm\.weight",
        r"\1_attn.norm.query_norm.scale",
    ),
    (
        _BLK_D + r"_attn\.norm\.key_norm\.scale",
        r"\1_attn_k_norm.weight",
        _BLK_D + r"_attn_k_norm\.weight",
        r"\1_attn.norm.key_norm.scale",
    ),
    (_BLK_D + r"_mlp\.0\.", r"\1_mlp.fc1.", _BLK_D + r"_mlp\.fc1\.", r"\1_mlp.0."),
    (_BLK_D + r"_mlp\.2\.", r"\1_mlp.fc2.", _BLK_D + r"_mlp\.fc2\.", r"\1_mlp.2."),
    (
        _BLK_S + r"\.norm\.query_norm\.scale",
        r"\1.q_norm.weight",
        _BLK_S + r"\.q_norm\.weight",
        r"\1.norm.query_norm.scale",
    ),
    (
        _BLK_S + r"\.norm\.key_norm\.scale",
        r"\1.k_norm.weight",
        _BLK_S + r"\.k_norm\.weight",
        r"\1.norm.key_norm.scale",
    ),
    (
        _BLK_S + r"\.modulation\.lin\.",
        r"\1.modulation.linear.",
        _BLK_S + r"\.modulation\.linear\.",
        r"\1.modulation.lin.",
    ),
)
_TO_ORIGINAL = [(re.compile("^" + a), b) for a, b, _, _ in _COMFY_RULES]
_TO_COMFY = [(re.compile("^" + c), d) for _, _, c, d in _COMFY_RULES]


def _rename(key: str, rules: list[tuple[re.Pattern[str], str]]) -> str:
    for pattern, repl in rules:
        new, n = pattern.subn(repl, key, count=1)
        if n:
            return new
    return key


def comfyui_key_to_original(key: str) -> str:
    """One ComfyUI key -> the original HunyuanVideo key (keys outside the backbone pass unchanged)."""
    return _rename(key, _TO_ORIGINAL)


def original_key_to_comfyui(key: str) -> str:
    """Inverse of `comfyui_key_to_original`."""
    return _rename(key, _TO_COMFY)


def comfyui_to_original(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {comfyui_key_to_original(k): v for k, v in sd.items()}


def original_to_comfyui(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {original_key_to_comfyui(k): v for k, v in sd.items()}


def convert_state_dict(
    sd: dict[str, torch.Tensor], src: str, dst: str, *, mlp_ratio: float = 4.0
) -> dict[str, torch.Tensor]:
    """Convert prefix-free backbone keys between layouts (exact: renames, splits and joins only)."""
    for name in (src, dst):
        if name not in LAYOUTS:
            raise ValueError(f"unknown layout {name!r}; choose one of {LAYOUTS}")
    if src == "comfyui":
        sd = comfyui_to_original(sd)
    elif src == "diffusers":
        sd = key_maps.diffusers_to_original(sd)
    if dst == "comfyui":
        return original_to_comfyui(sd)
    if dst == "diffusers":
        return key_maps.original_to_diffusers(sd, mlp_ratio=mlp_ratio)
    return dict(sd)


# --------------------------------------------------------------------------------------------------
# Reading headers (no tensor data) and detecting the layout
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as described by a safetensors header."""

    file: Path
    key: str  # the key as stored in the file
    dtype: torch.dtype
    shape: tuple[int, ...]


@dataclass
class FileScan:
    entries: dict[str, TensorEntry]
    metadata: dict[str, str]
    past_end: list[str]  # keys whose bytes lie beyond the end of a truncated file
    problem: str | None = None  # header-level damage


def scan_safetensors(path: Path) -> FileScan:
    """Parse a safetensors header ourselves (JSON, no tensor data) so even a truncated file can be described."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return FileScan({}, {}, [], f"only {size} bytes long, not a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:
            return FileScan({}, {}, [], "the header length field is invalid (not a safetensors file)")
        raw = f.read(n)
    if len(raw) < n:
        return FileScan({}, {}, [], f"truncated inside its header ({size} bytes, header needs {8 + n})")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return FileScan({}, {}, [], f"its header is not valid JSON ({e})")
    metadata = {str(k): str(v) for k, v in (header.pop("__metadata__", None) or {}).items()}
    data_size = size - 8 - n
    entries, past_end = {}, []
    # data offsets order the tensors as they lie in the file, so "first bad key" is the first cut off
    for key, info in sorted(header.items(), key=lambda kv: kv[1].get("data_offsets", [0, 0])[0]):
        dtype = _ST_DTYPES.get(info.get("dtype", ""))
        if dtype is None:
            return FileScan(
                entries, metadata, past_end, f"tensor {key!r} has unsupported dtype {info.get('dtype')}"
            )
        entries[key] = TensorEntry(path, key, dtype, tuple(int(s) for s in info["shape"]))
        if int(info["data_offsets"][1]) > data_size:
            past_end.append(key)
    return FileScan(entries, metadata, past_end)


@dataclass
class CheckpointInfo:
    """What `detect_layout` learnt from the headers: enough to plan and check a load."""

    path: Path
    layout: str
    prefix: str
    files: tuple[Path, ...]
    entries: dict[str, TensorEntry]  # prefix-free key -> entry (scale/marker keys included)
    metadata: dict[str, str] = field(default_factory=dict)
    diffusers_config: dict[str, Any] | None = None
    ignored: tuple[str, ...] = ()  # keys outside the transformer (other models in a combined file)
    fp8_scales: dict[str, torch.Tensor] = field(default_factory=dict)  # Avatar fp8: module -> scale

    @property
    def quantization(self) -> str:
        """'fp8_scaled' (per-tensor scales), 'fp8' (plain casts) or 'none'."""
        if self.fp8_scales or any(k.endswith(_SCALE_SUFFIXES) for k in self.entries):
            return "fp8_scaled"
        if any(e.dtype in _FP8 for e in self.entries.values()):
            return "fp8"
        return "none"

    @property
    def has_audio(self) -> bool:
        return any(k.startswith(AUDIO_PREFIXES) for k in self.entries)

    def describe(self) -> str:
        pre = f", prefix {self.prefix!r}" if self.prefix else ""
        q = "" if self.quantization == "none" else f", {self.quantization}"
        shards = f", {len(self.files)} shards" if len(self.files) > 1 else ""
        return f"layout detected: {self.layout}{pre}{q}{shards}"

    def file_of(self, key: str) -> Path:
        e = self.entries.get(key)
        return e.file if e is not None else self.path


def _fail(path: Path, layout: str, first_bad: str | None, what: str, todo: str) -> CheckpointError:
    bad = f"first bad key: {first_bad!r}" if first_bad else "first bad key: none (no readable tensor)"
    return CheckpointError(f"{path}: {layout}; {bad} — {what}. {todo}")


def _files_of(path: Path) -> tuple[list[Path], dict[str, Any] | None]:
    """Weight files behind `path` (file, shard index or folder) and a diffusers config if present."""
    if not path.exists():
        raise CheckpointError(
            f"model file not found: {path}. Put transformer weights in ComfyUI/models/diffusion_models "
            "(a .safetensors file or a diffusers folder)."
        )
    config = None
    if path.is_dir():
        cfg_file = path / "config.json"
        if cfg_file.is_file():
            config = json.loads(cfg_file.read_text())
        index = sorted(path.glob("*.safetensors.index.json"))
        if index:
            return _files_from_index(index[0]), config
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise CheckpointError(
                f"{path}: folder holds no .safetensors weights (pickled .bin/.pt files are never loaded); "
                "convert them to safetensors or point to a .safetensors file."
            )
        return files, config
    if path.name.endswith(".index.json"):
        cfg_file = path.parent / "config.json"
        if cfg_file.is_file():
            config = json.loads(cfg_file.read_text())
        return _files_from_index(path), config
    if path.suffix != ".safetensors":
        raise CheckpointError(
            f"{path.name}: only .safetensors weights are loaded (never pickled .pt/.ckpt/.bin); {CONVERT_HINT}."
        )
    return [path], None


def _files_from_index(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index}: not a safetensors shard index ({e}); re-download it") from e
    files = []
    for key, name in weight_map.items():
        shard = index.parent / name
        if not shard.is_file():
            raise CheckpointError(
                f"{index}: shard {name} is missing (first key it holds: {key!r}); download every "
                "shard listed in the index into the same folder."
            )
        if shard not in files:
            files.append(shard)
    return files


def _strip_prefix(keys: Iterable[str]) -> tuple[str, list[str]]:
    """Pick the wrapper prefix; keys outside it (e.g. a VAE in a combined file) are returned as ignored."""
    keys = list(keys)
    for p in _PREFIXES:
        inside = [k for k in keys if k.startswith(p)]
        if inside and (len(inside) == len(keys) or p == "model.diffusion_model."):
            return p, [k for k in keys if not k.startswith(p)]
    return "", []


def _vote(keys: Iterable[str]) -> dict[str, str]:
    """Layout -> first key that only that layout uses."""
    votes: dict[str, str] = {}
    for k in keys:
        if k.startswith(
            ("transformer_blocks.", "single_transformer_blocks.", "x_embedder.", "context_embedder.")
        ):
            votes.setdefault("diffusers", k)
        elif re.search(
            r"(_mod\.lin\.|_attn\.qkv\.|_attn\.proj\.|query_norm\.scale|key_norm\.scale|"
            r"modulation\.lin\.|^time_in\.in_layer\.|self_attn\.qkv\.|c_embedder\.in_layer\.)",
            k,
        ):
            votes.setdefault("comfyui", k)
        elif re.search(
            r"(_mod\.linear\.|_attn_qkv\.|_attn_proj\.|_q_norm\.weight|_k_norm\.weight|"
            r"modulation\.linear\.|^time_in\.mlp\.|self_attn_qkv\.|c_embedder\.linear_1\.)",
            k,
        ):
            votes.setdefault("original", k)
    return votes


def _what_else(keys: list[str]) -> str | None:
    """Name the kind of model a non-transformer file holds, so the message can redirect the user."""
    ks = set(keys)
    if any(
        k.startswith(("encoder.down_blocks.", "decoder.up_blocks.", "encoder.down.", "decoder.up."))
        for k in ks
    ):
        return "a VAE (put it in ComfyUI/models/vae and load it with media.autoencoders.load_autoencoder)"
    if any("feature_extractor.conv_layers" in k for k in ks):
        return "a wav2vec2 audio encoder (put it in ComfyUI/models/audio_encoders)"
    if any(
        k.startswith(("text_model.", "model.layers.", "language_model.", "model.language_model.")) for k in ks
    ):
        return "a text encoder (put it in ComfyUI/models/text_encoders)"
    if any(re.match(r"^(model\.diffusion_model\.)?(blocks\.\d+\.self_attn\.q\.|patch_embedding\.)", k) for k in ks):
        return "a Wan video transformer (MagicInfinite runs HunyuanVideo-family transformers: -I2V or -Avatar)"
    return None


def detect_layout(path: str | Path) -> CheckpointInfo:
    """Read only the headers of `path` (file, shard index or diffusers folder) and name its layout.

    Raises CheckpointError naming the file, the layout detected and the first bad key when the file
    is truncated, mixes layouts, or is not a HunyuanVideo transformer at all.
    """
    path = Path(path)
    files, dconfig = _files_of(path)
    entries: dict[str, TensorEntry] = {}
    metadata: dict[str, str] = {}
    past_end: list[tuple[Path, str]] = []
    for f in files:
        scan = scan_safetensors(f)
        if scan.problem:
            layout = _guess_layout(list(scan.entries))
            raise _fail(
                f,
                f"layout detected: {layout}",
                None,
                f"the file is damaged: {scan.problem}",
                "Download it again.",
            )
        entries.update(scan.entries)
        metadata.update(scan.metadata)
        past_end += [(f, k) for k in scan.past_end]
    prefix, ignored = _strip_prefix(entries)
    stripped = {k[len(prefix) :]: e for k, e in entries.items() if k.startswith(prefix)}
    layout = _guess_layout(list(stripped), metadata, dconfig)
    info = CheckpointInfo(path, layout, prefix, tuple(files), stripped, metadata, dconfig, tuple(ignored))
    if layout == "avatar":
        info.fp8_scales = _avatar_fp8_scales(info)
    if past_end:
        f, key = past_end[0]
        raise _fail(
            f,
            info.describe(),
            key,
            f"the file is truncated ({len(past_end)} tensors lie past its end)",
            "The download or copy was interrupted; download the file again.",
        )
    if layout == "unknown":
        other = _what_else(list(entries))
        first = next(iter(entries), None)
        what = (
            f"this is {other}, not a HunyuanVideo transformer"
            if other
            else (
                "no HunyuanVideo transformer keys found (expected e.g. 'double_blocks.0.img_attn_qkv.weight')"
            )
        )
        raise _fail(
            path,
            "layout detected: unknown",
            first,
            what,
            "Choose a HunyuanVideo / MagicInfinite transformer file from models/diffusion_models.",
        )
    votes = _vote(stripped)
    mixed = [
        name
        for name in votes
        if name != layout and not (layout in ("magicinfinite", "avatar") and name == "original")
    ]
    if mixed:
        raise _fail(
            path,
            info.describe(),
            prefix + votes[mixed[0]],
            f"the file mixes {layout} names with {mixed[0]} names (mislabelled or merged badly)",
            "Re-export it from one source, or use the original file.",
        )
    return info


def _guess_layout(
    keys: list[str], metadata: dict[str, str] | None = None, dconfig: dict | None = None
) -> str:
    if metadata and metadata.get(FORMAT_KEY, "").startswith("magicinfinite"):
        return "magicinfinite"
    votes = _vote(keys)
    if dconfig is not None and dconfig.get("_class_name") == "HunyuanVideoTransformer3DModel":
        return "diffusers"
    if set(votes) == {"original"} and any(k.startswith(AVATAR_MARKERS) for k in keys):
        return "avatar"
    if len(votes) == 1:
        return next(iter(votes))
    if len(votes) > 1:  # mixed: report the majority; detect_layout names the odd key
        counts = {name: sum(1 for k in keys if _vote([k]).get(name)) for name in votes}
        return max(counts, key=counts.get)
    if keys and all(k.startswith(AUDIO_PREFIXES) for k in keys if not k.endswith(_SCALE_SUFFIXES)):
        return "magicinfinite"  # audio-only overlay
    return "unknown"


# --------------------------------------------------------------------------------------------------
# Conversion plans (names and shapes only) and config inference
# --------------------------------------------------------------------------------------------------


def _avatar_fp8_scales(info: CheckpointInfo) -> dict[str, torch.Tensor]:
    """The Avatar fp8 file's per-layer scales, from `<stem>_map.safetensors` beside it.

    Its float8 e4m3 block weights mean nothing without them (dequantised weight = weight * scale), so a
    missing map is refused in one line instead of loading a wrong model.
    """
    fp8 = [k for k, e in info.entries.items() if e.dtype in _FP8]
    if not fp8 or any(k.endswith(_SCALE_SUFFIXES) for k in info.entries):
        return {}
    first = info.files[0]
    map_path = first.with_name(first.name[: -len(".safetensors")] + FP8_MAP_SUFFIX)
    if not map_path.is_file():
        raise _fail(
            first,
            "layout detected: avatar, fp8",
            info.prefix + fp8[0],
            f"float8 weights without their per-layer scale map (looked for {map_path.name} beside it)",
            f"Convert mp_rank_00_model_states_fp8_map.pt too ({CONVERT_HINT}) and save it as {map_path.name}.",
        )
    scan = scan_safetensors(map_path)
    if scan.problem or scan.past_end:
        raise _fail(map_path, "fp8 scale map", None, f"the file is damaged: {scan.problem or 'truncated'}",
                    "Convert the map again.")
    from safetensors.torch import load_file

    raw = load_file(str(map_path))
    scales = {}
    for k, v in raw.items():
        for p in _PREFIXES:
            if k.startswith(p):
                k = k[len(p) :]
                break
        scales[k] = v.float()
    unscaled = [k for k in fp8 if k.endswith(".weight") and k[: -len(".weight")] not in scales]
    if unscaled:
        raise _fail(first, "layout detected: avatar, fp8", info.prefix + unscaled[0],
                    f"{len(unscaled)} float8 weights have no scale in {map_path.name}",
                    "Use the map that came with this fp8 file.")
    return scales


def _apply_fp8_map(sd: dict[str, torch.Tensor], scales: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Avatar fp8: weight (float8) * its layer's scale (a scalar, or one per output row)."""
    out = {}
    for k, v in sd.items():
        scale = scales.get(k[: -len(".weight")]) if k.endswith(".weight") and v.dtype in _FP8 else None
        if scale is not None:
            s = scale.to(device=v.device)
            s = s.reshape(-1, *([1] * (v.ndim - 1))) if s.numel() > 1 else s.reshape(())
            v = v.to(torch.float32) * s
        out[k] = v
    return out


def _dequantize(sd: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Apply fp8 scales (`scale_weight` / `weight_scale`), drop fp8 markers, cast floats to dtype."""
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k in _DROP_KEYS or k.endswith(_DROP_SUFFIXES) or k.endswith(_SCALE_SUFFIXES):
            continue
        stem = k[: -len("weight")] if k.endswith("weight") else None
        scale = None
        if stem is not None:
            scale = next((sd[stem + s[1:]] for s in _SCALE_SUFFIXES if stem + s[1:] in sd), None)
        if scale is not None:
            v = v.to(torch.float32) * scale.to(device=v.device, dtype=torch.float32)
        if v.is_floating_point() and dtype is not None:
            v = v.to(dtype)
        out[k] = v
    return out


def _orphan_scales(keys: Iterable[str]) -> list[str]:
    ks = set(keys)
    return [k for k in ks if k.endswith(_SCALE_SUFFIXES) and k.rsplit(".", 1)[0] + ".weight" not in ks]


def to_original(
    info: CheckpointInfo,
    sd: dict[str, torch.Tensor],
    *,
    dtype: torch.dtype | None = None,
    mlp_ratio: float = 4.0,
) -> dict[str, torch.Tensor]:
    """Prefix-free tensors of `info`'s layout -> original names (dequantised, cast to `dtype`)."""
    if info.fp8_scales:
        sd = _apply_fp8_map(sd, info.fp8_scales)
    sd = _dequantize(sd, dtype)
    src = "original" if info.layout in ("magicinfinite", "avatar") else info.layout
    try:
        return convert_state_dict(sd, src, "original", mlp_ratio=mlp_ratio)
    except KeyError as e:  # key_maps names the key it cannot place
        key = e.args[0].split("'")[1] if "'" in str(e.args[0]) else str(e.args[0])
        raise _fail(
            info.file_of(key),
            info.describe(),
            info.prefix + key,
            "this key has no place in the HunyuanVideo transformer",
            "The file is not a HunyuanVideo diffusers transformer; check what it holds.",
        ) from None


def meta_state_dict(info: CheckpointInfo) -> dict[str, torch.Tensor]:
    """The file's tensors as meta tensors (right names, dtypes and shapes; no data)."""
    return {k: torch.empty(e.shape, dtype=e.dtype, device="meta") for k, e in info.entries.items()}


def _mlp_ratio_of(info: CheckpointInfo) -> float:
    """The single-block split of diffusers' fused layout needs the MLP ratio; read it from shapes."""
    e = info.entries
    if "transformer_blocks.0.ff.net.0.proj.weight" in e:
        w = e["transformer_blocks.0.ff.net.0.proj.weight"].shape
        return w[0] / w[1]
    return 4.0


def infer_dit_config(sd: dict[str, torch.Tensor], *, with_audio: bool = True) -> DiTConfig:
    """Backbone config from original-named shapes (meta tensors are fine).

    Sizes, depths and flags come from the shapes; head_dim from the q-norm weight. RoPE dims and the
    audio layers are not in a backbone file: a matching preset supplies them (hunyuan-13b, tiny), and
    a head_dim of 128 implies HunyuanVideo's (16, 56, 56). Otherwise pass `cfg=` explicitly.
    """

    def shape(key: str) -> tuple[int, ...]:
        if key not in sd:
            raise CheckpointError(f"cannot infer the model config: key {key!r} is missing; pass cfg=")
        return tuple(sd[key].shape)

    hidden, in_ch, *patch = shape("img_in.proj.weight")
    head_dim = shape("double_blocks.0.img_attn_q_norm.weight")[0]
    out_ch = shape("final_layer.linear.weight")[0] // math.prod(patch)

    def depth(prefix: str) -> int:
        ids = {int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
        return max(ids) + 1 if ids else 0

    kw: dict[str, Any] = dict(
        hidden_size=hidden,
        num_heads=hidden // head_dim,
        depth_double=depth("double_blocks."),
        depth_single=depth("single_blocks."),
        mlp_ratio=shape("double_blocks.0.img_mlp.fc1.weight")[0] / hidden,
        patch_size=tuple(patch),
        in_channels=in_ch,
        out_channels=out_ch,
        text_dim=shape("txt_in.input_embedder.weight")[1],
        pooled_dim=shape("vector_in.in_layer.weight")[1],
        refiner_depth=depth("txt_in.individual_token_refiner.blocks."),
        qkv_bias="double_blocks.0.img_attn_qkv.bias" in sd,
        guidance_embed=any(k.startswith("guidance_in.") for k in sd),
        image_token_dim=shape("image_in.weight")[1] if "image_in.weight" in sd else 0,
    )
    avatar = "audio_adapter_blocks.0.to_q.weight" in sd
    for preset in DIT_PRESETS.values():
        probe = replace(preset, audio=None)
        if (preset.avatar is not None) != avatar:
            continue
        if avatar and not _avatar_shapes_fit(preset, sd):
            continue
        # an Avatar file's text widths are read off its shapes (a small model may read the demo's MiniLM)
        free = ("image_token_dim", "text_dim", "pooled_dim") if avatar else ("image_token_dim",)
        if all(getattr(probe, k) == v for k, v in kw.items() if k not in free):
            return replace(
                preset, **{k: kw[k] for k in free}, audio=preset.audio if with_audio else None
            )
    if avatar:
        raise CheckpointError(
            f"a HunyuanVideo-Avatar file whose shapes (hidden {hidden}, {kw['depth_double']} double blocks, "
            f"{depth('audio_adapter_blocks.')} adapters) match no preset; pass cfg=DiTConfig(..., avatar=...)"
        )
    if head_dim != 128:
        raise CheckpointError(
            f"transformer shape (hidden {hidden}, head_dim {head_dim}) matches no preset and RoPE dims "
            "are not stored in checkpoints; pass cfg=DiTConfig(...) explicitly"
        )
    return DiTConfig(**kw, rope_dims=(16, 56, 56), audio=None)


def _avatar_shapes_fit(preset: DiTConfig, sd: dict[str, torch.Tensor]) -> bool:
    av = preset.avatar
    n = len({k.split(".")[1] for k in sd if k.startswith("audio_adapter_blocks.")})
    return (
        n == len(av.adapter_after_double)
        and tuple(sd["audio_proj.proj1.weight"].shape) == (av.audio_hidden, av.audio_feature_dim)
        and tuple(sd["audio_adapter_blocks.0.to_q.weight"].shape) == (av.adapter_dim, preset.hidden_size)
    ) if "audio_proj.proj1.weight" in sd else False


def dit_config_from_diffusers(c: dict[str, Any]) -> dict[str, Any]:
    """Backbone fields of a diffusers `HunyuanVideoTransformer3DModel` config.json."""
    return dict(
        hidden_size=c["num_attention_heads"] * c["attention_head_dim"],
        num_heads=c["num_attention_heads"],
        depth_double=c["num_layers"],
        depth_single=c["num_single_layers"],
        mlp_ratio=float(c.get("mlp_ratio", 4.0)),
        patch_size=(c.get("patch_size_t", 1), c.get("patch_size", 2), c.get("patch_size", 2)),
        rope_dims=tuple(c.get("rope_axes_dim", (16, 56, 56))),
        rope_theta=float(c.get("rope_theta", 256.0)),
        in_channels=c["in_channels"],
        out_channels=c["out_channels"],
        text_dim=c["text_embed_dim"],
        pooled_dim=c["pooled_projection_dim"],
        refiner_depth=c.get("num_refiner_layers", 2),
        guidance_embed=bool(c.get("guidance_embeds", False)),
    )


def diffusers_config(cfg: DiTConfig) -> dict[str, Any]:
    """config.json for a diffusers `HunyuanVideoTransformer3DModel` holding `cfg`'s backbone."""
    if cfg.patch_size[1] != cfg.patch_size[2]:
        raise ValueError("diffusers' HunyuanVideo transformer needs a square spatial patch")
    return {
        "_class_name": "HunyuanVideoTransformer3DModel",
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "num_attention_heads": cfg.num_heads,
        "attention_head_dim": cfg.head_dim,
        "num_layers": cfg.depth_double,
        "num_single_layers": cfg.depth_single,
        "num_refiner_layers": cfg.refiner_depth,
        "mlp_ratio": cfg.mlp_ratio,
        "patch_size": cfg.patch_size[1],
        "patch_size_t": cfg.patch_size[0],
        "qk_norm": "rms_norm",
        "guidance_embeds": cfg.guidance_embed,
        "text_embed_dim": cfg.text_dim,
        "pooled_projection_dim": cfg.pooled_dim,
        "rope_theta": cfg.rope_theta,
        "rope_axes_dim": list(cfg.rope_dims),
        "image_condition_type": "latent_concat" if cfg.image_concat else None,
    }


def stored_dit_config(text: str, where: str) -> DiTConfig:
    """The DiT config a checkpoint stores in its metadata, checked against `limits` before anything is built.

    Why: the metadata is user data; ``depth_double: 1e7`` hung building blocks, ``num_heads: 0`` raised a
    ZeroDivisionError.
    """
    from magicinfinite_core.errors import MagicInfiniteError
    from magicinfinite_core.limits import MAX_CONFIG_DEPTH, check_dit_config, config_depth

    try:
        d = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{where} is not valid JSON ({type(exc).__name__})") from None
    try:
        if config_depth(d) > MAX_CONFIG_DEPTH:
            raise MagicInfiniteError(f"nested deeper than {MAX_CONFIG_DEPTH} levels")
        check_dit_config(d, where)
    except MagicInfiniteError as exc:
        raise CheckpointError(f"{exc}; the file's metadata is damaged or not a MagicInfinite DiT") from None
    return DiTConfig.from_dict(d)


def resolve_config(
    infos: Sequence[CheckpointInfo], converted: dict[str, torch.Tensor], *, with_audio: bool = True
) -> DiTConfig:
    """Config from (in order): our metadata in an overlay or the base file, diffusers config.json, shapes."""
    for info in reversed(infos):
        if CONFIG_KEY in info.metadata:
            return stored_dit_config(info.metadata[CONFIG_KEY], f"{info.path} metadata {CONFIG_KEY!r}")
    base = infer_dit_config(converted, with_audio=with_audio)
    dc = infos[0].diffusers_config
    if dc is not None and dc.get("_class_name") == "HunyuanVideoTransformer3DModel":
        base = replace(
            base,
            **{k: v for k, v in dit_config_from_diffusers(dc).items() if k in ("rope_dims", "rope_theta")},
        )
    return base


# --------------------------------------------------------------------------------------------------
# Checking a planned load against the model (names and shapes only)
# --------------------------------------------------------------------------------------------------


def _audio_hint(key: str, got: tuple[int, ...], want: tuple[int, ...], cfg: DiTConfig) -> str:
    if not key.startswith("audio_proj.frame_in.") or cfg.audio is None or len(got) != 2:
        return ""
    per_frame = got[1] // cfg.audio.frame_window
    return (
        f" The file's audio projection takes {per_frame} features per video frame, the config "
        f"{cfg.audio.feature_dim}: use the matching audio encoder (wav2vec2-base 12x768 = 9216, "
        f"wav2vec2-large 24x1024 = 24576) or set cfg.audio.feature_dim = {per_frame}."
    )


def check_plan(
    model_shapes: dict[str, tuple[int, ...]],
    planned: list[tuple[CheckpointInfo, dict[str, torch.Tensor]]],
    cfg: DiTConfig,
    *,
    allow_missing: tuple[str, ...] = (),
) -> None:
    """Refuse a load whose names or shapes do not fit, naming file, layout and first bad key."""
    covered: set[str] = set()
    for info, converted in planned:
        unexpected = [k for k in converted if k not in model_shapes]
        misshapen = [
            k for k in converted if k in model_shapes and tuple(converted[k].shape) != model_shapes[k]
        ]
        if unexpected or misshapen:
            key = (unexpected or misshapen)[0]
            src = original_key_to_comfyui(key) if info.layout == "comfyui" else key
            if key in misshapen:
                got, want = tuple(converted[key].shape), model_shapes[key]
                what = (
                    f"shape {got} in the file but {want} in the model ({len(misshapen)} keys differ in shape, "
                    f"{len(unexpected)} unexpected)" + _audio_hint(key, got, want, cfg)
                )
            else:
                what = f"the model has no such weight ({len(unexpected)} unexpected keys, {len(misshapen)} misshapen)"
            raise _fail(
                info.file_of(src),
                info.describe(),
                info.prefix + src,
                what,
                "Check that the file is the model you meant and pass the matching cfg= (or let "
                "load_transformer infer it); `magicinfinite inspect FILE` lists every bad key.",
            )
        orphans = _orphan_scales(info.entries)
        if orphans:
            raise _fail(
                info.file_of(orphans[0]),
                info.describe(),
                info.prefix + orphans[0],
                "an fp8 scale without its weight",
                "The file is damaged; download it again.",
            )
        covered |= set(converted)
    missing = [k for k in model_shapes if k not in covered and not k.startswith(allow_missing)]
    if missing:
        info = planned[0][0]
        key = missing[0]
        shown = original_key_to_comfyui(key) if info.layout == "comfyui" else key
        raise _fail(
            info.path,
            info.describe(),
            info.prefix + shown,
            f"{len(missing)} weights of the model are missing from the file (first listed in model order)",
            "The file is incomplete or of a different variant (e.g. T2V without guidance / I2V); "
            "download the full checkpoint or pass the matching cfg= (`magicinfinite inspect FILE` lists them).",
        )


# --------------------------------------------------------------------------------------------------
# Streaming load
# --------------------------------------------------------------------------------------------------

_GROUP = re.compile(
    r"^((?:double_blocks|single_blocks|transformer_blocks|single_transformer_blocks|"
    r"audio_double_blocks|audio_single_blocks)\.\d+|txt_in\.individual_token_refiner\.blocks\.\d+|"
    r"context_embedder\.token_refiner\.refiner_blocks\.\d+)\."
)


def _group_of(key: str) -> str:
    m = _GROUP.match(key)
    return m.group(1) if m else "<top>"


def iter_original_groups(
    info: CheckpointInfo,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = torch.bfloat16,
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield the file's weights block by block, converted to original names, on `device`.

    Every tensor is read with `safe_open` directly onto `device`; only one block is alive at a time,
    so a 13B checkpoint loads onto a GPU without a full CPU copy.
    """
    groups: dict[str, list[str]] = {}
    for k in info.entries:
        groups.setdefault(_group_of(k), []).append(k)
    handles: dict[Path, Any] = {}
    mlp_ratio = _mlp_ratio_of(info)
    try:
        for f in info.files:
            try:
                handles[f] = safe_open(str(f), framework="pt", device=str(device))
            except Exception as e:  # safetensors raises its own error types
                raise _fail(
                    f, info.describe(), None, f"safetensors cannot open it ({e})", "Download the file again."
                ) from e
        for keys in groups.values():
            raw = {k: handles[info.entries[k].file].get_tensor(info.prefix + k) for k in keys}
            yield to_original(info, raw, dtype=dtype, mlp_ratio=mlp_ratio)
    finally:
        handles.clear()


def _materialise_audio(model: MagicInfiniteDiT, device: str | torch.device, dtype: torch.dtype) -> None:
    """Fresh audio layers with their real init (zero output projections: stage 2 starts from here).

    Only modules that no file provided are replaced; a module loaded in part is refused.
    """
    cfg = model.cfg
    if cfg.audio is None:
        return

    def fresh_xattn() -> nn.Module:
        return AudioCrossAttention(cfg.hidden_size, cfg.audio, cfg.norm_eps)

    def state(m: nn.Module) -> str:
        metas = [t.is_meta for t in m.state_dict().values()]
        return "meta" if all(metas) else "partial" if any(metas) else "loaded"

    with torch.device(device):
        slots: list[tuple[nn.Module, str, Any]] = [(model, "audio_proj", lambda: AudioProjection(cfg.audio))]
        slots += [
            (model.audio_double_blocks, str(i), fresh_xattn) for i in range(len(model.audio_double_blocks))
        ]
        slots += [
            (model.audio_single_blocks, str(i), fresh_xattn) for i in range(len(model.audio_single_blocks))
        ]
        for parent, name, make in slots:
            st = state(parent[int(name)] if isinstance(parent, nn.ModuleList) else getattr(parent, name))
            if st == "partial":
                raise CheckpointError(
                    f"audio layer {name} was only partly present in the files; use a complete stage-2 checkpoint"
                )
            if st == "meta":
                mod = make().to(dtype=dtype)
                if isinstance(parent, nn.ModuleList):
                    parent[int(name)] = mod
                else:
                    setattr(parent, name, mod)


def plan_load(
    path: str | Path,
    cfg: DiTConfig | None = None,
    *,
    overlays: Sequence[str | Path] = (),
    allow_missing_audio: bool | None = None,
    with_audio: bool = True,
    expect_layout: str | None = None,
) -> tuple[DiTConfig, list[CheckpointInfo]]:
    """Detect every file's layout, settle the config and check names/shapes — reading headers only.

    allow_missing_audio=None: audio layers may be absent only when no file is one of ours (a
    HunyuanVideo base never carries them; a MagicInfinite file without them is broken).
    """
    infos = [detect_layout(path)] + [detect_layout(p) for p in overlays]
    if expect_layout is not None and infos[0].layout != expect_layout:
        first = infos[0].prefix + next(iter(infos[0].entries), "")
        raise _fail(infos[0].path, infos[0].describe(), first, f"expected a {_LAYOUT_WORDS.get(expect_layout, expect_layout)} "
                    f"checkpoint but this is {_layout_words(infos[0])}", _PICK_HINT.get(expect_layout, "Pick the right file."))
    if cfg is not None and cfg.avatar is not None and infos[0].layout != "avatar":
        first = infos[0].prefix + next(iter(infos[0].entries), "")
        raise _fail(infos[0].path, infos[0].describe(), first, f"the config is HunyuanVideo-Avatar but this is "
                    f"{_layout_words(infos[0])}", _PICK_HINT["avatar"])
    if allow_missing_audio is None:
        allow_missing_audio = all(info.layout != "magicinfinite" for info in infos)
    planned = []
    for info in infos:
        planned.append(
            (info, to_original(info, meta_state_dict(info), dtype=None, mlp_ratio=_mlp_ratio_of(info)))
        )
    if cfg is None:
        merged: dict[str, torch.Tensor] = {}
        for _, conv in planned:
            merged.update(conv)
        cfg = resolve_config(infos, merged, with_audio=with_audio)
    if cfg.avatar is not None:
        allow_missing_audio = False  # Avatar's modules come from its file, never from a fresh init
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in MagicInfiniteDiT(cfg).state_dict().items()}
    check_plan(shapes, planned, cfg, allow_missing=AUDIO_PREFIXES if allow_missing_audio else ())
    return cfg, infos


_LAYOUT_WORDS = {"avatar": "HunyuanVideo-Avatar", "magicinfinite": "MagicInfinite"}
_PICK_HINT = {
    "avatar": "For HunyuanVideo-Avatar pick its transformer (hunyuan_video_avatar_720_bf16.safetensors, or "
    "mp_rank_00_model_states.pt converted with `magicinfinite convert`); docs/hunyuan_avatar.md.",
}


def _layout_words(info: CheckpointInfo) -> str:
    """'a HunyuanVideo-I2V transformer (original names, 33 input channels)' and the like."""
    e = info.entries
    key = {"diffusers": "x_embedder.proj.weight"}.get(info.layout, "img_in.proj.weight")
    ch = e[key].shape[1] if key in e and len(e[key].shape) == 5 else None
    final = e.get({"diffusers": "proj_out.weight"}.get(info.layout, "final_layer.linear.weight"))
    out = final.shape[0] // math.prod(e[key].shape[2:]) if ch and final is not None else None
    kind = "HunyuanVideo-I2V" if ch and out and ch == 2 * out + 1 else "HunyuanVideo (T2V / token-replace I2V)"
    kind = kind if ch else "HunyuanVideo"
    if info.layout == "avatar":
        kind = "HunyuanVideo-Avatar"
    if info.layout == "magicinfinite":
        kind = "MagicInfinite"
    return f"a {kind} transformer ({info.layout} names" + (f", {ch} input channels)" if ch else ")")


def load_transformer(
    path: str | Path,
    cfg: DiTConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    overlays: Sequence[str | Path] = (),
    allow_missing_audio: bool | None = None,
    with_audio: bool = True,
    expect_layout: str | None = None,
) -> MagicInfiniteDiT:
    """Load a HunyuanVideo / MagicInfinite transformer from any supported layout: the one DiT loader.

    Used by bundles, the nodes, the USP workers, the trainers and the evaluation alike.
    `path`: a .safetensors file (original, ComfyUI, ours; fp8 / fp8-scaled dequantised), a shard
    index json, or a diffusers folder. `overlays`: our own stage-2 / distilled files whose keys
    replace or add to the base (usually the audio layers). `cfg=None` infers the config (from our
    metadata, diffusers config.json or the shapes + presets). Audio layers absent from every file keep
    their zero-initialised start when the files are a HunyuanVideo base (any foreign layout); from our
    own files they are an error unless `allow_missing_audio=True` (a stage-1 file starting stage 2).
    """
    cfg, infos = plan_load(
        path, cfg, overlays=overlays, allow_missing_audio=allow_missing_audio, with_audio=with_audio,
        expect_layout=expect_layout,
    )
    with torch.device("meta"):
        model = MagicInfiniteDiT(cfg)
    for info in infos:
        for group in iter_original_groups(info, device=device, dtype=dtype):
            model.load_state_dict(group, strict=False, assign=True)
    left = [k for k, v in model.state_dict().items() if v.is_meta]
    if left:
        if all(k.startswith(AUDIO_PREFIXES) for k in left):
            _materialise_audio(model, device, dtype)
        else:  # check_plan rules this out; keep the guard so a half-loaded model never escapes
            raise _fail(
                infos[0].path,
                infos[0].describe(),
                left[0],
                "weight was never loaded",
                "Report this as a bug with the file's name.",
            )
    return model.eval()


# --------------------------------------------------------------------------------------------------
# Writing files in any layout (tests, conversions, exports)
# --------------------------------------------------------------------------------------------------


def quantize_fp8_scaled(sd: dict[str, torch.Tensor], *, min_ndim: int = 2) -> dict[str, torch.Tensor]:
    """ComfyUI "fp8_scaled" encoding: float8_e4m3fn weights + float32 `scale_weight` per matrix."""
    out: dict[str, torch.Tensor] = {}
    fmax = torch.finfo(torch.float8_e4m3fn).max
    for k, v in sd.items():
        if k.endswith(".weight") and v.ndim >= min_ndim and v.is_floating_point():
            scale = (v.detach().float().abs().max() / fmax).clamp(min=1e-12)
            out[k] = (v.float() / scale).to(torch.float8_e4m3fn)
            out[k[: -len("weight")] + "scale_weight"] = scale.reshape(())
        else:
            out[k] = v
    out["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return out


def save_transformer(
    path: str | Path,
    model_or_sd: MagicInfiniteDiT | dict[str, torch.Tensor],
    *,
    layout: str = "original",
    cfg: DiTConfig | None = None,
    prefix: str = "",
    dtype: torch.dtype | None = None,
    fp8_scaled: bool = False,
    max_shard_bytes: int | None = None,
) -> Path:
    """Write backbone weights in a published layout (diffusers: a folder with config.json).

    Our audio layers exist only in the `magicinfinite` layout; use `checkpoints.save_dit` for those.
    """
    if isinstance(model_or_sd, MagicInfiniteDiT):
        cfg = cfg or model_or_sd.cfg
        sd = model_or_sd.state_dict()
    else:
        sd = dict(model_or_sd)
    if layout == "magicinfinite":
        if cfg is None:
            raise ValueError("saving in our layout needs cfg= so the file carries its config")
        return save_state_dict(path, sd, kind="magicinfinite-dit", config=cfg.to_dict(), dtype=dtype)
    sd = {k: v for k, v in sd.items() if not k.startswith(AUDIO_PREFIXES)}
    sd = convert_state_dict(sd, "original", layout, mlp_ratio=cfg.mlp_ratio if cfg else 4.0)
    if dtype is not None:
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    if fp8_scaled:
        sd = quantize_fp8_scaled(sd)
    sd = {prefix + k: v.detach().contiguous().cpu() for k, v in sd.items()}
    path = Path(path)
    if layout == "diffusers":
        if cfg is None:
            raise ValueError("a diffusers folder needs cfg= for its config.json")
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(diffusers_config(cfg), indent=2))
        return _write_shards(path, "diffusion_pytorch_model", sd, max_shard_bytes)
    if max_shard_bytes is not None:
        path.mkdir(parents=True, exist_ok=True)
        return _write_shards(path, "model", sd, max_shard_bytes)
    return save_state_dict(path, sd, kind=f"hunyuanvideo-{layout}")


def _write_shards(folder: Path, stem: str, sd: dict[str, torch.Tensor], max_bytes: int | None) -> Path:
    from safetensors.torch import save_file

    if max_bytes is None:
        save_file(sd, str(folder / f"{stem}.safetensors"))
        return folder
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, v in sd.items():
        nbytes = v.numel() * v.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += nbytes
    n = len(shards)
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        name = f"{stem}-{i:05d}-of-{n:05d}.safetensors"
        save_file(shard, str(folder / name))
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(v.numel() * v.element_size() for v in sd.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / f"{stem}.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return folder


# --------------------------------------------------------------------------------------------------
# Audio encoder sizes -> the audio projection's input size
# --------------------------------------------------------------------------------------------------

WAV2VEC2_SIZES = {"base": (12, 768), "large": (24, 1024)}


def wav2vec2_feature_dim(path: str | Path) -> int:
    """Per-frame feature size (layers x channels) a wav2vec2 checkpoint gives, from its header/config.

    base: 12 x 768 = 9216; large: 24 x 1024 = 24576. Reads no weights: a HF folder's config.json, or
    the layer count and hidden size from a single file's tensor shapes (ComfyUI audio_encoders).
    """
    path = Path(path)
    if path.is_dir():
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise CheckpointError(
                f"{path}: no config.json; point to a HF wav2vec2 folder or a .safetensors file"
            )
        c = json.loads(cfg_file.read_text())
        return int(c["num_hidden_layers"]) * int(c["hidden_size"])
    if not path.is_file():
        raise CheckpointError(f"wav2vec2 model {path} not found; put it in ComfyUI/models/audio_encoders")
    scan = scan_safetensors(path)
    if scan.problem:
        raise CheckpointError(f"{path}: the file is damaged: {scan.problem}. Download it again.")
    layers, hidden = set(), None
    for k, e in scan.entries.items():
        if m := re.search(r"encoder\.layers\.(\d+)\.", k):
            layers.add(int(m.group(1)))
        if k.endswith("encoder.layer_norm.weight"):
            hidden = e.shape[0]
    if not layers or hidden is None:
        raise CheckpointError(
            f"{path}: no wav2vec2 encoder layers found (first key: {next(iter(scan.entries), None)!r}); "
            "use a wav2vec2 file from models/audio_encoders"
        )
    return (max(layers) + 1) * hidden


def with_audio_feature_dim(cfg: DiTConfig, feature_dim: int) -> DiTConfig:
    """The same DiT config with the audio projection sized for `feature_dim` features per frame."""
    audio = cfg.audio if cfg.audio is not None else AudioLayerConfig()
    return replace(cfg, audio=replace(audio, feature_dim=int(feature_dim)))


# --------------------------------------------------------------------------------------------------
# Listing candidate files for ComfyUI loader nodes
# --------------------------------------------------------------------------------------------------


def list_model_files(folder: str | Path) -> list[str]:
    """Loadable entries under a model folder: .safetensors files, shard indexes and diffusers folders.

    Shard pieces (`*-00001-of-00003.safetensors`) are listed through their index only.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_dir() and (p / "config.json").is_file() and any(p.glob("*.safetensors")):
            found.append(rel)
        elif (
            p.is_file()
            and p.name.endswith(".safetensors.index.json")
            and not (p.parent / "config.json").is_file()
        ):
            found.append(rel)
        elif (
            p.is_file()
            and p.suffix == ".safetensors"
            and not re.search(r"-\d{5}-of-\d{5}\.safetensors$", p.name)
            and not (p.parent / "config.json").is_file()
        ):
            found.append(rel)
    return found
