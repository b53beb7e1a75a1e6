"""The demo inputs copied into ComfyUI's input folder follow the pack: stale copies are refreshed.

Why: a ComfyUI that once ran an older pack kept that version's portrait under the same name, and the
example workflows then animated the old drawing instead of the shipped photograph.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "workflows" / "assets"


def pack_assets_module():
    """nodes/assets.py on its own (the nodes package itself needs a running ComfyUI)."""
    spec = importlib.util.spec_from_file_location("pack_assets", ROOT / "nodes" / "assets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def runner_install(input_dir: Path) -> None:
    from runner.headless import install_demo_inputs

    install_demo_inputs(input_dir)


@pytest.mark.parametrize("install", ["pack", "runner"])
def test_stale_demo_copies_are_replaced_and_other_files_kept(tmp_path, install, monkeypatch):
    monkeypatch.delenv("MAGICINFINITE_NO_DEMO_INPUTS", raising=False)  # the headless runner sets it
    run = (lambda d: pack_assets_module().install_demo_inputs(d)) if install == "pack" else runner_install
    stale = tmp_path / "magicinfinite_demo_portrait_one_speaker.jpg"
    stale.write_bytes(b"an older pack's portrait")
    mine = tmp_path / "my_portrait.png"
    mine.write_bytes(b"the user's own file")
    run(tmp_path)
    assert stale.read_bytes() == (ASSETS / "portrait_one_speaker.jpg").read_bytes()
    assert mine.read_bytes() == b"the user's own file"
    for src in ASSETS.iterdir():
        assert (tmp_path / f"magicinfinite_demo_{src.name}").read_bytes() == src.read_bytes()
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    run(tmp_path)  # up to date: nothing is rewritten
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    assert not list(tmp_path.glob("*.tmp"))
