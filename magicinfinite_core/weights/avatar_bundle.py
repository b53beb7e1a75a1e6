"""A working model from one transformer file (HunyuanVideo-Avatar) and the parts found in the model folders.

Why: the public Avatar checkpoint is one DiT file; its VAE (HunyuanVideo's), Whisper-tiny and the text
encoder are separate downloads that ComfyUI users keep in `models/vae`, `models/audio_encoders` and
`models/text_encoders`. `magicinfinite generate --model FILE` and the Model Loader node both build the
bundle here, from the same search rules:

* folders: ComfyUI's layout around the file (`<models>/diffusion_models/FILE` -> `<models>/vae`, ...), or
  the folders a caller passes (the node passes ComfyUI's `folder_paths`);
* VAE: the one `.safetensors` file / diffusers folder there, else the one whose name says "hunyuan";
* audio: the one Whisper folder or file there (`audio_features.is_whisper`), else the one named "tiny";
* text: the packaged MiniLM when the DiT reads 384-dim text (tiny models); else the LLaVA-llama-3 and CLIP-L
  transformers folders in `text_encoders` (or kijai's `LLM` / `clip`) whose widths are the DiT's (4096 / 768).

Anything ambiguous or missing is one error line that names the folder and the candidates.
"""

from __future__ import annotations

import json
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


# Where ComfyUI users keep HunyuanVideo's text encoders: `text_encoders` (ComfyUI's own folder), plus the
# folders of kijai's HunyuanVideoWrapper (`LLM/llava-llama-3-8b-...`, `clip/clip-vit-large-patch14`).
TEXT_ENCODER_KINDS = ("text_encoders", "LLM", "clip")
LLAVA_TODO = ("put a transformers LLaVA folder there (config.json + tokenizer + *.safetensors: "
              "xtuner/llava-llama-3-8b-v1_1-transformers, or HunyuanVideo-Avatar's ckpts/llava_llama_image)")
CLIP_TODO = ("put a transformers CLIP-L folder there (openai/clip-vit-large-patch14, or HunyuanVideo's "
             "ckpts/text_encoder_2)")


def text_encoder_folders(dit_file: str | Path) -> list[Path]:
    """The folders one-file loading searches for LLaVA / CLIP-L, around the DiT file (`comfyui_folders`)."""
    found: list[Path] = []
    for kind in TEXT_ENCODER_KINDS:
        for f in comfyui_folders(dit_file, kind):
            if f not in found:
                found.append(f)
    return found


def _model_type(folder: Path) -> tuple[str, int]:
    """(model_type, hidden width) from a transformers folder's config.json ("" when unreadable)."""
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return "", 0
    kind = str(cfg.get("model_type", ""))
    sub = cfg.get("text_config") if kind in ("llava", "clip") else cfg
    return kind, int((sub or {}).get("hidden_size", 0) or 0)


def find_hunyuan_text_encoders(folders: Sequence[Path], text_dim: int, pooled_dim: int) -> tuple[Path, Path]:
    """(LLaVA folder, CLIP-L folder) in `folders` whose widths are the DiT's (`text_dim`, `pooled_dim`).

    Transformers folders only (what `HunyuanTextEncoder` loads). ComfyUI's single-file text encoders
    (llava_llama3_fp16.safetensors, clip_l.safetensors) are not readable here: one line says what to put.
    """
    folders = list(dict.fromkeys(Path(f).resolve() for f in folders))  # ComfyUI maps "clip" to text_encoders too
    dirs = _entries(folders, lambda p: p.is_dir() and (p / "config.json").is_file())
    typed = [(p, *_model_type(p)) for p in dirs]
    where = ", ".join(str(f) for f in folders)
    singles = [p.name for p in _entries(folders, lambda p: p.is_file() and p.suffix == ".safetensors")]

    def pick(kinds: tuple[str, ...], width: int, what: str, prefer: str, todo: str) -> Path:
        of_kind = [(p, w) for p, k, w in typed if k in kinds]
        match = [p for p, w in of_kind if w == width]
        if not match:
            if of_kind:
                have = ", ".join(f"{p.name} ({w})" for p, w in of_kind)
                raise CheckpointError(f"this transformer reads {width}-dim {what} states but the {what} folders in "
                                      f"{where} have other widths: {have}; {todo}")
            if singles:
                raise CheckpointError(f"no {what} folder in {where}: single files ({', '.join(singles)}) are "
                                      f"ComfyUI's own format, which this loader cannot read; {todo}")
            raise CheckpointError(f"no {what} folder found in {where}; {todo}")
        return _pick(match, prefer, f"{what} folder", folders, todo)

    llava_kinds = ("llava",)
    if not any(k == "llava" for _, k, _ in typed) and any(k == "llama" for _, k, _ in typed):
        raise CheckpointError(f"the llama folder in {where} is text-only, but HunyuanVideo-Avatar puts the portrait "
                              f"through LLaVA's vision tower; {LLAVA_TODO}")
    llava = pick(llava_kinds, text_dim, "LLaVA", "llava", LLAVA_TODO)
    clip = pick(("clip_text_model", "clip"), pooled_dim, "CLIP text", "clip", CLIP_TODO)
    return llava, clip


def text_encoder_for(cfg: DiTConfig, folders: Sequence[Path] = (), device: torch.device | str = "cpu"):
    """The prompt encoder a one-file model uses: the packaged MiniLM when the DiT reads 384-dim text (tiny
    models), else LLaVA-llama-3 + CLIP-L from `folders` whose widths match (the 13B model: 4096 / 768)."""
    from magicinfinite_core.inputs.encoders import HunyuanPromptEncoder, PromptEncoder
    from magicinfinite_core.inputs.text_encoders import HunyuanTextEncoder

    if cfg.text_dim == MINILM_WIDTH and cfg.pooled_dim == MINILM_WIDTH:
        return PromptEncoder.minilm()
    if not folders:
        raise CheckpointError(
            f"this transformer reads {cfg.text_dim}-dim text and {cfg.pooled_dim}-dim pooled vectors (HunyuanVideo: "
            "LLaVA-llama-3-8B + CLIP-L); give the folders that hold them (models/text_encoders)"
        )
    llava, clip = find_hunyuan_text_encoders(folders, cfg.text_dim, cfg.pooled_dim)
    on_gpu = torch.device(device).type == "cuda"
    # fp16 as the reference; on the GPU the 8B LLM waits on the CPU between prompts (offload)
    encoder = HunyuanTextEncoder(llava, clip, device=device, dtype=torch.float16 if on_gpu else torch.float32,
                                 offload=on_gpu)
    return HunyuanPromptEncoder(encoder, llava.name)


def load_file_bundle(
    dit_file: str | Path,
    device: torch.device | str = "cpu",
    *,
    vae_folders: Sequence[Path] | None = None,
    audio_folders: Sequence[Path] | None = None,
    text_folders: Sequence[Path] | None = None,
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
    text = text_encoder_for(dit.cfg, text_folders or text_encoder_folders(dit_file), device)
    h, w = avatar_resolution(dit.cfg)
    return ModelBundle(dit.eval(), vae.eval(), text, None, audio, h, w, name=dit_file.stem,
                       dit_path=dit_file, sampler_defaults=model_sampler_defaults(dit.cfg)).to(device)
