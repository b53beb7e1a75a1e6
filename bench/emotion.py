"""Does an emotion in the prompt change the video? (prints JSON) The demo makes the same held-out video (a picture,
a held-out voice, a still head) once per emotion (neutral, smile, frown, surprise), each prompt drawn from the same
random stream, through `generate` with the mp4 read back, and face mesh reads each face's expression over the second
half of the video against the portrait (`real_photos.expression_change`: mouth-corner lift, brow lift, mouth width).

Reported per mode: the AUC of each emotion against the neutral videos on the measure that emotion moves in the
training world (smile: corners up; frown: corners and brows down; surprise: brows up, mouth narrower), the mean
change per emotion, and every video's row. 0.5 is no effect; the nodding-vs-still target is 0.85.

Usage: OMP_NUM_THREADS=1 python bench/emotion.py [--modes distilled base] [--seeds 500 501 502 503]
       [--pictures grace_hopper open_smile] [--phrases heldout|train] [--text-scale S] [--seconds 4] [--videos DIR]
(`--text-scale`: the base model's text guidance, in place of the bundle's; `--phrases train`: phrasings the DiT
was trained on, to tell text understanding from motion.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

EMOTIONS = ("neutral", "smile", "frown", "surprise")
# per emotion: (measure, sign) pairs whose AUC against neutral says whether the video shows it
SIGNS = {"smile": (("corner_lift", 1),), "frown": (("corner_lift", -1), ("brow_lift", -1)),
         "surprise": (("brow_lift", 1), ("mouth_width", -1))}


def main(argv: list[str] | None = None) -> int:
    from magicinfinite_core.generate import generate
    from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR, load_bundle
    from training.data.prompts import make_prompt
    from training.eval import metrics
    from training.eval import real_photos as rp

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEMO_MODEL_DIR))
    ap.add_argument("--modes", nargs="+", choices=("distilled", "base"), default=["distilled", "base"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[500, 501, 502, 503], help="held-out voices")
    ap.add_argument("--pictures", nargs="+", default=[rp.HALF_LENGTH, "open_smile"])
    ap.add_argument("--phrases", choices=("heldout", "train"), default="heldout")
    ap.add_argument("--text-scale", type=float, default=None, help="base model's text guidance (default: the bundle's)")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--videos", default=None, help="keep the videos here (<mode>_<picture>_<seed>_<emotion>.mp4)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    work = Path(a.videos) if a.videos else Path(tempfile.mkdtemp(prefix="emotion_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    with torch.inference_mode(), rp.FaceMeter() as meter:
        for mode in a.modes:
            distilled = mode == "distilled"
            bundle = load_bundle(a.model, "cpu", distilled=distilled)
            extra = {}
            if not distilled and a.text_scale is not None:  # the model's own guidance, its text scale replaced
                extra["cfg"] = dataclasses.replace(bundle.resolve_sampling(False)[2], text_scale=a.text_scale)
            for name in a.pictures:
                photo = rp.picture_by_name(name, work)
                portrait = rp._rgb(photo)
                for seed in a.seeds:
                    wav, info = rp.heldout_speech(a.seconds, seed)
                    for emotion in EMOTIONS:
                        # the same random stream for every emotion: the sentences differ in the emotion's phrase, and
                        # sometimes in which held-out still phrasing they use (neutral has one phrase, so it draws
                        # differently from the others)
                        prompt = make_prompt({"emotion": emotion, "action": "still", "background": "static"},
                                             np.random.default_rng([seed, 43]), a.phrases, "realistic")
                        path, _ = generate(photo, rp._wav(wav), prompt, model=bundle, distilled=distilled, seed=0,
                                           out=work / f"{mode}_{name}_{seed}_{emotion}.mp4", **extra)
                        change = rp.expression_change(rp.read_video(path), portrait, meter)
                        rows.append({"mode": mode, "picture": name, "seed": seed, "voice": info["voice"],
                                     "emotion": emotion, "prompt": prompt, **change})
                        print(json.dumps(rp.json_safe(rows[-1])), file=sys.stderr, flush=True)
    summary = {}
    for mode in a.modes:
        sel = [r for r in rows if r["mode"] == mode and r["corner_lift"] is not None]
        by = {e: [r for r in sel if r["emotion"] == e] for e in EMOTIONS}
        summary[mode] = {
            "auc_vs_neutral": {f"{e}_{key}": metrics.separability([s * r[key] for r in by["neutral"]],
                                                                 [s * r[key] for r in by[e]])["auc"]
                               for e, pairs in SIGNS.items() for key, s in pairs},
            "mean_change": {e: {k: statistics.mean(r[k] for r in rs) for k in ("corner_lift", "brow_lift", "mouth_width")}
                            for e, rs in by.items() if rs},
        }
    print(json.dumps(rp.json_safe({"model": a.model, "seconds": a.seconds, "pictures": a.pictures, "seeds": a.seeds,
                                   "phrases": a.phrases, "text_scale": a.text_scale, "summary": summary,
                                   "rows": rows}), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
