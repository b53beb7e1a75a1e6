"""Sequence-parallel (and CFG-parallel) forward of `MagicInfiniteDiT`.

Runs the model's own stages (`prepare`, `run_blocks`, `head`) with four hooks: patch embedding,
RoPE rows and speaker-mask columns are taken for this rank's tokens only (`ShardPlan`); joint
attention goes through the SP backend; per-latent-frame audio cross-attention runs on token runs
split at frame boundaries (shards need not hold whole frames); the final layer runs on local tokens
and its small output is all-gathered before unpatchify. `tests/test_usp.py` checks the result
against `MagicInfiniteDiT.forward`.

CFG parallel: with cfg > 1 the batch (the CFG passes, batched by `guidance.guided_velocity`) is
split across the CFG groups, each SP group runs its part, and the parts are all-gathered. A batch
that does not divide is padded by repeating its last sample.

Every rank must call forward with the same full (replicated) inputs and gets the same full output.
Inference only: the gathers are not differentiable.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from magicinfinite_core.distributed.usp import (
    ParallelGroups,
    ReplicatedTailAttention,
    ShardPlan,
    gather_tokens,
)
from magicinfinite_core.models.attention import AttentionBackend, attention_backend
from magicinfinite_core.models.dit import MagicInfiniteDiT

_BATCHED = ("x", "timestep", "txt", "txt_mask", "pooled", "image_tokens", "image_tokens_mask", "audio",
            "speaker_mask", "guidance")


class SequenceParallelDiT(nn.Module):
    """Wraps a loaded `MagicInfiniteDiT`; same call signature as its forward."""

    def __init__(self, model: MagicInfiniteDiT, groups: ParallelGroups, attention: AttentionBackend):
        super().__init__()
        if model.cfg.avatar is not None:  # docs/hunyuan_avatar.md, "Multi-GPU": what is missing
            raise ValueError("sequence parallelism (USP) does not run HunyuanVideo-Avatar models yet; sample "
                             "them on one GPU (block swap / fp8 for smaller cards)")
        if model.cfg.num_heads % groups.ulysses:
            raise ValueError(
                f"the model's {model.cfg.num_heads} heads cannot be split over an Ulysses degree of "
                f"{groups.ulysses}"
            )
        self.model, self.groups, self.attention = model, groups, attention

    @property
    def cfg(self):
        return self.model.cfg

    def token_grid(self, latent_thw: tuple[int, int, int]) -> tuple[int, int, int]:
        return self.model.token_grid(latent_thw)

    def shard_plan(self, latent_thw: tuple[int, int, int]) -> ShardPlan:
        t, h, w = self.model.token_grid(latent_thw)
        return ShardPlan(t * h * w, self.groups.sp, self.groups.sp_rank, h * w)

    @torch.no_grad()
    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        txt: torch.Tensor,
        txt_mask: torch.Tensor | None,
        pooled: torch.Tensor,
        image_tokens: torch.Tensor | None = None,
        image_tokens_mask: torch.Tensor | None = None,
        audio: torch.Tensor | None = None,
        speaker_mask: torch.Tensor | None = None,
        guidance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        kw = dict(x=x, timestep=timestep, txt=txt, txt_mask=txt_mask, pooled=pooled,
                  image_tokens=image_tokens, image_tokens_mask=image_tokens_mask, audio=audio,
                  speaker_mask=speaker_mask, guidance=guidance)
        b = x.shape[0]
        kw["timestep"] = timestep.to(x.device).float().expand(b) if timestep.ndim <= 1 else timestep
        n_cfg = self.groups.cfg
        if n_cfg == 1:
            return self._sp_forward(**kw)
        per = -(-b // n_cfg)
        idx = torch.arange(self.groups.cfg_rank * per, (self.groups.cfg_rank + 1) * per).clamp_max(b - 1)
        part = {k: (v[idx.to(v.device)] if torch.is_tensor(v) and v.ndim and v.shape[0] == b else v)
                for k, v in kw.items()}
        out = self._sp_forward(**part).contiguous()
        parts = [torch.empty_like(out) for _ in range(n_cfg)]
        dist.all_gather(parts, out, group=self.groups.cfg_group)
        return torch.cat(parts)[:b]

    def _sp_forward(self, x, timestep, txt, txt_mask, pooled, image_tokens=None, image_tokens_mask=None,
                    audio=None, speaker_mask=None, guidance=None) -> torch.Tensor:
        m = self.model
        plan = self.shard_plan(tuple(x.shape[2:]))
        state = m.prepare(
            x, timestep, txt, txt_mask, pooled, image_tokens, image_tokens_mask, audio, speaker_mask, guidance,
            embed_video=lambda video: self._embed_local(video, plan),
            select_tokens=plan.take,
        )
        with attention_backend(ReplicatedTailAttention(self.attention, plan.tail)):
            xs = m.run_blocks(state, audio_fn=lambda layer, img, ctx, mask: self._audio(layer, img, ctx, mask, plan))
        out = m.head(state, xs)  # [B, local, p*C]: gather after the head (C << hidden)
        return m.output_velocity(m.unpatchify(gather_tokens(out, plan, self.groups.sp_group), state.grid), x, timestep)

    def _embed_local(self, x: torch.Tensor, plan: ShardPlan) -> torch.Tensor:
        """Patch-embed only the latent frames this rank's tokens come from (Conv3d, kernel = stride)."""
        pt = self.cfg.patch_size[0]
        s, parts = plan.tokens_per_frame, []
        for a, b in plan.ranges():
            fa, fb = a // s, -(-b // s)
            emb = self.model.img_in.proj(x[:, :, fa * pt : fb * pt]).flatten(2).transpose(1, 2)
            parts.append(emb[:, a - fa * s : b - fa * s])
        return torch.cat(parts, dim=1)

    @staticmethod
    def _audio(module: nn.Module, img: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor,
               plan: ShardPlan) -> torch.Tensor:
        """Per-latent-frame audio cross-attention + mask gating on runs of whole frames / frame parts."""
        outs = [
            module(img[:, a:e], ctx[:, :, f0:f1], mask[:, :, a:e]) for a, e, f0, f1 in plan.frame_runs()
        ]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
