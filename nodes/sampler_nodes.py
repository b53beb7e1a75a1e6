"""Multi-condition CFG settings and the sliding-window sampler node."""

from __future__ import annotations

from typing import Any

from comfy_api.latest import io, ui

from magicinfinite_core.config import (
    DEFAULT_AUDIO_SCALE,
    DEFAULT_CFG_BOUNDARY,
    DEFAULT_TEXT_SCALE,
    MAX_HEAD_DEADZONE,
    MAX_OUTPUT_SIDE,
)
from magicinfinite_core.limits import (  # the bounds the CLI and bundles use
    MAX_STEPS,
    OVERLAP_RANGE,
    WINDOW_RANGE,
)
from magicinfinite_core.sampling.schedule import distilled_timesteps

from .common import (
    CATEGORY,
    MagicAudioFeatures,
    MagicCFG,
    MagicLatent,
    MagicModel,
    NodeInputError,
    caught_warnings,
    check_choices,
    check_floats,
    choice_error,
    choices_error,
    interruptible,
    progress_callback,
    send_warnings,
    state_dir_for,
    stop_if_interrupted,
    torch_device,
    ui_output,
)

CFG_MODES = ["multi-condition (two-fold, then three-fold)", "two-fold only", "off", "decaying (HunyuanVideo-Avatar)"]
SAMPLER_MODES = ["distilled", "base (CFG)"]
BACKENDS = ["single device", "multi-process (USP)"]
DEVICES = ["auto", "cpu", "cuda"]
SHIFT_RANGE = (0.1, 50.0)


class MagicInfiniteCFG(io.ComfyNode):
    """Guidance settings for the base (non-distilled) model: audio and text scales and the switch point."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicInfiniteCFG",
            display_name="MagicInfinite Multi-Condition CFG",
            category=CATEGORY,
            description="Classifier-free guidance over audio and text. Multi-condition: two-fold (everything vs "
            "nothing) while sigma >= boundary, then three-fold (audio and text guided separately). Decaying: "
            "HunyuanVideo-Avatar's own schedule (its scales and steps; the scales here are unused). The "
            "distilled 4-step model ignores CFG.",
            inputs=[
                io.Combo.Input("mode", options=CFG_MODES, default=CFG_MODES[0]),
                io.Float.Input("audio_scale", default=DEFAULT_AUDIO_SCALE, min=0.0, max=20.0, step=0.1,
                               tooltip="How strongly the lips follow the voice."),
                io.Float.Input("text_scale", default=DEFAULT_TEXT_SCALE, min=0.0, max=20.0, step=0.1,
                               tooltip="How strongly the prompt is followed (three-fold steps)."),
                io.Float.Input("boundary", default=DEFAULT_CFG_BOUNDARY, min=0.0, max=1.0, step=0.01,
                               tooltip="Noise level (sigma) below which three-fold guidance starts."),
            ],
            outputs=[MagicCFG.Output("cfg", display_name="cfg")],
        )

    @classmethod
    def validate_inputs(cls, mode: str | None = None) -> bool | str:
        """``mode`` among CFG_MODES (ComfyUI 0.3.75 does not check V3 combo values)."""
        return choice_error("mode", mode, CFG_MODES) or True

    @classmethod
    def execute(cls, mode: str, audio_scale: float, text_scale: float, boundary: float) -> io.NodeOutput:
        from magicinfinite_core.sampling.guidance import CFGConfig

        # ComfyUI's min/max checks let NaN through (every comparison is False): refuse it here
        check_floats(audio_scale=(audio_scale, 0.0, 20.0), text_scale=(text_scale, 0.0, 20.0),
                     boundary=(boundary, 0.0, 1.0))
        if mode == "off":
            return io.NodeOutput(CFGConfig.off())
        if mode == CFG_MODES[3]:
            return io.NodeOutput(CFGConfig.avatar())
        if mode == "two-fold only":
            boundary = 0.0  # every sigma >= 0 → two-fold
        return io.NodeOutput(CFGConfig(audio_scale=audio_scale, text_scale=text_scale, boundary=boundary))


def _portrait_masks(masks: Any, height: int, width: int) -> Any:
    """Pixel masks [K, H, W] of the input portrait → the model's crop and size (as load_portrait does)."""
    import numpy as np

    from magicinfinite_core.inputs.portrait import load_portrait

    out = []
    for m in masks.float().cpu().numpy():
        _, arr = load_portrait(np.repeat(m[..., None], 3, axis=-1), height, width)
        out.append((arr[..., 0] > 127).astype(np.float32))
    return np.stack(out)


def node_speakers(masks: Any, k: int, height: int, width: int) -> Any:
    """The Speaker Masks node's MASK [K, H, W] (portrait size) -> pixel masks at the model's size."""
    if masks is None:
        return None
    if masks.ndim == 2:
        masks = masks[None]
    if masks.shape[0] != k:
        raise NodeInputError(
            f"{masks.shape[0]} speaker mask(s) for {k} audio track(s); set num_speakers on the mask node to {k}"
        )
    return _portrait_masks(masks, height, width)


_WORKER_GROUPS: dict[tuple, Any] = {}


def usp_worker_group(bundle: Any, processes: int) -> Any:
    """A persistent group of `processes` sequence-parallel workers for this model (kept between runs,
    so ComfyUI itself stays single-process and pays the model load once)."""
    import atexit

    from magicinfinite_core.distributed import ModelSpec, SequenceParallelWorkerGroup

    if bundle.dit_path is None:
        raise NodeInputError("multi-process (USP) needs a model loaded from a folder or file, not built in memory")
    key = (str(bundle.dit_path), int(processes))
    if key not in _WORKER_GROUPS:
        for old in _WORKER_GROUPS.values():
            old.close()
        _WORKER_GROUPS.clear()
        group = SequenceParallelWorkerGroup(int(processes), ModelSpec(checkpoint=str(bundle.dit_path)))
        atexit.register(group.close)
        _WORKER_GROUPS[key] = group
    return _WORKER_GROUPS[key]


def frame_previews(bundle: Any, progress: Any, reference: Any = None) -> Any:
    """on_final(start, latent frames) -> the newest finished frame, decoded, as the node's preview image.

    `reference`: what a motion latent moves (the prepared portrait's), None for pixel latents."""
    from magicinfinite_core.media.autoencoders import decode_fn

    decode = decode_fn(bundle.vae, reference)

    def on_final(start: int, frames: Any) -> None:
        import torch
        from PIL import Image

        with torch.no_grad():  # the last latent frame alone: exact for causal per-frame codes, a preview otherwise
            img = decode(frames[:, -1:][None])[0, :, -1]
        arr = ((img.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        progress.preview(Image.fromarray(arr))

    return on_final


class MagicInfiniteSampler(io.ComfyNode):
    """Sliding-window sampling of one latent for the whole video (any length), with resume."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicInfiniteSampler",
            display_name="MagicInfinite Sliding-Window Sampler",
            category=CATEGORY,
            description="Denoise the whole video's latent window by window (overlaps blended, boundaries moved "
            "every step). The progress bar counts windows x steps. With resume_dir set, the state is saved "
            "after every step under output/magicinfinite_state/<resume_dir> and a rerun continues from it.",
            inputs=[
                MagicModel.Input("model"),
                io.Image.Input("portrait"),
                MagicAudioFeatures.Input("audio_features"),
                io.String.Input("prompt", multiline=True, default="A person talking to the camera."),
                io.String.Input("negative_prompt", multiline=True, default="", optional=True),
                io.Mask.Input("speaker_masks", optional=True,
                              tooltip="From 'Speaker Masks'; unconnected: detect the face (one speaker)."),
                MagicCFG.Input("cfg", optional=True, tooltip="Guidance for mode 'base (CFG)'; default the model's own (bundle.json), else "
                               f"{DEFAULT_AUDIO_SCALE}/{DEFAULT_TEXT_SCALE}/{DEFAULT_CFG_BOUNDARY}."),
                io.Combo.Input("mode", options=SAMPLER_MODES, default="distilled",
                               tooltip="distilled: the 4-step generator, no CFG. base: flow-matching Euler with CFG."),
                io.Int.Input("steps", default=4, min=1, max=MAX_STEPS, tooltip="4 for the distilled model, ~30 for base."),
                io.Int.Input("window", default=33, min=WINDOW_RANGE[0], max=WINDOW_RANGE[1], step=4,
                             tooltip="Video frames per window (4n+1)."),
                io.Int.Input("overlap", default=8, min=OVERLAP_RANGE[0], max=OVERLAP_RANGE[1], step=4,
                             tooltip="Video frames shared by neighbouring windows (multiple of 4)."),
                io.Float.Input("shift", default=7.0, min=SHIFT_RANGE[0], max=SHIFT_RANGE[1], step=0.1,
                               tooltip="Flow schedule shift."),
                io.Int.Input("seed", default=0, min=0, max=2**63 - 1, control_after_generate=True),
                io.String.Input("resume_dir", default="",
                                tooltip="Empty: no resume. A name (e.g. 'job42'): save/continue the sampler state "
                                "in output/magicinfinite_state/<name>."),
                io.Combo.Input("backend", options=BACKENDS, default=BACKENDS[0],
                               tooltip="multi-process (USP): a persistent group of worker processes shares each "
                               "window by sequence parallelism (one per GPU with NCCL, gloo on CPU); "
                               "ComfyUI itself stays one process."),
                io.Int.Input("processes", default=2, min=2, max=64, optional=True,
                             tooltip="Workers for the USP backend (the number of GPUs)."),
                io.Combo.Input("device", options=DEVICES, default="auto",
                               tooltip="auto: ComfyUI's device (CPU with --cpu)."),
                io.Int.Input("max_size", default=MAX_OUTPUT_SIDE, min=64, max=4096, step=2, optional=True,
                             tooltip="Motion-latent models (the demo): the video has the portrait's own size, "
                             "reduced to this many pixels on its longer side. Other models: their own size."),
                io.Float.Input("head_motion", default=1.0, min=0.0, max=1.0, step=0.05, optional=True,
                               tooltip="Motion-latent models (the demo): share of the model's head motion kept. "
                               "0 holds the head where the portrait has it (the mouth still talks); 1 moves it "
                               "as the model does (nods the prompt asks for)."),
                io.Float.Input("head_deadzone", default=0.0, min=0.0, max=MAX_HEAD_DEADZONE, step=0.005, optional=True,
                               tooltip="Motion-latent models (the demo): head motion smaller than this share of the "
                               "face's height is held, one over three times it (a nod) is kept whole, one between is "
                               "shortened less and less. 0 is off; 0.02 holds a still prompt's bob (a full-length "
                               "photo) and keeps about half of a clear nod (a faint one is held too)."),
            ],
            outputs=[MagicLatent.Output("latent", display_name="latent")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, window: int, overlap: int, mode: str | None = None, backend: str | None = None,
                        device: str | None = None) -> bool | str:
        """The choices (mode, backend, device) and the window/overlap pair.

        Why these: ComfyUI 0.3.75 does not check V3 combo values (see common.choice_error), and the
        window/overlap pair needs both values. ComfyUI attaches this function's message to every input
        it takes and skips its own min/max for them, so the message names the input it is about and the
        ranges are enforced here. Checks ComfyUI cannot do before the run (NaN shift, resume_dir path,
        cuda) run first thing in execute, before this node does any work.
        """
        from magicinfinite_core.sampling.sliding_window import window_sizes

        err = choices_error(mode=(mode, SAMPLER_MODES), backend=(backend, BACKENDS), device=(device, DEVICES))
        if err:
            return err
        if not WINDOW_RANGE[0] <= int(window) <= WINDOW_RANGE[1]:
            return f"window {window} must be in {WINDOW_RANGE[0]}..{WINDOW_RANGE[1]}"
        if not OVERLAP_RANGE[0] <= int(overlap) <= OVERLAP_RANGE[1]:
            return f"overlap {overlap} must be in {OVERLAP_RANGE[0]}..{OVERLAP_RANGE[1]}"
        try:
            window_sizes(int(window), int(overlap))
        except ValueError as e:
            return f"window {window} / overlap {overlap}: {e}"
        return True

    @classmethod
    def check_inputs(cls, shift: float, resume_dir: str, device: str) -> None:
        """The single-input checks ComfyUI's validation cannot make (raised as one NodeInputError)."""
        check_floats(shift=(shift, SHIFT_RANGE[0], SHIFT_RANGE[1]))
        check_choices(device=(device, DEVICES))
        state_dir_for(resume_dir)  # relative, no '..', inside output/magicinfinite_state
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise NodeInputError("device 'cuda' is not available on this machine; use 'auto' or 'cpu'")

    @classmethod
    @interruptible
    def execute(
        cls,
        model: Any,
        portrait: Any,
        audio_features: dict[str, Any],
        prompt: str,
        mode: str,
        steps: int,
        window: int,
        overlap: int,
        shift: float,
        seed: int,
        resume_dir: str,
        backend: str,
        device: str,
        processes: int = 2,
        negative_prompt: str = "",
        speaker_masks: Any = None,
        cfg: Any = None,
        max_size: int = 0,
        head_motion: float = 1.0,
        head_deadzone: float = 0.0,
    ) -> io.NodeOutput:
        import warnings

        from magicinfinite_core.errors import MaskError
        from magicinfinite_core.generate import GenerateOptions, prepare_portrait, sample_latent
        from magicinfinite_core.media.autoencoders import moves_portrait
        from magicinfinite_core.sampling.state import has_state
        from magicinfinite_core.sampling.wavefront import wavefront_sampler_fn

        cls.check_inputs(shift, resume_dir, device)
        state_dir = state_dir_for(resume_dir)
        features, k = audio_features["features"], int(audio_features["num_speakers"])
        forward = usp_worker_group(model, processes) if backend == BACKENDS[1] else None
        resumed = state_dir is not None and has_state(state_dir)
        distilled = mode == "distilled"
        trained_steps = (model.distilled or {}).get("timesteps", ())
        # the generator's own step list when the step count matches it, else an even spread
        timesteps = None if len(trained_steps) == int(steps) else distilled_timesteps(steps)
        progress = progress_callback(cls.hidden.unique_id)
        # a motion-latent model frames the faces itself: the masks stay at the portrait's own size
        mask_hw = (model.height, model.width)
        if speaker_masks is not None and moves_portrait(model.vae):
            mask_hw = tuple(speaker_masks.shape[-2:])
        stop_if_interrupted()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                options = GenerateOptions(
                    speakers=node_speakers(speaker_masks, k, *mask_hw),
                    negative_prompt=negative_prompt or "", cfg=cfg, distilled=distilled, steps=int(steps),
                    window=int(window), overlap=int(overlap), shift=float(shift), distilled_timesteps=timesteps,
                    seed=int(seed), state_dir=state_dir, resume=resumed,
                    max_size=int(max_size) or MAX_OUTPUT_SIDE, head_motion=float(head_motion),
                    head_deadzone=float(head_deadzone),
                )
                prep_notes: list[str] = []
                prep = prepare_portrait(model, portrait[:1], k, options, prep_notes)
                stop_if_interrupted()  # face detection and portrait encoding done
                # no resume_dir: wavefront order, finished frames shown as they come; resume_dir: the sweep's state
                sampler_fn = None if state_dir is not None else wavefront_sampler_fn(
                    on_final=frame_previews(model, progress, prep.reference))
                sampled = sample_latent(
                    model, portrait[:1], features, int(audio_features["num_frames"]), prompt or "",
                    options=options, device=torch_device(device), callback=progress, forward=forward,
                    sampler_fn=sampler_fn, prepared=prep,
                )
                sampled.notes[:0] = prep_notes
        except MaskError as e:
            if speaker_masks is not None:
                raise
            raise MaskError(f"{e}. Without speaker_masks the sampler detects faces itself and never guesses: "
                            "connect 'MagicInfinite Speaker Masks' (drawn masks, or 'detect faces, else "
                            "centre')") from None
        latent = sampled.latent
        notes = caught_warnings(caught)
        notes += [n for n in sampled.notes if n not in notes]
        send_warnings(cls.hidden.unique_id, "Sampler", notes)
        out = {
            "latent": latent,
            "num_frames": int(audio_features["num_frames"]),
            "mux": audio_features["mux"],
            "state_dir": str(state_dir) if state_dir is not None else None,
            "reference": sampled.reference,  # what decoding moves (motion latents), else None
        }
        note = " (resumed)" if resumed else ""
        if distilled and model.distilled is None:
            note += "; mode 'distilled' on a model not marked as distilled (few steps, no CFG: expect blur)"
        text = f"latent {tuple(latent.shape)} for {out['num_frames']} frames{note}"
        return io.NodeOutput(out, ui=ui_output(ui.PreviewText(text), notes))
