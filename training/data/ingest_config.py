"""Settings of an ingestion run (``python -m training.data.ingest``), one dataclass.

Everything that changes which clips come out, or their pixels, is here; the run stores it in
``DATA/ingest.json`` and refuses to resume into a folder made with other settings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from training.data.ingest_shots import CUT_CONTEXT, CUT_MIN_DIFF, CUT_RATIO
from training.data.ingest_vad import MIN_SPEECH_SHARE

INGEST_FORMAT = 1
# A clip's speaker face region must move at least this much (mean |frame difference| in grey levels,
# face region resized to 32 x 32): measured on the tests' videos, a still photograph with speech
# (H.264 noise only) gives 0.00-0.04, talking animated photographs 0.4-1.2, a panned photo 1.5-4.8.
STATIC_MOTION = 0.15


@dataclass(frozen=True)
class IngestConfig:
    """What to cut, keep and write (defaults: the small-model scale; the paper's full scale is
    ``frames=129``)."""

    frames: int = 33  # frames per clip at 25 fps
    stride: int = 33  # a new clip every `stride` frames of a shot
    size: int = 256  # resolution bucket base: bucket area ~ size^2 (HunyuanVideo's buckets)
    bucket_step: int = 16  # bucket sides are multiples of this
    max_ratio: float = 4.0  # most elongated bucket (long side / short side)
    aspect: str = "source"  # "source" (nearest bucket to the video's aspect), "square" or "W:H"
    context: float = 2.2  # crop side / face side (head and shoulders around the face)
    # per-frame face box -> face mask (scale x, scale y, shift down in box heights): mediapipe's box
    # runs from the brows to the chin; this covers forehead and jaw (measured: the union covers 100 %
    # of the world's ground-truth face boxes at IoU ~0.6). The core's 1.4 x region is for audio gating.
    mask_expand: tuple[float, float, float] = (1.15, 1.2, 0.05)
    min_face_px: float = 48.0  # speaker face box shorter side in SOURCE pixels (median over the clip)
    min_face_share: float = 0.9  # frames of a clip in which the speaker's face must be found
    multi_face_share: float = 0.1  # a second face in this share of frames = "multiple_faces"
    static_motion: float = STATIC_MOTION
    min_speech_share: float = MIN_SPEECH_SHARE
    min_landmark_share: float = 0.5  # frames in which face mesh must find the speaker's lips
    cut_min_diff: float = CUT_MIN_DIFF
    cut_ratio: float = CUT_RATIO
    cut_context: int = CUT_CONTEXT
    # video.mp4 quality (H.264 crf, 0 = lossless): the clip writer (media.video_io.VideoWriter) is
    # bit-reproducible, so the same clips come out for any worker count at any crf
    crf: int = 18
    detect_max_side: int = 640  # faces are detected on frames scaled to at most this long side
    heldout_fraction: float = 0.0  # share of SOURCE FILES put in the held-out split (by hash + seed)
    split: str = "train"  # the split of every other source
    seed: int = 0
    captioner: str | None = None  # local folder of a transformers image-to-text model
    format: int = INGEST_FORMAT

    def check(self) -> IngestConfig:
        """Raise ValueError naming the bad setting and what to use."""
        if self.frames < 1 or self.stride < 1:
            raise ValueError(f"--frames ({self.frames}) and --stride ({self.stride}) must be >= 1")
        if self.bucket_step % 2 or self.bucket_step < 2:
            raise ValueError(f"--bucket-step {self.bucket_step}: use an even number (H.264 needs even sides)")
        if self.size < self.bucket_step:
            raise ValueError(f"--size {self.size} is below --bucket-step {self.bucket_step}")
        if self.split not in ("train", "heldout"):
            raise ValueError(f"--split {self.split!r}: use train or heldout")
        if not 0.0 <= self.heldout_fraction <= 1.0:
            raise ValueError(f"--heldout-fraction {self.heldout_fraction}: use a share in 0..1")
        if self.context < 1.0:
            raise ValueError(f"--context {self.context}: the crop must be at least the face (>= 1)")
        from training.data.ingest_crop import parse_aspect

        parse_aspect(self.aspect)
        return self

    def to_dict(self) -> dict:
        """JSON form stored in ingest.json."""
        d = asdict(self)
        d["mask_expand"] = list(d["mask_expand"])
        return d
