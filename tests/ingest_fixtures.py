"""Real test videos for the ingestion: world clips re-encoded with PyAV at other frame rates, sizes,
codecs and containers, a panned / zoomed photograph with espeak-ng speech, and broken files.

Each maker returns what the test needs to check the ingestion against: where the ground-truth face
boxes of the world clip went in the re-encoded frame (``scale`` and ``offset``), and timing facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

WORLD_SIZE = 128


def world_clip(seed: int, frames: int = 50, split: str = "train"):
    """A 128 x 128 animated real photograph of the world (mediapipe finds these faces).

    Real photographs only: with the generated portraits, whose clips depend on the installed template
    packages, face mesh read one clip's lips in 48 % of a window (the ingestion needs 50 %) after a
    dependency update, and the ingestion rightly rejected it."""
    from training.data.clip import make_clip
    from training.data.render import WorldConfig

    cfg = WorldConfig(WORLD_SIZE, WORLD_SIZE, photo_faces=1.0, photo_face_min=0.22, photo_face_max=0.28,
                      photo_generated=False)
    return make_clip(seed, split, frames, cfg)


@dataclass
class Placement:
    """Where a world frame went in the encoded frame: x' = x * scale + offset[0]."""

    scale: float
    offset: tuple[float, float]

    def boxes(self, b: np.ndarray) -> np.ndarray:
        b = np.asarray(b, np.float32).copy()
        b[..., [0, 2]] = b[..., [0, 2]] * self.scale + self.offset[0]
        b[..., [1, 3]] = b[..., [1, 3]] * self.scale + self.offset[1]
        return b


def place(frames: np.ndarray, size_wh: tuple[int, int], fill: int = 90) -> tuple[np.ndarray, Placement]:
    """Scale frames to the output height (or width) and centre them on a grey canvas."""
    import cv2

    W, H = size_wh
    h, w = frames.shape[1:3]
    s = min(W / w, H / h)
    nw, nh = int(round(w * s)), int(round(h * s))
    ox, oy = (W - nw) // 2, (H - nh) // 2
    out = np.full((len(frames), H, W, 3), fill, np.uint8)
    for i, f in enumerate(frames):
        out[i, oy : oy + nh, ox : ox + nw] = cv2.resize(f, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return out, Placement(s, (float(ox), float(oy)))


def retime(frames: np.ndarray, fps_in: float, fps_out: float) -> np.ndarray:
    """Nearest-frame resampling of a frame sequence to another rate (same duration)."""
    n_out = int(round(len(frames) * fps_out / fps_in))
    idx = np.minimum(np.round(np.arange(n_out) * fps_in / fps_out).astype(int), len(frames) - 1)
    return frames[idx]


def encode(path: Path, frames: np.ndarray | None, fps: int, audio16k: np.ndarray | None, vcodec: str = "libx264",
           acodec: str = "aac", audio_rate: int = 44100) -> Path:
    """Write frames at ``fps`` with the 16 kHz audio resampled to ``audio_rate`` in ``acodec``."""
    import av
    import librosa

    opts = {"libx264": {"preset": "ultrafast", "crf": "20", "threads": "1"},
            "libvpx": {"deadline": "realtime", "cpu-used": "8", "threads": "1", "b": "2M"},
            "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "threads": "1", "b": "2M"}}
    F, H, W, _ = frames.shape if frames is not None else (0, 0, 0, 3)
    with av.open(str(path), "w") as out:
        vs = None
        if frames is not None:  # None: an audio-only file
            vs = out.add_stream(vcodec, rate=fps)
            vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
            vs.options = opts.get(vcodec, {})
        aus = None
        if audio16k is not None:
            aus = out.add_stream(acodec, rate=audio_rate)
            aus.layout = "stereo" if acodec == "libopus" else "mono"
        for f in frames if vs is not None else []:
            for pkt in vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                out.mux(pkt)
        for pkt in vs.encode() if vs is not None else []:
            out.mux(pkt)
        if aus is not None:
            a = librosa.resample(np.asarray(audio16k, np.float32), orig_sr=16000, target_sr=audio_rate,
                                 res_type="soxr_hq").astype(np.float32)
            ch = 2 if acodec == "libopus" else 1
            step = 960 if acodec == "libopus" else 1024
            for i in range(0, len(a), step):
                part = a[None, i : i + step].repeat(ch, 0).copy()
                fr = av.AudioFrame.from_ndarray(part, format="fltp", layout="stereo" if ch == 2 else "mono")
                fr.sample_rate = audio_rate
                fr.pts = i
                fr.time_base = Fraction(1, audio_rate)
                for pkt in aus.encode(fr):
                    out.mux(pkt)
            for pkt in aus.encode():
                out.mux(pkt)
    return path


def speech(text: str, seconds: float, voice=("en", "m3", 150, 50)) -> np.ndarray:
    """espeak-ng sentences repeated to fill ``seconds`` of 16 kHz audio (short gaps between)."""
    from training.data.speech import Voice, synthesize

    w = synthesize(text, Voice(*voice))
    gap = np.zeros(int(0.15 * 16000), np.float32)
    n = int(round(seconds * 16000))
    out = np.concatenate([w, gap] * (1 + n // (len(w) + len(gap))))[:n]
    return (0.8 * out / max(float(np.abs(out).max()), 1e-6)).astype(np.float32)


def astronaut_pan(seconds: float = 10.0, size: int = 256) -> np.ndarray:
    """scikit-image's astronaut photograph seen by a camera that pans and zooms (25 fps, size x size)."""
    import cv2
    from skimage import data

    img = data.astronaut()  # 512 x 512, face near (x 230, y 110)
    n = int(round(seconds * 25))
    out = np.zeros((n, size, size, 3), np.uint8)
    for t in range(n):
        u = t / max(n - 1, 1)
        side = 330 - 110 * u  # zoom in
        cx = 215 + 40 * np.sin(2 * np.pi * u)  # pan left / right
        cy = 150 - 20 * u
        x0, y0 = cx - side / 2, cy - side / 2
        m = np.array([[size / side, 0, -x0 * size / side], [0, size / side, -y0 * size / side]], np.float32)
        out[t] = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out


def tiny_captioner(folder: Path) -> Path:
    """A real (randomly initialised, seeded) ViT + GPT-2 image-to-text model with a 13-word vocabulary,
    saved the way a downloaded captioner is (config, safetensors, tokenizer, image processor)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        GPT2Config,
        PreTrainedTokenizerFast,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    words = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"] + "a person talking to the camera smiling woman man".split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]",
                                   unk_token="[UNK]")
    enc = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                    image_size=32, patch_size=16)
    dec = GPT2Config(vocab_size=len(words), n_embd=32, n_layer=1, n_head=2, n_positions=64, bos_token_id=1,
                     eos_token_id=2, pad_token_id=0, add_cross_attention=True, is_decoder=True)
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = 1, 0, 2
    torch.manual_seed(0)
    model = VisionEncoderDecoderModel(cfg)
    g = model.generation_config
    g.decoder_start_token_id, g.pad_token_id, g.eos_token_id, g.bos_token_id = 1, 0, 2, 1
    g.min_new_tokens, g.suppress_tokens = 3, [0, 1, 3]  # a random model would otherwise stop at once
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder
