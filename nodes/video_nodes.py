"""Decoding: streamed to an mp4 in the output folder (any length), or to an IMAGE batch (short clips)."""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

from comfy_api.latest import InputImpl, Types, io, ui

from .common import (
    CATEGORY,
    MagicLatent,
    MagicModel,
    check_floats,
    check_prefix,
    choice_error,
    interruptible,
    progress_callback,
    stop_if_interrupted,
    torch_device,
)

OUTPUT_RECORD = "output.json"  # in the sampler's resume folder: the file name this job's video gets

DEVICES = ["auto", "cpu", "cuda"]


def _clear_state(latent: dict[str, Any]) -> None:
    """The video is on disk: the sampler's resume state has served its purpose."""
    from magicinfinite_core.sampling.state import clear_state

    if latent.get("state_dir"):
        (Path(latent["state_dir"]) / OUTPUT_RECORD).unlink(missing_ok=True)
        clear_state(latent["state_dir"])


def output_file(latent: dict[str, Any], filename_prefix: str, width: int, height: int) -> tuple[str, str, str]:
    """``(folder, file, subfolder)`` of the mp4 to write; a resumed job gets the name it had before.

    Why: a job killed while decoding leaves ``<name>.partial.mp4``; ComfyUI's counter counts that
    file, so the rerun used to write ``_00002_`` next to the unreadable ``_00001_`` partial. The name
    is recorded in the job's resume folder before decoding starts; a rerun reuses it and removes the
    partial file first.
    """
    import folder_paths

    out_dir = folder_paths.get_output_directory()
    record = Path(latent["state_dir"]) / OUTPUT_RECORD if latent.get("state_dir") else None
    if record is not None and record.is_file():
        try:
            saved = json.loads(record.read_text())
            folder, file, subfolder = saved["folder"], saved["file"], saved["subfolder"]
            same = os.path.normpath(os.path.join(out_dir, subfolder)) == os.path.normpath(folder)
            if same and saved.get("prefix") == filename_prefix and "/" not in file and "\\" not in file:
                partial = Path(folder) / (Path(file).stem + ".partial" + Path(file).suffix)
                partial.unlink(missing_ok=True)
                return folder, file, subfolder
        except (OSError, ValueError, KeyError, TypeError):
            pass  # an unreadable record: pick a fresh name
    full_folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, out_dir, width, height)
    file = f"{filename}_{counter:05}_.mp4"
    if record is not None:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"folder": full_folder, "file": file, "subfolder": subfolder,
                                      "prefix": filename_prefix}))
    return full_folder, file, subfolder


class MagicInfiniteSaveVideo(io.ComfyNode):
    """Streams the decode straight into an mp4 (with the voice) in ComfyUI's output folder."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicInfiniteSaveVideo",
            display_name="MagicInfinite Save Video (streamed)",
            category=CATEGORY,
            description="Decode the latent chunk by chunk and write H.264/AAC mp4 frames as they come, so memory "
            "stays flat for any length. Returns a VIDEO pointing at the file (for Save Video, Get Video "
            "Components...).",
            inputs=[
                MagicModel.Input("model"),
                MagicLatent.Input("latent"),
                io.String.Input("filename_prefix", default="MagicInfinite/video",
                                tooltip="Relative to the output folder; may contain sub-folders."),
                io.Int.Input("decode_chunk", default=8, min=1, max=256,
                             tooltip="Latent frames per decode chunk (memory vs speed)."),
                io.Combo.Input("device", options=DEVICES, default="auto"),
            ],
            outputs=[io.Video.Output("video", display_name="video")],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, filename_prefix: str, device: str | None = None) -> bool | str:
        """``device`` among DEVICES (ComfyUI 0.3.75 does not check V3 combo values) and a prefix that stays
        inside the output folder and is a usable file name (no NUL, not thousands of characters)."""
        return choice_error("device", device, DEVICES) or check_prefix(filename_prefix) or True

    @classmethod
    @interruptible
    def execute(cls, model: Any, latent: dict[str, Any], filename_prefix: str, decode_chunk: int,
                device: str) -> io.NodeOutput:
        from magicinfinite_core.media.video_io import decode_to_mp4

        err = check_prefix(filename_prefix)
        if err:
            raise ValueError(err)
        full_folder, file, subfolder = output_file(latent, filename_prefix, model.width, model.height)
        path = os.path.join(full_folder, file)
        dev = torch_device(device)
        stop_if_interrupted()
        decode_to_mp4(latent["latent"], model.vae.to(dev), latent["num_frames"], path, latent.get("mux"),
                      chunk=int(decode_chunk), device=dev, callback=progress_callback(cls.hidden.unique_id),
                      portrait=latent.get("reference"))
        _clear_state(latent)
        video = InputImpl.VideoFromFile(path)
        result = ui.SavedResult(file, subfolder, io.FolderType.output)
        return io.NodeOutput(video, ui=ui.PreviewVideo([result]))


class MagicInfiniteDecode(io.ComfyNode):
    """Decodes a short clip into an IMAGE batch (+ AUDIO and an in-memory VIDEO)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicInfiniteDecode",
            display_name="MagicInfinite Decode (short clips)",
            category=CATEGORY,
            description="Decode to frames in memory for further processing (IMAGE [frames, H, W, 3], the voice "
            "as AUDIO, and a VIDEO for ComfyUI's Save Video). Refuses clips longer than max_seconds: use "
            "'Save Video (streamed)' for long videos.",
            inputs=[
                MagicModel.Input("model"),
                MagicLatent.Input("latent"),
                io.Float.Input("max_seconds", default=20.0, min=0.04, max=3600.0, step=1.0,
                               tooltip="Safety limit: every frame is held in RAM."),
                io.Int.Input("decode_chunk", default=8, min=1, max=256),
                io.Combo.Input("device", options=DEVICES, default="auto"),
            ],
            outputs=[
                io.Image.Output("images", display_name="images"),
                io.Audio.Output("audio", display_name="audio"),
                io.Video.Output("video", display_name="video"),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, device: str | None = None) -> bool | str:
        """``device`` among DEVICES (ComfyUI 0.3.75 does not check V3 combo values)."""
        return choice_error("device", device, DEVICES) or True

    @classmethod
    @interruptible
    def execute(cls, model: Any, latent: dict[str, Any], max_seconds: float, decode_chunk: int,
                device: str) -> io.NodeOutput:
        import torch

        from magicinfinite_core.config import VIDEO_FPS
        from magicinfinite_core.media.autoencoders import decode_fn
        from magicinfinite_core.media.streamed_decode import streamed_decode

        check_floats(max_seconds=(max_seconds, 0.04, 3600.0))  # NaN passes ComfyUI's min/max
        n = int(latent["num_frames"])
        if n > max_seconds * VIDEO_FPS:
            raise ValueError(
                f"{n / VIDEO_FPS:.1f} s of video is longer than max_seconds={max_seconds:g}; holding every frame in "
                "memory could exhaust RAM. Use 'MagicInfinite Save Video (streamed)' or raise max_seconds."
            )
        dev = torch_device(device)
        vae = model.vae.to(dev)
        chunks = [
            c.permute(1, 2, 3, 0).add(1).div(2).clamp(0, 1)  # [3, n, H, W] in [-1, 1] -> [n, H, W, 3]
            for c in streamed_decode(latent["latent"], decode_fn(vae, latent.get("reference")), num_frames=n,
                                     chunk=int(decode_chunk), device=dev,
                                     callback=progress_callback(cls.hidden.unique_id))
        ]
        images = torch.cat(chunks)
        wav, rate = latent["mux"]
        audio = {"waveform": torch.from_numpy(wav.copy())[None], "sample_rate": int(rate)}
        video = InputImpl.VideoFromComponents(
            Types.VideoComponents(images=images, audio=audio, frame_rate=Fraction(VIDEO_FPS))
        )
        _clear_state(latent)
        return io.NodeOutput(images, audio, video)
