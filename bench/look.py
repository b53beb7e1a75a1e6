"""Render and measure what a user sees, with the shipped demo (prints JSON): a real photograph of a person (held out)
with a held-out voice and a held-out still phrasing, and a held-out training-world clip's portrait with its own voice
and prompt, each through `generate` with both modes. Per video: identity outside the mouth and of the upper face
against the portrait (dB), upper-face flicker (grey levels), face-mesh lip sync (best r, lag +-2) against the voice
and against the voice reversed; and a frame strip (PNG, `real_photos.save_strip`) to look at.

Usage: OMP_NUM_THREADS=2 python bench/look.py [--model DIR] [--out DIR] [--seconds 5] [--seed 510]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

KEYS = ("psnr", "upper_psnr", "upper_flicker", "lipsync_r", "lipsync_r_reversed", "lipsync_r_margin", "face_detected")


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    from magicinfinite_core.generate import generate
    from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR, load_bundle
    from training.data.clip import make_clip
    from training.data.render import WorldConfig
    from training.eval import real_photos as rp

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEMO_MODEL_DIR))
    ap.add_argument("--out", default="out/look")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=510)
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    photo = rp.heldout_photo(rp.HALF_LENGTH, out)
    voice, _ = rp.heldout_speech(a.seconds, a.seed)
    world = make_clip(a.seed, "heldout", int(a.seconds * 25), WorldConfig(128, 128, photo_faces=1.0, photo_face_min=0.2,
                                                                           photo_face_max=0.3),
                      controls={"emotion": "neutral", "action": "still", "background": "static"})
    Image.fromarray(world.frames[0]).save(out / "world_portrait.png")
    inputs = {"photo": (photo, voice, rp.heldout_prompt(a.seed)),
              "world": (out / "world_portrait.png", np.asarray(world.audio, np.float32), world.meta["prompt"])}
    rows = {}
    with rp.FaceMeter() as meter:
        for mode in ("distilled", "base"):
            bundle = load_bundle(a.model, "cpu", distilled=mode == "distilled")
            for name, (picture, wav, prompt) in inputs.items():
                path, _ = generate(picture, rp._wav(wav), prompt, model=bundle, distilled=mode == "distilled", seed=0,
                                   out=out / f"{name}_{mode}.mp4")
                frames = rp.read_video(path)
                ref = rp.pipeline_reference(bundle, picture, meter)
                m = rp.talking_measures(frames, wav, ref, meter)
                rp.save_strip(out / f"{name}_{mode}.png", ref.image, frames, face_box=ref.faces[0].box)
                rows[f"{name} {mode}"] = {"prompt": prompt, "size": list(frames.shape[1:3]), **{k: m[k] for k in KEYS}}
                print(f"{name} {mode}: done", file=sys.stderr, flush=True)
    print(json.dumps(rp.json_safe({"model": a.model,
                                   "videos": rows, "strips": str(out)}), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
