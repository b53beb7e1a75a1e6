"""Audio-side nodes."""

from __future__ import annotations

from typing import Any

from comfy_api.latest import io, ui

from magicinfinite_core.audio import num_video_frames_for_samples
from magicinfinite_core.config import VIDEO_FPS

from .common import CATEGORY, audio_num_samples


class MagicInfiniteAudioFrameCount(io.ComfyNode):
    """How many 25 fps video frames a voice track will produce (output length = audio length)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicInfiniteAudioFrameCount",
            display_name="MagicInfinite Audio Frame Count",
            category=CATEGORY,
            description="Video length for an audio track: frames at 25 fps = round(duration * 25), halves up.",
            inputs=[
                io.Audio.Input("audio", tooltip="The voice track (ComfyUI AUDIO)."),
            ],
            outputs=[
                io.Int.Output("frames", display_name="frames", tooltip="Video frames at 25 fps."),
                io.Float.Output("duration", display_name="duration_s", tooltip="Audio duration in seconds."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, audio: dict[str, Any]) -> io.NodeOutput:
        num_samples, sample_rate = audio_num_samples(audio)
        duration = num_samples / sample_rate
        # Exact integer rule from the library: the same count the pipeline will generate.
        frames = num_video_frames_for_samples(num_samples, sample_rate)
        text = f"{frames} frames at {VIDEO_FPS} fps ({duration:.3f} s)"
        return io.NodeOutput(frames, duration, ui=ui.PreviewText(text))
