"""Is the speaker rows' lip gap limited by face mesh's noise? (prints JSON): re-reads the speaker videos a
`bench/demo_quality.py` run left in its work folder, once as the bench reads them (one face-mesh crop per face and
frame) and once with each reading averaged over several crops shifted and scaled by a fraction of the face, which
lowers face mesh's own noise. Reported per mode: the silent / active lip-gap ratio of each speaker, its active and
silent change, and face mesh's floor on that mouth held still (`real_photos.gap_noise_floor`).

Usage: OMP_NUM_THREADS=1 python bench/lip_gap_jitter.py --run /tmp/demo_quality_XXXX [--speakers 3] [--crops 5]
       [--seconds 4] [--seed 0]   (the same --seconds and --seed as the demo_quality run)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from training.eval.real_photos import FACE_CROP

# FaceMeter crops (dx, dy in face heights, side in face sizes); the first is the bench's own
CROPS = [FACE_CROP, (0.01, 0.0, 1.78), (-0.01, 0.0, 1.82), (0.0, 0.01, 1.8), (0.0, -0.01, 1.8),
         (0.007, 0.007, 1.84), (-0.007, -0.007, 1.76), (0.007, -0.007, 1.8), (-0.007, 0.007, 1.8)]


def main(argv: list[str] | None = None) -> int:
    from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR, load_bundle
    from training.eval import real_photos as rp

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a demo_quality work folder (holds <mode>_speakers<k>.mp4)")
    ap.add_argument("--speakers", type=int, default=3)
    ap.add_argument("--crops", type=int, default=5, help=f"crops averaged, 2..{len(CROPS)}")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if not 2 <= a.crops <= len(CROPS):
        ap.error(f"--crops must be in 2..{len(CROPS)}")
    k = a.speakers
    videos = {m: Path(a.run) / f"{m}_speakers{k}.mp4" for m in ("base", "distilled")}
    videos = {m: p for m, p in videos.items() if p.is_file()}
    if not videos:
        ap.error(f"no {{base,distilled}}_speakers{k}.mp4 in {a.run}: run bench/demo_quality.py with --speakers {k}")
    work = Path(tempfile.mkdtemp(prefix="lip_gap_jitter_"))
    bundle = load_bundle(DEMO_MODEL_DIR, "cpu")
    comp = rp.composite(rp.group_portraits(work), k)  # the bench's composite and voices
    tracks, owner = rp.turn_tracks(k, max(a.seconds, 2.0 * k), a.seed + 7 * k)
    result: dict = {"run": a.run, "speakers": k, "crops": a.crops}
    keys = ("gap_active", "gap_silent", "gap_ratio", "gap_noise_floor")
    with rp.FaceMeter() as plain, rp.FaceMeter(crops=CROPS[: a.crops]) as averaged:
        ref = rp.pipeline_reference(bundle, comp, plain, faces=k, name=f"the {k}-face composite")
        for mode, path in videos.items():
            frames = rp.read_video(path)
            for name, meter in (("one_crop", plain), (f"{a.crops}_crops", averaged)):
                m = rp.speaker_measures(frames, tracks, owner, ref, meter)
                result[f"{mode}_{name}"] = {"gap_ratio_max": m["gap_ratio_max"],
                                            "speakers": [{q: r[q] for q in keys} for r in m["speakers"]]}
                print(json.dumps(rp.json_safe({mode: name, "gap_ratio_max": m["gap_ratio_max"]})), file=sys.stderr)
    print(json.dumps(rp.json_safe(result), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
