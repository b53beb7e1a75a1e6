"""A motion autoencoder: a frame's latent is how the portrait moves to make it, not what it looks like.

Why: in a latent that codes appearance (the patch autoencoder), the same 2 px jaw drop is a different
latent change for every face, so a small DiT cannot carry motion over to a face it never saw, and what
it adds is noise (docs/demo_model.md). Here a latent cell holds

* ``flow``: the mean backward displacement (output pixel -> portrait pixel) of that cell, in pixels
  of the working grid - the same numbers for every face that opens its jaw the same way;
* ``residual``: a few PCA components of what the warp cannot make in that cell (mouth interior,
  teeth, shading), fitted by `training/fit_motion_autoencoder.py`.

Decoding warps the **full-resolution** portrait by the bilinearly upsampled field and adds the
upsampled residual, so the output has the photograph's own resolution and detail whatever the latent
grid. The grid covers a region of the picture (`MotionReference.box`, framed around the faces by
`inputs/framing.py`); the field and residual fade to zero over the region's outer cell, so the rest of
the picture stays still and the join cannot be seen.

Time grid: exactly HunyuanVideo's causal one. Latent frame k >= 1 holds the codes of frames
4k-3..4k (one slot per frame); latent frame 0 holds frame 0's code in every slot, so a still video
(all zeros) has all latent frames equal and "copy the portrait" is the zero latent. Encoding is causal:
a latent frame depends on its own frames and the portrait only. With `flow_smoothing` 0 every frame is
decoded from its own slot alone; with smoothing on (the demo: 1 frame) a frame also reads up to three
neighbouring slots each way, so decoders take one latent frame of look-ahead (`decode_lookahead`: a
streamed video's frames 4k-3..4k wait for latent frame k+1) and enough left context. Either way chunked
decode equals one-shot decode exactly (tested on both).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from magicinfinite_core.cancellation import check_cancelled
from magicinfinite_core.config import latent_frames
from magicinfinite_core.inputs.face_parts import find_mouth
from magicinfinite_core.media.expression import MouthCorners, corner_lift, draw_lift
from magicinfinite_core.media.mouth_opening import LUMA, LipSeam, open_lips, paint_mouth
from magicinfinite_core.media.patch_autoencoder import patchify, unpatchify
from magicinfinite_core.media.rigid_face import RigidFace, head_share_kept, hold_head, hold_rigid

KIND = "motion"
# Frames warped at once by `decode`, as output pixels (4 M: 16 frames at 512x512, one at 2048x2048).
# Why a bound: a decode chunk of 32 frames at 4096x4096 warped in one call held ~20 GB of sampling
# grids and copies and could not be interrupted for minutes (cancellation.py).
DECODE_BATCH_PIXELS = 4 * 2**20


# decode settings that are a share or an opacity (0..1; `limits.check_vae_config` holds a bundle.json to that)
SHARE_SETTINGS = ("mouth_opening", "open_mouth_opening", "mouth_teeth", "mouth_tongue", "rigid_upper_face", "rigid_brows",
                  "expression_gain")


@dataclass(frozen=True)
class MotionAutoencoderConfig:
    cell: int = 8  # working-grid pixels per latent cell, each side
    working_size: int = 128  # the region's side on the working grid (flows are measured there)
    residual_channels: int = 4  # PCA components of one frame's residual cell (3 * cell**2 values)
    reference_subcells: int = 4  # the DiT's portrait condition: mean colours of sub x sub parts per cell
    temporal_compression_ratio: int = 4
    flow_scale: float = 1.0  # latent units per working-grid pixel of displacement
    # Encode: a cell keeps its measured flow only if warping explains it better than standing still
    # by this mean absolute error ([-1, 1] units; 0.01 ~ 1.3 grey levels). Why: optical flow in flat
    # or unchanged regions is noise (0.65 px mean in still heads' upper faces), which a DiT learns
    # and then draws as flicker on textured faces.
    still_gate: float = 0.01
    # Encode: the finest pyramid level of OpenCV's DIS optical flow (its MEDIUM preset stops at 1, half the
    # working size; 0 is the working size itself). Why: at half size DIS catches 59 % of a smile's motion at the
    # mouth corners and 74 % of a frown's (the world's exact fields as truth, 8 px cell means), at full size 87 %
    # and 89 %, for about three times the time (measured in session 20). Encoding only: the DiT never runs it.
    flow_finest_level: int = 1
    # Decode: shrink every cell's flow towards zero by this many working-grid pixels (a soft dead
    # zone). Why: the encoder gives standing-still cells exactly zero flow, so a DiT's sub-threshold
    # flow is its sampling noise; at a 512 px output 0.15 working px of jitter moves glasses' edges by
    # several grey levels. Per frame, so chunked decode stays exact. 0: off.
    flow_deadzone: float = 0.0
    # Decode: a Gaussian of this many frames (sigma) over each cell's flow in time, before the dead
    # zone, reaching at most one latent frame's worth of frames (temporal ratio - 1) each way. Why: a
    # DiT's flow jitters from frame to frame where the data's does not (the demo v4 on still heads:
    # 0.23 px inside a latent frame, 0.63 px across latent frames, training clips 0.02), and that
    # jitter is the upper face's flicker (sigma 1: Grace Hopper 5.1 -> 2.9 grey levels). Chunked
    # decoders give it one latent frame of look-ahead and enough left context (`decode_lookahead`,
    # `decode_min_context`), so they still equal one-shot decode. 0: off.
    flow_smoothing: float = 0.0
    # Decode: how much of the residual code to add (1: all, 0: the warp alone). Why a knob: the demo
    # v4 DiT's residual predictions are poorer than its flow (dark smudges on the chin, stripes on
    # flat backgrounds, measured), and the warp alone keeps the photograph clean.
    residual_gain: float = 1.0
    residual_scale: float = 1.0  # latent units per unit of residual PCA code
    # Decode: share of the stretch across a closed mouth's lips that opens them at the seam face mesh
    # found (media/mouth_opening.py), the rest staying spread over lips and chin. Why: bilinear
    # upsampling spreads a jaw drop over a whole cell, so lips stretch but never part. 0: off (the
    # reference needs `seams` too; references without them decode as before).
    mouth_opening: float = 0.0
    # Decode: the same for a mouth that is open in the portrait (an open smile), at its lower inner lip
    # (`LipSeam.open`). Why: the warp alone stretched the teeth and the mouth never opened further (the
    # demo v8.2's open smile: mouth darkness against the voice r -0.56). 0: off.
    open_mouth_opening: float = 0.0
    # Decode: opacity of the upper teeth drawn at the top of a closed mouth's opening (`mouth_opening`;
    # media/mouth_opening.py: lit like the philtrum's skin). Why: a flat dark slit reads as a gap, not a
    # mouth. 0: a dark opening only.
    mouth_teeth: float = 0.0
    # Decode: opacity of the tongue drawn at the bottom of a wide opening (`mouth_opening` or
    # `open_mouth_opening`; media/mouth_opening.py: the lower lip's colour in the mouth's shade). Why: a wide
    # opening drawn all dark read as a hole. 0: none (the reference's seams need the lip's colour too).
    mouth_tongue: float = 0.0
    # Decode: share of each face's upper part (the face oval above the nose's bottom, found by face mesh)
    # whose flow is replaced by its per-frame median (media/rigid_face.py). Why: the cell above the lips
    # carries some of the jaw's motion, so the nose wobbled with every syllable (the demo v8.1's 60 s
    # upper face: 3.4 dB of per-second scatter below the eyes, 0.4 dB above). 0: off (the reference
    # needs `rigid_faces` too).
    rigid_upper_face: float = 0.0
    # Decode: share of each brow's own vertical motion kept within the rigid upper face (`hold_rigid`'s `brows`:
    # the brows' lift against the rest of the part, one smooth bump per brow). Why: a surprised face raises its
    # brows, which the rigid hold erased (session 20). 0: the brows move with the nose, as before.
    rigid_brows: float = 0.0
    # Channels per frame slot after the residual ones that carry the mouth's expression (0 or 1: the corners' lift
    # in face heights, media/expression.py), read at encoding from full-size optical flow (or the exact field) at the
    # corners face mesh finds in the portrait, constant over the grid. Why: a smile's lift is under a pixel of the
    # working grid, lost in 8 px cells; a number in face heights is the same for every face (session 21).
    expression_channels: int = 0
    expression_scale: float = 50.0  # latent units per face height of lift (the training world's smile: about 1)
    # Decode: share of the expression channel's lift drawn around each mouth (the channel's mean over the mouth's
    # tile, smoothed in time with the flow). 0: off.
    expression_gain: float = 0.0
    # Decode: a lift under this many face heights is held, one over three times it is kept whole, easing in between
    # (`rigid_face.head_share_kept`'s curve). Why: a neutral prompt's corners should stay where the portrait has them.
    expression_deadzone: float = 0.0

    @property
    def needs_mouths(self) -> bool:
        """Whether decoding uses the portrait's mouths (`MotionReference.seams`): lips that part, or a drawn expression."""
        return max(self.mouth_opening, self.open_mouth_opening) > 0 or (self.expression_channels > 0
                                                                         and self.expression_gain > 0)

    @property
    def smoothing_reach(self) -> int:
        """Frames each way that `flow_smoothing` reads (0 when off)."""
        if self.flow_smoothing <= 0:
            return 0
        return min(math.ceil(3 * self.flow_smoothing), self.temporal_compression_ratio - 1)

    @property
    def slot_channels(self) -> int:
        return 2 + self.residual_channels + self.expression_channels

    @property
    def latent_channels(self) -> int:
        return self.temporal_compression_ratio * self.slot_channels

    @property
    def reference_channels(self) -> int:
        return 3 * self.reference_subcells**2

    @property
    def spatial_compression_ratio(self) -> int:
        return self.cell

    @property
    def grid(self) -> int:
        return self.working_size // self.cell

    def __post_init__(self) -> None:
        if self.cell < 1 or self.working_size % self.cell:
            raise ValueError(f"working_size {self.working_size} must be a multiple of cell {self.cell}")
        if not 0 <= self.residual_channels <= 3 * self.cell**2:
            raise ValueError(f"residual_channels must be in 0..{3 * self.cell ** 2}, got {self.residual_channels}")
        if self.reference_subcells < 1 or self.cell % self.reference_subcells:
            raise ValueError(f"reference_subcells {self.reference_subcells} must divide cell {self.cell}")
        if self.expression_channels not in (0, 1):
            raise ValueError(f"expression_channels must be 0 or 1 (the mouth corners' lift), got {self.expression_channels}")
        if not self.expression_scale > 0 or self.expression_deadzone < 0:
            raise ValueError("expression_scale must be > 0 and expression_deadzone >= 0")
        if self.flow_finest_level not in (0, 1):
            raise ValueError(f"flow_finest_level must be 0 or 1, got {self.flow_finest_level}")
        if self.temporal_compression_ratio < 1:
            raise ValueError("temporal_compression_ratio must be >= 1")
        if not (self.flow_scale > 0 and self.residual_scale > 0):
            raise ValueError("flow_scale and residual_scale must be > 0")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MotionAutoencoderConfig:
        return cls(**{k: v for k, v in d.items() if k != "kind"})


def is_motion_autoencoder_config(d: dict[str, Any]) -> bool:
    return d.get("kind") == KIND


@dataclass
class MotionReference:
    """The picture a motion latent moves: ``image`` [B, 3, H, W] in [-1, 1] at the output resolution,
    and the region ``box`` (x0, y0, x1, y1 in its pixels) that the latent grid covers.

    ``tiles``: several speakers, each framed on its own (`inputs/framing.py`): the latent grid is that
    many equal-width tiles side by side, tile k covering box ``tiles[k]`` of the picture (``box`` is then
    their union). Why: a group framed as one region makes each face a fraction of one DiT token, so the
    speakers' masks share tokens and a silent mouth moves with the voice beside it."""

    image: torch.Tensor
    box: tuple[int, int, int, int]
    tiles: tuple[tuple[int, int, int, int], ...] = ()
    seams: tuple[LipSeam, ...] = ()  # mouths' lip seams in the picture (`face_parts.find_face_parts`)
    rigid_faces: tuple[RigidFace, ...] = ()  # faces' rigid upper parts in the picture (`face_parts.find_face_parts`)
    head_motion: float = 1.0  # how much of the model's head motion is kept (`rigid_face.hold_head`; needs rigid_faces)
    head_deadzone: float = 0.0  # head motion below this share of the face's height is held (`rigid_face.hold_head`)

    @classmethod
    def whole(cls, image: torch.Tensor) -> MotionReference:
        return cls(image, (0, 0, image.shape[-1], image.shape[-2]))

    @classmethod
    def tiled(cls, image: torch.Tensor, tiles: list[tuple[int, int, int, int]]) -> MotionReference:
        boxes = tuple(tuple(int(v) for v in b) for b in tiles)
        union = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
        return cls(image, union, boxes if len(boxes) > 1 else ())

    def regions(self) -> list[tuple[int, int, int, int]]:
        """The boxes the latent grid's tiles cover, left to right (one: the whole grid covers ``box``)."""
        return list(self.tiles) or [self.box]

    def region(self) -> torch.Tensor:
        """The part of the picture the latent grid covers (a tiled reference has several: `regions`)."""
        if self.tiles:
            raise ValueError("a tiled reference covers several regions; the model's view of them is the framed "
                             "tiles side by side (inputs/framing.py), not one crop")
        x0, y0, x1, y1 = self.box
        return self.image[..., y0:y1, x0:x1]


def as_reference(portrait: Any) -> MotionReference:
    if isinstance(portrait, MotionReference):
        return portrait
    if isinstance(portrait, torch.Tensor):
        return MotionReference.whole(portrait[:, :, 0] if portrait.ndim == 5 else portrait)
    raise ValueError("the motion autoencoder needs the portrait (a [B, 3, H, W] tensor or a MotionReference)")


def backward_flow(frame: np.ndarray, portrait: np.ndarray, finest_level: int = 1) -> np.ndarray:
    """Dense flow [H, W, 2] (dx, dy) with frame(p) ~ portrait(p + flow(p)); uint8 grey inputs (OpenCV DIS's
    MEDIUM preset, refined down to pyramid level `finest_level`: 0 is the frames' own size)."""
    import cv2

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    dis.setFinestScale(finest_level)
    return dis.calc(frame, portrait, None)


def _grey_u8(x: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [-1, 1] -> uint8 luma [H, W]."""
    y = sum(float(w) * c for w, c in zip(LUMA, x, strict=True)).clamp(-1, 1)
    return ((y + 1) * 127.5).round().to(torch.uint8).cpu().numpy()


def warp(image: torch.Tensor, flow_px: torch.Tensor) -> torch.Tensor:
    """Backward warp [B, 3, H, W] by a dense field [B, 2, H, W] in pixels (border pixels repeat)."""
    b, _, h, w = image.shape
    ys = torch.arange(h, dtype=image.dtype, device=image.device)
    xs = torch.arange(w, dtype=image.dtype, device=image.device)
    gx = (xs[None, None, :] + flow_px[:, 0]) * (2.0 / w) - 1 + 1.0 / w
    gy = (ys[None, :, None] + flow_px[:, 1]) * (2.0 / h) - 1 + 1.0 / h
    return F.grid_sample(image, torch.stack([gx, gy], dim=-1), mode="bilinear", padding_mode="border", align_corners=False)


def edge_taper(h: int, w: int, width: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """[h, w] weight 0 on the border, rising smoothly to 1 over `width` pixels."""
    def ramp(n: int) -> torch.Tensor:
        i = torch.arange(n, dtype=torch.float32, device=device) + 0.5
        d = torch.minimum(i, n - i) / max(width, 1e-6)
        d = d.clamp(0, 1)
        return d * d * (3 - 2 * d)

    return ramp(h)[:, None] * ramp(w)[None, :]


def smooth_flow(codes: torch.Tensor, cfg: MotionAutoencoderConfig) -> torch.Tensor:
    """Per-frame codes [B, F, S, h, w] with each cell's flow (channels 0-1) and expression (the last
    `cfg.expression_channels`) smoothed in time by a Gaussian of `cfg.flow_smoothing` frames, cut at
    `cfg.smoothing_reach` and renormalised; the clip's ends repeat."""
    reach = cfg.smoothing_reach
    if not reach or codes.shape[1] < 2:
        return codes
    offsets = torch.arange(-reach, reach + 1, dtype=torch.float32)
    weights = torch.exp(-0.5 * (offsets / cfg.flow_smoothing) ** 2)
    weights = (weights / weights.sum()).to(codes.dtype)
    f = codes.shape[1]
    frames = torch.arange(f)
    smoothed = [0, 1] + list(range(codes.shape[2] - cfg.expression_channels, codes.shape[2]))
    picked = codes[:, :, smoothed]  # only these channels are gathered at each offset
    total = torch.zeros_like(picked)
    for off, wt in zip(offsets.long().tolist(), weights, strict=True):
        total += wt * picked[:, (frames + off).clamp(0, f - 1)]
    out = codes.clone()
    out[:, :, smoothed] = total
    return out


class MotionAutoencoder(nn.Module):
    """Same interface as the other autoencoders (encode/decode/latent_shape/spatial_ratio/temporal_ratio),
    with the portrait as an argument of encode and decode, and `reference_latent` for the DiT's
    portrait condition."""

    def __init__(self, cfg: MotionAutoencoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n = 3 * cfg.cell**2
        self.register_buffer("residual_basis", torch.eye(n)[: cfg.residual_channels].clone())  # [R, n] orthonormal rows

    # ------------------------------------------------------------------ shared interface
    @property
    def spatial_ratio(self) -> int:
        return self.cfg.cell

    @property
    def temporal_ratio(self) -> int:
        return self.cfg.temporal_compression_ratio

    @property
    def dtype(self) -> torch.dtype:
        return self.residual_basis.dtype

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        c = self.cfg.cell
        if height % c or width % c:
            raise ValueError(f"frame size {height}x{width} must be a multiple of {c} for this autoencoder")
        return (self.cfg.latent_channels, latent_frames(frames, self.temporal_ratio), height // c, width // c)

    def enable_tiling(self, tile: int = 256) -> None:
        """Nothing to tile: every frame is one warp of the portrait."""

    # ------------------------------------------------------------------ codes of one frame
    def _dense_flow(self, frames: torch.Tensor, portrait: torch.Tensor, level: int) -> torch.Tensor:
        """[F, 3, H, W] + [3, H, W] -> [F, 2, H, W] dense backward optical flow in working pixels."""
        p = _grey_u8(portrait)
        dense = np.stack([backward_flow(_grey_u8(f), p, level) for f in frames])  # [F, H, W, 2]
        return torch.from_numpy(dense).permute(0, 3, 1, 2).to(frames.dtype)

    def _cell_flow(self, frames: torch.Tensor, portrait: torch.Tensor) -> torch.Tensor:
        """[F, 3, H, W] + [3, H, W] -> [F, 2, h, w] cell-mean backward flow in working pixels (not gated)."""
        return F.avg_pool2d(self._dense_flow(frames, portrait, self.cfg.flow_finest_level), self.cfg.cell)

    def _upsample(self, cells: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return F.interpolate(cells, size=(h, w), mode="bilinear", align_corners=False)

    def _residual_code(self, frames: torch.Tensor, warped: torch.Tensor) -> torch.Tensor:
        """[F, 3, H, W] residual -> [F, R, h, w] PCA code."""
        cells = patchify((frames - warped).transpose(0, 1)[None], self.cfg.cell)[0]  # [F, h, w, n]
        return (cells @ self.residual_basis.T).permute(0, 3, 1, 2)

    def _residual_image(self, code: torch.Tensor) -> torch.Tensor:
        """[F, R, h, w] -> [F, 3, h*cell, w*cell]."""
        cells = code.permute(0, 2, 3, 1) @ self.residual_basis  # [F, h, w, n]
        return unpatchify(cells[None], self.cfg.cell)[0].transpose(0, 1)

    def frame_codes(self, frames: torch.Tensor, portrait: torch.Tensor, flow: torch.Tensor | None = None,
                    mouth: MouthCorners | None = None, expression_flow: torch.Tensor | None = None) -> torch.Tensor:
        """Unscaled per-frame codes [F, 2 + R + E, h, w] of frames [F, 3, H, W] (working size) against the portrait.

        `flow`: the exact backward field to the portrait [F, 2, H', W'] in pixels of `frames` (H', W' whole
        multiples of the cell grid), where whoever made the frames knows it (the animated photographs);
        else optical flow, still-gated. `mouth`: the portrait's mouth in working pixels, for the expression
        channel (none: a lift of 0), read from `expression_flow` (an exact field as `flow`) where given, else from
        `flow`, else from optical flow at full size."""
        cfg = self.cfg
        h, w = frames.shape[-2:]
        if flow is None:
            dense = self._dense_flow(frames, portrait, cfg.flow_finest_level)
            cells = self.gated_flow(frames, portrait, F.avg_pool2d(dense, cfg.cell))
            if cfg.expression_channels and mouth is not None and cfg.flow_finest_level and expression_flow is None:
                dense = self._dense_flow(frames, portrait, 0)  # the corners' lift is under a pixel: full size
        else:
            dense = self._exact_field(flow.to(frames.dtype), len(frames), h, w)
            cells = F.adaptive_avg_pool2d(dense, (h // cfg.cell, w // cfg.cell))
            if dense.shape[-2:] != (h, w):
                dense = self._upsample(dense, h, w)
        warped = warp(portrait[None].expand(len(frames), -1, -1, -1), self._upsample(cells, h, w))
        codes = [cells, self._residual_code(frames, warped)]
        if cfg.expression_channels:
            if expression_flow is not None:
                dense = self._upsample(self._exact_field(expression_flow.to(frames.dtype), len(frames), h, w), h, w)
            lift = corner_lift(dense, mouth) if mouth is not None else torch.zeros(len(frames))
            codes.append(lift.to(frames.dtype).view(-1, 1, 1, 1).expand(-1, 1, *cells.shape[-2:]))
        return torch.cat(codes, dim=1)

    def _exact_field(self, flow: torch.Tensor, frames: int, h: int, w: int) -> torch.Tensor:
        """An exact backward field [F, 2, H', W'], checked: H', W' whole multiples of the cell grid, finite."""
        gh, gw = h // self.cfg.cell, w // self.cfg.cell
        if flow.ndim != 4 or flow.shape[:2] != (frames, 2) or flow.shape[2] % gh or flow.shape[3] % gw:
            raise ValueError(f"an exact flow field must be [{frames}, 2, H', W'] with H', W' multiples of the "
                             f"{gh}x{gw} cell grid, got {list(flow.shape)}")
        if not torch.isfinite(flow).all():
            raise ValueError("the exact flow field has NaN or infinite values")
        return flow

    def gated_flow(self, frames: torch.Tensor, portrait: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """Zero the flow of cells that standing still explains as well (`still_gate`), twice: the
        bilinear field of a cell depends on its neighbours, so the second pass sees the first's zeros."""
        h, w = frames.shape[-2:]
        p = portrait[None].expand(len(frames), -1, -1, -1)
        e_still = F.avg_pool2d((frames - p).abs().mean(1, keepdim=True), self.cfg.cell)
        for _ in range(2):
            warped = warp(p, self._upsample(flow, h, w))
            e_flow = F.avg_pool2d((frames - warped).abs().mean(1, keepdim=True), self.cfg.cell)
            flow = flow * (e_flow < e_still - self.cfg.still_gate).to(flow.dtype)
        return flow

    # ------------------------------------------------------------------ encode / decode
    def encode(self, frames: torch.Tensor, portrait: Any = None, generator: torch.Generator | None = None,
               flow: torch.Tensor | None = None, expression_flow: torch.Tensor | None = None) -> torch.Tensor:
        """[B, 3, F, H, W] in [-1, 1] (the region at working resolution) -> [B, C, 1 + ceil((F-1)/4), H/cell, W/cell].

        `portrait` [B, 3, H, W] defaults to frame 0. `flow` [B, F, 2, H', W']: the exact backward field to
        the portrait (`frame_codes`), instead of optical flow; `expression_flow` (the same): an exact field for the
        expression channel alone. Deterministic (generator unused)."""
        cfg, r = self.cfg, self.temporal_ratio
        b, _, f, h, w = frames.shape
        self.latent_shape(f, h, w)
        ref = frames[:, :, 0] if portrait is None else as_reference(portrait).region()
        if ref.shape[-2:] != (h, w):
            ref = F.interpolate(ref, size=(h, w), mode="area")
        out = []
        for i in range(b):
            mouth = find_mouth(((ref[i].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0)
                               .cpu().numpy()) if cfg.expression_channels else None
            codes = self.frame_codes(frames[i].transpose(0, 1).to(self.dtype), ref[i].to(self.dtype),
                                     None if flow is None else flow[i], mouth,
                                     None if expression_flow is None else expression_flow[i])  # [F, S, h, w]
            codes = codes * self._channel_scales(codes.dtype).view(1, -1, 1, 1)
            groups = latent_frames(f, r) - 1
            rest = codes[1:]
            if groups and rest.shape[0] < groups * r:  # a short last group repeats its last frame
                rest = torch.cat([rest, rest[-1:].expand(groups * r - rest.shape[0], -1, -1, -1)])
            first = codes[:1].expand(r, -1, -1, -1).reshape(1, -1, h // cfg.cell, w // cfg.cell)
            slots = rest.reshape(groups, r * cfg.slot_channels, h // cfg.cell, w // cfg.cell)
            out.append(torch.cat([first, slots]).transpose(0, 1))
        return torch.stack(out)

    def slot_codes(self, latents: torch.Tensor) -> torch.Tensor:
        """[B, C, T, h, w] -> per-frame unscaled codes [B, F, 2 + R + E, h, w] (the causal frame layout)."""
        r, s = self.temporal_ratio, self.cfg.slot_channels
        b, _, t, h, w = latents.shape
        z = latents.to(self.dtype).reshape(b, r, s, t, h, w).permute(0, 3, 1, 2, 4, 5)  # [B, T, r, S, h, w]
        frames = torch.cat([z[:, :1, -1], z[:, 1:].reshape(b, (t - 1) * r, s, h, w)], dim=1)
        return frames / self._channel_scales(frames.dtype, frames.device).view(1, 1, -1, 1, 1)

    def _channel_scales(self, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
        """[S]: latent units per unit of each slot channel (flow, residual, expression)."""
        cfg = self.cfg
        return torch.tensor([cfg.flow_scale] * 2 + [cfg.residual_scale] * cfg.residual_channels
                            + [cfg.expression_scale] * cfg.expression_channels, dtype=dtype, device=device)

    def decode(self, latents: torch.Tensor, portrait: Any = None) -> torch.Tensor:
        """[B, C, T, h, w] -> [B, 3, 1 + 4(T-1), H, W] in [-1, 1], H x W the portrait's own size."""
        if portrait is None:
            raise ValueError("the motion autoencoder decodes by moving the portrait: pass portrait=")
        ref = as_reference(portrait)
        codes = smooth_flow(self.slot_codes(latents), self.cfg)  # [B, F, S, h, w]
        b, f = codes.shape[:2]
        height, width = ref.image.shape[-2:]
        out = torch.empty(b, 3, f, height, width, dtype=self.dtype, device=codes.device)
        step = max(1, DECODE_BATCH_PIXELS // (height * width))
        for i in range(b):
            for s in range(0, f, step):  # every frame is decoded from its own slot: batches are exact
                check_cancelled()
                self.decode_frames(codes[i, s : s + step], ref, i, out=out[i, :, s : s + step].transpose(0, 1))
        return out

    @property
    def decode_lookahead(self) -> int:
        """Latent frames after a chunk that decoding it needs (`streamed_decode`): 1 with flow smoothing."""
        return 1 if self.cfg.smoothing_reach else 0

    @property
    def decode_min_context(self) -> int:
        """Latent frames of left context a chunk needs so its kept frames see `smoothing_reach` frames back
        (a chunk's first latent frame decodes as one frame, the next ones as 4)."""
        reach = self.cfg.smoothing_reach
        return 1 + math.ceil(max(reach - 1, 0) / self.temporal_ratio) if reach else 1

    def decode_frames(self, codes: torch.Tensor, ref: MotionReference, row: int = 0,
                      out: torch.Tensor | None = None) -> torch.Tensor:
        """Per-frame codes [F, S, h, w] -> [F, 3, H, W]: the portrait, its region (or tiles) moved and retouched.

        `out`: where to write them (a view of the whole video's tensor: full-size frames are not copied twice)."""
        cfg = self.cfg
        image = ref.image[row].to(codes.device, self.dtype)
        ux0, uy0, ux1, uy1 = ref.box
        tiles = ref.regions()
        n, _, h, w = codes.shape
        if w % len(tiles):
            raise ValueError(f"a latent {w} cells wide cannot hold {len(tiles)} equal tiles")
        tw = w // len(tiles)
        flow = codes[:, :2]
        if cfg.flow_deadzone > 0:
            size = flow.norm(dim=1, keepdim=True)
            flow = flow * ((size - cfg.flow_deadzone).clamp_min(0) / size.clamp_min(1e-6))
        residual = cfg.residual_channels and cfg.residual_gain
        res = self._residual_image(codes[:, 2 : 2 + cfg.residual_channels]) * cfg.residual_gain if residual else None
        field = torch.zeros(n, 2, uy1 - uy0, ux1 - ux0, dtype=flow.dtype, device=flow.device)
        extra = torch.zeros(n, 3, uy1 - uy0, ux1 - ux0, dtype=flow.dtype, device=flow.device) if residual else None
        weight = torch.zeros(uy1 - uy0, ux1 - ux0, dtype=flow.dtype, device=flow.device) if len(tiles) > 1 else None
        for k, (x0, y0, x1, y1) in enumerate(tiles):
            # working pixels -> region pixels (the tile spans its box), then one cell's taper at the edge
            rh, rw = y1 - y0, x1 - x0
            scale = torch.tensor([rw / (tw * cfg.cell), rh / (h * cfg.cell)], dtype=flow.dtype, device=flow.device)
            taper = edge_taper(rh, rw, min(rh, rw) / max(h, tw), device=flow.device).to(flow.dtype)
            dense = self._upsample(flow[..., k * tw : (k + 1) * tw], rh, rw) * scale.view(1, 2, 1, 1)
            field[:, :, y0 - uy0 : y1 - uy0, x0 - ux0 : x1 - ux0] += dense * taper
            if weight is not None:
                weight[y0 - uy0 : y1 - uy0, x0 - ux0 : x1 - ux0] += taper
            if res is not None:
                part = res[..., k * tw * cfg.cell : (k + 1) * tw * cfg.cell]
                extra[:, :, y0 - uy0 : y1 - uy0, x0 - ux0 : x1 - ux0] += self._upsample(part, rh, rw) * taper
        if weight is not None:  # where tiles overlap, their fields are averaged (a sum would double a shared motion)
            field = field / weight.clamp_min(1.0)
            extra = None if extra is None else extra / weight.clamp_min(1.0)
        if cfg.rigid_upper_face > 0:  # before the lips open: the band above a seam starts from the held field
            for face in ref.rigid_faces:
                hold_rigid(field, face, (ux0, uy0), cfg.rigid_upper_face, cfg.rigid_brows)
        if ref.head_motion < 1 or ref.head_deadzone > 0:
            for face in ref.rigid_faces:
                hold_head(field, face, (ux0, uy0), ref.head_motion, ref.head_deadzone * face.height)
        if cfg.expression_channels and cfg.expression_gain > 0:  # after the holds: the upper lip's middle stays put
            lift = codes[:, 2 + cfg.residual_channels]  # [F, h, w] face heights
            for seam in ref.seams:
                if seam.corners is None:
                    continue
                k = min(seam.region, len(tiles) - 1)
                mean = lift[..., k * tw : (k + 1) * tw].mean(dim=(1, 2))
                mean = mean * head_share_kept(mean.abs(), cfg.expression_deadzone)
                draw_lift(field, seam.corners, (ux0, uy0), mean * cfg.expression_gain * seam.corners.face_height)
        mouths = []
        for seam in ref.seams:
            gain = cfg.open_mouth_opening if seam.open else cfg.mouth_opening
            if gain <= 0:
                continue
            top, bottom = tiles[min(seam.region, len(tiles) - 1)][1::2]
            band = (bottom - top) / h  # one latent cell of the seam's tile, in picture pixels
            patch = open_lips(field, seam, (ux0, uy0), band, gain)  # moves `field` in place
            if patch is not None:
                mouths.append(patch)
        # sample the whole picture so a region's edge may pull pixels from just outside it
        ys = torch.arange(uy0, uy1, dtype=field.dtype, device=field.device)
        xs = torch.arange(ux0, ux1, dtype=field.dtype, device=field.device)
        H, W = image.shape[-2:]
        gx = (xs[None, None, :] + field[:, 0]) * (2.0 / W) - 1 + 1.0 / W
        gy = (ys[None, :, None] + field[:, 1]) * (2.0 / H) - 1 + 1.0 / H
        moved = F.grid_sample(image[None].expand(n, -1, -1, -1), torch.stack([gx, gy], dim=-1), mode="bilinear",
                              padding_mode="border", align_corners=False)
        if extra is not None:
            moved += extra
        for patch in mouths:
            paint_mouth(moved, patch, cfg.mouth_teeth, cfg.mouth_tongue)
        if out is None:
            out = torch.empty(n, *image.shape, dtype=image.dtype, device=image.device)
        out.copy_(image.expand(n, -1, -1, -1))
        out[:, :, uy0:uy1, ux0:ux1] = moved.clamp_(-1, 1)
        return out

    def reference_latent(self, portrait: Any) -> torch.Tensor:
        """The DiT's portrait condition [B, 3*sub^2, 1, H/cell, W/cell]: mean colours of sub x sub parts of
        each cell (where the eyes, lips and jaw are). `portrait` is at the model's size (the framed
        region resized to the working grid: `inputs/framing.py`), like the frames that `encode` takes."""
        cfg = self.cfg
        region = as_reference(portrait).region().to(self.residual_basis.device, self.dtype)
        h, w = region.shape[-2:]
        if h % cfg.cell or w % cfg.cell:
            raise ValueError(f"portrait size {h}x{w} must be a multiple of {cfg.cell} for this autoencoder")
        small = F.avg_pool2d(region, cfg.cell // cfg.reference_subcells)
        return F.pixel_unshuffle(small, cfg.reference_subcells)[:, :, None]

    def set_fit(self, basis: torch.Tensor, flow_scale: float, residual_scale: float) -> None:
        """Install a fitted residual basis and scales (training/fit_motion_autoencoder.py)."""
        self.residual_basis = basis.to(self.residual_basis.dtype).contiguous()
        self.cfg = MotionAutoencoderConfig(**{**asdict(self.cfg), "flow_scale": float(flow_scale),
                                              "residual_scale": float(residual_scale)})
