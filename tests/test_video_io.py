import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLHunyuanVideo

from magicinfinite_core.config import VAEConfig
from magicinfinite_core.errors import MagicInfiniteError
from magicinfinite_core.media.streamed_decode import decode_chunks, diffusers_decode_fn, streamed_decode
from magicinfinite_core.media.video_io import (
    VideoWriter,
    frames_to_uint8,
    iter_video_frames,
    probe_video,
    write_wav,
)


def _tone(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_mp4_decodes_with_audio_of_input_duration(tmp_path):
    wav = write_wav(tmp_path / "a.wav", _tone(1.3), 16000)
    frames = round(1.3 * 25)
    out = tmp_path / "o.mp4"
    with VideoWriter(out, 32, 16, audio=wav) as w:
        for i in range(0, frames, 7):  # chunks as a streamed decoder delivers them
            n = min(7, frames - i)
            w.write(np.full((n, 16, 32, 3), 10 * i % 255, dtype=np.uint8))
    info = probe_video(out)
    assert (info.frames, info.fps, info.width, info.height) == (frames, 25.0, 32, 16)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert abs(info.audio_seconds - 1.3) <= 1024 / 16000 + 1e-6  # AAC pads to whole 1024-sample frames
    assert not (tmp_path / "o.partial.mp4").exists()
    first = next(iter_video_frames(out))
    assert first.shape == (16, 32, 3) and abs(int(first.mean()) - 0) <= 3


def test_waveform_audio_and_float_frames(tmp_path):
    out = tmp_path / "o.mp4"
    x = torch.linspace(-1, 1, 3 * 5 * 8 * 8).view(3, 5, 8, 8)
    assert frames_to_uint8(x).shape == (5, 8, 8, 3)
    with VideoWriter(out, 8, 8, audio=(np.stack([_tone(0.2)] * 2), 16000)) as w:
        w.write(x)
    info = probe_video(out)
    assert info.frames == 5 and info.audio_seconds == pytest.approx(0.2, abs=0.07)


def test_writer_rejects_odd_sizes_and_drops_partial_file_on_error(tmp_path):
    with pytest.raises(MagicInfiniteError):
        VideoWriter(tmp_path / "odd.mp4", 33, 32)
    with pytest.raises(RuntimeError), VideoWriter(tmp_path / "x.mp4", 8, 8) as w:
        w.write(np.zeros((2, 8, 8, 3), np.uint8))
        raise RuntimeError("crash mid-video")
    assert not list(tmp_path.glob("x*.mp4"))


def test_decode_chunks_tile_the_latent():
    plan = decode_chunks(23, 8, 2)
    assert plan == [(0, 0, 8), (6, 8, 16), (14, 16, 23)]
    with pytest.raises(ValueError):
        decode_chunks(23, 8, 0)


def _causal_decoder(z: torch.Tensor) -> torch.Tensor:
    """Exactly causal stand-in (receptive field: 2 latent frames back) with the causal VAE's frame rule."""
    prev1 = torch.cat([z[:, :, :1], z[:, :, :-1]], dim=2)
    prev2 = torch.cat([z[:, :, :1], prev1[:, :, :-1]], dim=2)
    y = torch.tanh(z[:, :3] + 0.5 * prev1[:, :3] - 0.25 * prev2[:, 1:4])
    first, rest = y[:, :, :1], y[:, :, 1:]
    ramp = torch.linspace(0.25, 1.0, 4).view(1, 1, 1, 4, 1, 1)
    rest = (rest.unsqueeze(3) * ramp).flatten(2, 3)  # 4 frames per latent frame
    out = torch.cat([first, rest], dim=2)
    return out.repeat_interleave(8, -1).repeat_interleave(8, -2)


def test_streamed_decode_bookkeeping_is_exact_for_a_causal_decoder():
    z = torch.randn(4, 23, 2, 2, generator=torch.Generator().manual_seed(0))
    ref = _causal_decoder(z[None])[0]
    for chunk, context in [(5, 2), (8, 3), (3, 3)]:  # context covers the decoder's reach back (2)
        out = torch.cat(list(streamed_decode(z, _causal_decoder, chunk=chunk, context=context, crossfade=False)), 1)
        assert torch.equal(out, ref)
    trimmed = torch.cat(list(streamed_decode(z, _causal_decoder, num_frames=87, chunk=5, context=2,
                                             crossfade=False)), dim=1)
    assert torch.equal(trimmed, ref[:, :87])
    for chunk, context in [(5, 2), (8, 3), (3, 3), (30, 1)]:  # cross-faded: same frame count, ordered output
        out = torch.cat(list(streamed_decode(z, _causal_decoder, num_frames=87, chunk=chunk, context=context)), 1)
        assert out.shape == ref[:, :87].shape
        torch.testing.assert_close(out[:, :9], ref[:, :9])  # before the first cross-fade it is exact


def test_streamed_decode_close_to_one_shot_with_diffusers_vae():
    """GroupNorm pools statistics over the decoded clip, so no chunked decode is exact (diffusers' own
    temporal tiling is not either); ours must be no further from the one-shot decode than that."""
    torch.manual_seed(0)
    vae = AutoencoderKLHunyuanVideo(**VAEConfig().diffusers_kwargs()).eval()
    z = torch.randn(4, 17, 4, 4, generator=torch.Generator().manual_seed(1))
    fn = diffusers_decode_fn(vae)
    with torch.no_grad():
        ref = fn(z[None])[0]
        vae.use_framewise_decoding = True
        tiled = vae.decode(z[None]).sample[0].clamp(-1, 1)
    out = torch.cat(list(streamed_decode(z, fn, chunk=8, context=2)), dim=1)
    assert out.shape == ref.shape == (3, 65, 32, 32)
    ours, theirs = (out - ref).abs().mean(), (tiled - ref).abs().mean()
    assert ours <= theirs * 1.05, (ours, theirs)
