"""Deterministic train / held-out partition of identities, voices and prompt templates.

Nothing of the held-out set is ever trained on:

* identities: an identity is an integer seed; ``id % 10 == 9`` is held out, everything else is
  train. Clips only draw identities of their own split.
* voices: disjoint (language, variant) lists in ``speech.py`` (held-out adds unseen variants and
  two unseen languages, nl and pt).
* prompts: disjoint templates and phrases in ``prompts.py``.
"""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "heldout")
_ID_MOD = 10
_HELDOUT_RESIDUE = 9
_ID_SPACE = 10**8


def check_split(split: str) -> str:
    """Validate a split name early so a typo cannot silently build the wrong split."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def identity_split(identity_id: int) -> str:
    """Which split an identity seed belongs to."""
    return "heldout" if identity_id % _ID_MOD == _HELDOUT_RESIDUE else "train"


def sample_identity_id(rng: np.random.Generator, split: str) -> int:
    """A random identity seed from the split's partition."""
    check_split(split)
    base = int(rng.integers(0, _ID_SPACE // _ID_MOD)) * _ID_MOD
    if split == "heldout":
        return base + _HELDOUT_RESIDUE
    return base + int(rng.integers(0, _HELDOUT_RESIDUE))


def clip_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    """Seed of clip ``index`` of a build: depends only on (seed, split, index), so builds resume."""
    return np.random.SeedSequence([int(seed), SPLITS.index(check_split(split)), int(index)])
