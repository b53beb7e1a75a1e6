"""How well does a linear readout of the prompt's emotion carry to phrasings it was not fitted on? (prints JSON)

Ridge regression of the emotion (smile 1, frown -1, surprise 0.2, neutral 0) fitted on training prompts
(`make_prompt`, split "train") and applied to held-out ones (split "heldout": other templates, other phrasings), read
from MiniLM's pooled text and from a demo DiT's conditioning vector at sigma 1 (SiLU of timestep + pooled-text
projection: what the expression bias reads with `vec_bias_input` "vec"), fitted with the world's phrasings alone and
with `prompts.EMOTION_PARAPHRASES` as well (each training prompt once more, its emotion said another way). Reported per
emotion: the mean prediction on training and on held-out prompts; a held-out smile near 1 means the readout
generalises.

Usage: OMP_NUM_THREADS=1 python bench/emotion_readout.py [--model DIR] [--train 800] [--heldout 200]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

TARGET = {"neutral": 0.0, "smile": 1.0, "frown": -1.0, "surprise": 0.2}


def _prompts(split: str, n: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    from training.data.prompts import ACTIONS, BACKGROUNDS, EMOTIONS, make_prompt

    out = []
    for i in range(n):
        controls = {"emotion": EMOTIONS[i % len(EMOTIONS)], "action": ACTIONS[int(rng.integers(len(ACTIONS)))],
                    "background": BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]}
        style = ("realistic", "anime", "sketch")[int(rng.integers(3))]
        out.append((make_prompt(controls, rng, split, style), controls["emotion"]))
    return out


def _fit(x: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    x1 = torch.cat([x, torch.ones(len(x), 1)], 1).double()
    return torch.linalg.solve(x1.T @ x1 + lam * torch.eye(x1.shape[1], dtype=torch.float64), x1.T @ y.double())


def _apply(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones(len(x), 1)], 1).double() @ w


def main(argv: list[str] | None = None) -> int:
    from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR, load_bundle
    from training.cache_encoders import MiniLMText
    from training.data.prompts import recaption

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEMO_MODEL_DIR), help="bundle whose DiTs' conditioning vectors are read")
    ap.add_argument("--train", type=int, default=800)
    ap.add_argument("--heldout", type=int, default=200)
    ap.add_argument("--lambdas", type=float, nargs="+", default=[1e-3, 1e-1, 1.0])
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    rng = np.random.default_rng(a.seed)
    train, held = _prompts("train", a.train, rng), _prompts("heldout", a.heldout, rng)
    extra = train + [(recaption(p, e, rng), e) for p, e in train]
    text = MiniLMText()

    def pooled(rows):
        with torch.inference_mode():
            return torch.cat([text.encode([p for p, _ in rows[i : i + 100]])[2] for i in range(0, len(rows), 100)])

    # each prompt set encoded once; the features are functions of its pooled text
    texts = {"held": pooled(held), "world": pooled(train)}
    texts["world+paraphrases"] = torch.cat([texts["world"], pooled(extra[len(train) :])])
    features = {"pooled": lambda p: p}
    for distilled in (True, False):
        dit = load_bundle(a.model, "cpu", distilled=distilled).dit.float().eval()

        def vec(p, dit=dit):
            with torch.inference_mode():
                return torch.nn.functional.silu(dit.time_in(torch.full((len(p),), 1000.0)) + dit.vector_in(p))

        features["vec_" + ("4step" if distilled else "base")] = vec
    held_x = {name: f(texts["held"]) for name, f in features.items()}
    result = {}
    for phrasings, rows in (("world", train), ("world+paraphrases", extra)):
        y = torch.tensor([TARGET[e] for _, e in rows])
        for name, f in features.items():
            x = f(texts[phrasings])
            for lam in a.lambdas:
                w = _fit(x, y, lam)
                fit, out = _apply(w, x), _apply(w, held_x[name])
                result[f"{name} / {phrasings} / lambda {lam:g}"] = {
                    e: {"train": float(fit[[r[1] == e for r in rows]].mean()),
                        "heldout": float(out[[r[1] == e for r in held]].mean())} for e in TARGET}
    print(json.dumps({"model": a.model, "train": a.train, "heldout": a.heldout, "readouts": result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
