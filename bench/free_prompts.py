"""Do prompts a user types, not the world's templates, set the expression channel? (prints JSON)

The 4-step generator samples Grace Hopper's photograph with held-out voices once per prompt; each prompt is a free
sentence written for this bench (neutral, smiling, frowning; none of them a training or held-out template). Read is
the sampled expression channel (the mouth corners' lift, face heights) over each video's second half, before
decoding (the decode holds a lift under `expression_deadzone`, 0.003). Several bundles side by side in one run.

Usage: OMP_NUM_THREADS=1 python bench/free_prompts.py [--models DIR ...] [--seeds 500 501]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

PROMPTS = {
    "neutral": ("A woman talking to the camera.", "An old lady speaks calmly.",
                "A person reading the news with a serious, neutral look."),
    "smile": ("A smiling woman talks to the camera.", "She is happy and laughing while she speaks.",
              "An elderly woman tells a funny story with a big grin."),
    "frown": ("An angry woman talks to the camera.", "She is sad and upset while she speaks.",
              "A grumpy old lady complains, frowning."),
}


def main(argv: list[str] | None = None) -> int:
    from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR, load_bundle
    from training.eval import real_photos as rp

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=[str(DEMO_MODEL_DIR)], help="bundle folders with a 4-step generator")
    ap.add_argument("--seeds", type=int, nargs="+", default=[500, 501], help="held-out voices")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    photo = rp.picture_by_name(rp.HALF_LENGTH, Path(tempfile.mkdtemp(prefix="free_prompts_")))
    voices = [rp.heldout_speech(a.seconds, seed)[0] for seed in a.seeds]
    result = {}
    for model in a.models:
        bundle = load_bundle(model, "cpu", distilled=True)
        rows = []
        for seed, wav in zip(a.seeds, voices, strict=True):
            for emotion, prompts in PROMPTS.items():
                for prompt in prompts:
                    rows.append({"seed": seed, "emotion": emotion, "prompt": prompt,
                                 "lift": rp.sampled_expression_lift(bundle, photo, wav, prompt)})
                    print(json.dumps({"model": model, **rows[-1]}), file=sys.stderr, flush=True)
        result[model] = {"mean_lift": {e: statistics.mean(r["lift"] for r in rows if r["emotion"] == e) for e in PROMPTS},
                         "rows": rows}
    print(json.dumps({"photo": rp.HALF_LENGTH, "seeds": a.seeds, "seconds": a.seconds, "models": result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
