"""Sequence parallelism (USP, paper §4.1.3 / [15]) for the DiT: shard plans and attention backends.

Layout (DESIGN.md §6). Video tokens are t-major (latent frame, h, w). A forward on an SP group of N
ranks gives rank r the contiguous token range [r*q, (r+1)*q), q = L // N, together with their RoPE
rows and speaker-mask columns. Text and image tokens are replicated on every rank and enter the
attention as *joint* tokens. Outputs are all-gathered after the final layer.

Why a replicated tail instead of padding or whole-frame shards: L = N*q + r with r < N. The r last
video tokens are held by every rank and handed to the attention as extra joint tokens (in front of
the text), exactly like text. Attention stays exact with no key mask on the video part, which matters
because xfuser's flash / ring kernels take no mask (padding would need one), and no constraint on
T_lat is needed (requiring T_lat % N == 0 would forbid a 9-latent-frame window on 8 GPUs). Shards do
not have to align to latent frames: every frame-local operation (per-frame audio cross-attention,
mask gating) is applied to runs of tokens split at frame boundaries (`ShardPlan.frame_runs`), which
is exact because those operations are independent per token given its frame.

Backends (the `joint(...)` protocol of `models.attention`; they see this rank's q equal-sized shard
and the replicated joint tokens, the wrapper handles the tail):
  * `YunchangUlyssesAttention`: Ulysses on any torch.distributed group (gloo on CPU, tests) with
    yunchang's `SeqAllToAll4D` around SDPA. Text heads are split the same way the all-to-all
    scatters video heads (contiguous head blocks by group rank), the text output heads are
    all-gathered. Supports a text key mask. Ring degree must be 1 (yunchang's ring is wrong on CPU).
  * `XFuserUSPAttention`: xfuser's `xFuserLongContextAttention` (Ulysses x ring, NCCL, CUDA only), the
    production path. It takes no mask: padded text tokens are dropped per sample (as HunyuanVideo
    does), their outputs are zero. Nothing reads them: padded text keys are masked everywhere and the
    head only decodes video tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from magicinfinite_core.models.attention import AttentionBackend, LocalAttention, sdpa


class USPUnavailableError(RuntimeError):
    """A sequence-parallel backend whose libraries or hardware are missing."""


# ----------------------------------------------------------------------------------------------
# Shard plan
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardPlan:
    """Which video tokens an SP rank holds: an equal contiguous shard plus the replicated tail."""

    total: int  # video tokens L = T * S
    world: int  # SP degree N
    rank: int
    tokens_per_frame: int  # S = h * w tokens of one latent frame

    def __post_init__(self) -> None:
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"bad SP rank {self.rank} of {self.world}")
        if self.total < self.world:
            raise ValueError(
                f"{self.total} video tokens cannot be split over {self.world} ranks; use fewer ranks"
            )
        if self.tokens_per_frame < 1 or self.total % self.tokens_per_frame:
            raise ValueError(f"{self.total} tokens is not a whole number of {self.tokens_per_frame}-token frames")

    @property
    def shard_len(self) -> int:
        return self.total // self.world

    @property
    def tail(self) -> int:
        """Tokens at the end of the sequence held by every rank (joint tokens in attention)."""
        return self.total - self.world * self.shard_len

    @property
    def start(self) -> int:
        return self.rank * self.shard_len

    @property
    def end(self) -> int:
        return self.start + self.shard_len

    @property
    def local_len(self) -> int:
        return self.shard_len + self.tail

    def ranges(self) -> list[tuple[int, int]]:
        """Global token ranges held locally, in local order (shard, then tail)."""
        out = [(self.start, self.end)]
        if self.tail:
            out.append((self.total - self.tail, self.total))
        return out

    def index(self, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.cat([torch.arange(a, b, device=device) for a, b in self.ranges()])

    def take(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """The local tokens of a tensor that has all L tokens along `dim` (tokens, RoPE rows, masks)."""
        if x.shape[dim] != self.total:
            raise ValueError(f"expected {self.total} tokens along dim {dim}, got {tuple(x.shape)}")
        return torch.cat([x.narrow(dim, a, b - a) for a, b in self.ranges()], dim=dim)

    def frame_runs(self) -> list[tuple[int, int, int, int]]:
        """(local_start, local_end, frame_lo, frame_hi): local token runs that are either whole frames
        [frame_lo, frame_hi) or part of the single frame frame_lo (frame_hi = frame_lo + 1)."""
        s, runs, off = self.tokens_per_frame, [], 0
        for a, b in self.ranges():
            pos = a
            while pos < b:
                f = pos // s
                if pos % s == 0 and b - pos >= s:  # as many whole frames as fit
                    n = (b - pos) // s
                    runs.append((off, off + n * s, f, f + n))
                    step = n * s
                else:  # a partial frame: up to the frame's end or the range's end
                    step = min(b, (f + 1) * s) - pos
                    runs.append((off, off + step, f, f + 1))
                pos, off = pos + step, off + step
        return runs

    @property
    def frame_aligned(self) -> bool:
        return all((e - s) % self.tokens_per_frame == 0 for s, e, _, _ in self.frame_runs())


def gather_tokens(local: torch.Tensor, plan: ShardPlan, group: dist.ProcessGroup | None) -> torch.Tensor:
    """Rebuild all L tokens [B, L, C] on every rank from each rank's [B, q + tail, C]."""
    if plan.world == 1:
        return local
    shard = local[:, : plan.shard_len].contiguous()
    parts = [torch.empty_like(shard) for _ in range(plan.world)]
    dist.all_gather(parts, shard, group=group)
    return torch.cat([*parts, local[:, plan.shard_len :]], dim=1)


# ----------------------------------------------------------------------------------------------
# Backends
# ----------------------------------------------------------------------------------------------


def _group_size_rank(group: dist.ProcessGroup | None) -> tuple[int, int]:
    if not dist.is_available() or not dist.is_initialized():
        return 1, 0
    return dist.get_world_size(group), dist.get_rank(group)


class YunchangUlyssesAttention:
    """Ulysses (all-to-all heads <-> sequence) with yunchang's SeqAllToAll4D around SDPA.

    Exact in forward and backward on gloo (DESIGN.md §6); the tests' backend. `group` is the Ulysses
    (= SP) group; None means the default group.
    """

    def __init__(self, group: dist.ProcessGroup | None = None):
        try:
            from yunchang.comm.all_to_all import SeqAllToAll4D
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise USPUnavailableError(
                f"the Ulysses backend needs yunchang ({e}); install it with: pip install 'yunchang==0.6.4'"
            ) from e
        self._a2a = SeqAllToAll4D
        self.group = group

    def joint(self, img_q, img_k, img_v, txt_q, txt_k, txt_v, txt_mask):
        """img_*: this rank's [B, q, H, D] shard; txt_*: replicated [B, Lt, H, D]."""
        world, rank = _group_size_rank(self.group)
        heads = img_q.shape[2]
        if heads % world:
            raise ValueError(f"{heads} attention heads cannot be split over an Ulysses degree of {world}")
        if world == 1:  # no communication; same math as LocalAttention
            q, k, v = img_q, img_k, img_v
        else:
            # [B, q, H, D] -> [B, N*q, H/N, D]: rank r receives head block r of every shard, in rank order
            q, k, v = (self._a2a.apply(self.group, t.contiguous(), 2, 1) for t in (img_q, img_k, img_v))
        n_img = q.shape[1]
        hs = slice(rank * heads // world, (rank + 1) * heads // world)  # the same head block
        q = torch.cat([q, txt_q[:, :, hs]], dim=1)
        k = torch.cat([k, txt_k[:, :, hs]], dim=1)
        v = torch.cat([v, txt_v[:, :, hs]], dim=1)
        key_mask = None
        if txt_mask is not None and not bool(txt_mask.all()):
            ones = torch.ones(txt_mask.shape[0], n_img, dtype=torch.bool, device=txt_mask.device)
            key_mask = torch.cat([ones, txt_mask.bool()], dim=1)
        out = sdpa(q, k, v, key_mask)  # [B, N*q + Lt, H/N, D]
        img_out, txt_out = out[:, :n_img].contiguous(), out[:, n_img:].contiguous()
        if world == 1:
            return img_out, txt_out
        img_out = self._a2a.apply(self.group, img_out, 1, 2)  # back to [B, q, H, D]
        heads_parts = [torch.empty_like(txt_out) for _ in range(world)]
        dist.all_gather(heads_parts, txt_out, group=self.group)
        return img_out, torch.cat(heads_parts, dim=2)


class XFuserUSPAttention:
    """xfuser's USP (`xFuserLongContextAttention`, Ulysses x ring) on CUDA/NCCL: the production path.

    Needs `init_xfuser_groups` (or xfuser's own init) first. Not runnable on CPU: xfuser refuses to
    run without CUDA (DESIGN.md §6).
    """

    def __init__(self, attn_type: str | None = None):
        mods = import_xfuser()
        AttnType = mods["AttnType"]
        if attn_type is None:
            attn_type = "fa" if _has_flash_attn() else "torch_efficient"
        try:
            kind = AttnType.from_string(attn_type)
        except ValueError as e:
            raise ValueError(f"unknown yunchang attention type {attn_type!r}") from e
        self.attn = mods["xFuserLongContextAttention"](attn_type=kind)

    def _call(self, q, k, v, jq, jk, jv):
        if jq is None or jq.shape[1] == 0:
            return self.attn(None, q, k, v)
        return self.attn(
            None, q, k, v,
            joint_tensor_query=jq, joint_tensor_key=jk, joint_tensor_value=jv, joint_strategy="rear",
        )

    def joint(self, img_q, img_k, img_v, txt_q, txt_k, txt_v, txt_mask):
        n_img = img_q.shape[1]
        if txt_mask is None or bool(txt_mask.all()):
            out = self._call(img_q, img_k, img_v, txt_q, txt_k, txt_v)
            return out[:, :n_img], out[:, n_img:]
        # No mask support: run each sample with its valid joint tokens only. Every rank loops over the
        # same samples with the same token counts (the mask is replicated), so collectives stay matched.
        img_outs, txt_outs = [], []
        for b in range(img_q.shape[0]):
            keep = txt_mask[b].bool().nonzero().squeeze(1)
            sl = slice(b, b + 1)
            out = self._call(
                img_q[sl], img_k[sl], img_v[sl],
                txt_q[sl][:, keep], txt_k[sl][:, keep], txt_v[sl][:, keep],
            )
            t_out = txt_q.new_zeros(txt_q[sl].shape)
            t_out[:, keep] = out[:, n_img:].to(t_out.dtype)
            img_outs.append(out[:, :n_img])
            txt_outs.append(t_out)
        return torch.cat(img_outs), torch.cat(txt_outs)


class ReplicatedTailAttention:
    """Adapter the SP forward installs: moves the replicated tail video tokens into the joint part.

    Block code passes [shard; tail] as the video part; backends expect an equal-sized shard.
    """

    def __init__(self, backend: AttentionBackend, tail: int):
        self.backend, self.tail = backend, tail

    def joint(self, img_q, img_k, img_v, txt_q, txt_k, txt_v, txt_mask):
        r = self.tail
        if r == 0:
            return self.backend.joint(img_q, img_k, img_v, txt_q, txt_k, txt_v, txt_mask)
        q = img_q.shape[1] - r
        jq, jk, jv = (torch.cat([a[:, q:], t], dim=1) for a, t in ((img_q, txt_q), (img_k, txt_k), (img_v, txt_v)))
        mask = None
        if txt_mask is not None:
            ones = torch.ones(txt_mask.shape[0], r, dtype=torch.bool, device=txt_mask.device)
            mask = torch.cat([ones, txt_mask.bool()], dim=1)
        img_out, joint_out = self.backend.joint(img_q[:, :q], img_k[:, :q], img_v[:, :q], jq, jk, jv, mask)
        return torch.cat([img_out, joint_out[:, :r]], dim=1), joint_out[:, r:]


# ----------------------------------------------------------------------------------------------
# Process groups
# ----------------------------------------------------------------------------------------------


@dataclass
class ParallelGroups:
    """SP x CFG layout of the world. SP groups are contiguous ranks (as in xfuser's "tp-sp-pp-cfg-dp"
    order), CFG groups strided: ranks c*sp .. c*sp+sp-1 form SP group c."""

    world: int
    rank: int
    ulysses: int
    ring: int
    cfg: int
    sp_group: Any = None  # dist.ProcessGroup, None when sp == 1
    cfg_group: Any = None

    @property
    def sp(self) -> int:
        return self.ulysses * self.ring

    @property
    def sp_rank(self) -> int:
        return self.rank % self.sp

    @property
    def cfg_rank(self) -> int:
        return self.rank // self.sp


def check_layout(world: int, ulysses: int, ring: int, cfg: int, heads: int | None = None) -> None:
    """Fail early with a message a user can act on."""
    if min(ulysses, ring, cfg) < 1:
        raise ValueError(f"degrees must be >= 1, got ulysses={ulysses} ring={ring} cfg={cfg}")
    if ulysses * ring * cfg != world:
        raise ValueError(
            f"ulysses ({ulysses}) x ring ({ring}) x cfg ({cfg}) = {ulysses * ring * cfg} must equal the "
            f"number of processes ({world})"
        )
    if heads is not None and heads % ulysses:
        raise ValueError(f"the model's {heads} heads cannot be split over an Ulysses degree of {ulysses}")


def new_groups(ulysses: int, ring: int, cfg: int) -> ParallelGroups:
    """Build SP and CFG groups on an initialised default group (every rank calls this, same order)."""
    world, rank = dist.get_world_size(), dist.get_rank()
    check_layout(world, ulysses, ring, cfg)
    sp = ulysses * ring
    groups = ParallelGroups(world, rank, ulysses, ring, cfg)
    for c in range(cfg):
        ranks = list(range(c * sp, (c + 1) * sp))
        g = dist.new_group(ranks) if sp > 1 else None
        if rank in ranks:
            groups.sp_group = g
    for j in range(sp):
        ranks = list(range(j, world, sp))
        g = dist.new_group(ranks) if cfg > 1 else None
        if rank in ranks:
            groups.cfg_group = g
    return groups


def _has_flash_attn() -> bool:
    try:
        import flash_attn  # noqa: F401
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return False
    return True


def import_xfuser() -> dict[str, Any]:
    """xfuser's pieces, or one clear error saying why the production path cannot run here."""
    if not torch.cuda.is_available():
        raise USPUnavailableError(
            "the xfuser USP backend needs CUDA GPUs (xfuser refuses to run on CPU); use "
            "attention='yunchang' with gloo for CPU runs"
        )
    try:
        from xfuser.core.distributed import (
            get_cfg_group,
            get_sp_group,
            init_distributed_environment,
            initialize_model_parallel,
            model_parallel_is_initialized,
        )
        from xfuser.core.long_ctx_attention import xFuserLongContextAttention
        from yunchang.kernels import AttnType
    except ImportError as e:
        raise USPUnavailableError(
            f"the xfuser USP backend could not be imported ({e}); install it with "
            "pip install 'xfuser>=0.4' (plus flash-attn for speed), or use attention='yunchang'"
        ) from e
    return dict(
        get_cfg_group=get_cfg_group,
        get_sp_group=get_sp_group,
        init_distributed_environment=init_distributed_environment,
        initialize_model_parallel=initialize_model_parallel,
        model_parallel_is_initialized=model_parallel_is_initialized,
        xFuserLongContextAttention=xFuserLongContextAttention,
        AttnType=AttnType,
    )


def init_xfuser_groups(
    ulysses: int, ring: int, cfg: int, *, rank: int, world: int, init_method: str = "env://"
) -> ParallelGroups:
    """Initialise xfuser's world / model-parallel state (it also sets yunchang's Ulysses/ring groups)."""
    mods = import_xfuser()
    check_layout(world, ulysses, ring, cfg)
    mods["init_distributed_environment"](
        world_size=world, rank=rank, distributed_init_method=init_method, backend="nccl"
    )
    if not mods["model_parallel_is_initialized"]():
        mods["initialize_model_parallel"](
            classifier_free_guidance_degree=cfg,
            sequence_parallel_degree=ulysses * ring,
            ulysses_degree=ulysses,
            ring_degree=ring,
        )
    sp, cfg_g = mods["get_sp_group"](), mods["get_cfg_group"]()
    groups = ParallelGroups(world, rank, ulysses, ring, cfg)
    groups.sp_group = sp.device_group if ulysses * ring > 1 else None
    groups.cfg_group = cfg_g.device_group if cfg > 1 else None
    if ulysses * ring > 1 and sp.rank_in_group != groups.sp_rank:
        raise RuntimeError(f"xfuser SP rank {sp.rank_in_group} != expected {groups.sp_rank}: layout changed")
    return groups


def make_backend(attention: str, groups: ParallelGroups) -> AttentionBackend:
    """'yunchang' (Ulysses, CPU or GPU), 'xfuser' (Ulysses x ring, CUDA) or 'auto' (xfuser on CUDA)."""
    if attention == "auto":
        attention = "xfuser" if torch.cuda.is_available() else "yunchang"
    if attention == "yunchang":
        if groups.ring != 1:
            raise ValueError(
                "ring attention is not offered with the yunchang backend (its ring mode is numerically "
                "wrong on CPU); use ring=1 or attention='xfuser' on CUDA"
            )
        if groups.sp == 1:  # CFG-parallel only: no SP group (None would mean the whole world to yunchang)
            return LocalAttention()
        return YunchangUlyssesAttention(groups.sp_group)
    if attention == "xfuser":
        return XFuserUSPAttention()
    raise ValueError(f"unknown attention backend {attention!r}; use 'auto', 'yunchang' or 'xfuser'")
