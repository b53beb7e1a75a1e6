"""Sequence-parallel (and CFG-parallel) forward of `MagicInfiniteDiT`.

Runs the model's own stages (`prepare`, `run_blocks`, `head`) with four hooks: patch embedding,
RoPE rows and speaker-mask columns are taken for this rank's tokens only (`ShardPlan`); joint
attention goes through the SP backend; per-latent-frame audio cross-attention runs on token runs
split at frame boundaries (shards need not hold whole frames); the final layer runs on local tokens
and its small output is all-gathered before unpatchify. `tests/test_usp.py` checks the result
against `MagicInfiniteDiT.forward`.

HunyuanVideo-Avatar models: the blocks see T + 1 token frames, frame 0 being the reference frame's
tokens (RoPE time -1). The shard plan covers all of them; a rank embeds its frames with
`MagicInfiniteDiT.embed_frames` (reference path included), the face-masked adapters skip frame 0
and take audio frame f - 1 for token frame f, and the reference tokens are dropped after the gather.
`tests/test_usp_avatar.py` checks it against the plain forward.

CFG parallel: with cfg > 1 the batch (the CFG passes, batched by `guidance.guided_velocity`) is
split across the CFG groups, each SP group runs its part, and the parts are all-gathered. A batch
that does not divide is padded by repeating its last sample.

Every rank must call forward with the same full (replicated) inputs and gets the same full output.
Inference only: the gathers are not differentiable.
"""

from __future__ import annotations

from dataclasses import replace

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
from magicinfinite_core.models.avatar_layers import masked_adapter
from magicinfinite_core.models.dit import MagicInfiniteDiT


class SequenceParallelDiT(nn.Module):
    """Wraps a loaded `MagicInfiniteDiT`; same call signature as its forward."""

    def __init__(self, model: MagicInfiniteDiT, groups: ParallelGroups, attention: AttentionBackend):
        super().__init__()
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
        """This rank's share of the block sequence: T token frames (T + 1 for Avatar: its reference frame)."""
        t, h, w = self.model.token_grid(latent_thw)
        return ShardPlan((t + self.model.reference_frames) * h * w, self.groups.sp, self.groups.sp_rank, h * w)

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
        *,
        ref_latent: torch.Tensor | None = None,
        motion_exp: torch.Tensor | None = None,
        motion_pose: torch.Tensor | None = None,
        fps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        kw = dict(x=x, timestep=timestep, txt=txt, txt_mask=txt_mask, pooled=pooled,
                  image_tokens=image_tokens, image_tokens_mask=image_tokens_mask, audio=audio,
                  speaker_mask=speaker_mask, guidance=guidance, ref_latent=ref_latent, motion_exp=motion_exp,
                  motion_pose=motion_pose, fps=fps)
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
                    audio=None, speaker_mask=None, guidance=None, **avatar) -> torch.Tensor:
        m = self.model
        plan = self.shard_plan(tuple(x.shape[2:]))
        state = m.prepare(
            x, timestep, txt, txt_mask, pooled, image_tokens, image_tokens_mask, audio, speaker_mask, guidance,
            embed_tokens=lambda embed, _n_frames: self._embed_local(embed, plan),
            select_tokens=plan.take,
            **avatar,
        )
        with attention_backend(ReplicatedTailAttention(self.attention, plan.tail)):
            xs = m.run_blocks(state, audio_fn=lambda layer, img, ctx, mask: self._audio(layer, img, ctx, mask, plan))
        # [B, local, p*C]: gather after the head (C << hidden); Avatar's reference tokens are dropped after it
        out = m.head(replace(state, n_ref=0), xs)
        out = gather_tokens(out, plan, self.groups.sp_group)[:, state.n_ref :]
        return m.output_velocity(m.unpatchify(out, state.grid), x, timestep)

    @staticmethod
    def _embed_local(embed, plan: ShardPlan) -> torch.Tensor:
        """Embed only the token frames this rank's tokens come from (`embed(fa, fb)`: token frames [fa, fb))."""
        s, parts = plan.tokens_per_frame, []
        for a, b in plan.ranges():
            fa, fb = a // s, -(-b // s)
            parts.append(embed(fa, fb)[:, a - fa * s : b - fa * s])
        return torch.cat(parts, dim=1)

    def _audio(self, module: nn.Module, img: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor,
               plan: ShardPlan) -> torch.Tensor:
        """Per-latent-frame audio cross-attention + mask gating on runs of whole frames / frame parts.

        Avatar: `module` is a face-masked adapter; the reference frame (token frame 0) gets no audio,
        token frame f takes the audio of latent frame f - 1."""
        if self.model.reference_frames == 0:
            outs = [module(img[:, a:e], ctx[:, :, f0:f1], mask[:, :, a:e]) for a, e, f0, f1 in plan.frame_runs()]
            return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        n_ref, s, outs = self.model.reference_frames, plan.tokens_per_frame, []
        for a, e, f0, f1 in plan.frame_runs():
            if f0 < n_ref:  # runs start at a frame boundary when they span several frames
                keep = e if f1 <= n_ref else a + (n_ref - f0) * s
                outs.append(img[:, a:keep])
                a, f0 = keep, n_ref
            if a < e:
                outs.append(masked_adapter(module, img[:, a:e], ctx[:, :, f0 - n_ref : f1 - n_ref], mask[:, :, a:e]))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
