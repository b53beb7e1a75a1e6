"""Preprocessing caches (paper §4.1.1): everything the DiT trainer needs, computed once per clip.

    python -m training.preprocess --data out/demo/world --vae out/demo/vae/vae.safetensors --out out/demo/cache

Why: the VAE, the text encoder and the audio extractor are frozen during DiT training, so running
them every step would waste most of the compute. Per clip we store one safetensors file with

* ``latent``        [C, T, h, w] VAE posterior mean (scaled), the flow-matching data;
* ``audio``         [T, fpl, window, D] per-latent-frame audio windows (``group_audio_by_latent_frame``
                    over the WHOLE clip, so any window of latent frames stays exactly aligned); with
                    Whisper (HunyuanVideo-Avatar) [F, 10, layers, width] per video frame, the windows
                    ``WhisperExtractor`` gives the sampler, plus ``ref_latent`` [C, 1, h, w] (frame 0's
                    latent, the reference path) and, with LLaVA, ``null_text_*`` (its negative prompt
                    with the same portrait);
* ``face_tokens``   [T, h/ph, w/pw] speaker-mask token mask for the audio gating (paper Eq. 2);
* ``face_latent``   [h, w] binary face mask M_face at latent resolution (union over frames, Eq. 3);
* ``mouth_latent``  [h, w] binary mouth-box mask (union over frames) at latent resolution;
* ``text_tokens`` / ``text_mask`` / ``pooled``  the prompt's text-encoder output;
* ``image_tokens``  [N, C*ph*pw] the portrait's latent patches (the image tokens of the text stream);
* ``mouth_open``    [F] audio-derived lip target, ``mouth_box`` / ``face_box`` [F, 4] and the
                    ``portrait`` (frame 0, uint8): what the evaluation during training needs.

A manifest (``manifest.jsonl``, and per split in shards indexed by ``shards.json``: see
``training.shards``) lists the cached clips; ``cache.json`` records the settings and refuses to mix
caches made with different settings. The work runs as one Ray Data pipeline
(``cache_with_ray``: decoding tasks, an actor pool of encoders), in local mode or on the
cluster of ``RAY_ADDRESS``. Each file is written atomically with a canonical header, so an
interrupted run resumes by skipping finished clips, and 1 or N workers give byte-identical caches;
the VAE posterior mean makes it deterministic.

    python -m training.preprocess ... --workers 2                       # 2 encoder actors, local Ray
    RAY_ADDRESS=ray://head:10001 python -m training.preprocess ... --workers 8   # a cluster, 8 GPU actors
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from magicinfinite_core.config import latent_frames
from magicinfinite_core.inputs.masks import token_masks
from magicinfinite_core.media.autoencoders import Autoencoder, encode_video, moves_portrait, reference_latent
from magicinfinite_core.models.audio_layers import group_audio_by_latent_frame
from magicinfinite_core.models.dit import image_tokens_from_latent
from magicinfinite_core.weights.checkpoints import read_metadata
from training.cache_encoders import (
    HUNYUAN_MAX_TOKENS,
    TEXT_MAX_TOKENS,
    EncoderSpec,
    MiniLMText,
    build_audio,
    build_text,
    load_any_vae,
)
from training.canonical_safetensors import save_canonical
from training.data.clip import ClipArrays, list_clips, read_clip
from training.data.jsonl import read_jsonl, write_text_atomic
from training.data.tensors import box_mask, frames_to_tensor, latent_mask, speaker_mouth_boxes
from training.shards import DEFAULT_SHARD_ROWS, write_manifests

CACHE_FORMAT = 1


# ------------------------------------------------------------------------------------------- cache
@dataclass(frozen=True)
class CacheSettings:
    """Everything that changes the cached numbers; stored in cache.json and checked on resume."""

    vae_sha: str
    text_encoder: str = "minilm"
    text_max_tokens: int = TEXT_MAX_TOKENS
    audio_extractor: str = "mel"
    n_mels: int = 64
    n_fft: int = 1024
    frames_per_latent: int = 4
    audio_window: int = 5
    patch: tuple[int, int] = (4, 4)  # DiT patch = image-token patch (latent pixels)
    format: int = CACHE_FORMAT
    exact_flow: bool = True  # motion latents take the renderer's exact field where a clip has one


def file_sha(path: str | Path) -> str:
    """Content hash of a file, or of a model folder's config and weight files (a diffusers VAE)."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.suffix in (".json", ".safetensors")) if path.is_dir() else [path]
    h = hashlib.sha256()
    for file in files:
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def clip_latent(vae: Autoencoder, clip: ClipArrays, frames: torch.Tensor | None = None,
                exact_flow: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The clip's latent [C, T, h, w] and, for a motion latent, the portrait condition (else None).

    Animated photographs carry the renderer's exact flow to frame 0 (``portrait_flow``, photo_face.py); a
    motion latent takes it instead of optical flow, which is noise on flat skin and in the mouth gap
    (`exact_flow=False`: optical flow for every clip, as footage gets). The expression channel (a motion latent's
    mouth-corner lift) reads the exact field wherever a clip has one: optical flow reads a talking mouth's corners
    as a small smile (+0.007..+0.011 face heights on neutral world clips, the exact field +-0.003; session 21)."""
    frames = frames_to_tensor(clip.frames)[None] if frames is None else frames
    device = next(iter([*vae.parameters(), *vae.buffers()]), torch.empty(0)).device  # the actor's GPU, else CPU
    exact = clip.gt.get("portrait_flow")
    truth = None if exact is None else torch.from_numpy(exact.astype(np.float32))[None].to(device)
    with torch.no_grad():
        latent = encode_video(vae, frames.to(device), flow=truth if exact_flow else None, expression_flow=truth)[0]
        latent = latent.float().cpu()
        reference = reference_latent(vae, frames[:, :, 0].to(device))[0].float().cpu() if moves_portrait(vae) else None
    return latent, reference


def cache_clip(
    clip: ClipArrays,
    vae: Autoencoder,
    text: MiniLMText,
    extractor,
    settings: CacheSettings,
) -> dict[str, torch.Tensor]:
    """All cached tensors of one clip (see module doc)."""
    frames = frames_to_tensor(clip.frames)[None]
    device = next(iter([*vae.parameters(), *vae.buffers()]), torch.empty(0)).device  # the actor's GPU, else CPU
    latent, reference = clip_latent(vae, clip, frames, settings.exact_flow)
    c, t, h, w = latent.shape
    n = clip.frames.shape[0]
    avatar = hasattr(extractor, "windows")  # Whisper: HunyuanVideo-Avatar's per-video-frame windows
    if avatar:  # the sampler's exact windows ([F, 10, layers, width]); the batch picks frames 4*start...
        audio = extractor.windows(clip.audio, n).float()
        with torch.no_grad():  # the portrait (frame 0) for the Avatar reference path, as build_conditions does
            reference = reference_latent(vae, frames[:, :, 0].to(device))[0].float().cpu()
    else:
        feats = extractor.extract(clip.audio, n).float()  # [F, D]
        audio = group_audio_by_latent_frame(feats, settings.frames_per_latent, settings.audio_window)
    H, W = clip.frames.shape[1:3]
    speaker = clip.gt["speaker_mask"].astype(bool)  # [H, W] union over frames (paper's M_face)
    ph, pw = settings.patch
    # sized for the video's latent length (1 + ceil((F-1)/4)); the VAE drops a trailing partial group
    # of frames when F != 4k+1, but the sampler denoises the full length
    t_video = latent_frames(n, settings.frames_per_latent)
    face_tokens = token_masks(speaker[None], t_video, (h // ph, w // pw), settings.frames_per_latent)[0]
    mouth = box_mask(speaker_mouth_boxes(clip.gt, clip.meta), H, W, margin=0.15).any(0)
    null = {}
    if getattr(text, "uses_image", False):  # the 13B's LLaVA: the portrait through the vision tower
        tokens, mask, pooled = text.encode([clip.meta["prompt"]], [clip.frames[0]])
        if getattr(text, "avatar", False):  # Avatar's unconditional text: its negative prompt, same portrait
            from magicinfinite_core.inputs.text_encoders import AVATAR_NEGATIVE

            nt, nm, npool = text.encode([AVATAR_NEGATIVE], [clip.frames[0]])
            null = {"null_text_tokens": nt[0].half(), "null_text_mask": nm[0], "null_pooled": npool[0]}
    else:
        tokens, mask, pooled = text.encode([clip.meta["prompt"]])
    return null | {
        "latent": latent,
        "audio": audio.half(),
        "face_tokens": face_tokens,
        "face_latent": latent_mask(speaker, (h, w), "cover"),
        "mouth_latent": latent_mask(mouth, (h, w), "touch"),
        "text_tokens": tokens[0].half(),
        "text_mask": mask[0],
        "pooled": pooled[0],
        "image_tokens": image_tokens_from_latent(latent[None, :, :1], settings.patch)[0],
        "mouth_open": torch.from_numpy(np.asarray(clip.gt["mouth_open"], np.float32)),
        "mouth_box": torch.from_numpy(speaker_mouth_boxes(clip.gt, clip.meta)),
        "face_box": torch.from_numpy(np.asarray(clip.gt["face_box"][:, int(clip.meta.get("speaker", 0))], np.float32)),
        "portrait": torch.from_numpy(np.ascontiguousarray(clip.frames[0])),
    } | ({"ref_latent" if avatar else "reference_latent": reference} if reference is not None else {})


def _check_settings(out: Path, settings: CacheSettings) -> None:
    path = out / "cache.json"
    want = asdict(settings)
    want["patch"] = list(want["patch"])
    if path.is_file():
        have = {"exact_flow": True, **json.loads(path.read_text())}  # caches from before the choice existed
        if have != want:
            diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
            raise RuntimeError(
                f"{out} holds a cache made with other settings {diff}; use a new --out directory"
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(want, indent=1, sort_keys=True))  # shards start together


def preprocess(
    data_roots: list[str | Path],
    vae_path: str | Path,
    out: str | Path,
    *,
    limit: int | None = None,
    log_every: int = 50,
    shard: tuple[int, int] = (0, 1),
    split: str | None = None,
    patch: tuple[int, int] = (4, 4),
    workers: int = 1,
    threads: int = 2,
    address: str | None = None,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    encoders: EncoderSpec | None = None,
    exact_flow: bool = True,
) -> Path:
    """Cache every finished clip of the data roots (of `split` when given) into `out`; returns the
    manifest path. Each manifest row records its clip's split, which the trainers filter on.

    Runs as one Ray Data pipeline (`cache_with_ray`): CPU tasks decode the clips, a pool
    of `workers` encoder actors (one GPU each where the cluster has GPUs, `threads` torch threads
    each) computes and writes the cache files; the driver writes the sorted manifests, so the
    result does not depend on `workers`. Joins `address` / $RAY_ADDRESS, else starts Ray locally.

    patch: the DiT's spatial patch (latent pixels per token), which sets the token grid of the
    speaker masks and the image tokens' patch. encoders: the demo's (default) or the 13B model's
    (`training.cache_encoders.EncoderSpec`)."""
    from magicinfinite_core.distributed.ray_runtime import require_ray

    require_ray()  # before anything is written: says how to install Ray
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    spec = encoders or EncoderSpec()
    problems = spec.problems()
    if problems:
        raise ValueError("; ".join(problems))
    out = Path(out)
    settings = CacheSettings(vae_sha=file_sha(vae_path), text_encoder=spec.text_label, audio_extractor=spec.audio_label,
                             text_max_tokens=HUNYUAN_MAX_TOKENS if spec.text == "hunyuan" else TEXT_MAX_TOKENS,
                             patch=tuple(patch), exact_flow=exact_flow)
    _check_settings(out, settings)
    dirs = [d for root in data_roots for d in list_clips(root)]
    if split is not None:
        dirs = [d for d in dirs if json.loads((d / "meta.json").read_text()).get("split") == split]
    if limit is not None:
        dirs = dirs[:limit]
    dirs = dirs[shard[0] :: shard[1]]  # several processes can fill one cache (files are atomic)
    rows = cache_with_ray(dirs, vae_path, out, settings, spec, workers=workers, threads=threads, address=address,
                          log_every=log_every)
    if shard[1] > 1:  # other processes fill the same cache: rebuild from every finished file, as they will
        return write_cache_manifest(out, None, shard_rows)
    return write_cache_manifest(out, rows, shard_rows)


def encode_clip_file(clip: ClipArrays, path: Path, vae: Autoencoder, text: MiniLMText, extractor,
                     settings: CacheSettings) -> dict:
    """Cache one clip into `path` (atomic) and return its manifest row (without "file")."""
    tensors = cache_clip(clip, vae, text, extractor, settings)
    row = _row(clip)
    save_canonical(path, tensors, kind="magicinfinite-cache-clip", extra={"meta": json.dumps(row)})
    return row


def cached_row(path: str | Path) -> dict | None:
    """The manifest row stored in a finished cache file (None for files without one)."""
    meta = read_metadata(path)
    return json.loads(meta["meta"]) if "meta" in meta else None


def _row(clip: ClipArrays) -> dict:
    m = clip.meta
    return {
        "name": clip.name,
        "split": m["split"],
        "prompt": m["prompt"],
        "controls": m["controls"],
        "num_frames": int(clip.frames.shape[0]),
        "speaker": int(m.get("speaker", 0)),
    }


def write_cache_manifest(out: str | Path, rows: list[dict] | None = None,
                         shard_rows: int = DEFAULT_SHARD_ROWS) -> Path:
    """Rewrite manifest.jsonl, its shards and shards.json: the earlier manifest's rows whose files
    still exist, updated by `rows` (this run's clips, each with its "file"), sorted by file name.

    With rows None the rows are read back from every cache file in the folder (a repair for a
    cache whose manifest was lost)."""
    out = Path(out)
    if rows is None:
        found = ((p, cached_row(p)) for p in sorted(out.glob("*.safetensors")))
        return write_manifests(out, [{**r, "file": p.name} for p, r in found if r is not None], shard_rows)
    merged = {}
    if (out / "manifest.jsonl").is_file():
        merged = {r["file"]: r for r in read_cache_manifest(out) if (out / r["file"]).is_file()}
    merged.update({r["file"]: r for r in rows})
    return write_manifests(out, list(merged.values()), shard_rows)


def read_cache_manifest(out: str | Path) -> list[dict]:
    return read_jsonl(Path(out) / "manifest.jsonl")


# ------------------------------------------------------------------------------ Ray Data pipeline
# Why Ray Data: decoding a clip (PyAV, the wav, the ground truth) is cheap CPU work that scales with
# tasks, while the encoders (VAE, text, audio) are expensive to load and belong in long-lived actors,
# one GPU each where the cluster has GPUs. The same code runs in local mode and unchanged on a
# cluster (RAY_ADDRESS). Every actor writes its clips' files atomically and returns their manifest
# rows; the driver writes the manifests sorted, and each clip's numbers depend only on the clip, the
# encoders and the per-actor thread count, so 1 and N workers give byte-identical caches (tested). A
# clip whose cache file exists is not decoded again: its row is read back from the file (resume).
DECODE_CPUS = 0.5  # Ray CPUs per decoding task (PyAV + wav + ground truth of one clip)
MAX_BLOCKS = 2000  # input blocks of the clip list


def decode_clip(item: dict, out: str) -> dict:
    """Ray task: one clip folder -> its arrays (or, when already cached, just its stored row)."""
    from safetensors.numpy import save

    clip_dir = Path(item["clip"])
    path = Path(out) / f"{clip_dir.name}.safetensors"
    if path.is_file():
        row = cached_row(path)
        if row is not None:
            return {"name": clip_dir.name, "done": json.dumps(row), "frames": np.zeros((0, 0, 0, 3), np.uint8),
                    "audio": np.zeros(0, np.float32), "meta": "{}", "gt": b""}
    clip = read_clip(clip_dir)
    gt = save({k: np.ascontiguousarray(v) for k, v in clip.gt.items()})
    return {"name": clip.name, "done": "", "frames": clip.frames, "audio": np.asarray(clip.audio, np.float32),
            "meta": json.dumps(clip.meta), "gt": gt}


def write_null_text(out: str, spec: EncoderSpec, max_tokens: int, threads: int) -> None:
    """Ray task: the empty prompt's encoding (`null_text.safetensors`, the trainers' dropped text)."""

    if threads:
        torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokens, mask, pooled = build_text(spec, max_tokens, device).encode([""])  # no portrait: the UNCOND pass
    save_canonical(Path(out) / "null_text.safetensors",
                   {"text_tokens": tokens[0].half(), "text_mask": mask[0], "pooled": pooled[0]},
                   kind="magicinfinite-cache-null-text")


class ClipEncoder:
    """Ray actor: loads the VAE, the text encoder and the audio extractor once, then caches clips."""

    def __init__(self, vae_path: str, out: str, settings: dict, spec: EncoderSpec, threads: int) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.settings = s = CacheSettings(**{**settings, "patch": tuple(settings["patch"])})
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.vae = load_any_vae(vae_path, device)
        self.text = build_text(spec, s.text_max_tokens, device)
        self.extractor = build_audio(spec, s.n_mels, s.n_fft, device)
        self.out = Path(out)

    def __call__(self, batch: dict) -> dict:
        from safetensors.numpy import load

        names, rows = [], []
        for i in range(len(batch["name"])):
            name = str(batch["name"][i])
            done = str(batch["done"][i])
            if done:
                row = json.loads(done)
            else:
                clip = ClipArrays(name, np.asarray(batch["frames"][i]), np.asarray(batch["audio"][i]),
                                  load(bytes(batch["gt"][i])), json.loads(str(batch["meta"][i])))
                row = encode_clip_file(clip, self.out / f"{name}.safetensors", self.vae, self.text,
                                       self.extractor, self.settings)
            names.append(name)
            rows.append(json.dumps({**row, "file": f"{name}.safetensors"}, sort_keys=True))
        return {"name": np.array(names), "row": np.array(rows)}


def cache_with_ray(
    dirs: list[Path],
    vae_path: str | Path,
    out: str | Path,
    settings,
    spec,
    *,
    workers: int = 1,
    threads: int = 2,
    address: str | None = None,
    log_every: int = 50,
) -> list[dict]:
    """Cache `dirs` into `out` on Ray with the encoders of `spec` (`cache_encoders.EncoderSpec`);
    writes the empty prompt's encoding first when missing; returns the clips' manifest rows (with
    "file"), sorted by name.

    Local mode gets `workers` + 1 CPUs (the encoder actors and the decoding tasks); on a cluster
    the actors ask for one GPU each when the cluster has GPUs. Ray is shut down again when this
    call started it.
    """
    from magicinfinite_core.distributed.ray_runtime import init_ray, require_ray

    ray = require_ray()
    null_missing = not (Path(out) / "null_text.safetensors").is_file()
    if not dirs and not null_missing:
        return []
    started = not ray.is_initialized()
    init_ray(address, num_cpus=workers + 1)
    try:
        import logging

        ctx = ray.data.DataContext.get_current()  # (importing ray.data configures its loggers)
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # our own "cached i/n" lines instead
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        if null_missing:
            task = ray.remote(num_cpus=1, num_gpus=gpus)(write_null_text)
            ray.get(task.remote(str(out), spec, settings.text_max_tokens, threads))
        if not dirs:
            return []
        s = asdict(settings)
        s["patch"] = list(s["patch"])
        # blocks of a few clips each (not one block per clip: millions of blocks would swamp the scheduler)
        ds = ray.data.from_items([{"clip": str(d)} for d in dirs], override_num_blocks=min(len(dirs), MAX_BLOCKS))
        # decoding as tasks (their own operator: other resources than the actors, so Ray does not fuse
        # them into the actors), encoding in a fixed pool of `workers` actors
        ds = ds.map(decode_clip, fn_kwargs={"out": str(out)}, num_cpus=DECODE_CPUS)
        ds = ds.map_batches(ClipEncoder, fn_constructor_kwargs={"vae_path": str(vae_path), "out": str(out),
                                                                "settings": s, "spec": spec, "threads": threads},
                            batch_size=1, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
                            num_cpus=1, num_gpus=gpus)
        rows = []
        for i, rec in enumerate(ds.iter_rows()):
            rows.append(json.loads(rec["row"]))
            if log_every and (i + 1) % log_every == 0:
                print(f"cached {i + 1}/{len(dirs)}", flush=True)
    finally:
        if started:
            ray.shutdown()
    return sorted(rows, key=lambda r: r["file"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.preprocess", description=__doc__.split("\n")[0])
    p.add_argument("--data", nargs="+", required=True, help="dataset directories of clip folders")
    p.add_argument("--vae", required=True, help="autoencoder .safetensors (training.train_vae or training.fit_autoencoder), "
                                                "or a HunyuanVideo VAE (file or diffusers folder) for the 13B")
    p.add_argument("--out", required=True, help="cache directory (resumes if it exists)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--threads", type=int, default=2, help="torch threads per encoder worker")
    p.add_argument("--workers", type=int, default=1,
                   help="encoder workers (Ray actors; one GPU each where Ray sees GPUs). Local mode starts "
                        "Ray with N+1 CPUs; set RAY_ADDRESS (or --address) to run on a cluster")
    p.add_argument("--address", default=None, help="Ray cluster to join (default $RAY_ADDRESS, else local)")
    p.add_argument("--text-encoder", choices=("minilm", "hunyuan"), default="minilm",
                   help="minilm (the demo) or hunyuan (LLaVA-llama-3 + CLIP-L of the 13B: --llava, --clip)")
    p.add_argument("--llava", default="", help="LLaVA-llama-3 folder (text_encoder_i2v, transformers format)")
    p.add_argument("--clip", default="", help="CLIP-L text folder (clip-vit-large-patch14)")
    p.add_argument("--audio-encoder", choices=("mel", "wav2vec2", "whisper"), default="mel",
                   help="mel (the demo), wav2vec2 (the 13B: --wav2vec2) or whisper (HunyuanVideo-Avatar: --whisper; "
                        "also writes the portrait's ref_latent; give --patch 2 2)")
    p.add_argument("--wav2vec2", default="", help="wav2vec2 folder or ComfyUI .safetensors")
    p.add_argument("--whisper", default="", help="whisper-tiny folder or .safetensors (HunyuanVideo-Avatar)")
    p.add_argument("--manifest-shard-rows", type=int, default=DEFAULT_SHARD_ROWS,
                   help="manifest rows per shard (shards/<split>-NNNNN.jsonl, indexed by shards.json)")
    p.add_argument("--shard", default="0/1", help="i/n: this process caches every n-th clip from i")
    p.add_argument("--patch", type=int, nargs=2, default=[4, 4], metavar=("PH", "PW"),
                   help="the DiT's spatial patch in latent pixels (token grid of masks and image tokens)")
    p.add_argument("--split", choices=("all", "train", "heldout"), default="all",
                   help="cache only this split's clips (default all: trainers pick the train rows, "
                        "the evaluation the held-out ones)")
    p.add_argument("--optical-flow", action="store_true",
                   help="encode motion latents with optical flow even where a clip carries the renderer's exact "
                        "field (animated photographs), as footage is encoded")
    a = p.parse_args(argv)
    from training.runconfig import fail, missing_inputs, split_counts

    problems = missing_inputs([(Path(d).is_dir(), f"--data {d} is not a folder") for d in a.data]
                              + [(Path(a.vae).exists(), f"--vae {a.vae} does not exist (train one: "
                                                         "python -m training.train_vae ...)")])
    try:
        i, n = (int(v) for v in a.shard.split("/"))
    except ValueError:
        problems.append(f"--shard {a.shard!r}: expected i/n")
    if a.workers < 1:
        problems.append(f"--workers {a.workers}: need at least 1")
    spec = EncoderSpec(a.text_encoder, a.audio_encoder, a.llava, a.clip, a.wav2vec2, a.whisper)
    problems += spec.problems()
    if a.manifest_shard_rows < 1:
        problems.append(f"--manifest-shard-rows {a.manifest_shard_rows}: need at least 1")
    if problems:
        return fail(problems, "python -m training.preprocess")
    from magicinfinite_core.distributed.ray_runtime import RayUnavailableError

    torch.set_num_threads(a.threads)
    split = None if a.split == "all" else a.split
    try:
        manifest = preprocess(a.data, a.vae, a.out, limit=a.limit, shard=(i, n), split=split, patch=tuple(a.patch),
                              workers=a.workers, threads=a.threads, address=a.address,
                              shard_rows=a.manifest_shard_rows, encoders=spec, exact_flow=not a.optical_flow)
    except RayUnavailableError as e:
        return fail([str(e)], "python -m training.preprocess")
    counts = split_counts(r.get("split") for r in read_cache_manifest(manifest.parent))
    print(f"manifest: {manifest} ({', '.join(f'{k} {v}' for k, v in counts.items())} clips)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
