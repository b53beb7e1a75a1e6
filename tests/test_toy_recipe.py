"""The toy-scale recipe of docs/training.md, run line by line from a clean folder as a newcomer would.

world -> VAE -> caches -> stage 1 -> stage 2 (SIGKILLed mid-run, then resumed) -> export to a named
folder -> distillation -> a video through `magicinfinite generate` and through the headless ComfyUI
runner `magicinfinite run`. The commands come from the docs' toy block itself, so the docs cannot
drift from what is tested. Asserts: per-split clip counts seen by every trainer,
magicinfinite_core/assets/ untouched, and the resumed stage 2 logging the same losses as an
uninterrupted one (no step twice).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "training.md"
ASSETS = REPO / "magicinfinite_core" / "assets"
SPLITS = {"train": 6, "heldout": 2}
SHELL_PRELUDE = 'set -e\npython() { "$PY" "$@"; }\nmagicinfinite() { "$PY" -m runner.cli "$@"; }\n'


def recipe_commands() -> list[str]:
    """The shell commands of the docs' toy block (continuation lines joined), without `RUN=...`."""
    text = DOC.read_text()
    block = re.search(r"<!-- toy-recipe -->\s*```bash\n(.*?)```", text, re.S)
    assert block, "docs/training.md lost its <!-- toy-recipe --> block"
    joined = block.group(1).replace("\\\n", " ")
    lines = [" ".join(x.split()) for x in joined.splitlines() if x.strip()]
    assert lines[0].startswith("RUN="), lines[0]
    return lines[1:]


def tree_hash(root: Path) -> str:
    """sha256 over every file's relative path and bytes under root."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def loss_records(log: Path) -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def start_records(log: Path) -> list[dict]:
    return [r for r in map(json.loads, log.read_text().splitlines()) if r.get("event") == "start"]


class Shell:
    """Runs recipe lines in bash from the repo root, with `python`/`magicinfinite` = this interpreter."""

    def __init__(self, run: Path, env_extra: dict[str, str]):
        self.env = {**os.environ, "RUN": str(run), "PY": sys.executable, "PYTHONPATH": str(REPO),
                    "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **env_extra}
        self.durations: dict[str, float] = {}

    def popen(self, cmd: str) -> subprocess.Popen:
        return subprocess.Popen(["bash", "-c", SHELL_PRELUDE + cmd], cwd=REPO, env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)

    def __call__(self, cmd: str, timeout: float = 240) -> str:
        t0 = time.time()
        res = subprocess.run(["bash", "-c", SHELL_PRELUDE + cmd], cwd=REPO, env=self.env, text=True,
                             capture_output=True, timeout=timeout)
        self.durations[" ".join(cmd.split()[:4])] = round(time.time() - t0, 1)
        assert res.returncode == 0, f"{cmd}\n--- stdout\n{res.stdout[-3000:]}\n--- stderr\n{res.stderr[-3000:]}"
        return res.stdout


def kill_mid_run(sh: Shell, cmd: str, log: Path, after_step: int = 3) -> int:
    """Start `cmd`, SIGKILL its process group once the log shows a step past `after_step`."""
    proc = sh.popen(cmd)
    deadline = time.time() + 180
    last = 0
    while time.time() < deadline and proc.poll() is None:
        if log.is_file():
            steps = [s for s, _ in loss_records(log)] if log.stat().st_size else []
            last = steps[-1] if steps else 0
            if last > after_step:
                break
        time.sleep(0.005)
    assert proc.poll() is None, f"stage 2 ended before it could be killed:\n{proc.communicate()[1][-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL)
    return last


def comfyui_env(request) -> dict[str, str] | None:
    """MAGICINFINITE_COMFYUI for the headless runner, or None when ComfyUI was asked to be skipped."""
    try:
        return {"MAGICINFINITE_COMFYUI": str(request.getfixturevalue("comfyui_install"))}
    except pytest.skip.Exception:
        return None


@pytest.mark.slow
def test_documented_toy_recipe_end_to_end(tmp_path, request):
    t_start = time.time()
    comfy = comfyui_env(request)
    run = tmp_path / "toy"  # the bundle is named after the run folder: "toy"
    sh = Shell(run, comfy or {})
    before = tree_hash(ASSETS)
    cmds = recipe_commands()
    stage2 = [c for c in cmds if "training.trainer --stage 2" in c]
    assert len(stage2) == 1
    stage2_log = run / "stage2" / "log.jsonl"

    outputs: dict[str, str] = {}
    for cmd in cmds:
        if cmd.startswith("magicinfinite run") and comfy is None:
            continue  # MAGICINFINITE_SKIP_COMFYUI=1
        if cmd in stage2:
            killed_at = kill_mid_run(sh, cmd, stage2_log)
            outputs["stage2"] = sh(cmd)  # rerun the same command = resume
            assert "resumed stage 2 at step" in outputs["stage2"]
            continue
        key = cmd.split()[2] if cmd.startswith("python") else " ".join(cmd.split()[:2])
        outputs[key] = outputs.get(key, "") + sh(cmd)

    print(json.dumps({"recipe_s": round(time.time() - t_start, 1), **sh.durations}, indent=1))

    # --- every trainer trained on the train split only and said what it saw
    assert json.loads((run / "vae" / "vae_summary.json").read_text())["clips"] == SPLITS
    for stage in (1, 2):
        starts = start_records(run / f"stage{stage}" / "log.jsonl")
        assert starts and all(s["clips"] == SPLITS for s in starts)
    assert start_records(run / "distill" / "log.jsonl")[0]["clips"] == SPLITS
    distill_steps = [json.loads(x).get("step") for x in (run / "distill" / "log.jsonl").read_text().splitlines()]
    assert [s for s in distill_steps if s is not None] == [1, 2, 3, 4, 5, 6]
    for key, who in (("training.train_vae", "vae"), ("training.trainer", "stage 1"), ("stage2", "stage 2"),
                     ("training.distill.trainer", "distill")):
        assert f"{who}: training on 6 train clips (seen and not trained on: heldout 2)" in outputs[key], key

    # --- the resumed stage 2 equals an uninterrupted one, and its log holds no step twice
    resumed = loss_records(stage2_log)
    steps = [s for s, _ in resumed]
    assert steps == list(range(1, len(steps) + 1)) and steps[-1] == 40
    resume_step = start_records(stage2_log)[-1]["start_step"]
    assert 0 < resume_step <= killed_at < 40
    from training.trainer import main as trainer_main

    ref = tmp_path / "reference"
    assert trainer_main(["--stage", "2", "--config", str(REPO / "training/configs/toy.json"), "--out", str(ref),
                         "--no-progress", "--cpu", "--set", f"cache={run / 'cache'}",
                         f"stage2.init={run / 'stage1' / 'dit_last.safetensors'}"]) == 0
    straight = loss_records(ref / "stage2" / "log.jsonl")
    assert dict(resumed)[resume_step + 1] == dict(straight)[resume_step + 1]  # the next logged loss
    assert resumed == straight

    # --- the export went to the named folder, named after the run, with CFG scales
    bundle = json.loads((run / "bundle" / "bundle.json").read_text())
    assert bundle["name"] == "toy" and bundle["resolution"] == [32, 32]
    assert (bundle["sampler"]["audio_scale"], bundle["sampler"]["text_scale"]) == (3.0, 0.0)
    distilled = json.loads((run / "distill" / "bundle" / "bundle.json").read_text())
    assert distilled["distilled"]["dit"] == "dit_4step.safetensors" and distilled["name"] == "toy"

    # --- videos from the distilled bundle: CLI and headless ComfyUI runner
    import av

    videos = [run / "video.mp4"]
    if comfy is not None:
        assert "node 1: toy-4step: 32x32" in outputs["magicinfinite run"]
        videos += sorted((run / "comfy").rglob("*.mp4"))
        assert len(videos) == 2
    for v in videos:
        with av.open(str(v)) as f:
            frames = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
        assert len(frames) == 17 and frames[0].shape == (32, 32, 3), v

    assert tree_hash(ASSETS) == before, "the recipe wrote into magicinfinite_core/assets/"
    total = time.time() - t_start
    print(json.dumps({"total_s": round(total, 1), **sh.durations}, indent=1))
