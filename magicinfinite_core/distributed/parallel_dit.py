"""Sequence-parallel (and CFG-parallel) forward of `MagicInfiniteDiT`.

Re-uses the model's own submodules and mirrors `MagicInfiniteDiT.forward` step for step, with four
differences: patch embedding, RoPE rows and speaker-mask columns are taken for this rank's tokens
only (`ShardPlan`); joint attention goes through the SP backend; per-latent-frame audio
cross-attention runs on token runs split at frame boundaries (shards need not hold whole frames);
the final layer runs on local tokens and its small output is all-gathered before unpatchify.
`tests/test_usp.py` checks the result against `MagicInfiniteDiT.forward`, so a change to the plain
forward that is not mirrored here fails the tests.

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

from ..models.attention import AttentionBackend, attention_backend
from ..models.dit import MagicInfiniteDiT
from ..models.rope import rope_3d
from .usp import ParallelGroups, ReplicatedTailAttention, ShardPlan, gather_tokens

_BATCHED = ("x", "timestep", "txt", "txt_mask", "pooled", "image_tokens", "image_tokens_mask", "audio",
            "speaker_mask", "guidance")


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
        m, cfg = self.model, self.model.cfg
        b, _, t, h, w = x.shape
        grid = m.token_grid((t, h, w))
        plan = ShardPlan(grid[0] * grid[1] * grid[2], self.groups.sp, self.groups.sp_rank, grid[1] * grid[2])
        if txt_mask is None:
            txt_mask = torch.ones(txt.shape[:2], dtype=torch.bool, device=txt.device)
        if image_tokens is not None:
            if not cfg.image_token_dim:
                raise ValueError("this model has no image-token projection (image_token_dim = 0)")
            if image_tokens_mask is None:
                image_tokens_mask = torch.ones(image_tokens.shape[:2], dtype=torch.bool, device=txt.device)
            txt = torch.cat([m.image_in(image_tokens.to(txt.dtype)), txt], dim=1)
            txt_mask = torch.cat([image_tokens_mask.bool(), txt_mask.bool()], dim=1)

        img = self._embed_local(x, plan)
        txt = m.txt_in(txt, timestep, txt_mask)
        vec = m.time_in(timestep) + m.vector_in(pooled)
        if cfg.guidance_embed:
            if guidance is None:
                raise ValueError("this model embeds a guidance scale; pass guidance=")
            vec = vec + m.guidance_in(guidance.float() * 1000.0)
        cos, sin = rope_3d(grid, cfg.rope_dims, cfg.rope_theta)
        rope = (plan.take(cos, 0).to(x.device), plan.take(sin, 0).to(x.device))
        attn_txt_mask = None if bool(txt_mask.all()) else txt_mask

        ctx = mask = None
        if cfg.audio is not None and audio is not None:
            if speaker_mask is None:
                raise ValueError("audio was given without speaker masks; pass a face/speaker mask per stream")
            ctx = m.audio_proj(audio.to(img.dtype))  # [B, K, T, n, Cc], every frame (cheap, replicated)
            mask = plan.take(m._token_mask(speaker_mask, grid, ctx.shape[1]), 2)  # [B, K, local]

        with attention_backend(ReplicatedTailAttention(self.attention, plan.tail)):
            for i, block in enumerate(m.double_blocks):
                img, txt = block(img, txt, vec, rope, attn_txt_mask)
                if ctx is not None:
                    img = self._audio(m.audio_double_blocks[i], img, ctx, mask, plan)
            n_img = img.shape[1]
            xs = torch.cat([img, txt], dim=1)
            every = cfg.audio.single_block_every if cfg.audio is not None else 0
            for i, block in enumerate(m.single_blocks):
                xs = block(xs, vec, rope, n_img, attn_txt_mask)
                if ctx is not None and (i + 1) % every == 0:
                    img_part = self._audio(m.audio_single_blocks[i // every], xs[:, :n_img], ctx, mask, plan)
                    xs = torch.cat([img_part, xs[:, n_img:]], dim=1)
        out = m.final_layer(xs[:, :n_img], vec)  # [B, local, p*C]: gather after the head (C << hidden)
        return m._unpatchify(gather_tokens(out, plan, self.groups.sp_group), grid)

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
