"""fp8 (e4m3) weights for the DiT's linear layers: half the memory of bf16, fp8 tensor-core GEMMs.

Why: the 13B DiT is 26 GB in bf16, 13 GB in fp8 - the difference between fitting a 24 GB card (with
block swap) or not, and Hopper's fp8 GEMMs run at about twice the bf16 rate.

Scheme: per-output-channel (row-wise) scales, w ≈ q · s with s = amax(row) / 448 and q in
float8_e4m3fn. Relative rounding error of an element is at most 2^-4 (3 mantissa bits), so a weight
round trip lands near 2-3 % relative RMS error; tests measure it. Two ways to compute:
  * "scaled_mm": activations quantised per token on the fly, `torch._scaled_mm` with row-wise scales
    (fp8 x fp8 -> bf16); this is the fast path on Hopper/Ada GPUs (also runs on the CPU in torch>=2.6);
  * "dequant": the weight is dequantised to the activation dtype and F.linear runs as usual (any
    device; memory saving only).
Shapes `_scaled_mm` cannot take (K or N not a multiple of 16) always use "dequant".
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448


def quantize_rowwise(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, K] -> (fp8 [N, K], float32 scale [N]); an all-zero row gets scale 1 (exact zeros)."""
    wf = w.detach().float()
    amax = wf.abs().amax(dim=-1)
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    q = (wf / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q, scale


def dequantize_rowwise(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (q.float() * scale[:, None]).to(dtype)


class FP8Linear(nn.Module):
    """Drop-in for nn.Linear with an fp8 weight (`weight_fp8`, `weight_scale`) and the original bias."""

    def __init__(self, linear: nn.Linear, mode: str = "scaled_mm") -> None:
        super().__init__()
        if mode not in ("scaled_mm", "dequant"):
            raise ValueError(f"fp8 mode must be 'scaled_mm' or 'dequant', got {mode!r}")
        self.in_features, self.out_features, self.mode = linear.in_features, linear.out_features, mode
        q, s = quantize_rowwise(linear.weight)
        self.register_buffer("weight_fp8", q.to(linear.weight.device))
        self.register_buffer("weight_scale", s.to(linear.weight.device))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.fits_scaled_mm = self.in_features % 16 == 0 and self.out_features % 16 == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "scaled_mm" and self.fits_scaled_mm:
            return self._scaled_mm(x)
        w = dequantize_rowwise(self.weight_fp8, self.weight_scale, x.dtype)
        return nn.functional.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))

    def _scaled_mm(self, x: torch.Tensor) -> torch.Tensor:
        lead, k = x.shape[:-1], x.shape[-1]
        x2 = x.reshape(-1, k)
        m = x2.shape[0]
        pad = (-m) % 16
        if pad:
            x2 = nn.functional.pad(x2, (0, 0, 0, pad))
        xf = x2.float()
        amax = xf.abs().amax(dim=-1, keepdim=True)
        sx = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
        xq = (xf / sx).clamp(-FP8_MAX, FP8_MAX).to(FP8).contiguous()  # _scaled_mm: row-major A
        out_dtype = x.dtype if x.dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
        y = torch._scaled_mm(xq, self.weight_fp8.t(), scale_a=sx, scale_b=self.weight_scale[None, :],
                             out_dtype=out_dtype)
        y = y[:m].to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, mode={self.mode}"


Filter = Callable[[str, nn.Linear], bool]


def block_linears(name: str, module: nn.Linear) -> bool:
    """Default filter: the linear layers inside the transformer and audio blocks (>98 % of the 13B
    weights); embeddings, refiner and the final layer stay in their dtype."""
    return name.startswith(("double_blocks.", "single_blocks.", "audio_double_blocks.", "audio_single_blocks.",
                             "audio_adapter_blocks."))


def quantize_linears(model: nn.Module, mode: str = "scaled_mm", keep: Filter = block_linears
                     ) -> list[tuple[nn.Module, str, nn.Linear]]:
    """Replace every nn.Linear that `keep` selects by an FP8Linear, in place.

    Returns (parent, attribute, original) triples so `restore_linears` can undo it (a benchmark
    compares fp8 and bf16 on one set of weights; keep the list only as long as you need it).
    """
    replaced = []
    for name, mod in list(model.named_modules()):
        if isinstance(mod, nn.Linear) and keep(name, mod):
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, FP8Linear(mod, mode))
            replaced.append((parent, attr, mod))
    return replaced


def restore_linears(replaced: list[tuple[nn.Module, str, nn.Linear]]) -> None:
    for parent, attr, original in replaced:
        setattr(parent, attr, original)


def roundtrip_error(model: nn.Module, keep: Filter = block_linears) -> dict[str, float]:
    """Weight round-trip error over the selected linears: relative RMS (‖w-ŵ‖/‖w‖) and max abs."""
    num = den = 0.0
    worst = 0.0
    count = 0
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and keep(name, mod):
            w = mod.weight.detach().float()
            q, s = quantize_rowwise(w)
            d = dequantize_rowwise(q, s) - w
            num += float(d.pow(2).sum())
            den += float(w.pow(2).sum())
            worst = max(worst, float(d.abs().max()))
            count += 1
    return {"layers": count, "rel_rms": (num / den) ** 0.5 if den else 0.0, "max_abs": worst}
