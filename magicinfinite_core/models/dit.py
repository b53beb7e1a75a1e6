"""The MagicInfinite DiT: HunyuanVideo-I2V backbone + masked audio cross-attention.

State-dict names follow HunyuanVideo's original checkpoints (DESIGN.md §4) so the public backbone
loads without renaming; the audio layers are our own (`audio_proj`, `audio_double_blocks.N`,
`audio_single_blocks.N`). With `DiTConfig.avatar` the model is HunyuanVideo-Avatar instead: its
reference path, motion / fps embeddings and face-masked audio adapters under the Avatar names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from magicinfinite_core.cancellation import check_cancelled
from magicinfinite_core.config import DiTConfig
from magicinfinite_core.models.audio_layers import AudioCrossAttention, AudioProjection
from magicinfinite_core.models.avatar_layers import (
    AvatarAudioProjection,
    PerceiverAudioAdapter,
    audio_tokens_per_latent,
    masked_adapter,
)
from magicinfinite_core.models.blocks import DoubleStreamBlock, FinalLayer, SingleStreamBlock, TokenRefiner
from magicinfinite_core.models.layers import TimestepEmbedder, VectorEmbedder
from magicinfinite_core.models.rope import rope_3d


def concat_image_condition(
    noisy: torch.Tensor,
    image_latent: torch.Tensor | None,
    every_frame: bool = False,
    keep: torch.Tensor | None = None,
    first: torch.Tensor | bool = True,
    cond_channels: int | None = None,
) -> torch.Tensor:
    """I2V latent concat: [noisy C, portrait condition C_ref, mask 1] along channels.

    C_ref is the condition's own channel count (the portrait latent's C for pixel latents), or
    `cond_channels` (default C) when there is no condition at all.

    first_frame (the paper, HunyuanVideo-I2V): the portrait latent sits at latent frame 0 and the mask
    is 1 there, only for a window that starts the video (`first`); elsewhere both are zero.
    every_frame (`DiTConfig.image_condition`): the portrait latent sits at every latent frame of every
    window, and the mask still marks latent frame 0 of the video's first window. keep [B] switches the
    condition off per row (condition dropout, the unconditional CFG pass); None keeps every row.
    """
    b, _, t, h, w = noisy.shape
    c = image_latent.shape[1] if image_latent is not None else (cond_channels or noisy.shape[1])
    cond = noisy.new_zeros(b, c + 1, t, h, w)
    if image_latent is None:
        return torch.cat([noisy, cond], dim=1)
    k = noisy.new_ones(b) if keep is None else keep.to(noisy.dtype).reshape(b)
    f = torch.as_tensor(first, dtype=noisy.dtype, device=noisy.device).expand(b)
    ref = image_latent[:, :, :1].to(noisy.dtype)
    if every_frame:
        cond[:, :c] = (ref * k.view(b, 1, 1, 1, 1)).expand(-1, -1, t, -1, -1)
    else:
        cond[:, :c, :1] = ref * (k * f).view(b, 1, 1, 1, 1)
    cond[:, c, 0] = (k * f).view(b, 1, 1)
    return torch.cat([noisy, cond], dim=1)


def image_tokens_from_latent(latent: torch.Tensor, patch: tuple[int, int] = (2, 2)) -> torch.Tensor:
    """Portrait latent [B, C, T, h, w] (frame 0 is used) -> image tokens [B, (h/ph)(w/pw), C*ph*pw].

    The demo model's identity reference in the text stream: latent patches laid out like the DiT's
    own patch embedding (row-major grid, each token flattened as C, ph, pw), so no extra encoder.
    """
    x = latent[:, :, 0]
    b, c, h, w = x.shape
    ph, pw = patch
    if h % ph or w % pw:
        raise ValueError(f"latent size {h}x{w} is not divisible by the image-token patch {patch}")
    x = x.reshape(b, c, h // ph, ph, w // pw, pw).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // ph) * (w // pw), c * ph * pw)


@dataclass
class BlockInputs:
    """What the transformer blocks consume; built once per forward by `MagicInfiniteDiT.prepare`."""

    img: torch.Tensor  # [B, N_video, C] (Avatar: the reference frame's n_ref tokens first)
    txt: torch.Tensor  # [B, N_text, C] (image tokens first)
    vec: torch.Tensor  # [B, C] time + pooled text (+ guidance)
    rope: tuple[torch.Tensor, torch.Tensor]  # cos, sin [N_video, head_dim]
    txt_mask: torch.Tensor | None  # [B, N_text] or None when every text token is real
    ctx: torch.Tensor | None  # audio context tokens [B, K, T, n, C_ctx]
    mask: torch.Tensor | None  # speaker masks per token of img [B, K, N_video] (Avatar: 0 on the reference frame)
    grid: tuple[int, int, int]  # token grid (t, h, w) of the whole window
    n_ref: int = 0  # Avatar: reference-frame tokens in front of the video tokens (dropped by the head)
    pooled: torch.Tensor | None = None  # [B, pooled_dim] the pooled text (`vec_bias_input` "pooled")


class MagicInfiniteDiT(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        hidden, heads, eps = cfg.hidden_size, cfg.num_heads, cfg.norm_eps
        self.img_in = nn.Module()
        self.img_in.proj = nn.Conv3d(
            cfg.in_channels, hidden, kernel_size=cfg.patch_size, stride=cfg.patch_size
        )
        if cfg.image_token_dim:
            self.image_in = nn.Linear(cfg.image_token_dim, cfg.text_dim)
        self.txt_in = TokenRefiner(cfg.text_dim, hidden, heads, cfg.refiner_depth, cfg.qkv_bias, eps)
        self.time_in = TimestepEmbedder(hidden)
        self.vector_in = VectorEmbedder(cfg.pooled_dim, hidden)
        if cfg.guidance_embed:
            self.guidance_in = TimestepEmbedder(hidden)
        self.double_blocks = nn.ModuleList(
            DoubleStreamBlock(hidden, heads, cfg.mlp_ratio, cfg.qkv_bias, eps)
            for _ in range(cfg.depth_double)
        )
        self.single_blocks = nn.ModuleList(
            SingleStreamBlock(hidden, heads, cfg.mlp_ratio, eps) for _ in range(cfg.depth_single)
        )
        pt, ph, pw = cfg.patch_size
        self.final_layer = FinalLayer(hidden, pt * ph * pw * cfg.head_channels, eps)
        if cfg.vec_bias_channels:  # rows are channel-major (`unpatchify`); starts at zero: the model is unchanged
            patch = pt * ph * pw
            rows = [c * patch + i for c in cfg.vec_bias_channels for i in range(patch)]
            self.vec_bias_rows = rows  # a list, not a buffer: models are built on the meta device and then loaded
            self.vec_bias = nn.Linear(cfg.pooled_dim if cfg.vec_bias_input == "pooled" else hidden, len(rows))
            nn.init.zeros_(self.vec_bias.weight)
            nn.init.zeros_(self.vec_bias.bias)
        if cfg.reference_gate:  # the gate rows start nearly open: the model starts as the full skip
            with torch.no_grad():
                gate = slice(pt * ph * pw * cfg.out_channels, None)
                self.final_layer.linear.weight[gate].zero_()
                self.final_layer.linear.bias[gate].fill_(cfg.reference_gate_init)
        if cfg.audio is not None:
            self.audio_proj = AudioProjection(cfg.audio)
            self.audio_double_blocks = nn.ModuleList(
                AudioCrossAttention(hidden, cfg.audio, eps) for _ in range(cfg.depth_double)
            )
            self.audio_single_blocks = nn.ModuleList(
                AudioCrossAttention(hidden, cfg.audio, eps)
                for _ in range(cfg.depth_single // cfg.audio.single_block_every)
            )
        if cfg.avatar is not None:
            self._init_avatar(cfg)
        self.gradient_checkpointing = False

    def _init_avatar(self, cfg: DiTConfig) -> None:
        """HunyuanVideo-Avatar's modules, under its names (`config.AvatarConfig`)."""
        av, hidden = cfg.avatar, cfg.hidden_size
        self.ref_in = nn.Module()
        self.ref_in.proj = nn.Conv3d(cfg.in_channels, hidden, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.before_proj = nn.Linear(hidden, hidden)
        self.audio_proj = AvatarAudioProjection(av, hidden)
        self.motion_exp = TimestepEmbedder(hidden // av.motion_values)
        self.motion_pose = TimestepEmbedder(hidden // av.motion_values)
        self.fps_proj = TimestepEmbedder(hidden)
        self.audio_adapter_blocks = nn.ModuleList(
            PerceiverAudioAdapter(hidden, av) for _ in av.adapter_after_double
        )
        self._adapter_of = {block: i for i, block in enumerate(av.adapter_after_double)}

    @property
    def reference_frames(self) -> int:
        """Token frames the blocks see in front of the video's: Avatar's reference frame (1), else 0."""
        return 1 if self.cfg.avatar is not None else 0

    def embed_frames(self, x: torch.Tensor, frames: tuple[int, int], ref_latent: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """Tokens [B, (fb - fa) * h * w, hidden] of the token frames [fa, fb) of the sequence the blocks see.

        Avatar: frame 0 is the first reference latent frame through `img_in`, frame f > 0 is latent frame
        f - 1 through `img_in` plus its reference latent through `ref_in` + `before_proj`. Every token
        depends on its own frame only (Conv3d, kernel = stride), so a sequence-parallel rank embeds just
        the frames its tokens come from.
        """
        pt = self.cfg.patch_size[0]
        fa, fb = frames
        tokens = []
        if self.reference_frames and fa == 0:
            tokens.append(self.img_in.proj(ref_latent[:, :, :1]).flatten(2).transpose(1, 2))
            fa = 1
        va, vb = (fa - self.reference_frames) * pt, (fb - self.reference_frames) * pt
        if vb > va:
            img = self.img_in.proj(x[:, :, va:vb]).flatten(2).transpose(1, 2)
            if self.cfg.avatar is not None:
                img = img + self.before_proj(self.ref_in.proj(ref_latent[:, :, va:vb]).flatten(2).transpose(1, 2))
            tokens.append(img)
        return tokens[0] if len(tokens) == 1 else torch.cat(tokens, dim=1)

    def token_grid(self, latent_thw: tuple[int, int, int]) -> tuple[int, int, int]:
        (pt, ph, pw), (t, h, w) = self.cfg.patch_size, latent_thw
        if t % pt or h % ph or w % pw:
            raise ValueError(
                f"latent size {latent_thw} is not divisible by the patch size {self.cfg.patch_size}"
            )
        return t // pt, h // ph, w // pw

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
        """Velocity for x [B, in_channels, T, H, W] at timestep (sigma*1000) [B].

        txt [B, L, text_dim] with txt_mask [B, L] (True = real token); image_tokens [B, Li, image_token_dim]
        are prepended to the text stream; audio [B, K, T, fpl, window, D] with speaker_mask
        [B, K, T, h, w] in token space (zeros switch a speaker off: the unconditional audio pass).

        Avatar models (`cfg.avatar`): ref_latent [B, C, T, H, W] (the portrait's latent over the window);
        audio [B, K, 4T-3, window, layers, channels] Whisper windows, one stream per speaker, each with
        its face mask in speaker_mask [B, K, T, h, w] (`avatar_layers.face_mask_to_tokens`); motion_exp /
        motion_pose [B, motion_values] and fps [B] default to the reference's 30 / 25 / 25.
        """
        state = self.prepare(
            x, timestep, txt, txt_mask, pooled, image_tokens, image_tokens_mask, audio, speaker_mask, guidance,
            ref_latent=ref_latent, motion_exp=motion_exp, motion_pose=motion_pose, fps=fps,
        )
        out = self.unpatchify(self.head(state, self.run_blocks(state)), state.grid)
        return self.output_velocity(out, x, timestep)

    def output_velocity(self, out: torch.Tensor, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """The unpatchified head -> the velocity (`DiTConfig.prediction`, `reference_skip`)."""
        if self.cfg.prediction == "x0":
            return self.velocity_from_x0(out, x, timestep)
        return self.add_reference_skip(out, x, timestep)

    def velocity_from_x0(self, x0: torch.Tensor, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """`DiTConfig.prediction` "x0": v = (x_noisy - x0) / sigma, sigma floored at `reference_skip_min_sigma`."""
        noisy = x[:, : self.cfg.out_channels].to(x0.dtype)
        sigma = (timestep.to(x0.device, x0.dtype).reshape(-1) / 1000.0).clamp_min(self.cfg.reference_skip_min_sigma)
        return (noisy - x0) / sigma.expand(x0.shape[0]).view(-1, 1, 1, 1, 1)

    def add_reference_skip(self, out: torch.Tensor, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """`DiTConfig.reference_skip`: add (x_noisy - portrait latent) / sigma to the velocity.

        `out` is the unpatchified head: [B, head_channels, ...]; with `reference_gate` its last channel
        is a per-cell logit and the skip is multiplied by its sigmoid (the velocity is the rest).

        That term is the exact velocity of a video that equals the portrait wherever it stands still
        (x = sigma*noise + (1-sigma)*ref  =>  noise - ref = (x - ref) / sigma), so the blocks only learn
        what moves (lips, head) and the portrait's detail never has to pass through the hidden width.
        Rows whose portrait condition is dropped (all zeros) get no skip. sigma is floored at
        `reference_skip_min_sigma` (a guard against sigma -> 0).
        """
        cfg = self.cfg
        if not cfg.reference_skip:
            return out
        c = cfg.out_channels
        out, gate = out[:, :c], (torch.sigmoid(out[:, c:]) if cfg.reference_gate else 1.0)
        noisy, ref = x[:, :c].to(out.dtype), x[:, c : 2 * c].to(out.dtype)
        present = (ref.flatten(1).abs().amax(dim=1) > 0).to(out.dtype)
        sigma = (timestep.to(out.device, out.dtype).reshape(-1) / 1000.0).clamp_min(cfg.reference_skip_min_sigma)
        sigma = sigma.expand(out.shape[0])
        return out + gate * (noisy - ref) * (present / sigma).view(-1, 1, 1, 1, 1)

    def prepare(
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
        embed_tokens: Callable[[Callable[[int, int], torch.Tensor], int], torch.Tensor] | None = None,
        select_tokens: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
        ref_latent: torch.Tensor | None = None,
        motion_exp: torch.Tensor | None = None,
        motion_pose: torch.Tensor | None = None,
        fps: torch.Tensor | None = None,
    ) -> BlockInputs:
        """Embeddings and per-token tables the blocks need.

        `embed_tokens(embed, n_frames)` / `select_tokens(tensor, dim)` let a sequence-parallel wrapper
        embed and keep only its own tokens of the block sequence (`embed(fa, fb)`: `embed_frames` of
        token frames [fa, fb) of n_frames; RoPE rows along dim 0, speaker-mask columns along dim 2);
        the defaults keep all.
        """
        cfg = self.cfg
        b, _, t, h, w = x.shape
        grid = self.token_grid((t, h, w))
        select = select_tokens or (lambda tensor, dim: tensor)
        timestep = timestep.to(x.device).float().expand(b) if timestep.ndim <= 1 else timestep
        if txt_mask is None:
            txt_mask = torch.ones(txt.shape[:2], dtype=torch.bool, device=txt.device)
        if image_tokens is not None:
            if not cfg.image_token_dim:
                raise ValueError("this model has no image-token projection (image_token_dim = 0)")
            if image_tokens_mask is None:
                image_tokens_mask = torch.ones(image_tokens.shape[:2], dtype=torch.bool, device=txt.device)
            txt = torch.cat([self.image_in(image_tokens.to(txt.dtype)), txt], dim=1)
            txt_mask = torch.cat([image_tokens_mask.bool(), txt_mask.bool()], dim=1)

        if cfg.avatar is not None:
            ref_latent = self._check_ref_latent(ref_latent, x)
        n_frames = grid[0] + self.reference_frames
        embed = lambda fa, fb: self.embed_frames(x, (fa, fb), ref_latent)  # noqa: E731
        img = embed_tokens(embed, n_frames) if embed_tokens else embed(0, n_frames)
        txt = self.txt_in(txt, timestep, txt_mask)
        vec = self.time_in(timestep) + self.vector_in(pooled)
        if cfg.guidance_embed:
            if guidance is None:
                raise ValueError("this model embeds a guidance scale; pass guidance=")
            vec = vec + self.guidance_in(guidance.float() * 1000.0)
        if cfg.avatar is not None:
            return replace(self._prepare_avatar(
                x, img, txt, vec, txt_mask, grid, audio, speaker_mask, motion_exp, motion_pose, fps, select
            ), pooled=pooled)
        cos, sin = rope_3d(grid, cfg.rope_dims, cfg.rope_theta)
        rope = (select(cos, 0).to(x.device), select(sin, 0).to(x.device))

        ctx = mask = None
        if cfg.audio is not None and audio is not None:
            if speaker_mask is None:
                raise ValueError("audio was given without speaker masks; pass a face/speaker mask per stream")
            ctx = self.audio_proj(audio.to(img.dtype))  # [B, K, T, n, Cc]
            mask = select(self._token_mask(speaker_mask, grid, ctx.shape[1]), 2)
        attn_txt_mask = None if bool(txt_mask.all()) else txt_mask
        return BlockInputs(img, txt, vec, rope, attn_txt_mask, ctx, mask, grid, pooled=pooled)

    def _check_ref_latent(self, ref_latent: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        if ref_latent is None:
            raise ValueError("an Avatar model needs ref_latent= (the portrait's latent over the window)")
        if ref_latent.shape != x.shape:
            raise ValueError(f"ref_latent shape {tuple(ref_latent.shape)} must equal the latent's {tuple(x.shape)}")
        return ref_latent.to(x.dtype)

    def _prepare_avatar(
        self, x, img, txt, vec, txt_mask, grid, audio, speaker_mask, motion_exp, motion_pose, fps, select
    ) -> BlockInputs:
        """Avatar: the tokens already hold the reference path and the prepended reference frame
        (`embed_frames`); add the motion / fps embeddings to the vector condition, RoPE with the
        reference frame at time `ref_time`, and project the audio windows. The face mask covers the
        whole block sequence, zero on the reference frame."""
        cfg, av = self.cfg, self.cfg.avatar
        b = x.shape[0]

        def scalars(v: torch.Tensor | None, default: float, n: int) -> torch.Tensor:
            v = torch.full((b, n), default, device=x.device) if v is None else v.to(x.device).float()
            return v.reshape(b, n)

        vec = vec + self.motion_exp(scalars(motion_exp, av.default_motion_exp, av.motion_values).reshape(-1)).reshape(b, -1)
        vec = vec + self.motion_pose(scalars(motion_pose, av.default_motion_pose, av.motion_values).reshape(-1)).reshape(b, -1)
        vec = vec + self.fps_proj(scalars(fps, av.default_fps, 1).reshape(-1))
        t, h, w = grid
        n_ref = self.reference_frames * h * w
        cos, sin = rope_3d((t + self.reference_frames, h, w), cfg.rope_dims, cfg.rope_theta, t_offset=av.ref_time)
        ctx = mask = None
        if audio is not None:
            if speaker_mask is None:
                raise ValueError("audio was given without face masks; pass one face mask per audio stream")
            ctx = audio_tokens_per_latent(self.audio_proj(audio.to(img.dtype)), av.frames_per_latent)
            if ctx.shape[2] != t:
                raise ValueError(
                    f"the audio covers {ctx.shape[2]} latent frames but the latent has {t}; "
                    f"give {av.frames_per_latent * t - av.frames_per_latent + 1} video frames of audio"
                )
            mask = self._token_mask(speaker_mask, grid, ctx.shape[1]).to(img.dtype)
            mask = select(torch.cat([mask.new_zeros(*mask.shape[:2], n_ref), mask], dim=2), 2)
        attn_txt_mask = None if bool(txt_mask.all()) else txt_mask
        rope = (select(cos, 0).to(x.device), select(sin, 0).to(x.device))
        return BlockInputs(img, txt, vec, rope, attn_txt_mask, ctx, mask, grid, n_ref)

    def _avatar_audio(self, adapter: nn.Module, img: torch.Tensor, s: BlockInputs) -> torch.Tensor:
        """The face-masked adapter on the video tokens; the reference tokens in front stay untouched."""
        video = masked_adapter(adapter, img[:, s.n_ref :], s.ctx, s.mask[..., s.n_ref :])
        return torch.cat([img[:, : s.n_ref], video], dim=1)

    def run_blocks(self, s: BlockInputs, audio_fn: Callable | None = None) -> torch.Tensor:
        """All double and single blocks with the audio layers between them -> [video; text] tokens.

        `audio_fn(layer, img, ctx, mask)` lets a wrapper run an audio layer (Avatar: an adapter) on
        partial frames.
        """
        avatar = self.cfg.avatar is not None
        if audio_fn is None and avatar:
            audio_fn = lambda adapter, img, ctx, mask: self._run(self._avatar_audio, adapter, img, s)  # noqa: E731
        audio_fn = audio_fn or (lambda layer, img, ctx, mask: self._run(layer, img, ctx, mask))
        img, txt = s.img, s.txt
        for i, block in enumerate(self.double_blocks):
            img, txt = self._run(block, img, txt, s.vec, s.rope, s.txt_mask)
            if s.ctx is not None and avatar:
                if i in self._adapter_of:
                    img = audio_fn(self.audio_adapter_blocks[self._adapter_of[i]], img, s.ctx, s.mask)
            elif s.ctx is not None:
                img = audio_fn(self.audio_double_blocks[i], img, s.ctx, s.mask)
        n_img = img.shape[1]
        xs = torch.cat([img, txt], dim=1)
        every = self.cfg.audio.single_block_every if self.cfg.audio is not None else 0
        for i, block in enumerate(self.single_blocks):
            xs = self._run(block, xs, s.vec, s.rope, n_img, s.txt_mask)
            if s.ctx is not None and not avatar and (i + 1) % every == 0:
                img_part = audio_fn(self.audio_single_blocks[i // every], xs[:, :n_img], s.ctx, s.mask)
                xs = torch.cat([img_part, xs[:, n_img:]], dim=1)
        return xs

    def head(self, s: BlockInputs, xs: torch.Tensor) -> torch.Tensor:
        """Final adaLN + linear on the video tokens -> [B, n_video, patch_volume * out_channels].

        Avatar's reference-frame tokens (the first `n_ref`) are dropped here, as in the reference. With
        `vec_bias_channels`, those channels' rows also get a bias from the conditioning vector (or the pooled text:
        `vec_bias_input`), the same for every token."""
        out = self.final_layer(xs[:, s.n_ref : s.img.shape[1]], s.vec)
        if self.cfg.vec_bias_channels:
            src = s.pooled if self.cfg.vec_bias_input == "pooled" else nn.functional.silu(s.vec)
            bias = self.vec_bias(src.to(self.vec_bias.weight.dtype)).to(out.dtype)  # [B, rows]
            rows = torch.tensor(self.vec_bias_rows, device=out.device)
            out = out.index_add(-1, rows, bias[:, None, :].expand(-1, out.shape[1], -1))
        return out

    def _run(self, module: nn.Module, *args):
        check_cancelled()  # between blocks: one forward of a huge model is long (cancellation.py)
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(module, *args, use_reentrant=False)
        return module(*args)

    @staticmethod
    def _token_mask(speaker_mask: torch.Tensor, grid: tuple[int, int, int], k: int) -> torch.Tensor:
        if speaker_mask.shape[1] != k or tuple(speaker_mask.shape[2:]) != grid:
            raise ValueError(
                f"speaker mask shape {tuple(speaker_mask.shape)} does not fit {k} audio streams on the "
                f"token grid {grid}; build it with masks.token_masks for this latent size"
            )
        return speaker_mask.flatten(2)

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        (pt, ph, pw), (t, h, w) = self.cfg.patch_size, grid
        c = self.cfg.head_channels
        x = x.reshape(x.shape[0], t, h, w, c, pt, ph, pw)
        return x.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(x.shape[0], c, t * pt, h * ph, w * pw)


def with_reference_gate(model: MagicInfiniteDiT) -> MagicInfiniteDiT:
    """The same model with `DiTConfig.reference_gate` added: its velocity rows kept, the gate rows new.

    Why: a trained full-skip model fine-tunes into a gated one from where it stands (the gate starts at
    sigmoid(reference_gate_init), nearly the full skip) instead of training from scratch.
    """
    if model.cfg.reference_gate:
        return model
    gated = MagicInfiniteDiT(replace(model.cfg, reference_gate=True)).to(next(model.parameters()).dtype)
    sd = model.state_dict()
    rows = sd["final_layer.linear.weight"].shape[0]
    new = gated.state_dict()
    for name in ("final_layer.linear.weight", "final_layer.linear.bias"):
        new[name][:rows] = sd.pop(name)
    new.update(sd)
    gated.load_state_dict(new)
    return gated.train(model.training)


def with_vec_bias(model: MagicInfiniteDiT, channels: tuple[int, ...], source: str = "vec") -> MagicInfiniteDiT:
    """The same model with `DiTConfig.vec_bias_channels` set (reading `source`: `vec_bias_input`): every weight kept,
    the new bias layer at zero (so its outputs are unchanged until it trains)."""
    if tuple(model.cfg.vec_bias_channels) == tuple(channels) and model.cfg.vec_bias_input == source:
        return model
    if model.cfg.vec_bias_channels:
        raise ValueError(f"the model already has vec_bias_channels {list(model.cfg.vec_bias_channels)}")
    biased = MagicInfiniteDiT(replace(model.cfg, vec_bias_channels=tuple(channels), vec_bias_input=source))
    biased = biased.to(next(model.parameters()).dtype)
    missing, unexpected = biased.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("vec_bias.") for k in missing), (missing, unexpected)
    return biased.train(model.training)


def count_parameters(model: nn.Module, prefix_filter: tuple[str, ...] = ()) -> int:
    return sum(
        p.numel() for n, p in model.named_parameters() if not prefix_filter or n.startswith(prefix_filter)
    )


AUDIO_PREFIXES = ("audio_proj.", "audio_double_blocks.", "audio_single_blocks.")
