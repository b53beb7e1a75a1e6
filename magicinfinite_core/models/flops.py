"""Analytic FLOP counter of the MagicInfinite DiT forward (matmuls and attention only).

Why analytic: MFU needs the work a forward *must* do, independent of which kernels ran (flash-attn,
SDPA math, fp8 GEMMs, compiled or eager). We count 2 FLOPs per multiply-add of every linear layer and
convolution, and 4·Lq·Lk·H·D per attention call (QKᵀ and PV). Element-wise work (norms, RoPE,
modulation, GELU, softmax) is left out, as is usual for MFU; it is < 1 % of the 13B forward.

Every count mirrors the module code in models/ (blocks.py, audio_layers.py, layers.py, dit.py) and is
checked against torch's FlopCounterMode on real modules in tests/test_gpu_check.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from magicinfinite_core.config import DiTConfig

FREQ_DIM = 256  # sinusoidal timestep embedding size (layers.TimestepEmbedder)


@dataclass(frozen=True)
class ForwardShape:
    """One DiT forward: tokens per sample and how many samples (CFG passes) ride in the batch."""

    video_tokens: int  # patchified video tokens of the window (t * h * w of the token grid)
    text_tokens: int  # text-stream tokens entering txt_in (LLaVA prompt + image tokens for the 13B)
    latent_frames: int  # token-grid frames (per-frame audio cross-attention)
    speakers: int = 1  # audio streams K (0: no audio context)
    batch: int = 1

    @classmethod
    def for_window(
        cls, cfg: DiTConfig, latent_thw: tuple[int, int, int], text_tokens: int, speakers: int = 1, batch: int = 1
    ) -> ForwardShape:
        (pt, ph, pw), (t, h, w) = cfg.patch_size, latent_thw
        return cls((t // pt) * (h // ph) * (w // pw), text_tokens, t // pt, speakers, batch)


def linear(tokens: float, d_in: int, d_out: int) -> float:
    """y = x Wᵀ (+ b) over `tokens` rows: 2 FLOPs per multiply-add."""
    return 2.0 * tokens * d_in * d_out


def attention(q_len: float, k_len: float, hidden: int) -> float:
    """softmax(QKᵀ)V with heads * head_dim = hidden: two matmuls of 2·Lq·Lk·hidden each."""
    return 4.0 * q_len * k_len * hidden


def mlp_hidden(cfg: DiTConfig) -> int:
    return int(cfg.hidden_size * cfg.mlp_ratio)


def double_block(cfg: DiTConfig, n_img: int, n_txt: int) -> dict[str, float]:
    """One DoubleStreamBlock for one sample: per-stream modulation, qkv, proj, MLP; joint attention."""
    h, m = cfg.hidden_size, mlp_hidden(cfg)
    per_token = linear(1, h, 3 * h) + linear(1, h, h) + linear(1, h, m) + linear(1, m, h)
    return {
        "linear": (n_img + n_txt) * per_token + 2 * linear(1, h, 6 * h),
        "attention": attention(n_img + n_txt, n_img + n_txt, h),
    }


def single_block(cfg: DiTConfig, n_img: int, n_txt: int) -> dict[str, float]:
    """One SingleStreamBlock for one sample: linear1 (qkv + MLP in), linear2, modulation; attention."""
    h, m = cfg.hidden_size, mlp_hidden(cfg)
    n = n_img + n_txt
    return {
        "linear": linear(n, h, 3 * h + m) + linear(n, h + m, h) + linear(1, h, 3 * h),
        "attention": attention(n, n, h),
    }


def audio_layer(cfg: DiTConfig, n_img: int, frames: int, speakers: int) -> dict[str, float]:
    """One AudioCrossAttention: q once; kv of every context token; per-frame attention and the output
    projection once per speaker (the code projects [B, K, N, C] before the masked sum)."""
    if cfg.audio is None or speakers == 0:
        return {"linear": 0.0, "attention": 0.0}
    h, a = cfg.hidden_size, cfg.audio
    ctx = speakers * frames * a.tokens_per_latent_frame
    return {
        "linear": linear(n_img, h, h) + linear(ctx, a.context_dim, 2 * h) + linear(speakers * n_img, h, h),
        # each of the n_img queries of a frame sees that frame's tokens_per_latent_frame keys, per speaker
        "attention": speakers * attention(n_img, a.tokens_per_latent_frame, h),
    }


def audio_projection(cfg: DiTConfig, frames: int, speakers: int) -> float:
    if cfg.audio is None or speakers == 0:
        return 0.0
    a = cfg.audio
    groups = speakers * frames
    return (
        linear(groups * a.frames_per_latent, a.frame_window * a.feature_dim, a.proj_dim)
        + linear(groups, a.frames_per_latent * a.proj_dim, a.proj_dim)
        + linear(groups, a.proj_dim, a.tokens_per_latent_frame * a.context_dim)
    )


def token_refiner(cfg: DiTConfig, n_txt: int) -> dict[str, float]:
    """txt_in: input embedding, time + pooled-text conditioning, `refiner_depth` RefinerBlocks."""
    h, d = cfg.hidden_size, cfg.text_dim
    cond = linear(1, FREQ_DIM, h) + linear(1, h, h) + linear(1, d, h) + linear(1, h, h)
    block = linear(n_txt, h, 3 * h) + linear(n_txt, h, h) + 2 * linear(n_txt, h, 4 * h) + linear(1, h, 2 * h)
    return {
        "linear": linear(n_txt, d, h) + cond + cfg.refiner_depth * block,
        "attention": cfg.refiner_depth * attention(n_txt, n_txt, h),
    }


def embed_and_head(cfg: DiTConfig, n_img: int) -> float:
    """img_in (patch Conv3d), time_in, vector_in (+ guidance_in), final adaLN + linear."""
    h = cfg.hidden_size
    pt, ph, pw = cfg.patch_size
    patch_in = cfg.in_channels * pt * ph * pw
    time = linear(1, FREQ_DIM, h) + linear(1, h, h)
    out = linear(1, cfg.pooled_dim, h) + linear(1, h, h) + time
    if cfg.guidance_embed:
        out += time
    return out + linear(n_img, patch_in, h) + linear(1, h, 2 * h) + linear(n_img, h, pt * ph * pw * cfg.out_channels)


def block_counts(cfg: DiTConfig) -> dict[str, int]:
    """How many of each block one forward runs (`attention`: joint self-attention calls)."""
    audio = 0 if cfg.audio is None else cfg.depth_double + cfg.depth_single // cfg.audio.single_block_every
    return {"double": cfg.depth_double, "single": cfg.depth_single, "audio": audio,
            "attention": cfg.depth_double + cfg.depth_single}


def linear_flops_per_token(cfg: DiTConfig) -> dict[str, float]:
    """Per-token linear FLOPs of one block of each kind (the token-proportional part; for models
    that shard tokens, e.g. bench/usp_scaling.py)."""
    h, m = cfg.hidden_size, mlp_hidden(cfg)
    return {
        "double": linear(1, h, 3 * h) + linear(1, h, h) + linear(1, h, m) + linear(1, m, h),
        "single": linear(1, h, 3 * h + m) + linear(1, h + m, h),
        "audio": 2 * linear(1, h, h),
    }


def dit_forward_flops(cfg: DiTConfig, shape: ForwardShape) -> dict[str, float]:
    """FLOPs of one `MagicInfiniteDiT.forward`, split by where they are spent; "total" sums them."""
    n_img, n_txt, t, k = shape.video_tokens, shape.text_tokens, shape.latent_frames, shape.speakers
    counts = block_counts(cfg)
    dbl, sgl = double_block(cfg, n_img, n_txt), single_block(cfg, n_img, n_txt)
    aud = audio_layer(cfg, n_img, t, k)
    ref = token_refiner(cfg, n_txt)
    parts = {
        "double_linear": counts["double"] * dbl["linear"],
        "double_attention": counts["double"] * dbl["attention"],
        "single_linear": counts["single"] * sgl["linear"],
        "single_attention": counts["single"] * sgl["attention"],
        "audio_linear": counts["audio"] * aud["linear"] + audio_projection(cfg, t, k),
        "audio_attention": counts["audio"] * aud["attention"],
        "refiner": ref["linear"] + ref["attention"],
        "embed_head": embed_and_head(cfg, n_img),
    }
    parts = {name: v * shape.batch for name, v in parts.items()}
    parts["total"] = sum(parts.values())
    return parts
