"""One source video -> accepted training clips (written as clip folders) and rejected segments.

The steps of ``ingest_source`` (one Ray task runs one source; nothing here depends on other
sources, the worker count or the order, so a run is deterministic for a given seed):

1. decode (``ingest_decode``): the 25 fps / 16 kHz timeline; faces are detected on every source
   frame in the same pass (``ingest_faces.FrameAnalyser``). A broken file is one reject.
2. shots (``ingest_shots``): cuts by the frame-difference rule; clips of ``frames`` frames every
   ``stride`` frames inside each shot (``start`` / ``end`` of the list limit the range).
3. filters per clip, first failing reason recorded: ``no_face``, ``multiple_faces`` (unless speaker
   boxes were given), ``face_too_small``, ``too_quiet`` / ``no_speech`` (``ingest_vad``); after
   cropping, ``static`` (face region motion below ``static_motion``) and ``no_landmarks`` (face mesh
   cannot find the lips).
4. crop (``ingest_crop``): one face-centred crop per clip, resized to its resolution bucket; ground
   truth in the clip format ``training/preprocess.py`` reads (``face_box`` / ``mouth_box`` [F, K, 4],
   ``face_masks`` [F, K, H, W] = expanded per-frame boxes, ``speaker_mask`` = their union over the
   clip (paper Eq. 3's M_face), ``mouth_open`` from face mesh).
5. caption (``ingest_captions``) and ``save_clip`` (atomic folder).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data.clip import Clip, manifest_row, save_clip
from training.data.ingest_config import IngestConfig
from training.data.ingest_crop import (
    bucket_sizes,
    crop_resize,
    face_crop_box,
    map_boxes,
    nearest_bucket,
    parse_aspect,
)
from training.data.ingest_decode import SourceError, open_source
from training.data.ingest_faces import (
    MESH_SIDE,
    FrameAnalyser,
    face_motion,
    mesh_roi,
    mouth_tracks,
    track_speakers,
)
from training.data.ingest_shots import CutRule, clip_windows, detect_cuts, frame_differences, shots
from training.data.ingest_sources import Source
from training.data.ingest_vad import speech_problem, voice_activity
from training.data.mouth import FPS, HOP, SAMPLE_RATE, mouth_from_audio

WORK_SIDE = 256  # face mesh and the motion measure see the crop at >= this long side (any bucket size)
# per-source seconds recorded in each source's record ("timings"): bench/ingest.py reports their shares
STAGES = ("decode", "face_detect", "cuts_filters", "crop_decode", "face_mesh", "ground_truth", "write")
ACTION_STILL = 0.02  # face-centre std / face size below this on both axes = "still"
BACKGROUND_STATIC = 1.0  # grey-level motion outside the faces below this = "static" background


def source_split(src: Source, cfg: IngestConfig) -> str:
    """Whole source files go to one split: held out when hash(seed, source) < heldout_fraction."""
    h = int(hashlib.sha256(f"{cfg.seed}|{src.key}".encode()).hexdigest()[:8], 16) / 2**32
    return "heldout" if h < cfg.heldout_fraction else cfg.split


def identity_id(src: Source, k: int, split: str) -> int:
    """A stable identity number per (source, character) in the split's residue class (splits.py)."""
    h = int(hashlib.sha256(f"{src.key}|{k}".encode()).hexdigest()[:12], 16) % 10**7
    return h * 10 + (9 if split == "heldout" else h % 9)


def clip_name(src: Source, start: int) -> str:
    """Folder name of the clip of ``src`` that starts at 25 fps frame ``start``."""
    return f"{src.key}_{start:07d}"


@dataclass
class _Pending:
    window: tuple[int, int]
    boxes: np.ndarray  # [F, K, 4] source px
    crop: tuple[int, int, int, int]
    bucket: tuple[int, int]
    vad: dict
    found_share: float
    work: tuple[int, int] = (0, 0)  # (w, h) the crop is analysed at
    frames: np.ndarray | None = None  # [F, work h, work w, 3]
    faces: np.ndarray | None = None  # [F, K, MESH_SIDE, MESH_SIDE, 3] per-speaker face crops for the mesh
    rois: np.ndarray | None = None  # [F, K, 4] where those came from (source px)


def _reject(src: Source, window: tuple[int, int] | None, reason: str, detail: str = "", **measured) -> dict:
    seg = None if window is None else {"frames": list(window), "start_s": round(window[0] / FPS, 4),
                                       "end_s": round(window[1] / FPS, 4)}
    row = {"source": src.path, "source_key": src.key, "segment": seg, "reason": reason}
    if detail:
        row["detail"] = detail
    if measured:
        row["measured"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in measured.items()}
    return row


def _action(boxes: np.ndarray) -> str:
    cx, cy = 0.5 * (boxes[:, 0] + boxes[:, 2]), 0.5 * (boxes[:, 1] + boxes[:, 3])
    fw = float(np.median(boxes[:, 2] - boxes[:, 0])) or 1.0
    fh = float(np.median(boxes[:, 3] - boxes[:, 1])) or 1.0
    mx, my = float(np.std(cx)) / fw, float(np.std(cy)) / fh
    if max(mx, my) < ACTION_STILL:
        return "still"
    return "nodding" if my >= mx else "shaking"


def _background_motion(frames: np.ndarray, face_mask: np.ndarray) -> float:
    import cv2

    if len(frames) < 2:
        return 0.0
    keep = cv2.resize(face_mask.astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA) < 0.01
    if not keep.any():
        return 0.0
    g = np.stack([cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (32, 32), interpolation=cv2.INTER_AREA)
                  for f in frames]).astype(np.float32)
    return float(np.abs(g[1:] - g[:-1])[:, keep].mean())


def _face_masks(boxes: np.ndarray, hw: tuple[int, int], expand: tuple[float, float, float]) -> np.ndarray:
    """[F, K, H, W] bool: each per-frame box expanded to the face region (``IngestConfig.mask_expand``)."""
    from magicinfinite_core.inputs.masks import FaceBox

    F, K = boxes.shape[:2]
    ex = tuple(float(v) for v in expand)
    out = np.zeros((F, K, *hw), bool)
    for t in range(F):
        for k in range(K):
            out[t, k] = FaceBox(*(float(v) for v in boxes[t, k])).expand(ex, hw).to_mask(hw) > 0.5
    return out


def _screen(src: Source, window: tuple[int, int], faces25: list, audio: np.ndarray, info, cfg: IngestConfig,
            buckets: list[tuple[int, int]]) -> tuple[_Pending | None, dict | None]:
    """Filters that need no pixels of the crop; a pending clip or a reject row."""
    a, b = window
    tracks = track_speakers(faces25[a:b], [list(x) for x in src.boxes] if src.boxes else None)
    found = tracks.found.mean(0)
    if float(found.min()) < cfg.min_face_share:
        return None, _reject(src, window, "no_face", "the speaker's face is missing in too many frames",
                             face_found_share=float(found.min()), needed=cfg.min_face_share)
    if not src.boxes:
        multi = float((tracks.face_counts >= 2).mean())
        if multi >= cfg.multi_face_share:
            return None, _reject(src, window, "multiple_faces",
                                 "more than one face; give speaker boxes in the list for multi-speaker clips",
                                 multi_face_share=multi, max_faces=int(tracks.face_counts.max()))
    sp = tracks.boxes[:, src.speaker if src.boxes else 0]
    side = float(np.median(np.minimum(sp[:, 2] - sp[:, 0], sp[:, 3] - sp[:, 1])))
    if side < cfg.min_face_px:
        return None, _reject(src, window, "face_too_small", "", face_px=side, min_face_px=cfg.min_face_px)
    va = voice_activity(audio[a * HOP : b * HOP])
    problem = speech_problem(va, cfg.min_speech_share)
    if problem:
        return None, _reject(src, window, problem, "", **va.to_dict())
    allb = tracks.boxes.reshape(-1, 4)
    union = (float(allb[:, 0].min()), float(allb[:, 1].min()), float(allb[:, 2].max()), float(allb[:, 3].max()))
    want = parse_aspect(cfg.aspect)
    bw, bh = nearest_bucket(*((info.width, info.height) if want is None else (want, 1.0)), buckets)
    crop = face_crop_box(union, (info.width, info.height), bw / bh, cfg.context)
    return _Pending(window, tracks.boxes, crop, (bw, bh), va.to_dict(), float(found.min())), None


def ingest_source(src: Source, out: str | Path, cfg: IngestConfig, captioner=None) -> dict:
    """Process one source (module docstring); returns its record: clip manifest rows and rejects."""
    out = Path(out)
    split = source_split(src, cfg)
    record: dict = {"source": src.to_dict(), "key": src.key, "split": split, "clips": [], "rejects": []}
    timings = record["timings"] = {k: 0.0 for k in STAGES}
    t0 = time.perf_counter()
    analyser = FrameAnalyser(cfg.detect_max_side, min_faces=len(src.boxes) if src.boxes else 1)
    try:
        dec = open_source(src.path, analyser)
    except SourceError as e:
        record["rejects"].append(_reject(src, None, e.reason, str(e)))
        return record
    finally:
        analyser.close()
        timings["face_detect"] = analyser.detect_s
        timings["decode"] = time.perf_counter() - t0 - analyser.detect_s
    t0 = time.perf_counter()
    info, n = dec.info, dec.info.num_frames
    record["source_info"] = info.to_dict()
    faces25 = [dec.analysis[int(i)] for i in dec.frame_map]
    lo = 0 if src.start is None else min(n, int(math.ceil(src.start * FPS - 1e-6)))
    hi = n if src.end is None else min(n, int(math.floor(src.end * FPS + 1e-6)))
    diffs = frame_differences(np.stack([f.thumb for f in faces25[lo:hi]])) if hi > lo else np.zeros(0)
    rule = CutRule(cfg.cut_min_diff, cfg.cut_ratio, cfg.cut_context)
    cuts = [lo + c for c in detect_cuts(diffs, rule)]
    record["cuts"] = cuts
    buckets = bucket_sizes(cfg.size, cfg.bucket_step, cfg.max_ratio)
    pending: list[_Pending] = []
    for shot in shots(hi - lo, [c - lo for c in cuts]):
        shot = (shot[0] + lo, shot[1] + lo)
        wins = clip_windows(shot, cfg.frames, cfg.stride)
        if not wins:
            record["rejects"].append(_reject(src, shot, "shot_too_short", f"a clip needs {cfg.frames} frames"))
        for w in wins:
            p, rej = _screen(src, w, faces25, dec.audio, info, cfg, buckets)
            if rej:
                record["rejects"].append(rej)
            else:
                pending.append(p)
    timings["cuts_filters"] = time.perf_counter() - t0
    if not pending:
        return record
    # one forward decode; a clip's buffers exist only while the decoder is inside its window, and it is
    # finished (mesh, ground truth, written) at its last frame: memory stays at the few overlapping
    # clips however long the source is
    waiting = sorted(pending, key=lambda q: q.window)
    active: list[_Pending] = []
    first, last = waiting[0].window[0], max(q.window[1] for q in pending)
    t0 = time.perf_counter()
    try:
        _crop_pass(src, dec, cfg, split, captioner, out, record, waiting, active, first, last, t0)
    except SourceError as e:  # the second decode failed part-way (a file that changed or is flaky)
        for q in active + waiting:
            record["rejects"].append(_reject(src, q.window, e.reason, str(e)))
    return record


def _crop_pass(src: Source, dec, cfg: IngestConfig, split: str, captioner, out: Path, record: dict,
               waiting: list[_Pending], active: list[_Pending], first: int, last: int, t0: float) -> None:
    """The crop decode of ``ingest_source``: fills, finishes and frees each clip in turn."""
    timings, info = record["timings"], dec.info
    for k, frame in dec.frames(first, last):
        while waiting and waiting[0].window[0] == k:
            active.append(_allocate(waiting.pop(0), cfg.frames))
        for q in active:
            t = k - q.window[0]
            q.frames[t] = crop_resize(frame, q.crop, q.work)
            for j in range(q.boxes.shape[1]):
                roi = mesh_roi(q.boxes[t, j], (info.width, info.height))
                q.rois[t, j] = roi
                q.faces[t, j] = crop_resize(frame, roi, (MESH_SIDE, MESH_SIDE))
        for q in [q for q in active if q.window[1] - 1 == k]:
            timings["crop_decode"] += time.perf_counter() - t0
            row = _finish(src, q, dec, cfg, split, captioner, out, timings)
            record["clips" if "path" in row else "rejects"].append(row)
            active.remove(q)
            q.frames = q.faces = None
            t0 = time.perf_counter()
    timings["crop_decode"] += time.perf_counter() - t0
    if active or waiting:
        raise SourceError("corrupt", f"{src.path}: decoding ended before frame {last}; the file changed?")


def _allocate(p: _Pending, frames: int) -> _Pending:
    """Buffers of a clip the decoder has reached: crops at the work size and per-speaker face crops."""
    f = max(1.0, WORK_SIDE / max(p.bucket))
    p.work = (int(round(p.bucket[0] * f / 2)) * 2, int(round(p.bucket[1] * f / 2)) * 2)
    p.frames = np.zeros((frames, p.work[1], p.work[0], 3), np.uint8)
    K = p.boxes.shape[1]
    p.faces = np.zeros((frames, K, MESH_SIDE, MESH_SIDE, 3), np.uint8)
    p.rois = np.zeros((frames, K, 4), np.float32)
    return p


def _finish(src: Source, p: _Pending, dec, cfg: IngestConfig, split: str, captioner, out: Path,
            timings: dict[str, float]) -> dict:
    """Pixel filters, ground truth, caption and the clip folder of one pending clip."""
    from training.data.ingest_captions import clip_caption

    a, b = p.window
    W, H = p.bucket
    spk = src.speaker if src.boxes else 0
    wbox = map_boxes(p.boxes, p.crop, p.work)
    sp = wbox[:, spk]
    region = (max(0, int(sp[:, 0].min())), max(0, int(sp[:, 1].min())),
              min(p.work[0], int(np.ceil(sp[:, 2].max()))), min(p.work[1], int(np.ceil(sp[:, 3].max()))))
    motion = face_motion(p.frames, region)
    if motion < cfg.static_motion:
        return _reject(src, p.window, "static", "the face does not move (a still image with sound?)",
                       face_motion=motion, static_motion=cfg.static_motion)
    t0 = time.perf_counter()
    lips = mouth_tracks(p.faces, p.rois)
    timings["face_mesh"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    lips.mouth_box = map_boxes(lips.mouth_box, p.crop, p.bucket)
    frames = np.stack([crop_resize(f, (0, 0, *p.work), p.bucket) for f in p.frames]) if p.work != p.bucket \
        else p.frames
    fbox = map_boxes(p.boxes, p.crop, p.bucket)
    masks = _face_masks(fbox, (H, W), cfg.mask_expand)
    speaker_mask = masks[:, spk].any(0)
    lshare = float(lips.found[:, spk].mean())
    if lshare < cfg.min_landmark_share:
        return _reject(src, p.window, "no_landmarks", "face mesh does not find the speaker's lips",
                       landmark_share=lshare, needed=cfg.min_landmark_share)
    audio = dec.audio[a * HOP : b * HOP].copy()
    K = fbox.shape[1]
    action = _action(p.boxes[:, spk])
    bg = _background_motion(frames, masks.any((0, 1)))
    controls = {"emotion": "neutral", "action": action, "background": "static" if bg < BACKGROUND_STATIC else "leaves"}
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, int(src.key.rsplit("-", 1)[1], 16), a]))
    caption, cap_source = clip_caption(src.caption, src.path, action, split, rng, frames[len(frames) // 2],
                                       captioner, K)
    order = sorted(range(K), key=lambda k: float(fbox[0, k, 0] + fbox[0, k, 2]))
    ids = [identity_id(src, k, split) for k in range(K)]
    gt = {
        "face_masks": masks,
        "speaker_mask": speaker_mask,
        "face_box": fbox.astype(np.float32),
        "mouth_box": lips.mouth_box,
        "head_pos": (0.5 * (fbox[..., :2] + fbox[..., 2:])).astype(np.float32),
        "face_size": (0.5 * (fbox[..., 2] - fbox[..., 0])).astype(np.float32),
        "mouth_open": lips.opening[:, spk].astype(np.float32),
        "char_mouth_open": lips.opening.astype(np.float32),
        "mouth_open_audio": mouth_from_audio(audio, b - a)[0],
        "landmarks_found": lips.found,
    }
    meta = {
        "format": 1, "split": split, "num_frames": b - a, "fps": FPS, "sample_rate": SAMPLE_RATE,
        "height": H, "width": W, "prompt": caption, "caption_source": cap_source, "controls": controls,
        "controls_source": "measured: action (face-box motion), background (motion outside the faces); "
                           "emotion unknown (neutral)",
        "style": "realistic", "num_characters": K, "speaker": spk, "left_to_right": order,
        "identity_ids": ids, "identities": [{"identity_id": i, "source": src.key, "character": k}
                                            for k, i in enumerate(ids)],
        "voice_name": "recorded", "sentences": [], "background": {"kind": "recorded", "change": controls["background"]},
        "kind": "ingested",
        "source": {"path": src.path, "key": src.key, "start_s": round(a / FPS, 4), "end_s": round(b / FPS, 4),
                   "frames": [a, b]},
        "ingest": {"crop": list(p.crop), "bucket": [W, H], "source_info": dec.info.to_dict(), "vad": p.vad,
                   "face_motion": round(motion, 4), "background_motion": round(bg, 4),
                   "face_found_share": round(p.found_share, 4), "landmark_share": round(lshare, 4),
                   "seed": cfg.seed, "crf": cfg.crf},
    }
    timings["ground_truth"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    d = save_clip(Clip(frames, audio, meta, gt), out / clip_name(src, a), crf=cfg.crf)
    timings["write"] += time.perf_counter() - t0
    row = manifest_row(d, out)
    row.update({"source": src.path, "start_s": meta["source"]["start_s"], "end_s": meta["source"]["end_s"],
                "caption_source": cap_source, "bucket": [W, H]})
    return row
