"""Re-captioned caches: the same clips with other phrasings of their emotion, the text encoded again by MiniLM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from training.cache_encoders import MiniLMText
from training.canonical_safetensors import save_canonical
from training.data import prompts
from training.recaption import main, recaption_cache
from training.shards import write_manifests
from training.trainer import CacheData


def _cache(root: Path, text: MiniLMText, n: int = 4) -> Path:
    """A cache in preprocess's layout whose text is MiniLM's encoding of real training prompts."""
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(1)
    root.mkdir(parents=True)
    rows = []
    for i in range(n):
        controls = {"emotion": prompts.EMOTIONS[i % 4], "action": "still", "background": "static"}
        prompt = prompts.make_prompt(controls, rng, "train", "realistic")
        tokens, mask, pooled = text.encode([prompt])
        row = {"name": f"train_{i:06d}", "split": "train", "prompt": prompt, "controls": controls,
               "num_frames": 5, "speaker": 0}
        save_canonical(root / f"train_{i:06d}.safetensors", {
            "latent": torch.randn(4, 2, 4, 4, generator=g), "audio": torch.randn(2, 4, 5, 8, generator=g).half(),
            "face_tokens": torch.ones(2, 2, 2), "face_latent": torch.ones(4, 4), "mouth_latent": torch.ones(4, 4),
            "text_tokens": tokens[0].half(), "text_mask": mask[0], "pooled": pooled[0],
            "image_tokens": torch.randn(4, 16, generator=g)}, kind="magicinfinite-cache-clip",
            extra={"meta": json.dumps(row)})
        rows.append({**row, "file": f"train_{i:06d}.safetensors"})
    held = dict(rows[0], name="heldout_000000", file="heldout_000000.safetensors", split="heldout")
    (root / held["file"]).write_bytes((root / rows[0]["file"]).read_bytes())
    tokens, mask, pooled = text.encode([""])
    save_canonical(root / "null_text.safetensors", {"text_tokens": tokens[0].half(), "text_mask": mask[0],
                                                    "pooled": pooled[0]}, kind="magicinfinite-cache-null-text")
    (root / "cache.json").write_text(json.dumps({"text_encoder": "minilm", "text_max_tokens": 40}))
    write_manifests(root, rows + [held])
    return root


def test_paraphrases_are_training_phrasings_that_share_no_word_with_the_heldout_ones():
    held = prompts.phrases_for_split("heldout")["emotion"]
    train = prompts.phrases_for_split("train")["emotion"]
    held_words = {w.strip(",") for e in held.values() for ph in e for w in ph.split()} - {"a", "with", "and", "face",
                                                                                         "looking", "look"}
    for emotion, extra in prompts.EMOTION_PARAPHRASES.items():
        assert len(extra) >= 5 and not set(extra) & set(train[emotion])
        for ph in extra:
            assert not {w.strip(",") for w in ph.split()} & held_words, (emotion, ph)


def test_recaption_changes_only_the_emotion_phrase():
    rng = np.random.default_rng(3)
    prompt = "A photo of a person talking, grinning warmly, staying still, in front of a plain wall."
    seen = {prompts.recaption(prompt, "smile", rng) for _ in range(60)}
    assert len(seen) > 8
    for p in seen:
        assert p.startswith("A photo of a person talking, ") and p.endswith(", staying still, in front of a plain wall.")
    assert any(ph in " ".join(seen) for ph in prompts.EMOTION_PARAPHRASES["smile"])
    with pytest.raises(ValueError, match="no training phrasing of 'frown'"):
        prompts.recaption(prompt, "frown", rng)


def test_a_recaptioned_cache_holds_each_training_clip_with_new_text_and_the_same_latents(tmp_path):
    text = MiniLMText()
    cache = _cache(tmp_path / "cache", text)
    manifest = recaption_cache(cache, tmp_path / "rc", copies=2, seed=0, progress=False)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(rows) == 5 + 2 * 4
    by_name = {r["name"]: r for r in rows}
    for k in (1, 2):
        for i in range(4):
            src, new = by_name[f"train_{i:06d}"], by_name[f"rc{k}_train_{i:06d}"]
            assert new["controls"] == src["controls"] and new["split"] == "train"
            a, b = load_file(cache / src["file"]), load_file(tmp_path / "rc" / new["file"])
            assert torch.equal(a["latent"], b["latent"]) and torch.equal(a["audio"], b["audio"])
            assert torch.allclose(b["pooled"], text.encode([new["prompt"]])[2][0], atol=1e-5)
    prompts_seen = {r["prompt"] for r in rows if r["name"].endswith("train_000001")}  # a smile, three phrasings
    assert len(prompts_seen) >= 2
    assert len(CacheData(tmp_path / "rc").rows) == 12  # the trainer reads it; the held-out clip stays out
    # the same command again gives the same cache
    again = recaption_cache(cache, tmp_path / "rc2", copies=2, seed=0, progress=False)
    assert again.read_text() == manifest.read_text()


def test_recaption_refuses_its_own_folder_a_missing_cache_and_other_text_encoders(tmp_path, capsys):
    text = MiniLMText()
    cache = _cache(tmp_path / "cache", text, n=1)
    assert main(["--cache", str(cache), "--out", str(cache)]) == 2
    assert "must be a new folder" in capsys.readouterr().err
    assert main(["--cache", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "no manifest.jsonl" in capsys.readouterr().err
    (cache / "cache.json").write_text(json.dumps({"text_encoder": "llava"}))
    assert main(["--cache", str(cache), "--out", str(tmp_path / "o2")]) == 2
    assert "MiniLM" in capsys.readouterr().err and not (tmp_path / "o2").exists()
