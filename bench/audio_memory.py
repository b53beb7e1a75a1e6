"""Peak memory of loading + featurising long audio (mel extractor), e.g. 1 min vs 60 min.

Each case runs in its own subprocess so ``ru_maxrss`` is that case's peak alone. The source file is a
44.1 kHz 16-bit stereo wav (so decoding, mono mixing and resampling are all exercised) of seeded
speech-band noise and tones, written block by block to a temporary folder.

    python bench/audio_memory.py                 # 1 and 60 minutes, prints JSON
    python bench/audio_memory.py --minutes 0.1 0.5
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_wav(path: Path, minutes: float, sample_rate: int, seed: int) -> None:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    total = int(round(minutes * 60 * sample_rate))
    block = sample_rate * 10
    with sf.SoundFile(str(path), "w", samplerate=sample_rate, channels=2, subtype="PCM_16") as f:
        for start in range(0, total, block):
            n = min(block, total - start)
            t = (np.arange(start, start + n) / sample_rate).astype(np.float64)
            tone = 0.2 * np.sin(2 * np.pi * (180 + 40 * np.sin(2 * np.pi * 0.3 * t)) * t)
            noise = 0.05 * rng.standard_normal(n)
            x = (tone + noise).astype(np.float32)
            f.write(np.stack([x, 0.5 * x], axis=1))


def child(path: str, extractor: str) -> None:
    t0 = time.perf_counter()
    from magicinfinite_core.inputs.audio import load_audio
    from magicinfinite_core.inputs.audio_features import load_extractor

    t_import = time.perf_counter()
    rss_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if path == "-":  # fixed cost: imports + building the extractor + featurising 1 s
        load_extractor(extractor).extract(np.zeros(16_000, np.float32))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"peak_rss_mb": round(rss, 1), "setup_s": round(time.perf_counter() - t0, 2)}))
        return
    audio = load_audio(path)
    t_load = time.perf_counter()
    feats = load_extractor(extractor).extract(audio)
    t_feat = time.perf_counter()
    print(
        json.dumps(
            {
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "rss_after_import_mb": round(rss_import, 1),
                "load_s": round(t_load - t_import, 2),
                "extract_s": round(t_feat - t_load, 2),
                "duration_s": audio.duration_s,
                "frames": audio.num_frames,
                "feature_shape": list(feats.shape),
                "feature_dtype": str(feats.dtype),
                "waveform_mb": round(audio.waveform.nbytes / 2**20, 1),
                "features_mb": round(feats.numel() * feats.element_size() / 2**20, 2),
            }
        )
    )


def run_case(path: str, extractor: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", path, "--extractor", extractor],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[1.0, 60.0])
    ap.add_argument("--extractor", default="mel")
    ap.add_argument("--sample-rate", type=int, default=44_100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-baseline", action="store_true", help="skip the fixed-cost (imports) case")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        child(args.child, args.extractor)
        return {}
    result: dict = {"extractor": args.extractor, "source": f"{args.sample_rate} Hz stereo PCM_16 wav"}
    result["baseline"] = {"peak_rss_mb": 0.0} if args.no_baseline else run_case("-", args.extractor)
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            path = Path(tmp) / f"bench_{minutes:g}min.wav"
            write_wav(path, minutes, args.sample_rate, args.seed)
            case = {"minutes": minutes, "file_mb": round(path.stat().st_size / 2**20, 1)}
            case.update(run_case(str(path), args.extractor))
            case["above_baseline_mb"] = round(case["peak_rss_mb"] - result["baseline"]["peak_rss_mb"], 1)
            cases.append(case)
            path.unlink()
    result["cases"] = cases
    if len(cases) >= 2:
        a, b = cases[0], cases[-1]
        result["peak_ratio_last_vs_first"] = round(b["peak_rss_mb"] / a["peak_rss_mb"], 2)
        result["above_baseline_per_hour_mb"] = round(
            (b["above_baseline_mb"] - a["above_baseline_mb"]) / ((b["minutes"] - a["minutes"]) / 60), 1
        )
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
