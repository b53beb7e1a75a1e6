"""USP worker processes start inside a ComfyUI-like parent: its main script is not re-run in the
children and ComfyUI's ``comfy/`` folder (first on ``sys.path`` once ``nodes.py`` ran) does not hide
ComfyUI's ``utils`` package from them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from magicinfinite_core.distributed.spawn_env import child_sys_path, clean_spawn_environment

from .comfyui_server import REPO_ROOT


def test_child_sys_path_drops_package_folders_under_another_entry(tmp_path):
    root = tmp_path / "ComfyUI"
    (root / "comfy").mkdir(parents=True)
    (root / "comfy" / "__init__.py").write_text("")
    checkout = tmp_path / "checkout"  # a repo root with __init__.py whose parent is not on the path
    checkout.mkdir()
    (checkout / "__init__.py").write_text("")
    entries = [str(root / "comfy"), str(root), "", str(checkout), "/usr/lib/python3"]
    assert child_sys_path(entries) == [str(root), "", str(checkout), "/usr/lib/python3"]


def test_clean_spawn_environment_restores_path_and_main():
    main, path = sys.modules["__main__"], list(sys.path)
    with clean_spawn_environment():
        assert sys.modules["__main__"] is not main and not hasattr(sys.modules["__main__"], "__file__")
    assert sys.modules["__main__"] is main and sys.path == path


_COMFY_LIKE_MAIN = """
    # Like ComfyUI's main.py: imports ComfyUI's `utils` package at top level, then nodes.py puts
    # comfy/ first on sys.path. A spawned child that re-ran this file would fail at the first import.
    import importlib, os, sys
    if os.environ["MI_COMFYUI"] not in sys.path:  # ComfyUI's main.py: its folder is the script's folder
        sys.path.insert(0, os.environ["MI_COMFYUI"])
    importlib.import_module("utils.extra_config")
    importlib.import_module("comfy.options")
    importlib.import_module("comfy.cli_args").args.cpu = True
    importlib.import_module("nodes")  # 0.3.75 puts comfy/ first on sys.path here
    comfy_pkg = os.path.join(os.environ["MI_COMFYUI"], "comfy")
    if not sys.path[0].endswith("comfy"):  # newer ComfyUI does it when it loads custom nodes
        sys.path.insert(0, comfy_pkg)
    with open(os.environ["MI_MARK"], "a") as f:
        f.write("main ran\\n")

    if __name__ == "__main__":
        assert sys.path[0].endswith("comfy"), sys.path[:2]
        import torch
        from magicinfinite_core.config import dit_preset
        from magicinfinite_core.distributed.worker_group import ModelSpec, SequenceParallelWorkerGroup
        from magicinfinite_core.weights.checkpoints import save_dit

        ckpt = save_dit(os.path.join(os.environ["MI_TMP"], "tiny.safetensors"),
                        ModelSpec(config=dit_preset("tiny"), seed=1).build())
        with SequenceParallelWorkerGroup(2, ModelSpec(checkpoint=str(ckpt)), backend="gloo",
                                         attention="yunchang", threads=1, start_timeout_s=600) as group:
            print("group of", group.n, "started")
"""


@pytest.mark.comfyui
@pytest.mark.slow
def test_usp_worker_group_starts_under_a_comfyui_main_script(comfyui_install, tmp_path):
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent(_COMFY_LIKE_MAIN))
    mark = tmp_path / "mark.txt"
    env = dict(os.environ, MI_COMFYUI=str(comfyui_install), MI_MARK=str(mark), MI_TMP=str(tmp_path),
               PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0 and "group of 2 started" in done.stdout, done.stderr[-3000:]
    assert mark.read_text() == "main ran\n"  # the parent only: no child re-ran the main script
