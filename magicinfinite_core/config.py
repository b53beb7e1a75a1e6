"""Model configurations as dataclasses with named presets.

`tiny` runs on a laptop CPU (tests, the embedded demo model); `hunyuan-13b` is the HunyuanVideo-I2V
backbone shape (DESIGN.md §4) with MagicInfinite's audio layers. Model code reads every size from here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

VIDEO_FPS = 25
MAX_OUTPUT_SIDE = 1024  # motion-latent models: the video is the portrait's own size, up to this a side
# motion-latent models: the largest head dead zone (a share of the face's height); above it a clear nod (2-4 %) is held
MAX_HEAD_DEADZONE = 0.1
AUDIO_SAMPLE_RATE = 16_000
TEMPORAL_RATIO = 4  # the causal VAE: frame 0 alone, then one latent frame per 4 video frames


def latent_frames(video_frames: int, ratio: int = TEMPORAL_RATIO) -> int:
    """Latent frames of a causal-VAE clip of `video_frames` frames: 1 + ceil((F-1)/ratio)."""
    if video_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {video_frames}")
    return 1 + -(-(video_frames - 1) // ratio)


@dataclass(frozen=True)
class AudioLayerConfig:
    """Audio projection + per-latent-frame cross-attention (paper §3.2, Eq. 2)."""

    feature_dim: int = 64  # one video frame's feature size (wav2vec2: layers x channels; mel: n_mels)
    frame_window: int = 5  # +-2 video frames around each frame
    frames_per_latent: int = 4  # causal VAE: latent frame k <-> video frames 4k-3..4k
    proj_dim: int = 128  # hidden size of the audio projection MLP
    tokens_per_latent_frame: int = 4  # context tokens each latent frame attends to
    context_dim: int = 128  # size of an audio context token
    num_heads: int = 4
    single_block_every: int = 2  # one audio layer after every 2nd single block


@dataclass(frozen=True)
class AvatarConfig:
    """HunyuanVideo-Avatar's added modules as an option of our DiT (Tencent-Hunyuan/HunyuanVideo-Avatar).

    Why an option and not a fork: the backbone is the same MM-DiT; Avatar adds a reference-latent path
    (`ref_in` + `before_proj`, and the first reference frame prepended as tokens at RoPE time
    `ref_time`), an audio projection of Whisper windows (`audio_proj`), motion / fps embeddings added
    to the vector condition, and single-head perceiver cross-attention adapters after some double
    blocks, gated by the face mask. docs/hunyuan_avatar.md lists where each fact comes from.
    """

    audio_window: int = 10  # Whisper frames per video frame (50 Hz encoder, 25 fps video, +-context)
    audio_layers: int = 5  # Whisper-tiny hidden states stacked: embeddings + 4 encoder layers
    audio_channels: int = 384  # Whisper-tiny width
    audio_hidden: int = 1024  # AudioProjNet2 intermediate size
    tokens_per_frame: int = 4  # audio tokens per video frame (16 per latent frame)
    frames_per_latent: int = 4  # the causal VAE: video frame 0 is repeated to fill latent frame 0
    adapter_dim: int = 1024  # the adapters' single attention head width (to_q / to_kv / to_out)
    adapter_norm_eps: float = 1e-5  # nn.LayerNorm's default, as in the reference adapters
    adapter_after_double: tuple[int, ...] = (1, 3, 5, 7, 9, 11, 13, 15, 17, 19)
    motion_values: int = 4  # motion_exp / motion_pose: 4 scalars each, embedded to hidden/4 and joined
    ref_time: int = -1  # RoPE time of the prepended reference-frame tokens
    # the reference's inputs when a caller gives none (its dataset: expression 30, head pose 25, 25 fps)
    default_motion_exp: float = 30.0
    default_motion_pose: float = 25.0
    default_fps: float = 25.0

    @property
    def audio_feature_dim(self) -> int:
        """One video frame's flattened Whisper window: window x layers x channels (19200 for tiny)."""
        return self.audio_window * self.audio_layers * self.audio_channels


@dataclass(frozen=True)
class DiTConfig:
    hidden_size: int = 128
    num_heads: int = 4
    depth_double: int = 2
    depth_single: int = 2
    mlp_ratio: float = 4.0
    patch_size: tuple[int, int, int] = (1, 2, 2)
    rope_dims: tuple[int, int, int] = (8, 12, 12)  # t | h | w, sums to head_dim
    rope_theta: float = 256.0
    in_channels: int = 9  # noisy latent + first-frame latent + mask (2 * latent + 1)
    out_channels: int = 4
    text_dim: int = 64
    pooled_dim: int = 32
    refiner_depth: int = 2
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    guidance_embed: bool = False
    # Portrait image tokens prepended to the text stream. 0: the text encoder already emits them in
    # `text_dim` (LLaVA in HunyuanVideo-I2V); >0: the model owns a projection from this size.
    image_token_dim: int = 0
    audio: AudioLayerConfig | None = field(default_factory=AudioLayerConfig)
    # Where the portrait latent enters the channel concat: "first_frame" (the paper: latent frame 0 of
    # the video's first window only) or "every_frame" (every latent frame of every window, so windows
    # deep into a long video still see the portrait pixel-aligned; the demo model v2).
    image_condition: str = "first_frame"
    # Add (x_noisy - portrait latent) / sigma to the predicted velocity (models/dit.py
    # add_reference_skip): the blocks learn only what differs from the portrait. Needs every_frame.
    reference_skip: bool = False
    # Below this sigma the skip divides by it instead (a guard against sigma -> 0). In moving regions
    # the skip's error grows like (ref - data) / sigma; the trainer bounds that by weighting the loss
    # (TrainConfig.reference_skip_loss_sigma). A floor of 0.25 bounded it too, but the blocks then had
    # to supply most of the velocity of still regions at low noise and left grain in them.
    reference_skip_min_sigma: float = 0.02
    # Gate the skip per latent cell: the final layer emits one more channel, a logit g, and the skip
    # adds sigmoid(g) * (x_noisy - ref) / sigma. Why: the full skip makes x0 = ref - sigma * blocks, so
    # at low noise a moving region's x0 can follow the noisy input only if the blocks amplify it by
    # 1/sigma, which a small model cannot (measured: the v2 demo's mouth error at sigma 0.05 equals
    # its error at 0.5, so sampling steps never refine); a closed gate is plain velocity prediction.
    reference_gate: bool = False
    # the gate logit's start (fresh models and `models.dit.with_reference_gate`): sigmoid(5) = 0.993, nearly the full skip
    reference_gate_init: float = 5.0
    # Output channels whose rows also get a bias read from the conditioning vector (timestep + pooled text) by a linear
    # layer of their own, the same for every token of a sample. Why: a motion latent's expression channel is one number
    # per frame that the prompt decides (media/expression.py); read from the final tokens alone, a DiT trained without
    # it did not find the prompt's emotion (session 21). Empty: none (`models.dit.with_vec_bias` adds it, zero).
    vec_bias_channels: tuple[int, ...] = ()
    # What that bias reads: "vec" (the conditioning vector, through a SiLU) or "pooled" (the pooled text embedding as
    # given). Why "pooled": a linear readout of the prompt's emotion from the demo's frozen conditioning vector held a
    # third to a half of a training phrasing's value on held-out phrasings; from MiniLM's pooled text, trained on more
    # phrasings, 85-98 % (docs/demo_model.md, session 23).
    vec_bias_input: str = "vec"
    # HunyuanVideo-Avatar's modules (None: not an Avatar model). Needs audio=None and in=out channels.
    avatar: AvatarConfig | None = None
    # Channels of the portrait condition in the I2V concat; 0: the latent's own (the portrait latent).
    # A motion latent (media/motion_autoencoder.py) codes motion, so the portrait's latent is zero and
    # the condition is the portrait's appearance on the latent grid, with its own channel count.
    condition_channels: int = 0
    # What the final layer emits: "velocity" (flow matching's target), or "x0" (the clean latent; the
    # forward still returns the velocity (x - x0) / sigma). Why x0: with a motion latent, "stand still"
    # is x0 = 0, which a zero output gives exactly at every noise level, while a velocity head must
    # reproduce the noisy input x / sigma in still regions (where the demo's flicker came from).
    prediction: str = "velocity"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def latent_channels(self) -> int:
        return self.out_channels

    @property
    def head_channels(self) -> int:
        """Channels the final layer emits per latent cell: the velocity, plus the skip's gate logit."""
        return self.out_channels + int(self.reference_gate)

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if sum(self.rope_dims) != self.head_dim:
            raise ValueError(f"rope_dims {self.rope_dims} must sum to head_dim {self.head_dim}")
        if self.condition_channels < 0:
            raise ValueError(f"condition_channels must be >= 0, got {self.condition_channels}")
        concat = self.out_channels + self.cond_channels + 1
        if self.in_channels not in (self.out_channels, concat):
            raise ValueError(
                f"in_channels {self.in_channels} must be out_channels ({self.out_channels}) or "
                f"out_channels + condition channels + 1 ({concat}) for the I2V latent concat"
            )
        if self.prediction not in ("velocity", "x0"):
            raise ValueError(f"prediction must be 'velocity' or 'x0', got {self.prediction!r}")
        if self.prediction == "x0" and self.reference_skip:
            raise ValueError("prediction 'x0' and reference_skip are two answers to one problem; pick one")
        if self.reference_skip and self.cond_channels != self.out_channels:
            raise ValueError("reference_skip subtracts the portrait latent: condition_channels must be the latent's")

        if self.image_condition not in ("first_frame", "every_frame"):
            raise ValueError(f"image_condition must be 'first_frame' or 'every_frame', got {self.image_condition!r}")
        if self.reference_skip and (self.image_condition != "every_frame" or self.in_channels == self.out_channels):
            raise ValueError("reference_skip needs the every_frame image condition (in_channels = 2*out_channels+1)")
        if self.reference_gate and not self.reference_skip:
            raise ValueError("reference_gate gates the reference skip; set reference_skip too")
        object.__setattr__(self, "vec_bias_channels", tuple(int(c) for c in self.vec_bias_channels))  # JSON gives a list
        if self.vec_bias_input not in ("vec", "pooled"):
            raise ValueError(f"vec_bias_input must be 'vec' or 'pooled', got {self.vec_bias_input!r}")
        if any(not 0 <= c < self.out_channels for c in self.vec_bias_channels):
            raise ValueError(f"vec_bias_channels {list(self.vec_bias_channels)}: outputs are 0..{self.out_channels - 1}")
        if self.avatar is not None:
            if self.audio is not None or self.in_channels != self.out_channels or self.reference_skip:
                raise ValueError(
                    "the avatar option replaces our audio layers and the I2V concat: set audio=None, "
                    "in_channels=out_channels and reference_skip=False"
                )
            if self.hidden_size % self.avatar.motion_values:
                raise ValueError(f"hidden_size {self.hidden_size} is not divisible by motion_values")
            if any(not 0 <= i < self.depth_double for i in self.avatar.adapter_after_double):
                raise ValueError(
                    f"avatar adapters after double blocks {self.avatar.adapter_after_double} but the "
                    f"model has {self.depth_double}"
                )

    @property
    def every_frame_reference(self) -> bool:
        return self.image_condition == "every_frame"

    @property
    def cond_channels(self) -> int:
        """Channels of the portrait condition in the I2V concat."""
        return self.condition_channels or self.out_channels

    @property
    def image_concat(self) -> bool:
        return self.in_channels == self.out_channels + self.cond_channels + 1

    @property
    def image_mode(self) -> str | None:
        """How the portrait enters the DiT's input: 'first_frame' / 'every_frame', None without the I2V concat."""
        return self.image_condition if self.image_concat else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiTConfig:
        d = dict(d)
        audio = d.pop("audio", None)
        avatar = d.pop("avatar", None)
        for key in ("patch_size", "rope_dims"):
            if key in d:
                d[key] = tuple(d[key])
        if avatar:
            avatar = AvatarConfig(**{**avatar, "adapter_after_double": tuple(avatar["adapter_after_double"])})
        return cls(**d, audio=AudioLayerConfig(**audio) if audio else None, avatar=avatar or None)

    def without_audio(self) -> DiTConfig:
        return replace(self, audio=None)


@dataclass(frozen=True)
class VAEConfig:
    """Keyword arguments of diffusers' `AutoencoderKLHunyuanVideo`."""

    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (16, 32, 32, 32)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    spatial_compression_ratio: int = 8
    temporal_compression_ratio: int = 4
    scaling_factor: float = 1.0
    mid_block_add_attention: bool = False
    # Per-frame GroupNorm statistics make the VAE exactly causal (streamed decode == one-shot decode).
    # The published HunyuanVideo VAE normalises over the whole clip, so it is causal only in its convs.
    causal_norm: bool = True

    def diffusers_kwargs(self) -> dict[str, Any]:
        n = len(self.block_out_channels)
        return dict(
            in_channels=3,
            out_channels=3,
            latent_channels=self.latent_channels,
            down_block_types=("HunyuanVideoDownBlock3D",) * n,
            up_block_types=("HunyuanVideoUpBlock3D",) * n,
            block_out_channels=tuple(self.block_out_channels),
            layers_per_block=self.layers_per_block,
            norm_num_groups=self.norm_num_groups,
            scaling_factor=self.scaling_factor,
            spatial_compression_ratio=self.spatial_compression_ratio,
            temporal_compression_ratio=self.temporal_compression_ratio,
            mid_block_add_attention=self.mid_block_add_attention,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VAEConfig:
        d = dict(d)
        d["block_out_channels"] = tuple(d["block_out_channels"])
        return cls(**d)


# The sampling defaults (the paper's settings): the only place they are written. A bundle's own
# recommended settings (bundle.json "sampler" / "distilled") override them per model.
DEFAULT_STEPS = 30
DEFAULT_SHIFT = 7.0
DEFAULT_AUDIO_SCALE = 4.0  # CFG scale of the audio condition (Eq. 7)
DEFAULT_TEXT_SCALE = 3.0  # CFG scale of the text + portrait condition
DEFAULT_CFG_BOUNDARY = 0.75  # sigma >= boundary: two-fold guidance; below: three-fold
DISTILLED_TIMESTEPS = (1000.0, 750.0, 500.0, 250.0)  # the paper's 4-step list (warped by the shift)
DEFAULT_WINDOW = 33  # video frames per sliding window (9 latent frames)
DEFAULT_OVERLAP = 8  # video frames shared by consecutive windows (2 latent frames)

# HunyuanVideo-Avatar's sampler (docs/hunyuan_avatar.md): the defaults of any model with `DiTConfig.avatar`
# (bundle.json "sampler" format). Its windows are 33 latents = 129 video frames; "guidance": "avatar" selects
# `sampling.guidance.DecayingGuidance`. Our seams blend over `overlap` frames and move every step
# (sliding_window.py) where the reference's windows wrap around the video's end (see the doc for why).
AVATAR_SAMPLER = {"steps": 50, "shift": 5.0, "window_frames": 129, "overlap_frames": 8, "guidance": "avatar"}
AVATAR_RESOLUTION = (704, 768)  # (H, W): the reference's 720p-class training size, 16-pixel aligned
# A one-file Avatar model narrower than the real one (tests, tiny workflows) renders at this size instead.
AVATAR_SMALL_RESOLUTION = (64, 64)
AVATAR_SMALL_HIDDEN = 1024  # hidden sizes below this count as "small"


@dataclass(frozen=True)
class SamplerConfig:
    steps: int = DEFAULT_STEPS
    shift: float = DEFAULT_SHIFT
    window_frames: int = DEFAULT_WINDOW
    overlap_frames: int = DEFAULT_OVERLAP
    shift_windows: bool = True  # move window boundaries each step so seams never sit still
    distilled_timesteps: tuple[float, ...] = DISTILLED_TIMESTEPS


# HunyuanVideo-I2V 13B (DESIGN.md §4); HunyuanVideo-Avatar is the same backbone with its own modules.
_HUNYUAN_13B = DiTConfig(
    hidden_size=3072,
    num_heads=24,
    depth_double=20,
    depth_single=40,
    mlp_ratio=4.0,
    patch_size=(1, 2, 2),
    rope_dims=(16, 56, 56),
    rope_theta=256.0,
    in_channels=33,
    out_channels=16,
    text_dim=4096,
    pooled_dim=768,
    refiner_depth=2,
    guidance_embed=False,
    image_token_dim=0,
    audio=AudioLayerConfig(
        feature_dim=12 * 768,  # wav2vec2-base: 12 hidden layers x 768
        frame_window=5,
        frames_per_latent=4,
        proj_dim=1024,
        tokens_per_latent_frame=32,
        context_dim=768,
        num_heads=24,
        single_block_every=2,
    ),
)

DIT_PRESETS: dict[str, DiTConfig] = {
    "tiny": DiTConfig(),
    "hunyuan-13b": _HUNYUAN_13B,
    # HunyuanVideo-Avatar (HYVideo-T/2 + its audio modules): T2V backbone, 16 latent channels in and out,
    # no guidance embedding, LLaVA text with the image token, Whisper-tiny audio.
    "hunyuan-avatar": replace(_HUNYUAN_13B, in_channels=16, audio=None, avatar=AvatarConfig()),
    # The same modules at laptop size (tests, the tiny workflow).
    "tiny-avatar": DiTConfig(
        in_channels=4,
        out_channels=4,
        depth_double=4,
        depth_single=1,
        audio=None,
        avatar=AvatarConfig(
            audio_layers=2, audio_channels=8, audio_hidden=32, adapter_dim=32, adapter_after_double=(1, 3)
        ),
    ),
}

VAE_PRESETS: dict[str, VAEConfig] = {
    "tiny": VAEConfig(),
    "hunyuan": VAEConfig(
        latent_channels=16,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        norm_num_groups=32,
        scaling_factor=0.476986,
        mid_block_add_attention=True,
        causal_norm=False,
    ),
}


def dit_preset(name: str) -> DiTConfig:
    try:
        return DIT_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown DiT preset {name!r}; choose one of {sorted(DIT_PRESETS)}") from None


def vae_preset(name: str) -> VAEConfig:
    try:
        return VAE_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown VAE preset {name!r}; choose one of {sorted(VAE_PRESETS)}") from None
