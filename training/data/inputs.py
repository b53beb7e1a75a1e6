"""Write a world clip's portrait (frame 0, PNG) and voice (16 kHz WAV) as inputs for a trained model.

    python -m training.data.inputs --clip out/toy/world/heldout_000000 --out out/toy/inputs

Why: the CLI (`magicinfinite generate --portrait --audio`) and ComfyUI's LoadImage / LoadAudio take
image and audio files; a held-out clip gives a face and a voice the model never trained on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def write_inputs(clip_dir: str | Path, out: str | Path) -> tuple[Path, Path]:
    """(portrait.png, voice.wav) of the clip in `out`."""
    import soundfile as sf
    from PIL import Image

    from training.data.clip import load_clip

    clip = load_clip(clip_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    portrait, voice = out / "portrait.png", out / "voice.wav"
    Image.fromarray(np.ascontiguousarray(clip.frames[0])).save(portrait)
    sf.write(voice, np.asarray(clip.audio, np.float32), 16000, subtype="PCM_16")
    return portrait, voice


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.data.inputs", description=__doc__.split("\n")[0])
    p.add_argument("--clip", required=True, help="a clip folder of a world built by training.data.build")
    p.add_argument("--out", required=True, help="folder for portrait.png and voice.wav")
    a = p.parse_args(argv)
    if not (Path(a.clip) / "meta.json").is_file():
        print(f"python -m training.data.inputs: error: {a.clip} is not a clip folder (no meta.json)", file=sys.stderr)
        return 2
    for path in write_inputs(a.clip, a.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
