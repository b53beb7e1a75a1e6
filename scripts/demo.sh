#!/usr/bin/env bash
# Install what the demo needs and make a talking video with the embedded demo model, through the
# single-speaker workflow run headlessly (ComfyUI's own executor, no server, no browser).
#
#   bash scripts/demo.sh [OUT_DIR]          (default out/demo; the mp4 path is printed at the end)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-out/demo}"
# shellcheck disable=SC1091
source scripts/install.sh demo
bash scripts/install_comfyui.sh >/dev/null
magicinfinite run workflows/single_speaker_api.json --out "$OUT"
