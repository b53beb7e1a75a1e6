"""Which frozen encoders fill a preprocessing cache: the demo's (MiniLM, mel, our VAE files), the
13B model's (LLaVA-llama-3 + CLIP-L, wav2vec2, the HunyuanVideo VAE in any supported layout), or
HunyuanVideo-Avatar's (Whisper windows; LLaVA reads the portrait through its `<image>` token).

Why a spec: the encoder actors of the Ray pipeline are built on worker processes (one GPU each),
so what to load travels as a small dataclass of paths, and its labels go into cache.json so that a
cache never mixes encoders. The demo labels stay "minilm" / "mel": caches made before this module
keep their settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

TEXT_MAX_TOKENS = 40  # the demo's MiniLM prompt length
HUNYUAN_MAX_TOKENS = 1024  # prompt (256) + the portrait's LLaVA image tokens fit; every row is padded to it


@dataclass(frozen=True)
class EncoderSpec:
    """text: "minilm" or "hunyuan" (needs llava + clip folders); audio: "mel", "wav2vec2" (needs
    wav2vec2: a HF folder or a ComfyUI single file) or "whisper" (needs whisper: a folder or single file;
    makes the cache HunyuanVideo-Avatar's: Whisper windows per video frame + the portrait's `ref_latent`)."""

    text: str = "minilm"
    audio: str = "mel"
    llava: str = ""
    clip: str = ""
    wav2vec2: str = ""
    whisper: str = ""

    @property
    def avatar(self) -> bool:
        """Whisper audio: the cache feeds a HunyuanVideo-Avatar model."""
        return self.audio == "whisper"

    def problems(self) -> list[str]:
        """What is missing for this choice (empty when it can be built)."""
        out = []
        if self.text not in ("minilm", "hunyuan"):
            out.append(f"--text-encoder {self.text!r}: use minilm or hunyuan")
        if self.audio not in ("mel", "wav2vec2", "whisper"):
            out.append(f"--audio-encoder {self.audio!r}: use mel, wav2vec2 or whisper")
        if self.text == "hunyuan":
            for flag, path in (("--llava", self.llava), ("--clip", self.clip)):
                if not path or not Path(path).is_dir():
                    out.append(f"--text-encoder hunyuan needs {flag} FOLDER (transformers format, "
                               f"docs/checkpoints.md); got {path or 'none'}")
        if self.audio == "wav2vec2" and (not self.wav2vec2 or not Path(self.wav2vec2).exists()):
            out.append(f"--audio-encoder wav2vec2 needs --wav2vec2 PATH (folder or .safetensors); "
                       f"got {self.wav2vec2 or 'none'}")
        if self.audio == "whisper" and (not self.whisper or not Path(self.whisper).exists()):
            out.append(f"--audio-encoder whisper needs --whisper PATH (openai/whisper-tiny folder or .safetensors); "
                       f"got {self.whisper or 'none'}")
        return out

    @property
    def text_label(self) -> str:
        return "minilm" if self.text == "minilm" else f"hunyuan:{Path(self.llava).name}+{Path(self.clip).name}"

    @property
    def audio_label(self) -> str:
        if self.audio == "whisper":
            return f"whisper:{Path(self.whisper).name}"
        return "mel" if self.audio == "mel" else f"wav2vec2:{Path(self.wav2vec2).name}"


class MiniLMText:
    """The packaged MiniLM (`text_encoders.MiniLMTextEncoder`) padded to a fixed length for caching.

    -> tokens [B, max_tokens, 384] (padding rows zero), mask [B, max_tokens] bool, pooled [B, 384]
    (mean over the mask, L2-normalised).
    """

    name = "minilm"
    dim = 384

    def __init__(self, max_tokens: int = TEXT_MAX_TOKENS) -> None:
        from magicinfinite_core.inputs.text_encoders import MiniLMTextEncoder

        self.encoder = MiniLMTextEncoder(max_length=max_tokens, pad_to_max_length=True)
        self.max_tokens = max_tokens

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e = self.encoder.encode(prompts)
        return e.tokens, e.mask, e.pooled


class HunyuanCacheText:
    """`text_encoders.HunyuanTextEncoder` for caching: the I2V template with the portrait (`avatar`:
    HunyuanVideo-Avatar's text, `encode_avatar`), every output padded to one fixed length (the trainer
    swaps rows for the empty prompt's in place)."""

    uses_image = True

    def __init__(self, llava: str | Path, clip: str | Path, device: str = "cpu",
                 max_tokens: int = HUNYUAN_MAX_TOKENS, avatar: bool = False) -> None:
        from magicinfinite_core.inputs.text_encoders import HunyuanTextEncoder

        dtype = torch.float16 if device != "cpu" else torch.float32
        self.encoder = HunyuanTextEncoder(llava, clip, device=device, dtype=dtype)
        self.max_tokens, self.avatar = max_tokens, avatar

    def encode(self, prompts: list[str], images: list[np.ndarray] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.avatar and images is not None:
            e = self.encoder.encode_avatar(prompts, images)
        else:
            e = self.encoder.encode(prompts, images)
        n = e.tokens.shape[1]
        if n > self.max_tokens:
            raise ValueError(f"the text encoder gave {n} tokens, more than the cache's {self.max_tokens}")
        tokens = torch.zeros(e.tokens.shape[0], self.max_tokens, e.tokens.shape[2])
        mask = torch.zeros(e.tokens.shape[0], self.max_tokens, dtype=torch.bool)
        tokens[:, :n] = e.tokens.float().cpu() * e.mask[..., None].float().cpu()
        mask[:, :n] = e.mask.bool().cpu()
        return tokens, mask, e.pooled.float().cpu()


def build_text(spec: EncoderSpec, max_tokens: int, device: str = "cpu"):
    """The text encoder of a spec: `.encode(prompts[, images]) -> (tokens, mask, pooled)`."""
    if spec.text == "hunyuan":
        return HunyuanCacheText(spec.llava, spec.clip, device, avatar=spec.avatar)
    return MiniLMText(max_tokens)


def build_audio(spec: EncoderSpec, n_mels: int, n_fft: int, device: str = "cpu"):
    """The audio feature extractor of a spec: `.extract(waveform_16k, num_frames) -> [F, D]`."""
    if spec.audio == "whisper":
        from magicinfinite_core.inputs.audio_features import WhisperExtractor

        return WhisperExtractor.from_path(spec.whisper, device=device)
    if spec.audio == "wav2vec2":
        from magicinfinite_core.inputs.audio_features import Wav2Vec2Extractor

        return Wav2Vec2Extractor.from_path(spec.wav2vec2, device=device)
    from magicinfinite_core.inputs.audio_features import MelExtractor

    return MelExtractor(n_mels=n_mels, n_fft=n_fft)


def load_any_vae(path: str | Path, device: str = "cpu"):
    """Our autoencoder files (config in the metadata) or a HunyuanVideo VAE in any published layout
    (`media.autoencoders.load_autoencoder`, the one autoencoder loader)."""
    from magicinfinite_core.media.autoencoders import load_autoencoder

    return load_autoencoder(path, device=device)
