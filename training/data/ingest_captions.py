"""A caption for each ingested clip, and where it came from (``meta.json`` ``caption_source``).

Order of sources (the first that has one wins):

1. ``list``: the ``caption`` column of the CSV / JSONL list;
2. ``sidecar_txt`` / ``sidecar_json``: ``<stem>.txt`` (its text) or ``<stem>.json`` (its
   ``caption`` or ``prompt`` key) next to the video;
3. ``captioner``: a local image-to-text model through transformers (``AutoModelForImageTextToText``),
   loaded from a folder with ``local_files_only`` (never a hub download), greedy decoding on the
   clip's middle frame;
4. ``template``: a sentence of the world's prompt phrases for the measured head action
   (``prompts.phrases_for_split``), drawn with the clip's seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from training.data.prompts import phrases_for_split


def sidecar_caption(video: str | Path) -> tuple[str, str] | None:
    """(caption, source) from ``<stem>.txt`` / ``<stem>.json`` beside the video, or None."""
    p = Path(video)
    txt, js = p.with_suffix(".txt"), p.with_suffix(".json")
    if txt.is_file() and txt.read_text().strip():
        return " ".join(txt.read_text().split()), "sidecar_txt"
    if js.is_file():
        try:
            d = json.loads(js.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{js}: not JSON ({e.msg}); write {{\"caption\": \"...\"}}") from None
        cap = d.get("caption") or d.get("prompt") if isinstance(d, dict) else None
        if cap and str(cap).strip():
            return " ".join(str(cap).split()), "sidecar_json"
    return None


class LocalCaptioner:
    """A transformers image-to-text model (``AutoModelForImageTextToText``: BLIP, ViT-GPT2 style
    vision-encoder-decoders, ...) from a local folder only (module docstring, source 3)."""

    def __init__(self, folder: str | Path, max_new_tokens: int = 40) -> None:
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"--captioner {folder}: no config.json there; give the folder of a transformers "
                "image-to-text model saved with save_pretrained (nothing is downloaded)"
            )
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        self.model = AutoModelForImageTextToText.from_pretrained(str(folder), local_files_only=True).eval()
        self.images = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.max_new_tokens = max_new_tokens

    def __call__(self, frame: np.ndarray) -> str:
        import torch
        from PIL import Image

        pixels = self.images(images=Image.fromarray(np.ascontiguousarray(frame)), return_tensors="pt").pixel_values
        with torch.no_grad():  # greedy decoding: the same frame always gets the same caption
            ids = self.model.generate(pixel_values=pixels, max_new_tokens=self.max_new_tokens, do_sample=False)
        return " ".join(self.tokenizer.batch_decode(ids, skip_special_tokens=True)[0].split())


def template_caption(action: str, split: str, rng: np.random.Generator, num_characters: int = 1) -> str:
    """A world-style sentence for a real clip: style 'realistic', who, the measured head action."""
    ph = phrases_for_split(split)
    style = ph["style"]["realistic"][int(rng.integers(len(ph["style"]["realistic"])))]
    act = ph["action"][action][int(rng.integers(len(ph["action"][action])))]
    who = "a person" if num_characters == 1 else f"{num_characters} people, one of them"
    text = f"{style} {who} talking, {act}."
    return text[:1].upper() + text[1:]


def clip_caption(
    list_caption: str | None,
    video: str,
    action: str,
    split: str,
    rng: np.random.Generator,
    frame: np.ndarray,
    captioner: LocalCaptioner | None = None,
    num_characters: int = 1,
) -> tuple[str, str]:
    """(caption, caption_source) by the order of the module docstring."""
    if list_caption:
        return list_caption, "list"
    side = sidecar_caption(video)
    if side is not None:
        return side
    if captioner is not None:
        text = captioner(frame)
        if text:  # an empty generation falls through to the template
            return text, "captioner"
    return template_caption(action, split, rng, num_characters), "template"
