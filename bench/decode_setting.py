"""What a face-aware decode setting costs and gives (prints JSON): the demo's 4-step generator samples one
held-out video once, then the same latent is decoded with `--setting` (`mouth_opening`: lips that part at the
seam; `open_mouth_opening`: a mouth open in the portrait opening further at its lower inner lip;
`mouth_teeth`: upper teeth drawn into a closed mouth's opening; `mouth_tongue`: a tongue at the bottom of a wide
opening; `rigid_upper_face`: the upper face moved as one
piece; `rigid_brows`: each brow's own lift kept within it; `head_motion`: the run's share of the model's head motion kept, 1 the default, 0 a still head) at 0 and
1, alternately, `--repeats` times each;
every other decode setting stays as the bundle has it.

Reported: decode seconds of each value (median) and their ratio; the face-mesh search's own time (seams and
rigid upper faces, one pass); and, from the decoded frames, the inner-lip gap (mean, and its change from frame
to frame), lip sync against the voice and the reversed voice, the mouth box's darkness against the voice, the
upper face's flicker and identity, and the mid face's flicker (`training.eval.real_photos`).

Usage: OMP_NUM_THREADS=1 python bench/decode_setting.py [--setting mouth_opening] [--portrait grace_hopper]
       [--seconds 4] [--repeats 3] [--seed 0]
(`--portrait` also takes the bench's composed test pictures: full_length, letterboxed, greyscale, open_smile.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SETTINGS = ("mouth_opening", "open_mouth_opening", "mouth_teeth", "mouth_tongue", "rigid_upper_face", "rigid_brows", "flow_deadzone", "flow_smoothing", "residual_gain")


def main(argv: list[str] | None = None) -> int:
    from magicinfinite_core.generate import GenerateOptions, sample_latent
    from magicinfinite_core.inputs.audio import load_speaker_tracks
    from magicinfinite_core.inputs.audio_features import extract_speaker_features
    from magicinfinite_core.inputs.face_parts import find_face_parts
    from magicinfinite_core.media.autoencoders import decode_video
    from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR, load_bundle
    from training.eval import real_photos as rp

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEMO_MODEL_DIR))
    ap.add_argument("--setting", choices=("mouth_opening", "open_mouth_opening", "mouth_teeth", "mouth_tongue", "rigid_upper_face",
                                          "rigid_brows", "head_motion"),
                    default="mouth_opening")
    ap.add_argument("--portrait", default=rp.HALF_LENGTH, help="a held-out photograph's name (training.data.photos)")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0, help="the held-out voice and still phrasing (real_photos' seeds)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--frames", default=None, help="also save both decodes here as .npy (uint8 [F, H, W, 3])")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    work = Path(tempfile.mkdtemp(prefix="decode_setting_"))
    photo = rp.picture_by_name(a.portrait, work)
    bundle = load_bundle(a.model, "cpu", distilled=True)
    wav, info = rp.heldout_speech(a.seconds, a.seed)
    tracks = load_speaker_tracks([(wav[None].astype(np.float32), rp.SAMPLE_RATE)])
    n = tracks[0].num_frames
    feats = extract_speaker_features(tracks, bundle.audio_extractor, n)
    with torch.inference_mode():
        s = sample_latent(bundle, str(photo), feats, n, rp.heldout_prompt(a.seed, "still"),
                          options=GenerateOptions(distilled=True, seed=0))
    picture = ((s.reference.image[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    t0 = time.perf_counter()
    seams, rigid = find_face_parts(picture, s.reference.regions(), heads=a.setting == "head_motion")
    search_s = time.perf_counter() - t0
    ref = dataclasses.replace(s.reference, seams=seams, rigid_faces=rigid)
    base = bundle.vae.cfg
    times: dict[float, list[float]] = {0.0: [], 1.0: []}
    frames: dict[float, np.ndarray] = {}
    with torch.inference_mode():
        for _ in range(a.repeats):
            for gain in times:
                run_ref = ref
                if a.setting == "head_motion":  # the run's choice, carried by the reference
                    run_ref = dataclasses.replace(ref, head_motion=gain)
                else:
                    bundle.vae.cfg = dataclasses.replace(base, **{a.setting: gain})
                t0 = time.perf_counter()
                video = decode_video(bundle.vae, s.latent[None], run_ref)[0]
                times[gain].append(time.perf_counter() - t0)
                frames[gain] = ((video.permute(1, 2, 3, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()[:n]
    bundle.vae.cfg = base
    if a.frames:
        Path(a.frames).mkdir(parents=True, exist_ok=True)
        for gain, fr in frames.items():
            np.save(Path(a.frames) / f"{a.setting}_{gain:g}.npy", fr)
    measures = {}
    with rp.FaceMeter() as meter:
        face = rp.pipeline_reference(bundle, photo, meter, name=a.portrait)
        for gain, fr in frames.items():  # face mesh once per video: the gaps feed every lip measure
            _, gaps = meter.track(fr, face.centres)
            sync = rp.lip_sync(gaps[:, 0], wav)
            measures[gain] = {"lip_gap_mean": float(np.nanmean(gaps)), "lip_gap_change": float(np.nanmean(np.abs(np.diff(gaps[:, 0])))),
                              **{k: sync[k] for k in ("lipsync_r", "lipsync_r_reversed", "lipsync_r_margin")},
                              "darkness_r": rp.darkness_sync(fr, wav, face)["darkness_r"],
                              **{k: v for k, v in rp.upper_face_measures(fr, face).items() if k != "upper_flicker_p95"},
                              "psnr": rp.identity(fr, face)["psnr"]}
    off, on = statistics.median(times[0.0]), statistics.median(times[1.0])
    out = {"portrait": a.portrait, "seed": a.seed, "seconds": a.seconds, "frames": n, "size": list(picture.shape[:2]), "voice": info,
           "setting": a.setting, "others": {k: v for k, v in dataclasses.asdict(base).items() if k in SETTINGS and k != a.setting},
           "seams_found": len(seams), "open_seams_found": sum(seam.open for seam in seams), "rigid_faces_found": len(rigid), "face_search_s": search_s,
           "decode_s": {f"{a.setting}_0": off, f"{a.setting}_1": on}, "decode_ratio_on_off": on / off,
           "off": measures[0.0], "on": measures[1.0]}
    print(json.dumps(rp.json_safe(out), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
