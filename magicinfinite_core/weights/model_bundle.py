"""The loaded model as one object (`ModelBundle`) and the sampler settings it recommends.

Why its own module: the bundle-folder format (bundle.py) and one-file models (avatar_bundle.py) both
build a ModelBundle; keeping the class apart lets each import it without importing the other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from magicinfinite_core.config import (
    AVATAR_SAMPLER,
    DEFAULT_AUDIO_SCALE,
    DEFAULT_CFG_BOUNDARY,
    DEFAULT_OVERLAP,
    DEFAULT_SHIFT,
    DEFAULT_STEPS,
    DEFAULT_TEXT_SCALE,
    DEFAULT_WINDOW,
    DISTILLED_TIMESTEPS,
    DiTConfig,
)
from magicinfinite_core.models.dit import MagicInfiniteDiT
from magicinfinite_core.sampling.guidance import CFGConfig

if TYPE_CHECKING:
    from magicinfinite_core.inputs.audio_features import AudioFeatureExtractor
    from magicinfinite_core.media.vae import VideoVAE


@dataclass
class ModelBundle:
    """Everything generate() needs. `text_encoder(prompt) -> TextEmbedding`; `image_encoder(img) ->
    [1, Li, dim]` (dim = image_token_dim, or text_dim when the DiT has no image projection)."""

    dit: MagicInfiniteDiT
    vae: VideoVAE
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
        trained / distilled for (bundle.json), else the library defaults (config.py)."""
        d = self.sampler_defaults
        info = self.distilled or {}
        timesteps = tuple(float(t) for t in (distilled_timesteps or info.get("timesteps") or DISTILLED_TIMESTEPS))
        if distilled:
            shift = float(shift if shift is not None else info.get("shift", d.get("shift", DEFAULT_SHIFT)))
            return len(timesteps), shift, CFGConfig.off(), timesteps
        steps = int(steps if steps is not None else d.get("steps", DEFAULT_STEPS))
        shift = float(shift if shift is not None else d.get("shift", DEFAULT_SHIFT))
        return steps, shift, cfg if cfg is not None else recommended_guidance(d), timesteps

    def resolve_windows(self, window: int | None = None, overlap: int | None = None) -> tuple[int, int]:
        """(window, overlap) in video frames: the caller's, else the model's (bundle.json "sampler"), else 33 / 8."""
        d = self.sampler_defaults
        return (int(window if window is not None else d.get("window_frames", DEFAULT_WINDOW)),
                int(overlap if overlap is not None else d.get("overlap_frames", DEFAULT_OVERLAP)))

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


def recommended_guidance(
    defaults: dict[str, Any], audio_scale: float | None = None, text_scale: float | None = None,
) -> CFGConfig:
    """CFG scales: the caller's where given, else the model's (bundle.json "sampler"), else the library's.

    A model whose "sampler" says "guidance": "avatar" (HunyuanVideo-Avatar) gets its decaying schedule
    (`CFGConfig.avatar`) unless the caller gives scales, which select our multi-condition guidance.
    """
    if defaults.get("guidance") == "avatar" and audio_scale is None and text_scale is None:
        return CFGConfig.avatar()
    return CFGConfig(
        audio_scale=float(audio_scale if audio_scale is not None else defaults.get("audio_scale", DEFAULT_AUDIO_SCALE)),
        text_scale=float(text_scale if text_scale is not None else defaults.get("text_scale", DEFAULT_TEXT_SCALE)),
        boundary=float(defaults.get("boundary", DEFAULT_CFG_BOUNDARY)),
    )


def model_sampler_defaults(dit_cfg: DiTConfig, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """A model's recommended sampler settings: bundle.json's "sampler" over the architecture's own
    (HunyuanVideo-Avatar's `AVATAR_SAMPLER` for a DiT with the avatar option)."""
    base = dict(AVATAR_SAMPLER) if dit_cfg.avatar is not None else {}
    return {**base, **dict(spec or {})}
