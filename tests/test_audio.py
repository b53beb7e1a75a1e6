"""Audio loading: formats, resampling, frame counts, ComfyUI AUDIO, speakers, and every bad input."""

from __future__ import annotations

import struct
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from magicinfinite_core.errors import AudioError
from magicinfinite_core.inputs.audio import (
    AudioWarning,
    audio_from_comfy,
    load_audio,
    load_speaker_tracks,
    normalize_loudness,
    num_video_frames,
    num_video_frames_for_samples,
    to_comfy_audio,
)
from tests.audio_fixtures import convert_soundfile, encode_av, make_speech


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """speech.wav (espeak-ng) and its flac/ogg/mp3/m4a/mp4 versions."""
    d = tmp_path_factory.mktemp("audio")
    wav = make_speech(d / "speech.wav")
    ref, sr = sf.read(str(wav), dtype="float32")
    files = {
        "wav": wav,
        "flac": convert_soundfile(wav, d / "speech.flac", "FLAC"),
        "ogg": convert_soundfile(wav, d / "speech.ogg", "OGG", "VORBIS"),
        "mp3": convert_soundfile(wav, d / "speech.mp3", "MP3", "MPEG_LAYER_III"),
        "m4a": encode_av(ref, sr, d / "speech.m4a", codec="aac"),
        "mp4": encode_av(ref, sr, d / "speech.mp4", codec="aac", with_video=True),
    }
    return {"dir": d, "files": files, "ref": ref, "sr": sr}


def _envelope(x: np.ndarray, n: int = 640) -> np.ndarray:
    m = len(x) // n * n
    return np.sqrt((x[:m].reshape(-1, n) ** 2).mean(1))


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3", "m4a", "mp4"])
def test_formats_load_to_16k_mono(media, fmt):
    a = load_audio(media["files"][fmt])
    ref = load_audio(media["files"]["wav"])
    assert a.sample_rate == 16000 and a.waveform.dtype == np.float32 and a.waveform.ndim == 1
    # lossy codecs add encoder delay/padding (mp3 ~50 ms, aac ~46 ms)
    assert abs(a.duration_s - ref.duration_s) < 0.1
    assert a.num_frames == num_video_frames_for_samples(a.num_samples, 16000)
    e1, e2 = _envelope(ref.waveform), _envelope(a.waveform)
    n = min(len(e1), len(e2))
    best = max(np.corrcoef(e1[: n - 3], e2[s : n - 3 + s])[0, 1] for s in range(3))
    assert best > 0.9, f"{fmt} does not sound like the source (envelope corr {best:.2f})"


def test_flac_is_lossless(media):
    a, b = load_audio(media["files"]["wav"]), load_audio(media["files"]["flac"])
    np.testing.assert_allclose(a.waveform, b.waveform, atol=1e-5)


def test_frame_count_is_exact():
    assert num_video_frames(1.0) == 25
    assert num_video_frames(3.05) == 76  # 76.25
    assert num_video_frames(0.04) == 1
    assert num_video_frames(0.06) == 2  # 1.5 rounds up
    for n in [640, 959, 960, 961, 16000, 48808, 16000 * 3600 + 320]:
        assert num_video_frames_for_samples(n, 16000) == int(np.floor(n * 25 / 16000 + 0.5))
    a = load_audio((np.full(16000 * 2 + 320, 0.1, np.float32), 16000))
    assert a.num_frames == 51 and a.duration_s == pytest.approx(2.02)


def test_resample_192k_keeps_pitch_and_length():
    sr = 192_000
    t = np.arange(sr * 2) / sr
    a = load_audio((0.5 * np.sin(2 * np.pi * 1000 * t).astype(np.float32), sr))
    assert a.num_samples == 32000 and a.num_frames == 50
    spec = np.abs(np.fft.rfft(a.waveform))
    assert np.argmax(spec) * 16000 / a.num_samples == pytest.approx(1000, abs=1)


def test_comfy_audio_dict_stereo_44k():
    sr = 44100
    t = torch.arange(sr) / sr
    left = 0.4 * torch.sin(2 * torch.pi * 300 * t)
    wf = torch.stack([left, torch.zeros_like(left)])[None]  # [1, 2, T]
    a = audio_from_comfy({"waveform": wf, "sample_rate": sr})
    assert a.sample_rate == 16000 and a.num_samples == 16000 and a.num_frames == 25
    assert np.abs(a.waveform).max() == pytest.approx(0.2, abs=0.01)  # mono = mean of channels
    back = to_comfy_audio(a)
    assert back["waveform"].shape == (1, 1, 16000) and back["sample_rate"] == 16000


def test_comfy_audio_batch_warns_and_bad_dicts_raise():
    wf = torch.full((2, 1, 16000), 0.1)
    with pytest.warns(AudioWarning, match="batch of 2"):
        audio_from_comfy({"waveform": wf, "sample_rate": 16000})
    with pytest.raises(AudioError, match="'waveform' and 'sample_rate'"):
        audio_from_comfy({"samples": wf})
    with pytest.raises(AudioError, match="batch is empty"):
        audio_from_comfy({"waveform": torch.zeros(0, 1, 100), "sample_rate": 16000})
    with pytest.raises(AudioError, match=r"\[channels, samples\]"):  # transposed [1, T, C]
        audio_from_comfy({"waveform": torch.zeros(1, 16000, 2), "sample_rate": 16000})


def test_loudness_normalisation(media):
    quiet = load_audio(media["files"]["wav"]).waveform * 0.01
    a = load_audio((quiet, 16000), normalize=True)
    env = _envelope(a.waveform)
    active = env[env > env.max() * 0.01]
    level = 20 * np.log10(np.sqrt(np.mean(active**2)))
    assert -22 < level < -18 and np.abs(a.waveform).max() <= 0.99 + 1e-6
    loud = normalize_loudness(np.concatenate([np.full(1000, 0.999, np.float32), quiet]))
    assert np.abs(loud).max() <= 0.99 + 1e-6  # never clips


# ------------------------------------------------------------------------------------ speakers


def test_speaker_tracks_padded_to_equal_length(media):
    short = (np.full(8000, 0.1, np.float32), 16000)
    tracks = load_speaker_tracks([media["files"]["wav"], short])
    assert len(tracks) == 2 and tracks[0].num_samples == tracks[1].num_samples
    assert tracks[0].num_frames == tracks[1].num_frames
    assert np.all(tracks[1].waveform[8000:] == 0) and np.all(tracks[1].waveform[:8000] != 0)


def test_stereo_split_by_channel(tmp_path):
    sr = 16000
    x = np.zeros((sr, 2), np.float32)
    x[:, 0] = 0.3
    x[: sr // 2, 1] = -0.2
    p = tmp_path / "dialogue.wav"
    sf.write(str(p), x, sr, subtype="FLOAT")
    left, right = load_speaker_tracks(p, split_channels=True)
    assert np.allclose(left.waveform, 0.3) and right.waveform[:100].mean() == pytest.approx(-0.2)
    assert left.num_frames == right.num_frames == 25
    mono = tmp_path / "mono.wav"
    sf.write(str(mono), x[:, 0], sr)
    with pytest.raises(AudioError, match="mono, so it cannot be split"):
        load_speaker_tracks(mono, split_channels=True)
    with pytest.raises(AudioError, match="no audio tracks"):
        load_speaker_tracks([])


# ------------------------------------------------------------------------------------ bad input


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(AudioError, match="does not exist"):
        load_audio(tmp_path / "nope.wav")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty \(0 bytes\).*save it again"):
        load_audio(empty)


def test_zero_length_audio(tmp_path):
    p = tmp_path / "zero.wav"
    sf.write(str(p), np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="zero samples"):
        load_audio(p)
    with pytest.raises(AudioError, match="zero samples"):
        load_audio((np.zeros(0, np.float32), 16000))


def test_all_silent_audio_is_allowed_with_warning(tmp_path):
    p = tmp_path / "silence.wav"
    sf.write(str(p), np.zeros(16000, np.float32), 16000)
    with pytest.warns(AudioWarning, match="mouth will stay closed"):
        a = load_audio(p, normalize=True)
    assert a.num_frames == 25 and not a.waveform.any()


def test_corrupt_bytes(tmp_path):
    p = tmp_path / "corrupt.wav"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError, match="corrupt.*export it again"):
        load_audio(p)


def test_truncated_mp3_keeps_what_decodes_with_a_warning(media, tmp_path):
    data = media["files"]["mp3"].read_bytes()
    p = tmp_path / "cut.mp3"
    p.write_bytes(data[: len(data) // 2])
    full = load_audio(media["files"]["mp3"]).duration_s
    with pytest.warns(AudioWarning, match="truncated or damaged after"):
        a = load_audio(p)
    assert 0.3 * full < a.duration_s < 0.7 * full
    assert np.abs(a.waveform[-1600:]).max() < 1.0  # no stale-buffer garbage


def test_unsupported_codec(tmp_path):
    """A RIFF/WAVE file whose format tag (0x9999) no decoder knows."""
    data = np.zeros(16000, np.int16).tobytes()
    fmt = struct.pack("<HHIIHH", 0x9999, 1, 16000, 32000, 2, 16)
    body = (
        b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    )
    p = tmp_path / "odd_codec.wav"
    p.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(AudioError, match="codec.*convert it"):
        load_audio(p)


def test_video_without_audio_track(tmp_path):
    p = encode_av(
        np.zeros(0, np.float32),
        16000,
        tmp_path / "silent_film.mp4",
        with_video=True,
        with_audio=False,
        seconds=0.4,
    )
    with pytest.raises(AudioError, match="no audio track.*video"):
        load_audio(p)


def test_eight_channels_mixed_with_warning_or_split(tmp_path):
    sr = 16000
    x = np.zeros((sr, 8), np.float32)
    for c in range(8):
        x[:, c] = 0.05 * (c + 1)
    p = tmp_path / "surround.wav"
    sf.write(str(p), x, sr, subtype="FLOAT")
    with pytest.warns(AudioWarning, match="8 channels.*split_channels=True"):
        a = load_audio(p)
    assert a.waveform.mean() == pytest.approx(0.05 * 4.5, abs=1e-4)
    tracks = load_speaker_tracks(p, split_channels=True)
    assert len(tracks) == 8 and tracks[7].waveform.mean() == pytest.approx(0.4, abs=1e-4)


def test_192k_file(tmp_path):
    sr = 192_000
    p = tmp_path / "hires.flac"
    t = np.arange(sr // 2) / sr
    sf.write(str(p), (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr)
    a = load_audio(p)
    assert a.sample_rate == 16000 and a.num_samples == 8000 and a.num_frames == 13  # 12.5 rounds up


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_samples(tmp_path, bad):
    x = np.full(16000, 0.1, np.float32)
    x[8000] = bad
    p = tmp_path / "nan.wav"
    sf.write(str(p), x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"NaN or infinite samples \(first at 0.500 s\).*re-export"):
        load_audio(p)
    with pytest.raises(AudioError, match="NaN or infinite"):
        audio_from_comfy({"waveform": torch.from_numpy(x)[None, None], "sample_rate": 16000})


def test_shorter_than_one_frame(tmp_path):
    p = tmp_path / "blip.wav"
    sf.write(str(p), np.full(int(0.03 * 16000), 0.1, np.float32), 16000)
    with pytest.raises(AudioError, match="shorter than one video frame"):
        load_audio(p)
    assert load_audio((np.full(640, 0.1, np.float32), 16000)).num_frames == 1


def test_bad_sample_rates_and_types():
    with pytest.raises(AudioError, match="too low"):
        load_audio((np.zeros(4000, np.float32), 2000))
    with pytest.raises(AudioError, match="invalid"):
        load_audio((np.zeros(4000, np.float32), 0))
    with pytest.raises(AudioError, match="file path, a ComfyUI AUDIO"):
        load_audio(12345)
    with pytest.raises(AudioError, match="dtype"):
        load_audio((np.array(["a", "b"]), 16000))


def test_integer_pcm_arrays_are_scaled():
    a = load_audio((np.full(16000, 16384, np.int16), 16000))
    assert a.waveform.mean() == pytest.approx(0.5, abs=1e-3)


def test_no_warnings_for_normal_speech(media):
    with warnings.catch_warnings():
        warnings.simplefilter("error", AudioWarning)
        load_audio(media["files"]["wav"])
