"""USP scaling model: measured CPU step times + analytic FLOPs / all-to-all bytes -> 8 x H100 (JSON).

Usage: python bench/usp_scaling.py [--no-cpu] [--gpus 8] [--mfu 0.4] [--h100-window-s SECONDS]

What is measured here (2 shared CPU cores, tiny preset, fp32): one window forward in one process,
and the same forward on 2 gloo ranks through `SequenceParallelWorkerGroup` (yunchang Ulysses), next
to the analytic FLOPs and all-to-all bytes of that shape. What is assumed (labelled in the JSON's
"assumptions"): H100 bf16 dense peak 790 TFLOP/s, NVLink 450 GB/s per direction per GPU, a
sustained fraction of peak (MFU) and of NVLink bandwidth. With a GPU at hand, pass the measured
single-GPU 13B window forward time as --h100-window-s and the compute term is taken from it.
The model is written out in docs/usp.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass

import torch

from magicinfinite_core.config import DiTConfig, SamplerConfig, dit_preset, latent_frames
from magicinfinite_core.models.flops import block_counts, linear_flops_per_token
from magicinfinite_core.sampling.sampler import step_plans

ASSUMPTIONS = {
    "h100_bf16_dense_peak_tflops": 790.0,  # given by the brief
    "nvlink_GBps_per_direction_per_gpu": 450.0,  # given by the brief
    "mfu": 0.40,  # assumed sustained fraction of peak for GEMMs + flash attention at ~11k tokens
    "alltoall_bw_efficiency": 0.60,  # assumed fraction of NVLink bandwidth an 1-30 MB all-to-all gets
    "collective_latency_s": 30e-6,  # assumed fixed cost per collective call
    "bytes_per_element": 2,  # bf16 activations
    "text_tokens": 256,  # HunyuanVideo-I2V LLaVA prompt length
    "image_tokens": 576,  # LLaVA image tokens of the portrait, prepended to the text
    "audio_context_tokens_per_frame": 32,  # hunyuan-13b preset
    "speakers": 1,
    "comm_overlap": 0.0,  # fraction of communication hidden behind compute (none assumed)
}


@dataclass(frozen=True)
class Shape:
    """One window forward: video tokens, joint (text + image) tokens, latent frames, speakers."""

    video: int
    joint: int
    frames: int
    speakers: int = 1
    ctx_per_frame: int = 32


def per_rank_flops(cfg: DiTConfig, s: Shape, n: int, joint_queries_replicated: bool) -> dict[str, float]:
    """FLOPs one of n SP ranks does in one window forward (n = 1: the single-device forward).

    Video tokens are split n ways; joint tokens are replicated, so every rank runs their linear
    layers in full. Ulysses attention: a rank computes H/n heads over all queries and keys; with
    xfuser's joint handling the joint queries arrive n times (once from each rank's all-to-all).
    """
    b, lin = block_counts(cfg), linear_flops_per_token(cfg)
    tokens = s.video / n + s.joint
    linear = tokens * (b["double"] * lin["double"] + b["single"] * lin["single"])
    audio = (s.video / n) * b["audio"] * lin["audio"]
    audio += (s.video / n) * b["audio"] * 4.0 * s.speakers * s.ctx_per_frame * cfg.hidden_size
    queries = s.video + (n * s.joint if joint_queries_replicated else s.joint)
    keys = s.video + s.joint
    attention = b["attention"] * 4.0 * queries * keys * cfg.hidden_size / n
    return {"linear": linear, "audio": audio, "attention": attention, "total": linear + audio + attention}


def alltoall_bytes_per_block(cfg: DiTConfig, s: Shape, n: int, bpe: int, joint_queries_in_a2a: bool) -> float:
    """Bytes one rank sends in one attention: q, k, v all-to-all in, output all-to-all back.

    Each all-to-all moves the rank's [tokens, hidden] tensor, (n-1)/n of it to other ranks. With
    xfuser the joint queries ride along in the q and output all-to-alls; with our yunchang backend
    they do not, but the joint output heads are all-gathered instead (same (n-1)/n share).
    """
    if n == 1:
        return 0.0
    shard, h, out = s.video / n, cfg.hidden_size, (n - 1) / n
    if joint_queries_in_a2a:
        tokens = 2 * (shard + s.joint) + 2 * shard
    else:
        tokens = 4 * shard + s.joint
    return tokens * h * bpe * out


def thirteen_b_projection(args: argparse.Namespace, a: dict) -> dict:
    cfg = dit_preset("hunyuan-13b")
    fps, seconds, px = 25, args.seconds, args.pixels
    frames = fps * seconds
    t_lat = latent_frames(frames)
    side = -(-px // 16) * 16  # HunyuanVideo sizes are multiples of 16 px
    tok_side = side // 8 // cfg.patch_size[1]
    sampler = SamplerConfig()
    w_lat = latent_frames(sampler.window_frames)
    plans = step_plans(t_lat, sampler, args.steps)
    windows = sum(len(p) for p in plans)
    s = Shape(video=w_lat * tok_side * tok_side, joint=a["text_tokens"] + a["image_tokens"], frames=w_lat,
              speakers=a["speakers"], ctx_per_frame=a["audio_context_tokens_per_frame"])
    peak = a["h100_bf16_dense_peak_tflops"] * 1e12 * a["mfu"]
    single = per_rank_flops(cfg, s, 1, False)
    one_gpu_window_s = args.h100_window_s if args.h100_window_s else single["total"] / peak
    flop_rate = single["total"] / one_gpu_window_s  # measured or assumed effective FLOP/s
    bw = a["nvlink_GBps_per_direction_per_gpu"] * 1e9 * a["alltoall_bw_efficiency"]
    attn_blocks = block_counts(cfg)["attention"]
    layouts = {}
    for name, n, xfuser_joint in (("1gpu", 1, False), (f"ulysses{args.gpus}_xfuser", args.gpus, True),
                                  (f"ulysses{args.gpus}_yunchang_joint", args.gpus, False)):
        if cfg.num_heads % n:
            continue
        f = per_rank_flops(cfg, s, n, xfuser_joint)
        compute = f["total"] / flop_rate
        a2a = alltoall_bytes_per_block(cfg, s, n, a["bytes_per_element"], xfuser_joint)
        gather = (s.video * (n - 1) / n) * cfg.out_channels * 4 * 4 if n > 1 else 0.0  # fp32 head output
        n_coll = attn_blocks * (4 if n > 1 else 0) + (1 if n > 1 else 0)
        comm = (attn_blocks * a2a + gather) / bw + n_coll * a["collective_latency_s"]
        window = compute + comm * (1 - a["comm_overlap"])
        total = window * windows
        layouts[name] = {
            "gpus": n,
            "per_gpu_tflop_per_window": f["total"] / 1e12,
            "compute_s_per_window": compute,
            "alltoall_MB_per_block_per_gpu": a2a / 1e6,
            "comm_s_per_window": comm,
            "window_forward_s": window,
            "speedup_vs_1gpu": None,
            "projected_denoise_s": total,
        }
    base = layouts["1gpu"]["window_forward_s"]
    for v in layouts.values():
        v["speedup_vs_1gpu"] = base / v["window_forward_s"]
    return {
        "video": {"seconds": seconds, "fps": fps, "frames": frames, "pixels": f"{side}x{side}",
                  "latent_frames": t_lat, "steps": args.steps, "window_latent_frames": w_lat,
                  "windows_per_step": [len(p) for p in plans], "window_forwards": windows,
                  "video_tokens_per_window": s.video, "joint_tokens": s.joint},
        "single_gpu_window_source": "measured (--h100-window-s)" if args.h100_window_s
        else "FLOPs / (peak x mfu) - an assumption, not a measurement",
        "tflop_per_window_single_gpu": single["total"] / 1e12,
        "flop_split_single_gpu": {k: v / 1e12 for k, v in single.items()},
        "layouts": layouts,
        "paper_claim_s": {"10s_540x540_8xH100": 10.0, "60s_540x540_4steps_8xH100": 60.0},
        "not_included": "text/image/audio encoders, VAE decode (streamed), host<->device copies of windows",
    }


def measure_cpu(repeats: int) -> dict:
    """Tiny preset, one window (9 latent frames, 16x16 latent), two speakers: 1 process vs 2 gloo ranks."""
    from magicinfinite_core.distributed.worker_group import ModelSpec, SequenceParallelWorkerGroup

    cfg = dit_preset("tiny")
    a = cfg.audio
    t, hw = 9, 16
    g = torch.Generator().manual_seed(0)
    inp = dict(
        x=torch.randn(1, cfg.in_channels, t, hw, hw, generator=g), timestep=torch.tensor([500.0]),
        txt=torch.randn(1, 24, cfg.text_dim, generator=g), txt_mask=None,
        pooled=torch.randn(1, cfg.pooled_dim, generator=g),
        audio=torch.randn(1, 2, t, a.frames_per_latent, a.frame_window, a.feature_dim, generator=g),
        speaker_mask=torch.ones(1, 2, t, hw // 2, hw // 2),
    )
    spec = ModelSpec(config=cfg, seed=0, init_std=0.05)
    model = spec.build()

    def timed(fn) -> float:
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    out = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        with torch.inference_mode():
            out[f"single_process_{threads}thread_s"] = timed(lambda: model(**inp))
    with SequenceParallelWorkerGroup(2, spec, backend="gloo", attention="yunchang", threads=1) as grp:
        with torch.inference_mode():
            ref = model(**inp)
        diff = float((grp(**inp) - ref).abs().max())
        out["sp2_gloo_1thread_per_rank_s"] = timed(lambda: grp(**inp))
    s = Shape(video=t * (hw // 2) ** 2, joint=24, frames=t, speakers=2, ctx_per_frame=a.tokens_per_latent_frame)
    f1, f2 = per_rank_flops(cfg, s, 1, False), per_rank_flops(cfg, s, 2, False)
    rate = f1["total"] / out["single_process_1thread_s"]
    ideal = f2["total"] / rate
    bytes_ = block_counts(cfg)["attention"] * alltoall_bytes_per_block(cfg, s, 2, 4, False)
    out.update({
        "shape": {"latent": [t, hw, hw], "video_tokens": s.video, "joint_tokens": s.joint},
        "gflop_single": f1["total"] / 1e9,
        "achieved_gflops_1thread": rate / 1e9,
        "sp2_ideal_compute_s": ideal,
        "sp2_overhead_s": out["sp2_gloo_1thread_per_rank_s"] - ideal,
        "sp2_alltoall_bytes_per_forward_per_rank": bytes_,
        "sp2_max_abs_diff_vs_single": diff,
        "note": "2 shared CPU cores; the SP time includes queue transfer to the workers and gloo over "
                "loopback, so this checks the bookkeeping, not GPU scaling",
    })
    return out


def xfuser_world1_check(preset: str, frames: int, pixels: int) -> dict:
    """GPU only: the xfuser path at world size 1 against the plain forward (bf16, seeded weights).

    Run as `python bench/usp_scaling.py --xfuser-check tiny` (and `hunyuan-13b`, ~26 GB of weights).
    """
    from magicinfinite_core.distributed import wrap_for_torchrun
    from magicinfinite_core.distributed.usp import import_xfuser
    from magicinfinite_core.distributed.worker_group import ModelSpec

    import_xfuser()  # one clear error when there is no CUDA or no xfuser
    cfg = dit_preset(preset)
    model = ModelSpec(config=cfg, seed=0, init_std=0.02, dtype="bfloat16").build("cuda")
    a = cfg.audio
    t, hw = latent_frames(frames), -(-pixels // 16) * 16 // 8
    g = torch.Generator().manual_seed(0)
    inp = dict(
        x=torch.randn(1, cfg.in_channels, t, hw, hw, generator=g), timestep=torch.tensor([500.0]),
        txt=torch.randn(1, 64, cfg.text_dim, generator=g),
        txt_mask=torch.arange(64)[None] < 48,  # padded prompt: exercises the per-sample joint path
        pooled=torch.randn(1, cfg.pooled_dim, generator=g),
        audio=torch.randn(1, 1, t, a.frames_per_latent, a.frame_window, a.feature_dim, generator=g),
        speaker_mask=torch.ones(1, 1, t, hw // 2, hw // 2),
    )
    inp = {k: (v.to("cuda", torch.bfloat16) if k in ("x", "txt", "pooled", "audio") else v.to("cuda"))
           for k, v in inp.items()}
    with torch.inference_mode():
        ref = model(**inp).float()
        sp = wrap_for_torchrun(model, ulysses=1, attention="xfuser")
        out = sp(**inp).float()
    diff = (out - ref).abs()
    return {"preset": preset, "latent": [t, hw, hw], "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()), "ref_abs_mean": float(ref.abs().mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU measurement (~30 s)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--pixels", type=int, default=540)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--mfu", type=float, default=ASSUMPTIONS["mfu"])
    ap.add_argument("--h100-window-s", type=float, default=None,
                    help="measured single-H100 13B window forward (bf16); replaces the MFU assumption")
    ap.add_argument("--xfuser-check", choices=("tiny", "hunyuan-13b"), default=None,
                    help="GPU only: compare the xfuser path at world size 1 with the plain forward")
    args = ap.parse_args()
    if args.xfuser_check:
        frames, pixels = (33, 128) if args.xfuser_check == "tiny" else (33, args.pixels)
        print(json.dumps(xfuser_world1_check(args.xfuser_check, frames, pixels), indent=2))
        return
    a = dict(ASSUMPTIONS, mfu=args.mfu)
    result = {"bench": "usp_scaling", "assumptions": a, "h100_projection": thirteen_b_projection(args, a)}
    if not args.no_cpu:
        result["cpu_measured"] = measure_cpu(args.repeats)
    result["torch"] = torch.__version__
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
