"""Model loader nodes: a whole bundle (demo / bundle folder), or the parts from ComfyUI's model folders.

Why two paths: the demo and our own checkpoints ship as one bundle folder (dit + vae + encoders);
users of the published weights have separate files in ``diffusion_models``, ``vae``,
``text_encoders`` and ``audio_encoders`` and compose them with "MagicInfinite Model From Parts".
A HunyuanVideo-Avatar file in ``diffusion_models`` is also a whole model for the Model Loader: its VAE
and Whisper are found in ``vae`` / ``audio_encoders`` (`weights/avatar_bundle.py`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from comfy_api.latest import io, ui

from magicinfinite_core.limits import RESOLUTION_RANGE
from magicinfinite_core.weights.bundle import BUNDLE_FILE

from .common import (
    CATEGORY,
    EMBEDDED_DEMO,
    MagicAudioEncoder,
    MagicDiT,
    MagicModel,
    MagicTextEncoder,
    MagicVAE,
    NodeInputError,
    check_choices,
    check_floats,
    choice_error,
    list_dirs,
    list_safetensors,
    model_folder_paths,
    resolve_model_path,
)

MINILM = "packaged MiniLM (demo)"
TRANSFORMERS = ["base", "4-step distilled"]
MEL = "mel (demo)"
NO_CLIP = "none"
_DTYPES = ["auto", "bfloat16", "float16", "float32"]


def _is_avatar_file(path: Path) -> bool:
    """Whether a file in diffusion_models is a HunyuanVideo-Avatar transformer (header only)."""
    from magicinfinite_core.weights.transformer_layouts import detect_layout

    try:
        return path.is_file() and path.suffix == ".safetensors" and detect_layout(path).layout == "avatar"
    except Exception:  # noqa: BLE001 - an unreadable file is simply not listed; the DiT Loader says why
        return False


def list_avatar_files() -> list[str]:
    """HunyuanVideo-Avatar files in models/diffusion_models (one-file models for the Model Loader)."""
    out = []
    for name in list_safetensors("diffusion_models"):
        if name.endswith(".safetensors"):
            try:
                path = resolve_model_path("diffusion_models", name, want="file")
            except NodeInputError:
                continue
            if _is_avatar_file(path):
                out.append(name)
    return out


def _bundle_path(name: str) -> str:
    """Folder of the bundle called ``name`` (the embedded demo or one under diffusion_models), or an
    Avatar file there (a one-file model)."""
    if name == EMBEDDED_DEMO:
        from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR

        if not (DEMO_MODEL_DIR / BUNDLE_FILE).is_file():
            raise NodeInputError(
                f"the embedded demo model is not installed ({DEMO_MODEL_DIR} has no {BUNDLE_FILE}); "
                "reinstall the pack or pick a bundle folder from models/diffusion_models"
            )
        return str(DEMO_MODEL_DIR)
    if isinstance(name, str) and name.endswith(".safetensors"):  # other types: resolve_model_path's message
        path = resolve_model_path("diffusion_models", name, want="file")
        if not _is_avatar_file(path):
            raise NodeInputError(
                f"{name!r} is not a HunyuanVideo-Avatar file (the Model Loader loads bundle folders and Avatar "
                "files); load other transformers with 'MagicInfinite DiT Loader' and 'Model From Parts'"
            )
        return str(path)
    path = resolve_model_path("diffusion_models", name, want="dir")
    if not (path / BUNDLE_FILE).is_file():
        raise NodeInputError(
            f"{name!r} in models/diffusion_models is not a MagicInfinite bundle (no {BUNDLE_FILE}); "
            "load a single transformer file with 'MagicInfinite DiT Loader' instead"
        )
    return str(path)


def _check_bundle(name: str, distilled: bool) -> str:
    """The bundle's folder; every file its bundle.json names must lie inside it; with `distilled`,
    also that it carries a distilled generator."""
    from magicinfinite_core.errors import CheckpointError
    from magicinfinite_core.weights.bundle import bundle_files, read_bundle_spec

    path = _bundle_path(name)
    if path.endswith(".safetensors"):  # a one-file model: "4-step distilled" means the file is a generator
        return path
    try:
        spec, _ = read_bundle_spec(path)  # the schema check of every field (limits.py bounds)
    except OSError as e:
        raise NodeInputError(f"cannot read {name!r}/{BUNDLE_FILE}: {e}") from None
    except CheckpointError as e:
        raise NodeInputError(str(e).replace(str(Path(path).parent) + os.sep, "")) from None
    try:
        bundle_files(spec, Path(path), f"{name}/{BUNDLE_FILE}")
    except CheckpointError as e:
        raise NodeInputError(str(e)) from None
    if distilled:
        if not isinstance(spec.get("distilled"), dict) or "dit" not in spec["distilled"]:
            raise NodeInputError(
                f"{name!r} has no 4-step distilled generator (bundle.json has no 'distilled' entry); "
                "set transformer to 'base' and the sampler's mode to 'base (CFG)'"
            )
    return path


def _error_text(fn, *args: Any) -> bool | str:
    try:
        fn(*args)
    except NodeInputError as e:
        return str(e)
    return True


def _dtype(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return getattr(torch, name)


class MagicInfiniteModelLoader(io.ComfyNode):
    """Loads a whole MagicInfinite bundle: the embedded demo or a bundle folder in diffusion_models."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicInfiniteModelLoader",
            display_name="MagicInfinite Model Loader",
            category=CATEGORY,
            description="Load a complete MagicInfinite model (transformer, VAE, text/image and audio encoders): "
            "the embedded demo, a bundle folder (with bundle.json) in models/diffusion_models, or a "
            "HunyuanVideo-Avatar .safetensors there (its VAE from models/vae, Whisper from models/audio_encoders).",
            inputs=[
                io.Combo.Input(
                    "model",
                    options=[EMBEDDED_DEMO, *list_dirs("diffusion_models", BUNDLE_FILE), *list_avatar_files()],
                    default=EMBEDDED_DEMO,
                    tooltip="Bundle folders found in models/diffusion_models, or the demo shipped with the pack.",
                ),
                io.Combo.Input(
                    "transformer", options=TRANSFORMERS, default=TRANSFORMERS[0], optional=True,
                    tooltip="base: the full model, sampled with CFG and ~20-50 steps. 4-step distilled: the "
                    "bundle's distilled generator (bundle.json 'distilled'), for the sampler's 'distilled' mode.",
                ),
            ],
            outputs=[MagicModel.Output("model_out", display_name="model")],
        )

    @classmethod
    def validate_inputs(cls, model: str, transformer: str | None = None) -> bool | str:
        """``transformer`` among TRANSFORMERS (ComfyUI 0.3.75 does not check V3 combo values), then the
        bundle folder and every path in its bundle.json.

        ComfyUI attaches a validate_inputs message to every input the function takes, so each message
        names its input; whether the bundle has a distilled generator is checked first thing in execute.
        """
        return choice_error("transformer", transformer, TRANSFORMERS) or _error_text(_check_bundle, model, False)

    @classmethod
    def execute(cls, model: str, transformer: str = TRANSFORMERS[0]) -> io.NodeOutput:
        from magicinfinite_core.weights.bundle import load_bundle
        from magicinfinite_core.weights.model_cache import model_cache

        check_choices(transformer=(transformer, TRANSFORMERS))
        distilled = transformer == TRANSFORMERS[1]
        path = _check_bundle(model, distilled)
        # the batch runner's model cache (off in a ComfyUI server, whose own cache reuses this output)
        if path.endswith(".safetensors"):  # a HunyuanVideo-Avatar file: its parts from ComfyUI's model folders
            from magicinfinite_core.errors import CheckpointError
            from magicinfinite_core.weights.avatar_bundle import load_file_bundle

            def load():
                from magicinfinite_core.config import DISTILLED_TIMESTEPS

                try:
                    b = load_file_bundle(path, vae_folders=[Path(p) for p in model_folder_paths("vae")],
                                         audio_folders=[Path(p) for p in model_folder_paths("audio_encoders")],
                                         text_folders=_text_encoder_folders())
                except CheckpointError as e:
                    raise NodeInputError(str(e)) from None
                if distilled:  # our DMD2 export of the model: the 4-step list at the model's shift
                    b.distilled = {"timesteps": list(DISTILLED_TIMESTEPS), "shift": float(b.sampler_defaults["shift"])}
                return b
        else:
            def load():
                return load_bundle(path, distilled=distilled)
        bundle = model_cache().get("bundle", path, load, distilled=distilled)
        from magicinfinite_core.media.autoencoders import moves_portrait

        text = f"{bundle.name}: {bundle.width}x{bundle.height}"
        if moves_portrait(bundle.vae):  # the video is the portrait's own size; the grid is what the model sees
            text = f"{bundle.name}: moves the portrait at its own size (faces framed at {bundle.width}x{bundle.height})"
        return io.NodeOutput(bundle, ui=ui.PreviewText(text))


class MagicInfiniteDiTLoader(io.ComfyNode):
    """Loads a transformer file (original, ComfyUI, diffusers or our layout; fp8 is dequantised)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicInfiniteDiTLoader",
            display_name="MagicInfinite DiT Loader",
            category=CATEGORY,
            description="Load a MagicInfinite / HunyuanVideo-I2V / HunyuanVideo-Avatar transformer (.safetensors, "
            "shard index or diffusers folder) from models/diffusion_models; the layout is detected.",
            inputs=[
                io.Combo.Input("dit_name", options=list_safetensors("diffusion_models")),
                io.Combo.Input("weight_dtype", options=_DTYPES, default="auto",
                               tooltip="auto: bfloat16 on a GPU, float32 on the CPU."),
            ],
            outputs=[MagicDiT.Output("dit", display_name="dit")],
        )

    @classmethod
    def validate_inputs(cls, dit_name: str, weight_dtype: str | None = None) -> bool | str:
        """``weight_dtype`` among the offered dtypes (ComfyUI 0.3.75 does not check V3 combo values; ``int8``
        ended in a raw torch error), then the weights file."""
        return choice_error("weight_dtype", weight_dtype, _DTYPES) or _error_text(_dit_path, dit_name)

    @classmethod
    def execute(cls, dit_name: str, weight_dtype: str) -> io.NodeOutput:
        from magicinfinite_core.weights.model_cache import model_cache
        from magicinfinite_core.weights.transformer_layouts import load_transformer

        check_choices(weight_dtype=(weight_dtype, _DTYPES))
        path, dtype = _dit_path(dit_name), _dtype(weight_dtype)
        return io.NodeOutput(model_cache().get("dit", path, lambda: load_transformer(path, dtype=dtype), dtype=dtype))


def _dit_path(name: str) -> str:
    path = resolve_model_path("diffusion_models", name, want="weights")
    if path.is_dir() and not (path / "config.json").is_file():
        raise NodeInputError(f"{name!r} is neither a .safetensors file nor a diffusers folder (config.json)")
    return str(path)


class MagicInfiniteVAELoader(io.ComfyNode):
    """Loads the HunyuanVideo VAE (ComfyUI, original or diffusers naming) from models/vae."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicInfiniteVAELoader",
            display_name="MagicInfinite VAE Loader",
            category=CATEGORY,
            description="Load a HunyuanVideo-style video VAE (.safetensors) from models/vae.",
            inputs=[io.Combo.Input("vae_name", options=list_safetensors("vae"))],
            outputs=[MagicVAE.Output("vae", display_name="vae")],
        )

    @classmethod
    def validate_inputs(cls, vae_name: str) -> bool | str:
        return _error_text(_vae_path, vae_name)

    @classmethod
    def execute(cls, vae_name: str) -> io.NodeOutput:
        from magicinfinite_core.media.autoencoders import load_autoencoder
        from magicinfinite_core.weights.model_cache import model_cache

        path = _vae_path(vae_name)
        return io.NodeOutput(model_cache().get("vae", path, lambda: load_autoencoder(path)))


def _vae_path(name: str) -> str:
    return str(resolve_model_path("vae", name, want="weights"))


def _text_encoder_folders() -> list[Path]:
    """ComfyUI's text encoder folders, plus `LLM` / `clip` where another pack registered them (kijai's layout)."""
    from magicinfinite_core.weights.avatar_bundle import TEXT_ENCODER_KINDS

    return [Path(p) for kind in TEXT_ENCODER_KINDS for p in model_folder_paths(kind)]


def _text_encoder_kind(path: Path) -> str:
    """"llava" / "llama" (HunyuanVideo's LLM), "clip", or "other" (a MiniLM-style encoder) from config.json."""
    import json

    try:
        kind = str(json.loads((path / "config.json").read_text()).get("model_type", ""))
    except (OSError, ValueError):
        raise NodeInputError(f"{path.name!r}: its config.json is unreadable; re-download the folder") from None
    return kind if kind in ("llava", "llama") else "clip" if kind in ("clip", "clip_text_model") else "other"


def _check_text_encoder(text_encoder: str, clip_l: str) -> None:
    if text_encoder == MINILM:
        return
    path = resolve_model_path("text_encoders", text_encoder, want="dir")
    if not any(p.suffix == ".safetensors" for p in path.iterdir()):
        raise NodeInputError(f"{text_encoder!r} has no .safetensors weights; only safetensors are loaded")
    kind = _text_encoder_kind(path)
    if kind == "clip":
        raise NodeInputError(f"{text_encoder!r} is a CLIP model: pick the LLaVA-llama-3 folder as text_encoder "
                             "and this one as clip_l")
    if kind in ("llava", "llama"):
        if clip_l == NO_CLIP:
            raise NodeInputError(f"{text_encoder!r} is HunyuanVideo's LLaVA-llama-3; pick its CLIP-L folder "
                                 "(openai/clip-vit-large-patch14 in models/text_encoders) as clip_l")
        clip = resolve_model_path("text_encoders", clip_l, want="dir")
        if _text_encoder_kind(clip) != "clip":
            raise NodeInputError(f"clip_l {clip_l!r} is not a CLIP model folder; pick the CLIP-L folder "
                                 "(openai/clip-vit-large-patch14)")


class MagicInfiniteTextEncoderLoader(io.ComfyNode):
    """Loads a prompt encoder: the packaged MiniLM, a MiniLM-style folder, or HunyuanVideo's LLaVA-llama-3 +
    CLIP-L (two transformers folders in models/text_encoders, as ComfyUI's DualCLIPLoader takes two)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        folders = list_dirs("text_encoders", "config.json")
        return io.Schema(
            node_id="MagicInfiniteTextEncoderLoader",
            display_name="MagicInfinite Text Encoder Loader",
            category=CATEGORY,
            description="Load the prompt encoder for 'Model From Parts': the MiniLM packaged for the demo, a "
            "transformers folder (config.json + model.safetensors) in models/text_encoders, or HunyuanVideo's "
            "LLaVA-llama-3 folder with its CLIP-L folder (HunyuanVideo-Avatar: the portrait goes through LLaVA).",
            inputs=[
                io.Combo.Input("text_encoder", options=[MINILM, *folders], default=MINILM),
                io.Combo.Input(
                    "clip_l", options=[NO_CLIP, *folders], default=NO_CLIP, optional=True,
                    tooltip="CLIP-L folder for a LLaVA-llama-3 text_encoder (its pooled vector); unused otherwise",
                ),
            ],
            outputs=[MagicTextEncoder.Output("text_encoder_out", display_name="text_encoder")],
        )

    @classmethod
    def validate_inputs(cls, text_encoder: str, clip_l: str = "none") -> bool | str:
        return _error_text(_check_text_encoder, text_encoder, clip_l)

    @classmethod
    def execute(cls, text_encoder: str, clip_l: str = "none") -> io.NodeOutput:
        from magicinfinite_core.inputs.encoders import HunyuanPromptEncoder, PromptEncoder
        from magicinfinite_core.inputs.text_encoders import HunyuanTextEncoder, MiniLMTextEncoder

        _check_text_encoder(text_encoder, clip_l)
        if text_encoder == MINILM:
            return io.NodeOutput(PromptEncoder(MiniLMTextEncoder(None), text_encoder))
        path = resolve_model_path("text_encoders", text_encoder, want="dir")
        if _text_encoder_kind(path) == "other":
            return io.NodeOutput(PromptEncoder(MiniLMTextEncoder(path), text_encoder))
        import torch

        from magicinfinite_core.errors import CheckpointError
        from magicinfinite_core.weights.model_cache import model_cache

        on_gpu = torch.cuda.is_available()
        clip = resolve_model_path("text_encoders", clip_l, want="dir")

        def load() -> HunyuanPromptEncoder:  # the 8B LLM is kept on the CPU between prompts on a GPU (offload)
            try:
                enc = HunyuanTextEncoder(path, clip, device="cuda" if on_gpu else "cpu",
                                         dtype=torch.float16 if on_gpu else torch.float32, offload=on_gpu)
            except CheckpointError as e:
                raise NodeInputError(str(e)) from None
            return HunyuanPromptEncoder(enc, text_encoder)

        return io.NodeOutput(model_cache().get("text_encoder", path, load, clip=str(clip)))


class MagicInfiniteAudioEncoderLoader(io.ComfyNode):
    """Loads the audio feature extractor: wav2vec2 (file or folder in audio_encoders) or mel (demo)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicInfiniteAudioEncoderLoader",
            display_name="MagicInfinite Audio Encoder Loader",
            category=CATEGORY,
            description="Load the audio encoder for 'Model From Parts': a wav2vec2 or Whisper (HunyuanVideo-Avatar: "
            "whisper-tiny) .safetensors file or transformers folder in models/audio_encoders, or the log-mel "
            "features the demo model uses.",
            inputs=[
                io.Combo.Input("audio_encoder", options=[MEL, *list_safetensors("audio_encoders")], default=MEL),
                io.Int.Input("n_mels", default=64, min=8, max=256, tooltip="Mel bands (mel only; must match the model)."),
            ],
            outputs=[MagicAudioEncoder.Output("audio_encoder_out", display_name="audio_encoder")],
        )

    @classmethod
    def validate_inputs(cls, audio_encoder: str) -> bool | str:
        if audio_encoder == MEL:
            return True
        return _error_text(_audio_encoder_path, audio_encoder)

    @classmethod
    def execute(cls, audio_encoder: str, n_mels: int) -> io.NodeOutput:
        from magicinfinite_core.inputs.audio_features import load_extractor

        if audio_encoder == MEL:
            return io.NodeOutput(load_extractor("mel", n_mels=int(n_mels)))
        return io.NodeOutput(load_extractor(_audio_encoder_path(audio_encoder)))


def _audio_encoder_path(name: str) -> str:
    return str(resolve_model_path("audio_encoders", name, want="weights"))


class MagicInfiniteModelFromParts(io.ComfyNode):
    """Composes a model from separately loaded parts (missing encoders can come from a base bundle)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicInfiniteModelFromParts",
            display_name="MagicInfinite Model From Parts",
            category=CATEGORY,
            description="Build a MagicInfinite model from a DiT, a VAE, an audio encoder and a text encoder. "
            "Parts left unconnected (and the portrait image encoder) are taken from base_model.",
            inputs=[
                MagicDiT.Input("dit", optional=True),
                MagicVAE.Input("vae", optional=True),
                MagicAudioEncoder.Input("audio_encoder", optional=True),
                MagicTextEncoder.Input("text_encoder", optional=True),
                MagicModel.Input("base_model", optional=True, tooltip="Supplies every part not connected."),
                io.Int.Input("height", default=0, min=0, max=4096, step=16,
                             tooltip="Output height; 0 = the base model's (or 720)."),
                io.Int.Input("width", default=0, min=0, max=4096, step=16,
                             tooltip="Output width; 0 = the base model's (or 1280)."),
            ],
            outputs=[MagicModel.Output("model", display_name="model")],
        )

    @classmethod
    def execute(
        cls,
        height: int,
        width: int,
        dit: Any = None,
        vae: Any = None,
        audio_encoder: Any = None,
        text_encoder: Any = None,
        base_model: Any = None,
    ) -> io.NodeOutput:
        from magicinfinite_core.weights.avatar_bundle import avatar_resolution
        from magicinfinite_core.weights.bundle import ModelBundle, model_sampler_defaults

        def part(value: Any, attr: str, what: str) -> Any:
            if value is not None:
                return value
            if base_model is not None:
                return getattr(base_model, attr)
            raise NodeInputError(f"connect a {what} (or a base_model that has one)")

        dit_m = part(dit, "dit", "dit")
        text = part(text_encoder, "text_encoder", "text_encoder")
        tdim = getattr(text, "token_dim", None)
        if tdim is not None and dit_m.cfg.image_token_dim == 0 and tdim != dit_m.cfg.text_dim:
            raise NodeInputError(
                f"the text encoder gives {tdim}-dim tokens but the DiT expects {dit_m.cfg.text_dim}; "
                "use the text encoder the model was trained with"
            )
        vae_m = part(vae, "vae", "vae")
        ratio = int(getattr(vae_m, "spatial_ratio", 8))
        lo, hi = RESOLUTION_RANGE
        for label, v in (("height", height), ("width", width)):
            if v and not (lo <= int(v) <= hi and int(v) % ratio == 0):
                raise NodeInputError(f"{label} {v}: use 0 (the base model's size) or {lo}..{hi} pixels, a multiple "
                                     f"of the autoencoder's {ratio}")
        # no size and no base: HunyuanVideo-Avatar's own size for an Avatar transformer, else 720p
        own = avatar_resolution(dit_m.cfg) if dit_m.cfg.avatar is not None else (720, 1280)
        h = height or (base_model.height if base_model is not None else own[0])
        w = width or (base_model.width if base_model is not None else own[1])
        audio = part(audio_encoder, "audio_extractor", "audio_encoder")
        if dit_m.cfg.avatar is not None and getattr(audio, "feature_dim", None) != dit_m.cfg.avatar.audio_feature_dim:
            raise NodeInputError(
                f"this HunyuanVideo-Avatar transformer needs Whisper windows of {dit_m.cfg.avatar.audio_feature_dim} "
                f"values per frame, the audio encoder gives {getattr(audio, 'feature_dim', '?')}; load whisper-tiny "
                "with 'MagicInfinite Audio Encoder Loader'"
            )
        bundle = ModelBundle(
            dit=dit_m,
            vae=vae_m,
            text_encoder=text,
            image_encoder=base_model.image_encoder if base_model is not None else None,
            audio_extractor=audio,
            height=int(h),
            width=int(w),
            name=os.path.basename(getattr(text, "name", "")) or "parts",
            sampler_defaults=model_sampler_defaults(
                dit_m.cfg, base_model.sampler_defaults if base_model is not None and dit is None else None),
        )
        return io.NodeOutput(bundle)


class MagicInfiniteLoRA(io.ComfyNode):
    """Merges a LoRA from models/loras into the model's transformer (a copy; the loaded model stays as is)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicInfiniteLoRA",
            display_name="MagicInfinite LoRA",
            category=CATEGORY,
            description="Apply a LoRA (.safetensors in models/loras: peft, kohya/ComfyUI or original key names) to "
            "the MagicInfinite transformer at the given strength.",
            inputs=[
                MagicModel.Input("model"),
                io.Combo.Input("lora_name", options=list_safetensors("loras")),
                io.Float.Input("strength", default=1.0, min=-4.0, max=4.0, step=0.05),
            ],
            outputs=[MagicModel.Output("model_out", display_name="model")],
        )

    @classmethod
    def validate_inputs(cls, lora_name: str) -> bool | str:
        return _error_text(_lora_path, lora_name)

    @classmethod
    def execute(cls, model: Any, lora_name: str, strength: float) -> io.NodeOutput:
        import dataclasses

        from magicinfinite_core.weights.lora import apply_lora

        check_floats(strength=(strength, -4.0, 4.0))  # NaN passes ComfyUI's min/max
        merged = apply_lora(model.dit, _lora_path(lora_name), float(strength))
        # dit_path=None: multi-process workers would reload the file without the LoRA
        return io.NodeOutput(dataclasses.replace(model, dit=merged, dit_path=None, _fingerprint=None))


def _lora_path(name: str) -> str:
    return str(resolve_model_path("loras", name, want="file"))
