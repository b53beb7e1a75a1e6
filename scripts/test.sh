#!/usr/bin/env bash
# Install everything the test suite needs (on a fresh machine too) and run it.
#
#   bash scripts/test.sh [pytest args...]
#
# The venv and package (scripts/install.sh), Debian tools (espeak-ng, sox, chromium) and a real
# ComfyUI 0.3.75 for the integration tests; then ruff and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
source scripts/install.sh dev,train,usp,demo,ray
bash scripts/install_test_system_deps.sh
bash scripts/install_comfyui.sh >/dev/null

ruff check .
python -m pytest "$@"
