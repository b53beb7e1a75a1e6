"""generate(): portrait + voice + prompt -> mp4 of exactly the audio's length (DESIGN.md §2 data flow).

A short chain of named phases, each a function of its own module:

    load the model        weights/bundle.py        load_bundle
    read the voice        inputs/audio*.py         load_speaker_tracks -> extract_speaker_features [K, F, D]
    prepare the portrait  inputs/portrait.py       read_portrait -> load_portrait, pixel_speaker_masks
                          inputs/framing.py        (motion latents) frame_portrait: region + output size
    build the conditions  sampling/predictor.py    build_conditions -> WindowPredictor (CFG passes)
    sample the latent     sampling/sampler.py      sample (sliding windows, resumable state)
    decode and write      media/video_io.py        decode_to_mp4 (streamed causal decode + mux)

Identity over any length (DESIGN.md §5): only window 0 starts at the portrait, so in the paper's
first_frame mode only window 0 gets the I2V frame-0 latent concat; every other window gets the zero
concat, exactly what training shows the model when it drops that condition. Models with the
every_frame image condition see the portrait in every window. Guidance scales are fixed per run.
"""

from __future__ import annotations

import hashlib
import resource
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from magicinfinite_core.config import MAX_OUTPUT_SIDE, VIDEO_FPS, SamplerConfig, latent_frames
from magicinfinite_core.errors import MagicInfiniteError, finite_error
from magicinfinite_core.inputs.audio import LoadedAudio, load_speaker_tracks
from magicinfinite_core.inputs.audio_features import extract_speaker_features
from magicinfinite_core.inputs.framing import check_head_hold, frame_portrait
from magicinfinite_core.inputs.portrait import (
    PortraitWarning,
    load_portrait,
    pixel_speaker_masks,
    read_portrait,
)
from magicinfinite_core.limits import MAX_STEPS, check_window
from magicinfinite_core.media.autoencoders import moves_portrait
from magicinfinite_core.media.video_io import check_output_audio, check_output_path, decode_to_mp4
from magicinfinite_core.sampling.guidance import CFGConfig
from magicinfinite_core.sampling.predictor import WindowPredictor, build_conditions
from magicinfinite_core.sampling.sampler import ProgressCallback, sample, sampling_sigmas, step_plans
from magicinfinite_core.sampling.state import clear_state, has_state, load_state
from magicinfinite_core.weights.bundle import ModelBundle, load_bundle


@dataclass(frozen=True)
class GenerateOptions:
    """Every setting of one generation. None = the model's own recommendation (bundle.json), else the
    library default (config.py). The CLI, the nodes, the runner and the benches fill this one record."""

    steps: int | None = None  # base-model denoising steps
    cfg: CFGConfig | None = None  # guidance (base mode)
    shift: float | None = None  # flow-matching time shift
    distilled: bool = False  # the few-step generator, no CFG (a bundle path then loads its distilled DiT)
    distilled_timesteps: Sequence[float] | None = None
    window: int | None = None  # video frames per sliding window (None: the model's, else 33)
    overlap: int | None = None  # video frames shared by consecutive windows (None: the model's, else 8)
    shift_windows: bool = True  # move window boundaries every step so seams never sit still
    speakers: Any = None  # None (detect faces), [K, H, W] masks, mask image paths, or K pixel boxes
    seed: int = 0
    negative_prompt: str = ""
    face_fallback: str | None = None  # "center": centred regions when no face is found (reported in notes)
    state_dir: str | Path | None = None  # save the sampler state after every step
    resume: bool = False  # continue from state_dir (bit-identical result)
    keep_state: bool = False  # keep state_dir after a finished video
    max_size: int = MAX_OUTPUT_SIDE  # motion-latent models: output = the portrait's size, up to this a side
    head_motion: float = 1.0  # motion-latent models: share of the model's head motion kept (0: a still head)
    head_deadzone: float = 0.0  # motion-latent models: head motion below this share of the face's height is held
    latent_file: str | Path | None = None  # memory-map the video's latent here instead of RAM
    decode_chunk: int = 8  # latent frames per decode chunk
    decode_context: int = 2  # latent frames of causal context per chunk


def options_with(options: GenerateOptions | None, overrides: dict[str, Any]) -> GenerateOptions:
    """`options` (or the defaults) with keyword overrides; an unknown name is an error, not ignored."""
    known = {f.name for f in fields(GenerateOptions)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown generation option(s) {unknown}; known: {sorted(known)}")
    return replace(options or GenerateOptions(), **overrides)


@dataclass
class GenerateReport:
    path: str
    frames: int
    seconds: float
    fps: int
    width: int
    height: int
    latent_shape: list[int]
    steps: int
    mode: str
    windows_per_step: list[int]
    seed: int
    wall_s: float
    sample_s: float
    decode_s: float
    resumed_from_step: int | None
    peak_rss_mb: float
    peak_device_mb: float | None
    notes: list[str] = field(default_factory=list)  # fallbacks and input changes the user should know about

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB.

    Linux: ``VmHWM`` of /proc/self/status, the peak of this program's own memory. ``ru_maxrss`` keeps
    the peak of the process image before ``exec`` (a forked copy of a large launcher, e.g. a test
    runner), so it can report the parent's size; it is the fallback elsewhere (Linux reports KiB).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _audio_list(audio: Any) -> list:
    if isinstance(audio, (list, tuple)) and not (len(audio) == 2 and isinstance(audio[1], int)):
        return list(audio)
    return [audio]


def generate(
    portrait: Any,
    audio: Any,
    prompt: str,
    *,
    model: ModelBundle | str | Path,
    out: str | Path,
    options: GenerateOptions | None = None,
    device: str | torch.device | None = None,
    callback: ProgressCallback | None = None,
    **overrides: Any,
) -> tuple[Path, GenerateReport]:
    """Make a talking video; returns (mp4 path, report).

    audio: a file / ComfyUI AUDIO / (array, rate), or a list of them (one per speaker, same order as
    `options.speakers`). Settings come from `options` (GenerateOptions), with keyword overrides of its
    fields (``generate(..., steps=20, seed=1)``).
    """
    opts = options_with(options, overrides)
    t_start = time.perf_counter()
    check_output_path(out)  # before any work: a bad path must not cost a whole run
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    bundle = load_bundle(model, device, opts.distilled) if isinstance(model, (str, Path)) else model.to(device)
    sampler_config(bundle, opts)  # bad settings fail before the audio is read, before any heavy work

    tracks: list[LoadedAudio] = load_speaker_tracks(_audio_list(audio))
    num_frames = max(t.num_frames for t in tracks)
    features = extract_speaker_features(tracks, bundle.audio_extractor, num_frames)  # [K, F, D]
    check_output_audio(_output_audio(audio, tracks))  # the AAC encoder opens, before any sampling

    sampled = sample_latent(bundle, portrait, features, num_frames, prompt, options=opts, device=device,
                            callback=callback)

    t1 = time.perf_counter()
    out = decode_to_mp4(sampled.latent, bundle.vae, num_frames, out, _output_audio(audio, tracks),
                        chunk=opts.decode_chunk, context=opts.decode_context, device=device, callback=callback,
                        portrait=sampled.reference)
    decode_s = time.perf_counter() - t1
    if opts.state_dir is not None and not opts.keep_state:
        clear_state(opts.state_dir)

    scfg = sampled.config
    n_steps = len(scfg.distilled_timesteps) if opts.distilled else scfg.steps
    report = GenerateReport(
        path=str(out), frames=num_frames, seconds=num_frames / VIDEO_FPS, fps=VIDEO_FPS,
        width=sampled.output_size[1], height=sampled.output_size[0], latent_shape=list(sampled.shape),
        steps=n_steps, mode="distilled" if opts.distilled else "base",
        windows_per_step=[len(p) for p in step_plans(sampled.shape[1], scfg, n_steps)], seed=opts.seed,
        wall_s=time.perf_counter() - t_start, sample_s=sampled.seconds, decode_s=decode_s,
        resumed_from_step=sampled.resumed_from_step, peak_rss_mb=peak_rss_mb(),
        peak_device_mb=torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        notes=sampled.notes,
    )
    return out, report


@dataclass
class SampledLatent:
    latent: torch.Tensor  # [C, T, h, w] on the CPU
    shape: tuple[int, int, int, int]
    config: SamplerConfig
    num_frames: int
    resumed_from_step: int | None
    seconds: float
    notes: list[str] = field(default_factory=list)  # what the user should know (fallbacks, downscaling)
    reference: Any = None  # what decoding moves (motion latents: a MotionReference), else None
    output_size: tuple[int, int] = (0, 0)  # (H, W) of the decoded video


@dataclass
class PreparedPortrait:
    """The portrait as the model sees it, and what decoding needs of it."""

    image: torch.Tensor  # [1, 3, h, w] in [-1, 1] at the model's size (motion latents: the framed region)
    image_u8: np.ndarray  # the same, uint8 [h, w, 3]
    masks: np.ndarray  # [K, h, w] speaker masks
    reference: Any = None  # motion latents: the MotionReference decoding moves; else None
    output_size: tuple[int, int] = (0, 0)  # (H, W) of the video


def check_sampling(steps: int, shift: float, cfg: CFGConfig, timesteps: Sequence[float], seed: int) -> None:
    """Refuse sampling settings that cannot give a video: NaN/inf or out-of-range numbers.

    Why: NaN passes every ``<``/``>`` check and used to come out as an all-black video reported as
    a success; this is the library's own line of defence under the CLI's and the nodes' checks.
    """
    errs = [
        None if 1 <= int(steps) <= MAX_STEPS else f"steps must be in 1..{MAX_STEPS}, got {steps}",
        finite_error("shift", shift, 1e-6),
        finite_error("audio guidance scale", cfg.audio_scale),
        finite_error("text guidance scale", cfg.text_scale),
        finite_error("CFG boundary", cfg.boundary),
        *[finite_error("distilled timestep", t, 0.0, 1000.0) for t in timesteps],
        None if 0 <= int(seed) < 2**64 else f"seed must be in 0..2**64-1, got {seed}",
    ]
    for e in errs:
        if e:
            raise MagicInfiniteError(e)


def sampler_config(bundle: ModelBundle, opts: GenerateOptions) -> tuple[SamplerConfig, CFGConfig]:
    """The run's sampler settings and guidance: the options, else the model's, else the defaults; checked
    (with the decode options: every bad setting fails before the audio is read)."""
    check_head_hold(opts.head_motion, opts.head_deadzone)
    holds = [name for name, on in (("head_motion below 1", opts.head_motion < 1),
                                   ("head_deadzone above 0", opts.head_deadzone > 0)) if on]
    if holds and not moves_portrait(bundle.vae):
        raise MagicInfiniteError(f"{' and '.join(holds)} {'needs' if len(holds) == 1 else 'need'} a motion-latent model "
                                 "(the embedded demo): this model's VAE decodes pixels, so its head motion cannot be held "
                                 "or scaled; prompt for a still head instead")
    steps, shift, cfg, timesteps = bundle.resolve_sampling(opts.distilled, opts.steps, opts.shift, opts.cfg,
                                                           opts.distilled_timesteps)
    check_sampling(steps, shift, cfg, timesteps, opts.seed)
    window, overlap = bundle.resolve_windows(opts.window, opts.overlap)
    check_window(window, overlap)
    scfg = SamplerConfig(steps=steps, shift=shift, window_frames=window, overlap_frames=overlap,
                         shift_windows=opts.shift_windows, distilled_timesteps=tuple(float(t) for t in timesteps))
    return scfg, cfg


def prepare_portrait(
    bundle: ModelBundle, portrait: Any, num_speakers: int, opts: GenerateOptions, notes: list[str],
) -> PreparedPortrait:
    """The portrait at the model's size with its speaker masks (and, for a motion-latent model, the
    framed region and the full picture that decoding moves).

    Faces are detected on the full-resolution picture; what was changed or fell back goes to `notes`.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PortraitWarning)
        full = read_portrait(portrait)
    for w in caught:
        notes.append(str(w.message))
        warnings.warn(w.message, stacklevel=3)
    if moves_portrait(bundle.vae):
        img, img_u8, masks, ref = frame_portrait(full, (bundle.height, bundle.width), num_speakers, opts.speakers,
                                                 fallback=opts.face_fallback, notes=notes, max_side=opts.max_size,
                                                 lip_seams=bundle.vae.cfg.needs_mouths,
                                                 rigid_faces=bundle.vae.cfg.rigid_upper_face > 0,
                                                 head_motion=opts.head_motion, head_deadzone=opts.head_deadzone)
        return PreparedPortrait(img, img_u8, masks, ref, tuple(ref.image.shape[-2:]))
    img, img_u8 = load_portrait(full, bundle.height, bundle.width)
    masks = pixel_speaker_masks(img_u8, num_speakers, opts.speakers, portrait=full, fallback=opts.face_fallback,
                                notes=notes)
    return PreparedPortrait(img, img_u8, masks, None, (bundle.height, bundle.width))


def sample_latent(
    bundle: ModelBundle,
    portrait: Any,
    features: torch.Tensor,
    num_frames: int,
    prompt: str,
    *,
    options: GenerateOptions | None = None,
    device: str | torch.device = "cpu",
    callback: ProgressCallback | None = None,
    forward: Any = None,
    sampler_fn: Any = None,
    prepared: PreparedPortrait | None = None,
    **overrides: Any,
) -> SampledLatent:
    """Portrait + per-speaker features [K, F, D] + prompt -> the sampled latent of the whole video.

    The part of generate() that the ComfyUI sampler node runs on its own. `forward` replaces the DiT
    call (e.g. a USP worker group with the DiT's signature). The resume hash covers the model, the
    portrait, the features, the masks, the prompts and the guidance. `sampler_fn` replaces
    `sampling.sampler.sample` (same call), e.g. `streaming.py`'s runner, which decodes and muxes frames
    as they become final, or `sampling.wavefront.wavefront_sampler_fn` (the node's previews).
    """
    opts = options_with(options, overrides)
    device = torch.device(device)
    prompt = prompt or ""
    scfg, cfg = sampler_config(bundle, opts)
    if bundle.dit.cfg.audio is not None and features.shape[-1] != bundle.dit.cfg.audio.feature_dim:
        raise MagicInfiniteError(
            f"the audio features have {features.shape[-1]} dims but the model expects "
            f"{bundle.dit.cfg.audio.feature_dim}; use the model's own audio encoder"
        )
    if bundle.dit.cfg.avatar is not None and features.shape[-1] != bundle.dit.cfg.avatar.audio_feature_dim:
        raise MagicInfiniteError(
            f"the audio features have {features.shape[-1]} dims but this HunyuanVideo-Avatar model expects "
            f"{bundle.dit.cfg.avatar.audio_feature_dim} (Whisper windows); use its Whisper audio encoder"
        )
    notes: list[str] = []
    prep = prepared or prepare_portrait(bundle, portrait, features.shape[0], opts, notes)
    img, img_u8, masks = prep.image, prep.image_u8, prep.masks
    cond = build_conditions(bundle, img, prompt, features, masks, device, opts.negative_prompt)
    h_lat, w_lat = cond.image_latent.shape[-2:]
    shape = (bundle.dit.cfg.out_channels, latent_frames(num_frames), h_lat, w_lat)
    inputs_hash = {
        "model": bundle.fingerprint(),
        "portrait": hashlib.sha256(img_u8.tobytes()).hexdigest(),
        **({"picture": _reference_hash(prep.reference)} if prep.reference is not None else {}),
        "features": hashlib.sha256(features.contiguous().numpy().tobytes()).hexdigest(),
        "masks": hashlib.sha256(np.ascontiguousarray(masks).tobytes()).hexdigest(),
        "prompt": prompt,
        "negative_prompt": opts.negative_prompt,
        "cfg": asdict(cfg),
    }
    state_dir = opts.state_dir
    resumed_from = load_state(state_dir).step if opts.resume and has_state(state_dir) else None
    predictor = WindowPredictor(bundle.dit, cond, cfg, dtype=next(bundle.dit.parameters()).dtype, forward=forward,
                                sigmas=sampling_sigmas(scfg, opts.distilled))
    t0 = time.perf_counter()
    latent = (sampler_fn or sample)(predictor, shape, config=scfg, distilled=opts.distilled, seed=opts.seed,
                                    device=device, state_dir=state_dir, resume=opts.resume, extra_hash=inputs_hash,
                                    latent_file=opts.latent_file, callback=callback)
    return SampledLatent(latent, shape, scfg, num_frames, resumed_from, time.perf_counter() - t0, notes,
                         prep.reference, prep.output_size)


def _reference_hash(ref: Any) -> str:
    """What a motion latent moves is part of the video: the picture at output size and the region."""
    h = hashlib.sha256(repr((tuple(ref.box), *ref.tiles) if ref.tiles else tuple(ref.box)).encode())
    h.update(((ref.image + 1) * 127.5).round().to(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _output_audio(audio: Any, tracks: list[LoadedAudio]):
    """The track muxed into the mp4: the original file for one speaker (its own rate and quality),
    otherwise the speakers' 16 kHz tracks mixed."""
    items = _audio_list(audio)
    if len(items) == 1 and isinstance(items[0], (str, Path)):
        return items[0]
    mix = np.sum([t.waveform for t in tracks], axis=0)
    peak = float(np.abs(mix).max()) if mix.size else 0.0
    if peak > 1:
        mix = mix / peak
    return (mix.astype(np.float32)[None], tracks[0].sample_rate)
