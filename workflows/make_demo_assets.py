"""Writes the demo workflows' portraits (workflows/assets/portrait_*.png) from held-out photographs.

    python workflows/make_demo_assets.py

Why held-out: a demo on a face the demo model never trained on shows it keeping a person it does not
know (training/data/photos.py marks the splits). Why 512 px: the demo model moves the portrait at its
own resolution, so the workflows' videos are 512 x 512.

* portrait_one_speaker.jpg: matplotlib's grace_hopper.jpg (US Navy photograph, public domain),
  512 x 600 cut to its 512 x 512 rows 40..552.
* portrait_two_speakers.jpg: Grace Hopper beside the AI-generated held-out portrait
  `gen_ltxv_text_to_video-1` (ComfyUI workflow-template thumbnail, MIT), each cut around its face
  (`training.eval.real_photos.composite`), 512 x 512.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    from PIL import Image

    from training.data import photos
    from training.eval.real_photos import composite

    hopper = photos.load_photo("grace_hopper")
    one = np.ascontiguousarray(hopper[40:552, :512])
    Image.fromarray(one).save(HERE / "assets" / "portrait_one_speaker.jpg", quality=90, optimize=True)
    two = composite([hopper, photos.load_photo("gen_ltxv_text_to_video-1")], 2, size=512)
    Image.fromarray(two).save(HERE / "assets" / "portrait_two_speakers.jpg", quality=90, optimize=True)


if __name__ == "__main__":
    main()
