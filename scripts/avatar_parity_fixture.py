"""Write tests/data/avatar_parity/*.safetensors by running HunyuanVideo-Avatar's own modules on the CPU.

Usage (the reference is fetched for comparison only and never committed):
    PYTHONPATH=/path/with/einops python scripts/avatar_parity_fixture.py /path/to/HunyuanVideo-Avatar [OUT_DIR]

How the reference runs here: `flash_attn` is replaced by exact per-segment SDPA (what
`flash_attn_varlen_func` computes), DISABLE_SP=1 selects its single-process path, its `get_cu_seqlens`
(which allocates on "cuda") is swapped for the same computation on the CPU, and every parameter is
overwritten by tests/avatar_parity_weights.py (zero-initialised ones included). Only inputs, outputs
and the seed are written; tests/test_avatar_parity.py re-derives the weights and checks our modules.
"""

from __future__ import annotations

import argparse
import os
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.avatar_parity_weights import fill_derived  # noqa: E402

SEED = 27


def varlen_sdpa(q, k, v, cu_q, cu_kv, max_q, max_kv, *args, **kwargs):
    """flash_attn_varlen_func on the CPU: full attention inside each [cu[i], cu[i+1]) segment."""
    out = torch.empty_like(q)
    for i in range(len(cu_q) - 1):
        a, b = int(cu_q[i]), int(cu_q[i + 1])
        c, d = int(cu_kv[i]), int(cu_kv[i + 1])
        if b == a:
            continue
        seg = F.scaled_dot_product_attention(
            q[a:b].transpose(0, 1), k[c:d].transpose(0, 1), v[c:d].transpose(0, 1)
        )
        out[a:b] = seg.transpose(0, 1)
    return out


def cpu_cu_seqlens(text_mask, img_len):
    b = text_mask.shape[0]
    text_len = text_mask.sum(dim=1)
    max_len = text_mask.shape[1] + img_len
    cu = torch.zeros([2 * b + 1], dtype=torch.int32)
    for i in range(b):
        cu[2 * i + 1] = i * max_len + text_len[i] + img_len
        cu[2 * i + 2] = (i + 1) * max_len
    return cu


def import_reference(repo: Path):
    os.environ["DISABLE_SP"] = "1"
    import diffusers.models  # noqa: F401  (probes for flash_attn at import: before the stand-in exists)
    import transformers.utils.import_utils  # noqa: F401

    fa = types.ModuleType("flash_attn")
    fai = types.ModuleType("flash_attn.flash_attn_interface")
    fai.flash_attn_varlen_func = varlen_sdpa
    fa.flash_attn_interface = fai
    sys.modules.setdefault("flash_attn", fa)
    sys.modules.setdefault("flash_attn.flash_attn_interface", fai)
    sys.path.insert(0, str(repo))
    from hymm_sp.modules import models_audio

    models_audio.get_cu_seqlens = cpu_cu_seqlens
    return models_audio


def g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def adapters_fixture(out: Path) -> None:
    """AudioProjNet2 + PerceiverAttentionCA at small sizes, and the per-latent token padding."""
    from hymm_sp.modules.audio_adapters import AudioProjNet2, PerceiverAttentionCA

    proj = AudioProjNet2(seq_len=10, blocks=2, channels=8, intermediate_dim=32, output_dim=64, context_tokens=4)
    adapter = PerceiverAttentionCA(dim=64, dim_head=32, heads=33)
    fill_derived(proj, SEED)
    fill_derived(adapter, SEED + 1)
    t, s = 2, 6
    audio = torch.randn(1, 4 * t - 3, 10, 2, 8, generator=g(1))
    video = torch.randn(1, t, s, 64, generator=g(2))
    tokens = proj(audio)  # [1, F, 4, 64]
    pad = tokens[:, :1].repeat(1, 3, 1, 1)
    per_latent = torch.cat([pad, tokens], dim=1).view(1, t, 16, 64)
    adapted = adapter(per_latent, video)
    save_file(
        {"audio": audio, "video": video, "tokens": tokens, "per_latent": per_latent, "adapted": adapted,
         "seed": torch.tensor([SEED])},
        str(out / "adapters.safetensors"),
    )


@torch.no_grad()
def windowing_fixture(out: Path) -> None:
    """encode_audio's Whisper windows on seeded hidden states (what the encoder would return)."""
    import importlib.util

    for name in ("decord", "librosa", "cv2"):  # imported at its module top, unused by encode_audio
        if importlib.util.find_spec(name) is None:
            sys.modules.setdefault(name, types.ModuleType(name))
    from hymm_sp.data_kits.audio_preprocessor import encode_audio

    hidden = [torch.randn(1, 1500, 8, generator=g(10 + i)) for i in range(5)]

    class Encoder:  # the reference calls wav2vec.encoder(feats, output_hidden_states=True).hidden_states
        def __call__(self, feats, output_hidden_states=True):
            return types.SimpleNamespace(hidden_states=tuple(hidden))

    enc = types.SimpleNamespace(encoder=Encoder())
    feats = torch.zeros(80, 3000)
    windows = encode_audio(enc, feats, 25, num_frames=60)  # [1, 60, 10, 5, 8]
    capped = encode_audio(enc, feats, 25, num_frames=1000)
    save_file(
        {"windows": windows.contiguous(), "capped_frames": torch.tensor([capped.shape[1]]),
         "hidden_seeds": torch.arange(10, 15)},
        str(out / "windowing.safetensors"),
    )


@torch.no_grad()
def forward_fixture(out: Path, models_audio) -> None:
    """One forward of HYVideoDiffusionTransformer at width 3072, 2 double + 1 single blocks, tiny latent."""
    from hymm_sp.helpers import get_nd_rotary_pos_embed_new

    text_dim, pooled_dim = 64, 32
    args = types.SimpleNamespace(
        text_projection="single_refiner", text_states_dim=text_dim, use_attention_mask=True,
        text_states_dim_2=pooled_dim,
    )
    torch.manual_seed(0)
    model = models_audio.HYVideoDiffusionTransformer(
        args, patch_size=[1, 2, 2], in_channels=16, out_channels=16, hidden_size=3072, mlp_width_ratio=4,
        num_heads=24, depth_double_blocks=2, depth_single_blocks=1, rope_dim_list=[16, 56, 56],
    ).eval()
    fill_derived(model, SEED + 2)
    t, h, w = 2, 4, 4
    x = torch.randn(1, 16, t, h, w, generator=g(20))
    ref = torch.randn(1, 16, t, h, w, generator=g(21))
    txt = torch.randn(1, 6, text_dim, generator=g(22))
    txt_mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    pooled = torch.randn(1, pooled_dim, generator=g(23))
    audio = torch.randn(1, 4 * t - 3, 10, 5, 384, generator=g(24))
    face = torch.zeros(1, 1, 1, h, w)
    face[..., 1:4, 0:3] = 1.0
    motion_exp = torch.tensor([[30.0, 30, 30, 30]])
    motion_pose = torch.tensor([[25.0, 25, 25, 25]])
    fps = torch.tensor([25.0])
    timestep = torch.tensor([600.0])
    cos, sin = get_nd_rotary_pos_embed_new(
        [16, 56, 56], [t, h // 2, w // 2], theta=256, use_real=True, theta_rescale_factor=1,
        concat_dict={"mode": "timecat", "bias": -1},
    )
    y = model(
        x, timestep, ref_latents=ref, text_states=txt, text_mask=txt_mask, text_states_2=pooled,
        freqs_cos=cos, freqs_sin=sin, return_dict=False, motion_exp=motion_exp, motion_pose=motion_pose,
        fps=fps, audio_prompts=audio, face_mask=face,
    )
    used = sorted(k for k in model.state_dict() if not k.startswith("audio_adapter_blocks.") or
                  k.startswith("audio_adapter_blocks.0."))
    save_file(
        {"x": x, "ref_latent": ref, "timestep": timestep, "txt": txt, "txt_mask": txt_mask, "pooled": pooled,
         "audio": audio, "face_mask": face, "motion_exp": motion_exp, "motion_pose": motion_pose, "fps": fps,
         "rope_cos": cos, "rope_sin": sin, "out": y, "seed": torch.tensor([SEED + 2])},
        str(out / "forward_3072.safetensors"),
        metadata={"keys": ",".join(used)},
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference", type=Path, help="a checkout of Tencent-Hunyuan/HunyuanVideo-Avatar")
    ap.add_argument("out", type=Path, nargs="?", default=ROOT / "tests" / "data" / "avatar_parity")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    models_audio = import_reference(a.reference)
    adapters_fixture(a.out)
    windowing_fixture(a.out)
    forward_fixture(a.out, models_audio)
    print(f"wrote {sorted(p.name for p in a.out.glob('*.safetensors'))}")


if __name__ == "__main__":
    main()
