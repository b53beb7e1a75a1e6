"""Real speech for the world, made offline with Debian's ``espeak-ng`` at dataset-build time.

Synthetic but real speech (phonemes, prosody, several languages and voices) is what makes the
audio -> lips mapping non-trivial yet known. Random sentences come from small per-language word
lists (no internet); random silences of 0.3-1.5 s sit between sentences so that the model also
learns "silence = closed mouth".
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from training.data.mouth import FPS, SAMPLE_RATE

WORDS: dict[str, list[str]] = {
    "en": (
        "the a my your little big happy quiet river mountain city morning evening coffee window "
        "garden yellow purple music always never today tomorrow walks sings reads opens closes "
        "beautiful very slowly quickly friend teacher doctor bicycle ocean story paper summer winter "
        "and but because while remember believe together hello thank you please maybe"
    ).split(),
    "de": (
        "der die das ein eine mein dein kleine grosse schnell langsam heute morgen immer nie "
        "Hund Katze Haus Garten Stadt Fluss Berg Kaffee Fenster Musik Lehrer Freund Sommer Winter "
        "singt liest geht kommt spielt oeffnet schliesst schoen sehr und aber weil wir zusammen "
        "danke bitte vielleicht gestern wunderbar"
    ).split(),
    "fr": (
        "le la les un une mon ton petit grand heureux calme riviere montagne ville matin soir "
        "cafe fenetre jardin jaune musique toujours jamais aujourd'hui demain marche chante lit "
        "ouvre ferme tres lentement vite ami professeur velo ocean histoire ete hiver et mais "
        "parce que ensemble bonjour merci peut-etre"
    ).split(),
    "es": (
        "el la los una mi tu pequeno grande feliz tranquilo rio montana ciudad manana tarde cafe "
        "ventana jardin amarillo musica siempre nunca hoy camina canta lee abre cierra muy "
        "despacio rapido amigo maestro bicicleta oceano historia verano invierno y pero porque "
        "juntos hola gracias quizas"
    ).split(),
    "it": (
        "il la lo una mio tuo piccolo grande felice tranquillo fiume montagna citta mattina sera "
        "caffe finestra giardino giallo musica sempre mai oggi domani cammina canta legge apre "
        "chiude molto piano veloce amico maestro bicicletta oceano storia estate inverno e ma "
        "perche insieme ciao grazie forse"
    ).split(),
    "nl": (
        "de het een mijn jouw klein groot blij rustig rivier berg stad ochtend avond koffie raam "
        "tuin geel muziek altijd nooit vandaag morgen loopt zingt leest opent sluit mooi heel "
        "langzaam snel vriend leraar fiets oceaan verhaal zomer winter en maar omdat samen hallo "
        "dank je misschien"
    ).split(),
    "pt": (
        "o a os uma meu teu pequeno grande feliz calmo rio montanha cidade manha noite cafe janela "
        "jardim amarelo musica sempre nunca hoje amanha anda canta le abre fecha muito devagar "
        "rapido amigo professor bicicleta oceano historia verao inverno e mas porque juntos ola "
        "obrigado talvez"
    ).split(),
}

# espeak-ng voice names for each language code above
ESPEAK_LANG = {"en": "en-us", "de": "de", "fr": "fr-fr", "es": "es", "it": "it", "nl": "nl", "pt": "pt"}
# (language, variant) pairs. Held-out voices use variants never used in training, plus two
# languages (nl, pt) that training never hears.
TRAIN_VOICES: list[tuple[str, str]] = [
    (lang, var) for lang in ("en", "de", "fr", "es", "it") for var in ("m1", "m2", "m3", "f1", "f2", "f3")
]
HELDOUT_VOICES: list[tuple[str, str]] = [
    ("en", "f4"),
    ("en", "m4"),
    ("de", "f5"),
    ("fr", "m5"),
    ("es", "f4"),
    ("it", "m7"),
    ("nl", "f2"),
    ("pt", "m3"),
]


@dataclass(frozen=True)
class Voice:
    """A concrete espeak-ng voice: language + variant + speed (wpm) + pitch (0..99)."""

    lang: str
    variant: str
    speed: int
    pitch: int

    @property
    def espeak_name(self) -> str:
        """The ``-v`` argument of espeak-ng, e.g. ``en-us+f3``."""
        return f"{ESPEAK_LANG[self.lang]}+{self.variant}"

    def to_dict(self) -> dict:
        """JSON-able form for meta.json."""
        return asdict(self)


def voices_for_split(split: str) -> list[tuple[str, str]]:
    """(language, variant) pairs a split may use; train and held-out are disjoint."""
    return list(HELDOUT_VOICES if split == "heldout" else TRAIN_VOICES)


def sample_voice(rng: np.random.Generator, split: str) -> Voice:
    """A random voice of the split, with random speed and pitch so prosody varies per clip."""
    pool = voices_for_split(split)
    lang, var = pool[int(rng.integers(len(pool)))]
    return Voice(lang, var, int(rng.integers(130, 191)), int(rng.integers(25, 76)))


def random_sentence(rng: np.random.Generator, lang: str) -> str:
    """4-9 random words of the language: prosody and phonemes matter here, not meaning."""
    words = WORDS[lang]
    n = int(rng.integers(4, 10))
    return " ".join(words[int(i)] for i in rng.integers(len(words), size=n))


def espeak_available() -> bool:
    """Whether the ``espeak-ng`` binary is on PATH (the dataset build needs it)."""
    return shutil.which("espeak-ng") is not None


def synthesize(text: str, voice: Voice) -> np.ndarray:
    """espeak-ng speech for ``text`` as float32 mono at 16 kHz (deterministic for fixed input)."""
    import librosa
    import soundfile as sf

    with tempfile.TemporaryDirectory() as td:
        out = Path(td) / "out.wav"
        cmd = ["espeak-ng", "-v", voice.espeak_name, "-s", str(voice.speed), "-p", str(voice.pitch)]
        subprocess.run([*cmd, "-w", str(out), text], check=True, capture_output=True)
        wav, sr = sf.read(str(out), dtype="float32", always_2d=True)
    wav = wav.mean(axis=1)
    if sr != SAMPLE_RATE:
        wav = librosa.resample(wav, orig_sr=sr, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    return np.asarray(wav, dtype=np.float32)


def _trim(wav: np.ndarray, thresh: float = 1e-3) -> np.ndarray:
    nz = np.flatnonzero(np.abs(wav) > thresh)
    return wav[nz[0] : nz[-1] + 1] if len(nz) else wav[:0]


def speech_track(rng: np.random.Generator, voice: Voice, num_frames: int) -> tuple[np.ndarray, list[dict]]:
    """Exactly ``num_frames / 25`` s of speech: sentences separated by 0.3-1.5 s silences.

    Short clips start at a random point of the track, so some open in silence and some
    mid-word. Returns (waveform float32 16 kHz, segments [{text, start_s, end_s}] in clip time).
    """
    n_out = int(round(num_frames * SAMPLE_RATE / FPS))
    lead = int(rng.uniform(0.0, 0.8) * SAMPLE_RATE) if rng.random() < 0.35 else 0
    pieces: list[np.ndarray] = [np.zeros(lead, np.float32)]
    segments: list[dict] = []
    total = lead
    offset = None
    while True:
        text = random_sentence(rng, voice.lang)
        wav = _trim(synthesize(text, voice))
        segments.append({"text": text, "start": total, "end": total + len(wav)})
        pieces.append(wav)
        total += len(wav)
        if offset is None:
            # random start inside the first stretch, so short clips are not all sentence onsets
            slack = max(total - n_out // 2, 0)
            offset = int(rng.integers(0, slack + 1)) if lead == 0 else 0
        if total - offset >= n_out:
            break
        gap = int(rng.uniform(0.3, 1.5) * SAMPLE_RATE)
        pieces.append(np.zeros(gap, np.float32))
        total += gap
    full = np.concatenate(pieces)[offset : offset + n_out]
    peak = float(np.abs(full).max()) if len(full) else 0.0
    if peak > 0:
        full = full * (0.9 / peak) * float(rng.uniform(0.5, 1.0))
    segs = []
    for s in segments:
        a, b = (s["start"] - offset) / SAMPLE_RATE, (s["end"] - offset) / SAMPLE_RATE
        if b > 0 and a < n_out / SAMPLE_RATE:
            segs.append({"text": s["text"], "start_s": round(max(a, 0.0), 4), "end_s": round(b, 4)})
    return full.astype(np.float32), segs
