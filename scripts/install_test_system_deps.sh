#!/usr/bin/env bash
# System packages the test suite uses: espeak-ng (speech for audio fixtures), sox, chromium
# (headless smoke test of ComfyUI's frontend). Installs only what is missing, only where apt exists.
#
#   scripts/install_test_system_deps.sh        (as root, or with sudo available)
set -euo pipefail

declare -A PKG_FOR_CMD=([espeak-ng]=espeak-ng [sox]=sox [chromium]=chromium)
missing=()
for cmd in "${!PKG_FOR_CMD[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${PKG_FOR_CMD[$cmd]}")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "[install_test_system_deps] all present: ${!PKG_FOR_CMD[*]}"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "[install_test_system_deps] apt-get not available; install by hand: ${missing[*]}" >&2
    exit 1
fi
SUDO=""
if [[ "$(id -u)" != "0" ]]; then SUDO="sudo"; fi
echo "[install_test_system_deps] installing: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
