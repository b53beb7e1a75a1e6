"""Streaming generation: wavefront sampling -> incremental decode -> fragmented MP4, frame by frame.

Why: with the sweep the first frame exists only when the whole video is sampled, and the whole
latent is held. Here the wavefront sampler (`wavefront.py`) hands out latent frames the moment they
are final, the decoder (`incremental_decode.py`) turns them into video frames, and the muxer
(`stream_mux.py`) appends them to a fragmented MP4 with the audio track, so the file plays while it
grows, memory stays flat in the length, and `report.first_frame_s` is the time to the first frame.

Resume (`state_dir`): every `save_every_s` seconds, right after a chunk was muxed, the in-flight
region (`WavefrontSampler.state()`) is saved atomically, and the final latent frames already sent to
the decoder are appended to `final_latents.f32` beside it (fsync'd first). A resume re-decodes those
frames into a fresh file (the encoder is deterministic, so the bytes are the same) and continues the
sampler from the in-flight region: the same video as an uninterrupted run. The final-latent file is
the only thing that grows (C*h*w*4 bytes per latent frame: 128 KB for the demo model, ~0.8 MB per
video second) and is removed with the state after success.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, safe_open, save

from magicinfinite_core.config import VIDEO_FPS, SamplerConfig
from magicinfinite_core.errors import MagicInfiniteError
from magicinfinite_core.generate import (
    GenerateOptions,
    _audio_list,
    _output_audio,
    options_with,
    peak_rss_mb,
    prepare_portrait,
    sample_latent,
    sampler_config,
)
from magicinfinite_core.inputs.audio import load_speaker_tracks
from magicinfinite_core.inputs.audio_features import extract_speaker_features
from magicinfinite_core.media.video_io import check_output_audio, check_output_path
from magicinfinite_core.output_files import naming_full_disk, write_file_synced
from magicinfinite_core.sampling.predictor import WindowPredictor, build_conditions
from magicinfinite_core.sampling.sampler import Predictor, ProgressCallback, sampler_hash, sampling_sigmas
from magicinfinite_core.sampling.state import STATE_FILE
from magicinfinite_core.sampling.wavefront import FixedPlans, GrowingPlans, WavefrontSampler, WindowPlans
from magicinfinite_core.weights.bundle import ModelBundle, load_bundle

STREAM_STATE = "stream.safetensors"
STREAM_JSON = "stream.json"
FINAL_LATENTS = "final_latents.f32"
FORMAT = "stream/1"


def seconds_since_process_start() -> float | None:
    """Wall seconds since this process started (Linux /proc), i.e. since the command was typed."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class StreamStats:
    """What the streaming run measured (filled while it runs)."""

    order: str = "wavefront"
    frames: int = 0
    first_frame_s: float | None = None  # from the start of the run (model loaded) to the first muxed frame
    first_frame_since_process_s: float | None = None  # from the command (imports, model load included)
    run_s: float = 0.0  # sampling + decode + mux
    windows: int = 0
    peak_in_flight_latent_frames: int = 0
    resumed_from_latent_frame: int | None = None
    state_saves: int = 0

    def realtime_factor(self) -> float:
        """Video seconds per wall second of sampling + decode + mux."""
        return self.frames / VIDEO_FPS / self.run_s if self.run_s > 0 else 0.0


class StreamState:
    """The streaming run's state folder: in-flight region (safetensors) + final latent frames (raw f32)."""

    def __init__(self, directory: str | Path, frame_shape: tuple[int, int, int]) -> None:
        self.dir = Path(directory)
        self.frame_shape = frame_shape
        self.frame_values = int(np.prod(frame_shape))

    def exists(self) -> bool:
        return (self.dir / STREAM_STATE).is_file()

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for name in (STREAM_STATE, STREAM_JSON, FINAL_LATENTS):
            (self.dir / name).unlink(missing_ok=True)
        self._final = open(self.dir / FINAL_LATENTS, "wb")

    def append_final(self, frames: torch.Tensor) -> None:
        """Final latent frames [C, n, h, w] -> the file, frame-major (a resume truncates what the last
        save does not cover, so a partial append on a full disk is harmless)."""
        with naming_full_disk(self.dir / FINAL_LATENTS):
            self._final.write(frames.permute(1, 0, 2, 3).contiguous().numpy().astype(np.float32).tobytes())

    def save(self, engine: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
        """The in-flight region, atomically; on a full disk the half-written file goes, the last save stays."""
        tmp = self.dir / (STREAM_STATE + ".tmp")
        jtmp = self.dir / (STREAM_JSON + ".tmp")
        with naming_full_disk(self.dir / FINAL_LATENTS):
            self._final.flush()
            os.fsync(self._final.fileno())
        with naming_full_disk(tmp, tmp):
            write_file_synced(tmp, save(engine, metadata={"format": FORMAT, **meta}))
            os.replace(tmp, self.dir / STREAM_STATE)
        with naming_full_disk(jtmp, jtmp):
            write_file_synced(jtmp, json.dumps({"format": FORMAT, **meta}, indent=1).encode())
            os.replace(jtmp, self.dir / STREAM_JSON)

    def load(self, expected_hash: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """(engine state, final latent frames [C, n, h, w] already muxed) of a saved run."""
        path = self.dir / STREAM_STATE
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            engine = load_file(str(path))
        except Exception as exc:  # torn or foreign: say so in one line
            raise MagicInfiniteError(f"streaming state {path} cannot be read ({exc}); delete it and start again") from None
        if meta.get("format") != FORMAT:
            raise MagicInfiniteError(f"streaming state {path} has format {meta.get('format')!r}, expected {FORMAT}")
        if meta.get("config_hash") != expected_hash:
            raise MagicInfiniteError(
                f"streaming state {path} was made with different inputs or settings; resume with the same ones "
                "or delete it"
            )
        n = int(engine["emitted"][0])
        need = n * self.frame_values * 4
        final_path = self.dir / FINAL_LATENTS
        if not final_path.is_file() or final_path.stat().st_size < need:
            raise MagicInfiniteError(f"{final_path} holds fewer than the {n} saved latent frames; delete the state")
        raw = np.fromfile(final_path, dtype=np.float32, count=n * self.frame_values)
        c, h, w = self.frame_shape
        final = torch.from_numpy(raw.reshape(n, c, h, w).copy()).permute(1, 0, 2, 3)
        with open(final_path, "r+b") as f:  # drop frames appended after the last save: they come again
            f.truncate(need)
        self._final = open(final_path, "ab")
        return engine, final

    def close(self) -> None:
        f = getattr(self, "_final", None)
        if f is not None and not f.closed:
            f.close()

    def clear(self) -> None:
        self.close()
        for name in (STREAM_STATE, STREAM_JSON, FINAL_LATENTS, STREAM_STATE + ".tmp", STREAM_JSON + ".tmp"):
            (self.dir / name).unlink(missing_ok=True)
        try:
            self.dir.rmdir()
        except OSError:
            pass


def stream_hash(latent_shape: Sequence[int], config: SamplerConfig, distilled: bool, seed: int, extra: Any,
                decode: dict[str, Any]) -> str:
    return sampler_hash(tuple(latent_shape), config, distilled, True, seed, {"extra": extra, "decode": decode,
                                                                            "stream": FORMAT})


def stream_to_mp4(
    predict: Predictor,
    latent_shape: tuple[int, int, int, int],
    *,
    config: SamplerConfig,
    vae: Any,
    num_frames: int,
    out: str | Path,
    audio: Any = None,
    distilled: bool = False,
    seed: int = 0,
    device: torch.device | str = "cpu",
    order: str = "wavefront",
    state_dir: str | Path | None = None,
    resume: bool = False,
    extra_hash: Any = None,
    decode_chunk: int = 8,
    decode_context: int = 2,
    callback: ProgressCallback | None = None,
    save_every_s: float = 10.0,
    plans: WindowPlans | None = None,
    live: Any = None,
    on_frames: Callable[[torch.Tensor], None] | None = None,
    stats: StreamStats | None = None,
    portrait: Any = None,
) -> StreamStats:
    """Sample, decode and mux one video as a stream; returns what was measured.

    `live` (`live_audio.LiveAudio`, with `plans` its `GrowingPlans`): the length comes at the end, the
    audio track is pushed as it arrives; `num_frames` is then ignored."""
    from magicinfinite_core.media.autoencoders import decode_fn, video_size
    from magicinfinite_core.media.background_writer import BackgroundWriter
    from magicinfinite_core.media.incremental_decode import IncrementalDecoder
    from magicinfinite_core.media.stream_mux import FragmentedVideoWriter

    t0 = time.perf_counter()
    stats = stats or StreamStats(order=order)
    stats.order = order
    c, total, h, w = latent_shape
    sigmas = sampling_sigmas(config, distilled).tolist()
    plans = plans or FixedPlans(total, config, len(sigmas) - 1)
    decode = {"chunk": decode_chunk, "context": decode_context}
    chash = stream_hash(latent_shape, config, distilled, seed, extra_hash, decode)
    store = StreamState(state_dir, (c, h, w)) if state_dir is not None else None
    if store is not None and (Path(state_dir) / STATE_FILE).is_file() and resume and not store.exists():
        raise MagicInfiniteError(f"{state_dir} holds the state of a sweep run (--sweep); resume it with --sweep")
    engine_state, done = None, None
    if resume and store is not None and store.exists():
        engine_state, done = store.load(chash)
        stats.resumed_from_latent_frame = done.shape[1]
    elif store is not None:
        store.start()
    engine = WavefrontSampler(predict, (c, h, w), plans, sigmas, distilled=distilled, seed=seed, device=device,
                              order=order, state=engine_state, callback=callback)
    decoder = IncrementalDecoder(decode_fn(vae, portrait), chunk=decode_chunk, context=decode_context,
                                 num_frames=num_frames if isinstance(plans, FixedPlans) else None, device=device)
    height, width = video_size(vae, (h, w), portrait)
    last_save = time.perf_counter()

    def first_frame_written() -> None:
        if stats.first_frame_s is None:
            stats.first_frame_s = time.perf_counter() - t0
            stats.first_frame_since_process_s = seconds_since_process_start()

    file = FragmentedVideoWriter(out, width, height, audio=None if live else audio,
                                 live_audio=live.rate_channels if live else None)
    if live:  # live audio is pushed from this thread and its latency is measured to the frame encoded: no worker
        live.writer = writer = file
    else:
        writer = BackgroundWriter(file, on_written=first_frame_written)

    def mux(frames: torch.Tensor) -> None:
        if not frames.shape[1]:
            return
        writer.write(frames)
        if live:
            first_frame_written()
        stats.frames += frames.shape[1]
        if live is not None:
            live.frames_muxed(stats.frames)
        if on_frames is not None:
            on_frames(frames)

    with writer:
        if done is not None and done.shape[1]:
            mux(decoder.push(done))  # what an earlier run already made, decoded again
        for _start, frames in engine.run():
            if store is not None:
                store.append_final(frames)
            mux(decoder.push(frames))
            if store is not None and time.perf_counter() - last_save >= save_every_s:
                store.save(engine.state(), {"config_hash": chash, "emitted": str(engine.emitted)})
                stats.state_saves += 1
                last_save = time.perf_counter()
        total_now = engine.emitted
        if live:
            num_frames = live.num_frames
        mux(decoder.finish(num_frames if num_frames is not None else 1 + 4 * (total_now - 1)))
    if store is not None:
        store.close()
    stats.run_s = time.perf_counter() - t0
    stats.windows = engine.windows_done
    stats.peak_in_flight_latent_frames = engine.peak_in_flight
    return stats


@dataclass
class StreamReport:
    path: str
    frames: int
    seconds: float
    order: str
    first_frame_s: float | None
    first_frame_since_process_s: float | None
    wall_s: float
    run_s: float
    realtime_factor: float
    peak_rss_mb: float
    windows: int
    peak_in_flight_latent_frames: int
    resumed_from_latent_frame: int | None
    mode: str
    steps: int
    seed: int
    notes: list[str] = field(default_factory=list)
    latency: dict[str, float] | None = None  # live input: audio arrival -> frame muxed (mean, max, last)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def generate_streaming(
    portrait: Any,
    audio: Any,
    prompt: str,
    *,
    model: ModelBundle | str | Path,
    out: str | Path,
    options: GenerateOptions | None = None,
    device: str | torch.device | None = None,
    callback: ProgressCallback | None = None,
    order: str = "wavefront",
    save_every_s: float = 10.0,
    on_frames: Callable[[torch.Tensor], None] | None = None,
    **overrides: Any,
) -> tuple[Path, StreamReport]:
    """`generate.generate` as a stream: same inputs and options, the same video frames, but the mp4 grows
    as frames become final (fragmented MP4 at `out`) and the report says the time to the first frame.
    `order="sweep"` runs the same engine step by step (the equality tests); `on_frames` sees every
    decoded chunk [3, n, H, W]."""
    opts = options_with(options, overrides)
    t_start = time.perf_counter()
    check_output_path(out)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    bundle = load_bundle(model, device, opts.distilled) if isinstance(model, (str, Path)) else model.to(device)
    sampler_config(bundle, opts)  # bad settings fail before the audio is read
    tracks = load_speaker_tracks(_audio_list(audio))
    num_frames = max(t.num_frames for t in tracks)
    features = extract_speaker_features(tracks, bundle.audio_extractor, num_frames)
    mux_audio = _output_audio(audio, tracks)
    check_output_audio(mux_audio)  # the AAC encoder opens, before any sampling (a resume too)
    stats = StreamStats(order=order)
    notes: list[str] = []
    prep = prepare_portrait(bundle, portrait, features.shape[0], opts, notes)

    def run(predictor, shape, *, config, distilled, seed, device, state_dir, resume, extra_hash, **_):
        stream_to_mp4(predictor, shape, config=config, vae=bundle.vae, num_frames=num_frames, out=out,
                      audio=mux_audio, distilled=distilled, seed=seed, device=device, order=order,
                      state_dir=state_dir, resume=resume, extra_hash=extra_hash, decode_chunk=opts.decode_chunk,
                      decode_context=opts.decode_context, callback=callback, save_every_s=save_every_s,
                      on_frames=on_frames, stats=stats, portrait=prep.reference)
        return torch.empty((shape[0], 0, *shape[2:]))

    sampled = sample_latent(bundle, portrait, features, num_frames, prompt, options=opts, device=device,
                            callback=callback, sampler_fn=run, prepared=prep)
    sampled.notes[:0] = notes
    if opts.state_dir is not None and not opts.keep_state:
        StreamState(opts.state_dir, (1, 1, 1)).clear()
    n_steps = len(sampled.config.distilled_timesteps) if opts.distilled else sampled.config.steps
    return Path(out), _report(out, stats, t_start, "distilled" if opts.distilled else "base", n_steps, opts.seed,
                              sampled.notes)


def _report(out, stats: StreamStats, t_start: float, mode: str, steps: int, seed: int, notes: list[str],
            latency: dict[str, float] | None = None) -> StreamReport:
    return StreamReport(
        path=str(out), frames=stats.frames, seconds=stats.frames / VIDEO_FPS, order=stats.order,
        first_frame_s=stats.first_frame_s, first_frame_since_process_s=stats.first_frame_since_process_s,
        wall_s=time.perf_counter() - t_start, run_s=stats.run_s, realtime_factor=stats.realtime_factor(),
        peak_rss_mb=peak_rss_mb(), windows=stats.windows,
        peak_in_flight_latent_frames=stats.peak_in_flight_latent_frames,
        resumed_from_latent_frame=stats.resumed_from_latent_frame, mode=mode, steps=steps, seed=seed, notes=notes,
        latency=latency,
    )


def generate_live(
    portrait: Any,
    source: str | Path,
    prompt: str,
    *,
    model: ModelBundle | str | Path,
    out: str | Path,
    options: GenerateOptions | None = None,
    device: str | torch.device | None = None,
    callback: ProgressCallback | None = None,
    idle_timeout_s: float = 2.0,
    on_frames: Callable[[torch.Tensor], None] | None = None,
    **overrides: Any,
) -> tuple[Path, StreamReport]:
    """One speaker's live voice (`source`: '-' for stdin, a named pipe, or a growing WAV file) -> a
    fragmented mp4 that grows until the voice ends. No resume: a live input cannot be read twice."""
    from magicinfinite_core.inputs.live_audio import LiveAudio

    opts = options_with(options, overrides)
    if opts.resume:
        raise MagicInfiniteError("live audio cannot be resumed (it cannot be read twice)")
    t_start = time.perf_counter()
    check_output_path(out)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    bundle = load_bundle(model, device, opts.distilled) if isinstance(model, (str, Path)) else model.to(device)
    scfg, cfg = sampler_config(bundle, opts)
    notes: list[str] = []
    prep = prepare_portrait(bundle, portrait, 1, opts, notes)
    live = LiveAudio(source, bundle.audio_extractor, idle_timeout_s=idle_timeout_s)
    try:
        cond = build_conditions(bundle, prep.image, prompt or "", live.features, prep.masks, device,
                                opts.negative_prompt)
        live.cond = cond
        predictor = WindowPredictor(bundle.dit, cond, cfg, dtype=next(bundle.dit.parameters()).dtype)
        n_steps = len(scfg.distilled_timesteps) if opts.distilled else scfg.steps
        plans = GrowingPlans(scfg, n_steps, wait=live.wait)
        h, w = cond.image_latent.shape[-2:]
        stats = stream_to_mp4(predictor, (bundle.dit.cfg.out_channels, 0, h, w), config=scfg, vae=bundle.vae,
                              num_frames=None, out=out, distilled=opts.distilled, seed=opts.seed, device=device,
                              decode_chunk=opts.decode_chunk, decode_context=opts.decode_context,
                              callback=callback, plans=plans, live=live, on_frames=on_frames,
                              portrait=prep.reference)
    finally:
        live.close()
    lat = live.latency()
    notes.append(f"live latency (audio in -> frame muxed): mean {lat['mean_s']:.2f} s, max {lat['max_s']:.2f} s")
    return Path(out), _report(out, stats, t_start, "distilled" if opts.distilled else "base", n_steps, opts.seed,
                              notes, lat)
