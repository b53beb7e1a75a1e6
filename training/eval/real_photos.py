"""Evaluate a model bundle on REAL photographs through the real pipeline (issue 14's target table).

World clips have a ground truth; real photographs do not, so every measure here is read from the
generated pixels with mediapipe and compared with the portrait or the audio:

* identity: PSNR / SSIM outside the (expanded) mouth vs the portrait exactly as the pipeline crops
  it (`pipeline.load_portrait`); the mouth comes from face-mesh lip landmarks on that crop.
* face detected: share of output frames in which mediapipe face detection finds the face.
* lip sync: face-mesh inner-lip gap (landmarks 13/14 over the face height 10/152) per frame vs the
  audio's RMS envelope per 25 fps frame (dB, floored 40 dB below the peak -- the scale the world's
  lips follow, training/data/mouth.py), best r within lag +-2; the control is the same gap vs the
  envelope of the time-reversed audio. A mouth that merely moves scores alike on both.
* muted: a video from digital silence; its mean lip gap vs the portrait's own (closed) gap.
* drift: identity PSNR of the first second minus the last second of a long video.
* several speakers: turn-taking audio (one speaker at a time); per speaker the mouth's motion while
  it speaks vs while another speaks.

mediapipe does not find faces of a few dozen pixels, so every frame is upscaled (bicubic) to >= 256
px, faces are found with face detection, and face mesh runs on a square crop around each face.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from magicinfinite_core.errors import MagicInfiniteError
from training.data.mouth import FPS, HOP, SAMPLE_RATE
from training.eval import metrics

MAX_LAG = 2
_MP_UPPER, _MP_LOWER, _MP_TOP, _MP_CHIN = 13, 14, 10, 152
SILENCE_DBFS = -45.0  # a frame this quiet counts as silent (the speaker does not speak)
ENVELOPE_RANGE_DB = 40.0


class NoFaceError(MagicInfiniteError):
    """A portrait in which mediapipe finds no face: nothing to measure identity or lips against."""


# -------------------------------------------------------------------------------------- inputs
def default_portraits(workdir: str | Path) -> list[Path]:
    """The held-out real portraits for now: scikit-image's astronaut (saved as PNG) and matplotlib's
    grace_hopper.jpg -- both ship offline with installed packages (public domain, NASA / US Navy)."""
    import matplotlib.cbook as cbook
    from PIL import Image
    from skimage import data

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    astro = workdir / "astronaut.png"
    if not astro.is_file():
        Image.fromarray(data.astronaut()).save(astro)
    return [astro, Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))]


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

    @property
    def cx(self) -> float:
        return 0.5 * (self.box[0] + self.box[2])


def _lip_indices() -> list[int]:
    from magicinfinite_core.inputs.face_tasks import LIP_POINTS

    return list(LIP_POINTS)


class FaceMeter:
    """mediapipe face detection + face mesh on upscaled face crops, reusable across frames (building
    the graphs costs ~0.5 s each)."""

    def __init__(self, min_side: int = 256, crop: int = 256) -> None:
        from magicinfinite_core.inputs.face_tasks import FaceMesh
        from magicinfinite_core.inputs.masks import FaceDetector

        self.min_side, self.crop = min_side, crop
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

    def faces(self, frame: np.ndarray, max_faces: int = 1) -> list[FaceReading]:
        """Up to `max_faces` faces (the most confident), left to right."""
        from PIL import Image

        h, w = frame.shape[:2]
        s = max(1, math.ceil(self.min_side / max(h, w)))
        img = np.asarray(Image.fromarray(frame).resize((w * s, h * s), Image.BICUBIC)) if s > 1 else frame
        boxes = self.detector.detect(img, min_faces=max_faces)
        boxes = sorted(sorted(boxes, key=lambda b: -b.score)[:max_faces], key=lambda b: b.center[0])
        out = []
        for b in boxes:
            side = 1.8 * max(b.width, b.height)
            cx, cy = b.center[0], b.center[1] + 0.1 * b.height
            x0, y0 = cx - side / 2, cy - side / 2
            crop = Image.fromarray(img).crop((int(round(x0)), int(round(y0)), int(round(x0 + side)), int(round(y0 + side))))
            crop = np.ascontiguousarray(np.asarray(crop.resize((self.crop, self.crop), Image.BICUBIC)))
            found = self.mesh.landmarks(crop)
            gap, lips = float("nan"), None
            if found:
                lm = found[0]  # [468, 2] normalised x, y
                gap = abs(lm[_MP_LOWER, 1] - lm[_MP_UPPER, 1]) / max(abs(lm[_MP_CHIN, 1] - lm[_MP_TOP, 1]), 1e-6)
                px = np.array([(x0 + lm[i, 0] * side) / s for i in self.lips])
                py = np.array([(y0 + lm[i, 1] * side) / s for i in self.lips])
                lips = (float(px.min()), float(py.min()), float(px.max()), float(py.max()))
            out.append(FaceReading((b.x0 / s, b.y0 / s, b.x1 / s, b.y1 / s), float(gap), lips))
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

    image: np.ndarray  # uint8 [H, W, 3] at the model's resolution
    faces: list[FaceReading]  # left to right
    keep: np.ndarray  # [H, W] True outside every (expanded) mouth: where identity is judged
    mouth_boxes: np.ndarray  # [K, 4] expanded mouth boxes (pixel change measure of several speakers)

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

            found = [FaceReading(m(f.box), f.gap, m(f.lips)) for f in big]
    if len(found) < faces:
        raise NoFaceError(
            f"mediapipe finds {len(found)} face(s) with lips in {name} but the evaluation needs "
            f"{faces}: use a photograph with a clearly visible, frontal human face")
    boxes = np.stack([mouth_box(f.lips) for f in found])
    return PortraitRef(img, found, metrics.non_mouth_mask(boxes, height, width), boxes)


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
    lum = (frames[:, y0:y1, x0:x1].astype(np.float32) / 255) @ np.array([0.299, 0.587, 0.114], np.float32)
    return 1.0 - lum.mean(axis=(1, 2))


def identity(frames: np.ndarray, ref: PortraitRef) -> dict[str, float]:
    """Identity vs the portrait crop outside the mouth: whole video, frame 0 and the last second."""
    return {"psnr": metrics.masked_psnr(frames, ref.image, ref.keep),
            "ssim": metrics.ssim(frames, ref.image, ref.keep),
            "psnr_frame0": metrics.masked_psnr(frames[:1], ref.image, ref.keep),
            "psnr_last_second": metrics.masked_psnr(frames[-FPS:], ref.image, ref.keep)}


def talking_measures(frames: np.ndarray, wav: np.ndarray, ref: PortraitRef, meter: FaceMeter) -> dict:
    """Identity, face detection, lip sync (face mesh) and mouth darkness sync of one talking video."""
    det, gaps = meter.track(frames, ref.centres)
    dark = mouth_darkness(frames, ref.mouth_boxes[0])
    env = audio_envelope(wav, len(frames))
    dark_fwd = metrics.lipsync(dark, env, MAX_LAG)["best_r"]
    dark_rev = metrics.lipsync(dark, reversed_envelope(wav, len(frames)), MAX_LAG)["best_r"]
    return {**identity(frames, ref), "face_detected": float(det[:, 0].mean()), **lip_sync(gaps[:, 0], wav),
            "lip_gap_mean": _nanmean(gaps[:, 0]) if np.isfinite(gaps[:, 0]).mean() >= 0.5 else None, "darkness_r": dark_fwd, "darkness_r_reversed": dark_rev}


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
            "muted_darkness": md, "portrait_darkness": pd, "muted_darkness_excess": md - pd}


def _nanmean(x: np.ndarray) -> float | None:
    x = np.asarray(x, np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else None


# ----------------------------------------------------------------------------------- composites
def composite(portraits: list[Any], k: int, size: int = 512) -> np.ndarray:
    """k portraits side by side in one square picture: each tile (size/k wide, size tall) is cut from
    a portrait around its detected face (1.6 face widths wide, as tall as the tile's aspect allows),
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
        cw = min(1.6 * b.width, iw, ih * tw / size)
        ch = cw * size / tw
        cx, cy = b.center[0], b.center[1] + 0.3 * b.height
        x0 = min(max(cx - cw / 2, 0), iw - cw)
        y0 = min(max(cy - ch / 2, 0), ih - ch)
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


def speaker_measures(frames: np.ndarray, tracks: list[np.ndarray], owner: np.ndarray, ref: PortraitRef,
                     meter: FaceMeter) -> dict:
    """Per speaker: mouth motion while speaking vs while another speaks, ratio silent/active (target
    <= 0.2), by the pixel change in its mouth box and by |delta lip gap| where face mesh sees it."""
    n = len(frames)
    x = frames.astype(np.float32) / 255
    det, gaps = meter.track(frames, ref.centres)
    rows = []
    for j, wav in enumerate(tracks):
        speaking = (owner[:n] == j) & ~silent_frames(wav, n)
        other = owner[:n] != j
        x0, y0, x1, y1 = (int(round(v)) for v in ref.mouth_boxes[j])
        change = np.abs(np.diff(x[:, max(y0, 0):y1, max(x0, 0):x1], axis=0)).mean(axis=(1, 2, 3))  # into frame t+1
        act, sil = speaking[1:], other[1:]
        row: dict[str, float | None] = {"face_detected": float(det[:, j].mean())}
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
    return {"speakers": rows, "pixel_ratio_max": max(r["pixel_ratio"] for r in rows),
            "gap_ratio_max": max(gap_ratios) if len(gap_ratios) == len(rows) else None,
            "face_detected_min": min(r["face_detected"] for r in rows)}


# ------------------------------------------------------------------------------------- strips, io
def read_video(path: str | Path) -> np.ndarray:
    """All frames of an mp4, uint8 [F, H, W, 3]."""
    from magicinfinite_core.media.video_io import iter_video_frames

    return np.stack(list(iter_video_frames(path)))


def save_strip(path: str | Path, portrait: np.ndarray, frames: np.ndarray, count: int = 8, cell: int = 128) -> Path:
    """PNG: the portrait crop, then `count` frames evenly spread over the video (first and last
    included), each upscaled (nearest) to `cell` px so a 64 px video stays readable."""
    from PIL import Image

    idx = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    cells = [portrait] + [frames[i] for i in idx]
    h, w = portrait.shape[:2]
    s = max(1, cell // max(h, w))
    gap = np.full((h * s, 4, 3), 255, np.uint8)
    row = []
    for c in cells:
        row += [np.repeat(np.repeat(c, s, 0), s, 1), gap]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(row[:-1], axis=1)).save(path)
    return path


def temp_dir(prefix: str = "real_photos_") -> Path:
    """A fresh temporary folder for portraits and videos."""
    return Path(tempfile.mkdtemp(prefix=prefix))


# ----------------------------------------------------------------------------------- evaluation
@dataclass
class Settings:
    """What the real-photo evaluation generates (shrink for a quick check)."""

    seconds: float = 8.0  # length of each talking / muted / control / multi-speaker video
    clips: int = 2  # held-out voices and prompt phrasings per portrait
    long_seconds: float = 60.0  # the drift / seam video
    skip_long: bool = False
    speakers: tuple[int, ...] = (2, 3)
    control: bool = True
    prompt: str | None = None  # None: a held-out "still" phrasing (then reused as the control's "still" video)
    seed: int = 0
    device: str | None = None


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
                               "decode_s": rep.decode_s, "wall_s": rep.wall_s})
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


def _mean(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None and np.isfinite(r[key])]
    return float(np.mean(vals)) if vals else None


def evaluate_model(bundle: Any, distilled: bool, portraits: list[Path], settings: Settings, out: Path,
                   strips: Path | None, meter: FaceMeter) -> dict:
    """All real-photo measures for one model; JSON-able (None where a measure is undefined)."""
    s = settings
    run = _Runner(bundle, distilled, out, s)
    h, w = bundle.height, bundle.width
    refs = [portrait_reference(p, h, w, meter, name=str(p)) for p in portraits]  # NoFaceError before any work
    # untimed warm-up: the first call pays one-time costs (allocator, codecs) that are not the model's speed
    run(portraits[0], _wav(np.zeros(SAMPLE_RATE, np.float32)), "", "warmup", timed=False)

    def strip(name: str, ref_img: np.ndarray, frames: np.ndarray) -> None:
        if strips is not None:
            save_strip(strips / f"{run.mode}_{name}.png", ref_img, frames)

    clips, control = [], []
    for pi, (p, ref) in enumerate(zip(portraits, refs, strict=True)):
        for c in range(s.clips):
            seed = s.seed + 1000 * pi + c
            wav, info = heldout_speech(s.seconds, seed)
            still_prompt = heldout_prompt(seed, "still")
            prompt = s.prompt if s.prompt is not None else still_prompt
            name = f"{Path(p).stem}_c{c}"
            frames, _ = run(p, _wav(wav), prompt, name)
            strip(name, ref.image, frames)
            row = {"portrait": Path(p).name, "clip": c, **info, "prompt": prompt,
                   **talking_measures(frames, wav, ref, meter)}
            muted, _ = run(p, _wav(np.zeros_like(wav)), prompt, name + "_muted")
            strip(name + "_muted", ref.image, muted)
            row.update(muted_measures(muted, ref, meter))
            clips.append(row)
            if s.control:
                excl = ~ref.keep
                box = np.asarray(ref.faces[0].box, np.float32)
                still = frames if s.prompt is None else run(p, _wav(wav), still_prompt, name + "_still")[0]
                nod, _ = run(p, _wav(wav), heldout_prompt(seed, "nodding"), name + "_nodding")
                strip(name + "_nodding", ref.image, nod)
                control.append({"portrait": Path(p).name, "clip": c,
                                "still": metrics.head_motion(still, box, exclude=excl)["motion_y"],
                                "nodding": metrics.head_motion(nod, box, exclude=excl)["motion_y"],
                                "prompt_nodding": heldout_prompt(seed, "nodding")})
    keys = ("psnr", "ssim", "psnr_frame0", "psnr_last_second", "face_detected", "lip_measured_frames", "lipsync_r",
            "lipsync_r_reversed", "lipsync_r_margin", "darkness_r", "darkness_r_reversed", "muted_lip_gap",
            "portrait_lip_gap", "muted_lip_measured_frames", "muted_excess", "muted_face_detected", "muted_darkness", "portrait_darkness",
            "muted_darkness_excess")
    res: dict[str, Any] = {"summary": {k: _mean(clips, k) for k in keys}, "clips": clips}
    res["summary"]["lipsync_clips_measured"] = sum(r["lipsync_r"] is not None for r in clips)
    if control:
        sep = metrics.separability([c["still"] for c in control], [c["nodding"] for c in control])
        res["control"] = {"nod_vs_still_auc": sep["auc"], "cohen_d": sep["cohen_d"],
                          "motion_y_still": _mean(control, "still"), "motion_y_nodding": _mean(control, "nodding"),
                          "pairs": control}

    for k in s.speakers:
        comp = composite(portraits, k)
        ref = portrait_reference(comp, h, w, meter, faces=k, name=f"the {k}-face composite")
        tracks, owner = turn_tracks(k, max(s.seconds, 2.0 * k), s.seed + 7 * k)
        boxes = [list(f.box) for f in ref.faces]  # speaker masks from face detection
        prompt = s.prompt if s.prompt is not None else heldout_prompt(s.seed + k, "still")
        frames, _ = run(comp, [_wav(t) for t in tracks], prompt, f"speakers{k}", speakers=boxes)
        strip(f"speakers{k}", ref.image, frames)
        res[f"speakers_{k}"] = {"boxes": boxes, **speaker_measures(frames, tracks, owner, ref, meter)}

    if not s.skip_long:
        wav, info = heldout_speech(s.long_seconds, s.seed + 100)
        p, ref = portraits[0], refs[0]
        prompt = s.prompt if s.prompt is not None else heldout_prompt(s.seed + 100, "still")
        frames, rep = run(p, _wav(wav), prompt, "long")
        strip("long", ref.image, frames)
        seams = _seams(rep, bundle, distilled)
        t = talking_measures(frames, wav, ref, meter)
        res["long"] = {"portrait": Path(p).name, "seconds": rep.seconds, **info,
                       "drift_db": metrics.drift(frames, ref.image, ref.keep, span_s=1.0)["drift_db"],
                       "psnr_first_second": metrics.masked_psnr(frames[:FPS], ref.image, ref.keep),
                       "psnr_last_second": t["psnr_last_second"], "seam_score": metrics.seam_score(frames, seams),
                       "seams": len(seams), "face_detected": t["face_detected"], "lipsync_r": t["lipsync_r"],
                       "lipsync_r_margin": t["lipsync_r_margin"],
                       "speed_video_s_per_wall_s": rep.seconds / max(rep.sample_s + rep.decode_s, 1e-9)}
    res["speed"] = run.speed()
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
