"""Our Avatar modules against HunyuanVideo-Avatar's own code, through a committed fixture.

tests/data/avatar_parity/*.safetensors holds inputs and the reference's outputs written by
scripts/avatar_parity_fixture.py (run against the fetched reference repository); the weights are
not stored but re-derived from the seed by tests/avatar_parity_weights.py. No reference code is
needed here. Tolerance: max abs error <= 1e-4 in float32.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from magicinfinite_core.config import AvatarConfig, DiTConfig
from magicinfinite_core.inputs.audio_features import whisper_frame_windows
from magicinfinite_core.models.avatar_layers import (
    AvatarAudioProjection,
    PerceiverAudioAdapter,
    audio_tokens_per_latent,
    face_mask_to_tokens,
)
from magicinfinite_core.models.dit import MagicInfiniteDiT
from magicinfinite_core.models.rope import rope_3d
from tests.avatar_parity_weights import fill_derived

DATA = Path(__file__).parent / "data" / "avatar_parity"
TOL = 1e-4


def err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.float() - b.float()).abs().max())


@torch.no_grad()
def test_audio_projection_and_adapter_match_reference():
    d = load_file(DATA / "adapters.safetensors")
    seed = int(d["seed"][0])
    av = AvatarConfig(audio_layers=2, audio_channels=8, audio_hidden=32, adapter_dim=32)
    proj, adapter = AvatarAudioProjection(av, 64), PerceiverAudioAdapter(64, av)
    fill_derived(proj, seed)
    fill_derived(adapter, seed + 1)
    tokens = proj(d["audio"])
    assert err(tokens, d["tokens"]) <= TOL
    per_latent = audio_tokens_per_latent(tokens, av.frames_per_latent)
    assert err(per_latent, d["per_latent"]) <= TOL
    assert err(adapter(per_latent, d["video"]), d["adapted"]) <= TOL


def test_whisper_windowing_matches_reference():
    d = load_file(DATA / "windowing.safetensors")
    hidden = torch.stack(
        [torch.randn(1, 1500, 8, generator=torch.Generator().manual_seed(int(s))) for s in d["hidden_seeds"]],
        dim=2,
    )[0]
    ours = whisper_frame_windows(hidden, d["windows"].shape[1])
    assert torch.equal(ours, d["windows"][0])
    # the reference stops at 400 frames (16 s); ours windows any length, zeros past the audio
    assert int(d["capped_frames"][0]) == 400
    long = whisper_frame_windows(hidden, 1000)
    assert long.shape[0] == 1000 and torch.equal(long[:400], whisper_frame_windows(hidden, 400))
    assert long[800:].abs().sum() == 0  # 2f >= 1500 + 4: past the hidden states


def test_reference_tokens_rope_at_time_minus_one():
    d = load_file(DATA / "forward_3072.safetensors")
    _, _, t, h, w = d["x"].shape
    cos, sin = rope_3d((t + 1, h // 2, w // 2), (16, 56, 56), 256.0, t_offset=-1)
    assert err(cos, d["rope_cos"]) <= 1e-5 and err(sin, d["rope_sin"]) <= 1e-5


@pytest.fixture(scope="module")
def width_3072():
    path = DATA / "forward_3072.safetensors"
    with safe_open(str(path), "pt") as f:
        ref_keys = set(f.metadata()["keys"].split(","))
    cfg = DiTConfig(
        hidden_size=3072, num_heads=24, depth_double=2, depth_single=1, rope_dims=(16, 56, 56),
        in_channels=16, out_channels=16, text_dim=64, pooled_dim=32, audio=None,
        avatar=AvatarConfig(adapter_after_double=(1,)),
    )
    with torch.device("meta"):
        model = MagicInfiniteDiT(cfg)
    model = model.to_empty(device="cpu").eval()
    return model, ref_keys, load_file(path)


def test_width_3072_names_equal_reference(width_3072):
    model, ref_keys, _ = width_3072
    ours = set(model.state_dict())
    assert sorted(ours - ref_keys) == [] and sorted(ref_keys - ours) == []


@torch.no_grad()
def test_full_forward_width_3072_matches_reference(width_3072):
    model, _, d = width_3072
    fill_derived(model, int(d["seed"][0]))
    t, h, w = d["x"].shape[2:]
    mask = face_mask_to_tokens(d["face_mask"], (t, h // 2, w // 2))
    out = model(
        d["x"], d["timestep"], d["txt"], d["txt_mask"].bool(), d["pooled"], audio=d["audio"][:, None],
        speaker_mask=mask, ref_latent=d["ref_latent"], motion_exp=d["motion_exp"],
        motion_pose=d["motion_pose"], fps=d["fps"],
    )
    assert d["out"].abs().max() > 0.1  # a real signal, not zeros from zero-initialised layers
    e = err(out, d["out"])
    print(f"width-3072 forward: max abs err {e:.2e} (output max {float(d['out'].abs().max()):.2f})")
    assert e <= TOL
