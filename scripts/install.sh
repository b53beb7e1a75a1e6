#!/usr/bin/env bash
# Shared by scripts/test.sh and scripts/demo.sh: create/activate the venv and install the package.
#
# Creates .venv (or uses $MAGICINFINITE_VENV), installs the CPU torch 2.13.0 first so nothing pulls
# CUDA wheels, then this package with the extras given as arguments (default: demo).
# Source it:  source scripts/install.sh dev,train,usp,demo,ray
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV="${MAGICINFINITE_VENV:-.venv}"
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
# shellcheck disable=SC1091
source "$VENV/bin/activate"

quiet_pip() { python -m pip "$@" 2>&1 | { grep -v -E "^WARNING: Location .* is ignored" || true; }; return "${PIPESTATUS[0]}"; }
quiet_pip install -q --upgrade pip
quiet_pip install -q "torch==2.13.0"
# The package's own install: the build backend's notes (editable-install banners) are shown only
# when the install fails, so a newcomer's first command prints progress and results, not noise.
if ! pkg_log="$(python -m pip install -q -e ".[${1:-demo}]" -c <(echo "torch==2.13.0") 2>&1)"; then
    echo "$pkg_log" | { grep -v -E "^WARNING: Location .* is ignored" || true; } >&2
    false
fi
