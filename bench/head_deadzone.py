"""What `head_deadzone` holds and what it costs (prints JSON): the demo's 4-step generator makes the same
held-out video (a picture, a held-out voice, the held-out still phrasing, then the same phrasing with a nod)
at each dead zone, through `generate` with the mp4 read back.

Reported per picture, voice and prompt: the upper face's mean frame-to-frame change (grey levels; the bob of a
still head) and its PSNR against the portrait, the head's vertical motion (`real_photos.head_motion`, what the
bench's nodding-vs-still AUC ranks), the nod's size and speed in picture pixels (`real_photos.head_swing`: a
hold that keeps a nod's size by moving it faster snaps the head), and lip sync against the voice and the reversed
voice; then per dead zone the means over the still and the nodding videos.

Usage: OMP_NUM_THREADS=1 python bench/head_deadzone.py [--deadzones 0 0.01 0.02] [--seeds 500 501 503]
       [--pictures full_length grace_hopper] [--seconds 4]
(`--pictures` takes held-out photographs by name and the bench's composed test pictures: full_length, ...)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    from magicinfinite_core.generate import generate
    from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR, load_bundle
    from training.eval import real_photos as rp

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEMO_MODEL_DIR))
    ap.add_argument("--deadzones", type=float, nargs="+", default=[0.0, 0.01, 0.02])
    ap.add_argument("--seeds", type=int, nargs="+", default=[500, 501, 503], help="held-out voices and phrasings")
    ap.add_argument("--pictures", nargs="+", default=["full_length", rp.HALF_LENGTH])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    work = Path(tempfile.mkdtemp(prefix="head_deadzone_"))
    bundle = load_bundle(a.model, "cpu", distilled=True)
    rows = []
    with torch.inference_mode(), rp.FaceMeter() as meter:
        for name in a.pictures:
            photo = rp.picture_by_name(name, work)
            ref = rp.pipeline_reference(bundle, photo, meter, name=name)
            box = np.asarray(ref.faces[0].box, np.float32)
            for seed in a.seeds:
                wav, info = rp.heldout_speech(a.seconds, seed)
                for action in ("still", "nodding"):
                    for dz in a.deadzones:
                        path, _ = generate(photo, rp._wav(wav), rp.heldout_prompt(seed, action), model=bundle,
                                           out=work / f"{name}_{seed}_{action}_{dz:g}.mp4", distilled=True, seed=0,
                                           head_deadzone=dz)
                        frames = rp.read_video(path)
                        m = rp.talking_measures(frames, wav, ref, meter)
                        rows.append({"picture": name, "seed": seed, "voice": info["voice"], "action": action,
                                     "head_deadzone": dz,
                                     **{f"head_{k}": v for k, v in rp.head_swing(frames, box, ~ref.keep).items()},
                                     **{k: m[k] for k in ("upper_flicker", "upper_psnr", "lipsync_r", "lipsync_r_reversed")}})
                        print(json.dumps(rp.json_safe(rows[-1])), file=sys.stderr, flush=True)
    summary = {}
    for dz in a.deadzones:
        for action in ("still", "nodding"):
            sel = [r for r in rows if r["head_deadzone"] == dz and r["action"] == action]
            summary[f"{dz:g}_{action}"] = {k: statistics.mean(r[k] for r in sel)
                                           for k in ("upper_flicker", "upper_psnr", "head_motion", "head_swing",
                                                     "head_speed", "lipsync_r")}
    print(json.dumps(rp.json_safe({"model": a.model, "seconds": a.seconds, "pictures": a.pictures, "seeds": a.seeds,
                                   "summary": summary, "rows": rows}), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
