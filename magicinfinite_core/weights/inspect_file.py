"""`magicinfinite inspect FILE`: what a transformer file is and which keys keep it from loading.

Why: when a file will not load, users need the full list, not the first bad key. Only the
safetensors header is read (8-byte length + JSON, parsed by `transformer_layouts.scan_safetensors`),
so a 26 GB file is inspected on a machine with less memory than that. The expected key set is the
one the loaders check against (`MagicInfiniteDiT` on the meta device, in the file's own naming), so
the names printed here are the names in the loaders' errors.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from magicinfinite_core.config import DiTConfig, dit_preset
from magicinfinite_core.errors import CheckpointError
from magicinfinite_core.models.dit import AUDIO_PREFIXES, MagicInfiniteDiT
from magicinfinite_core.weights import key_maps
from magicinfinite_core.weights import transformer_layouts as tl

UNSUPPORTED = "not a supported layout"
_NAMES = {
    "avatar": "HunyuanVideo-Avatar",
    "original": "HunyuanVideo original",
    "comfyui": "HunyuanVideo ComfyUI",
    "diffusers": "HunyuanVideo diffusers",
    "magicinfinite": "MagicInfinite (ours)",
}
_MARKER_SUFFIXES = (".scale_weight", ".weight_scale", ".scale_input", ".input_scale")


@dataclass
class InspectReport:
    layout: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_shapes: list[dict] = field(default_factory=list)  # {"key", "file", "expected"}
    notes: list[str] = field(default_factory=list)  # truncation, quantisation, what else the file is

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("notes")
        return json.dumps(d, indent=2)

    def to_text(self) -> str:
        lines = [f"layout: {self.layout}", *[f"note: {n}" for n in self.notes]]
        for title, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            lines.append(f"{title}: {len(items)}")
            lines += [f"  {k}" for k in items]
        lines.append(f"wrong_shapes: {len(self.wrong_shapes)}")
        lines += [f"  {w['key']}: file {w['file']}, expected {w['expected']}" for w in self.wrong_shapes]
        return "\n".join(lines)


def expected_shapes(layout: str, cfg: DiTConfig) -> dict[str, tuple[int, ...]]:
    """Every key a complete file of `layout` holds for `cfg`, in that layout's names (no prefix)."""
    with torch.device("meta"):
        sd = MagicInfiniteDiT(cfg).state_dict()
    if layout != "magicinfinite":
        sd = {k: v for k, v in sd.items() if cfg.avatar is not None or not k.startswith(AUDIO_PREFIXES)}
    if layout == "comfyui":
        sd = tl.original_to_comfyui(sd)
    elif layout == "diffusers":
        sd = key_maps.original_to_diffusers(sd, mlp_ratio=cfg.mlp_ratio)
    return {k: tuple(v.shape) for k, v in sd.items()}


def _default_cfg(layout: str) -> DiTConfig:
    return dit_preset("hunyuan-avatar") if layout == "avatar" else dit_preset("hunyuan-13b").without_audio()


def _config_of(info: tl.CheckpointInfo) -> DiTConfig:
    """The file's own config when its shapes say it; else the layout's full-size preset."""
    try:
        converted = tl.to_original(info, tl.meta_state_dict(info), mlp_ratio=tl._mlp_ratio_of(info))
        cfg = tl.resolve_config([info], converted, with_audio=info.layout == "magicinfinite")
    except (CheckpointError, KeyError, ValueError, RuntimeError):
        return _default_cfg(info.layout)
    if info.layout == "avatar" and cfg.avatar is None:
        return _default_cfg("avatar")
    return cfg


def compare(expected: dict[str, tuple[int, ...]], got: dict[str, tuple[int, ...]], report: InspectReport) -> None:
    report.missing = [k for k in expected if k not in got]
    report.unexpected = sorted(k for k in got if k not in expected)
    report.wrong_shapes = [
        {"key": k, "file": list(got[k]), "expected": list(expected[k])}
        for k in expected
        if k in got and tuple(got[k]) != tuple(expected[k])
    ]


def _weights_only(entries: dict) -> dict[str, tuple[int, ...]]:
    return {
        k: tuple(e.shape) for k, e in entries.items() if not k.endswith(_MARKER_SUFFIXES) and k != "scaled_fp8"
    }


def inspect_file(path: str | Path) -> InspectReport:
    """Name the layout of `path` and list missing / unexpected / wrong-shaped keys (headers only)."""
    path = Path(path)
    files, dconfig = tl._files_of(path)  # refuses .pt / .bin (never unpickled) in one line
    entries, metadata, notes = {}, {}, []
    for f in files:
        scan = tl.scan_safetensors(f)
        if scan.problem:
            raise CheckpointError(f"{f}: the file is damaged: {scan.problem}. Download it again.")
        if scan.past_end:
            notes.append(f"{f.name} is truncated: {len(scan.past_end)} tensors lie past its end "
                         f"(first: {scan.past_end[0]!r}); download it again")
        entries.update(scan.entries)
        metadata.update(scan.metadata)
    prefix, ignored = tl._strip_prefix(entries)
    stripped = {k[len(prefix):]: e for k, e in entries.items() if k.startswith(prefix)}
    if prefix:
        notes.append(f"keys under the prefix {prefix!r}")
    layout = tl._guess_layout(list(stripped), metadata, dconfig)
    got = _weights_only(stripped)
    if layout != "unknown":
        info = tl.CheckpointInfo(path, layout, prefix, tuple(files), stripped, metadata, dconfig, tuple(ignored))
        if any(e.dtype in tl._FP8 for e in stripped.values()):
            notes.append("float8 weights (dequantised on load" +
                         (f"; the Avatar fp8 file needs its scale map *{tl.FP8_MAP_SUFFIX} beside it)"
                          if layout == "avatar" else ")"))
        report = InspectReport(_NAMES[layout], notes=notes)
        compare(expected_shapes(layout, _config_of(info)), got, report)
        return report
    scores = {}
    for cand in ("avatar", "original", "comfyui", "diffusers"):
        exp = expected_shapes(cand, _default_cfg(cand))
        scores[cand] = (len(set(exp) & set(got)) / max(1, len(set(exp) | set(got))), exp)
    nearest = max(scores, key=lambda c: scores[c][0])
    other = tl._what_else(list(entries))
    if other:
        notes.append(f"this looks like {other}")
    report = InspectReport(f"{UNSUPPORTED} (nearest: {_NAMES[nearest]}, {100 * scores[nearest][0]:.0f}% of "
                           "names shared)", notes=notes)
    compare(scores[nearest][1], got, report)
    return report


__all__ = ["InspectReport", "compare", "expected_shapes", "inspect_file", "UNSUPPORTED"]
