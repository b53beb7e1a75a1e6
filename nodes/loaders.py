"""Model loader nodes: a whole bundle (demo / bundle folder), or the parts from ComfyUI's model folders.

Why two paths: the demo and our own checkpoints ship as one bundle folder (dit + vae + encoders);
users of the published weights have separate files in ``diffusion_models``, ``vae``,
``text_encoders`` and ``audio_encoders`` and compose them with "MagicInfinite Model From Parts".
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
    resolve_model_path,
)

MINILM = "packaged MiniLM (demo)"
TRANSFORMERS = ["base", "4-step distilled"]
MEL = "mel (demo)"
_DTYPES = ["auto", "bfloat16", "float16", "float32"]


def _bundle_path(name: str) -> str:
    """Folder of the bundle called ``name`` (the embedded demo or one under diffusion_models)."""
    if name == EMBEDDED_DEMO:
        from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR

        if not (DEMO_MODEL_DIR / BUNDLE_FILE).is_file():
            raise NodeInputError(
                f"the embedded demo model is not installed ({DEMO_MODEL_DIR} has no {BUNDLE_FILE}); "
                "reinstall the pack or pick a bundle folder from models/diffusion_models"
            )
        return str(DEMO_MODEL_DIR)
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
            "the embedded demo, or a bundle folder (with bundle.json) in models/diffusion_models.",
            inputs=[
                io.Combo.Input(
                    "model",
                    options=[EMBEDDED_DEMO, *list_dirs("diffusion_models", BUNDLE_FILE)],
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
        bundle = model_cache().get("bundle", path, lambda: load_bundle(path, distilled=distilled), distilled=distilled)
        text = f"{bundle.name}: {bundle.width}x{bundle.height}"
        return io.NodeOutput(bundle, ui=ui.PreviewText(text))


class MagicInfiniteDiTLoader(io.ComfyNode):
    """Loads a transformer file (original, ComfyUI, diffusers or our layout; fp8 is dequantised)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicInfiniteDiTLoader",
            display_name="MagicInfinite DiT Loader",
            category=CATEGORY,
            description="Load a MagicInfinite / HunyuanVideo-I2V transformer (.safetensors, shard index or "
            "diffusers folder) from models/diffusion_models; the layout is detected.",
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


class MagicInfiniteTextEncoderLoader(io.ComfyNode):
    """Loads a prompt encoder: the packaged MiniLM, or a MiniLM-style folder in models/text_encoders."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicInfiniteTextEncoderLoader",
            display_name="MagicInfinite Text Encoder Loader",
            category=CATEGORY,
            description="Load the prompt encoder for 'Model From Parts': the MiniLM packaged for the demo, or a "
            "transformers folder (config.json + model.safetensors) in models/text_encoders.",
            inputs=[
                io.Combo.Input(
                    "text_encoder",
                    options=[MINILM, *list_dirs("text_encoders", "config.json")],
                    default=MINILM,
                ),
            ],
            outputs=[MagicTextEncoder.Output("text_encoder_out", display_name="text_encoder")],
        )

    @classmethod
    def validate_inputs(cls, text_encoder: str) -> bool | str:
        if text_encoder == MINILM:
            return True
        return _error_text(resolve_model_path, "text_encoders", text_encoder, "dir")

    @classmethod
    def execute(cls, text_encoder: str) -> io.NodeOutput:
        from magicinfinite_core.inputs.encoders import PromptEncoder
        from magicinfinite_core.inputs.text_encoders import MiniLMTextEncoder

        path = None if text_encoder == MINILM else resolve_model_path("text_encoders", text_encoder, want="dir")
        if path is not None and not any(p.suffix == ".safetensors" for p in path.iterdir()):
            raise NodeInputError(f"{text_encoder!r} has no .safetensors weights; only safetensors are loaded")
        return io.NodeOutput(PromptEncoder(MiniLMTextEncoder(path), text_encoder))


class MagicInfiniteAudioEncoderLoader(io.ComfyNode):
    """Loads the audio feature extractor: wav2vec2 (file or folder in audio_encoders) or mel (demo)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicInfiniteAudioEncoderLoader",
            display_name="MagicInfinite Audio Encoder Loader",
            category=CATEGORY,
            description="Load the audio encoder for 'Model From Parts': a wav2vec2 .safetensors file or folder in "
            "models/audio_encoders, or the log-mel features the demo model uses.",
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
        from magicinfinite_core.weights.bundle import ModelBundle

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
        h = height or (base_model.height if base_model is not None else 720)
        w = width or (base_model.width if base_model is not None else 1280)
        bundle = ModelBundle(
            dit=dit_m,
            vae=vae_m,
            text_encoder=text,
            image_encoder=base_model.image_encoder if base_model is not None else None,
            audio_extractor=part(audio_encoder, "audio_extractor", "audio_encoder"),
            height=int(h),
            width=int(w),
            name=os.path.basename(getattr(text, "name", "")) or "parts",
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
