"""One door to the video autoencoders: build, load, save and decode either kind the same way.

Two kinds share one interface (encode / decode / latent_shape / spatial_ratio / temporal_ratio):
`vae.VideoVAE` (diffusers' causal 3D VAE: the HunyuanVideo VAE and the first demo) and
`patch_autoencoder.PatchAutoencoder` (the linear causal patch code of the demo model v2). The
pipeline, the nodes, the streamed decoder and the trainers call these functions and never branch on
the kind themselves. A config dict with ``"kind": "linear_patch"`` is a patch autoencoder; any other
is a `VAEConfig`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from magicinfinite_core.config import VAEConfig
from magicinfinite_core.errors import CheckpointError
from magicinfinite_core.media.patch_autoencoder import (
    PatchAutoencoder,
    PatchAutoencoderConfig,
    is_patch_autoencoder_config,
)
from magicinfinite_core.media.streamed_decode import DecodeFn, diffusers_decode_fn
from magicinfinite_core.media.vae import VideoVAE
from magicinfinite_core.weights.checkpoints import load_state_dict, read_metadata, save_state_dict

Autoencoder = VideoVAE | PatchAutoencoder
FILE_KIND = "magicinfinite-vae"


def autoencoder_from_config(d: dict[str, Any]) -> Autoencoder:
    if is_patch_autoencoder_config(d):
        return PatchAutoencoder(PatchAutoencoderConfig.from_dict(d))
    return VideoVAE(VAEConfig.from_dict(d))


def autoencoder_config(ae: Autoencoder) -> dict[str, Any]:
    return ae.cfg.to_dict()


def autoencoder_state_dict(ae: Autoencoder) -> dict[str, torch.Tensor]:
    return ae.model.state_dict() if isinstance(ae, VideoVAE) else ae.state_dict()


def load_autoencoder_state(ae: Autoencoder, state: dict[str, torch.Tensor], source: str | Path = "") -> Autoencoder:
    """Load weights, naming missing / unexpected / misshapen keys (never a bare torch error)."""
    target = ae.model if isinstance(ae, VideoVAE) else ae
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
    """Weights + config in the safetensors metadata. A patch autoencoder's bases stay float32 (100 kB)."""
    if isinstance(ae, PatchAutoencoder):
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


def decode_fn(ae: Autoencoder) -> DecodeFn:
    """[1, C, t, h, w] latents -> [1, 3, 1 + 4(t-1), H, W] frames, for `streamed_decode`."""
    if isinstance(ae, PatchAutoencoder):

        def fn(z: torch.Tensor) -> torch.Tensor:
            return ae.decode(z.to(ae.mean.device))

        return fn
    return diffusers_decode_fn(ae)
