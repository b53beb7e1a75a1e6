"""scripts/install_comfyui.sh never deletes a folder it did not create (issue 28, item 7): another
ComfyUI is used as it is, any other non-empty folder is refused with a clear message."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .comfyui_server import INSTALL_SCRIPT


def _run(dest, **env):
    full_env = dict(os.environ, PYTHON=sys.executable, **env)
    full_env.pop("MAGICINFINITE_COMFYUI", None)
    return subprocess.run(["bash", str(INSTALL_SCRIPT), str(dest)], env=full_env, capture_output=True,
                          text=True, timeout=600)


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_foreign_non_empty_folder_is_refused_and_left_alone(tmp_path):
    dest = tmp_path / "my_project"
    dest.mkdir()
    (dest / "notes.txt").write_text("precious")
    (dest / "sub").mkdir()
    (dest / "sub" / "data.bin").write_bytes(b"\x00\x01")
    before = _snapshot(dest)
    done = _run(dest)
    assert done.returncode == 2
    assert "was not created by this script" in done.stderr and "refusing to replace it" in done.stderr
    assert _snapshot(dest) == before


@pytest.mark.comfyui
def test_another_comfyui_without_the_stamp_is_used_as_it_is(comfyui_install, tmp_path):
    """Like MAGICINFINITE_COMFYUI pointing at a ComfyUI checkout: no download, nothing replaced."""
    dest = tmp_path / "ComfyUI"
    dest.mkdir()
    for name in ("main.py", "execution.py", "comfyui_version.py"):
        (dest / name).write_text((comfyui_install / name).read_text())
    (dest / "my_workflow.json").write_text("{}")
    before = _snapshot(dest)
    done = _run(dest)
    assert done.returncode == 0, done.stderr
    assert "used" not in done.stdout and done.stdout.strip() == str(dest)
    assert "as it is" in done.stderr and "downloading" not in done.stderr
    assert _snapshot(dest) == before and not (dest / ".magicinfinite_source_ok").exists()
