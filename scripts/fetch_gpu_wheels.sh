#!/usr/bin/env bash
# Download, HERE, the wheels the lent GPU machine lacks for bench/gpu_check.py, into .whl/ (git-ignored),
# so a device `run` can carry them (that machine reaches no registry). See docs/gpu_check.md.
#
#   bash scripts/fetch_gpu_wheels.sh [DEST]        (default .whl in the repository root)
#
# The machine (KINDS.md of the device tool): Python 3.12, x86-64, torch 2.11 + CUDA 13, triton,
# transformers, accelerate, peft, einops, sentencepiece, safetensors, numpy, pillow, pyyaml, requests,
# huggingface-hub already installed. Missing and needed:
#   diffusers          the VAE (magicinfinite_core.media.vae imports it at the top); needs importlib_metadata
#   soxr               magicinfinite_core.inputs.audio (imported by pipeline.py)
#   xfuser + yunchang  the USP path (`bench/usp_scaling.py --xfuser-check`); xfuser's package import
#                      also pulls distvae (its VAE pipelines) and beautifulsoup4 (+ soupsieve)
# Deliberately not carried: PyAV (36 MB; only video_io needs it, for writing mp4, which gpu_check never
# does), flash-attn (a CUDA build, ~200 MB; torch's SDPA flash backend is measured instead), torchao
# (fp8 runs through torch._scaled_mm). One version of each, pinned, so the install there is reproducible.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${1:-.whl}"
mkdir -p "$DEST"
grep -qxF "/.whl/" .gitignore || echo "/.whl/" >> .gitignore

WHEELS=(
  diffusers==0.42.1
  importlib_metadata==10.2.0
  soxr==1.1.0
  xfuser==0.7.0
  yunchang==0.6.4
  distvae==0.1.0
  beautifulsoup4==4.15.0
  soupsieve==4.1.3
)
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d "$DEST" "${WHEELS[@]}" 2>&1 | { grep -v -E "^WARNING: Location .* is ignored" || true; }

# keep exactly one version of each project (two stop the install on the machine)
python3 - "$DEST" "${WHEELS[@]}" <<'EOF'
import pathlib, re, sys
dest, wanted = pathlib.Path(sys.argv[1]), sys.argv[2:]
norm = lambda s: re.sub(r"[-_.]+", "_", s).lower()
pins = {norm(w.split("==")[0]): w.split("==")[1] for w in wanted}
seen = {}
for whl in sorted(dest.glob("*.whl")):
    name, version = whl.name.split("-")[:2]
    if norm(name) not in pins or version != pins[norm(name)]:
        print(f"removing {whl.name}: not in the pinned list")
        whl.unlink()
        continue
    seen[norm(name)] = whl.name
missing = sorted(set(pins) - set(seen))
if missing:
    sys.exit(f"missing wheels: {missing}")
total = sum(p.stat().st_size for p in dest.glob("*.whl"))
print(f"{len(seen)} wheels, {total / 2**20:.1f} MiB in {dest}/")
EOF
