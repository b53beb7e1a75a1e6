"""HunyuanVideo VAE weights in diffusers layout (folder or single file) and ComfyUI's single file.

Why: ComfyUI users keep `hunyuan_video_vae_bf16.safetensors` in models/vae; diffusers users keep a
`vae/` folder. Our `VideoVAE` wraps diffusers' `AutoencoderKLHunyuanVideo`, so both are mapped to
diffusers names. Facts this rests on:

* HunyuanVideo's original VAE names equal diffusers' (diffusers' own converter
  `scripts/convert_hunyuan_video_to_diffusers.py` has an empty VAE rename table), so an original
  single file is the "diffusers" layout here.
* ComfyUI runs this VAE through its LDM `Encoder`/`Decoder` (conv3d, `comfy/sd.py`), whose names are
  the Stable-Diffusion ones: `down.{i}.block.{j}`, `down.{i}.downsample`, `up.{n-1-i}.block.{j}`
  (decoder blocks numbered in reverse), `mid.block_{1,2}`, `mid.attn_1.{norm,q,k,v,proj_out}` with
  1x1x1 conv weights instead of linear ones, `norm_out`, `nin_shortcut`. Checked against ComfyUI's
  module tree at the 13B VAE config (tests/data/comfyui_hunyuan_vae_keys.json).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from diffusers import AutoencoderKLHunyuanVideo
from safetensors import safe_open
from safetensors.torch import save_file

from magicinfinite_core.config import VAE_PRESETS, VAEConfig
from magicinfinite_core.errors import CheckpointError
from magicinfinite_core.media.vae import VideoVAE
from magicinfinite_core.weights.transformer_layouts import TensorEntry, scan_safetensors

_PREFIXES = ("first_stage_model.", "vae.", "model.")
_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_ATTN_INV = {v: k for k, v in _ATTN.items()}


def _num_up(keys: list[str], pattern: str) -> int:
    ids = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    if not ids:
        raise CheckpointError(
            f"no decoder up blocks found (expected keys like {pattern!r}); not a HunyuanVideo VAE"
        )
    return max(ids) + 1


def comfyui_vae_to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ComfyUI (LDM) VAE names -> diffusers `AutoencoderKLHunyuanVideo` names (exact)."""
    n = _num_up(list(sd), r"decoder\.up\.(\d+)\.")
    out = {}
    for key, v in sd.items():
        k = re.sub(r"^encoder\.down\.(\d+)\.block\.(\d+)\.", r"encoder.down_blocks.\1.resnets.\2.", key)
        k = re.sub(r"^encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0.", k)
        k = re.sub(
            r"^decoder\.up\.(\d+)\.block\.(\d+)\.",
            lambda m: f"decoder.up_blocks.{n - 1 - int(m.group(1))}.resnets.{m.group(2)}.",
            k,
        )
        k = re.sub(
            r"^decoder\.up\.(\d+)\.upsample\.",
            lambda m: f"decoder.up_blocks.{n - 1 - int(m.group(1))}.upsamplers.0.",
            k,
        )
        k = re.sub(
            r"^(encoder|decoder)\.mid\.block_(\d+)\.",
            lambda m: f"{m.group(1)}.mid_block.resnets.{int(m.group(2)) - 1}.",
            k,
        )
        if m := re.match(r"^(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)$", k):
            k = f"{m.group(1)}.mid_block.attentions.0.{_ATTN[m.group(2)]}.{m.group(3)}"
            if m.group(2) != "norm" and m.group(3) == "weight":
                v = v.reshape(v.shape[0], v.shape[1])
        k = re.sub(r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out.", k)
        k = k.replace(".nin_shortcut.", ".conv_shortcut.")
        out[k] = v
    return out


def diffusers_vae_to_comfyui(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `comfyui_vae_to_diffusers`."""
    n = _num_up(list(sd), r"decoder\.up_blocks\.(\d+)\.")
    out = {}
    for key, v in sd.items():
        k = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2.", key)
        k = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", k)
        k = re.sub(
            r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.",
            lambda m: f"decoder.up.{n - 1 - int(m.group(1))}.block.{m.group(2)}.",
            k,
        )
        k = re.sub(
            r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
            lambda m: f"decoder.up.{n - 1 - int(m.group(1))}.upsample.",
            k,
        )
        k = re.sub(
            r"^(encoder|decoder)\.mid_block\.resnets\.(\d+)\.",
            lambda m: f"{m.group(1)}.mid.block_{int(m.group(2)) + 1}.",
            k,
        )
        if m := re.match(
            r"^(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)$",
            k,
        ):
            k = f"{m.group(1)}.mid.attn_1.{_ATTN_INV[m.group(2)]}.{m.group(3)}"
            if m.group(2) != "group_norm" and m.group(3) == "weight":
                v = v.reshape(*v.shape, 1, 1, 1)
        k = re.sub(r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out.", k)
        k = k.replace(".conv_shortcut.", ".nin_shortcut.")
        out[k] = v
    return out


@dataclass
class VAEInfo:
    """What the headers say about a VAE checkpoint."""

    path: Path
    layout: str  # "diffusers" (also HunyuanVideo's original names) | "comfyui"
    prefix: str
    file: Path
    entries: dict[str, TensorEntry]  # prefix-free key -> entry
    config: dict | None = None  # diffusers config.json when the path is a folder

    def describe(self) -> str:
        pre = f", prefix {self.prefix!r}" if self.prefix else ""
        return f"layout detected: {self.layout}{pre}"


def _err(path: Path, layout: str, key: str | None, what: str, todo: str) -> CheckpointError:
    bad = f"first bad key: {key!r}" if key else "first bad key: none (no readable tensor)"
    return CheckpointError(f"{path}: {layout}; {bad} — {what}. {todo}")


def detect_vae_layout(path: str | Path) -> VAEInfo:
    """Name the layout of a VAE file or diffusers folder from its header; refuse damaged files."""
    path = Path(path)
    config = None
    if path.is_dir():
        cfg_file = path / "config.json"
        files = sorted(path.glob("*.safetensors"))
        if not cfg_file.is_file() or len(files) != 1:
            raise CheckpointError(
                f"{path}: expected a diffusers VAE folder (config.json + one diffusion_pytorch_model.safetensors)"
            )
        config = json.loads(cfg_file.read_text())
        file = files[0]
    elif not path.is_file():
        raise CheckpointError(f"VAE file not found: {path}. Put it in ComfyUI/models/vae.")
    elif path.suffix != ".safetensors":
        raise CheckpointError(f"{path.name}: only .safetensors weights are loaded (never pickled .pt/.ckpt)")
    else:
        file = path
    scan = scan_safetensors(file)
    if scan.problem:
        raise _err(
            file,
            "layout detected: unknown",
            None,
            f"the file is damaged: {scan.problem}",
            "Download it again.",
        )
    keys = list(scan.entries)
    prefix = next((p for p in _PREFIXES if keys and all(k.startswith(p) for k in keys)), "")
    stripped = {k[len(prefix) :]: e for k, e in scan.entries.items()}
    names = list(stripped)
    if any(
        re.match(r"(encoder\.down_blocks|decoder\.up_blocks|(en|de)coder\.mid_block)\.", k) for k in names
    ):
        layout = "diffusers"
    elif any(re.match(r"(encoder\.down|decoder\.up)\.\d+\.|(en|de)coder\.mid\.block_1\.", k) for k in names):
        layout = "comfyui"
    else:
        layout = "unknown"
    info = VAEInfo(path, layout, prefix, file, stripped, config)
    if scan.past_end:
        raise _err(
            file,
            info.describe(),
            scan.past_end[0],
            f"the file is truncated ({len(scan.past_end)} tensors lie past its end)",
            "The download or copy was interrupted; download the file again.",
        )
    if layout == "unknown":
        what = "no HunyuanVideo VAE keys (expected e.g. 'decoder.conv_in.conv.weight' with up/down blocks)"
        if any(
            k.startswith(("double_blocks.", "transformer_blocks.", "model.diffusion_model.")) for k in keys
        ):
            what = "this is a video transformer, not a VAE (put it in ComfyUI/models/diffusion_models)"
        raise _err(file, info.describe(), keys[0] if keys else None, what, "Choose a HunyuanVideo VAE file.")
    conv_in = stripped.get("decoder.conv_in.conv.weight")
    if conv_in is None or len(conv_in.shape) != 5:
        first = "decoder.conv_in.conv.weight" if conv_in is None else prefix + "decoder.conv_in.conv.weight"
        raise _err(
            file,
            info.describe(),
            first,
            "not a causal 3D VAE (2D image VAEs share these names)",
            "Use the HunyuanVideo VAE (hunyuan_video_vae_bf16.safetensors).",
        )
    return info


def infer_vae_config(shapes: dict[str, tuple[int, ...]], *, causal_norm: bool | None = None) -> VAEConfig:
    """VAEConfig from diffusers-named shapes; group count, ratios and scale come from a matching preset.

    GroupNorm's group count and the latent scaling factor are not in the weights: a preset with the
    same channels supplies them (HunyuanVideo: 32 groups, 0.476986), else 32 and 1.0.
    """
    n_blocks = 1 + max(
        int(m.group(1)) for k in shapes if (m := re.match(r"encoder\.down_blocks\.(\d+)\.", k))
    )
    blocks = tuple(shapes[f"encoder.down_blocks.{i}.resnets.0.conv2.conv.weight"][0] for i in range(n_blocks))
    layers = 1 + max(
        int(m.group(1)) for k in shapes if (m := re.match(r"encoder\.down_blocks\.0\.resnets\.(\d+)\.", k))
    )
    latent = shapes["decoder.conv_in.conv.weight"][1]
    attn = "encoder.mid_block.attentions.0.to_q.weight" in shapes
    base = VAEConfig(
        latent_channels=latent,
        block_out_channels=blocks,
        layers_per_block=layers,
        norm_num_groups=32,
        mid_block_add_attention=attn,
        causal_norm=False,
    )
    for preset in VAE_PRESETS.values():
        if (
            preset.latent_channels,
            preset.block_out_channels,
            preset.layers_per_block,
            preset.mid_block_add_attention,
        ) == (latent, blocks, layers, attn):
            base = preset
            break
    return base if causal_norm is None else replace(base, causal_norm=causal_norm)


def _config_from_diffusers(c: dict, causal_norm: bool | None) -> VAEConfig:
    return VAEConfig(
        latent_channels=c["latent_channels"],
        block_out_channels=tuple(c["block_out_channels"]),
        layers_per_block=c["layers_per_block"],
        norm_num_groups=c["norm_num_groups"],
        spatial_compression_ratio=c.get("spatial_compression_ratio", 8),
        temporal_compression_ratio=c.get("temporal_compression_ratio", 4),
        scaling_factor=c.get("scaling_factor", 0.476986),
        mid_block_add_attention=c.get("mid_block_add_attention", True),
        causal_norm=bool(causal_norm),
    )


def load_vae(
    path: str | Path,
    cfg: VAEConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    causal_norm: bool | None = None,
) -> VideoVAE:
    """Load a HunyuanVideo VAE from a diffusers folder, an original/diffusers-named file or ComfyUI's file.

    The model is built on the meta device and the tensors are read straight onto `device`.
    `causal_norm` (per-frame GroupNorm) defaults to False for these published weights, which were
    trained with clip-wide statistics; pass True only for our own causal-norm VAEs.
    """
    info = detect_vae_layout(path)
    with safe_open(str(info.file), framework="pt", device=str(device)) as f:
        sd = {k: f.get_tensor(info.prefix + k) for k in info.entries}
    if info.layout == "comfyui":
        sd = comfyui_vae_to_diffusers(sd)
    if cfg is None:
        if info.config is not None:
            cfg = _config_from_diffusers(info.config, causal_norm)
        else:
            cfg = infer_vae_config({k: tuple(v.shape) for k, v in sd.items()}, causal_norm=causal_norm)
    elif causal_norm is not None:
        cfg = replace(cfg, causal_norm=causal_norm)
    with torch.device("meta"):
        model = AutoencoderKLHunyuanVideo(**cfg.diffusers_kwargs())
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    unexpected = [k for k in sd if k not in own]
    misshapen = [k for k in sd if k in own and tuple(sd[k].shape) != own[k]]
    missing = [k for k in own if k not in sd]
    if unexpected or misshapen or missing:
        key = (misshapen or unexpected or missing)[0]
        shown = info.prefix + (
            diffusers_vae_to_comfyui({key: sd.get(key, torch.empty(0))}).popitem()[0]
            if info.layout == "comfyui" and key in sd
            else key
        )
        raise _err(
            info.file,
            info.describe(),
            shown,
            f"{len(missing)} missing, {len(unexpected)} unexpected, {len(misshapen)} misshapen keys for "
            f"the VAE config {cfg.block_out_channels}/{cfg.latent_channels} latent channels",
            "Use the HunyuanVideo VAE or pass the matching cfg=.",
        )
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    return VideoVAE(cfg, model.eval())


def save_vae(
    path: str | Path,
    vae: VideoVAE | AutoencoderKLHunyuanVideo,
    *,
    layout: str = "comfyui",
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a VAE as one file in ComfyUI's layout or with diffusers/original names."""
    model = vae.model if isinstance(vae, VideoVAE) else vae
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    if layout == "comfyui":
        sd = diffusers_vae_to_comfyui(sd)
    elif layout != "diffusers":
        raise ValueError(f"unknown VAE layout {layout!r}; choose 'comfyui' or 'diffusers'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path
