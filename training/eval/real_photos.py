"""Evaluate a model bundle on REAL photographs through the real pipeline (issue 14's target table).

World clips have a ground truth; real photographs do not, so every measure here is read from the
generated pixels with mediapipe and compared with the portrait or the audio:

* reference: the portrait exactly as the pipeline outputs it (`generate.prepare_portrait`): for a
  motion-latent bundle the whole picture at the output size (`PreparedPortrait.reference`), for a
  pixel-latent bundle the centre crop at the model's size. Output frames have the same size.
* identity: PSNR / SSIM outside the (expanded) mouth vs that reference; the mouth comes from
  face-mesh lip landmarks on it.
* upper face (issue 26): the face-mesh face oval (`face_tasks.face_oval_edges()`, top = landmark 10, the top of
  the forehead) cut at the nose tip's row (landmark 1) on the reference: forehead, brows, eyes, upper
  cheeks and nose, between the oval's sides. Flicker = mean |frame-to-frame change| of its grey level
  (0-255) and the 95th percentile; identity = its PSNR vs the reference (`metrics.flicker`,
  `metrics.region_psnr`), on the still-head prompt (the default prompt of every talking video here).
* face detected: share of output frames in which mediapipe face detection finds the face.
* lip sync: face-mesh inner-lip gap (landmarks 13/14 over the face height 10/152) per frame vs the
  audio's RMS envelope per 25 fps frame (dB, floored 40 dB below the peak -- the scale the world's
  lips follow, training/data/mouth.py), best r within lag +-2; the control is the same gap vs the
  envelope of the time-reversed audio. A mouth that merely moves scores alike on both.
* muted: a video from digital silence; its mean lip gap vs the portrait's own (closed) gap.
* drift: identity PSNR of the first second minus the last second of a long video.
* several speakers: turn-taking audio (one speaker at a time); per speaker the mouth's motion while
  it speaks vs while another speaks.

mediapipe does not find faces of a few dozen pixels, so a small frame is upscaled (bicubic) to >= 256
px; a large one (up to 1024 px) is downscaled to <= 512 px for face detection only (mediapipe's detector
works at 128-256 px anyway); face mesh then runs on a square crop around each face cut from the frame
at its full resolution and resized to 256 px, and landmarks are mapped back to the frame's pixels.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from magicinfinite_core.errors import MagicInfiniteError
from training.data.mouth import FPS, HOP, LUMA, SAMPLE_RATE
from training.data.prompts import phrases_for_split
from training.eval import metrics

MAX_LAG = 2
_MP_UPPER, _MP_LOWER, _MP_TOP, _MP_CHIN = 13, 14, 10, 152
# `FaceMeter`'s crop of a face: centre offset (dx, dy, in face heights; the crop sits 0.1 lower still) and side
# (in face sizes)
FACE_CROP = (0.0, 0.0, 1.8)
_MP_NOSE_TIP = 1
_MP_LIP_TOP = 0  # the top of the upper lip's middle
_MP_CORNERS, _MP_BROWS = (61, 291), (105, 334)  # the mouth's corners, the brows' middles (`expression`)
SILENCE_DBFS = -45.0  # a frame this quiet counts as silent (the speaker does not speak)
ENVELOPE_RANGE_DB = 40.0


class NoFaceError(MagicInfiniteError):
    """A portrait in which mediapipe finds no face: nothing to measure identity or lips against."""


# -------------------------------------------------------------------------------------- inputs
def heldout_photo(name: str, workdir: str | Path) -> Path:
    """A held-out face photograph of `training.data.photos` (never a training one) as an RGB PNG."""
    from PIL import Image

    from training.data.photos import photo

    p = photo(name)
    if p.split != "heldout" or not p.face:
        raise ValueError(f"{name} is not a held-out face photograph (split {p.split!r}): evaluation must not use it")
    out = Path(workdir) / f"{name}.png"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(p.path()) as im:
            im.convert("RGB").save(out)
    return out


HALF_LENGTH = "grace_hopper"  # 512 x 600, half-length, face ~40 % of the width
GUITAR = "gen_video_wan2_2_14B_s2v-1"  # AI-generated, 350 x 350, a man with a guitar, face at the top
OPEN_SMILE = "gen_ltxv_text_to_video-1"  # AI-generated, 350 x 350, a woman smiling with her teeth showing
GREY = "takeo"  # a real greyscale photograph, 150 x 225


def default_portraits(workdir: str | Path) -> list[Path]:
    """The held-out portraits of the talking / muted / nodding videos: grace_hopper (public domain, US
    Navy) and an AI-generated woman with an open smile (MIT, ComfyUI templates); both held out of
    training (`training.data.photos`), both ship offline with installed packages. (The held-out man with
    a guitar is not one: mediapipe also finds a 'face' in the guitar, so a one-speaker run refuses it.)"""
    return [heldout_photo(HALF_LENGTH, workdir), heldout_photo(OPEN_SMILE, workdir)]


def group_portraits(workdir: str | Path) -> list[Path]:
    """The held-out faces the 2- and 3-person composites are cut from (three different people)."""
    return [heldout_photo(n, workdir) for n in (HALF_LENGTH, GUITAR, OPEN_SMILE)]


def _rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _main_face(img: np.ndarray, name: str) -> Any:
    from magicinfinite_core.inputs.masks import detect_faces

    faces = detect_faces(img)
    if not faces:
        raise NoFaceError(f"no face found in {name}, needed to compose a test picture")
    return max(faces, key=lambda f: f.width)


def full_length_picture(src: np.ndarray, width: int = 512, height: int = 1152, face_share: float = 0.35) -> np.ndarray:
    """A full-length-style picture COMPOSED from a half-length one: the photo scaled so its face is
    `face_share` of the canvas width, at the top of a tall canvas; its bottom rows (the clothes) continue
    downward, darkening slowly, like a body below. Real full-length photos ship with no held-out set."""
    from PIL import Image

    face = _main_face(src, "the full-length source")
    s = face_share * width / face.width
    img = np.asarray(Image.fromarray(src).resize((max(1, round(src.shape[1] * s)), max(1, round(src.shape[0] * s))),
                                                 Image.LANCZOS))
    cx = face.center[0] * s
    left = int(round(cx - width / 2))  # canvas x = image x - left; pad by repeating the edge columns
    cols = np.clip(np.arange(width) + left, 0, img.shape[1] - 1)
    img = img[:, cols]
    rows = np.clip(np.arange(height), 0, img.shape[0] - 1)
    out = img[rows].astype(np.float32)
    below = np.arange(height) >= img.shape[0]
    fade = 1.0 - 0.4 * np.clip((np.arange(height) - img.shape[0]) / max(height - img.shape[0], 1), 0, 1)
    out[below] *= fade[below, None, None]
    return out.clip(0, 255).astype(np.uint8)


def letterboxed_picture(src: np.ndarray, width: int = 640, aspect: float = 16 / 9, frame_aspect: float = 4 / 3) -> np.ndarray:
    """A 16:9 picture letterboxed (black bars above and below) in a 4:3 frame: the 16:9 strip is cut from
    the photo around its face, as wide as the photo."""
    from PIL import Image

    face = _main_face(src, "the letterbox source")
    h, w = src.shape[:2]
    ch = min(h, int(round(w / aspect)))
    top = int(round(min(max(face.center[1] - ch / 2, 0), h - ch)))
    strip = Image.fromarray(src[top : top + ch]).resize((width, int(round(width / aspect))), Image.LANCZOS)
    fh = int(round(width / frame_aspect))
    out = np.zeros((fh, width, 3), np.uint8)
    y = (fh - strip.height) // 2
    out[y : y + strip.height] = np.asarray(strip)
    return out


@dataclass
class TestPicture:
    """One held-out picture of issue 26's 'all generate' row and the faces in it."""

    name: str
    path: Path
    faces: int
    how: str  # what it is / how it was made


def test_pictures(workdir: str | Path) -> list[TestPicture]:
    """The hard single-face pictures, built offline from held-out photos only (the 2- and 3-person
    composites are the speaker videos): full-length (composed), letterboxed 16:9, a real greyscale
    photograph and an open smile (teeth showing)."""
    from PIL import Image

    workdir = Path(workdir)
    hopper, guitar = _rgb(heldout_photo(HALF_LENGTH, workdir)), _rgb(heldout_photo(GUITAR, workdir))
    made = {"full_length": (full_length_picture(hopper), f"composed: {HALF_LENGTH} at the top of a 512x1152 canvas, "
                            "face 35 % of the width, clothes continued below"),
            "letterboxed": (letterboxed_picture(guitar), f"{GUITAR}: a 16:9 strip around the face in a 640x480 "
                            "frame with black bars above and below")}
    out = []
    for name, (img, how) in made.items():
        path = workdir / f"test_{name}.png"
        Image.fromarray(img).save(path)
        out.append(TestPicture(name, path, 1, how))
    out.append(TestPicture("greyscale", heldout_photo(GREY, workdir), 1, f"{GREY}: a real greyscale photograph, as is"))
    out.append(TestPicture("open_smile", heldout_photo(OPEN_SMILE, workdir), 1,
                           f"{OPEN_SMILE}: AI-generated portrait smiling with the teeth showing, as is"))
    return out


def picture_by_name(name: str, workdir: str | Path) -> Path:
    """A held-out picture by name: one of the composed test pictures (`test_pictures`, built only when one is
    named) or a held-out photograph (`heldout_photo`). What the benches' `--portrait` / `--pictures` take."""
    if name in Settings.pictures:
        return next(p.path for p in test_pictures(workdir) if p.name == name)
    return heldout_photo(name, workdir)


def heldout_speech(seconds: float, seed: int) -> tuple[np.ndarray, dict]:
    """`seconds` of espeak-ng speech from a held-out voice (unseen variants / languages), sentences
    separated by pauses; returns (16 kHz float32 waveform, {voice, text})."""
    from training.data.speech import sample_voice, speech_track

    rng = np.random.default_rng([int(seed), 14])
    voice = sample_voice(rng, "heldout")
    wav, segs = speech_track(rng, voice, int(round(seconds * FPS)))
    return wav, {"voice": voice.espeak_name, "text": " | ".join(s["text"] for s in segs)}


def heldout_prompt(seed: int, action: str = "still") -> str:
    """A held-out phrasing (templates and phrases never trained on) of a realistic portrait talking
    with the given head action; the same seed gives prompts that differ only in the action phrase."""
    from training.data.prompts import make_prompt

    rng = np.random.default_rng([int(seed), 41])
    return make_prompt({"emotion": "neutral", "action": action, "background": "static"}, rng, "heldout", "realistic")


def sampled_expression_lift(bundle: Any, photo: str | Path, wav: np.ndarray, prompt: str, distilled: bool = True,
                            seed: int = 0) -> float:
    """The expression channel a bundle samples for `photo` speaking `wav` (mono, SAMPLE_RATE) under `prompt`: the mouth
    corners' lift in face heights, over the second half of the video, before decoding (which holds a lift under the
    autoencoder's `expression_deadzone`)."""
    import torch

    from magicinfinite_core.generate import GenerateOptions, sample_latent
    from magicinfinite_core.inputs.audio import load_speaker_tracks
    from magicinfinite_core.inputs.audio_features import extract_speaker_features

    tracks = load_speaker_tracks([(wav[None].astype(np.float32), SAMPLE_RATE)])
    n = tracks[0].num_frames
    feats = extract_speaker_features(tracks, bundle.audio_extractor, n)
    with torch.inference_mode():
        s = sample_latent(bundle, str(photo), feats, n, prompt, options=GenerateOptions(distilled=distilled, seed=seed))
        codes = bundle.vae.slot_codes(s.latent[None].float())[0]  # [F, slots, h, w]
    lift = codes[:, 2 + bundle.vae.cfg.residual_channels].mean(dim=(1, 2))
    return float(lift[len(lift) // 2 :].mean())


def audio_envelope(wav: np.ndarray, num_frames: int) -> np.ndarray:
    """RMS per 25 fps frame (640 samples at 16 kHz) in dB, floored 40 dB below the loudest frame
    (and at the silence level): loudness on the log scale lips follow, silence not dominating r."""
    w = np.zeros(num_frames * HOP, np.float64)
    n = min(len(wav), len(w))
    w[:n] = np.asarray(wav, np.float64)[:n]
    rms = np.sqrt((w.reshape(num_frames, HOP) ** 2).mean(1) + 1e-20)
    db = 20 * np.log10(rms + 1e-10)
    floor = max(float(db.max()) - ENVELOPE_RANGE_DB, SILENCE_DBFS)
    return np.maximum(db, floor).astype(np.float32)


def reversed_envelope(wav: np.ndarray, num_frames: int) -> np.ndarray:
    """The envelope of the time-reversed audio (same length): the lip-sync control."""
    n = num_frames * HOP
    w = np.zeros(n, np.float32)
    w[: min(len(wav), n)] = wav[:n]
    return audio_envelope(w[::-1].copy(), num_frames)


def silent_frames(wav: np.ndarray, num_frames: int) -> np.ndarray:
    """[F] True where the frame is quieter than SILENCE_DBFS (absolute)."""
    w = np.zeros(num_frames * HOP, np.float64)
    n = min(len(wav), len(w))
    w[:n] = np.asarray(wav, np.float64)[:n]
    rms = np.sqrt((w.reshape(num_frames, HOP) ** 2).mean(1) + 1e-20)
    return 20 * np.log10(rms + 1e-10) < SILENCE_DBFS


# ------------------------------------------------------------------------------- face measuring
@dataclass
class FaceReading:
    """One face in one frame (pixel coordinates of that frame)."""

    box: tuple[float, float, float, float]  # face detection box
    gap: float  # inner-lip gap / face height (NaN when face mesh failed on the crop)
    lips: tuple[float, float, float, float] | None  # lip landmarks' bounding box
    landmarks: np.ndarray | None = None  # [468, 2] face-mesh (x, y) in the frame's pixels

    @property
    def cx(self) -> float:
        return 0.5 * (self.box[0] + self.box[2])


def _lip_indices() -> list[int]:
    from magicinfinite_core.inputs.face_tasks import LIP_POINTS

    return list(LIP_POINTS)


def face_oval_indices() -> list[int]:
    """Face-mesh landmarks of the face oval in order around the face, starting at 10 (forehead top)."""
    from magicinfinite_core.inputs.face_tasks import face_oval_loop

    return list(face_oval_loop())


def upper_face(reading: FaceReading, height: int, width: int) -> np.ndarray | None:
    """[H, W] upper-face mask of one face reading (None without landmarks): `metrics.upper_face_mask`
    of the face oval cut at the nose tip (landmark 1)."""
    if reading.landmarks is None:
        return None
    lm = reading.landmarks
    return metrics.upper_face_mask(lm[face_oval_indices()], float(lm[_MP_NOSE_TIP, 1]), height, width)


def mid_face(reading: FaceReading, upper: np.ndarray | None) -> np.ndarray | None:
    """[H, W] the face oval between the nose tip and the upper lip's top (landmark 0), cheeks included, given
    the reading's `upper_face` mask: where the upper face's rigid hold (`media/rigid_face.py`) fades out,
    measured so a wobble moved there shows."""
    if reading.landmarks is None or upper is None:
        return None
    lm = reading.landmarks
    return metrics.upper_face_mask(lm[face_oval_indices()], float(lm[_MP_LIP_TOP, 1]), *upper.shape) & ~upper


class FaceMeter:
    """mediapipe face detection + face mesh on upscaled face crops, reusable across frames (building
    the graphs costs ~0.5 s each)."""

    def __init__(self, min_side: int = 256, crop: int = 256, detect_side: int = 512,
                 crops: Sequence[tuple[float, float, float]] = (FACE_CROP,)) -> None:
        from magicinfinite_core.inputs.face_tasks import FaceMesh
        from magicinfinite_core.inputs.masks import FaceDetector

        self.min_side, self.crop, self.detect_side = min_side, crop, detect_side
        self.crops = tuple(crops)  # (dx, dy, side) in face sizes; the lip gap is the mean over them
        self.detector = FaceDetector(min_confidence=0.5)
        self.mesh = FaceMesh(max_faces=1, min_detection_confidence=0.3)
        self.lips = _lip_indices()

    def close(self) -> None:
        self.detector.close()
        self.mesh.close()

    def __enter__(self) -> FaceMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _detect(self, img: np.ndarray, max_faces: int) -> list[Any]:
        """Face boxes in `img`'s pixels, detected on a copy of at most `detect_side` px (mediapipe's
        detector works at 128-256 px; converting a 1024 px frame for it is the slow part)."""
        from PIL import Image

        from magicinfinite_core.inputs.masks import FaceBox

        d = min(1.0, self.detect_side / max(img.shape[:2]))
        small = img if d == 1.0 else np.asarray(Image.fromarray(img).resize(
            (max(1, round(img.shape[1] * d)), max(1, round(img.shape[0] * d))), Image.BILINEAR))
        d = small.shape[1] / img.shape[1]
        boxes = [FaceBox(b.x0 / d, b.y0 / d, b.x1 / d, b.y1 / d, b.score)
                 for b in self.detector.detect(small, min_faces=max_faces)]
        return sorted(sorted(boxes, key=lambda b: -b.score)[:max_faces], key=lambda b: b.center[0])

    def _upscaled(self, frame: np.ndarray) -> tuple[np.ndarray, int]:
        from PIL import Image

        h, w = frame.shape[:2]
        s = max(1, math.ceil(self.min_side / max(h, w)))
        return (np.asarray(Image.fromarray(frame).resize((w * s, h * s), Image.BICUBIC)) if s > 1 else frame), s

    def boxes(self, frame: np.ndarray, max_faces: int = 1) -> list[Any]:
        """Face detection only: up to `max_faces` boxes (frame pixels), left to right."""
        img, s = self._upscaled(frame)
        return [b.__class__(b.x0 / s, b.y0 / s, b.x1 / s, b.y1 / s, b.score) for b in self._detect(img, max_faces)]

    def faces(self, frame: np.ndarray, max_faces: int = 1) -> list[FaceReading]:
        """Up to `max_faces` faces (the most confident), left to right."""
        from PIL import Image

        img, s = self._upscaled(frame)
        boxes = self._detect(img, max_faces)
        out = []
        for b in boxes:
            gaps, lips, pts = [], None, None
            for i, (dx, dy, grow) in enumerate(self.crops):
                side = grow * max(b.width, b.height)
                cx, cy = b.center[0] + dx * b.height, b.center[1] + (0.1 + dy) * b.height
                x0, y0 = cx - side / 2, cy - side / 2
                crop = Image.fromarray(img).crop((int(round(x0)), int(round(y0)), int(round(x0 + side)),
                                                  int(round(y0 + side))))
                found = self.mesh.landmarks(np.ascontiguousarray(np.asarray(crop.resize((self.crop, self.crop),
                                                                                         Image.BICUBIC))))
                if not found:
                    continue
                lm = found[0]  # [468, 2] normalised x, y
                gaps.append(abs(lm[_MP_LOWER, 1] - lm[_MP_UPPER, 1]) / max(abs(lm[_MP_CHIN, 1] - lm[_MP_TOP, 1]), 1e-6))
                if i == 0:  # landmarks from the first crop: crop px are side / crop px of the (upscaled) frame
                    pts = ((np.array([x0, y0], np.float32) + lm * side) / s).astype(np.float32)
                    px, py = pts[self.lips, 0], pts[self.lips, 1]
                    lips = (float(px.min()), float(py.min()), float(px.max()), float(py.max()))
            gap = float(np.mean(gaps)) if gaps else float("nan")
            out.append(FaceReading((b.x0 / s, b.y0 / s, b.x1 / s, b.y1 / s), gap, lips, pts))
        return out

    def track(self, frames: np.ndarray, centres: list[float]) -> tuple[np.ndarray, np.ndarray]:
        """Per frame and per expected face (x centres, left to right): (detected [F, K] bool,
        lip gap [F, K], NaN where missing). A detection goes to the nearest expected centre."""
        k = len(centres)
        det = np.zeros((len(frames), k), bool)
        gaps = np.full((len(frames), k), np.nan, np.float32)
        width = frames.shape[2]
        for t, f in enumerate(frames):
            for r in self.faces(f, max_faces=k):
                j = int(np.argmin([abs(r.cx - c) for c in centres]))
                if abs(r.cx - centres[j]) < width / (2 * k) and not det[t, j]:
                    det[t, j] = True
                    gaps[t, j] = r.gap
        return det, gaps


@dataclass
class PortraitRef:
    """The portrait as the pipeline crops it, and where its faces and mouths are."""

    image: np.ndarray  # uint8 [H, W, 3] as the video shows it (model size, or output size for motion latents)
    faces: list[FaceReading]  # left to right
    keep: np.ndarray  # [H, W] True outside every (expanded) mouth: where identity is judged
    mouth_boxes: np.ndarray  # [K, 4] expanded mouth boxes (pixel change measure of several speakers)
    upper: np.ndarray | None = None  # [H, W] upper face of the first face (None without its landmarks)
    mid: np.ndarray | None = None  # [H, W] nose tip to upper lip of the first face (`mid_face`)

    @property
    def centres(self) -> list[float]:
        return [f.cx for f in self.faces]


def mouth_box(lips: tuple[float, float, float, float]) -> np.ndarray:
    """Lip landmarks' box grown by one lip height downward (the jaw drops when the mouth opens);
    `metrics.non_mouth_mask` then adds half its size on every side."""
    x0, y0, x1, y1 = lips
    return np.array([x0, y0, x1, y1 + (y1 - y0)], np.float32)


def _crop_transform(ih: int, iw: int, height: int, width: int) -> tuple[float, float, float, float]:
    """(x0, y0, sx, sy): original pixel (x, y) -> model pixel ((x - x0) * sx, (y - y0) * sy), the
    centre crop + resize of `pipeline.load_portrait`."""
    scale = max(height / ih, width / iw)
    ch, cw = min(ih, math.ceil(height / scale)), min(iw, math.ceil(width / scale))
    return (iw - cw) // 2, (ih - ch) // 2, width / cw, height / ch


def portrait_reference(image: Any, height: int, width: int, meter: FaceMeter, faces: int = 1,
                       name: str = "the portrait") -> PortraitRef:
    """Crop like the pipeline, find `faces` faces with lip landmarks; NoFaceError otherwise.

    Where face mesh cannot read a face this small in the crop (the astronaut's face is 12 px at
    64x64), the landmarks come from the full-resolution picture mapped into the crop; the lip gap is
    a ratio and does not depend on the resolution.
    """
    from magicinfinite_core.inputs.masks import to_rgb_uint8
    from magicinfinite_core.inputs.portrait import load_portrait

    _, img = load_portrait(image, height, width)
    found = [f for f in meter.faces(img, max_faces=faces) if f.lips is not None]
    if len(found) < faces:
        if isinstance(image, (str, Path)):
            from PIL import Image

            with Image.open(image) as im:
                full = np.asarray(im.convert("RGB"))
        else:
            full = to_rgb_uint8(image)
        big = [f for f in meter.faces(full, max_faces=faces) if f.lips is not None]
        if len(big) >= faces:
            x0, y0, sx, sy = _crop_transform(*full.shape[:2], height, width)

            def m(b: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
                return ((b[0] - x0) * sx, (b[1] - y0) * sy, (b[2] - x0) * sx, (b[3] - y0) * sy)

            def pts(lm: np.ndarray | None) -> np.ndarray | None:
                return None if lm is None else np.stack([(lm[:, 0] - x0) * sx, (lm[:, 1] - y0) * sy], -1)

            found = [FaceReading(m(f.box), f.gap, m(f.lips), pts(f.landmarks)) for f in big]
    if len(found) < faces:
        raise NoFaceError(
            f"mediapipe finds {len(found)} face(s) with lips in {name} but the evaluation needs "
            f"{faces}: use a photograph with a clearly visible, frontal human face")
    return _reference(img, found)


def _reference(img: np.ndarray, found: list[FaceReading]) -> PortraitRef:
    h, w = img.shape[:2]
    boxes = np.stack([mouth_box(f.lips) for f in found])
    upper = upper_face(found[0], h, w)
    return PortraitRef(img, found, metrics.non_mouth_mask(boxes, h, w), boxes, upper, mid_face(found[0], upper))


def pipeline_reference(bundle: Any, image: Any, meter: FaceMeter, faces: int = 1, name: str = "the portrait",
                       max_size: int | None = None) -> PortraitRef:
    """The portrait exactly as `generate` shows it for this bundle (`generate.prepare_portrait`): a
    motion-latent bundle moves the whole picture at the output size, so that is the reference; a
    pixel-latent bundle shows the centre crop at the model's size (`portrait_reference`)."""
    import torch

    from magicinfinite_core.generate import GenerateOptions, prepare_portrait

    opts = GenerateOptions(face_fallback="center", **({"max_size": max_size} if max_size else {}))
    prep = prepare_portrait(bundle, image, faces, opts, [])
    if prep.reference is None:
        return portrait_reference(image, bundle.height, bundle.width, meter, faces=faces, name=name)
    img = ((prep.reference.image[0].permute(1, 2, 0).float() + 1) * 127.5).round().clamp(0, 255)
    img = np.ascontiguousarray(img.to(torch.uint8).numpy())
    found = [f for f in meter.faces(img, max_faces=faces) if f.lips is not None]
    if len(found) < faces:
        raise NoFaceError(
            f"mediapipe finds {len(found)} face(s) with lips in {name} but the evaluation needs "
            f"{faces}: use a photograph with a clearly visible, frontal human face")
    return _reference(img, found)


# --------------------------------------------------------------------------------------- measures
def _fill(x: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaN frames (mediapipe missed the face); ends hold the nearest value."""
    x = np.asarray(x, np.float64)
    ok = np.isfinite(x)
    idx = np.arange(len(x))
    return np.interp(idx, idx[ok], x[ok]).astype(np.float32)


def lip_sync(gaps: np.ndarray, wav: np.ndarray, min_share: float = 0.5) -> dict[str, float | None]:
    """Best r (lag within +-2) of the lip gap vs the audio envelope and vs the time-reversed audio's
    envelope, and their difference; None where the lips were measured in < `min_share` of frames."""
    n = len(gaps)
    ok = np.isfinite(gaps)
    out: dict[str, float | None] = {"lip_measured_frames": float(ok.mean()) if n else 0.0}
    if n < 8 or ok.mean() < min_share:
        return {**out, "lipsync_r": None, "lipsync_lag": None, "lipsync_r_reversed": None, "lipsync_r_margin": None}
    g = _fill(gaps)
    fwd = metrics.lipsync(g, audio_envelope(wav, n), MAX_LAG)
    rev = metrics.lipsync(g, reversed_envelope(wav, n), MAX_LAG)
    return {**out, "lipsync_r": fwd["best_r"], "lipsync_lag": fwd["best_lag"], "lipsync_r_reversed": rev["best_r"],
            "lipsync_r_margin": fwd["best_r"] - rev["best_r"]}


def mouth_darkness(frames: np.ndarray, box: np.ndarray) -> np.ndarray:
    """[F] mean darkness (1 - luma) inside the portrait's mouth box: a pixel mouth measure that needs
    no detection in the output (the one issue 14 quotes for the shipped demo)."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    h, w = frames.shape[1:3]
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(max(x1, x0 + 1), w), min(max(y1, y0 + 1), h)
    lum = (frames[:, y0:y1, x0:x1].astype(np.float32) / 255) @ LUMA
    return 1.0 - lum.mean(axis=(1, 2))


def identity(frames: np.ndarray, ref: PortraitRef) -> dict[str, float]:
    """Identity vs the portrait crop outside the mouth: whole video, frame 0 and the last second."""
    return {"psnr": metrics.masked_psnr(frames, ref.image, ref.keep),
            "ssim": metrics.ssim(frames, ref.image, ref.keep),
            "psnr_frame0": metrics.masked_psnr(frames[:1], ref.image, ref.keep),
            "psnr_last_second": metrics.masked_psnr(frames[-FPS:], ref.image, ref.keep)}


def upper_face_measures(frames: np.ndarray, ref: PortraitRef, prefix: str = "upper") -> dict[str, float | None]:
    """Upper-face flicker (grey levels: mean, 95th percentile) and identity (dB, capped) of a video;
    None where the portrait's landmarks (hence the region) are unknown."""
    if ref.upper is None or frames.shape[1:3] != ref.upper.shape:
        return {f"{prefix}_flicker": None, f"{prefix}_flicker_p95": None, f"{prefix}_psnr": None}
    f = metrics.flicker(frames, ref.upper)
    out = {f"{prefix}_flicker": f["mean"], f"{prefix}_flicker_p95": f["p95"],
           f"{prefix}_psnr": metrics.region_psnr(frames, ref.image, ref.upper)}
    if prefix == "upper" and ref.mid is not None:
        out.update({"mid_flicker": metrics.flicker(frames, ref.mid)["mean"],
                    "mid_psnr": metrics.region_psnr(frames, ref.image, ref.mid)})
    return out


def darkness_sync(frames: np.ndarray, wav: np.ndarray, ref: PortraitRef) -> dict:
    """The first face's mouth-box darkness against the voice's envelope and the reversed voice's (best lag
    +-MAX_LAG): a pixel lip-sync measure that needs no face mesh."""
    dark = mouth_darkness(frames, ref.mouth_boxes[0])
    return {"darkness_r": metrics.lipsync(dark, audio_envelope(wav, len(frames)), MAX_LAG)["best_r"],
            "darkness_r_reversed": metrics.lipsync(dark, reversed_envelope(wav, len(frames)), MAX_LAG)["best_r"]}


def talking_measures(frames: np.ndarray, wav: np.ndarray, ref: PortraitRef, meter: FaceMeter) -> dict:
    """Identity, face detection, lip sync (face mesh) and mouth darkness sync of one talking video."""
    det, gaps = meter.track(frames, ref.centres)
    return {**identity(frames, ref), **upper_face_measures(frames, ref), "face_detected": float(det[:, 0].mean()),
            **lip_sync(gaps[:, 0], wav),
            "lip_gap_mean": _nanmean(gaps[:, 0]) if np.isfinite(gaps[:, 0]).mean() >= 0.5 else None,
            **darkness_sync(frames, wav, ref)}


def muted_measures(frames: np.ndarray, ref: PortraitRef, meter: FaceMeter, min_share: float = 0.5) -> dict:
    """Mouth of a video made from digital silence: mean lip gap vs the portrait's own gap (None where
    face mesh read the lips in < `min_share` of frames); mouth-box darkness beside it."""
    det, gaps = meter.track(frames, ref.centres)
    share = float(np.isfinite(gaps[:, 0]).mean())
    m = _nanmean(gaps[:, 0]) if share >= min_share else None  # a few lucky frames are no verdict
    p = float(ref.faces[0].gap)
    md = float(mouth_darkness(frames, ref.mouth_boxes[0]).mean())
    pd = float(mouth_darkness(ref.image[None], ref.mouth_boxes[0])[0])
    return {"muted_lip_gap": m, "portrait_lip_gap": p, "muted_lip_measured_frames": share,
            "muted_excess": None if m is None else m - p, "muted_face_detected": float(det[:, 0].mean()),
            "muted_darkness": md, "portrait_darkness": pd, "muted_darkness_excess": md - pd,
            **upper_face_measures(frames, ref, "muted_upper")}


def _pooled_to_face(frames: np.ndarray, box: np.ndarray, exclude: np.ndarray,
                    face_px: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Frames, box and exclusion mask pooled by an integer factor k so the face is about `face_px` wide, and k:
    the shift search costs ~face area x 121 per frame, too slow at 1024 px."""
    k = max(1, int(round((box[2] - box[0]) / face_px)))
    if k > 1:
        f, h, w = frames.shape[:3]
        h2, w2 = h // k, w // k
        frames = frames[:, : h2 * k, : w2 * k].reshape(f, h2, k, w2, k, 3).mean(axis=(2, 4)).astype(np.uint8)
        exclude = exclude[: h2 * k, : w2 * k].reshape(h2, k, w2, k).any(axis=(1, 3))
        box = np.asarray(box, np.float32) / k
    return frames, box, exclude, k


def head_motion(frames: np.ndarray, box: np.ndarray, exclude: np.ndarray, face_px: int = 96) -> float:
    """`metrics.head_motion`'s vertical motion (px of a face `face_px` wide) on frames pooled so the face is
    about that wide (nodding-vs-still separation does not need more pixels)."""
    frames, box, exclude, _ = _pooled_to_face(frames, box, exclude, face_px)
    return metrics.head_motion(frames, box, exclude=exclude)["motion_y"]


def head_swing(frames: np.ndarray, box: np.ndarray, exclude: np.ndarray, face_px: int = 96) -> dict[str, float]:
    """`head_motion` ("motion") and a nod's size and speed in picture pixels, from one shift search: the 95th
    percentile of the face's vertical shift from frame 0 ("swing") and of its change from one frame to the next
    ("speed"). Why both: a head hold that keeps a nod's size by moving it faster than the model did snaps the head."""
    frames, box, exclude, k = _pooled_to_face(frames, box, exclude, face_px)
    dy = metrics.head_shifts(frames, box, exclude=exclude)[:, 1]
    return {"motion": float(dy.std()), "swing": float(np.percentile(np.abs(dy * k), 95)),
            "speed": float(np.percentile(np.abs(np.diff(dy * k)), 95)) if len(dy) > 1 else 0.0}


def expression(landmarks: np.ndarray) -> np.ndarray:
    """(corner lift, brow lift, mouth width) of one face's face-mesh landmarks [468, 2], in face heights: how far
    the mouth corners sit above the inner lips' middle (a smile raises them, a frown lowers them), the brows above
    the nose tip (surprise raises them with the eyes, a frown lowers them), and the corners' distance apart. Why
    these three: they are what the training world's smile, frown and surprise move
    (`training/data/photo_face._emotion_terms`)."""
    lm = np.asarray(landmarks, np.float64)
    h = max(abs(lm[_MP_CHIN, 1] - lm[_MP_TOP, 1]), 1e-6)
    corner = lm[[_MP_UPPER, _MP_LOWER], 1].mean() - lm[list(_MP_CORNERS), 1].mean()
    brow = lm[_MP_NOSE_TIP, 1] - lm[list(_MP_BROWS), 1].mean()
    width = abs(lm[_MP_CORNERS[0], 0] - lm[_MP_CORNERS[1], 0])
    return np.array([corner, brow, width]) / h


def expression_change(frames: np.ndarray, portrait: np.ndarray, meter: FaceMeter, start: float = 0.5,
                      every: int = 2) -> dict[str, float | None]:
    """The face's `expression` over the video from `start` (a share of its length: an emotion builds up) minus the
    portrait's, every `every`-th frame; None where face mesh reads no face."""
    found = meter.faces(portrait)
    if not found or found[0].landmarks is None:
        raise NoFaceError("no face in the portrait: its expression cannot be read")
    base = expression(found[0].landmarks)
    vals = [expression(r[0].landmarks) for f in frames[int(len(frames) * start) :: every]
            if (r := meter.faces(f)) and r[0].landmarks is not None]
    if not vals:
        return {"corner_lift": None, "brow_lift": None, "mouth_width": None}
    d = np.mean(vals, axis=0) - base
    return {"corner_lift": float(d[0]), "brow_lift": float(d[1]), "mouth_width": float(d[2])}


def _nanmean(x: np.ndarray) -> float | None:
    x = np.asarray(x, np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else None


# ----------------------------------------------------------------------------------- composites
def composite(portraits: list[Any], k: int, size: int = 512) -> np.ndarray:
    """k portraits side by side in one square picture: each tile (size/k wide, size tall) is cut from
    a portrait around its detected face (1.6 face widths wide; black bars where the picture ends),
    portraits reused left to right with a mirror flip on reuse. uint8 [size, size, 3]."""
    from PIL import Image

    from magicinfinite_core.inputs.masks import detect_faces, to_rgb_uint8

    tw = size // k
    tiles = []
    for i in range(k):
        src = portraits[i % len(portraits)]
        img = np.asarray(Image.open(src).convert("RGB")) if isinstance(src, (str, Path)) else to_rgb_uint8(src)
        if (i // len(portraits)) % 2:
            img = img[:, ::-1].copy()
        faces = detect_faces(img)
        if not faces:
            raise NoFaceError(f"no face found in portrait {i} of the composite ({src if isinstance(src, (str, Path)) else 'array'})")
        b = max(faces, key=lambda f: f.width)
        ih, iw = img.shape[:2]
        # 1.6 face widths, never less: a face that would not fit the tile's aspect inside the picture gets
        # black bars (a letterboxed tile) instead of being cut, which face mesh would not find
        cw = min(1.6 * b.width, iw) if 1.6 * b.width * size / tw <= ih else 1.6 * b.width
        ch = cw * size / tw
        cx, cy = b.center[0], b.center[1] + 0.3 * b.height
        x0 = min(max(cx - cw / 2, 0), iw - cw) if cw <= iw else cx - cw / 2
        y0 = min(max(cy - ch / 2, 0), ih - ch) if ch <= ih else cy - ch / 2
        tile = Image.fromarray(img).crop((int(x0), int(y0), int(x0 + cw), int(y0 + ch))).resize((tw, size), Image.LANCZOS)
        tiles.append(np.asarray(tile))
    out = np.zeros((size, size, 3), np.uint8)
    row = np.concatenate(tiles, axis=1)
    x = (size - row.shape[1]) // 2
    out[:, x : x + row.shape[1]] = row
    return out


def turn_tracks(k: int, seconds: float, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """One held-out voice per speaker; speaker (turn % k) talks in turn `turn`, the others are digital
    silence. Turns last max(1 s, seconds / (2k)). Returns (k waveforms, [F] speaker index per frame)."""
    from training.data.speech import sample_voice, speech_track

    n = int(round(seconds * FPS))
    turn = max(FPS, n // (2 * k))
    owner = (np.arange(n) // turn) % k
    rng = np.random.default_rng([int(seed), 23, k])
    voices = [sample_voice(rng, "heldout") for _ in range(k)]
    tracks = [np.zeros(n * HOP, np.float32) for _ in range(k)]
    for a in range(0, n, turn):
        b = min(a + turn, n)
        j = int(owner[a])
        wav, _ = speech_track(rng, voices[j], b - a)
        tracks[j][a * HOP : a * HOP + len(wav)] = wav[: (b - a) * HOP]
    return tracks, owner


def gap_noise_floor(ref: PortraitRef, meter: FaceMeter, frames: int = 30, sigma: float = 0.5, seed: int = 0) -> np.ndarray:
    """[K] mean |delta lip gap| that face mesh reads, per face, off the portrait itself repeated with Gaussian
    pixel noise of `sigma` grey levels (an encoder's size): what the lip-gap rows read on a mouth that does
    not move. Why: an open mouth with teeth showing, 100 px wide, reads 0.0010 per frame (the open smile in the
    bench's 3-person composite; closed mouths 0.0001-0.0002), as much as her silent mouth's change there."""
    rng = np.random.default_rng(seed)
    still = ref.image[None].astype(np.float32) + rng.normal(0.0, sigma, (frames, *ref.image.shape))
    _, gaps = meter.track(np.clip(np.round(still), 0, 255).astype(np.uint8), ref.centres)
    change = np.abs(np.diff(gaps, axis=0))
    return np.array([np.nanmean(c) if np.isfinite(c).any() else np.nan for c in change.T], np.float64)


def speaker_measures(frames: np.ndarray, tracks: list[np.ndarray], owner: np.ndarray, ref: PortraitRef,
                     meter: FaceMeter) -> dict:
    """Per speaker: mouth motion while speaking vs while another speaks, ratio silent/active (target
    <= 0.2), by the pixel change in its mouth box and by |delta lip gap| where face mesh sees it; beside the
    latter, face mesh's own floor on that mouth held still (`gap_noise_floor`, a diagnostic)."""
    n = len(frames)
    floor = gap_noise_floor(ref, meter)
    x = frames.astype(np.float32) / 255
    det, gaps = meter.track(frames, ref.centres)
    rows = []
    for j, wav in enumerate(tracks):
        speaking = (owner[:n] == j) & ~silent_frames(wav, n)
        other = owner[:n] != j
        x0, y0, x1, y1 = (int(round(v)) for v in ref.mouth_boxes[j])
        change = np.abs(np.diff(x[:, max(y0, 0):y1, max(x0, 0):x1], axis=0)).mean(axis=(1, 2, 3))  # into frame t+1
        act, sil = speaking[1:], other[1:]
        row: dict[str, float | None] = {"face_detected": float(det[:, j].mean()),
                                        "gap_noise_floor": float(floor[j]) if np.isfinite(floor[j]) else None}
        a, s = float(change[act].mean()) if act.any() else float("nan"), float(change[sil].mean()) if sil.any() else float("nan")
        row.update({"pixel_active": a, "pixel_silent": s, "pixel_ratio": s / max(a, 1e-8)})
        dg = np.abs(np.diff(gaps[:, j]))
        ok = np.isfinite(dg)
        if (ok & act).sum() >= 3 and (ok & sil).sum() >= 3:
            ga, gs = float(dg[ok & act].mean()), float(dg[ok & sil].mean())
            row.update({"gap_active": ga, "gap_silent": gs, "gap_ratio": gs / max(ga, 1e-8)})
        else:
            row.update({"gap_active": None, "gap_silent": None, "gap_ratio": None})
        rows.append(row)
    gap_ratios = [r["gap_ratio"] for r in rows if r["gap_ratio"] is not None]
    over_floor = [r["gap_silent"] / r["gap_noise_floor"] for r in rows if r["gap_silent"] is not None and r["gap_noise_floor"]]
    return {"speakers": rows, "pixel_ratio_max": max(r["pixel_ratio"] for r in rows),
            "gap_ratio_max": max(gap_ratios) if len(gap_ratios) == len(rows) else None,
            "gap_silent_over_floor_max": max(over_floor) if len(over_floor) == len(rows) else None,
            "face_detected_min": min(r["face_detected"] for r in rows)}


# ------------------------------------------------------------------------------------- strips, io
def read_video(path: str | Path) -> np.ndarray:
    """All frames of an mp4, uint8 [F, H, W, 3]."""
    from magicinfinite_core.media.video_io import iter_video_frames

    return np.stack(list(iter_video_frames(path)))


def _face_square(box: Any, h: int, w: int, grow: float = 1.5) -> tuple[int, int, int, int]:
    """A square around a face box, `grow` times its larger side, moved inside the frame."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = int(round(min(grow * max(x1 - x0, y1 - y0), h, w)))
    left = int(round(min(max((x0 + x1) / 2 - side / 2, 0), w - side)))
    top = int(round(min(max((y0 + y1) / 2 - side / 2, 0), h - side)))
    return left, top, left + side, top + side


def save_strip(path: str | Path, portrait: np.ndarray, frames: np.ndarray, count: int = 8, cell: int = 128,
               face_box: Any = None, overview: int = 256, zoom: int = 192) -> Path:
    """PNG a person looks at: row 1 the portrait, then `count` frames evenly spread over the video (first and
    last included), small frames upscaled (nearest) to `cell` px, large ones shrunk to `overview` px; with
    `face_box`, row 2 the same frames cut around the face at FULL resolution (a square 1.5 face widths
    wide, upscaled by an integer factor to >= `zoom` px, never shrunk): where flicker and lips show."""
    from PIL import Image

    idx = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    cells = [portrait] + [frames[i] for i in idx]
    h, w = portrait.shape[:2]

    def fit(img: np.ndarray) -> np.ndarray:
        s = max(1, cell // max(img.shape[:2]))
        if s > 1:
            return np.repeat(np.repeat(img, s, 0), s, 1)
        if max(img.shape[:2]) > overview:
            r = overview / max(img.shape[:2])
            return np.asarray(Image.fromarray(img).resize((max(1, round(img.shape[1] * r)), max(1, round(img.shape[0] * r))),
                                                          Image.LANCZOS))
        return img

    def row(imgs: list[np.ndarray]) -> np.ndarray:
        gap = np.full((imgs[0].shape[0], 4, 3), 255, np.uint8)
        parts: list[np.ndarray] = []
        for c in imgs:
            parts += [c, gap]
        return np.concatenate(parts[:-1], axis=1)

    rows = [row([fit(c) for c in cells])]
    if face_box is not None:
        x0, y0, x1, y1 = _face_square(face_box, h, w)
        k = max(1, math.ceil(zoom / max(x1 - x0, 1)))
        rows.append(row([np.repeat(np.repeat(c[y0:y1, x0:x1], k, 0), k, 1) for c in cells]))
    width = max(r.shape[1] for r in rows)
    out = np.full((sum(r.shape[0] for r in rows) + 4 * (len(rows) - 1), width, 3), 255, np.uint8)
    y = 0
    for r in rows:
        out[y : y + r.shape[0], : r.shape[1]] = r
        y += r.shape[0] + 4
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(out).save(path)
    return path


def temp_dir(prefix: str = "real_photos_") -> Path:
    """A fresh temporary folder for portraits and videos."""
    return Path(tempfile.mkdtemp(prefix=prefix))


# ----------------------------------------------------------------------------------- evaluation
@dataclass
class Settings:
    """What the real-photo evaluation generates (shrink for a quick check)."""

    seconds: float = 8.0  # length of each talking / muted / control / multi-speaker / test-picture video
    clips: int = 2  # held-out voices and prompt phrasings per portrait
    long_seconds: float = 60.0  # the drift / seam video
    skip_long: bool = False
    speakers: tuple[int, ...] = (2, 3)
    control: bool = True
    prompt: str | None = None  # None: a held-out "still" phrasing (then reused as the control's "still" video)
    seed: int = 0
    device: str | None = None
    pictures: tuple[str, ...] = ("full_length", "letterboxed", "greyscale", "open_smile")  # of test_pictures()
    speed_seconds: float = 8.0  # the 512 x 512 speed video (4-step only); 0 = no speed runs
    cli_first_frame: bool = True  # also time `magicinfinite generate` (command -> first frame), 4-step only


class _Runner:
    """generate() + read back + timing for one model (base or distilled)."""

    def __init__(self, bundle: Any, distilled: bool, out: Path, settings: Settings) -> None:
        self.bundle, self.distilled, self.out, self.s = bundle, distilled, out, settings
        self.mode = "distilled" if distilled else "base"
        self.timed: list[dict] = []  # per video: seconds, sample_s, decode_s, wall_s

    def __call__(self, portrait: Any, audio: Any, prompt: str, name: str, speakers: Any = None,
                 timed: bool = True) -> tuple[np.ndarray, Any]:
        from magicinfinite_core.generate import generate

        path, rep = generate(portrait, audio, prompt, model=self.bundle, out=self.out / f"{self.mode}_{name}.mp4",
                             distilled=self.distilled, speakers=speakers, seed=self.s.seed, device=self.s.device)
        if timed:
            self.timed.append({"video": name, "seconds": rep.seconds, "sample_s": rep.sample_s,
                               "decode_s": rep.decode_s, "wall_s": rep.wall_s, "size": [rep.height, rep.width]})
        return read_video(path), rep

    def speed(self) -> dict:
        """Video-seconds per wall-second of sampling + decode, over every timed video of this run."""
        if not self.timed:
            return {}
        sec = sum(t["seconds"] for t in self.timed)
        work = sum(t["sample_s"] + t["decode_s"] for t in self.timed)
        return {"video_seconds": sec, "sample_decode_s": work, "video_s_per_wall_s": sec / max(work, 1e-9),
                "sample_s": sum(t["sample_s"] for t in self.timed), "decode_s": sum(t["decode_s"] for t in self.timed),
                "wall_s": sum(t["wall_s"] for t in self.timed)}


def _wav(x: np.ndarray) -> tuple[np.ndarray, int]:
    return (np.asarray(x, np.float32)[None], SAMPLE_RATE)


def _seams(rep: Any, bundle: Any, distilled: bool, window: int = 33, overlap: int = 8) -> list[int]:
    """Video frames where the sampler's last step hands one window over to the next (as
    training.eval.evaluate.evaluate_long counts them): latent frame k starts at video frame 4k - 3."""
    from magicinfinite_core.config import SamplerConfig
    from magicinfinite_core.sampling.sampler import step_plans
    from magicinfinite_core.sampling.sliding_window import seam_frames

    steps, shift, _, ts = bundle.resolve_sampling(distilled)
    cfg = SamplerConfig(steps=steps, shift=shift, window_frames=window, overlap_frames=overlap, distilled_timesteps=ts)
    plan = step_plans(int(rep.latent_shape[1]), cfg, int(rep.steps))[-1]
    return sorted({4 * k - 3 for k in seam_frames(plan) if k > 0})


def seam_measures(frames: np.ndarray, seams: list[int], mask: np.ndarray | None = None, suffix: str = "") -> dict:
    """Seam score (seams against the other latent-frame starts), the pre-session-12 estimator for comparison,
    and what the score gives by chance (random latent-frame starts: mean, 95th percentile, p-value)."""
    d = metrics.frame_changes(frames, mask)
    chance = metrics.seam_chance(d, seams)
    return {f"seam_score{suffix}": metrics.seam_score(d, seams),
            f"seam_score_vs_median{suffix}": metrics.seam_score_vs_median(d, seams),
            f"seam_chance_mean{suffix}": chance["mean"], f"seam_chance_p95{suffix}": chance["p95"],
            f"seam_p_value{suffix}": chance["p_value"]}


def nod_auc_by_phrase(control: list[dict]) -> dict[str, float]:
    """AUC of every still video against the nodding videos of one held-out nodding phrase, per phrase.

    Why: the prompt encoder may read one paraphrase as a nod and another not (the demo's MiniLM puts
    "bobbing the head in agreement" nearer "keeping the head still" than "nodding"); the pooled AUC
    hides which."""
    stills = [c["still"] for c in control]
    out: dict[str, float] = {}
    for phrase in phrases_for_split("heldout")["action"]["nodding"]:
        nods = [c["nodding"] for c in control if phrase in c["prompt_nodding"]]
        if nods:
            out[phrase] = metrics.separability(stills, nods)["auc"]
    return out


def _mean(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None and np.isfinite(r[key])]
    return float(np.mean(vals)) if vals else None


def _max(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None and np.isfinite(r[key])]
    return float(np.max(vals)) if vals else None


def _min(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None and np.isfinite(r[key])]
    return float(np.min(vals)) if vals else None


def own_size(image: Any) -> tuple[int, int]:
    """The output size issue 26 asks for: the picture's own, up to 1024 px a side (`framing.output_size`)."""
    from magicinfinite_core.inputs.framing import output_size
    from magicinfinite_core.inputs.portrait import read_portrait

    return output_size(*read_portrait(image).shape[:2])


def face_found_share(frames: np.ndarray, faces: int, meter: FaceMeter) -> float:
    """Share of frames in which mediapipe face detection finds at least `faces` faces (no face mesh)."""
    if not len(frames):
        return 0.0
    return float(np.mean([len(meter.boxes(f, faces)) >= faces for f in frames]))


def square_picture(path: Path, side: int, workdir: Path) -> Path:
    """The picture's largest square around its face, resized to `side` px (the speed run's 512 x 512 input)."""
    from PIL import Image

    img = _rgb(path)
    f = _main_face(img, str(path))
    x0, y0, x1, y1 = _face_square((f.x0, f.y0, f.x1, f.y1), *img.shape[:2], grow=100.0)  # as large as fits
    out = workdir / f"{path.stem}_{side}.png"
    Image.fromarray(img[y0:y1, x0:x1]).resize((side, side), Image.LANCZOS).save(out)
    return out


def cli_first_frame(model: str | Path, portrait: Path, wav: np.ndarray, prompt: str, out: Path,
                    device: str | None = None, timeout_s: float = 600.0) -> dict:
    """`magicinfinite generate` (the streaming default, 4-step generator) as a new process, as a user types
    it: command -> first muxed frame (`first_frame_since_process_s`: imports and model load included) and
    its video-seconds per wall-second."""
    import json
    import subprocess
    import sys
    import time

    from scipy.io import wavfile

    audio = out.with_suffix(".wav")
    wavfile.write(audio, SAMPLE_RATE, (np.clip(wav, -1, 1) * 32767).astype(np.int16))
    cmd = [sys.executable, "-m", "runner.cli", "generate", "--portrait", str(portrait), "--audio", str(audio),
           "--prompt", prompt, "--out", str(out), "--model", str(model), "--distilled", "--quiet", "--json",
           *(["--device", device] if device else [])]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=Path(__file__).resolve().parents[2])
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["failed"])[-1], "command_wall_s": wall}
    rep = json.loads(res.stdout)
    return {"first_frame_since_command_s": rep.get("first_frame_since_process_s"),
            "first_frame_after_load_s": rep.get("first_frame_s"), "realtime_factor": rep.get("realtime_factor"),
            "seconds": rep.get("seconds"), "wall_s": rep.get("wall_s"), "command_wall_s": wall}


def evaluate_model(bundle: Any, distilled: bool, portraits: list[Path], settings: Settings, out: Path,
                   strips: Path | None, meter: FaceMeter, model_path: str | Path | None = None,
                   group: list[Path] | None = None, pictures: list[TestPicture] | None = None) -> dict:
    """All real-photo measures for one model; JSON-able (None where a measure is undefined).

    `group`: the photos the multi-speaker composites are cut from (default: `portraits`); `pictures`: the
    hard test pictures (default: none); `model_path`: the bundle folder, for the CLI first-frame timing."""
    s = settings
    run = _Runner(bundle, distilled, out, s)
    refs = [pipeline_reference(bundle, p, meter, name=str(p)) for p in portraits]  # NoFaceError before any work
    # untimed warm-up: the first call pays one-time costs (allocator, codecs) that are not the model's speed
    run(portraits[0], _wav(np.zeros(SAMPLE_RATE, np.float32)), "", "warmup", timed=False)

    def strip(name: str, ref: PortraitRef, frames: np.ndarray) -> None:
        if strips is not None and frames.shape[1:3] == ref.image.shape[:2]:
            save_strip(strips / f"{run.mode}_{name}.png", ref.image, frames, face_box=ref.faces[0].box)

    clips, control, sizes = [], [], []
    for pi, (p, ref) in enumerate(zip(portraits, refs, strict=True)):
        for c in range(s.clips):
            seed = s.seed + 1000 * pi + c
            wav, info = heldout_speech(s.seconds, seed)
            still_prompt = heldout_prompt(seed, "still")
            prompt = s.prompt if s.prompt is not None else still_prompt
            name = f"{Path(p).stem}_c{c}"
            frames, rep = run(p, _wav(wav), prompt, name)
            sizes.append({"picture": Path(p).name, "own": list(own_size(p)), "video": [rep.height, rep.width]})
            strip(name, ref, frames)
            row = {"portrait": Path(p).name, "clip": c, **info, "prompt": prompt,
                   **talking_measures(frames, wav, ref, meter)}
            muted, _ = run(p, _wav(np.zeros_like(wav)), prompt, name + "_muted")
            strip(name + "_muted", ref, muted)
            row.update(muted_measures(muted, ref, meter))
            clips.append(row)
            if s.control:
                excl = ~ref.keep
                box = np.asarray(ref.faces[0].box, np.float32)
                still = frames if s.prompt is None else run(p, _wav(wav), still_prompt, name + "_still")[0]
                nod, _ = run(p, _wav(wav), heldout_prompt(seed, "nodding"), name + "_nodding")
                strip(name + "_nodding", ref, nod)
                row = {"portrait": Path(p).name, "clip": c,
                       "still": head_motion(still, box, excl), "nodding": head_motion(nod, box, excl),
                       "prompt_nodding": heldout_prompt(seed, "nodding")}
                if ref.upper is not None:  # the same on the upper face only: a talking jaw does not move it
                    row.update({"still_upper": head_motion(still, box, ~ref.upper),
                                "nodding_upper": head_motion(nod, box, ~ref.upper)})
                control.append(row)
    keys = ("psnr", "ssim", "psnr_frame0", "psnr_last_second", "upper_flicker", "upper_flicker_p95", "upper_psnr",
            "mid_flicker", "mid_psnr",
            "face_detected", "lip_measured_frames", "lipsync_r",
            "lipsync_r_reversed", "lipsync_r_margin", "darkness_r", "darkness_r_reversed", "muted_lip_gap",
            "portrait_lip_gap", "muted_lip_measured_frames", "muted_excess", "muted_face_detected", "muted_darkness",
            "portrait_darkness", "muted_darkness_excess", "muted_upper_flicker", "muted_upper_psnr")
    res: dict[str, Any] = {"summary": {k: _mean(clips, k) for k in keys}, "clips": clips}
    res["summary"].update({"upper_flicker_max": _max(clips, "upper_flicker"), "muted_excess_max": _max(clips, "muted_excess"),
                           "upper_psnr_min": _min(clips, "upper_psnr")})
    res["summary"]["lipsync_clips_measured"] = sum(r["lipsync_r"] is not None for r in clips)
    if control:
        sep = metrics.separability([c["still"] for c in control], [c["nodding"] for c in control])
        # beside the target's AUC (all stills against all nods, across photos): the share of same photo + voice
        # pairs whose nodding video moves more (a photo that moves more in both does not blur it)
        wins = float(np.mean([c["nodding"] > c["still"] for c in control]))
        upper = [c for c in control if "still_upper" in c]
        sep_upper = metrics.separability([c["still_upper"] for c in upper], [c["nodding_upper"] for c in upper])
        by_phrase = nod_auc_by_phrase(control)
        res["control"] = {"nod_vs_still_auc": sep["auc"], "cohen_d": sep["cohen_d"], "nod_wins_same_photo_voice": wins,
                          "nod_vs_still_auc_upper_face": sep_upper["auc"] if upper else None,
                          "nod_vs_still_auc_by_phrase": by_phrase,
                          "nod_vs_still_auc_worst_phrase": min(by_phrase.values()) if by_phrase else None,
                          "motion_y_still": _mean(control, "still"), "motion_y_nodding": _mean(control, "nodding"),
                          "pairs": control}

    # hard pictures: each must generate and show its face; one talking and one muted video each
    rows = []
    for i, pic in enumerate(pictures or []):
        wav, info = heldout_speech(s.seconds, s.seed + 500 + i)
        prompt = s.prompt if s.prompt is not None else heldout_prompt(s.seed + 500 + i, "still")
        row: dict[str, Any] = {"picture": pic.name, "how": pic.how, "file": str(pic.path), **info}
        try:
            frames, rep = run(pic.path, _wav(wav), prompt, f"picture_{pic.name}")
        except MagicInfiniteError as exc:  # the target is that it generates: record why not and go on
            rows.append({**row, "generated": False, "error": str(exc), "face_found": 0.0})
            continue
        sizes.append({"picture": pic.name, "own": list(own_size(pic.path)), "video": [rep.height, rep.width]})
        row.update({"generated": True, "face_found": face_found_share(frames, pic.faces, meter),
                    "size": [rep.height, rep.width], "notes": rep.notes})
        try:
            ref = pipeline_reference(bundle, pic.path, meter, name=pic.name)
        except NoFaceError as exc:
            rows.append({**row, "measure_error": str(exc)})
            continue
        strip(f"picture_{pic.name}", ref, frames)
        row.update(talking_measures(frames, wav, ref, meter))
        muted, _ = run(pic.path, _wav(np.zeros_like(wav)), prompt, f"picture_{pic.name}_muted")
        strip(f"picture_{pic.name}_muted", ref, muted)
        row.update(muted_measures(muted, ref, meter))
        rows.append(row)
    if rows:
        res["pictures"] = {"generated": sum(bool(r["generated"]) for r in rows), "total": len(rows),
                           "face_found_min": min(r["face_found"] for r in rows),
                           "muted_excess_max": _max(rows, "muted_excess"), "rows": rows}

    for k in s.speakers:
        comp = composite(group or portraits, k)
        ref = pipeline_reference(bundle, comp, meter, faces=k, name=f"the {k}-face composite")
        tracks, owner = turn_tracks(k, max(s.seconds, 2.0 * k), s.seed + 7 * k)
        boxes = [list(f.box) for f in ref.faces]  # speaker masks from face detection
        prompt = s.prompt if s.prompt is not None else heldout_prompt(s.seed + k, "still")
        frames, _ = run(comp, [_wav(t) for t in tracks], prompt, f"speakers{k}", speakers=boxes)
        strip(f"speakers{k}", ref, frames)
        res[f"speakers_{k}"] = {"boxes": boxes, "face_found": face_found_share(frames, k, meter),
                                **speaker_measures(frames, tracks, owner, ref, meter)}
    found = [res["pictures"]["face_found_min"]] if rows else []
    found += [res[f"speakers_{k}"]["face_found"] for k in s.speakers]
    res["all_pictures"] = {"generated_share": (sum(bool(r["generated"]) for r in rows) + len(s.speakers))
                           / max(len(rows) + len(s.speakers), 1) if (rows or s.speakers) else None,
                           "face_found_min": min(found) if found else None,
                           "muted_excess_max": max([v for v in (res["summary"]["muted_excess_max"],
                                                                res.get("pictures", {}).get("muted_excess_max"))
                                                    if v is not None], default=None)}
    res["output_size"] = {"videos": sizes, "own_size_share": float(np.mean([v["own"] == v["video"] for v in sizes]))
                          if sizes else None}

    if not s.skip_long:
        wav, info = heldout_speech(s.long_seconds, s.seed + 100)
        p, ref = portraits[0], refs[0]
        prompt = s.prompt if s.prompt is not None else heldout_prompt(s.seed + 100, "still")
        frames, rep = run(p, _wav(wav), prompt, "long")
        strip("long", ref, frames)
        seams = _seams(rep, bundle, distilled)
        t = talking_measures(frames, wav, ref, meter)
        long = {"portrait": Path(p).name, "seconds": rep.seconds, **info,
                "drift_db": metrics.drift(frames, ref.image, ref.keep, span_s=1.0)["drift_db"],
                "psnr_first_second": metrics.masked_psnr(frames[:FPS], ref.image, ref.keep),
                "psnr_last_second": t["psnr_last_second"], "seams": len(seams), **seam_measures(frames, seams),
                "face_detected": t["face_detected"], "lipsync_r": t["lipsync_r"],
                "lipsync_r_margin": t["lipsync_r_margin"], "upper_flicker": t["upper_flicker"],
                "speed_video_s_per_wall_s": rep.seconds / max(rep.sample_s + rep.decode_s, 1e-9)}
        if ref.upper is not None:
            per_second = [metrics.region_psnr(frames[a : a + FPS], ref.image, ref.upper)
                          for a in range(0, len(frames) - FPS + 1, FPS)]
            first = per_second[0]
            last = metrics.region_psnr(frames[-FPS:], ref.image, ref.upper)
            trend = metrics.drift_trend(per_second)
            long.update({"upper_psnr_first_second": first, "upper_psnr_last_second": last, "upper_drift_db": first - last,
                         "upper_psnr_per_second": per_second, "upper_drift_fitted_db": trend["fitted_db"],
                         "upper_drift_fitted_ci95_db": trend["ci95_db"], "upper_psnr_scatter_db": trend["scatter_db"],
                         **seam_measures(frames, seams, ref.upper, "_upper")})
        res["long"] = long
    res["speed"] = run.speed()

    if distilled and s.speed_seconds > 0:  # issue 26's speed row: 4-step, 512 x 512 output
        sq = square_picture(portraits[0], 512, out)
        wav, _ = heldout_speech(s.speed_seconds, s.seed + 300)
        prompt = heldout_prompt(s.seed + 300, "still")
        _, rep = run(sq, _wav(wav), prompt, "speed512", timed=False)
        res["speed_512"] = {"size": [rep.height, rep.width], "seconds": rep.seconds, "sample_s": rep.sample_s,
                            "decode_mux_s": rep.decode_s, "wall_s": rep.wall_s,
                            "video_s_per_wall_s": rep.seconds / max(rep.sample_s + rep.decode_s, 1e-9),
                            "video_s_per_wall_s_whole_call": rep.seconds / max(rep.wall_s, 1e-9)}
        if s.cli_first_frame and model_path is not None:
            res["speed_512"]["cli"] = cli_first_frame(model_path, sq, wav, prompt, out / "cli_speed512.mp4", s.device)
    return res


def json_safe(x: Any) -> Any:
    """NaN / inf -> None (strict JSON), numpy scalars -> Python."""
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x
