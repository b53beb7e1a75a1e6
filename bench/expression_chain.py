"""Where does the world's smile go? (prints JSON) The training world's smile, frown and surprise on real training
photographs, read by face mesh after each step between the world and a video: the rendered frames, their motion
latent (the renderer's exact field, or optical flow at DIS's half-size or full-size finest level) decoded with no
decode settings, and the same latent decoded with the model's decode settings, each setting switched on alone and
all of them (the model as it ships). No DiT here: this is the ceiling a perfect DiT would reach. A model whose
autoencoder has an expression channel (the mouth corners' lift) reads it from the exact field, as its caches do.

Per photograph the four videos share the voice, the crop and the motion; only the emotion differs. Each measure is
`real_photos.expression_change` over the second half of the video, minus the neutral video's (face heights).

Usage: OMP_NUM_THREADS=1 python bench/expression_chain.py [--model DIR] [--photos 5] [--frames 33]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys

import numpy as np
import torch

EMOTIONS = ("neutral", "smile", "frown", "surprise")
MEASURES = {"smile": ("corner_lift",), "frown": ("corner_lift", "brow_lift"), "surprise": ("brow_lift", "mouth_width")}
# decode settings switched on one at a time over the raw decode (each off when the model's own value is 0)
ALONE = ("flow_smoothing", "flow_deadzone", "rigid_upper_face", "rigid_brows", "mouth_opening", "expression_gain")


def main(argv: list[str] | None = None) -> int:
    from magicinfinite_core.media.autoencoders import decode_video, encode_video
    from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR, load_bundle
    from training.data import photo_face, photos
    from training.data.mouth import mouth_from_audio
    from training.data.speech import sample_voice, speech_track
    from training.data.tensors import frames_to_tensor, tensor_to_frames
    from training.eval import real_photos as rp
    from training.eval.evaluate import clip_reference

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEMO_MODEL_DIR))
    ap.add_argument("--photos", type=int, default=5, help="training photographs, spread over the list")
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    shipped = load_bundle(a.model, "cpu").vae
    off = {"flow_deadzone": 0.0, "flow_smoothing": 0.0, "rigid_upper_face": 0.0, "rigid_brows": 0.0,
           "mouth_opening": 0.0, "open_mouth_opening": 0.0, "expression_gain": 0.0}

    def variant(**settings: float):
        vae = copy.deepcopy(shipped)
        vae.cfg = dataclasses.replace(shipped.cfg, **settings)
        return vae

    raw = variant(**off)
    decodes = {"raw": raw, **{f"{k} alone": variant(**{**off, k: getattr(shipped.cfg, k)}) for k in ALONE
                              if getattr(shipped.cfg, k) > 0}}
    if "rigid_brows alone" in decodes:  # the brows' lift only means something inside the rigid hold
        decodes["rigid_brows alone"] = variant(**{**off, "rigid_upper_face": 1.0, "rigid_brows": shipped.cfg.rigid_brows})
    decodes["as shipped"] = shipped
    encoders = {"exact field": None, "optical flow, finest level 1": 1, "optical flow, finest level 0": 0}

    pool = [p.name for p in photos.face_photos("train")]
    names = pool[:: max(1, len(pool) // a.photos)][: a.photos]
    n = a.frames
    reads: dict[str, dict[str, list[dict]]] = {}
    with torch.inference_mode(), rp.FaceMeter() as meter:
        for i, name in enumerate(names):
            rng = np.random.default_rng(i + 2)
            audio, _ = speech_track(rng, sample_voice(rng, "train"), n)
            opening, width = mouth_from_audio(audio, n)
            for emotion in EMOTIONS:
                controls = {"emotion": emotion, "action": "still", "background": "static"}
                scene = photo_face.sample_photo_scene(np.random.default_rng(7 + i), name, opening, width, controls,
                                                      128, 128, (0.2, 0.3))
                frames, gt = photo_face.render_photo_scene(scene)
                video = frames_to_tensor(frames)[None]
                exact = torch.from_numpy(gt["portrait_flow"].astype(np.float32))[None]
                reads.setdefault("world", {}).setdefault(emotion, []).append(
                    rp.expression_change(frames, frames[0], meter))
                for enc, level in encoders.items():
                    coder = raw if level is None else variant(**off, flow_finest_level=level)
                    # an expression channel reads the exact field, as the training caches do (training.preprocess)
                    latent = encode_video(coder, video, flow=exact if level is None else None, expression_flow=exact)
                    chosen = decodes if enc == "optical flow, finest level 0" else {"raw": raw, "as shipped": shipped}
                    for dec, vae in chosen.items():
                        out = tensor_to_frames(decode_video(vae, latent, clip_reference(vae, frames[0]))[0])[:n]
                        reads.setdefault(f"{enc} | {dec}", {}).setdefault(emotion, []).append(
                            rp.expression_change(out, frames[0], meter))
            print(f"{name}: done", file=sys.stderr, flush=True)

    def change(rows: dict[str, list[dict]], emotion: str, key: str) -> float | None:
        pairs = [(e[key], z[key]) for e, z in zip(rows[emotion], rows["neutral"], strict=True)
                 if e[key] is not None and z[key] is not None]
        return statistics.mean(e - z for e, z in pairs) if pairs else None

    table = {step: {f"{e} {k}": change(rows, e, k) for e, keys in MEASURES.items() for k in keys}
             for step, rows in reads.items()}
    print(json.dumps(rp.json_safe({"model": a.model, "photos": names, "frames": n, "decode_settings":
                                   dataclasses.asdict(shipped.cfg), "change_vs_neutral": table}), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
