"""The CLI finds the portrait's faces in a second process while it imports torch (inputs/face_prefetch.py).

Real runs of `runner.cli generate` in fresh interpreters (the prefetch only starts before torch is imported):
the video is byte-identical with and without it, the command itself never imports mediapipe when the
prefetch answered, and a picture without a face still fails with the usual message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import wavfile

pytest.importorskip("mediapipe")

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "training" / "data" / "photo_assets" / "luispedro.jpg"
RUN = """
import json, sys
from runner.cli import main
from magicinfinite_core.inputs import face_prefetch
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "mediapipe": "mediapipe" in sys.modules, "recalled": len(face_prefetch._memo)}))
"""


def _run(args: list[str], prefetch: bool) -> dict:
    env = {**os.environ, "MAGICINFINITE_FACE_PREFETCH": "1" if prefetch else "0", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=600)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["stderr"] = res.stderr
    return out


@pytest.fixture()
def voice(tmp_path):
    t = np.arange(16000) / 16000
    wave = 0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)  # voiced bursts, 1 s
    wavfile.write(tmp_path / "a.wav", 16000, (wave * 32767).astype(np.int16))
    return str(tmp_path / "a.wav")


def test_prefetched_faces_give_the_same_video_without_mediapipe_in_the_command(tmp_path, voice):
    common = ["generate", "--portrait", str(PHOTO), "--audio", voice, "--prompt", "a person talking", "--quiet",
              "--max-size", "256"]
    on = _run([*common, "--out", str(tmp_path / "on.mp4")], prefetch=True)
    off = _run([*common, "--out", str(tmp_path / "off.mp4")], prefetch=False)
    assert on["rc"] == 0 and off["rc"] == 0, on["stderr"] + off["stderr"]
    assert (tmp_path / "on.mp4").read_bytes() == (tmp_path / "off.mp4").read_bytes()
    assert on["recalled"] == 2 and not on["mediapipe"]  # the picture and the framed region, both answered
    assert off["recalled"] == 0 and off["mediapipe"]


def test_a_picture_without_a_face_fails_as_usual_with_the_prefetch(tmp_path, voice):
    Image.fromarray(np.full((200, 160, 3), 128, np.uint8)).save(tmp_path / "wall.png")
    r = _run(["generate", "--portrait", str(tmp_path / "wall.png"), "--audio", voice, "--prompt", "hi", "--quiet",
              "--out", str(tmp_path / "o.mp4")], prefetch=True)
    assert r["rc"] == 1 and "no face found" in r["stderr"] and "--face-fallback" in r["stderr"]
    assert r["recalled"] >= 1 and not r["mediapipe"]  # the empty detections came from the prefetch
    assert not (tmp_path / "o.mp4").exists()
