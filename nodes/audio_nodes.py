"""Audio-side nodes."""

from __future__ import annotations

from typing import Any

from comfy_api.latest import io, ui

from magicinfinite_core.config import VIDEO_FPS
from magicinfinite_core.inputs.audio import num_video_frames_for_samples

from .common import (
    CATEGORY,
    MagicAudioFeatures,
    MagicModel,
    audio_num_samples,
    caught_warnings,
    interruptible,
    send_warnings,
    stop_if_interrupted,
    ui_output,
)


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


MAX_SPEAKERS = 4


def _mux_track(audios: list[dict[str, Any]], tracks: list[Any]) -> tuple[Any, int]:
    """The sound put into the mp4: one speaker's track as given (its own rate), else the 16 kHz mix."""
    import numpy as np

    if len(audios) == 1:
        wav = audios[0]["waveform"][0].detach().float().cpu().numpy()  # [C, T]
        if wav.shape[0] > 2:
            wav = wav.mean(axis=0, keepdims=True)
        return np.ascontiguousarray(wav, dtype=np.float32), int(audios[0]["sample_rate"])
    mix = np.sum([t.waveform for t in tracks], axis=0)
    peak = float(np.abs(mix).max()) if mix.size else 0.0
    if peak > 1:
        mix = mix / peak
    return mix.astype(np.float32)[None], int(tracks[0].sample_rate)


class MagicInfiniteAudioEncode(io.ComfyNode):
    """One voice track per speaker → audio features for the sampler and the exact video length."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicInfiniteAudioEncode",
            display_name="MagicInfinite Audio Encode",
            category=CATEGORY,
            description="Encode 1-4 voice tracks (speaker 1 = mask 1, ...) with the model's audio encoder. The video "
            "will be exactly as long as the longest track (25 fps); shorter tracks are padded with silence.",
            inputs=[
                MagicModel.Input("model"),
                io.Audio.Input("audio_1", tooltip="Speaker 1 (ComfyUI AUDIO, e.g. from Load Audio)."),
                *[io.Audio.Input(f"audio_{i}", optional=True, tooltip=f"Speaker {i} (optional).")
                  for i in range(2, MAX_SPEAKERS + 1)],
                io.Boolean.Input("normalize", default=False, tooltip="Level each voice to about -20 dBFS first."),
            ],
            outputs=[
                MagicAudioFeatures.Output("audio_features", display_name="audio_features"),
                io.Int.Output("frames", display_name="frames", tooltip="Video frames at 25 fps."),
                io.Audio.Output("audio", display_name="audio", tooltip="The track that goes into the video."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    @interruptible
    def execute(
        cls,
        model: Any,
        audio_1: dict[str, Any],
        normalize: bool = False,
        audio_2: dict[str, Any] | None = None,
        audio_3: dict[str, Any] | None = None,
        audio_4: dict[str, Any] | None = None,
    ) -> io.NodeOutput:
        import warnings

        import torch

        from magicinfinite_core.inputs.audio import load_speaker_tracks
        from magicinfinite_core.inputs.audio_features import extract_speaker_features

        audios = [a for a in (audio_1, audio_2, audio_3, audio_4) if a is not None]
        for a in audios:
            audio_num_samples(a)  # clear message for malformed AUDIO
        with warnings.catch_warnings(record=True) as caught:  # silent voice, many channels: shown in the UI
            warnings.simplefilter("always")
            tracks = load_speaker_tracks(list(audios), normalize=bool(normalize))
        notes = caught_warnings(caught)
        send_warnings(cls.hidden.unique_id, "Audio Encode", notes)
        stop_if_interrupted()  # before the feature extraction
        num_frames = max(t.num_frames for t in tracks)
        features = extract_speaker_features(tracks, model.audio_extractor, num_frames)
        want = model.dit.cfg.audio.feature_dim if model.dit.cfg.audio is not None else None
        if want is not None and features.shape[-1] != want:
            raise ValueError(
                f"the audio features have {features.shape[-1]} dims but the model expects {want}; "
                "use the model's own audio encoder"
            )
        mux = _mux_track(audios, tracks)
        out = {"features": features, "num_frames": num_frames, "num_speakers": len(tracks), "mux": mux}
        comfy_audio = {"waveform": torch.from_numpy(mux[0].copy())[None], "sample_rate": mux[1]}
        text = f"{len(tracks)} speaker(s), {num_frames} frames at {VIDEO_FPS} fps ({num_frames / VIDEO_FPS:.2f} s)"
        return io.NodeOutput(out, num_frames, comfy_audio, ui=ui_output(ui.PreviewText(text), notes))
