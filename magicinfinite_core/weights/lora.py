"""LoRA files merged into the DiT's weights for inference (W += strength * scale * B @ A).

Accepted key styles (one file may use either):
  * peft, as `training/distill` saves it: `base_model.model.<module>.lora_A.weight` / `lora_B.weight`,
    scale = lora_alpha / r from the `lora_config` JSON in the file's metadata;
  * kohya / ComfyUI trainers: `<prefix>.<module>.lora_down.weight` / `lora_up.weight` with an optional
    `<module>.alpha` (scale = alpha / rank), or `lora_A` / `lora_B` without metadata (scale 1).
Module names may be ours (HunyuanVideo's original names) or ComfyUI's renames, behind any of the
prefixes `base_model.model.`, `diffusion_model.`, `model.diffusion_model.`, `transformer.`.
The merged model is a copy: a loader's cached base model is never changed.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import torch

from magicinfinite_core.errors import CheckpointError
from magicinfinite_core.models.dit import MagicInfiniteDiT
from magicinfinite_core.weights.checkpoints import load_state_dict, read_metadata
from magicinfinite_core.weights.transformer_layouts import comfyui_key_to_original

_PREFIXES = ("base_model.model.", "model.diffusion_model.", "diffusion_model.", "transformer.")
_PAIR = re.compile(r"(.+)\.(lora_A|lora_B|lora_down|lora_up)(?:\.default)?\.weight$")


def _strip(key: str) -> str:
    for p in _PREFIXES:
        if key.startswith(p):
            return key[len(p) :]
    return key


def lora_deltas(path: str | Path, model: MagicInfiniteDiT) -> dict[str, torch.Tensor]:
    """Weight name -> the delta B @ A * scale, for every module the file adapts; refuses what does not fit."""
    sd = load_state_dict(path)
    meta = read_metadata(path)
    peft_cfg = json.loads(meta["lora_config"]) if "lora_config" in meta else {}
    own = dict(model.named_parameters())
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    alphas: dict[str, float] = {}
    for key, value in sd.items():
        k = _strip(key)
        if k.endswith(".alpha"):
            alphas[k[: -len(".alpha")]] = float(value)
            continue
        m = _PAIR.fullmatch(k)
        if m is None:
            raise CheckpointError(f"{path}: key {key!r} is not a LoRA weight (lora_A/B or lora_down/up)")
        pairs.setdefault(m.group(1), {})["A" if m.group(2) in ("lora_A", "lora_down") else "B"] = value
    if not pairs:
        raise CheckpointError(f"{path}: no LoRA weights in this file")
    deltas: dict[str, torch.Tensor] = {}
    for module, ab in pairs.items():
        name = _module_name(module, own)
        if name is None:
            raise CheckpointError(f"{path}: LoRA module {module!r} matches no layer of this model")
        if set(ab) != {"A", "B"}:
            raise CheckpointError(f"{path}: LoRA module {module!r} lacks its {'B' if 'A' in ab else 'A'} matrix")
        a, b = ab["A"].float(), ab["B"].float()
        rank = a.shape[0]
        if module in alphas:
            scale = alphas[module] / rank
        elif peft_cfg:
            scale = float(peft_cfg.get("lora_alpha", rank)) / float(peft_cfg.get("r", rank))
        else:
            scale = 1.0
        target = own[f"{name}.weight"]
        delta = (b @ a) * scale
        if delta.shape != target.shape:
            raise CheckpointError(
                f"{path}: LoRA for {name} gives {tuple(delta.shape)} but the layer is {tuple(target.shape)}"
            )
        deltas[f"{name}.weight"] = delta
    return deltas


def _module_name(module: str, own: dict[str, torch.nn.Parameter]) -> str | None:
    for candidate in (module, comfyui_key_to_original(module + ".weight")[: -len(".weight")]):
        if f"{candidate}.weight" in own:
            return candidate
    return None


def apply_lora(model: MagicInfiniteDiT, path: str | Path, strength: float = 1.0) -> MagicInfiniteDiT:
    """A copy of `model` with the LoRA merged at `strength` (0 returns an unchanged copy)."""
    deltas = lora_deltas(path, model)
    merged = copy.deepcopy(model)
    params = dict(merged.named_parameters())
    with torch.no_grad():
        for name, delta in deltas.items():
            p = params[name]
            p.add_((delta * strength).to(p.dtype))
    return merged
