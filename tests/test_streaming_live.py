"""Live audio: a WAV stream through a named pipe at real-time rate gives the file's video, frame for
frame; the CLI reads stdin (`--audio -`); the plain-torch MiniLM equals transformers'."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from magicinfinite_core.errors import AudioError
from magicinfinite_core.inputs.live_audio import LinearResampler, WavStream
from magicinfinite_core.media.video_io import write_wav
from magicinfinite_core.streaming import generate_live, generate_streaming
from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR, random_bundle
from tests.audio_fixtures import make_speech

ROOT = Path(__file__).resolve().parent.parent
KW = dict(speakers=[[8, 8, 56, 56]], distilled=True, seed=4, window=9, overlap=4)


def _voice(path: Path, seconds: float) -> Path:
    t = np.arange(int(16000 * seconds)) / 16000
    wav = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))  # a "syllable" rhythm
    return write_wav(path, wav.astype(np.float32), 16000)


def _feed(fifo: Path, data: bytes, block: int = 3200, period_s: float = 0.1) -> threading.Thread:
    """Write a WAV into a named pipe at real-time rate (3200 bytes = 0.1 s of 16 kHz 16-bit mono)."""

    def run() -> None:
        with open(fifo, "wb") as f:
            f.write(data[:44])
            for i in range(44, len(data), block):
                f.write(data[i : i + block])
                f.flush()
                time.sleep(period_s)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def test_live_pipe_at_real_time_rate_gives_the_file_video(tmp_path):
    torch.set_num_threads(1)
    bundle = random_bundle(0)
    portrait = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    voice = _voice(tmp_path / "v.wav", 3.0)
    fifo = tmp_path / "live.fifo"
    os.mkfifo(fifo)
    feeder = _feed(fifo, voice.read_bytes())
    live, ref = [], []
    t0 = time.perf_counter()
    path, rep = generate_live(portrait, str(fifo), "hi", model=bundle, out=tmp_path / "live.mp4",
                              on_frames=live.append, **KW)
    wall = time.perf_counter() - t0
    feeder.join()
    generate_streaming(portrait, str(voice), "hi", model=bundle, out=tmp_path / "file.mp4", on_frames=ref.append, **KW)
    assert rep.frames == 75 and torch.equal(torch.cat(live, dim=1), torch.cat(ref, dim=1))
    assert wall >= 2.9  # it really waited for the voice
    assert rep.latency is not None and 0 < rep.latency["mean_s"] <= rep.latency["max_s"]
    with av.open(str(path)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 75
    with av.open(str(path)) as c:  # the whole live voice is in the track
        assert abs(sum(f.samples for f in c.decode(audio=0)) / 16000 - 3.0) < 0.1


def test_wav_stream_refuses_what_it_cannot_read(tmp_path):
    import io

    with pytest.raises(AudioError, match="RIFF"):
        WavStream(io.BytesIO(b"ID3 not a wav file at all"))
    with pytest.raises(AudioError, match="inside the WAV header"):
        WavStream(io.BytesIO(b"RIFF\x00\x00\x00\x00WAVEfmt "))


def test_linear_resampler_is_continuous_across_blocks():
    x = np.sin(np.arange(22050) / 50.0).astype(np.float32)[None]
    whole = LinearResampler(22050)(x)
    r = LinearResampler(22050)
    parts = np.concatenate([r(x[:, i : i + 1000]) for i in range(0, x.shape[1], 1000)])
    assert abs(len(parts) - 16000) <= 1 and np.allclose(parts[: len(whole)], whole[: len(parts)], atol=1e-6)


@pytest.mark.skipif(not (DEMO_MODEL_DIR / "bundle.json").is_file(), reason="demo model not installed")
def test_cli_reads_a_live_voice_from_stdin(tmp_path):
    from PIL import Image

    voice = _voice(tmp_path / "v.wav", 2.0)
    portrait = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(portrait)
    out = tmp_path / "live.mp4"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "runner.cli", "generate", "--portrait", str(portrait), "--audio", "-",
         "--speaker-box", "16,16,112,112", "--out", str(out), "-q"],
        input=voice.read_bytes(), env=env, capture_output=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"live latency" in done.stderr and b"first frame" in done.stderr
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 50 and c.streams.audio


def test_plain_torch_minilm_equals_transformers():
    from transformers import AutoModel, AutoTokenizer

    from magicinfinite_core.inputs.bert_lite import BertLite, FastTokenizer
    from magicinfinite_core.inputs.text_encoders import minilm_path

    path = minilm_path()
    prompts = ["", "A calm woman talks, soft light", "word " * 80]
    ids, mask = FastTokenizer(path)(prompts, 40)
    tok = AutoTokenizer.from_pretrained(str(path))(prompts, max_length=40, padding=True, truncation=True,
                                                   return_tensors="pt")
    assert torch.equal(tok["input_ids"], ids) and torch.equal(tok["attention_mask"], mask)
    with torch.no_grad():
        ours = BertLite(path)(ids, mask)
        theirs = AutoModel.from_pretrained(str(path)).eval()(**tok).last_hidden_state
    real = mask.bool()[..., None]
    assert ((ours - theirs).abs() * real).max() < 1e-4


def test_mel_features_without_librosa_equal_librosa(tmp_path):
    """The demo's features: mel_filters (numpy + scipy.fft) gives librosa's numbers bit for bit."""
    import librosa

    from magicinfinite_core.inputs.audio import load_audio
    from magicinfinite_core.inputs.audio_features import MelExtractor

    wav = load_audio(str(make_speech(tmp_path / "s.wav"))).waveform
    ex = MelExtractor(n_mels=64, n_fft=1024)
    basis = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=64, fmin=0.0, fmax=8000.0).astype(np.float32)
    assert np.array_equal(ex._mel_basis, basis)
    n = len(wav) // 640
    seg = wav[: n * 640].astype(np.float32)
    padded = np.pad(seg, (1024 // 2 - 320, 1024 - 640 - (1024 // 2 - 320)))
    spec = librosa.stft(padded, n_fft=1024, hop_length=640, window=ex._window, center=False)[:, :n]
    ref = np.log(np.maximum(basis @ (spec.real**2 + spec.imag**2).astype(np.float32), 1e-5)).T
    assert np.array_equal(ex._frames(seg, n, None).numpy(), ref)


def test_a_growing_file_is_read_until_it_stops_growing(tmp_path):
    """--live FILE: the file is written while it is read; it has ended once idle for idle_timeout_s."""
    bundle = random_bundle(0)
    portrait = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = _voice(tmp_path / "v.wav", 1.6).read_bytes()
    grow = tmp_path / "growing.wav"
    grow.write_bytes(data[:44])

    def write() -> None:
        with open(grow, "ab") as f:
            for i in range(44, len(data), 6400):
                f.write(data[i : i + 6400])
                f.flush()
                time.sleep(0.05)

    th = threading.Thread(target=write, daemon=True)
    th.start()
    path, rep = generate_live(portrait, str(grow), "hi", model=bundle, out=tmp_path / "g.mp4", idle_timeout_s=0.5,
                              **KW)
    th.join()
    assert rep.frames == 40
    with av.open(str(path)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 40
