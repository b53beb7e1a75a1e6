"""Contact sheet of the world, for looking at it (humans judge faces better than tests do).

    python -m training.data.preview --out test-artifacts/world_contact_sheet.png
    python -m training.data.preview --photo-faces 0.5 --photo-textures 0.5 --size 128 --out test-artifacts/photo_world.png

Rows are clips (mixed styles, sizes, 1-3 characters, train and held-out); columns are frames
spread over the clip, with the ground-truth mouth opening drawn as a bar under each frame.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from training.data.clip import Clip, make_clip
from training.data.render import WorldConfig
from training.data.splits import clip_seed


def contact_sheet(clips: list[Clip], cols: int = 6, cell: int = 128) -> np.ndarray:
    """uint8 image: one row per clip, ``cols`` frames each, resized to ``cell`` pixels."""
    from PIL import Image

    rows = []
    for c in clips:
        idx = np.linspace(0, c.num_frames - 1, cols).round().astype(int)
        cells = []
        for i in idx:
            im = np.asarray(Image.fromarray(c.frames[i]).resize((cell, cell), Image.NEAREST))
            bar = np.full((6, cell, 3), 255, np.uint8)
            bar[1:5, : int(round(float(c.gt["mouth_open"][i]) * (cell - 1))) + 1] = (200, 30, 30)
            cells.append(np.concatenate([im, bar], 0))
        rows.append(np.concatenate(cells, 1))
    return np.concatenate(rows, 0)


def main(argv: list[str] | None = None) -> int:
    """Render a few clips and save their contact sheet as PNG."""
    from PIL import Image

    p = argparse.ArgumentParser(prog="python -m training.data.preview")
    p.add_argument("--out", default="test-artifacts/world_contact_sheet.png")
    p.add_argument("--clips", type=int, default=10)
    p.add_argument("--frames", type=int, default=33)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--photo-faces", type=float, default=0.0, help="fraction of animated real photographs")
    p.add_argument("--photo-textures", type=float, default=0.0, help="fraction of drawn clips with photo textures")
    p.add_argument("--size", type=int, default=0, help="frame size of every clip (default: mix 64 / 128)")
    p.add_argument("--cols", type=int, default=6)
    p.add_argument("--heldout-every", type=int, default=4, help="every N-th clip is held-out (0: none)")
    a = p.parse_args(argv)
    clips = []
    for i in range(a.clips):
        split = "heldout" if a.heldout_every and i % a.heldout_every == a.heldout_every - 1 else "train"
        size = a.size or (64 if i % 3 == 2 else 128)
        cfg = WorldConfig(size, size, photo_faces=a.photo_faces, photo_textures=a.photo_textures)
        clips.append(make_clip(clip_seed(a.seed, split, i), split, a.frames, cfg))
        m = clips[-1].meta
        what = m["photo"]["name"] if m.get("kind") == "photo_face" else f"{m['style']} x{m['num_characters']}"
        print(f"{i}: {split} {size}px {m.get('kind', 'drawn')} {what}: {m['prompt']}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(contact_sheet(clips, cols=a.cols)).save(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
