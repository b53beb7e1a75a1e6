"""Tiny random HunyuanVideo-Avatar model files laid out as in ComfyUI's model folders (tests only).

`write_avatar_models(models_root)` writes
  diffusion_models/hunyuan_video_avatar_tiny.safetensors  the tiny-avatar DiT at the Avatar key names,
                                                          text width 384 so the packaged MiniLM drives it
  vae/hunyuan_video_vae_tiny.safetensors                  a tiny random HunyuanVideo VAE (ComfyUI layout)
  audio_encoders/whisper-tiny-random/                     a tiny random Whisper (transformers folder), or
  audio_encoders/whisper_tiny_random.safetensors          the same encoder as one file (`whisper_file=True`)
`cfg` replaces the DiT's config (e.g. the text widths of tiny LLaVA / CLIP folders, tests/llava_fixtures.py).
Every weight is seeded, zero-initialised layers included, so audio and masks change the output.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from magicinfinite_core.config import VAEConfig, dit_preset
from magicinfinite_core.models.dit import MagicInfiniteDiT

AVATAR_FILE = "hunyuan_video_avatar_tiny.safetensors"
VAE_FILE = "hunyuan_video_vae_tiny.safetensors"
WHISPER_DIR = "whisper-tiny-random"
WHISPER_FILE = "whisper_tiny_random.safetensors"


def tiny_avatar_config():
    """tiny-avatar with MiniLM's text width (384 tokens and pooled), the demo's packaged encoder."""
    return replace(dit_preset("tiny-avatar"), text_dim=384, pooled_dim=384)


def random_avatar_dit(seed: int = 0, cfg=None) -> MagicInfiniteDiT:
    g = torch.Generator().manual_seed(seed)
    model = MagicInfiniteDiT(cfg or tiny_avatar_config()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def whisper_encoder_model(cfg_avatar, seed: int = 0):
    """A random transformers WhisperModel whose stacked hidden states fit `cfg_avatar` (layers x channels)."""
    from transformers import WhisperConfig, WhisperModel

    torch.manual_seed(seed)
    d = cfg_avatar.audio_channels
    cfg = WhisperConfig(d_model=d, encoder_layers=cfg_avatar.audio_layers - 1, decoder_layers=1,
                        encoder_attention_heads=max(1, d // 64), decoder_attention_heads=max(1, d // 64),
                        encoder_ffn_dim=2 * d, decoder_ffn_dim=2 * d, vocab_size=64, max_source_positions=1500,
                        max_target_positions=16, num_mel_bins=80, pad_token_id=1, bos_token_id=2, eos_token_id=2,
                        decoder_start_token_id=2)
    return WhisperModel(cfg).eval()


def write_avatar_models(root: str | Path, seed: int = 0, whisper_file: bool = False, cfg=None,
                        dit_name: str = AVATAR_FILE) -> dict[str, Path]:
    from transformers import WhisperFeatureExtractor

    from magicinfinite_core.media.vae import VideoVAE
    from magicinfinite_core.weights.vae_layouts import save_vae

    root = Path(root)
    dit = random_avatar_dit(seed, cfg)
    paths = {"dit": root / "diffusion_models" / dit_name, "vae": root / "vae" / VAE_FILE}
    paths["dit"].parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in dit.state_dict().items()}, str(paths["dit"]))
    torch.manual_seed(seed)
    vae = VideoVAE(VAEConfig(latent_channels=dit.cfg.out_channels, causal_norm=False))
    save_vae(paths["vae"], vae, layout="comfyui")
    whisper = whisper_encoder_model(dit.cfg.avatar, seed)
    if whisper_file:
        paths["whisper"] = root / "audio_encoders" / WHISPER_FILE
        paths["whisper"].parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in whisper.state_dict().items()}, str(paths["whisper"]))
    else:
        paths["whisper"] = root / "audio_encoders" / WHISPER_DIR
        whisper.save_pretrained(paths["whisper"], safe_serialization=True)
        WhisperFeatureExtractor(feature_size=80).save_pretrained(paths["whisper"])
    return paths


def voice(seconds: float, freq: float, rate: int = 16000) -> tuple[np.ndarray, int]:
    """A voiced-looking test tone (harmonics, amplitude envelope) as (waveform, rate)."""
    t = np.arange(int(seconds * rate)) / rate
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    wave = sum(np.sin(2 * np.pi * freq * k * t) / k for k in (1, 2, 3)) * env * 0.3
    return wave.astype(np.float32), rate


def two_speaker_masks(h: int = 64, w: int = 64) -> np.ndarray:
    """[2, h, w]: the left and the right half of the picture."""
    m = np.zeros((2, h, w), np.float32)
    m[0, :, : w // 2] = 1
    m[1, :, w // 2 :] = 1
    return m


def portrait(h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth random RGB picture, uint8 [h, w, 3]."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (4, 4, 3)).astype(np.float32)
    return np.kron(small, np.ones((h // 4, w // 4, 1))).astype(np.uint8)
