"""Helpers that build real test inputs at test time: espeak-ng speech, format conversions through
soundfile / PyAV, and a tiny seeded wav2vec2 saved in both layouts. No downloads."""

from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch


def make_speech(path: Path, text: str = "Hello there. This portrait is talking now.") -> Path:
    """Real synthetic speech (espeak-ng, 22.05 kHz mono wav)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    return path


def convert_soundfile(src: Path, dst: Path, fmt: str, subtype: str | None = None) -> Path:
    """wav -> flac / ogg (vorbis) / mp3 with libsndfile."""
    import soundfile as sf

    data, sr = sf.read(str(src), dtype="float32", always_2d=True)
    sf.write(str(dst), data, sr, format=fmt, subtype=subtype)
    return dst


def encode_av(
    wave: np.ndarray,
    sample_rate: int,
    dst: Path,
    codec: str = "aac",
    with_video: bool = False,
    with_audio: bool = True,
    seconds: float | None = None,
) -> Path:
    """Write a mono float waveform with PyAV: .m4a (aac) or an .mp4 with a small h264 video track."""
    import av

    seconds = seconds if seconds is not None else len(wave) / sample_rate
    with av.open(str(dst), "w") as out:
        vstream = None
        if with_video:
            vstream = out.add_stream("libx264", rate=25)
            vstream.width, vstream.height, vstream.pix_fmt = 64, 64, "yuv420p"
        astream = out.add_stream(codec, rate=sample_rate) if with_audio else None
        if astream is not None:
            astream.layout = "mono"
        if vstream is not None:
            for i in range(int(seconds * 25)):
                img = np.full((64, 64, 3), (i * 7) % 255, np.uint8)
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                for p in vstream.encode(frame):
                    out.mux(p)
            for p in vstream.encode():
                out.mux(p)
        if astream is not None:
            n = 1024
            pcm = (np.clip(wave, -1, 1) * 32767).astype(np.int16)
            for i, start in enumerate(range(0, len(pcm), n)):
                chunk = pcm[start : start + n][None]
                frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
                frame.sample_rate = sample_rate
                frame.pts = i * n
                frame.time_base = Fraction(1, sample_rate)
                for p in astream.encode(frame):
                    out.mux(p)
            for p in astream.encode():
                out.mux(p)
    return dst


def tiny_wav2vec2(seed: int = 0, layer_norm: bool = False):
    """A tiny randomly initialised Wav2Vec2Model with the real conv layout (hop 320, field 400).

    ``layer_norm=True`` mimics the "large"/lv60 family (LayerNorm convs with bias, pre-LN encoder);
    False mimics "base" (GroupNorm on the first conv, post-LN). hidden 64 -> 1 head (64 per head),
    which is what the single-file config inference assumes.
    """
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(seed)
    cfg = Wav2Vec2Config(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=1,
        intermediate_size=96,
        conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer" if layer_norm else "group",
        do_stable_layer_norm=layer_norm,
        conv_bias=layer_norm,
    )
    model = Wav2Vec2Model(cfg).eval()
    # Random init leaves GroupNorm/LayerNorm affine at 1/0; perturb them so loading mistakes show.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and p.ndim == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + len(name))))
    return model


def save_comfy_single_file(
    model, path: Path, prefix: str = "wav2vec2.", fp16: bool = True, old_weight_norm: bool = False
) -> Path:
    """State dict as one safetensors file, as ComfyUI's models/audio_encoders keep them."""
    from safetensors.torch import save_file

    sd = {}
    for k, v in model.state_dict().items():
        if old_weight_norm:
            k = k.replace("parametrizations.weight.original0", "weight_g").replace(
                "parametrizations.weight.original1", "weight_v"
            )
        sd[prefix + k] = (v.half() if fp16 else v).contiguous()
    save_file(sd, str(path))
    return path
