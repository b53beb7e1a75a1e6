"""generate(): portrait + voice + prompt -> mp4 of exactly the audio's length (DESIGN.md §2 data flow).

inputs -> audio features [K, F, D] and token masks -> per-window conditions -> CFG-batched DiT
forward -> sliding-window sampler (one latent for the whole video) -> streamed VAE decode -> mp4.

Identity over any length (DESIGN.md §5, team decision): only window 0 starts at the portrait, so
only window 0 gets the I2V frame-0 latent concat (mask 1 at its first latent frame); every other
window gets the zero concat with mask 0, exactly what training shows the model when it drops the
frame-0 condition. EVERY window gets the portrait's image tokens in the text stream, so the identity
reference is present everywhere; the blended overlaps carry appearance from window to window.
No reference latent is added (the DiT has no input for one).

CFG passes (guidance.py): FULL = text + portrait + audio; NO_AUDIO = the same with every speaker
mask zeroed (switches the audio cross-attention off); UNCOND = null prompt, no portrait (zero
concat, image tokens masked out) and no audio. Guidance scales are fixed per run (the dynamic
scales of CFGConfig.dynamic_std are a distillation-time tool and are ignored here).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import resource
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .audio import LoadedAudio, load_speaker_tracks
from .audio_features import AudioFeatureExtractor, MelExtractor, extract_speaker_features, load_extractor
from .autoencoders import autoencoder_from_config, decode_fn, load_autoencoder_state, save_autoencoder
from .checkpoints import load_dit, load_state_dict, save_dit, save_state_dict
from .config import VIDEO_FPS, DiTConfig, SamplerConfig, VAEConfig
from .errors import CheckpointError, MagicInfiniteError, MaskError, finite_error
from .guidance import FULL, UNCOND, CFGConfig, guided_velocity
from .masks import (
    DETECT_MAX_SIDE,
    WORK_MAX_SIDE,
    bounded_image,
    resolve_overlaps,
    speaker_masks,
    token_masks,
)
from .models.dit import MagicInfiniteDiT, concat_image_condition, image_tokens_from_latent
from .sampler import ProgressCallback, sample, step_plans
from .sampler_state import clear_state, has_state, load_state
from .scheduler import timestep_from_sigma
from .sliding_window import Window, latent_frames, window_sizes
from .streamed_decode import streamed_decode

log = logging.getLogger(__name__)

BUNDLE_FILE = "bundle.json"
DEMO_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "demo"
DISTILLED_TIMESTEPS = (1000.0, 750.0, 500.0, 250.0)  # the paper's 4-step list (warped by the shift)


# ------------------------------------------------------------------------------------ small encoders


@dataclass
class TextEmbedding:
    tokens: torch.Tensor  # [1, L, text_dim]
    mask: torch.Tensor  # [1, L] bool
    pooled: torch.Tensor  # [1, pooled_dim]


class ByteTextEncoder(nn.Module):
    """UTF-8 bytes -> token embeddings + pooled vector: a tiny, offline, trainable prompt encoder.

    Why: tiny/test models need a text stream of the DiT's shape without any downloaded tokenizer;
    a byte vocabulary never fails on a prompt. Token 256 = BOS (always present, so the null prompt
    still has one valid token), 257 = padding.
    """

    def __init__(self, text_dim: int, pooled_dim: int, max_len: int = 64):
        super().__init__()
        self.config = {"kind": "bytes", "text_dim": text_dim, "pooled_dim": pooled_dim, "max_len": max_len}
        self.max_len = max_len
        self.embed = nn.Embedding(258, text_dim)
        self.pos = nn.Parameter(torch.zeros(max_len, text_dim))
        self.pool = nn.Linear(text_dim, pooled_dim)

    def forward(self, prompt: str) -> TextEmbedding:
        ids = [256] + list(prompt.encode("utf-8"))[: self.max_len - 1]
        n = len(ids)
        ids = torch.tensor(ids + [257] * (self.max_len - n), device=self.pos.device)
        mask = torch.arange(self.max_len, device=ids.device) < n
        tok = self.embed(ids) + self.pos
        pooled = self.pool(tok[:n].mean(0))
        return TextEmbedding(tok[None], mask[None], pooled[None])


class PatchImageEncoder(nn.Module):
    """Portrait -> a grid of image tokens (avg-pooled patches, linear): the tiny model's identity tokens."""

    def __init__(self, token_dim: int, grid: int = 4, patch: int = 4):
        super().__init__()
        self.config = {"kind": "patches", "token_dim": token_dim, "grid": grid, "patch": patch}
        self.grid, self.patch = grid, patch
        self.proj = nn.Linear(3 * patch * patch, token_dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """[1, 3, H, W] in [-1, 1] -> [1, grid*grid, token_dim]."""
        g, p = self.grid, self.patch
        image = image.to(self.proj.weight.dtype)  # portraits arrive in float32; the encoder may be bf16
        x = F.adaptive_avg_pool2d(image, (g * p, g * p))  # [1, 3, gp, gp]
        x = x.view(1, 3, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(1, g * g, 3 * p * p)
        return self.proj(x)


class PromptEncoder:
    """Adapts a `text_encoders` encoder (`encode(list) -> TextEmbeddings`) to `encoder(prompt)`.

    The demo model's prompt encoder is the packaged MiniLM (kind "minilm", no weights in the bundle).
    """

    def __init__(self, encoder: Any, name: str = "minilm", max_length: int = 64) -> None:
        self.encoder, self.name = encoder, name
        self.config = {"kind": name, "max_length": max_length}
        self.token_dim, self.pooled_dim = int(encoder.token_dim), int(encoder.pooled_dim)

    def __call__(self, prompt: str) -> TextEmbedding:
        e = self.encoder.encode([prompt or ""])
        return TextEmbedding(e.tokens, e.mask, e.pooled)

    @classmethod
    def minilm(cls, max_length: int = 64) -> PromptEncoder:
        from .text_encoders import MiniLMTextEncoder

        return cls(MiniLMTextEncoder(max_length=max_length), "minilm", max_length)


class LatentPatchTokens:
    """Image tokens = the portrait's VAE latent in 2D patches (kind "latent_patches", no weights)."""

    def __init__(self, patch: Sequence[int] = (2, 2)) -> None:
        self.patch = (int(patch[0]), int(patch[1]))
        self.config = {"kind": "latent_patches", "patch": list(self.patch)}

    def from_latent(self, latent: torch.Tensor) -> torch.Tensor:
        return image_tokens_from_latent(latent, self.patch)


def _encoder_from_config(cfg: dict) -> Any:
    kind = cfg.get("kind")
    if kind == "bytes":
        return ByteTextEncoder(cfg["text_dim"], cfg["pooled_dim"], cfg["max_len"])
    if kind == "patches":
        return PatchImageEncoder(cfg["token_dim"], cfg["grid"], cfg["patch"])
    if kind == "minilm":
        return PromptEncoder.minilm(cfg.get("max_length", 64))
    if kind == "latent_patches":
        return LatentPatchTokens(cfg.get("patch", (2, 2)))
    raise CheckpointError(f"unknown encoder kind {kind!r} in the model bundle")


# ------------------------------------------------------------------------------------------ bundle


@dataclass
class ModelBundle:
    """Everything generate() needs. `text_encoder(prompt) -> TextEmbedding`; `image_encoder(img) ->
    [1, Li, dim]` (dim = image_token_dim, or text_dim when the DiT has no image projection)."""

    dit: MagicInfiniteDiT
    vae: Any  # vae.VideoVAE or patch_autoencoder.PatchAutoencoder (autoencoders.py)
    text_encoder: Any
    image_encoder: Any | None
    audio_extractor: AudioFeatureExtractor
    height: int = 64
    width: int = 64
    name: str = "model"
    dit_path: Path | None = None  # the DiT file a bundle was loaded from (multi-process workers reload it)
    # bundle.json "sampler": the settings the model was tuned for (steps, shift, audio_scale, text_scale)
    sampler_defaults: dict[str, Any] = field(default_factory=dict)
    # set when `dit` is a few-step distilled generator: {"timesteps": [...], "shift": s}
    distilled: dict[str, Any] | None = None
    _fingerprint: str | None = field(default=None, repr=False)

    def resolve_sampling(
        self,
        distilled: bool,
        steps: int | None = None,
        shift: float | None = None,
        cfg: CFGConfig | None = None,
        distilled_timesteps: Sequence[float] | None = None,
    ) -> tuple[int, float, CFGConfig, tuple[float, ...]]:
        """(steps, shift, guidance, distilled step list): what the caller set, else what this model was
        trained / distilled for (bundle.json), else the library defaults (30 steps, shift 7, CFG 4/3)."""
        d = self.sampler_defaults
        info = self.distilled or {}
        timesteps = tuple(float(t) for t in (distilled_timesteps or info.get("timesteps") or DISTILLED_TIMESTEPS))
        if distilled:
            shift = float(shift if shift is not None else info.get("shift", d.get("shift", 7.0)))
            return len(timesteps), shift, CFGConfig.off(), timesteps
        steps = int(steps if steps is not None else d.get("steps", 30))
        shift = float(shift if shift is not None else d.get("shift", 7.0))
        if cfg is None:
            cfg = CFGConfig(audio_scale=float(d.get("audio_scale", 4.0)), text_scale=float(d.get("text_scale", 3.0)),
                            boundary=float(d.get("boundary", 0.75)))
        return steps, shift, cfg, timesteps

    def fingerprint(self) -> str:
        """Hash of all weights (resume refuses a state made by another model)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for mod in (self.dit, self.vae, self.text_encoder, self.image_encoder):
                if isinstance(mod, nn.Module):
                    for k, v in sorted(mod.state_dict().items()):
                        h.update(k.encode())
                        h.update(v.detach().cpu().float().contiguous().numpy().tobytes())
            h.update(str(getattr(self.audio_extractor, "name", "")).encode())
            self._fingerprint = h.hexdigest()[:24]
        return self._fingerprint

    def to(self, device: torch.device | str) -> ModelBundle:
        for mod in (self.dit, self.vae, self.text_encoder, self.image_encoder):
            if isinstance(mod, nn.Module):
                mod.to(device)
        return self


def _seeded_init(module: nn.Module, generator: torch.Generator, std: float = 0.02) -> None:
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif "norm" in name and p.ndim == 1:
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=generator) * std)


def random_bundle(
    seed: int = 0,
    *,
    height: int = 64,
    width: int = 64,
    dit_cfg: DiTConfig | None = None,
    vae_cfg: VAEConfig | None = None,
    std: float = 0.05,
) -> ModelBundle:
    """Seeded random tiny models (tests, benches): every weight drawn from one generator.

    Output projections that are zero-initialised for training are random here too, so the random
    model's velocity actually depends on its inputs.
    """
    dit_cfg = dit_cfg or DiTConfig()
    vae_cfg = vae_cfg or VAEConfig(latent_channels=dit_cfg.out_channels)
    g = torch.Generator().manual_seed(int(seed))
    dit = MagicInfiniteDiT(dit_cfg)
    _seeded_init(dit, g, std)
    from .vae import VideoVAE  # diffusers: imported only when a 3D VAE is built

    vae = VideoVAE(vae_cfg)
    _seeded_init(vae.model, g, std=0.2)
    text = ByteTextEncoder(dit_cfg.text_dim, dit_cfg.pooled_dim)
    _seeded_init(text, g, 0.5)
    image = PatchImageEncoder(dit_cfg.image_token_dim or dit_cfg.text_dim)
    _seeded_init(image, g, 0.5)
    n_mels = dit_cfg.audio.feature_dim if dit_cfg.audio is not None else 64
    bundle = ModelBundle(dit.eval(), vae.eval(), text.eval(), image.eval(), MelExtractor(n_mels=n_mels),
                         height, width, name=f"random-tiny-{seed}")
    return bundle


def save_bundle(bundle: ModelBundle, directory: str | Path) -> Path:
    """Write a bundle folder: bundle.json + dit / vae / text / image safetensors (our formats)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_dit(d / "dit.safetensors", bundle.dit)
    save_autoencoder(d / "vae.safetensors", bundle.vae)
    meta: dict[str, Any] = {
        "format": "magicinfinite-bundle/1",
        "name": bundle.name,
        "resolution": [bundle.height, bundle.width],
        "dit": "dit.safetensors",
        "vae": {"weights": "vae.safetensors", "config": bundle.vae.cfg.to_dict()},
        "audio": {"kind": getattr(bundle.audio_extractor, "name", "mel"),
                  "n_mels": getattr(bundle.audio_extractor, "n_mels", 64),
                  "n_fft": getattr(bundle.audio_extractor, "n_fft", 1024)},
    }
    if bundle.sampler_defaults:
        meta["sampler"] = dict(bundle.sampler_defaults)
    if bundle.distilled is not None:  # the DiT is a few-step generator: say so, with its step list
        meta["distilled"] = {"dit": "dit.safetensors", **bundle.distilled}
    for key, mod in (("text_encoder", bundle.text_encoder), ("image_encoder", bundle.image_encoder)):
        if isinstance(mod, nn.Module):
            save_state_dict(d / f"{key}.safetensors", mod.state_dict(), kind=f"magicinfinite-{key}", config=mod.config)
            meta[key] = {"weights": f"{key}.safetensors", "config": mod.config}
        elif mod is not None:  # weightless adapters (packaged MiniLM, latent patches)
            meta[key] = {"config": mod.config}
    (d / BUNDLE_FILE).write_text(json.dumps(meta, indent=1))
    return d


def bundle_sampler_defaults(path: str | Path) -> dict[str, Any]:
    """bundle.json's "sampler" section (the model's recommended settings) without loading weights."""
    spec = Path(path) / BUNDLE_FILE if Path(path).is_dir() else Path(path)
    try:
        return dict(json.loads(spec.read_text()).get("sampler", {}))
    except (OSError, ValueError, AttributeError):
        return {}


def bundle_files(spec: dict[str, Any], folder: Path, spec_path: Path | str = BUNDLE_FILE) -> dict[str, Path]:
    """Every file a bundle.json names ({"dit": path, "vae.weights": path, ...}), each checked to lie in its folder.

    Why: bundle folders come from anywhere (downloads, shared drives); a ``bundle.json`` naming
    ``/abs/path`` or ``../../x`` must not make the loader read files outside the bundle. Relative
    names without ``..`` only; a symlink the user placed inside the folder is followed.
    """
    import os

    found: dict[str, Any] = {"dit": spec.get("dit")}
    if isinstance(spec.get("distilled"), dict) and "dit" in spec["distilled"]:
        found["distilled.dit"] = spec["distilled"]["dit"]
    for key in ("vae", "text_encoder", "image_encoder"):
        if isinstance(spec.get(key), dict) and "weights" in spec[key]:
            found[f"{key}.weights"] = spec[key]["weights"]
    if isinstance(spec.get("audio"), dict) and "path" in spec["audio"]:
        found["audio.path"] = spec["audio"]["path"]
    out: dict[str, Path] = {}
    base = os.path.normpath(os.path.abspath(folder))
    for key, name in found.items():
        if not isinstance(name, str) or not name.strip():
            raise CheckpointError(f"{spec_path}: {key!r} must name a file inside the bundle folder, got {name!r}")
        parts = Path(name.replace("\\", "/")).parts
        if os.path.isabs(name) or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
            raise CheckpointError(
                f"{spec_path}: {key!r} is the absolute path {name!r}; bundle files must be named relative to the "
                "bundle folder (absolute paths are refused)"
            )
        cand = os.path.normpath(os.path.join(base, name))
        if ".." in parts or os.path.commonpath([base, cand]) != base:
            raise CheckpointError(
                f"{spec_path}: {key!r} = {name!r} leaves the bundle folder ('..' is refused); put the file inside it"
            )
        out[key] = Path(cand)
    return out


def bundle_has_generator(path: str | Path) -> bool:
    """Whether bundle.json names a few-step distilled generator (its "distilled" entry), without loading."""
    spec = Path(path) / BUNDLE_FILE if Path(path).is_dir() else Path(path)
    try:
        info = json.loads(spec.read_text()).get("distilled")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(info, dict) and "dit" in info


def load_bundle(path: str | Path, device: torch.device | str = "cpu", distilled: bool = False) -> ModelBundle:
    """Load a bundle folder written by save_bundle (the demo model ships in this format).

    distilled: load the bundle's few-step generator (bundle.json "distilled": {"dit", "timesteps",
    "shift"}, written by training.distill) instead of its base DiT; everything else is shared.
    """
    d = Path(path)
    spec_path = d / BUNDLE_FILE if d.is_dir() else d
    if not spec_path.is_file():
        raise CheckpointError(f"no model at {path}: expected a folder with {BUNDLE_FILE}")
    d = spec_path.parent
    try:
        spec = json.loads(spec_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{spec_path} is not valid JSON ({exc})") from None
    dit_file, info = spec["dit"], None
    if distilled:
        info = spec.get("distilled")
        if not isinstance(info, dict) or "dit" not in info:
            raise CheckpointError(
                f"{spec_path} has no distilled generator (no 'distilled' entry naming a DiT file): distil it with "
                "python -m training.distill.trainer, or sample it in base mode (CFG, more steps)"
            )
        dit_file = info["dit"]
        info = {k: v for k, v in info.items() if k != "dit"}
    files = bundle_files(spec, d, spec_path)  # every path checked before anything is read
    dit = load_dit(files["dit" if not distilled else "distilled.dit"], device=device)
    vae = autoencoder_from_config(spec["vae"]["config"])
    load_autoencoder_state(vae, load_state_dict(files["vae.weights"]), files["vae.weights"])
    encoders = {}
    for key in ("text_encoder", "image_encoder"):
        if key in spec:
            mod = _encoder_from_config(spec[key]["config"])
            if isinstance(mod, nn.Module):
                mod.load_state_dict(load_state_dict(files[f"{key}.weights"]))
                mod.eval()
            encoders[key] = mod
    if "text_encoder" not in encoders:
        raise CheckpointError(f"{spec_path} names no text encoder")
    audio = spec.get("audio", {"kind": "mel"})
    if audio["kind"] == "mel":
        extractor = MelExtractor(n_mels=audio.get("n_mels", 64), n_fft=audio.get("n_fft", 1024))
    else:
        extractor = load_extractor(files["audio.path"])
    h, w = spec.get("resolution", [64, 64])
    name = spec.get("name", d.name) + ("-4step" if distilled else "")
    return ModelBundle(dit.eval(), vae.eval(), encoders["text_encoder"], encoders.get("image_encoder"), extractor,
                       int(h), int(w), name=name, dit_path=d / str(dit_file),
                       sampler_defaults=dict(spec.get("sampler", {})), distilled=info).to(device)


# ---------------------------------------------------------------------------------------- inputs


MAX_PORTRAIT_PIXELS = 150_000_000  # portrait files above this are refused before decoding


class PortraitWarning(UserWarning):
    """A portrait that is usable but was changed on the way in (e.g. a huge image downscaled)."""


def read_portrait(portrait: Any, max_side: int = WORK_MAX_SIDE) -> np.ndarray:
    """Any image (path, PIL, array, ComfyUI IMAGE) -> uint8 RGB [H, W, 3] with at most ``max_side`` px a side.

    Why: memory must stay bounded for any upload. A file is opened lazily, refused above
    ``MAX_PORTRAIT_PIXELS``, decoded at reduced scale where the format allows (JPEG draft) and
    reduced by an integer factor before the RGB conversion; an array / tensor is pooled on a view
    (:func:`masks.bounded_image`). Above PIL's decompression-bomb limit a :class:`PortraitWarning`
    says what was done.
    """
    from PIL import Image

    if isinstance(portrait, (str, Path)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(portrait) as im:
                    w, h = im.size
                    if w * h > MAX_PORTRAIT_PIXELS:
                        raise MagicInfiniteError(
                            f"the portrait {portrait} is {w}x{h} ({w * h / 1e6:.0f} MP); portraits above "
                            f"{MAX_PORTRAIT_PIXELS / 1e6:.0f} MP are refused: downscale it first"
                        )
                    f = math.ceil(max(w, h) / max_side)
                    if f > 1 and im.format == "JPEG":
                        im.draft("RGB", (max(1, w // f), max(1, h // f)))  # decode at 1/2, 1/4 or 1/8 scale
                    f2 = math.ceil(max(im.size) / max_side)
                    if f2 > 1:
                        im = im.reduce(f2)
                    img = np.asarray(im.convert("RGB"))
        except MagicInfiniteError:
            raise
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise MagicInfiniteError(f"cannot read the portrait {portrait}: {exc}") from None
        src = (w, h)
    else:
        if hasattr(portrait, "convert") and hasattr(portrait, "size"):  # a PIL image
            portrait = np.asarray(portrait.convert("RGB"))
        shape = tuple(getattr(portrait, "shape", ()))
        img = bounded_image(portrait, max_side)
        src = (shape[-2], shape[-3]) if len(shape) == 4 else (shape[1], shape[0]) if len(shape) >= 2 else img.shape[1::-1]
    if src[0] * src[1] > (Image.MAX_IMAGE_PIXELS or float("inf")):
        warnings.warn(
            f"the portrait is {src[0]}x{src[1]} ({src[0] * src[1] / 1e6:.0f} MP, above PIL's decompression-bomb "
            f"limit of {Image.MAX_IMAGE_PIXELS / 1e6:.0f} MP); it was reduced to {img.shape[1]}x{img.shape[0]} "
            "on reading. Downscale such images before loading them to save memory and time",
            PortraitWarning, stacklevel=2,
        )
    return img


def crop_region(ih: int, iw: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(y0, x0, crop_h, crop_w): the centred crop of an ih x iw image with the model's aspect ratio."""
    scale = max(height / ih, width / iw)
    ch, cw = min(ih, math.ceil(height / scale)), min(iw, math.ceil(width / scale))
    return (ih - ch) // 2, (iw - cw) // 2, ch, cw


def load_portrait(portrait: Any, height: int, width: int) -> tuple[torch.Tensor, np.ndarray]:
    """Any image (path, PIL, array, ComfyUI IMAGE) -> ([1, 3, H, W] in [-1, 1], uint8 [H, W, 3]).

    Read with bounded memory (:func:`read_portrait`), centre-cropped to the model's aspect ratio,
    then resized (Lanczos).
    """
    from PIL import Image

    img = read_portrait(portrait)
    y0, x0, ch, cw = crop_region(*img.shape[:2], height, width)
    im = Image.fromarray(img[y0 : y0 + ch, x0 : x0 + cw]).resize((width, height), Image.LANCZOS)
    arr = np.asarray(im, dtype=np.uint8)
    t = torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    return t, arr


def pixel_speaker_masks(
    image: np.ndarray,
    num_speakers: int,
    speakers: Any = None,
    *,
    portrait: np.ndarray | None = None,
    fallback: str | None = None,
    notes: list[str] | None = None,
) -> np.ndarray:
    """[K, H, W] speaker masks at the model's size (``image``, uint8): given masks/boxes, else detected faces.

    Faces are detected on ``portrait`` (the full-resolution picture ``image`` was cropped from, up to
    ``masks.DETECT_MAX_SIDE`` px) and the regions mapped into the model's crop: a 64x64 crop is too
    small to find faces in. No face: ``fallback="center"`` (the user's choice) uses centred regions and
    says so in ``notes``; otherwise a MaskError says what to do. No fallback happens unasked.
    """
    h, w = image.shape[:2]
    if speakers is not None:
        if isinstance(speakers, (list, tuple)) and speakers and isinstance(speakers[0], (str, Path)):
            from PIL import Image

            arrs = []
            for p in speakers:
                try:
                    with Image.open(p) as im:
                        arrs.append(np.asarray(im.convert("L").resize((w, h), Image.NEAREST), dtype=np.float32) / 255)
                except (OSError, ValueError) as exc:
                    raise MaskError(f"cannot read the speaker mask {p}: {exc}") from None
            speakers = np.stack(arrs)
        arr = np.asarray(speakers, dtype=np.float32)
        if arr.ndim == 2 and arr.shape[-1] == 4:  # boxes
            return speaker_masks(image, num_speakers, boxes=arr.tolist())
        if arr.ndim == 2:
            arr = arr[None]
        if arr.shape[-2:] != (h, w):
            arr = F.interpolate(torch.from_numpy(arr)[None], size=(h, w), mode="nearest")[0].numpy()
        return speaker_masks(image, num_speakers, masks=arr)
    src = image
    if portrait is not None:
        y0, x0, ch, cw = crop_region(*portrait.shape[:2], h, w)
        src = bounded_image(portrait[y0 : y0 + ch, x0 : x0 + cw], DETECT_MAX_SIDE)
    try:
        full = speaker_masks(src, num_speakers, fallback=fallback, report=notes)
    except MaskError as exc:
        if "mediapipe" not in str(exc) or fallback != "center":
            raise
        note = f"{exc}; using {num_speakers} centred region(s), the fallback you chose"
        if notes is not None:
            notes.append(note)
        warnings.warn(note, stacklevel=2)
        return speaker_masks(image, num_speakers, boxes=[[w * (i + 0.25) / num_speakers, 0.15 * h,
                                                          w * (i + 0.75) / num_speakers, 0.75 * h]
                                                         for i in range(num_speakers)])
    if full.shape[1:] == (h, w):
        return full
    cover = F.interpolate(torch.from_numpy(full)[None], size=(h, w), mode="area")[0].numpy()
    out = (cover >= 0.5).astype(np.float32)
    for k in range(out.shape[0]):  # a region smaller than half a model pixel keeps its best-covered pixel
        if not out[k].any():
            out[k].flat[int(cover[k].argmax())] = 1.0
    return resolve_overlaps(out)


def audio_for_latents(features: torch.Tensor, start: int, end: int, fpl: int = 4, window: int = 5) -> torch.Tensor:
    """[K, F, D] -> [K, end-start, fpl, window, D]: the latent frames [start, end) of
    models.audio_layers.group_audio_by_latent_frame, without grouping the whole track."""
    n = features.shape[-2]
    k = torch.arange(start, end)[:, None]
    j = torch.arange(fpl)[None, :]
    centre = torch.where(k == 0, torch.zeros_like(j), (k - 1) * fpl + 1 + j)
    idx = (centre[..., None] + torch.arange(window) - window // 2).clamp(0, n - 1)
    return features[:, idx.reshape(-1)].reshape(features.shape[0], end - start, fpl, window, -1)


# ----------------------------------------------------------------------------------- the predictor


@dataclass
class Conditions:
    """Run-constant conditions on the compute device (per-window parts are cut in WindowPredictor)."""

    txt: torch.Tensor  # [2, L, text_dim]: row 0 prompt (+ image tokens), row 1 null
    txt_mask: torch.Tensor  # [2, L]
    pooled: torch.Tensor  # [2, pooled_dim]
    image_tokens: torch.Tensor | None  # [1, Li, image_token_dim] when the DiT projects them itself
    image_latent: torch.Tensor  # [1, C, 1, h, w]
    features: torch.Tensor | None  # [K, F, D] per video frame (CPU, float16 ok), or None with audio_windows
    token_mask: torch.Tensor  # [K, h_tok, w_tok] static speaker masks in token space, or [K, T, h, w]
    # Audio already grouped per latent frame [K, T, fpl, window, D] for the whole video (training caches
    # store it this way); used instead of `features` when given.
    audio_windows: torch.Tensor | None = None


class WindowPredictor:
    """predict(x_window, sigma, window) for the sampler: builds each window's conditions and runs all
    CFG passes in one batched DiT forward."""

    def __init__(self, dit: MagicInfiniteDiT, cond: Conditions, cfg: CFGConfig, dtype: torch.dtype = torch.float32,
                 forward: Any = None):
        self.dit, self.cond, self.cfg, self.dtype = dit, cond, cfg, dtype
        self.forward = forward or dit
        a = dit.cfg.audio
        self.fpl, self.win = (a.frames_per_latent, a.frame_window) if a is not None else (4, 5)
        self.scales = (torch.tensor([float(cfg.audio_scale)]), torch.tensor([float(cfg.text_scale)]))

    def __call__(self, x: torch.Tensor, sigma: float, win: Window) -> torch.Tensor:
        return guided_velocity(lambda xr, passes: self._forward(xr, passes, sigma, win), x, sigma, self.cfg, self.scales)

    def _forward(self, x_rep: torch.Tensor, passes: tuple[str, ...], sigma: float, win: Window) -> torch.Tensor:
        c, dev, dt = self.cond, x_rep.device, self.dtype
        n = len(passes)
        xs = x_rep.chunk(n)
        every = self.dit.cfg.every_frame_reference
        x_in = torch.cat(
            [concat_image_condition(xi, c.image_latent if ((every or win.is_first) and p != UNCOND) else None,
                                    every_frame=every, first=win.is_first)
             for xi, p in zip(xs, passes, strict=True)]
        )
        rows = torch.tensor([1 if p == UNCOND else 0 for p in passes], device=dev)
        kwargs: dict[str, Any] = {
            "txt": c.txt[rows].to(dt),
            "txt_mask": c.txt_mask[rows],
            "pooled": c.pooled[rows].to(dt),
        }
        if c.image_tokens is not None and self.dit.cfg.image_token_dim:  # a model without them ignores them
            kwargs["image_tokens"] = c.image_tokens.expand(n, -1, -1).to(dt)
            kwargs["image_tokens_mask"] = (rows == 0)[:, None].expand(n, c.image_tokens.shape[1])
        if self.dit.cfg.audio is not None and (c.audio_windows is not None or c.features is not None):
            if c.audio_windows is not None:
                aud = c.audio_windows[:, win.start : win.end].to(dev, dt)
            else:
                aud = audio_for_latents(c.features, win.start, win.end, self.fpl, self.win).to(dev, dt)
            on = torch.tensor([1.0 if p == FULL else 0.0 for p in passes], device=dev, dtype=dt)
            tm = c.token_mask.to(dev, dt)
            tm = tm[:, win.start : win.end] if tm.ndim == 4 else tm[:, None].expand(-1, win.length, -1, -1)
            mask = tm[None].expand(n, -1, -1, -1, -1)
            kwargs["audio"] = aud[None].expand(n, *aud.shape)
            kwargs["speaker_mask"] = mask * on.view(n, 1, 1, 1, 1)
        t = timestep_from_sigma(sigma).to(dev).expand(n)
        return self.forward(x_in.to(dt), t, **kwargs).float()


def build_conditions(
    bundle: ModelBundle, portrait: torch.Tensor, prompt: str, features: torch.Tensor, pixel_masks: np.ndarray,
    device: torch.device, negative_prompt: str = "",
) -> Conditions:
    dit_cfg = bundle.dit.cfg
    with torch.no_grad():
        pos, neg = bundle.text_encoder(prompt), bundle.text_encoder(negative_prompt)
        n = max(pos.tokens.shape[1], neg.tokens.shape[1])  # encoders may pad each prompt to its own length
        txt = torch.cat([F.pad(e.tokens, (0, 0, 0, n - e.tokens.shape[1])) for e in (pos, neg)]).to(device)
        txt_mask = torch.cat([F.pad(e.mask.bool(), (0, n - e.mask.shape[1])) for e in (pos, neg)]).to(device)
        pooled = torch.cat([pos.pooled, neg.pooled]).to(device)
        image_latent = bundle.vae.encode(portrait.to(device)[:, :, None])
        image_tokens = None
        if bundle.image_encoder is not None:
            if isinstance(bundle.image_encoder, LatentPatchTokens):
                tok = bundle.image_encoder.from_latent(image_latent)
            else:
                tok = bundle.image_encoder(portrait.to(device))
            if dit_cfg.image_token_dim:
                image_tokens = tok
            else:  # the encoder already speaks text_dim: prepend to the prompt row, masked in the null row
                txt = torch.cat([torch.cat([tok, torch.zeros_like(tok)]), txt], dim=1)
                txt_mask = torch.cat([torch.tensor([[True], [False]], device=device).expand(2, tok.shape[1]), txt_mask], 1)
    h, w = image_latent.shape[-2:]
    grid = bundle.dit.token_grid((1, h, w))[1:]
    tmask = token_masks(pixel_masks, 1, grid)[:, 0]
    return Conditions(txt, txt_mask, pooled, image_tokens, image_latent, features, tmask)


# --------------------------------------------------------------------------------------- generate


@dataclass
class GenerateReport:
    path: str
    frames: int
    seconds: float
    fps: int
    width: int
    height: int
    latent_shape: list[int]
    steps: int
    mode: str
    windows_per_step: list[int]
    seed: int
    wall_s: float
    sample_s: float
    decode_s: float
    resumed_from_step: int | None
    peak_rss_mb: float
    peak_device_mb: float | None
    notes: list[str] = field(default_factory=list)  # fallbacks and input changes the user should know about

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB.

    Linux: ``VmHWM`` of /proc/self/status, the peak of this program's own memory. ``ru_maxrss`` keeps
    the peak of the process image before ``exec`` (a forked copy of a large launcher, e.g. a test
    runner), so it can report the parent's size; it is the fallback elsewhere (Linux reports KiB).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _audio_list(audio: Any) -> list:
    if isinstance(audio, (list, tuple)) and not (len(audio) == 2 and isinstance(audio[1], int)):
        return list(audio)
    return [audio]


def generate(
    portrait: Any,
    audio: Any,
    prompt: str,
    *,
    model: ModelBundle | str | Path,
    out: str | Path,
    steps: int | None = None,
    cfg: CFGConfig | None = None,
    window: int = 33,
    overlap: int = 8,
    shift: float | None = None,
    shift_windows: bool = True,
    distilled: bool = False,
    distilled_timesteps: Sequence[float] | None = None,
    speakers: Any = None,
    seed: int = 0,
    negative_prompt: str = "",
    device: str | torch.device | None = None,
    state_dir: str | Path | None = None,
    resume: bool = False,
    keep_state: bool = False,
    latent_file: str | Path | None = None,
    decode_chunk: int = 8,
    decode_context: int = 2,
    callback: ProgressCallback | None = None,
    face_fallback: str | None = None,
) -> tuple[Path, GenerateReport]:
    """Make a talking video; returns (mp4 path, report).

    audio: a file / ComfyUI AUDIO / (array, rate), or a list of them (one per speaker, same order
    as `speakers`). speakers: None (detect faces), [K, H, W] masks, mask image paths, or K pixel
    boxes (x0, y0, x1, y1). distilled: the few-step generator, no CFG (a bundle folder given as `model`
    then loads its distilled DiT). steps / shift / cfg / distilled_timesteps left None take the model's
    own recommended settings (bundle.json), else the library defaults. face_fallback: "center" to use
    centred regions when no face is detected (reported in the report's notes); None raises instead.
    state_dir / resume: save the
    sampler state after every step / continue from it (bit-identical result).
    """
    t_start = time.perf_counter()
    check_output_path(out)  # before any work: a bad path must not cost a whole run
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    bundle = load_bundle(model, device, distilled) if isinstance(model, (str, Path)) else model.to(device)
    steps, shift, cfg, distilled_timesteps = bundle.resolve_sampling(distilled, steps, shift, cfg, distilled_timesteps)
    window_sizes(window, overlap)  # fail early on a bad window/overlap, before any heavy work
    tracks: list[LoadedAudio] = load_speaker_tracks(_audio_list(audio))
    num_frames = max(t.num_frames for t in tracks)
    features = extract_speaker_features(tracks, bundle.audio_extractor, num_frames)  # [K, F, D]
    sampled = sample_latent(
        bundle, portrait, features, num_frames, prompt, speakers=speakers, negative_prompt=negative_prompt,
        cfg=cfg, distilled=distilled, steps=steps, window=window, overlap=overlap, shift=shift,
        shift_windows=shift_windows, distilled_timesteps=distilled_timesteps, seed=seed, device=device,
        state_dir=state_dir, resume=resume, latent_file=latent_file, callback=callback, face_fallback=face_fallback,
    )
    latent, shape, scfg, t_lat = sampled.latent, sampled.shape, sampled.config, sampled.shape[1]

    t1 = time.perf_counter()
    out = decode_to_mp4(latent, bundle.vae, num_frames, out, _output_audio(audio, tracks), chunk=decode_chunk,
                        context=decode_context, device=device, callback=callback)
    decode_s = time.perf_counter() - t1
    if state_dir is not None and not keep_state:
        clear_state(state_dir)
    n_steps = len(distilled_timesteps) if distilled else steps
    plans = [len(p) for p in step_plans(t_lat, scfg, n_steps)]
    report = GenerateReport(
        path=str(out), frames=num_frames, seconds=num_frames / VIDEO_FPS, fps=VIDEO_FPS,
        width=bundle.width, height=bundle.height, latent_shape=list(shape),
        steps=n_steps, mode="distilled" if distilled else "base",
        windows_per_step=plans, seed=seed, wall_s=time.perf_counter() - t_start, sample_s=sampled.seconds,
        decode_s=decode_s, resumed_from_step=sampled.resumed_from_step, peak_rss_mb=peak_rss_mb(),
        peak_device_mb=torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        notes=sampled.notes,
    )
    return out, report


def check_output_path(out: str | Path) -> Path:
    """The mp4 path ``out`` if a video can be written there; else a MagicInfiniteError, creating nothing.

    Why: the path used to be tried only after sampling and decoding (an ``IsADirectoryError``
    traceback after the whole run, with ``<out>.partial`` left behind).
    """
    import os

    p = Path(out)
    if str(out).endswith(("/", os.sep)) or p.is_dir():
        raise MagicInfiniteError(f"the output path {out} is a folder; give the path of the .mp4 file to write, e.g. {p / 'talk.mp4'}")
    if p.exists() and not os.access(p, os.W_OK):
        raise MagicInfiniteError(f"the output path {out} exists and is not writable")
    parent = p.parent if str(p.parent) else Path(".")
    existing = parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise MagicInfiniteError(f"the output path {out}: {existing} is a file, not a folder")
    import tempfile

    try:  # os.access says yes to root even on read-only or virtual file systems: really try
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise MagicInfiniteError(f"the output path {out}: cannot write into {existing} ({exc.strerror})") from None
    return p


@dataclass
class SampledLatent:
    latent: torch.Tensor  # [C, T, h, w] on the CPU
    shape: tuple[int, int, int, int]
    config: SamplerConfig
    num_frames: int
    resumed_from_step: int | None
    seconds: float
    notes: list[str] = field(default_factory=list)  # what the user should know (fallbacks, downscaling)


def check_sampling(steps: int, shift: float, cfg: CFGConfig, timesteps: Sequence[float], seed: int) -> None:
    """Refuse sampling settings that cannot give a video: NaN/inf or out-of-range numbers.

    Why: NaN passes every ``<``/``>`` check and used to come out as an all-black video reported as
    a success; this is the library's own line of defence under the CLI's and the nodes' checks.
    """
    errs = [
        None if int(steps) >= 1 else f"steps must be at least 1, got {steps}",
        finite_error("shift", shift, 1e-6),
        finite_error("audio guidance scale", cfg.audio_scale),
        finite_error("text guidance scale", cfg.text_scale),
        finite_error("CFG boundary", cfg.boundary),
        *[finite_error("distilled timestep", t, 0.0, 1000.0) for t in timesteps],
        None if 0 <= int(seed) < 2**64 else f"seed must be in 0..2**64-1, got {seed}",
    ]
    for e in errs:
        if e:
            raise MagicInfiniteError(e)


def sample_latent(
    bundle: ModelBundle,
    portrait: Any,
    features: torch.Tensor,
    num_frames: int,
    prompt: str,
    *,
    speakers: Any = None,
    negative_prompt: str = "",
    cfg: CFGConfig | None = None,
    distilled: bool = False,
    steps: int | None = None,
    window: int = 33,
    overlap: int = 8,
    shift: float | None = None,
    shift_windows: bool = True,
    distilled_timesteps: Sequence[float] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    state_dir: str | Path | None = None,
    resume: bool = False,
    latent_file: str | Path | None = None,
    callback: ProgressCallback | None = None,
    forward: Any = None,
    face_fallback: str | None = None,
    sampler_fn: Any = None,
) -> SampledLatent:
    """Portrait + per-speaker features [K, F, D] + prompt -> the sampled latent of the whole video.

    The part of generate() that the ComfyUI sampler node runs on its own. `forward` replaces the DiT
    call (e.g. a USP worker group with the DiT's signature). The resume hash covers the model, the
    portrait, the features, the masks, the prompts and the guidance. Unset (None) sampling options
    come from `bundle.resolve_sampling`. Without `speakers`, faces are detected on the full-resolution
    portrait; `face_fallback="center"` (only when asked) uses centred regions when none is found, and
    the returned `notes` say so. `sampler_fn` replaces `sampler.sample` (same signature), e.g. the
    streaming runner of `streaming.py`, which decodes and muxes as frames become final.
    """
    device = torch.device(device)
    steps, shift, cfg, distilled_timesteps = bundle.resolve_sampling(distilled, steps, shift, cfg, distilled_timesteps)
    check_sampling(steps, shift, cfg, distilled_timesteps, seed)
    prompt = prompt or ""
    window_sizes(window, overlap)  # fail early on a bad window/overlap, before any heavy work
    if bundle.dit.cfg.audio is not None and features.shape[-1] != bundle.dit.cfg.audio.feature_dim:
        raise MagicInfiniteError(
            f"the audio features have {features.shape[-1]} dims but the model expects "
            f"{bundle.dit.cfg.audio.feature_dim}; use the model's own audio encoder"
        )
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PortraitWarning)
        full = read_portrait(portrait)
    for w in caught:
        notes.append(str(w.message))
        warnings.warn(w.message, stacklevel=2)
    img, img_u8 = load_portrait(full, bundle.height, bundle.width)
    masks = pixel_speaker_masks(img_u8, features.shape[0], speakers, portrait=full, fallback=face_fallback,
                                notes=notes)
    cond = build_conditions(bundle, img, prompt, features, masks, device, negative_prompt)
    h_lat, w_lat = cond.image_latent.shape[-2:]
    shape = (bundle.dit.cfg.out_channels, latent_frames(num_frames), h_lat, w_lat)
    scfg = SamplerConfig(steps=steps, shift=shift, window_frames=window, overlap_frames=overlap,
                         shift_windows=shift_windows, distilled_timesteps=tuple(float(t) for t in distilled_timesteps))
    extra = {
        "model": bundle.fingerprint(),
        "portrait": hashlib.sha256(img_u8.tobytes()).hexdigest(),
        "features": hashlib.sha256(features.contiguous().numpy().tobytes()).hexdigest(),
        "masks": hashlib.sha256(np.ascontiguousarray(masks).tobytes()).hexdigest(),
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "cfg": asdict(cfg),
    }
    resumed_from = load_state(state_dir).step if resume and has_state(state_dir) else None
    predictor = WindowPredictor(bundle.dit, cond, cfg, dtype=next(bundle.dit.parameters()).dtype, forward=forward)
    t0 = time.perf_counter()
    latent = (sampler_fn or sample)(predictor, shape, config=scfg, distilled=distilled, seed=seed, device=device,
                                    state_dir=state_dir, resume=resume, extra_hash=extra, latent_file=latent_file,
                                    callback=callback)
    return SampledLatent(latent, shape, scfg, num_frames, resumed_from, time.perf_counter() - t0, notes)


def decode_to_mp4(
    latent: torch.Tensor,
    vae: Any,
    num_frames: int,
    out: str | Path,
    audio: Any = None,
    *,
    chunk: int = 8,
    context: int = 2,
    device: torch.device | str = "cpu",
    callback: ProgressCallback | None = None,
) -> Path:
    """Stream-decode a [C, T, h, w] latent into an mp4 of exactly `num_frames` frames with the audio."""
    from .video_io import VideoWriter  # here, not at the top: PyAV is only needed to write files

    decode = decode_fn(vae)
    s = vae.spatial_ratio if hasattr(vae, "spatial_ratio") else vae.config.spatial_compression_ratio
    height, width = latent.shape[-2] * s, latent.shape[-1] * s
    with VideoWriter(out, width, height, fps=VIDEO_FPS, audio=audio) as writer:
        for frames in streamed_decode(latent, decode, num_frames=num_frames, chunk=chunk, context=context,
                                      device=device, callback=callback):
            writer.write(frames)
    return Path(out)


def _output_audio(audio: Any, tracks: list[LoadedAudio]):
    """The track muxed into the mp4: the original file for one speaker (its own rate and quality),
    otherwise the speakers' 16 kHz tracks mixed."""
    items = _audio_list(audio)
    if len(items) == 1 and isinstance(items[0], (str, Path)):
        return items[0]
    mix = np.sum([t.waveform for t in tracks], axis=0)
    peak = float(np.abs(mix).max()) if mix.size else 0.0
    if peak > 1:
        mix = mix / peak
    return (mix.astype(np.float32)[None], tracks[0].sample_rate)
