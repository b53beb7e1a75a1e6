"""Text controls what audio cannot: emotion, head action, background change.

A clip's controls are a small structured dict; its prompt is a template sentence filled with
phrases for those controls. Training and held-out use DISJOINT templates and phrases (the
held-out ones are paraphrases), so held-out prompts test whether the text encoder generalises
rather than memorising strings.
"""

from __future__ import annotations

import numpy as np

EMOTIONS = ("neutral", "smile", "frown", "surprise")
ACTIONS = ("still", "nodding", "shaking")
BACKGROUNDS = ("static", "leaves", "lights")

_PHRASES: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "train": {
        "emotion": {
            "neutral": ("with a calm face", "with a neutral expression", "keeping a neutral face", "with a composed face"),
            "smile": ("smiling", "with a happy smile", "grinning warmly", "smiling brightly", "looking happy"),
            "frown": ("frowning", "looking upset", "with a sad frown", "looking sad", "with a worried frown"),
            "surprise": ("looking surprised", "with raised eyebrows in surprise", "astonished", "looking startled"),
        },
        "action": {
            "still": ("keeping the head still", "holding the head steady", "with a still head", "holding still",
                      "keeping the head steady", "with the head held still", "staying still"),
            "nodding": ("nodding", "nodding the head up and down", "nodding along", "nodding slowly", "nodding yes",
                        "with a nodding head", "nodding the head gently", "tipping the head up and down"),
            "shaking": ("shaking the head", "shaking the head from side to side", "shaking the head sideways",
                        "swinging the head from side to side", "with a side-to-side head shake",
                        "shaking the head slowly"),
        },
        "background": {
            "static": ("in front of a still background", "with a static backdrop", "in front of a plain wall",
                       "with a fixed background"),
            "leaves": ("while leaves move in the background", "with leaves moving behind", "with leaves waving behind"),
            "lights": ("while lights flash in the background", "with flashing lights behind", "while lights flicker behind"),
        },
        "style": {
            "realistic": ("a photo of", "a realistic portrait of", "a photograph of", "a real photo of"),
            "anime": ("an anime drawing of", "a cartoon of", "an animated cartoon of"),
            "sketch": ("a pencil sketch of", "a sketch of", "a pencil drawing of"),
        },
    },
    "heldout": {
        "emotion": {
            "neutral": ("with a relaxed, expressionless face",),
            "smile": ("beaming with joy", "looking cheerful"),
            "frown": ("looking unhappy and stern", "scowling"),
            "surprise": ("looking amazed", "with a shocked look"),
        },
        "action": {
            "still": ("without moving the head", "motionless"),
            "nodding": ("bobbing the head in agreement", "giving repeated nods"),
            "shaking": ("turning the head left and right in refusal", "shaking no"),
        },
        "background": {
            "static": ("against an unchanging scene", "before a motionless background"),
            "leaves": ("as foliage sways behind", "with rustling leaves in the back"),
            "lights": ("under blinking lights", "as the lights pulse behind"),
        },
        "style": {
            "realistic": ("a lifelike picture of",),
            "anime": ("a manga-style image of",),
            "sketch": ("a hand-drawn line sketch of",),
        },
    },
}

# More training-split phrasings of each emotion, used only to re-caption cached clips (`training.recaption`), so world
# builds draw exactly what they drew before. Why: with the five phrasings above, a linear readout of the emotion from
# MiniLM's pooled text held 56-73 % of its value on held-out phrasings; with these as well, 85-98 % (session 23).
# Disjoint in words from the held-out phrasings (joy, cheerful, stern, scowling, amazed, shocked, relaxed ...).
EMOTION_PARAPHRASES: dict[str, tuple[str, ...]] = {
    "neutral": ("with a blank face", "with a plain expression", "with a straight face", "looking calm",
                "with an even expression", "keeping a poker face"),
    "smile": ("with a big smile", "looking pleased", "with a friendly smile", "in a good mood", "delighted",
              "laughing softly", "with a broad grin", "happy", "with a warm smile", "looking content"),
    "frown": ("looking angry", "with a grim face", "looking displeased", "with furrowed brows", "looking gloomy",
              "in a bad mood", "glaring", "with a sour face", "looking annoyed", "looking miserable"),
    "surprise": ("with wide eyes", "in disbelief", "looking stunned", "with eyebrows raised", "taken aback",
                 "with a look of surprise", "open-mouthed in wonder"),
}

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "train": (
        "{style} {who} talking, {emotion}, {action}, {background}.",
        "{style} {who} speaking {emotion} and {action}, {background}.",
        "{who_cap} talks {emotion}, {action}; {background}.",
        "{who_cap} speaking, {emotion}, {action}; {background}.",
        "{style} {who}: talking {emotion}, {action}, {background}.",
    ),
    "heldout": (
        "{style} {who} who says something {emotion}, {action}, {background}.",
        "{background_cap}: {style} {who} chatting {emotion} while {action}.",
    ),
}

_POSITIONS = {
    1: ("",),
    2: ("on the left", "on the right"),
    3: ("on the left", "in the middle", "on the right"),
}


def templates_for_split(split: str) -> tuple[str, ...]:
    """Prompt templates a split may use (disjoint between train and held-out)."""
    return _TEMPLATES[_key(split)]


def phrases_for_split(split: str) -> dict[str, dict[str, tuple[str, ...]]]:
    """Control phrases a split may use (disjoint between train and held-out)."""
    return _PHRASES[_key(split)]


def _key(split: str) -> str:
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    return split


def sample_controls(rng: np.random.Generator, backgrounds: tuple[str, ...] = BACKGROUNDS) -> dict[str, str]:
    """Uniform random controls: each value must be seen often for text to be learnable.

    `backgrounds` narrows the background choice (a motion-latent model keeps the background still)."""
    unknown = [b for b in backgrounds if b not in BACKGROUNDS]
    if unknown or not backgrounds:
        raise ValueError(f"backgrounds must be some of {BACKGROUNDS}, got {backgrounds}")
    return {
        "emotion": EMOTIONS[int(rng.integers(len(EMOTIONS)))],
        "action": ACTIONS[int(rng.integers(len(ACTIONS)))],
        "background": backgrounds[int(rng.integers(len(backgrounds)))],
    }


def _who(num_chars: int, speaker: int, order: list[int]) -> str:
    if num_chars == 1:
        return "a person"
    pos = _POSITIONS[num_chars][order.index(speaker)]
    group = "two people" if num_chars == 2 else "three people"
    return f"{group}, the one {pos}"


def make_prompt(
    controls: dict[str, str],
    rng: np.random.Generator,
    split: str,
    style: str,
    num_chars: int = 1,
    speaker: int = 0,
    left_to_right: list[int] | None = None,
) -> str:
    """Fill a random template of the split with random phrases for the controls.

    ``left_to_right`` lists character indices by screen position; for several characters the
    prompt says which one talks, so the text can disambiguate when faces look alike.
    """
    ph = phrases_for_split(split)
    tpl = templates_for_split(split)[int(rng.integers(len(templates_for_split(split))))]

    def pick(kind: str, value: str) -> str:
        opts = ph[kind][value]
        return opts[int(rng.integers(len(opts)))]

    who = _who(num_chars, speaker, left_to_right or list(range(num_chars)))
    bg = pick("background", controls["background"])
    text = tpl.format(
        style=pick("style", style),
        who=who,
        who_cap=who[:1].upper() + who[1:],
        emotion=pick("emotion", controls["emotion"]),
        action=pick("action", controls["action"]),
        background=bg,
        background_cap=bg[:1].upper() + bg[1:],
    )
    return text[:1].upper() + text[1:]


def recaption(prompt: str, emotion: str, rng: np.random.Generator) -> str:
    """`prompt` (a training prompt of `make_prompt`) with its emotion's phrase replaced by one drawn from that
    emotion's training phrasings and `EMOTION_PARAPHRASES`; the rest of the sentence is kept."""
    if emotion not in EMOTIONS:
        raise ValueError(f"emotion must be one of {EMOTIONS}, got {emotion!r}")
    said = [ph for ph in _PHRASES["train"]["emotion"][emotion] if ph in prompt]
    if not said:
        raise ValueError(f"no training phrasing of {emotion!r} in the prompt {prompt!r}")
    options = _PHRASES["train"]["emotion"][emotion] + EMOTION_PARAPHRASES[emotion]
    return prompt.replace(max(said, key=len), options[int(rng.integers(len(options)))], 1)
