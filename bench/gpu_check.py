"""The 13B path on one GPU in one command: proves each piece runs and measures it (writes one JSON).

    python bench/gpu_check.py --out bench/results/gpu_check.json            # CUDA, 13B, ~6 min
    python bench/gpu_check.py --device cpu --tiny --out /tmp/gpu_check.json  # the same stages, tiny

Stages run in this order; each is guarded (a failure is recorded with its traceback and the next stage
runs) and the JSON is rewritten after every stage, so a run cut short still leaves its results:

  environment      device, memory, versions (torch, CUDA, flash-attn, xfuser, yunchang, diffusers, ...),
                   the measured bf16 matmul ceiling and the datasheet peak used for MFU
  tiny_cuda_vs_cpu the tiny DiT saved to safetensors and loaded straight onto the GPU (load_transformer) equals
                   the CPU fp32 result: fp32 rel. error < 1e-3 (TF32 convs), bf16 < 3e-2
  dit_window_<px>  the DiT (hunyuan-13b with audio layers: built on the meta device, materialised on the
                   device in bf16 with seeded random weights), one 33-frame window forward per size
                   (CUDA events, 1 warm-up, median of --repeats), FLOPs from magicinfinite_core.models.flops,
                   TFLOP/s, MFU, peak memory
  cfg_batched      3 CFG passes as one batch-3 forward vs 3 batch-1 forwards (time ratio)
  sdpa_backends    flash / efficient / cuDNN / math SDPA at the window's attention shape: time, error
                   against fp32, and the whole-forward attention time each implies
  compile          torch.compile of every block vs eager: compile time apart, then median and max error
  fp8              block linears in fp8 (row-wise scales, torch._scaled_mm) vs bf16: time, max error of
                   one forward, weight round-trip error, weight memory
  vae_decode       the HunyuanVideo VAE shape (random weights): 33 frames decoded untiled vs tiled
  xfuser_world1    `bench/usp_scaling.py --xfuser-check tiny` (xfuser path == plain path at world size 1)
  generation       a whole 4-step sliding-window generation of --seconds s through pipeline.sample_latent
                   and the streamed VAE decode -> GPU-seconds per video-second, split DiT / VAE / other,
                   next to the paper's 8 GPU-s per video-second (10 s of video in 10 s on 8 H100)
  block_swap       the memory option for smaller cards: all blocks streamed from pinned host memory
                   (models/block_swap.py): time, peak memory, difference to the resident model
  avatar           HunyuanVideo-Avatar (hunyuan-avatar preset, random weights; the 13B DiT of the stages
                   above is freed first) at its own shape: 704x768, 129 frames = one window of 33 latent
                   frames (+ the reference frame's tokens), one speaker: seconds per forward (= per step
                   without CFG; its guidance runs 2 passes) and peak memory in bf16, with fp8 block linears,
                   and with block swap (adapters included); errors against the bf16 forward

Nothing is downloaded. Sizes: HunyuanVideo frames are multiples of 16 px, so "540x540" runs at 544x544
(34x34 tokens, as bench/usp_scaling.py does); 720x720 is itself a multiple of 16. Text stream: 256
prompt tokens + 576 portrait image tokens (HunyuanVideo-I2V's LLaVA layout). Wheels the GPU machine
lacks and the exact device command: docs/gpu_check.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch._dynamo
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/gpu_check.py` from anywhere
    sys.path.insert(0, str(ROOT))

from magicinfinite_core.config import VAEConfig, dit_preset, vae_preset  # noqa: E402
from magicinfinite_core.models.dit import MagicInfiniteDiT, count_parameters  # noqa: E402
from magicinfinite_core.models.flops import ForwardShape, dit_forward_flops  # noqa: E402
from magicinfinite_core.sampling.sliding_window import latent_frames  # noqa: E402
from magicinfinite_core.weights.transformer_layouts import load_transformer  # noqa: E402

# Dense bf16 tensor-core peaks from the vendors' datasheets (TFLOP/s, no sparsity), by device-name
# substring, most specific first. MFU is reported against this and against the measured matmul rate.
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H200 NVL", 835.0), ("GH200", 989.0), ("H200", 989.0),
    ("H100", 989.0), ("H800", 989.0), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0),
    ("L4", 121.0), ("RTX 4090", 165.0), ("RTX 6000 Ada", 364.0), ("A10", 125.0),
]
PAPER_GPU_S_PER_VIDEO_S = 8.0  # paper: 10 s of 540x540 video in 10 s on 8 H100 (4-step generator)
GOAL_GPU_S_PER_VIDEO_S = 4.0  # issue 18's goal: 2x the paper per GPU
TEXT_TOKENS, IMAGE_TOKENS = 256, 576
# Rough seconds of each CUDA stage on an H100-class GPU (for the --budget-s guard; 0 = always run).
CUDA_ESTIMATE_S = {"dit_window": 25, "cfg_batched": 25, "sdpa_backends": 10, "compile": 120, "fp8": 30,
                   "vae_decode": 40, "xfuser_world1": 30, "generation": 120, "block_swap": 60, "avatar": 240}


def peak_tflops(name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in name.lower():
            return value
    return None


class StageSkipped(Exception):
    """Raised by a stage that cannot run here; its message is the reason recorded in the JSON."""


# ----------------------------------------------------------------------------------------- timing


class Timer:
    """Median wall time of a callable: CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda_events" if device.type == "cuda" else "perf_counter"

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def once(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            torch.cuda.synchronize(self.device)
            return start.elapsed_time(end) / 1e3, out
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out

    def median(self, fn: Callable[[], Any], repeats: int, warmup: int = 1) -> dict[str, Any]:
        for _ in range(warmup):
            fn()
        self.sync()
        times = [self.once(fn)[0] for _ in range(repeats)]
        return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
                "repeats": repeats, "warmup": warmup, "timer": self.kind}


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None


def allocated_gb(device: torch.device) -> float | None:
    return torch.cuda.memory_allocated(device) / 1e9 if device.type == "cuda" else None


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """‖out − ref‖ / ‖ref‖ and the max absolute difference (both in float64)."""
    o, r = out.double().cpu(), ref.double().cpu()
    if not torch.isfinite(o).all():
        return {"rel_l2": float("nan"), "max_abs": float("nan"), "ref_max_abs": float(r.abs().max())}
    return {"rel_l2": float((o - r).norm() / r.norm().clamp_min(1e-30)), "max_abs": float((o - r).abs().max()),
            "ref_max_abs": float(r.abs().max())}


# ------------------------------------------------------------------------------------ model + inputs


def init_random_(model: nn.Module, seed: int, std: float = 0.02) -> None:
    """Seeded N(0, std) weights, zero biases, unit norm scales, drawn on the parameters' own device
    (a 13B model is never materialised on the CPU). The zero-initialised audio output projections get
    random values too, so the audio path does real work."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.ndim == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, std, generator=gen)


def build_dit(preset: str, device: torch.device, dtype: torch.dtype, seed: int = 0) -> MagicInfiniteDiT:
    """Meta-device construction -> empty tensors on `device` in `dtype` -> seeded init there."""
    cfg = dit_preset(preset)
    with torch.device("meta"):
        model = MagicInfiniteDiT(cfg)
    model = model.to(dtype=dtype).to_empty(device=device)
    init_random_(model, seed, std=0.05 if preset == "tiny" else 0.02)
    return model.eval()


def window_inputs(model: MagicInfiniteDiT, pixels: int, frames: int, text_tokens: int, batch: int = 1,
                  speakers: int = 1, seed: int = 0) -> dict[str, Any]:
    """One window's forward inputs (I2V concat, text + image tokens, per-frame audio, speaker masks)."""
    cfg, a = model.cfg, model.cfg.audio
    p = next(model.parameters())
    dev, dt = p.device, p.dtype
    t, hw = latent_frames(frames), pixels // 8
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {
        "x": torch.randn(batch, cfg.in_channels, t, hw, hw, generator=g).to(dev, dt),
        "timestep": torch.full((batch,), 750.0, device=dev),
        "txt": torch.randn(batch, text_tokens, cfg.text_dim, generator=g).to(dev, dt),
        "txt_mask": None,
        "pooled": torch.randn(batch, cfg.pooled_dim, generator=g).to(dev, dt),
    }
    if a is not None and speakers:
        out["audio"] = torch.randn(batch, speakers, t, a.frames_per_latent, a.frame_window, a.feature_dim,
                                   generator=g).to(dev, dt)
        grid = model.token_grid((t, hw, hw))
        out["speaker_mask"] = torch.ones(batch, speakers, *grid, device=dev, dtype=dt)
    return out


def avatar_window_inputs(model: MagicInfiniteDiT, height: int, width: int, frames: int, text_tokens: int,
                         speakers: int = 1, seed: int = 0) -> dict[str, Any]:
    """One HunyuanVideo-Avatar window's forward inputs: the latent, the portrait's latent over the window,
    Whisper windows of its video frames (one stream per speaker) and full face masks."""
    cfg, av = model.cfg, model.cfg.avatar
    p = next(model.parameters())
    dev, dt = p.device, p.dtype
    t = latent_frames(frames)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, cfg.in_channels, t, height // 8, width // 8, generator=g).to(dev, dt)
    grid = model.token_grid(tuple(x.shape[2:]))
    return {
        "x": x, "timestep": torch.full((1,), 750.0, device=dev),
        "txt": torch.randn(1, text_tokens, cfg.text_dim, generator=g).to(dev, dt), "txt_mask": None,
        "pooled": torch.randn(1, cfg.pooled_dim, generator=g).to(dev, dt),
        "audio": torch.randn(1, speakers, av.frames_per_latent * (t - 1) + 1, av.audio_window, av.audio_layers,
                             av.audio_channels, generator=g).to(dev, dt),
        "speaker_mask": torch.ones(1, speakers, *grid, device=dev, dtype=dt),
        "ref_latent": torch.randn(x.shape, generator=g).to(dev, dt),
    }


def forward_shape(model: MagicInfiniteDiT, inputs: dict[str, Any]) -> ForwardShape:
    x = inputs["x"]
    return ForwardShape.for_window(model.cfg, tuple(x.shape[2:]), inputs["txt"].shape[1],
                                   inputs["audio"].shape[1] if "audio" in inputs else 0, x.shape[0])


# ------------------------------------------------------------------------------------------- stages


class GPUCheck:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self.cuda = self.device.type == "cuda"
        self.dtype = {"auto": torch.bfloat16 if self.cuda else torch.float32, "bfloat16": torch.bfloat16,
                      "float32": torch.float32}[args.dtype]
        self.timer = Timer(self.device)
        self.t0 = time.perf_counter()
        self.result: dict[str, Any] = {"bench": "gpu_check", "argv": sys.argv[1:], "device": str(self.device),
                                       "preset": args.preset, "dtype": str(self.dtype).replace("torch.", ""),
                                       "stages": {}}
        self.model: MagicInfiniteDiT | None = None
        self.vae = None
        self.ref_out: torch.Tensor | None = None
        self.window_s: dict[int, float] = {}
        self.peak: float | None = None
        self.matmul_tflops: float | None = None

    # --- runner
    def run(self) -> dict[str, Any]:
        stages: list[tuple[str, Callable[[], dict[str, Any]]]] = [("environment", self.environment),
                                                                   ("tiny_cuda_vs_cpu", self.tiny_cuda_vs_cpu)]
        for px in self.args.sizes:
            stages.append((f"dit_window_{px}", lambda px=px: self.dit_window(px)))
        stages += [("cfg_batched", self.cfg_batched), ("sdpa_backends", self.sdpa_backends),
                   ("compile", self.compile), ("fp8", self.fp8), ("vae_decode", self.vae_decode),
                   ("xfuser_world1", self.xfuser_world1), ("generation", self.generation),
                   ("block_swap", self.block_swap), ("avatar", self.avatar)]
        for name, fn in stages:
            self._stage(name, fn)
        self.result["summary"] = self.summary()
        self.result["total_s"] = time.perf_counter() - self.t0
        self.write()
        return self.result

    def _stage(self, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        rec: dict[str, Any] = {}
        start = time.perf_counter()
        estimate = CUDA_ESTIMATE_S.get(name.rsplit("_", 1)[0] if name.startswith("dit_window") else name, 0)
        left = self.args.budget_s - (start - self.t0)
        try:
            if name in self.args.skip:
                raise StageSkipped("skipped on the command line (--skip)")
            if self.cuda and estimate and left < estimate:
                raise StageSkipped(f"time budget: {left:.0f} s left of --budget-s {self.args.budget_s}, "
                                   f"stage needs ~{estimate} s")
            rec = {"status": "ok", **fn()}
        except StageSkipped as e:
            rec = {"status": "skipped", "reason": str(e)}
        except Exception as e:  # noqa: BLE001 - every failure is recorded and the next stage still runs
            rec = {"status": "failed", "error": f"{type(e).__name__}: {e}",
                   "traceback": traceback.format_exc()[-3000:]}
        rec["seconds"] = round(time.perf_counter() - start, 3)
        self.result["stages"][name] = rec
        line = rec.get("reason") or rec.get("error") or ""
        print(f"[gpu_check] {name:18s} {rec['status']:8s} {rec['seconds']:7.1f} s  {line[:150]}", flush=True)
        if self.cuda:
            torch.cuda.empty_cache()
        self.write()

    def write(self) -> None:
        if self.args.out:
            out = Path(self.args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + ".tmp")
            tmp.write_text(json.dumps(self.result, indent=1, default=str))
            os.replace(tmp, out)

    def need_cuda(self, what: str) -> None:
        if not self.cuda:
            raise StageSkipped(f"{what} needs a CUDA device (this run: {self.device})")

    def dit(self) -> MagicInfiniteDiT:
        if self.model is None:
            reset_peak(self.device)
            t, _ = self.timer.once(lambda: setattr(self, "model", build_dit(self.args.preset, self.device,
                                                                             self.dtype)))
            self.result["model"] = {"preset": self.args.preset, "params": count_parameters(self.model),
                                    "weights_gb": sum(p.numel() * p.element_size()
                                                      for p in self.model.parameters()) / 1e9,
                                    "build_on_meta_and_materialise_s": t}
        return self.model

    def inputs(self, pixels: int, batch: int = 1) -> dict[str, Any]:
        return window_inputs(self.dit(), pixels, self.args.frames, self.args.text_tokens, batch)

    # --- 1
    def environment(self) -> dict[str, Any]:
        env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                               "cuda_runtime": torch.version.cuda, "cpu_count": os.cpu_count(),
                               "platform": platform.platform()}
        for dist in ("flash-attn", "xfuser", "yunchang", "distvae", "diffusers", "transformers", "triton",
                     "torchao", "safetensors", "numpy", "soxr", "av"):
            try:  # installed distributions, without importing them (xfuser's import is heavy)
                env[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                env[dist] = "missing"
        from magicinfinite_core.models import attention

        env["our_sdpa_uses_flash_attn_package"] = attention._flash_attn_func is not None
        env["wheel_site"] = [p for p in sys.path if p.startswith("/tmp/site")] or None
        if self.cuda:
            p = torch.cuda.get_device_properties(self.device)
            env.update(device_name=p.name, device_memory_gb=p.total_memory / 1e9, capability=f"{p.major}.{p.minor}",
                       multiprocessors=p.multi_processor_count, cudnn=torch.backends.cudnn.version(),
                       driver=_nvidia_smi("driver_version"))
            self.peak = peak_tflops(p.name)
            a = torch.randn(8192, 8192, device=self.device, dtype=torch.bfloat16)
            b = torch.randn(8192, 8192, device=self.device, dtype=torch.bfloat16)
            t = self.timer.median(lambda: a @ b, repeats=10, warmup=3)["median_s"]
            self.matmul_tflops = 2 * 8192**3 / t / 1e12
            del a, b
        else:
            env["device_name"] = platform.processor() or "cpu"
            a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
            t = self.timer.median(lambda: a @ b, repeats=5)["median_s"]
            self.matmul_tflops = 2 * 1024**3 / t / 1e12
        env["matmul_measured_tflops"] = self.matmul_tflops
        env["matmul_measured_shape"] = "8192^3 bf16" if self.cuda else "1024^3 fp32"
        env["peak_bf16_tflops_datasheet"] = self.peak
        env["peak_source"] = ("vendor datasheet, dense bf16, matched on the device name" if self.peak
                              else "no datasheet peak known for this device; MFU is given against the "
                                   "measured matmul rate only")
        self.result["env"] = env
        return env

    # --- 2
    def tiny_cuda_vs_cpu(self) -> dict[str, Any]:
        self.need_cuda("the CUDA-vs-CPU comparison")
        from magicinfinite_core.weights.checkpoints import save_dit

        cpu = build_dit("tiny", torch.device("cpu"), torch.float32, seed=1)
        inp = window_inputs(cpu, 64, 33, 24, batch=2)
        inp["txt_mask"] = torch.arange(24)[None].expand(2, 24) < torch.tensor([[24], [17]])  # padded prompt
        with torch.inference_mode():
            ref = cpu(**inp)
        res: dict[str, Any] = {"tolerance": {"fp32_rel_l2": 1e-3, "bf16_rel_l2": 3e-2,
                                             "why": "fp32: cuDNN uses TF32 for the patch conv by default; "
                                                    "bf16: 8-bit mantissa over 4 blocks"}}
        with tempfile.TemporaryDirectory() as d:
            path = save_dit(Path(d) / "tiny.safetensors", cpu)
            for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
                gpu = load_transformer(path, device=self.device, dtype=dtype)  # safetensors straight to the GPU
                gin = {k: (v.to(self.device, dtype) if torch.is_tensor(v) and v.is_floating_point() else
                           v.to(self.device) if torch.is_tensor(v) else v) for k, v in inp.items()}
                with torch.inference_mode():
                    out = gpu(**gin)
                err = rel_err(out, ref)
                err["pass"] = err["rel_l2"] < res["tolerance"][f"{name}_rel_l2"]
                res[name] = err
        res["pass"] = res["fp32"]["pass"] and res["bf16"]["pass"]
        return res

    # --- 3
    def dit_window(self, pixels: int) -> dict[str, Any]:
        model = self.dit()
        inp = self.inputs(pixels)
        shape = forward_shape(model, inp)
        flops = dit_forward_flops(model.cfg, shape)
        reset_peak(self.device)
        with torch.inference_mode():
            timing = self.timer.median(lambda: model(**inp), self.args.repeats)
            out = model(**inp)
        if not torch.isfinite(out).all():
            raise RuntimeError("the forward produced non-finite values")
        if pixels == self.args.sizes[0]:
            self.ref_out = out.float().cpu()
        self.window_s[pixels] = timing["median_s"]
        achieved = flops["total"] / timing["median_s"] / 1e12
        return {
            "pixels": f"{pixels}x{pixels}", "frames": self.args.frames, "latent": list(inp["x"].shape[2:]),
            "video_tokens": shape.video_tokens, "text_tokens": shape.text_tokens, **timing,
            "tflop": flops["total"] / 1e12, "tflop_split": {k: v / 1e12 for k, v in flops.items() if k != "total"},
            "achieved_tflops": achieved,
            "mfu_vs_datasheet": achieved / self.peak if self.peak else None,
            "mfu_vs_measured_matmul": achieved / self.matmul_tflops if self.matmul_tflops else None,
            "peak_memory_gb": peak_gb(self.device), "weights_gb": self.result["model"]["weights_gb"],
        }

    # --- 4
    def cfg_batched(self) -> dict[str, Any]:
        model, px = self.dit(), self.args.sizes[0]
        one, three = self.inputs(px, 1), self.inputs(px, 3)
        reps = max(1, self.args.repeats // 2 + 1)
        with torch.inference_mode():
            single = self.timer.median(lambda: model(**one), reps)
            batched = self.timer.median(lambda: model(**three), reps)
        return {"pixels": px, "batch3_s": batched["median_s"], "single_s": single["median_s"],
                "three_singles_s": 3 * single["median_s"],
                "batched_over_three_singles": batched["median_s"] / (3 * single["median_s"]),
                "timer": single["timer"], "repeats": reps}

    # --- 5
    def sdpa_backends(self) -> dict[str, Any]:
        self.need_cuda("SDPA's flash backend")
        from torch.nn.attention import SDPBackend, sdpa_kernel

        cfg, px = self.dit().cfg, self.args.sizes[0]
        grid = self.dit().token_grid((latent_frames(self.args.frames), px // 8, px // 8))
        n = grid[0] * grid[1] * grid[2] + self.args.text_tokens
        g = torch.Generator(device=self.device).manual_seed(0)
        q, k, v = (torch.randn(1, cfg.num_heads, n, cfg.head_dim, device=self.device, dtype=torch.bfloat16,
                               generator=g) for _ in range(3))
        ref = nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
        calls = cfg.depth_double + cfg.depth_single
        flop = 4.0 * n * n * cfg.hidden_size
        res: dict[str, Any] = {"shape": [1, cfg.num_heads, n, cfg.head_dim], "attention_calls_per_forward": calls,
                               "tflop_per_call": flop / 1e12}
        backends = {"default": None, "flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                    "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
        for name, backend in backends.items():
            ctx = sdpa_kernel(backend) if backend is not None else contextlib.nullcontext()
            try:
                with ctx:
                    fn = lambda: nn.functional.scaled_dot_product_attention(q, k, v)  # noqa: E731
                    t = self.timer.median(fn, 5 if name != "math" else 2)["median_s"]
                    err = rel_err(fn(), ref)
                res[name] = {"s": t, "tflops": flop / t / 1e12, "rel_l2_vs_fp32": err["rel_l2"],
                             "max_abs_vs_fp32": err["max_abs"], "forward_attention_s": t * calls}
            except Exception as e:  # noqa: BLE001 - a backend this build/GPU lacks
                res[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        if "s" in res["flash"] and "s" in res["math"]:
            res["math_over_flash"] = res["math"]["s"] / res["flash"]["s"]
        try:
            from flash_attn import flash_attn_func  # type: ignore[import-not-found]

            qt, kt, vt = (x.transpose(1, 2).contiguous() for x in (q, k, v))
            t = self.timer.median(lambda: flash_attn_func(qt, kt, vt), 5)["median_s"]
            res["flash_attn_package"] = {"s": t, "tflops": flop / t / 1e12,
                                         "rel_l2_vs_fp32": rel_err(flash_attn_func(qt, kt, vt).transpose(1, 2),
                                                                   ref)["rel_l2"]}
        except ImportError as e:
            res["flash_attn_package"] = f"not installed ({e}); our sdpa() then uses torch SDPA"
        return res

    # --- 6
    def compile(self) -> dict[str, Any]:
        model, px = self.dit(), self.args.sizes[0]
        inp = self.inputs(px)
        with torch.inference_mode():
            eager_out = model(**inp)
            eager = self.timer.median(lambda: model(**inp), max(2, self.args.repeats // 2))
        originals = compile_blocks(model, backend=self.args.compile_backend)
        try:
            with torch.inference_mode():
                first_s, out = self.timer.once(lambda: model(**inp))
                compiled = self.timer.median(lambda: model(**inp), max(2, self.args.repeats // 2), warmup=1)
            graphs = int(torch._dynamo.utils.counters["stats"].get("unique_graphs", 0))
        finally:
            restore_blocks(model, originals)
            torch._dynamo.reset()
        err = rel_err(out, eager_out)
        return {"backend": self.args.compile_backend, "compiled_modules": sum(len(v) for v in originals.values()),
                "unique_graphs": graphs, "compile_s": first_s - eager["median_s"], "first_call_s": first_s,
                "eager_s": eager["median_s"], "compiled_s": compiled["median_s"],
                "speedup": eager["median_s"] / compiled["median_s"], **{f"vs_eager_{k}": v for k, v in err.items()}}

    # --- 7
    def fp8(self) -> dict[str, Any]:
        from magicinfinite_core.models.fp8 import quantize_linears, restore_linears, roundtrip_error

        model, px = self.dit(), self.args.sizes[0]
        inp = self.inputs(px)
        weights_gb = lambda: sum(  # noqa: E731
            t.numel() * t.element_size() for m in model.modules()
            for t in list(m.parameters(recurse=False)) + list(m.buffers(recurse=False))) / 1e9
        bf16_gb = weights_gb()
        rt = roundtrip_error(model)
        with torch.inference_mode():
            ref = model(**inp)
            base = self.timer.median(lambda: model(**inp), max(2, self.args.repeats // 2))
        res: dict[str, Any] = {"weight_roundtrip": rt, "bf16_s": base["median_s"], "timer": base["timer"],
                               "scheme": "e4m3, row-wise weight scales, per-token activation scales"}
        for mode in ("scaled_mm", "dequant"):
            replaced = quantize_linears(model, mode)
            try:
                with torch.inference_mode():
                    t = self.timer.median(lambda: model(**inp), max(2, self.args.repeats // 2))
                    out = model(**inp)
                originals = {id(o) for _, _, o in replaced}
                fp8_gb = sum(t.numel() * t.element_size() for m in model.modules() if id(m) not in originals
                             for t in list(m.parameters(recurse=False)) + list(m.buffers(recurse=False))) / 1e9
                res[mode] = {"s": t["median_s"], "speedup_vs_bf16": base["median_s"] / t["median_s"],
                             "layers": len(replaced), "weights_gb": fp8_gb, **rel_err(out, ref)}
            finally:
                restore_linears(replaced)
        res["bf16_weights_gb"] = bf16_gb
        try:
            res["torchao"] = importlib.import_module("torchao").__version__
        except ImportError:
            res["torchao"] = "not installed: torch._scaled_mm used directly"
        return res

    # --- 8
    def vae_decode(self) -> dict[str, Any]:
        from magicinfinite_core.media.streamed_decode import diffusers_decode_fn

        vae = self.vae_model()
        px, tile = self.args.vae_size, self.args.vae_tile
        c = vae.cfg.latent_channels
        g = torch.Generator().manual_seed(0)
        z = torch.randn(1, c, latent_frames(self.args.frames), px // 8, px // 8, generator=g).to(self.device)
        res: dict[str, Any] = {"preset": self.args.vae_preset, "pixels": f"{px}x{px}", "frames": self.args.frames,
                               "latent": list(z.shape[2:]), "tile_px": tile, "tile_overlap_px": tile // 4,
                               "params": count_parameters(vae.model)}
        outs = {}
        for name, tiled in (("untiled", False), ("tiled", True)):
            if tiled:
                vae.enable_tiling(tile)
            else:
                vae.model.disable_tiling()
            fn = diffusers_decode_fn(vae)
            reset_peak(self.device)
            with torch.inference_mode():
                t = self.timer.median(lambda fn=fn: fn(z), 2 if self.cuda else 1)
                outs[name] = fn(z).float().cpu()
            res[name] = {**t, "peak_memory_gb": peak_gb(self.device), "frames_out": outs[name].shape[2]}
        vae.model.disable_tiling()
        d = (outs["tiled"] - outs["untiled"]).abs()
        res["tiled_vs_untiled"] = {"max_abs": float(d.max()), "mean_abs": float(d.mean()),
                                   "untiled_mean_abs": float(outs["untiled"].abs().mean())}
        return res

    def vae_model(self):
        if self.vae is None:
            from magicinfinite_core.media.vae import VideoVAE

            cfg: VAEConfig = vae_preset(self.args.vae_preset)
            torch.manual_seed(0)
            with torch.device(self.device):
                vae = VideoVAE(cfg)
            self.vae = vae.to(self.device, self.dtype).eval()
        return self.vae

    # --- 9
    def xfuser_world1(self) -> dict[str, Any]:
        self.need_cuda("xfuser (it refuses to run without CUDA, DESIGN.md §6)")
        cmd = [sys.executable, str(ROOT / "bench" / "usp_scaling.py"), "--xfuser-check", "tiny"]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        # a hung NCCL / xfuser init must not eat the generation stage's time
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[1:])} exited {proc.returncode}: {proc.stderr[-2000:]}")
        out = last_json(proc.stdout)
        out["command"] = "python bench/usp_scaling.py --xfuser-check tiny"
        out["tolerance"] = "mean_abs_diff / ref_abs_mean < 1e-2 (bf16, different attention kernels)"
        out["pass"] = out["mean_abs_diff"] / max(out["ref_abs_mean"], 1e-12) < 1e-2
        return out

    # --- 10
    def generation(self) -> dict[str, Any]:
        from magicinfinite_core.config import DEFAULT_SHIFT, DISTILLED_TIMESTEPS
        from magicinfinite_core.generate import sample_latent
        from magicinfinite_core.inputs.audio_features import MelExtractor
        from magicinfinite_core.inputs.encoders import ByteTextEncoder, PatchImageEncoder
        from magicinfinite_core.media.streamed_decode import diffusers_decode_fn, streamed_decode
        from magicinfinite_core.weights.bundle import ModelBundle

        model, vae = self.dit(), self.vae_model()
        px, seconds, fps = self.args.sizes[0], self.args.seconds, 25
        frames = int(round(seconds * fps))
        cfg = model.cfg
        g = torch.Generator().manual_seed(0)
        # the text stream of the window stages: prompt tokens + a 24x24 grid of portrait tokens (13B)
        grid = 24 if self.args.text_tokens > IMAGE_TOKENS else 2
        text = ByteTextEncoder(cfg.text_dim, cfg.pooled_dim, max_len=max(1, self.args.text_tokens - grid * grid))
        image = PatchImageEncoder(cfg.image_token_dim or cfg.text_dim, grid=grid, patch=4)
        for mod in (text, image):
            init_random_(mod, 1, std=0.5)
        bundle = ModelBundle(model, vae, text.to(self.device, self.dtype).eval(), image.to(self.device, self.dtype).eval(),
                             MelExtractor(n_mels=64), px, px, name=f"random-{self.args.preset}",
                             distilled={"timesteps": list(DISTILLED_TIMESTEPS), "shift": DEFAULT_SHIFT},
                             # the resume hash hashes every weight (26 GB for the 13B, about a minute):
                             # a fixed id stands in, so that cost is not mixed into "other"
                             _fingerprint=f"random-{self.args.preset}-seed0")
        yy, xx = torch.meshgrid(torch.arange(px), torch.arange(px), indexing="ij")
        face = (((yy - px / 2) / (0.35 * px)) ** 2 + ((xx - px / 2) / (0.28 * px)) ** 2 < 1).float()
        portrait = (torch.stack([80 + 120 * face, 60 + 100 * face, 90 + 60 * face], -1)).to(torch.uint8).numpy()
        features = torch.randn(1, frames, cfg.audio.feature_dim, generator=g) if cfg.audio else torch.zeros(1, frames, 1)
        dit_s = [0.0]
        n_forward = [0]

        def timed_forward(*a: Any, **k: Any) -> torch.Tensor:
            t, out = self.timer.once(lambda: model(*a, **k))
            dit_s[0] += t
            n_forward[0] += 1
            return out

        reset_peak(self.device)
        self.timer.sync()
        t0 = time.perf_counter()
        sampled = sample_latent(bundle, portrait, features, frames, "a person talks calmly",
                                speakers=[[0.2 * px, 0.1 * px, 0.8 * px, 0.9 * px]], distilled=True,
                                seed=0, device=self.device, forward=timed_forward)
        self.timer.sync()
        t1 = time.perf_counter()
        decode = diffusers_decode_fn(vae)
        n_out = 0
        for chunk in streamed_decode(sampled.latent, decode, num_frames=frames, chunk=8, context=2,
                                     device=self.device, dtype=self.dtype):
            n_out += chunk.shape[1]
            if not torch.isfinite(chunk).all():
                raise RuntimeError("the decoded video has non-finite values")
        self.timer.sync()
        t2 = time.perf_counter()
        total, vae_s = t2 - t0, t2 - t1
        other = total - dit_s[0] - vae_s
        per = total / seconds
        return {
            "seconds_of_video": seconds, "frames": n_out, "pixels": f"{px}x{px}", "latent": list(sampled.shape),
            "steps": 4, "mode": "distilled (no CFG, one pass per window)", "dit_forwards": n_forward[0],
            "wall_s": total, "dit_s": dit_s[0], "vae_decode_s": vae_s, "other_s": other,
            "dit_s_per_forward": dit_s[0] / max(n_forward[0], 1),
            "gpu_s_per_video_s": per,
            "split_gpu_s_per_video_s": {"dit": dit_s[0] / seconds, "vae": vae_s / seconds, "other": other / seconds},
            "paper_gpu_s_per_video_s": PAPER_GPU_S_PER_VIDEO_S, "goal_gpu_s_per_video_s": GOAL_GPU_S_PER_VIDEO_S,
            "vs_paper": per / PAPER_GPU_S_PER_VIDEO_S, "meets_goal": per <= GOAL_GPU_S_PER_VIDEO_S,
            "text_stream_tokens": text.max_len + grid * grid,
            "flop_floor_dit_gpu_s_per_video_s": self._flop_floor(model, sampled, px, text.max_len + grid * grid),
            "peak_memory_gb": peak_gb(self.device),
            "not_included": "model loading, the audio encoder (random features stand in for wav2vec2), mp4 "
                            "encoding, the weight fingerprint of the resume hash; 'other' = text/image/VAE encode of the portrait, masks, sampler "
                            "blending on the CPU, host<->device copies",
        }

    def _flop_floor(self, model: MagicInfiniteDiT, sampled: Any, px: int, text_tokens: int) -> float | None:
        """DiT FLOPs of the whole generation over the datasheet peak, per video-second (the floor)."""
        if not self.peak:
            return None
        from magicinfinite_core.sampling.sampler import step_plans

        total = 0.0
        for plan in step_plans(sampled.shape[1], sampled.config, 4):
            for win in plan:
                shape = ForwardShape.for_window(model.cfg, (win.length, px // 8, px // 8), text_tokens, 1)
                total += dit_forward_flops(model.cfg, shape)["total"]
        return total / (self.peak * 1e12) / self.args.seconds

    # --- 11
    def block_swap(self) -> dict[str, Any]:
        from magicinfinite_core.models.block_swap import BlockSwap

        model, px = self.dit(), self.args.sizes[0]
        inp = self.inputs(px)
        with torch.inference_mode():
            ref = model(**inp)
        reset_peak(self.device)
        t_attach, swap = self.timer.once(lambda: BlockSwap(model, self.device, resident=0, prefetch=1))
        try:
            resident_gb = allocated_gb(self.device)
            with torch.inference_mode():
                timing = self.timer.median(lambda: model(**inp), 2)
                out = model(**inp)
            stats = dict(swap.stats)
            res = {"attach_s": t_attach, **timing, "swapped_gb": swap.swapped_bytes / 1e9,
                   "device_gb_after_attach": resident_gb, "peak_memory_gb": peak_gb(self.device),
                   "resident_forward_s": self.window_s.get(px), "stats": stats,
                   # every swapped byte crosses once per forward, overlapped with compute: a lower bound
                   "swapped_gb_per_forward_s": swap.swapped_bytes / 1e9 / timing["median_s"],
                   "identical_to_resident": bool(torch.equal(out, ref)), **rel_err(out, ref)}
        finally:
            swap.remove()
        return res

    # --- 12
    def avatar(self) -> dict[str, Any]:
        """HunyuanVideo-Avatar's window: bf16, fp8 block linears, block swap (each: seconds, peak memory)."""
        from magicinfinite_core.models.block_swap import BlockSwap
        from magicinfinite_core.models.fp8 import quantize_linears, restore_linears

        self.model = self.ref_out = None  # the 13B backbone of the stages above: free it first
        if self.cuda:
            torch.cuda.empty_cache()
        h, w = self.args.avatar_size
        reset_peak(self.device)
        t_build, model = self.timer.once(lambda: build_dit(self.args.avatar_preset, self.device, self.dtype))
        inp = avatar_window_inputs(model, h, w, self.args.avatar_frames, self.args.text_tokens)
        t_lat, hh, ww = model.token_grid(tuple(inp["x"].shape[2:]))
        res: dict[str, Any] = {
            "preset": self.args.avatar_preset, "size": [h, w], "frames": self.args.avatar_frames,
            "latent_frames": t_lat, "video_tokens": t_lat * hh * ww, "reference_tokens": hh * ww,
            "params": count_parameters(model), "build_s": t_build,
            "weights_gb": sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9,
        }
        repeats = max(1, self.args.repeats // 2)

        def measure() -> tuple[dict[str, Any], torch.Tensor]:
            reset_peak(self.device)
            with torch.inference_mode():
                timing = self.timer.median(lambda: model(**inp), repeats)
                out = model(**inp)
            return {**timing, "peak_memory_gb": peak_gb(self.device)}, out

        res["bf16"], ref = measure()
        replaced = quantize_linears(model, "scaled_mm" if self.cuda else "dequant")
        try:
            res["fp8"], out = measure()
            res["fp8"].update(layers=len(replaced), **rel_err(out, ref))
        finally:
            restore_linears(replaced)
        swap = BlockSwap(model, self.device, resident=0, prefetch=1)
        try:
            res["block_swap"], out = measure()
            res["block_swap"].update(swapped_gb=swap.swapped_bytes / 1e9, identical_to_bf16=bool(torch.equal(out, ref)),
                                     stats=dict(swap.stats), **rel_err(out, ref))
        finally:
            swap.remove()
        return res

    # --- summary
    def summary(self) -> dict[str, Any]:
        st = self.result["stages"]
        s: dict[str, Any] = {"stages": {k: v["status"] for k, v in st.items()}}
        for px in self.args.sizes:
            w = st.get(f"dit_window_{px}", {})
            if w.get("status") == "ok":
                s[f"window_{px}"] = {k: w[k] for k in ("median_s", "tflop", "achieved_tflops", "mfu_vs_datasheet",
                                                       "peak_memory_gb")}
        picks = {"cfg_batched": ("batched_over_three_singles",), "compile": ("compile_s", "speedup"),
                 "sdpa_backends": ("math_over_flash",), "vae_decode": ("tiled_vs_untiled",),
                 "block_swap": ("median_s", "peak_memory_gb", "identical_to_resident"),
                 "tiny_cuda_vs_cpu": ("pass",), "xfuser_world1": ("pass", "max_abs_diff")}
        for stage, keys in picks.items():
            if st.get(stage, {}).get("status") == "ok":
                s[stage] = {k: st[stage].get(k) for k in keys}
        fp8 = st.get("fp8", {})
        if fp8.get("status") == "ok":
            s["fp8"] = {m: {k: fp8[m][k] for k in ("speedup_vs_bf16", "rel_l2", "max_abs")} for m in ("scaled_mm", "dequant")}
        av = st.get("avatar", {})
        if av.get("status") == "ok":
            s["avatar"] = {m: {k: av[m].get(k) for k in ("median_s", "peak_memory_gb")} for m in ("bf16", "fp8", "block_swap")}
        gen = st.get("generation", {})
        if gen.get("status") == "ok":
            s["gpu_s_per_video_s"] = gen["gpu_s_per_video_s"]
            s["split"] = gen["split_gpu_s_per_video_s"]
            s["paper_gpu_s_per_video_s"] = PAPER_GPU_S_PER_VIDEO_S
        return s


BLOCK_LISTS = ("double_blocks", "single_blocks", "audio_double_blocks", "audio_single_blocks")


def compile_blocks(model: MagicInfiniteDiT, backend: str = "inductor") -> dict[str, list[nn.Module]]:
    """torch.compile every transformer / audio block in place; returns the originals for restore_blocks.
    Blocks of one class share one compiled graph (parameters are graph inputs), so 60 blocks cost ~4
    compilations."""
    originals: dict[str, list[nn.Module]] = {}
    for name in BLOCK_LISTS:
        blocks = getattr(model, name, None)
        if blocks is None:
            continue
        originals[name] = list(blocks)
        for i, block in enumerate(originals[name]):
            blocks[i] = torch.compile(block, backend=backend)
    return originals


def restore_blocks(model: MagicInfiniteDiT, originals: dict[str, list[nn.Module]]) -> None:
    for name, blocks in originals.items():
        target = getattr(model, name)
        for i, block in enumerate(blocks):
            target[i] = block


def last_json(text: str) -> dict[str, Any]:
    """The JSON object a script printed last (indented, starting on its own line); xfuser and NCCL may
    log lines, some with braces, before it."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("{")]
    for start in reversed(starts):
        try:
            return json.loads("\n".join(lines[start:]))
        except json.JSONDecodeError:
            continue
    raise ValueError(f"no JSON object at the end of the output: {text[-500:]!r}")


def _nvidia_smi(field: str) -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None, help="JSON file (rewritten after every stage)")
    ap.add_argument("--tiny", action="store_true",
                    help="CPU-sized run of every stage: tiny DiT and VAE, 64/96 px, 2 s of video")
    ap.add_argument("--preset", default=None, help="DiT preset (default hunyuan-13b; tiny with --tiny)")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="window sizes in px (default 544 720)")
    ap.add_argument("--frames", type=int, default=33, help="video frames per window (33 = 9 latent frames)")
    ap.add_argument("--text-tokens", type=int, default=None, help="text-stream tokens (default 256 + 576)")
    ap.add_argument("--repeats", type=int, default=None, help="timed forwards per measurement (default 5)")
    ap.add_argument("--seconds", type=float, default=None, help="video length of the generation stage (10)")
    ap.add_argument("--vae-preset", default=None, help="VAE preset (hunyuan; tiny with --tiny)")
    ap.add_argument("--vae-size", type=int, default=None, help="VAE decode size in px (544; 128 with --tiny)")
    ap.add_argument("--vae-tile", type=int, default=None, help="VAE tile in px (256; 64 with --tiny)")
    ap.add_argument("--compile-backend", default="inductor")
    ap.add_argument("--dtype", choices=("auto", "bfloat16", "float32"), default="auto",
                    help="model dtype (auto: bf16 on CUDA, fp32 on the CPU; bf16 on the CPU checks the GPU's "
                         "dtype path)")
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="CUDA: skip a stage when less time than its estimate is left")
    ap.add_argument("--skip", nargs="*", default=[], help="stage names to skip")
    ap.add_argument("--avatar-preset", default=None, help="Avatar DiT preset (hunyuan-avatar; tiny-avatar with --tiny)")
    ap.add_argument("--avatar-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                    help="Avatar window size in px (704 768; 64 64 with --tiny)")
    ap.add_argument("--avatar-frames", type=int, default=None,
                    help="Avatar window in video frames (129 = 33 latent frames; 9 with --tiny)")
    args = ap.parse_args(argv)
    tiny = args.tiny
    defaults = {"preset": "tiny" if tiny else "hunyuan-13b", "sizes": [64, 96] if tiny else [544, 720],
                "text_tokens": 24 if tiny else TEXT_TOKENS + IMAGE_TOKENS, "repeats": 2 if tiny else 5,
                "seconds": 2.0 if tiny else 10.0, "vae_preset": "tiny" if tiny else "hunyuan",
                "vae_size": 128 if tiny else 544, "vae_tile": 64 if tiny else 256,
                "avatar_preset": "tiny-avatar" if tiny else "hunyuan-avatar",
                "avatar_size": [64, 64] if tiny else [704, 768], "avatar_frames": 9 if tiny else 129}
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    bad = [px for px in args.sizes + [args.vae_size] + list(args.avatar_size) if px % 16]
    if bad:
        ap.error(f"sizes must be multiples of 16 px (HunyuanVideo: 8x VAE, 2x2 patches), got {bad}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    result = GPUCheck(args).run()
    print(json.dumps(result["summary"], indent=1, default=str))
    return result


if __name__ == "__main__":
    main()
