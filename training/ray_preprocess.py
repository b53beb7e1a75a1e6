"""The preprocessing caches as one Ray Data pipeline: CPU tasks decode, an actor pool encodes.

Why Ray Data: decoding a clip (PyAV, the wav, the ground truth) is cheap CPU work that scales
with tasks, while the encoders (VAE, MiniLM, mel) are expensive to load and belong in long-lived
actors, one GPU each where the cluster has GPUs. The same code runs in local mode on one machine
and unchanged on a cluster (``RAY_ADDRESS``). Every actor writes its clips' files atomically and
returns their manifest rows; the driver writes the manifests sorted, and each clip's numbers
depend only on the clip, the VAE and the per-actor thread count, so 1 and N workers give
byte-identical caches (tested). A clip whose cache file already exists is not decoded again: its
row is read back from the file (resume).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

DECODE_CPUS = 0.5  # Ray CPUs per decoding task (PyAV + wav + ground truth of one clip)


def decode_clip(item: dict, out: str) -> dict:
    """Ray task: one clip folder -> its arrays (or, when already cached, just its stored row)."""
    from safetensors.numpy import save

    from training.data.clip import read_clip
    from training.preprocess import cached_row

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


def write_null_text(out: str, spec, max_tokens: int, threads: int) -> None:
    """Ray task: the empty prompt's encoding (`null_text.safetensors`, the trainers' dropped text)."""
    import torch

    from training.cache_encoders import build_text
    from training.canonical_safetensors import save_canonical

    if threads:
        torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokens, mask, pooled = build_text(spec, max_tokens, device).encode([""])  # no portrait: the UNCOND pass
    save_canonical(Path(out) / "null_text.safetensors",
                   {"text_tokens": tokens[0].half(), "text_mask": mask[0], "pooled": pooled[0]},
                   kind="magicinfinite-cache-null-text")


class ClipEncoder:
    """Ray actor: loads the VAE, the text encoder and the audio extractor once, then caches clips."""

    def __init__(self, vae_path: str, out: str, settings: dict, spec, threads: int) -> None:
        import torch

        from training.cache_encoders import build_audio, build_text, load_any_vae
        from training.preprocess import CacheSettings

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

        from training.data.clip import ClipArrays
        from training.preprocess import encode_clip_file

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
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        if null_missing:
            task = ray.remote(num_cpus=1, num_gpus=gpus)(write_null_text)
            ray.get(task.remote(str(out), spec, settings.text_max_tokens, threads))
        if not dirs:
            return []
        s = asdict(settings)
        s["patch"] = list(s["patch"])
        ds = ray.data.from_items([{"clip": str(d)} for d in dirs], override_num_blocks=len(dirs))
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
