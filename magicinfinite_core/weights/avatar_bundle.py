"""A working model from one transformer file (HunyuanVideo-Avatar) and the parts found in the model folders.

Why: the public Avatar checkpoint is one DiT file; its VAE (HunyuanVideo's), Whisper-tiny and the text
encoder are separate downloads that ComfyUI users keep in `models/vae`, `models/audio_encoders` and
`models/text_encoders`. `magicinfinite generate --model FILE` and the Model Loader node both build the
bundle here, from the same search rules:

* folders: ComfyUI's layout around the file (`<models>/diffusion_models/FILE` -> `<models>/vae`, ...), or
  the folders a caller passes (the node passes ComfyUI's `folder_paths`);
* VAE: the one `.safetensors` file / diffusers folder there, else the one whose name says "hunyuan";
* audio: the one Whisper folder or file there (`audio_features.is_whisper`), else the one named "tiny";
* text: the packaged MiniLM when the DiT reads 384-dim text (tiny models); the 13B model's LLaVA-llama-3-8B
  + CLIP-L is not wired into one-file loading (build it with the nodes' parts; docs/hunyuan_avatar.md).

Anything ambiguous or missing is one error line that names the folder and the candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from magicinfinite_core.config import (
    AVATAR_RESOLUTION,
    AVATAR_SMALL_HIDDEN,
    AVATAR_SMALL_RESOLUTION,
    DiTConfig,
)
from magicinfinite_core.errors import CheckpointError
from magicinfinite_core.weights.model_bundle import ModelBundle, model_sampler_defaults
from magicinfinite_core.weights.transformer_layouts import load_transformer

MINILM_WIDTH = 384  # the packaged demo text encoder's token and pooled width


def avatar_resolution(cfg: DiTConfig) -> tuple[int, int]:
    """(H, W) a one-file model renders at: the reference's 704x768, or a small size for small test models."""
    return AVATAR_SMALL_RESOLUTION if cfg.hidden_size < AVATAR_SMALL_HIDDEN else AVATAR_RESOLUTION


def comfyui_folders(dit_file: str | Path, kind: str) -> list[Path]:
    """`<models>/<kind>` when the file sits in `<models>/diffusion_models` (or `unet`), else the file's own folder."""
    parent = Path(dit_file).resolve().parent
    for up in (parent, *parent.parents):
        if up.name in ("diffusion_models", "unet"):
            return [up.parent / kind]
    return [parent]


def _entries(folders: Sequence[Path], keep) -> list[Path]:
    found = []
    for folder in folders:
        if Path(folder).is_dir():
            found += [p for p in sorted(Path(folder).iterdir()) if keep(p)]
    return found


def _pick(found: list[Path], prefer: str, what: str, folders: Sequence[Path], todo: str) -> Path:
    if len(found) == 1:
        return found[0]
    preferred = [p for p in found if prefer in p.name.lower()]
    if len(preferred) == 1:
        return preferred[0]
    where = ", ".join(str(f) for f in folders)
    if not found:
        raise CheckpointError(f"no {what} found in {where}; {todo}")
    names = ", ".join(p.name for p in (preferred or found))
    raise CheckpointError(f"several {what}s in {where} ({names}); keep one there, or compose the model with "
                          "the loader nodes / a bundle folder (bundle.json names each file)")


def find_vae(folders: Sequence[Path]) -> Path:
    """The HunyuanVideo VAE file or diffusers folder in `folders`."""
    found = _entries(folders, lambda p: (p.is_file() and p.suffix == ".safetensors")
                     or (p.is_dir() and (p / "config.json").is_file()))
    return _pick(found, "hunyuan", "VAE", folders,
                 "put the HunyuanVideo VAE (hunyuan_video_vae_bf16.safetensors) in models/vae")


def find_whisper(folders: Sequence[Path]) -> Path:
    """The Whisper encoder (transformers folder or one safetensors file) in `folders`."""
    from magicinfinite_core.inputs.audio_features import is_whisper

    return _pick(_entries(folders, is_whisper), "tiny", "Whisper encoder", folders,
                 "put openai/whisper-tiny (its transformers folder) in models/audio_encoders/whisper-tiny")


def text_encoder_for(cfg: DiTConfig):
    """The prompt encoder a one-file model can use: the packaged MiniLM when the widths match."""
    from magicinfinite_core.inputs.encoders import PromptEncoder

    if cfg.text_dim == MINILM_WIDTH and cfg.pooled_dim == MINILM_WIDTH:
        return PromptEncoder.minilm()
    raise CheckpointError(
        f"this transformer reads {cfg.text_dim}-dim text and {cfg.pooled_dim}-dim pooled vectors (HunyuanVideo: "
        "LLaVA-llama-3-8B + CLIP-L), which one-file loading does not build; compose the model with the loader "
        "nodes (Model From Parts) and a text encoder of that width"
    )


def load_file_bundle(
    dit_file: str | Path,
    device: torch.device | str = "cpu",
    *,
    vae_folders: Sequence[Path] | None = None,
    audio_folders: Sequence[Path] | None = None,
    dtype: torch.dtype | None = None,
) -> ModelBundle:
    """One transformer file (HunyuanVideo-Avatar layout) + its parts found in the model folders -> a bundle.

    The sampler settings are the model's own (`config.AVATAR_SAMPLER`: 50 steps, shift 5, 129-frame
    windows, decaying guidance); the output size is `avatar_resolution`.
    """
    from magicinfinite_core.inputs.audio_features import load_extractor
    from magicinfinite_core.media.autoencoders import load_autoencoder

    dit_file = Path(dit_file)
    dit = load_transformer(dit_file, device=device, **({"dtype": dtype} if dtype is not None else {}))
    if dit.cfg.avatar is None:
        raise CheckpointError(
            f"{dit_file} is a transformer without audio modules of its own (not HunyuanVideo-Avatar); one-file "
            "loading builds Avatar models only: load it with the DiT Loader node and compose the model from parts"
        )
    vae = load_autoencoder(find_vae(vae_folders or comfyui_folders(dit_file, "vae")), device=device)
    audio = load_extractor(find_whisper(audio_folders or comfyui_folders(dit_file, "audio_encoders")))
    if audio.feature_dim != dit.cfg.avatar.audio_feature_dim:
        raise CheckpointError(
            f"the Whisper encoder gives {audio.feature_dim}-dim windows but {dit_file.name} expects "
            f"{dit.cfg.avatar.audio_feature_dim}; use the Whisper model it was trained with (whisper-tiny)"
        )
    h, w = avatar_resolution(dit.cfg)
    return ModelBundle(dit.eval(), vae.eval(), text_encoder_for(dit.cfg), None, audio, h, w, name=dit_file.stem,
                       dit_path=dit_file, sampler_defaults=model_sampler_defaults(dit.cfg)).to(device)
