"""Per-video-frame audio features (one vector per 25 fps frame) behind one small interface.

Why: the DiT's audio cross-attention (paper §3.2) consumes one feature vector per video frame and a
±2-frame window around it; where the vectors come from (wav2vec2 or log-mel) must not matter to it.

* :class:`Wav2Vec2Extractor` - transformers ``Wav2Vec2Model`` loaded from a local HF folder or a single
  ``.safetensors`` file as ComfyUI keeps them in ``models/audio_encoders`` (config inferred from the
  tensor shapes). Output per frame = all transformer layers' hidden states, stacked layer-major and
  flattened (``num_hidden_layers * hidden_size``, 12 x 768 = 9216 for base).
* :class:`MelExtractor` - log-mel (librosa's filters and STFT, in numpy: `mel_filters`), one frame per video frame (hop 640 at 16 kHz).

Time alignment: video frame ``j`` covers samples ``[640 j, 640 (j+1))``; its feature is taken at the
centre of that span. wav2vec2 frames (hop 320, receptive field 400) are linearly interpolated at that
time, so 50 Hz -> 25 fps is an exact time mapping, not a resize - which also makes chunking
seam-free up to the encoder's own context.

Long audio: the waveform is processed in chunks of ``chunk_s`` seconds with ``context_s`` of extra
audio on both sides (features of the context are discarded), so encoder activations are bounded by
the chunk size. The whole-file result is float16 ([F, D]); pass ``out_file=`` to keep it in a
memory-mapped file instead of RAM (1 h of wav2vec2-base features is 1.6 GB in float16).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch

from magicinfinite_core.config import AUDIO_SAMPLE_RATE
from magicinfinite_core.errors import AudioError, CheckpointError
from magicinfinite_core.inputs.audio import LoadedAudio, num_video_frames_for_samples, samples_per_frame

if TYPE_CHECKING:
    from transformers import Wav2Vec2Config

log = logging.getLogger(__name__)


@runtime_checkable
class AudioFeatureExtractor(Protocol):
    """Anything that turns a 16 kHz mono waveform into [num_frames, feature_dim] float16 features."""

    name: str
    feature_dim: int

    def extract(self, waveform: np.ndarray, num_frames: int | None = None) -> torch.Tensor: ...


def _fit(waveform: np.ndarray, n: int) -> np.ndarray:
    w = np.asarray(waveform, dtype=np.float32).reshape(-1)
    if w.shape[0] >= n:
        return w[:n]
    return np.concatenate([w, np.zeros(n - w.shape[0], np.float32)])


class ChunkedExtractor:
    """Shared chunking: features for frames [a, b) are computed from audio [a - ctx, b + ctx)."""

    name = "chunked"
    feature_dim = 0
    sample_rate = AUDIO_SAMPLE_RATE

    def __init__(self, chunk_s: float, context_s: float) -> None:
        spf = samples_per_frame(self.sample_rate)
        fps = self.sample_rate // spf
        self.chunk_frames = max(1, int(round(chunk_s * fps)))
        self.context_frames = max(0, int(round(context_s * fps)))
        self.spf = spf

    def _prepare(self, waveform: np.ndarray) -> Any:
        """Whole-file statistics computed once (e.g. normalisation); passed to every chunk."""
        return None

    def _frames(self, segment: np.ndarray, num_frames: int, state: Any) -> torch.Tensor:
        """[num_frames, D] float32 features for a segment of exactly num_frames * spf samples."""
        raise NotImplementedError

    def extract(
        self,
        waveform: np.ndarray | LoadedAudio,
        num_frames: int | None = None,
        *,
        out_file: str | Path | None = None,
    ) -> torch.Tensor:
        """Features [num_frames, feature_dim] float16, one row per 25 fps video frame.

        ``num_frames`` defaults to round(duration * 25); audio is zero-padded/cut to fit it exactly.
        ``out_file`` stores the result in a memory-mapped float16 file (for hour-long audio).
        """
        if isinstance(waveform, LoadedAudio):
            if waveform.sample_rate != self.sample_rate:
                raise AudioError(f"features need {self.sample_rate} Hz audio; load it with load_audio()")
            num_frames = waveform.num_frames if num_frames is None else num_frames
            waveform = waveform.waveform
        w = np.asarray(waveform)
        if w.ndim != 1:
            raise AudioError(
                f"expected a mono waveform [samples], got shape {tuple(w.shape)}; use load_audio()"
            )
        if not np.isfinite(w).all():
            raise AudioError("waveform contains NaN or infinite samples; reload it with load_audio()")
        if num_frames is None:
            num_frames = num_video_frames_for_samples(w.shape[0], self.sample_rate)
        if num_frames < 1:
            raise AudioError("audio is shorter than one video frame (40 ms); use at least 40 ms of audio")
        w = _fit(w, num_frames * self.spf)
        state = self._prepare(w)
        if out_file is not None:
            out_file = Path(out_file)
            out_file.parent.mkdir(parents=True, exist_ok=True)
            mm = np.lib.format.open_memmap(
                out_file, mode="w+", dtype=np.float16, shape=(num_frames, self.feature_dim)
            )
            out = torch.from_numpy(mm)
        else:
            out = torch.empty(num_frames, self.feature_dim, dtype=torch.float16)
        ctx = self.context_frames
        for start in range(0, num_frames, self.chunk_frames):
            end = min(num_frames, start + self.chunk_frames)
            a, b = max(0, start - ctx), min(num_frames, end + ctx)
            feats = self._frames(w[a * self.spf : b * self.spf], b - a, state)
            out[start:end] = feats[start - a : end - a].to(torch.float16)
        if out_file is not None:
            mm.flush()
        return out

    def silence(self, num_frames: int) -> torch.Tensor:
        """Features of silent (all-zero) audio: what a speaker who is not talking contributes."""
        return self.extract(np.zeros(num_frames * self.spf, np.float32), num_frames)


# ------------------------------------------------------------------------------------------------ mel


class MelExtractor(ChunkedExtractor):
    """Natural-log mel spectrogram, one frame per video frame (window centred on the frame's span).

    Why: the embedded demo model cannot ship wav2vec2 weights (none on PyPI); log-mel needs none.
    ``feature_dim = n_mels`` (default 64 = the tiny DiT preset's ``AudioLayerConfig.feature_dim``).
    Values are ``ln(max(mel_power, 1e-5))``; no per-file normalisation, so chunking is exact.
    """

    name = "mel"

    def __init__(
        self,
        n_mels: int = 64,
        n_fft: int = 1024,
        fmin: float = 0.0,
        fmax: float = 8000.0,
        chunk_s: float = 60.0,
        context_s: float = 0.2,
    ) -> None:
        super().__init__(chunk_s, context_s)
        if n_fft < self.spf:
            raise AudioError(f"n_fft {n_fft} must be >= {self.spf} samples (one video frame)")
        self.n_mels = int(n_mels)
        self.n_fft = int(n_fft)
        self.feature_dim = self.n_mels
        from magicinfinite_core.inputs.mel_filters import mel_filter_bank  # librosa's numbers without librosa

        self._mel_basis = mel_filter_bank(self.sample_rate, self.n_fft, self.n_mels, fmin, fmax)
        self._window = np.hanning(self.n_fft + 1)[:-1].astype(np.float32)

    def _frames(self, segment: np.ndarray, num_frames: int, state: Any) -> torch.Tensor:
        from magicinfinite_core.inputs.mel_filters import power_frames

        # Centre frame j at sample 640 j + 320: pad so frame j's window starts at 640 j - (n_fft/2 - 320).
        left = self.n_fft // 2 - self.spf // 2
        right = self.n_fft - self.spf - left
        padded = np.pad(np.asarray(segment, dtype=np.float32), (left, right))
        power = power_frames(padded, self.n_fft, self.spf, self._window)[:, :num_frames]
        mel = self._mel_basis @ power  # [n_mels, F]
        return torch.from_numpy(np.log(np.maximum(mel, 1e-5)).T.copy())


# -------------------------------------------------------------------------------------------- wav2vec2

_PREFIXES = ("wav2vec2.", "model.wav2vec2.", "audio_encoder.", "model.")
_KNOWN_TOP = ("feature_extractor.", "feature_projection.", "encoder.", "masked_spec_embed", "adapter.")


def _strip_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop ComfyUI/ForCTC prefixes (``wav2vec2.``) and heads (lm_head, quantizer, project_q ...)."""
    if not any(k.startswith("encoder.") or k.startswith("feature_extractor.") for k in sd):
        for p in _PREFIXES:
            if any(k.startswith(p + "feature_extractor.") for k in sd):
                sd = {k[len(p) :]: v for k, v in sd.items() if k.startswith(p)}
                break
    kept = {k: v for k, v in sd.items() if k.startswith(_KNOWN_TOP)}
    dropped = sorted(set(sd) - set(kept))
    if dropped:
        log.info("ignoring %d non-encoder tensors (e.g. %s)", len(dropped), dropped[:3])
    # Old torch weight_norm names -> parametrization names used by current transformers.
    out = {}
    for k, v in kept.items():
        k = k.replace("pos_conv_embed.conv.weight_g", "pos_conv_embed.conv.parametrizations.weight.original0")
        k = k.replace("pos_conv_embed.conv.weight_v", "pos_conv_embed.conv.parametrizations.weight.original1")
        out[k] = v
    return out


def infer_wav2vec2_config(
    sd: dict[str, torch.Tensor], overrides: dict[str, Any] | None = None
) -> Wav2Vec2Config:
    """Build a ``Wav2Vec2Config`` from state-dict shapes (prefix-free keys).

    Shapes give hidden size, layer count, FFN size, conv channels/kernels, positional conv kernel and
    groups, conv bias and norm type. Not in the shapes, so inferred by convention (override when a
    checkpoint breaks it): heads = hidden / 64 (base 12, large 16); conv stride 5 for kernel 10 else 2;
    ``do_stable_layer_norm`` (pre-LN) iff the conv layers use LayerNorm (true for all lv60/XLSR
    "large" models, false for base), as ComfyUI also assumes.
    """
    from transformers import Wav2Vec2Config

    def need(key: str) -> torch.Tensor:
        if key not in sd:
            raise CheckpointError(
                f"this does not look like a wav2vec2 checkpoint (missing {key!r}); use a wav2vec2 "
                "file from models/audio_encoders, e.g. wav2vec2-chinese-base_fp16.safetensors"
            )
        return sd[key]

    hidden = int(need("encoder.layer_norm.weight").shape[0])
    layer_ids = {int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")}
    if not layer_ids:
        raise CheckpointError("wav2vec2 checkpoint has no encoder.layers.*; the file is incomplete")
    n_layers = max(layer_ids) + 1
    inter = int(need("encoder.layers.0.feed_forward.intermediate_dense.weight").shape[0])
    conv_ids = sorted({int(k.split(".")[2]) for k in sd if k.startswith("feature_extractor.conv_layers.")})
    conv_dim, conv_kernel = [], []
    for i in conv_ids:
        w = need(f"feature_extractor.conv_layers.{i}.conv.weight")
        conv_dim.append(int(w.shape[0]))
        conv_kernel.append(int(w.shape[2]))
    conv_stride = [5 if k >= 10 else 2 for k in conv_kernel]
    per_layer_norm = "feature_extractor.conv_layers.1.layer_norm.weight" in sd
    feat_norm = "layer" if per_layer_norm else "group"
    conv_bias = "feature_extractor.conv_layers.0.conv.bias" in sd
    pos_v = need("encoder.pos_conv_embed.conv.parametrizations.weight.original1")
    pos_kernel = int(pos_v.shape[2])
    pos_groups = max(1, hidden // int(pos_v.shape[1]))
    cfg: dict[str, Any] = dict(
        hidden_size=hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=inter,
        conv_dim=tuple(conv_dim),
        conv_kernel=tuple(conv_kernel),
        conv_stride=tuple(conv_stride),
        conv_bias=conv_bias,
        feat_extract_norm=feat_norm,
        do_stable_layer_norm=feat_norm == "layer",
        num_conv_pos_embeddings=pos_kernel,
        num_conv_pos_embedding_groups=pos_groups,
    )
    cfg.update(overrides or {})
    return Wav2Vec2Config(**cfg)


class _FixedStatsGroupNorm(torch.nn.Module):
    """A per-channel GroupNorm that uses precomputed (whole-file) statistics and the original affine."""

    def __init__(self, gn: torch.nn.GroupNorm, mean: torch.Tensor, var: torch.Tensor) -> None:
        super().__init__()
        self.gn = gn
        self.mean, self.var = mean, var

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [B, C, T]
        mean = self.mean.to(x)[None, :, None]
        inv = torch.rsqrt(self.var.to(x) + self.gn.eps)[None, :, None]
        y = (x - mean) * inv
        if self.gn.affine:
            y = y * self.gn.weight[None, :, None] + self.gn.bias[None, :, None]
        return y


class Wav2Vec2Extractor(ChunkedExtractor):
    """All hidden layers of a wav2vec2 encoder, interpolated 50 Hz -> 25 fps.

    Use :meth:`from_path` (HF folder or single safetensors). ``do_normalize`` (zero-mean/unit-variance
    input, as Wav2Vec2FeatureExtractor does) uses whole-file statistics so chunks agree with each other.
    Defaults: 20 s chunks + 2 s context on each side (base on CPU: ~0.3 GB of activations).
    """

    name = "wav2vec2"

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        do_normalize: bool = False,
        chunk_s: float = 20.0,
        context_s: float = 2.0,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(chunk_s, context_s)
        self.model = model.to(device=device, dtype=dtype).eval()
        cfg = model.config
        self.do_normalize = do_normalize
        self.num_layers = int(cfg.num_hidden_layers)
        self.hidden_size = int(cfg.hidden_size)
        self.feature_dim = self.num_layers * self.hidden_size
        self.device = torch.device(device)
        self.dtype = dtype
        # hop and receptive field of the conv feature encoder, in samples
        self.hop = int(np.prod(cfg.conv_stride))
        rf = 1
        for k, s in zip(reversed(cfg.conv_kernel), reversed(cfg.conv_stride), strict=True):
            rf = (rf - 1) * s + k
        self.receptive_field = rf

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        *,
        config_overrides: dict[str, Any] | None = None,
        do_normalize: bool | None = None,
        **kwargs: Any,
    ) -> Wav2Vec2Extractor:
        """Load from a HF folder (config.json + weights) or one ``.safetensors`` file (ComfyUI style).

        For a single file the config is inferred from tensor shapes; a ``<stem>.json`` config beside it,
        if present, wins. ``do_normalize`` defaults to preprocessor_config.json when present, else to
        the convention ComfyUI uses (large/layer-norm models: True, base: False).
        """
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        path = Path(path)
        if not path.exists():
            raise CheckpointError(
                f"wav2vec2 model {str(path)!r} not found; put it in ComfyUI/models/audio_encoders"
            )
        if path.is_dir():
            if not (path / "config.json").exists():
                raise CheckpointError(
                    f"{path} has no config.json; point to a HF wav2vec2 folder or a .safetensors file"
                )
            try:
                model = Wav2Vec2Model.from_pretrained(
                    str(path), local_files_only=True, torch_dtype=torch.float32
                )
            except (OSError, ValueError) as e:
                raise CheckpointError(f"cannot load wav2vec2 from {path}: {e}") from e
            if config_overrides:
                raise CheckpointError(
                    "config_overrides only apply to single-file checkpoints; edit config.json"
                )
            pre = path / "preprocessor_config.json"
            if do_normalize is None and pre.exists():
                do_normalize = bool(json.loads(pre.read_text()).get("do_normalize", False))
        else:
            if path.suffix != ".safetensors":
                raise CheckpointError(
                    f"{path.name}: only .safetensors weights are loaded (never pickles); convert the file"
                )
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                sd = load_file(str(path))
            except (SafetensorError, OSError, ValueError) as e:
                raise CheckpointError(
                    f"{path.name} is not a readable safetensors file ({e}); download it again"
                ) from e
            sd = _strip_prefix(sd)
            side = path.with_suffix(".json")
            if side.exists():
                cfg = Wav2Vec2Config(**{**json.loads(side.read_text()), **(config_overrides or {})})
            else:
                cfg = infer_wav2vec2_config(sd, config_overrides)
            model = Wav2Vec2Model(cfg)
            sd = {k: v.float() for k, v in sd.items()}
            missing, unexpected = model.load_state_dict(sd, strict=False)
            missing = [k for k in missing if k != "masked_spec_embed"]
            if missing or unexpected:
                raise CheckpointError(
                    f"{path.name} does not fit the inferred wav2vec2 config (missing {missing[:4]}, "
                    f"unexpected {unexpected[:4]}); put a config .json with the same name beside it"
                )
        if do_normalize is None:
            do_normalize = model.config.feat_extract_norm == "layer"
        return cls(model, do_normalize=do_normalize, **kwargs)

    def _prepare(self, waveform: np.ndarray) -> Any:
        norm = None
        if self.do_normalize:
            mean = float(waveform.mean(dtype=np.float64))
            std = float(waveform.std(dtype=np.float64))
            norm = (mean, math.sqrt(std * std + 1e-7))
        return norm, self._group_norm_stats(waveform, norm)

    @torch.inference_mode()
    def _group_norm_stats(self, waveform: np.ndarray, norm: tuple[float, float] | None):
        """Whole-file mean/var of the first conv layer's output for base ("group" norm) models.

        Why: that GroupNorm normalises each channel over the whole input's time axis, so per-chunk
        statistics would make every chunk sound different. The conv is local, so we stream it.
        """
        layer = self.model.feature_extractor.conv_layers[0]
        if not isinstance(getattr(layer, "layer_norm", None), torch.nn.GroupNorm):
            return None
        conv = layer.conv
        k, st = conv.kernel_size[0], conv.stride[0]
        n_out = (max(waveform.shape[0], k) - k) // st + 1
        step = st * 16000  # output positions per pass * stride
        total = torch.zeros(conv.out_channels, dtype=torch.float64)
        total_sq = torch.zeros_like(total)
        for s0 in range(0, n_out * st, step):
            x = waveform[s0 : s0 + step + k - st]
            if x.shape[0] < k:
                x = np.pad(x, (0, k - x.shape[0]))
            if norm is not None:
                x = (x - norm[0]) / norm[1]
            inp = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None].to(
                self.device, self.dtype
            )
            y = conv(inp)[0].double().cpu()  # [C, n]
            total += y.sum(dim=1)
            total_sq += (y * y).sum(dim=1)
        mean = total / n_out
        var = (total_sq / n_out - mean * mean).clamp_min(0)
        return mean.float(), var.float()

    @torch.inference_mode()
    def _frames(self, segment: np.ndarray, num_frames: int, state: Any) -> torch.Tensor:
        norm, gn_stats = state
        x = segment
        if norm is not None:
            x = (x - norm[0]) / norm[1]
        if x.shape[0] < self.receptive_field:  # too short for one wav2vec2 frame: pad with silence
            x = np.pad(x, (0, self.receptive_field - x.shape[0]))
        inp = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None].to(self.device, self.dtype)
        layer0 = self.model.feature_extractor.conv_layers[0]
        original = getattr(layer0, "layer_norm", None)
        if gn_stats is not None:
            layer0.layer_norm = _FixedStatsGroupNorm(original, *gn_stats)
        try:
            out = self.model(inp, output_hidden_states=True)
        finally:
            if gn_stats is not None:
                layer0.layer_norm = original
        hs = torch.stack(out.hidden_states[1:], dim=0)[:, 0].float()  # [L, T50, C]
        t50 = hs.shape[1]
        centres = (torch.arange(num_frames, dtype=torch.float64) + 0.5) * self.spf
        pos = ((centres - self.receptive_field / 2) / self.hop).clamp(0, t50 - 1)
        lo = pos.floor().long().clamp(max=t50 - 1)
        hi = (lo + 1).clamp(max=t50 - 1)
        wgt = (pos - lo.double()).float().to(hs.device)[None, :, None]
        feats = hs[:, lo] * (1 - wgt) + hs[:, hi] * wgt  # [L, F, C]
        return feats.permute(1, 0, 2).reshape(num_frames, -1).cpu()


# ------------------------------------------------------------------------------------------- helpers


def load_extractor(spec: str | Path, **kwargs: Any) -> ChunkedExtractor | WhisperExtractor:
    """``"mel"`` -> MelExtractor; a Whisper folder or file (`is_whisper`) -> WhisperExtractor; anything
    else is a wav2vec2 path (folder or .safetensors)."""
    if str(spec) == "mel":
        return MelExtractor(**kwargs)
    if is_whisper(spec):
        return WhisperExtractor.from_path(spec, **kwargs)
    return Wav2Vec2Extractor.from_path(spec, **kwargs)


def frame_windows(
    features: torch.Tensor, window: int = 5, start: int = 0, end: int | None = None
) -> torch.Tensor:
    """[F, D] -> [end - start, window, D]: each frame with its ±window//2 neighbours, edges clamped.

    Why: the audio projection sees a short context around every frame (paper §3.2). ``start/end``
    select a frame range (sliding-window sampling) without materialising 5x the whole file.
    """
    if features.ndim != 2:
        raise AudioError(f"features must be [frames, dim], got shape {tuple(features.shape)}")
    if window < 1 or window % 2 == 0:
        raise AudioError(f"window must be a positive odd number of frames, got {window}")
    f = features.shape[0]
    if f == 0:
        raise AudioError("no feature frames; the audio is shorter than one video frame")
    end = f if end is None else end
    if not 0 <= start < end <= f:
        raise AudioError(f"frame range [{start}, {end}) is outside 0..{f}")
    half = window // 2
    idx = torch.arange(start, end)[:, None] + torch.arange(-half, half + 1)[None]
    return features[idx.clamp_(0, f - 1)]


def extract_speaker_features(
    tracks: list[LoadedAudio], extractor: AudioFeatureExtractor, num_frames: int | None = None
) -> torch.Tensor:
    """K equal-length feature streams [K, F, D] float16 (shorter tracks padded with silence features).

    Why: each speaker's stream drives only their own face mask; a speaker who has stopped talking
    must look like silence, not like an index error.
    """
    if not tracks:
        raise AudioError("no speaker tracks; connect one audio input per speaker")
    if num_frames is None:
        num_frames = max(t.num_frames for t in tracks)
    feats = []
    for t in tracks:
        n = max(num_frames * samples_per_frame(t.sample_rate), t.num_samples)
        w = _fit(t.waveform, n)
        feats.append(extractor.extract(w, num_frames))
    return torch.stack(feats, dim=0)


# ------------------------------------------------------------------------------------------- Whisper

WHISPER_LEAD_FRAMES = 4  # zero encoder frames put in front (HunyuanVideo-Avatar's encode_audio)
WHISPER_FRAMES_PER_VIDEO_FRAME = 2  # 50 Hz encoder frames, 25 fps video
WHISPER_WINDOW = 10  # encoder frames each video frame sees
WHISPER_CHUNK_SAMPLES = 30 * AUDIO_SAMPLE_RATE  # Whisper encodes 30 s (3000 mel frames) at a time


def whisper_frame_windows(hidden: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Stacked encoder hidden states [N, layers, C] (50 Hz) -> per-video-frame windows [F, 10, layers, C].

    The Avatar windowing: 4 zero frames in front, then video frame f takes the 10 encoder frames that
    start at 2f. Frames past the end of the audio read zeros (the reference stops at 400 frames and 30 s;
    here any length works, the hidden states of consecutive 30 s chunks simply follow one another).
    """
    if hidden.ndim != 3:
        raise AudioError(f"Whisper hidden states must be [frames, layers, channels], got {tuple(hidden.shape)}")
    need = WHISPER_FRAMES_PER_VIDEO_FRAME * (num_frames - 1) + WHISPER_WINDOW
    lead = hidden.new_zeros(WHISPER_LEAD_FRAMES, *hidden.shape[1:])
    tail = hidden.new_zeros(max(0, need - WHISPER_LEAD_FRAMES - hidden.shape[0]), *hidden.shape[1:])
    padded = torch.cat([lead, hidden, tail], dim=0)
    idx = torch.arange(num_frames)[:, None] * WHISPER_FRAMES_PER_VIDEO_FRAME + torch.arange(WHISPER_WINDOW)
    return padded[idx]


class WhisperExtractor:
    """HunyuanVideo-Avatar's audio features: a Whisper encoder (transformers `WhisperModel`) from a
    local folder, all hidden states stacked, windowed by `whisper_frame_windows`.

    Output per video frame: the flattened window, 10 x layers x width (whisper-tiny: 10 x 5 x 384 =
    19200 = `AvatarConfig.audio_feature_dim`). Long audio is encoded 30 s at a time (Whisper's own
    input length), so there is no length cap.
    """

    name = "whisper"

    def __init__(self, model: Any, feature_extractor: Any, device: str | torch.device = "cpu") -> None:
        self.encoder = model.get_encoder() if hasattr(model, "get_encoder") else model
        self.encoder.eval().to(device)
        self.features = feature_extractor
        self.device = device
        cfg = self.encoder.config
        self.layers, self.width = cfg.encoder_layers + 1, cfg.d_model
        self.feature_dim = WHISPER_WINDOW * self.layers * self.width

    @classmethod
    def from_path(cls, path: str | Path, device: str | torch.device = "cpu") -> WhisperExtractor:
        """A transformers folder (config.json + safetensors), or one ``.safetensors`` file as ComfyUI keeps
        it in models/audio_encoders (config inferred from the shapes, `whisper_encoder_from_file`)."""
        from transformers import WhisperFeatureExtractor, WhisperModel

        path = Path(path)
        if path.is_file() and path.suffix == ".safetensors":
            encoder = whisper_encoder_from_file(path)
            return cls(encoder, WhisperFeatureExtractor(feature_size=encoder.config.num_mel_bins), device)
        if not (path / "config.json").is_file():
            raise CheckpointError(
                f"{path}: not a Whisper folder (no config.json); put the transformers folder of "
                "openai/whisper-tiny in ComfyUI/models/audio_encoders/whisper-tiny"
            )
        model = WhisperModel.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
        return cls(model, WhisperFeatureExtractor.from_pretrained(str(path), local_files_only=True), device)

    @torch.no_grad()
    def hidden_states(self, waveform: np.ndarray) -> torch.Tensor:
        """16 kHz waveform -> stacked hidden states [N, layers, width] at 50 Hz, 30 s chunks in sequence."""
        w = np.asarray(waveform, dtype=np.float32).reshape(-1)
        out = []
        for start in range(0, max(len(w), 1), WHISPER_CHUNK_SAMPLES):
            mel = self.features(w[start : start + WHISPER_CHUNK_SAMPLES], sampling_rate=AUDIO_SAMPLE_RATE,
                                return_tensors="pt").input_features
            hs = self.encoder(mel.to(self.device, self.encoder.dtype), output_hidden_states=True).hidden_states
            out.append(torch.stack(hs, dim=2)[0].float().cpu())
        return torch.cat(out, dim=0)

    def extract(self, waveform: np.ndarray, num_frames: int | None = None) -> torch.Tensor:
        """[F, 10 * layers * width] float16; F defaults to the audio's length in 25 fps frames."""
        if num_frames is None:
            num_frames = max(1, len(np.asarray(waveform).reshape(-1)) // samples_per_frame(AUDIO_SAMPLE_RATE))
        windows = whisper_frame_windows(self.hidden_states(waveform), num_frames)
        return windows.reshape(num_frames, -1).half()

    def windows(self, waveform: np.ndarray, num_frames: int | None = None) -> torch.Tensor:
        """The same features as [F, 10, layers, width] (what the Avatar audio projection takes)."""
        return self.extract(waveform, num_frames).reshape(-1, WHISPER_WINDOW, self.layers, self.width)


WHISPER_ENCODER_PREFIXES = ("model.encoder.", "encoder.", "")  # ForConditionalGeneration, WhisperModel, bare


def is_whisper(path: str | Path) -> bool:
    """A transformers folder whose config says "whisper", or a safetensors file holding a Whisper encoder."""
    p = Path(path)
    if p.is_dir():
        try:
            return json.loads((p / "config.json").read_text()).get("model_type") == "whisper"
        except (OSError, ValueError):
            return False
    if p.is_file() and p.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(p), framework="pt") as f:
                keys = list(f.keys())
        except Exception:  # noqa: BLE001 - not readable as safetensors: not Whisper (the caller's loader says why)
            return False
        return any(k.endswith("conv1.weight") and k[: -len("conv1.weight")] in WHISPER_ENCODER_PREFIXES for k in keys)
    return False


def whisper_encoder_from_file(path: str | Path) -> Any:
    """transformers' `WhisperEncoder` from one safetensors file, its config read off the tensor shapes.

    Not in the shapes, so by Whisper's convention: heads = d_model / 64 (tiny 6 ... large 20). Decoder
    tensors are ignored (named in the log); a missing or misshapen encoder tensor is an error.
    """
    from safetensors.torch import load_file
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    sd = load_file(str(path))
    prefix = next((p for p in WHISPER_ENCODER_PREFIXES if p + "conv1.weight" in sd), None)
    if prefix is None:
        raise CheckpointError(f"{path}: no Whisper encoder inside (no 'encoder.conv1.weight'); use openai/whisper-tiny")
    enc = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    dropped = len(sd) - len(enc)
    if dropped:
        log.info("%s: ignoring %d tensors outside the Whisper encoder", path, dropped)
    try:
        d_model, mels = enc["conv1.weight"].shape[:2]
        layers = 1 + max(int(k.split(".")[1]) for k in enc if k.startswith("layers."))
        cfg = WhisperConfig(d_model=d_model, num_mel_bins=mels, encoder_layers=layers, decoder_layers=1,
                            encoder_attention_heads=d_model // 64 or 1, decoder_attention_heads=d_model // 64 or 1,
                            encoder_ffn_dim=enc["layers.0.fc1.weight"].shape[0],
                            max_source_positions=enc["embed_positions.weight"].shape[0])
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: not a Whisper encoder we can read (no {e} to size it from); "
                              "use openai/whisper-tiny") from None
    model = WhisperEncoder(cfg)
    own = model.state_dict()
    missing = sorted(set(own) - set(enc))
    unexpected = sorted(set(enc) - set(own))
    wrong = sorted(k for k in set(own) & set(enc) if own[k].shape != enc[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path}: not a Whisper encoder we can read ({len(missing)} missing e.g. {missing[:2]}, "
            f"{len(unexpected)} unexpected e.g. {unexpected[:2]}, {len(wrong)} wrong-shaped e.g. {wrong[:2]})"
        )
    model.load_state_dict(enc, strict=True)
    return model.eval()
