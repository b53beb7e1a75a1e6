"""One door to the video autoencoders: build, load, save and decode either kind the same way.

Three kinds share one interface (encode / decode / latent_shape / spatial_ratio / temporal_ratio):
`vae.VideoVAE` (diffusers' causal 3D VAE: the HunyuanVideo VAE and the first demo),
`patch_autoencoder.PatchAutoencoder` (the linear causal patch code of the demo models v2/v3) and
`motion_autoencoder.MotionAutoencoder` (the demo model v4: a latent that moves the portrait). The
portrait is an argument of `encode_video`, `reference_latent` and `decode_fn` for every kind (the
pixel-latent kinds ignore it), so the pipeline, the nodes, the streamed decoder and the trainers call
these functions and never branch on the kind themselves. A config dict with ``"kind":
"linear_patch"`` is a patch autoencoder, ``"kind": "motion"`` a motion autoencoder; any other is a
`VAEConfig`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import torch

from magicinfinite_core.config import VAEConfig
from magicinfinite_core.errors import CheckpointError
from magicinfinite_core.media.motion_autoencoder import (
    MotionAutoencoder,
    MotionAutoencoderConfig,
    as_reference,
    is_motion_autoencoder_config,
)
from magicinfinite_core.media.patch_autoencoder import (
    PatchAutoencoder,
    PatchAutoencoderConfig,
    is_patch_autoencoder_config,
)
from magicinfinite_core.media.streamed_decode import DecodeFn, diffusers_decode_fn
from magicinfinite_core.weights.checkpoints import load_state_dict, read_metadata, save_state_dict

if TYPE_CHECKING:  # diffusers costs ~2 s to import; the demo's patch autoencoder never needs it
    from magicinfinite_core.media.vae import VideoVAE

Autoencoder = Union["VideoVAE", PatchAutoencoder, MotionAutoencoder]  # noqa: UP007 (a string member needs Union)
_OWN_MODULES = (PatchAutoencoder, MotionAutoencoder)  # nn.Modules whose state dict is the file's
FILE_KIND = "magicinfinite-vae"


def autoencoder_from_config(d: dict[str, Any]) -> Autoencoder:
    if is_patch_autoencoder_config(d):
        return PatchAutoencoder(PatchAutoencoderConfig.from_dict(d))
    if is_motion_autoencoder_config(d):
        return MotionAutoencoder(MotionAutoencoderConfig.from_dict(d))
    from magicinfinite_core.media.vae import VideoVAE

    return VideoVAE(VAEConfig.from_dict(d))


def autoencoder_config(ae: Autoencoder) -> dict[str, Any]:
    return ae.cfg.to_dict()


def autoencoder_state_dict(ae: Autoencoder) -> dict[str, torch.Tensor]:
    return ae.state_dict() if isinstance(ae, _OWN_MODULES) else ae.model.state_dict()


def load_autoencoder_state(ae: Autoencoder, state: dict[str, torch.Tensor], source: str | Path = "") -> Autoencoder:
    """Load weights, naming missing / unexpected / misshapen keys (never a bare torch error)."""
    target = ae if isinstance(ae, _OWN_MODULES) else ae.model
    own = target.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{source or 'autoencoder weights'} do not fit the autoencoder config: "
            + "; ".join(p for p in (
                f"missing {missing[:8]}" if missing else "",
                f"unexpected {unexpected[:8]}" if unexpected else "",
                f"wrong shapes {shapes[:4]}" if shapes else "",
            ) if p)
        )
    dtype = next(iter(own.values())).dtype
    target.load_state_dict({k: v.to(dtype) for k, v in state.items()})
    return ae.eval()


def save_autoencoder(path: str | Path, ae: Autoencoder, dtype: torch.dtype | None = None) -> Path:
    """Weights + config in the safetensors metadata. Linear autoencoders' bases stay float32 (<= 100 kB)."""
    if isinstance(ae, _OWN_MODULES):
        dtype = None
    return save_state_dict(path, autoencoder_state_dict(ae), kind=FILE_KIND, config=autoencoder_config(ae), dtype=dtype)


def load_autoencoder(
    path: str | Path, device: str | torch.device = "cpu", config: dict[str, Any] | None = None,
) -> Autoencoder:
    """The one autoencoder loader: our files (config in the safetensors metadata, or given as `config`
    by a bundle.json: the demo's patch autoencoder, trained causal VAEs) or a published HunyuanVideo
    VAE in any layout (ComfyUI file, diffusers folder or names; `weights/vae_layouts.py`)."""
    p = Path(path)
    meta = read_metadata(p) if p.is_file() and config is None else {}
    if config is None and "config" not in meta:
        from magicinfinite_core.weights.vae_layouts import load_vae

        return load_vae(p, device=device)
    ae = autoencoder_from_config(config if config is not None else json.loads(meta["config"]))
    return load_autoencoder_state(ae, {k: v.float() for k, v in load_state_dict(p).items()}, p).to(device)


def moves_portrait(ae: Autoencoder) -> bool:
    """True when decoding needs the portrait (a motion latent), so callers know to keep it at hand."""
    return isinstance(ae, MotionAutoencoder)


def encode_video(ae: Autoencoder, frames: torch.Tensor, portrait: Any = None, flow: torch.Tensor | None = None,
                 expression_flow: torch.Tensor | None = None) -> torch.Tensor:
    """[B, 3, F, H, W] in [-1, 1] -> latents. `portrait` (default: frame 0) and `flow` (the exact backward
    field to it, [B, F, 2, H', W'], where known; `expression_flow`: for the expression channel alone) matter to
    motion latents only."""
    if isinstance(ae, MotionAutoencoder):
        return ae.encode(frames, portrait, flow=flow, expression_flow=expression_flow)
    return ae.encode(frames)


def reference_latent(ae: Autoencoder, portrait: Any) -> torch.Tensor:
    """The DiT's portrait condition [B, C_ref, 1, h, w]: the portrait's own latent for pixel-latent kinds,
    the portrait's appearance on the latent grid for a motion autoencoder (whose portrait latent is 0).

    `portrait` is [B, 3, H, W] in [-1, 1] (or a `MotionReference` framing a region of it)."""
    if isinstance(ae, MotionAutoencoder):
        return ae.reference_latent(portrait)
    image = portrait.region() if hasattr(portrait, "region") else portrait
    return ae.encode(image[:, :, None])


def video_size(ae: Autoencoder, latent_hw: tuple[int, int], portrait: Any = None) -> tuple[int, int]:
    """(H, W) of the decoded frames: the moved picture's own size for a motion latent, else the grid's."""
    if isinstance(ae, MotionAutoencoder):
        ref = as_reference(portrait)
        return int(ref.image.shape[-2]), int(ref.image.shape[-1])
    s = ae.spatial_ratio if hasattr(ae, "spatial_ratio") else ae.config.spatial_compression_ratio
    return int(latent_hw[0]) * s, int(latent_hw[1]) * s


def portrait_tensor(image: Any) -> torch.Tensor:
    """uint8 [H, W, 3] (numpy or torch) -> [1, 3, H, W] float in [-1, 1]; tensors in [-1, 1] pass through."""
    t = torch.as_tensor(image)
    if t.dtype == torch.uint8:
        return t.permute(2, 0, 1)[None].float() / 127.5 - 1.0
    return t if t.ndim == 4 else t[None]


def decode_video(ae: Autoencoder, latents: torch.Tensor, portrait: Any = None) -> torch.Tensor:
    """One-shot decode [B, C, T, h, w] -> [B, 3, F, H, W] (short clips: evaluation, previews)."""
    if isinstance(portrait, torch.Tensor) or hasattr(portrait, "__array__"):
        portrait = portrait_tensor(portrait)
    return decode_fn(ae, portrait)(latents)


def decode_fn(ae: Autoencoder, portrait: Any = None) -> DecodeFn:
    """[1, C, t, h, w] latents -> [1, 3, 1 + 4(t-1), H, W] frames, for `streamed_decode`.

    The function may carry what chunked decoding must give it (`streamed_decode.chunk_needs`).

    A motion autoencoder's frames have the portrait's own size; the others' the latent grid's."""
    if isinstance(ae, MotionAutoencoder):
        if portrait is None:
            raise ValueError("a motion autoencoder decodes by moving the portrait; pass the portrait to decode_fn")

        def moved(z: torch.Tensor) -> torch.Tensor:
            return ae.decode(z.to(ae.residual_basis.device), portrait)

        # what the chunked decoders must give it (streamed_decode.chunk_needs): frames depend only on
        # nearby codes, so the context's frames are exact and need no cross-fade
        moved.lookahead, moved.min_context, moved.crossfade = ae.decode_lookahead, ae.decode_min_context, False
        return moved
    if isinstance(ae, PatchAutoencoder):

        def fn(z: torch.Tensor) -> torch.Tensor:
            return ae.decode(z.to(ae.mean.device))

        return fn
    return diffusers_decode_fn(ae)
