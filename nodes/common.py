"""Shared helpers for the pack's nodes: category name and checks of ComfyUI's value types."""

from __future__ import annotations

from typing import Any

CATEGORY = "MagicInfinite"


def audio_num_samples(audio: dict[str, Any]) -> tuple[int, int]:
    """``(num_samples, sample_rate)`` of a ComfyUI AUDIO ``{"waveform": [B, C, T], "sample_rate": int}``.

    Checked here so that a malformed AUDIO from another pack fails with a message naming the problem
    instead of an IndexError deep inside the pipeline.
    """
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise ValueError("AUDIO input must be a dict with 'waveform' and 'sample_rate'")
    waveform = audio["waveform"]
    sample_rate = int(audio["sample_rate"])
    if sample_rate <= 0:
        raise ValueError(f"AUDIO sample_rate must be positive, got {sample_rate}")
    if getattr(waveform, "ndim", None) != 3:
        raise ValueError(
            f"AUDIO waveform must be [batch, channels, samples], got shape {tuple(waveform.shape)}"
        )
    return int(waveform.shape[-1]), sample_rate
