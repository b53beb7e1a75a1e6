"""A clip = frames + 16 kHz mono audio + metadata + ground truth; making, saving and loading one.

On disk a clip is a directory:

* ``video.mp4``  H.264 (yuv420p) 25 fps with the audio as an AAC track (for players / ComfyUI);
* ``audio.wav``  the exact 16 kHz float audio (training and evaluation read this, not the AAC);
* ``gt.npz``     per-frame ground truth (see ``render.render_scene``), masks bit-packed;
* ``meta.json``  prompt, controls, speaker, split, seeds, voice, identities, sentences.

A clip directory is written under a temporary name and renamed when complete, so a directory
that exists is a finished clip (the build resumes by skipping them).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.data.jsonl import read_jsonl, write_jsonl
from training.data.mouth import FPS, SAMPLE_RATE, mouth_from_audio
from training.data.prompts import make_prompt, sample_controls
from training.data.render import (
    WorldConfig,
    apply_photo_textures,
    render_scene,
    sample_identity,
    sample_scene,
)
from training.data.speech import sample_voice, speech_track
from training.data.splits import check_split, sample_identity_id

FORMAT_VERSION = 1
_MASK_KEYS = ("face_masks", "speaker_mask")


@dataclass
class Clip:
    """One training / evaluation example of the world."""

    frames: np.ndarray  # uint8 [F, H, W, 3]
    audio: np.ndarray  # float32 [F * 640] at 16 kHz
    meta: dict
    gt: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        """Video frames at 25 fps (the audio has 640 samples per frame)."""
        return int(self.frames.shape[0])


def _common_meta(ss, split: str, num_frames: int, cfg, prompt: str, controls: dict) -> dict:
    """The meta.json keys every clip kind shares (drawn and animated-photo clips)."""
    return {
        "format": FORMAT_VERSION,
        "split": split,
        "seed_entropy": str(ss.entropy),
        "seed_spawn_key": list(ss.spawn_key),
        "num_frames": num_frames,
        "fps": FPS,
        "sample_rate": SAMPLE_RATE,
        "height": cfg.height,
        "width": cfg.width,
        "prompt": prompt,
        "controls": controls,
    }


def make_clip(
    seed: int | np.random.SeedSequence,
    split: str = "train",
    num_frames: int = 33,
    cfg: WorldConfig | None = None,
    controls: dict[str, str] | None = None,
) -> Clip:
    """Build one clip deterministically from its seed (speech -> lips -> scene -> pixels).

    `controls`: some of the text controls fixed (e.g. {"emotion": "smile"}) over the ones the seed draws, so two
    clips of one seed differ in those alone (`bench/emotion_latent.py`)."""
    check_split(split)
    cfg = cfg or WorldConfig()
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(int(seed))
    r_cast, r_speech, r_scene, r_text = (np.random.default_rng(s) for s in ss.spawn(4))
    # photo choices come from a fifth stream so drawn clips without photos stay as they were
    r_photo = np.random.default_rng(ss.spawn(1)[0])
    u_face, u_tex = r_photo.random(), r_photo.random()
    if u_face < cfg.photo_faces:
        return _make_photo_clip(ss, split, num_frames, cfg, r_cast, r_speech, r_scene, r_text, controls)
    textures = u_tex < cfg.photo_textures
    k = 1
    if cfg.max_chars > 1 and r_cast.random() < cfg.multi_prob:
        k = int(r_cast.integers(2, cfg.max_chars + 1))
    ids = [sample_identity_id(r_cast, split) for _ in range(k)]
    speaker = int(r_cast.integers(k))
    idents = [sample_identity(ids[speaker])]
    style = idents[0].style
    idents = [sample_identity(i, style=style) if j != speaker else idents[0] for j, i in enumerate(ids)]
    controls = {**sample_controls(r_text, tuple(cfg.backgrounds)), **(controls or {})}
    voice = sample_voice(r_speech, split)
    audio, sentences = speech_track(r_speech, voice, num_frames)
    opening, width = mouth_from_audio(audio, num_frames)
    scene = sample_scene(r_scene, idents, speaker, opening, width, controls, cfg)
    tex_meta: dict = {}
    if textures:
        tex_meta = apply_photo_textures(scene, r_photo, split, cfg.photo_generated)
    frames, gt = render_scene(scene)
    order = sorted(range(k), key=lambda i: float(scene.chars[i].cx[0]))
    prompt = make_prompt(controls, r_text, split, style, k, speaker, order)
    meta = {
        **_common_meta(ss, split, num_frames, cfg, prompt, controls),
        "style": style,
        "num_characters": k,
        "speaker": speaker,
        "left_to_right": order,
        "identity_ids": ids,
        "identities": [i.to_dict() for i in idents],
        "voice": voice.to_dict(),
        "voice_name": voice.espeak_name,
        "sentences": sentences,
        "background": {"kind": scene.background["kind"], "change": scene.background["change"]},
        "kind": "drawn",
    }
    if tex_meta:
        meta["photo_textures"] = tex_meta
        meta["background"]["photo"] = tex_meta.get("background")
    return Clip(frames, audio, meta, gt)


def _make_photo_clip(
    ss: np.random.SeedSequence,
    split: str,
    num_frames: int,
    cfg: WorldConfig,
    r_cast: np.random.Generator,
    r_speech: np.random.Generator,
    r_scene: np.random.Generator,
    r_text: np.random.Generator,
    fixed: dict[str, str] | None = None,
) -> Clip:
    """An animated real photograph of the split (photo_face.py), in the drawn clips' format."""
    from training.data import photo_face, photos
    from training.data.render import _sample_background

    real = photos.face_photos(split, generated=False)
    gen = [p for p in photos.face_photos(split, cfg.photo_generated) if p.generated]
    if not real and not gen:
        raise RuntimeError(f"no face photographs available for split {split!r}")
    # the few real photographs get a fixed share, not drowned by the many generated portraits
    pool = real if (not gen or (real and r_cast.random() < cfg.photo_real_share)) else gen
    ph = pool[int(r_cast.integers(len(pool)))]
    controls = {**sample_controls(r_text, tuple(cfg.backgrounds)), **(fixed or {})}
    voice = sample_voice(r_speech, split)
    audio, sentences = speech_track(r_speech, voice, num_frames)
    opening, width = mouth_from_audio(audio, num_frames)
    bg = _sample_background(r_scene, controls["background"], "realistic", cfg)
    bg["kind"] = "leaves" if controls["background"] == "leaves" else "photo"
    scene = photo_face.sample_photo_scene(
        r_scene, ph.name, opening, width, controls, cfg.height, cfg.width,
        (cfg.photo_face_min, cfg.photo_face_max), bg,
    )
    if cfg.photo_open_portraits > 0 and photo_face.photo_opening(
            photo_face.MouthFrame.from_landmarks(scene.landmarks)) > photo_face.OPEN_MOUTH:
        scene.open_portrait = bool(r_scene.random() < cfg.photo_open_portraits)
    if cfg.photo_greyscale > 0 and r_scene.random() < cfg.photo_greyscale:
        scene.print_tint = photos.sample_tint(r_scene)
    frames, gt = photo_face.render_photo_scene(scene)
    prompt = make_prompt(controls, r_text, split, "realistic", 1, 0, [0])
    ident = photo_face.photo_identity_id(ph.name)
    meta = {
        **_common_meta(ss, split, num_frames, cfg, prompt, controls),
        "style": "realistic",
        "num_characters": 1,
        "speaker": 0,
        "left_to_right": [0],
        "identity_ids": [ident],
        "identities": [{"identity_id": ident, "photo": ph.name, "style": "realistic"}],
        "voice": voice.to_dict(),
        "voice_name": voice.espeak_name,
        "sentences": sentences,
        "background": {"kind": bg["kind"], "change": bg["change"], "photo": ph.name},
        "kind": "photo_face",
        "photo": {
            "name": ph.name,
            "licence": ph.licence,
            "generated": ph.generated,
            "crop": [round(float(v), 3) for v in scene.crop],
            "flip": scene.flip,
            "teeth": scene.teeth,
            "open_portrait": scene.open_portrait,
            "greyscale": scene.print_tint is not None,
            "jitter": {k: v for k, v in vars(scene.jitter).items()},
        },
    }
    return Clip(frames, audio, meta, gt)


# ----------------------------------------------------------------------------- files
def write_mp4(path: str | Path, frames: np.ndarray, audio: np.ndarray | None = None, crf: int = 18) -> None:
    """H.264 video at 25 fps with an optional AAC audio track (16 kHz mono): the pipeline's own writer."""
    from magicinfinite_core.media.video_io import VideoWriter

    F, H, W, _ = frames.shape
    track = None if audio is None else (np.asarray(audio, np.float32)[None], SAMPLE_RATE)
    with VideoWriter(path, W, H, fps=FPS, audio=track, crf=crf) as writer:
        writer.write(np.ascontiguousarray(frames))


def read_mp4_frames(path: str | Path) -> np.ndarray:
    """All video frames of an mp4 as uint8 [F, H, W, 3]."""
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def save_clip(clip: Clip, clip_dir: str | Path, crf: int = 18) -> Path:
    """Write a clip directory atomically (temp dir + rename) so partial clips never look done.

    ``crf``: the H.264 quality of video.mp4 (0 = lossless; ``--crf`` of the ingestion)."""
    import soundfile as sf

    clip_dir = Path(clip_dir)
    tmp = clip_dir.with_name(clip_dir.name + f".tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    write_mp4(tmp / "video.mp4", clip.frames, clip.audio, crf=crf)
    sf.write(str(tmp / "audio.wav"), clip.audio, SAMPLE_RATE, subtype="FLOAT")
    arrays = {}
    for k, v in clip.gt.items():
        if k in _MASK_KEYS:
            arrays[k + "_packed"] = np.packbits(v.astype(bool), axis=-1)
            arrays[k + "_shape"] = np.array(v.shape, np.int64)
        else:
            arrays[k] = v
    np.savez_compressed(tmp / "gt.npz", **arrays)
    (tmp / "meta.json").write_text(json.dumps(clip.meta, indent=1, sort_keys=True))
    if clip_dir.exists():
        shutil.rmtree(clip_dir)
    tmp.rename(clip_dir)
    return clip_dir


def load_gt(clip_dir: str | Path) -> dict[str, np.ndarray]:
    """Ground-truth arrays of a saved clip with masks unpacked to bool."""
    out: dict[str, np.ndarray] = {}
    with np.load(Path(clip_dir) / "gt.npz") as z:
        for k in z.files:
            if k.endswith("_shape"):
                continue
            if k.endswith("_packed"):
                name = k[: -len("_packed")]
                shape = tuple(int(s) for s in z[name + "_shape"])
                out[name] = np.unpackbits(z[k], axis=-1, count=shape[-1]).astype(bool).reshape(shape)
            else:
                out[k] = z[k]
    return out


def load_clip(clip_dir: str | Path, frames: bool = True) -> Clip:
    """Read a saved clip back (frames decoded from the mp4, exact audio from the wav)."""
    import soundfile as sf

    clip_dir = Path(clip_dir)
    meta = json.loads((clip_dir / "meta.json").read_text())
    audio, sr = sf.read(str(clip_dir / "audio.wav"), dtype="float32")
    if sr != SAMPLE_RATE:
        raise ValueError(f"{clip_dir}: audio is {sr} Hz, expected {SAMPLE_RATE}")
    vid = read_mp4_frames(clip_dir / "video.mp4") if frames else np.zeros((0, 0, 0, 3), np.uint8)
    return Clip(vid, audio, meta, load_gt(clip_dir))


def is_clip_dir(path: str | Path) -> bool:
    """A finished clip directory (temporary ones are never named like this)."""
    p = Path(path)
    return p.is_dir() and ".tmp" not in p.name and (p / "meta.json").is_file()


def manifest_row(clip_dir: str | Path, root: str | Path) -> dict:
    """One manifest line: where the clip is and what it contains (no arrays)."""
    meta = json.loads((Path(clip_dir) / "meta.json").read_text())
    keys = (
        "split",
        "prompt",
        "controls",
        "style",
        "num_frames",
        "height",
        "width",
        "speaker",
        "num_characters",
        "voice_name",
        "identity_ids",
    )
    row = {"path": str(Path(clip_dir).relative_to(root))}
    row.update({k: meta[k] for k in keys})
    row["kind"] = meta.get("kind", "drawn")
    if "photo" in meta:
        row["photo"] = meta["photo"]["name"]
    return row


def write_manifest(root: str | Path) -> Path:
    """Rewrite ``manifest.jsonl`` from the finished clips under root, sorted by name."""
    root = Path(root)
    rows = [manifest_row(p, root) for p in sorted(root.iterdir()) if is_clip_dir(p)]
    return write_jsonl(root / "manifest.jsonl", rows)


def read_manifest(root: str | Path) -> list[dict]:
    """Rows of a dataset's manifest (``path`` is relative to root)."""
    return read_jsonl(Path(root) / "manifest.jsonl")


@dataclass
class ClipArrays:
    """One world clip as arrays: frames uint8 [F, H, W, 3], 16 kHz audio, ground truth, metadata."""

    name: str
    frames: np.ndarray
    audio: np.ndarray
    gt: dict[str, np.ndarray]
    meta: dict


def list_clips(root: str | Path) -> list[Path]:
    """Finished clip directories under root, sorted so every consumer sees the same order."""
    return sorted(p for p in Path(root).iterdir() if is_clip_dir(p))


def read_clip(clip_dir: str | Path) -> ClipArrays:
    clip = load_clip(clip_dir)
    return ClipArrays(Path(clip_dir).name, clip.frames, clip.audio, clip.gt, clip.meta)
