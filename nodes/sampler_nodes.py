"""Multi-condition CFG settings and the sliding-window sampler node."""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from typing import Any

from comfy_api.latest import io, ui

from .common import (
    CATEGORY,
    MagicAudioFeatures,
    MagicCFG,
    MagicLatent,
    MagicModel,
    NodeInputError,
    check_relative_name,
    progress_callback,
    state_dir_for,
    torch_device,
)

CFG_MODES = ["multi-condition (two-fold, then three-fold)", "two-fold only", "off"]
SAMPLER_MODES = ["distilled", "base (CFG)"]
BACKENDS = ["single device"]
DEVICES = ["auto", "cpu", "cuda"]


class MagicInfiniteCFG(io.ComfyNode):
    """Guidance settings for the base (non-distilled) model: audio and text scales and the switch point."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MagicInfiniteCFG",
            display_name="MagicInfinite Multi-Condition CFG",
            category=CATEGORY,
            description="Classifier-free guidance over audio and text. Multi-condition: two-fold (everything vs "
            "nothing) while sigma >= boundary, then three-fold (audio and text guided separately). The "
            "distilled 4-step model ignores CFG.",
            inputs=[
                io.Combo.Input("mode", options=CFG_MODES, default=CFG_MODES[0]),
                io.Float.Input("audio_scale", default=4.0, min=0.0, max=20.0, step=0.1,
                               tooltip="How strongly the lips follow the voice."),
                io.Float.Input("text_scale", default=3.0, min=0.0, max=20.0, step=0.1,
                               tooltip="How strongly the prompt is followed (three-fold steps)."),
                io.Float.Input("boundary", default=0.75, min=0.0, max=1.0, step=0.01,
                               tooltip="Noise level (sigma) below which three-fold guidance starts."),
            ],
            outputs=[MagicCFG.Output("cfg", display_name="cfg")],
        )

    @classmethod
    def execute(cls, mode: str, audio_scale: float, text_scale: float, boundary: float) -> io.NodeOutput:
        from magicinfinite_core.guidance import CFGConfig

        if mode == "off":
            return io.NodeOutput(CFGConfig.off())
        if mode == "two-fold only":
            boundary = 0.0  # every sigma >= 0 → two-fold
        return io.NodeOutput(CFGConfig(audio_scale=audio_scale, text_scale=text_scale, boundary=boundary))


def distilled_timesteps(steps: int) -> tuple[float, ...]:
    """The generator's timesteps: the trained 1000/750/500/250 for 4 steps, else evenly spaced."""
    if steps == 4:
        return (1000.0, 750.0, 500.0, 250.0)
    return tuple(1000.0 * (1 - i / steps) for i in range(steps))


def _portrait_masks(masks: Any, height: int, width: int) -> Any:
    """Pixel masks [K, H, W] of the input portrait → the model's crop and size (as load_portrait does)."""
    import numpy as np

    from magicinfinite_core.pipeline import load_portrait

    out = []
    for m in masks.float().cpu().numpy():
        _, arr = load_portrait(np.repeat(m[..., None], 3, axis=-1), height, width)
        out.append((arr[..., 0] > 127).astype(np.float32))
    return np.stack(out)


def sample_latent(
    bundle: Any,
    portrait: Any,
    audio: dict[str, Any],
    prompt: str,
    *,
    negative_prompt: str,
    masks: Any,
    cfg: Any,
    distilled: bool,
    steps: int,
    window: int,
    overlap: int,
    shift: float,
    seed: int,
    device: Any,
    state_dir: Any,
    callback: Any,
) -> Any:
    """generate() up to the sampled latent (same steps, same resume hash), for the node graph.

    TODO(core): this mirrors pipeline.generate() between feature extraction and decoding; it belongs in
    magicinfinite_core.pipeline as a public ``sample_latent(...)`` that generate() calls.
    """
    import numpy as np

    from magicinfinite_core.config import SamplerConfig
    from magicinfinite_core.guidance import CFGConfig
    from magicinfinite_core.pipeline import (
        WindowPredictor,
        build_conditions,
        load_portrait,
        pixel_speaker_masks,
    )
    from magicinfinite_core.sampler import sample
    from magicinfinite_core.sampler_state import has_state
    from magicinfinite_core.sliding_window import latent_frames

    bundle = bundle.to(device)
    cfg = CFGConfig.off() if distilled else (cfg or CFGConfig())
    features, num_frames, k = audio["features"], int(audio["num_frames"]), int(audio["num_speakers"])
    img, img_u8 = load_portrait(portrait[:1], bundle.height, bundle.width)
    if masks is not None:
        if masks.ndim == 2:
            masks = masks[None]
        if masks.shape[0] != k:
            raise NodeInputError(
                f"{masks.shape[0]} speaker mask(s) for {k} audio track(s); set num_speakers on the mask node to {k}"
            )
        pix = pixel_speaker_masks(img_u8, k, _portrait_masks(masks, bundle.height, bundle.width))
    else:
        pix = pixel_speaker_masks(img_u8, k, None)
    cond = build_conditions(bundle, img, prompt, features, pix, device, negative_prompt)
    h_lat, w_lat = cond.image_latent.shape[-2:]
    shape = (bundle.dit.cfg.out_channels, latent_frames(num_frames), h_lat, w_lat)
    scfg = SamplerConfig(steps=steps, shift=shift, window_frames=window, overlap_frames=overlap,
                         distilled_timesteps=distilled_timesteps(steps))
    extra = {
        "model": bundle.fingerprint(),
        "portrait": hashlib.sha256(img_u8.tobytes()).hexdigest(),
        "features": hashlib.sha256(features.contiguous().numpy().tobytes()).hexdigest(),
        "masks": hashlib.sha256(np.ascontiguousarray(pix).tobytes()).hexdigest(),
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "cfg": asdict(cfg),
    }
    predictor = WindowPredictor(bundle.dit, cond, cfg, dtype=next(bundle.dit.parameters()).dtype)
    resume = state_dir is not None and has_state(state_dir)
    return sample(predictor, shape, config=scfg, distilled=distilled, seed=seed, device=device,
                  state_dir=state_dir, resume=resume, extra_hash=extra, callback=callback), resume


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
                MagicCFG.Input("cfg", optional=True, tooltip="Guidance for mode 'base (CFG)'; default 4.0/3.0/0.75."),
                io.Combo.Input("mode", options=SAMPLER_MODES, default="distilled",
                               tooltip="distilled: the 4-step generator, no CFG. base: flow-matching Euler with CFG."),
                io.Int.Input("steps", default=4, min=1, max=200, tooltip="4 for the distilled model, ~30 for base."),
                io.Int.Input("window", default=33, min=5, max=1025, step=4,
                             tooltip="Video frames per window (4n+1)."),
                io.Int.Input("overlap", default=8, min=4, max=1024, step=4,
                             tooltip="Video frames shared by neighbouring windows (multiple of 4)."),
                io.Float.Input("shift", default=7.0, min=0.1, max=50.0, step=0.1, tooltip="Flow schedule shift."),
                io.Int.Input("seed", default=0, min=0, max=2**63 - 1, control_after_generate=True),
                io.String.Input("resume_dir", default="",
                                tooltip="Empty: no resume. A name (e.g. 'job42'): save/continue the sampler state "
                                "in output/magicinfinite_state/<name>."),
                io.Combo.Input("backend", options=BACKENDS, default=BACKENDS[0],
                               tooltip="Multi-GPU (USP) is not offered in ComfyUI yet."),
                io.Combo.Input("device", options=DEVICES, default="auto",
                               tooltip="auto: ComfyUI's device (CPU with --cpu)."),
            ],
            outputs=[MagicLatent.Output("latent", display_name="latent")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, window: int, overlap: int, steps: int, resume_dir: str = "",
                        device: str = "auto") -> bool | str:
        from magicinfinite_core.sliding_window import window_sizes

        if int(steps) < 1:
            return f"steps must be at least 1, got {steps}"
        try:
            window_sizes(int(window), int(overlap))
        except ValueError as e:
            return f"window {window} / overlap {overlap}: {e}"
        if resume_dir and resume_dir.strip():
            err = check_relative_name(resume_dir.strip(), "resume_dir")
            if err:
                return err
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                return "device 'cuda' is not available on this machine; use 'auto' or 'cpu'"
        return True

    @classmethod
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
        negative_prompt: str = "",
        speaker_masks: Any = None,
        cfg: Any = None,
    ) -> io.NodeOutput:
        if backend != BACKENDS[0]:
            raise NodeInputError(f"backend {backend!r} is not available; use {BACKENDS[0]!r}")
        state_dir = state_dir_for(resume_dir)
        latent, resumed = sample_latent(
            model, portrait, audio_features, prompt or "",
            negative_prompt=negative_prompt or "", masks=speaker_masks, cfg=cfg,
            distilled=mode == "distilled", steps=int(steps), window=int(window), overlap=int(overlap),
            shift=float(shift), seed=int(seed), device=torch_device(device), state_dir=state_dir,
            callback=progress_callback(cls.hidden.unique_id),
        )
        out = {
            "latent": latent,
            "num_frames": int(audio_features["num_frames"]),
            "mux": audio_features["mux"],
            "state_dir": str(state_dir) if state_dir is not None else None,
        }
        note = " (resumed)" if resumed else ""
        text = f"latent {tuple(latent.shape)} for {out['num_frames']} frames{note}"
        return io.NodeOutput(out, ui=ui.PreviewText(text))
