"""Build a dataset of the procedural talking-head world.

    python -m training.data.build --out DIR --num-clips N --frames 33 --size 128 --split train --seed 0
    python -m training.data.build ... --photo-faces 0.5 --photo-textures 0.5   # real photographs

``--photo-faces P``: that fraction of clips are animated real photographs (photo_face.py);
``--photo-textures P``: that fraction of the drawn clips get photographic textures (photos.py);
``--photo-real-share S``: of the animated photos, the share that use a real photograph (the rest
AI-generated portraits; ``--no-generated-faces``: real ones only). Held-out builds use only
held-out photos.

Clip ``i`` of a split is a pure function of (seed, split, i, frames, size, world knobs), written
to ``DIR/<split>_<i:06d>/``. Finished clips are skipped, so an interrupted build resumes; the
manifest (``DIR/manifest.jsonl``) is rewritten from all finished clips at the end.
"""

from __future__ import annotations

import argparse
import sys
from multiprocessing import get_context
from pathlib import Path

from training.data.clip import is_clip_dir, make_clip, save_clip, write_manifest
from training.data.mouth import FPS
from training.data.render import WorldConfig
from training.data.speech import espeak_available
from training.data.splits import SPLITS, clip_seed


def clip_name(split: str, index: int) -> str:
    """Directory name of clip ``index`` of a split."""
    return f"{split}_{index:06d}"


def build_one(out: str, split: str, index: int, seed: int, frames: int, cfg: WorldConfig) -> str:
    """Make and save one clip unless it is already there; returns its directory."""
    d = Path(out) / clip_name(split, index)
    if not is_clip_dir(d):
        save_clip(make_clip(clip_seed(seed, split, index), split, frames, cfg), d)
    return str(d)


def _job(args: tuple) -> str:
    return build_one(*args)


def build(
    out: str | Path,
    num_clips: int,
    frames: int = 33,
    size: int = 128,
    split: str = "train",
    seed: int = 0,
    workers: int = 1,
    start: int = 0,
    cfg: WorldConfig | None = None,
    progress: bool = True,
) -> Path:
    """Build clips [start, start + num_clips) of a split into ``out``; returns the manifest path."""
    from tqdm import tqdm

    if not espeak_available():
        raise RuntimeError("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
    cfg = cfg or WorldConfig(size, size)
    if cfg.photo_generated and (cfg.photo_faces > 0 or cfg.photo_textures > 0):
        from training.data.photos import missing_generated

        if missing := missing_generated(split):
            raise RuntimeError(
                f"the AI-generated portraits of the {split!r} split come from {', '.join(missing)} (ComfyUI's "
                "workflow templates, not installed here): without them the photo world would animate only "
                f"the real photographs. Install them (pip install {' '.join(missing)}, or bash "
                "scripts/install_comfyui.sh) or pass --no-generated-faces.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = [
        (str(out), split, i, seed, frames, cfg)
        for i in range(start, start + num_clips)
        if not is_clip_dir(out / clip_name(split, i))
    ]
    bar = tqdm(total=num_clips, initial=num_clips - len(todo), desc=f"{split} clips", disable=not progress)
    if workers > 1 and len(todo) > 1:
        with get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_job, todo):
                bar.update(1)
    else:
        for job in todo:
            _job(job)
            bar.update(1)
    bar.close()
    return write_manifest(out)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see module docstring)."""
    p = argparse.ArgumentParser(prog="python -m training.data.build", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="dataset directory (created; existing clips are kept)")
    p.add_argument("--num-clips", type=int, required=True)
    p.add_argument("--frames", type=int, default=33, help="frames per clip at 25 fps")
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="clip length in seconds (overrides --frames; e.g. 60 for drift tests)",
    )
    p.add_argument("--size", type=int, default=128, help="square frame size in pixels (even)")
    p.add_argument("--split", choices=SPLITS, default="train")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--start", type=int, default=0, help="first clip index (to extend a dataset)")
    p.add_argument(
        "--face-min", type=float, default=WorldConfig.face_min, help="min face half-width / frame width"
    )
    p.add_argument(
        "--face-max", type=float, default=WorldConfig.face_max, help="max face half-width / frame width"
    )
    p.add_argument("--max-chars", type=int, default=WorldConfig.max_chars, help="1..3 characters per clip")
    p.add_argument(
        "--multi-prob", type=float, default=WorldConfig.multi_prob, help="probability of 2+ characters"
    )
    p.add_argument(
        "--photo-faces",
        type=float,
        default=WorldConfig.photo_faces,
        help="fraction of clips that are animated real photographs of the split (0..1)",
    )
    p.add_argument(
        "--photo-textures",
        type=float,
        default=WorldConfig.photo_textures,
        help="fraction of drawn clips with photographic background / skin / hair / clothes (0..1)",
    )
    p.add_argument("--photo-face-min", type=float, default=WorldConfig.photo_face_min)
    p.add_argument("--photo-face-max", type=float, default=WorldConfig.photo_face_max)
    p.add_argument(
        "--photo-real-share",
        type=float,
        default=WorldConfig.photo_real_share,
        help="share of animated-photo clips that use a real photograph (the rest: generated portraits)",
    )
    p.add_argument(
        "--no-generated-faces",
        action="store_true",
        help="real photographs only (leave out the AI-generated portraits of photos.py)",
    )
    p.add_argument("--backgrounds", nargs="+", default=list(WorldConfig.backgrounds),
                   help="background controls to draw from (e.g. static: nothing behind the person moves)")
    p.add_argument("--open-portraits", type=float, default=0.0,
                   help="share of animated photos that smile open which keep that open mouth on frame 0 (0..1)")
    p.add_argument("--greyscale", type=float, default=0.0,
                   help="share of animated photos rendered in grey levels with a warm / cool cast, like old prints (0..1)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.size % 2:
        p.error("--size must be even (H.264 yuv420p)")
    frames = int(round(a.seconds * FPS)) if a.seconds else a.frames
    for name in ("photo_faces", "photo_textures", "open_portraits", "greyscale"):
        if not 0.0 <= getattr(a, name) <= 1.0:
            p.error(f"--{name.replace('_', '-')} must be in 0..1")
    cfg = WorldConfig(
        a.size, a.size, a.face_min, a.face_max, a.max_chars, a.multi_prob,
        photo_faces=a.photo_faces, photo_textures=a.photo_textures,
        photo_face_min=a.photo_face_min, photo_face_max=a.photo_face_max,
        photo_generated=not a.no_generated_faces, photo_real_share=a.photo_real_share,
        backgrounds=tuple(a.backgrounds), photo_open_portraits=a.open_portraits,
        photo_greyscale=a.greyscale,
    )
    man = build(
        a.out, a.num_clips, frames, a.size, a.split, a.seed, a.workers, a.start, cfg, not a.no_progress
    )
    print(f"manifest: {man}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
