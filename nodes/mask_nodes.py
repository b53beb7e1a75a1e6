"""Speaker masks: which face each voice moves, from detection or masks drawn in ComfyUI."""

from __future__ import annotations

from typing import Any

from comfy_api.latest import io, ui

from .common import (
    CATEGORY,
    NodeInputError,
    caught_warnings,
    choice_error,
    interruptible,
    send_warnings,
    stop_if_interrupted,
    ui_output,
)

MAX_SPEAKERS = 4
SOURCES = ["auto", "drawn masks", "detect faces", "detect faces, else centre"]


def parse_face_order(text: str, k: int) -> list[int] | None:
    """``"1,0"`` → ``[1, 0]`` (speaker i = face text[i], faces numbered left to right); "" → None."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        order = [int(t) for t in text.replace(" ", "").split(",") if t != ""]
    except ValueError:
        raise NodeInputError(f"face_order {text!r}: give face numbers separated by commas, e.g. '1,0'") from None
    if len(order) != k or min(order) < 0:
        raise NodeInputError(f"face_order {text!r}: give {k} face number(s) (0 = leftmost face), one per speaker")
    return order


class MagicInfiniteSpeakerMasks(io.ComfyNode):
    """Face region per speaker (MASK [K, H, W]) plus an overlay that shows who speaks where."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicInfiniteSpeakerMasks",
            display_name="MagicInfinite Speaker Masks",
            category=CATEGORY,
            description="One mask per speaker on the portrait: drawn masks (mask editor / Painter; mask_1 = "
            "speaker 1) or detected faces numbered left to right. The overlay shows each speaker's region "
            "and number; check it before sampling.",
            inputs=[
                io.Image.Input("image", tooltip="The portrait (first image of the batch is used)."),
                io.Int.Input("num_speakers", default=1, min=1, max=MAX_SPEAKERS,
                             tooltip="Must equal the number of audio tracks."),
                io.Combo.Input("source", options=SOURCES, default="auto",
                               tooltip="auto: drawn masks when connected, else detected faces (error when none). "
                               "'detect faces, else centre': centred regions when no face is found."),
                io.String.Input("face_order", default="",
                                tooltip="Optional, e.g. '1,0': speaker 1 = face 1, speaker 2 = face 0 "
                                "(faces numbered left to right from 0)."),
                *[io.Mask.Input(f"mask_{i}", optional=True, tooltip=f"Speaker {i}'s region (white = face).")
                  for i in range(1, MAX_SPEAKERS + 1)],
            ],
            outputs=[
                io.Mask.Output("masks", display_name="speaker_masks",
                               tooltip="[speakers, H, W], one per speaker (portraits over 2048 px: at the reduced size)."),
                io.Image.Output("overlay", display_name="overlay", tooltip="Portrait with numbered speaker regions."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, face_order: str = "", num_speakers: int = 1, source: str | None = None) -> bool | str:
        """``source`` among SOURCES (ComfyUI 0.3.75 does not check V3 combo values), then face_order
        against num_speakers (ComfyUI labels the message on every input this takes)."""
        err = choice_error("source", source, SOURCES)
        if err:
            return err
        if not 1 <= int(num_speakers) <= MAX_SPEAKERS:
            return f"num_speakers must be 1..{MAX_SPEAKERS}, got {num_speakers}"
        try:
            parse_face_order(face_order, int(num_speakers))
        except NodeInputError as e:
            return str(e)
        return True

    @classmethod
    @interruptible
    def execute(
        cls,
        image: Any,
        num_speakers: int,
        source: str,
        face_order: str = "",
        mask_1: Any = None,
        mask_2: Any = None,
        mask_3: Any = None,
        mask_4: Any = None,
    ) -> io.NodeOutput:
        import warnings

        import torch
        import torch.nn.functional as F

        from magicinfinite_core.inputs.masks import draw_speaker_overlay, speaker_masks
        from magicinfinite_core.inputs.portrait import read_portrait

        k = int(num_speakers)
        stop_if_interrupted()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            img = read_portrait(image[:1])  # huge portraits are pooled down first: memory stays bounded
        notes = caught_warnings(caught)
        stop_if_interrupted()  # before face detection
        drawn = [m for m in (mask_1, mask_2, mask_3, mask_4) if m is not None]
        use_drawn = source == "drawn masks" or (source == "auto" and drawn)
        if use_drawn:
            if len(drawn) != k:
                raise NodeInputError(
                    f"{len(drawn)} mask input(s) connected for {k} speaker(s); connect mask_1..mask_{k}"
                )
            stack = []
            for m in drawn:
                m = (m[0] if m.ndim == 3 else m).float().cpu()
                if tuple(m.shape) != img.shape[:2]:  # the portrait was reduced: reduce its masks alike
                    m = F.interpolate(m[None, None], size=img.shape[:2], mode="area")[0, 0]
                stack.append(m.numpy())
            masks = speaker_masks(img, k, masks=stack)
        else:
            fallback = "center" if source == "detect faces, else centre" else None
            masks = speaker_masks(img, k, face_indices=parse_face_order(face_order, k), fallback=fallback,
                                  report=notes)
        send_warnings(cls.hidden.unique_id, "Speaker Masks", notes)
        overlay = torch.from_numpy(draw_speaker_overlay(img, masks).copy()).float().div(255)[None]
        mask_t = torch.from_numpy(masks).float()
        return io.NodeOutput(mask_t, overlay, ui=ui_output(ui.PreviewImage(overlay, cls=cls), notes))
