"""Condition batches for distillation: one clean latent + everything the DiT is conditioned on.

The passes are built by the sampler's own `magicinfinite_core.sampling.predictor.pass_inputs`, so
they mean exactly what they mean at sampling time (`magicinfinite_core.sampling.guidance`):

  FULL      u(T, I, A): prompt text (+ image tokens), audio with the speaker masks;
  NO_AUDIO  u(T, I, 0): the same with the speaker masks zeroed (the audio layers add nothing);
  UNCOND    u(0, 0, 0): the empty-prompt text, no portrait (zero frame-0 concat with mask 0, image
            tokens masked out), speaker masks zeroed.

`image_keep` (per sample) marks windows that start the video: without it the frame-0 concat is off
in every pass, as the sampler does for every window after the first, so the generator also learns the
mid-video windows.

HunyuanVideo-Avatar models (`DiTConfig.avatar`) take the portrait as `ref_latent` (its reference path,
in every pass, as the sampler gives it) and Whisper windows of the clip's 4T-3 video frames as `audio`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

from magicinfinite_core.config import DiTConfig
from magicinfinite_core.sampling.guidance import FULL
from magicinfinite_core.sampling.predictor import PassConditions, avatar_audio_window, pad_tokens, pass_inputs
from magicinfinite_core.sampling.schedule import timestep_from_sigma
from magicinfinite_core.weights.checkpoints import load_state_dict

REQUIRED = ("latents", "txt", "txt_mask", "pooled", "uncond_txt", "uncond_txt_mask", "uncond_pooled")


@dataclass
class CondBatch:
    """Tensors are batched ([B, ...]); `latents` is the clean video latent (the real data)."""

    latents: torch.Tensor  # [B, C, T, H, W]
    txt: torch.Tensor  # [B, L, text_dim]
    txt_mask: torch.Tensor  # [B, L] bool
    pooled: torch.Tensor  # [B, pooled_dim]
    uncond_txt: torch.Tensor  # [B, Lu, text_dim] (the empty prompt)
    uncond_txt_mask: torch.Tensor  # [B, Lu] bool
    uncond_pooled: torch.Tensor  # [B, pooled_dim]
    image_latent: torch.Tensor | None = None  # [B, C, 1, H, W] portrait latent (I2V concat)
    image_tokens: torch.Tensor | None = None  # [B, Li, image_token_dim]
    audio: torch.Tensor | None = None  # [B, K, T, fpl, window, D]
    speaker_mask: torch.Tensor | None = None  # [B, K, T, h, w] token-space masks
    image_keep: torch.Tensor | None = None  # [B] 1 = frame-0 concat on, 0 = off (None: all on)
    ref_latent: torch.Tensor | None = None  # [B, C, 1, H, W] Avatar: the portrait latent for its reference path

    @property
    def batch_size(self) -> int:
        return int(self.latents.shape[0])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> CondBatch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            if dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device)

        return replace(self, **{f.name: move(getattr(self, f.name)) for f in fields(self)})

    def pass_conditions(self) -> PassConditions:
        """The batch as the predictor's conditions (`image_keep` = the window starts the video)."""
        return PassConditions(
            txt=self.txt, txt_mask=self.txt_mask, pooled=self.pooled,
            null_txt=self.uncond_txt, null_txt_mask=self.uncond_txt_mask, null_pooled=self.uncond_pooled,
            image_latent=self.image_latent if self.ref_latent is None else self.ref_latent,
            first=True if self.image_keep is None else self.image_keep.to(self.latents.device).float(),
            image_tokens=self.image_tokens, audio=self.audio, speaker_mask=self.speaker_mask,
            ref_latent=self.ref_latent is not None,
        )


def run_dit(
    model: torch.nn.Module,
    x: torch.Tensor,
    sigma: torch.Tensor,
    batch: CondBatch,
    passes: tuple[str, ...] = (FULL,),
    image_mode: str | None = "first_frame",
) -> torch.Tensor:
    """Velocity of `model` (a DiT, a peft wrapper of one, or a DDP wrapper) for x at per-row sigma.

    All passes in one forward, built by the sampler's own `pass_inputs` (the real score runs FULL /
    NO_AUDIO / UNCOND together)."""
    x_in, kw = pass_inputs(x, passes, batch.pass_conditions(), image_mode)
    timestep = timestep_from_sigma(sigma.to(x.device, torch.float32)).expand(x.shape[0])
    return model(x_in, timestep, **kw)


def collate(examples: list[CondBatch]) -> CondBatch:
    """Stack single examples (no batch dim, as stored on disk) into a batch; pads text tokens."""
    out = {}
    for f in fields(CondBatch):
        vals = [getattr(e, f.name) for e in examples]
        if any(v is None for v in vals):
            if not all(v is None for v in vals):
                raise ValueError(f"field {f.name!r} is present in some examples and missing in others")
            out[f.name] = None
            continue
        if f.name in ("txt", "txt_mask", "uncond_txt", "uncond_txt_mask"):
            length = max(v.shape[0] for v in vals)
            vals = [pad_tokens(v[None], length)[0] for v in vals]
        out[f.name] = torch.stack(vals)
    return CondBatch(**out)


def synthetic_examples(
    cfg: DiTConfig,
    n: int,
    latent_thw: tuple[int, int, int] = (3, 8, 8),
    *,
    text_len: int = 6,
    speakers: int = 1,
    seed: int = 0,
) -> list[CondBatch]:
    """Seeded random examples shaped for `cfg` (tests, CLI smoke runs before real caches exist).

    The latents get a low-frequency structure (a per-example colour + ramp) so a generator has
    something non-trivial to match; they are not meant to look like anything.
    """
    g = torch.Generator().manual_seed(seed)
    c, (t, h, w) = cfg.out_channels, latent_thw
    pt, ph, pw = cfg.patch_size
    grid = (t // pt, h // ph, w // pw)
    out = []
    ramp = torch.linspace(-1, 1, w).view(1, 1, 1, w)
    for _ in range(n):
        colour = torch.randn(c, 1, 1, 1, generator=g)
        latents = (
            colour
            + 0.5 * ramp * torch.randn(c, 1, 1, 1, generator=g)
            + 0.1 * torch.randn(c, t, h, w, generator=g)
        )
        ex = CondBatch(
            latents=latents,
            txt=torch.randn(text_len, cfg.text_dim, generator=g),
            txt_mask=torch.ones(text_len, dtype=torch.bool),
            pooled=torch.randn(cfg.pooled_dim, generator=g),
            uncond_txt=torch.zeros(text_len, cfg.text_dim),
            uncond_txt_mask=torch.cat(
                [torch.ones(1, dtype=torch.bool), torch.zeros(text_len - 1, dtype=torch.bool)]
            ),
            uncond_pooled=torch.zeros(cfg.pooled_dim),
            image_latent=(torch.randn(cfg.cond_channels, 1, h, w, generator=g) if cfg.cond_channels != c
                          else latents[:, :1].clone()) if cfg.image_concat else None,
        )
        if cfg.avatar is not None:  # Whisper windows of the 4T-3 video frames, the portrait as reference
            av = cfg.avatar
            ex.ref_latent = latents[:, :1].clone()
            ex.audio = torch.randn(speakers, av.frames_per_latent * (t - 1) + 1, av.audio_window, av.audio_layers,
                                   av.audio_channels, generator=g)
            mask = torch.zeros(speakers, *grid)
            mask[..., grid[1] // 4 : grid[1] - grid[1] // 4, grid[2] // 4 : grid[2] - grid[2] // 4] = 1.0
            ex.speaker_mask = mask
        if cfg.audio is not None:
            a = cfg.audio
            ex.audio = torch.randn(
                speakers, t, a.frames_per_latent, a.frame_window, a.feature_dim, generator=g
            )
            mask = torch.zeros(speakers, *grid)
            mask[..., grid[1] // 4 : grid[1] - grid[1] // 4, grid[2] // 4 : grid[2] - grid[2] // 4] = 1.0
            ex.speaker_mask = mask
        out.append(ex)
    return out


class PreprocessCache(torch.utils.data.Dataset):
    """The stage-1/2 cache of `training.preprocess` read as distillation examples.

    Uses the first `latent_frames` latent frames of each clip (window 0: it starts at the portrait,
    whose latent is concatenated as the I2V condition); the empty prompt is `null_text.safetensors`.
    """

    def __init__(
        self,
        root: str | Path,
        latent_frames: int | None = None,
        split: str = "train",
        image_tokens: bool = True,
        rank: int = 0,
        world: int = 1,
    ):
        from training.shards import rank_rows

        self.root = Path(root)
        # process `rank` of `world` reads only its part of the split's manifest shards (disjoint parts)
        part = rank_rows(self.root, split, rank, world)
        self.counts = part.counts  # what the cache holds, per split
        self.files = [self.root / r["file"] for r in part.rows]
        if not self.files and part.total:
            raise FileNotFoundError(f"{root}: the {split} split has {part.total} cached clips, fewer than the "
                                    f"{world} processes; cache more clips or run fewer processes")
        if not self.files:
            raise FileNotFoundError(f"no cached clips of split {split!r} in {root}")
        null = load_state_dict(self.root / "null_text.safetensors")
        self.null = (null["text_tokens"].float(), null["text_mask"].bool(), null["pooled"].float())
        self.latent_frames = latent_frames
        self.image_tokens = image_tokens

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> CondBatch:
        sd = load_state_dict(self.files[i])
        t = sd["latent"].shape[1] if self.latent_frames is None else self.latent_frames
        if sd["latent"].shape[1] < t:
            raise ValueError(f"{self.files[i]} has {sd['latent'].shape[1]} latent frames, fewer than {t}")
        latent = sd["latent"][:, :t].float()
        if "ref_latent" in sd:  # HunyuanVideo-Avatar cache (Whisper windows per video frame)
            return self._avatar_example(sd, latent, t)
        return CondBatch(
            latents=latent,
            txt=sd["text_tokens"].float(),
            txt_mask=sd["text_mask"].bool(),
            pooled=sd["pooled"].float(),
            uncond_txt=self.null[0],
            uncond_txt_mask=self.null[1],
            uncond_pooled=self.null[2],
            # the portrait condition: its latent, or (motion latents) its appearance on the latent grid
            image_latent=(sd["reference_latent"].float() if "reference_latent" in sd else latent[:, :1].clone()),
            image_tokens=sd["image_tokens"].float() if self.image_tokens else None,
            audio=sd["audio"][None, :t].float(),
            speaker_mask=sd["face_tokens"][None, :t].float(),
        )


    def _avatar_example(self, sd: dict[str, torch.Tensor], latent: torch.Tensor, t: int) -> CondBatch:
        """Window 0 of an Avatar clip: the Whisper windows of video frames 0 ... 4t-4 (the sampler's
        `avatar_audio_window`), the portrait latent as `ref_latent`, the face mask; per-clip null text
        (the negative prompt with the clip's portrait) where LLaVA made it."""
        windows = sd["audio"].float()  # [F, 10, layers, width]
        audio = avatar_audio_window(windows.flatten(1)[None], 0, t).reshape(1, -1, *windows.shape[1:])
        null = ((sd["null_text_tokens"].float(), sd["null_text_mask"].bool(), sd["null_pooled"].float())
                if "null_text_tokens" in sd else self.null)
        return CondBatch(
            latents=latent, txt=sd["text_tokens"].float(), txt_mask=sd["text_mask"].bool(), pooled=sd["pooled"].float(),
            uncond_txt=null[0], uncond_txt_mask=null[1], uncond_pooled=null[2],
            image_latent=sd["ref_latent"].float(), audio=audio, speaker_mask=sd["face_tokens"][None, :t].float(),
            ref_latent=sd["ref_latent"].float(),
        )


def check_examples(cfg: DiTConfig, data: torch.utils.data.Dataset) -> str | None:
    """One line when the cache was made for another kind of model than `cfg` (None when they fit)."""
    ex = data[0]
    if cfg.avatar is not None and ex.ref_latent is None:
        return ("this is a HunyuanVideo-Avatar model but the cache has no Whisper windows / ref_latent; make it "
                "with python -m training.preprocess ... --audio-encoder whisper --whisper WHISPER --patch 2 2")
    if cfg.avatar is None and ex.ref_latent is not None:
        return "this cache was made for HunyuanVideo-Avatar (Whisper); make one with the model's own audio encoder"
    if ex.txt.shape[-1] != cfg.text_dim or ex.pooled.shape[-1] != cfg.pooled_dim:
        return (f"the cache's text is {ex.txt.shape[-1]}-dim (pooled {ex.pooled.shape[-1]}) but the model reads "
                f"{cfg.text_dim} ({cfg.pooled_dim}); make the cache with the model's text encoder")
    return None


def open_examples(
    root: str | Path, latent_frames: int | None = None, image_tokens: bool = True, rank: int = 0, world: int = 1
) -> torch.utils.data.Dataset:
    """A preprocess cache (a manifest + null_text.safetensors), the distillation trainer's --data;
    process `rank` of `world` gets its disjoint part of the train split."""
    from training.shards import has_manifest

    root = Path(root)
    if has_manifest(root) and (root / "null_text.safetensors").is_file():
        return PreprocessCache(root, latent_frames, image_tokens=image_tokens, rank=rank, world=world)
    raise FileNotFoundError(
        f"{root} is not a preprocess cache (no manifest.jsonl + null_text.safetensors): make one with "
        "python -m training.preprocess, or use --synthetic N for a smoke run"
    )
