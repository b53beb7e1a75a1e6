#!/usr/bin/env bash
# Install everything the test suite needs (on a fresh machine too) and run it.
#
#   bash scripts/test.sh [pytest args...]
#
# Creates .venv (or reuses $MAGICINFINITE_VENV), installs the CPU torch 2.13.0 first so nothing pulls
# CUDA wheels, then this package with its extras, Debian tools (espeak-ng, sox, chromium) and a real
# ComfyUI 0.3.75 for the integration tests, then runs ruff and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${MAGICINFINITE_VENV:-.venv}"
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
# shellcheck disable=SC1091
source "$VENV/bin/activate"

quiet_pip() { python -m pip "$@" 2>&1 | { grep -v -E "^WARNING: Location .* is ignored" || true; }; return "${PIPESTATUS[0]}"; }
quiet_pip install -q --upgrade pip
quiet_pip install -q "torch==2.13.0"
quiet_pip install -q -e ".[dev,train,usp,demo]" -c <(echo "torch==2.13.0")

bash scripts/install_test_system_deps.sh
bash scripts/install_comfyui.sh >/dev/null

ruff check .
python -m pytest "$@"
