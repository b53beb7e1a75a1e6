"""A training cache whose clips also appear with other phrasings of their emotion.

Why: the demo's expression bias reads the prompt's pooled text, and with the world's five phrasings per emotion it
held about half of a smile on held-out phrasings; every clip seen again with `prompts.EMOTION_PARAPHRASES` teaches
the readout what the phrasings share (docs/demo_model.md, session 23). Only the text is encoded again: the latents,
audio and portraits are the source cache's, linked (or copied where a link cannot be made).

    python -m training.recaption --cache out/v10/cache --out out/v10/cache_rc --copies 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from training.cache_encoders import MiniLMText
from training.canonical_safetensors import save_canonical
from training.data.prompts import recaption
from training.preprocess import read_cache_manifest
from training.shards import write_manifests

ROW_KEYS = ("name", "split", "prompt", "controls", "num_frames", "speaker")
TEXT_KEYS = ("text_tokens", "text_mask", "pooled")


def _link(src: Path, dst: Path) -> None:
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copy2(src, dst)


def recaption_cache(cache: str | Path, out: str | Path, copies: int = 2, seed: int = 0, batch: int = 64,
                    progress: bool = True) -> Path:
    """Write `out`: every clip of `cache`, plus `copies` copies of its training clips (names prefixed `rc<k>_`) whose
    prompts say their emotion in another training phrasing, the text encoded again with MiniLM. Returns the manifest."""
    from safetensors.torch import load_file
    from tqdm import tqdm

    cache, out = Path(cache), Path(out)
    if cache.resolve() == out.resolve():
        raise ValueError("--out must be a new folder: the source cache is read while the copy is written")
    if not (cache / "manifest.jsonl").is_file():
        raise FileNotFoundError(f"{cache} has no manifest.jsonl: point --cache at a folder written by "
                                "python -m training.preprocess")
    settings = json.loads((cache / "cache.json").read_text()) if (cache / "cache.json").is_file() else {}
    if settings.get("text_encoder", "minilm") != "minilm":
        raise ValueError(f"{cache} encodes its text with {settings['text_encoder']!r}; re-captioning encodes MiniLM "
                         "only (the demo's text encoder)")
    if copies < 1:
        raise ValueError(f"--copies must be at least 1, got {copies}")
    rows = read_cache_manifest(cache)
    train = [r for r in rows if r.get("split") == "train"]
    for r in train:  # every prompt checked before anything is written
        if "controls" not in r or "prompt" not in r:
            raise ValueError(f"{cache}: clip {r.get('name')} has no prompt or controls in the manifest")
        recaption(r["prompt"], r["controls"]["emotion"], np.random.default_rng(0))
    out.mkdir(parents=True, exist_ok=True)
    for name in ("null_text.safetensors", "cache.json"):
        if (cache / name).is_file():
            shutil.copy2(cache / name, out / name)
    for r in rows:
        _link(cache / r["file"], out / r["file"])
    text = MiniLMText(int(settings.get("text_max_tokens", 40)))
    made = []
    bar = tqdm(total=copies * len(train), desc="re-captioning", unit="clip", disable=not progress)
    for k in range(1, copies + 1):
        rng = np.random.default_rng([seed, k])
        new = [dict(r, prompt=recaption(r["prompt"], r["controls"]["emotion"], rng), name=f"rc{k}_{r['name']}",
                    file=f"rc{k}_{r['file']}") for r in train]
        for i in range(0, len(new), batch):
            part = new[i : i + batch]
            with torch.inference_mode():
                tokens, mask, pooled = text.encode([r["prompt"] for r in part])
            for j, r in enumerate(part):
                tensors = load_file(cache / train[i + j]["file"])
                tensors.update(text_tokens=tokens[j].to(tensors["text_tokens"].dtype), text_mask=mask[j],
                               pooled=pooled[j].to(tensors["pooled"].dtype))
                save_canonical(out / r["file"], tensors, kind="magicinfinite-cache-clip",
                               extra={"meta": json.dumps({key: r[key] for key in ROW_KEYS if key in r})})
            bar.update(len(part))
        made += new
    bar.close()
    return write_manifests(out, rows + made)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", required=True, help="a cache written by python -m training.preprocess")
    ap.add_argument("--out", required=True, help="the new cache's folder")
    ap.add_argument("--copies", type=int, default=2, help="re-captioned copies of each training clip")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    try:
        manifest = recaption_cache(a.cache, a.out, a.copies, a.seed)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
