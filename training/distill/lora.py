"""The fake score as a peft LoRA on the frozen base DiT (paper §3.4; DESIGN.md §4 "DMD2").

Vanilla DMD2 keeps three full models (generator, real score, fake score). The paper could not fit
three 13B models even with ZeRO-3, so the fake score is the real score plus a LoRA: with the adapter
on it is u_fake, inside `peft_model.disable_adapter()` it is exactly the frozen base, u_real. Only
the generator is a second full copy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

from magicinfinite_core.models.dit import MagicInfiniteDiT
from magicinfinite_core.weights.checkpoints import load_state_dict, read_metadata, save_state_dict

LORA_KIND = "magicinfinite-fake-score-lora"

# Linear layers that get a LoRA, matched against full module names. Attention and MLP projections of
# both streams, the single blocks' fused linears, our audio cross-attention and the output
# projection; the adaLN modulation linears and the embedders stay frozen by default (they carry the
# timestep/text conditioning the fake score shares with the real one).
_TARGET_PATTERNS = {
    "double": re.compile(r"^double_blocks\.\d+\.(img|txt)_(attn_qkv|attn_proj|mlp\.fc1|mlp\.fc2)$"),
    "single": re.compile(r"^single_blocks\.\d+\.(linear1|linear2)$"),
    # ours (q / kv / proj) and HunyuanVideo-Avatar's perceiver adapters (to_q / to_kv / to_out)
    "audio": re.compile(r"^audio_((double|single)_blocks\.\d+\.(q|kv|proj)|adapter_blocks\.\d+\.(to_q|to_kv|to_out))$"),
    "final": re.compile(r"^final_layer\.linear$"),
    "modulation": re.compile(r"^(double_blocks\.\d+\.(img|txt)_mod|single_blocks\.\d+\.modulation)\.linear$"),
}
DEFAULT_GROUPS = ("double", "single", "audio", "final")


def lora_target_modules(model: MagicInfiniteDiT, groups: tuple[str, ...] = DEFAULT_GROUPS) -> list[str]:
    """Full names of the nn.Linear modules that get a LoRA (explicit names: no suffix surprises)."""
    unknown = set(groups) - set(_TARGET_PATTERNS)
    if unknown:
        raise ValueError(
            f"unknown LoRA target groups {sorted(unknown)}; choose from {sorted(_TARGET_PATTERNS)}"
        )
    names = [
        name
        for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear) and any(_TARGET_PATTERNS[g].match(name) for g in groups)
    ]
    if not names:
        raise ValueError(f"no Linear layer of the DiT matches the LoRA groups {groups}")
    return names


def make_fake_score(
    base: MagicInfiniteDiT,
    rank: int = 64,
    alpha: float | None = None,
    groups: tuple[str, ...] = DEFAULT_GROUPS,
    dropout: float = 0.0,
) -> PeftModel:
    """Freeze `base` and wrap it with a LoRA (B = 0 at init, so u_fake = u_real at step 0)."""
    for p in base.parameters():
        p.requires_grad_(False)
    config = LoraConfig(
        r=rank,
        lora_alpha=float(alpha if alpha is not None else rank),
        lora_dropout=dropout,
        target_modules=lora_target_modules(base, groups),
        init_lora_weights=True,
        bias="none",
    )
    return get_peft_model(base, config)


def lora_state_dict(fake: PeftModel) -> dict[str, torch.Tensor]:
    return get_peft_model_state_dict(fake)


def save_lora(path: str | Path, fake: PeftModel) -> Path:
    """LoRA weights alone, peft key names, with the LoraConfig (JSON) in the metadata."""
    cfg = fake.peft_config["default"].to_dict()
    cfg = {k: (sorted(v) if isinstance(v, set) else v) for k, v in cfg.items()}
    return save_state_dict(
        path, lora_state_dict(fake), kind=LORA_KIND, extra={"lora_config": json.dumps(cfg, default=str)}
    )


def load_lora(path: str | Path, fake: PeftModel) -> None:
    """Load saved LoRA weights into an already built fake score; refuses files that do not fit."""
    meta = read_metadata(path)
    if meta.get("magicinfinite_format") != LORA_KIND:
        raise ValueError(
            f"{path} is not a fake-score LoRA file (format {meta.get('magicinfinite_format')!r})"
        )
    result = set_peft_model_state_dict(fake, load_state_dict(path))
    own = set(lora_state_dict(fake))
    missing = [k for k in result.missing_keys if "lora_" in k]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected or not own:
        raise ValueError(f"{path}: LoRA does not fit (missing {missing[:5]}, unexpected {unexpected[:5]})")
