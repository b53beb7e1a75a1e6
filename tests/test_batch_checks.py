"""Issue 29 cases 5 and 13: a batch (and ``run --set``) checks every row, column and mapping before the
first job runs, and bad files / folders get one line with the documented exit code; nothing is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ..runner import batch, headless
from .comfyui_server import REPO_ROOT, WORKFLOWS_DIR, magic_workflow, write_wav

SINGLE = WORKFLOWS_DIR / "single_speaker_api.json"


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ---------------------------------------------------------------- no ComfyUI needed (refused before it loads)


@pytest.mark.parametrize(("name", "text", "words"), [
    ("jobs.csv", "id,3.audio,6.seed\na,v.wav,1\nb,,2\n", ["jobs.csv:3: job b has no value for column '3.audio'"]),
    ("jobs.jsonl", '{"id": "a", "3.audio": "v.wav", "6.seed": 1}\n{"id": "b", "6.seed": 2}\n',
     ["jobs.jsonl:2: job b has no value for column '3.audio'"]),
    ("jobs.jsonl", '{"id": "a", "3.audio": null}\n', ["jobs.jsonl:1: job a has no value for column '3.audio'"]),
    ("jobs.csv", b"id,6.prompt\na,caf\xe9\n", ["jobs.csv:2: not UTF-8 text (byte 0xe9)", "save the jobs file as UTF-8"]),
    ("jobs.csv", "id,voice\na,v.wav\n", ["--map portrait=2.image: jobs.csv has no column 'portrait'", "voice"]),
])
def test_bad_jobs_files_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, name, text, words):
    jobs = tmp_path / name
    jobs.write_bytes(text if isinstance(text, bytes) else text.encode())
    out = tmp_path / "out"
    code = batch.main([str(jobs), "--workflow", str(SINGLE), "--out", str(out), "--map", "portrait=2.image"])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and all(w in line for w in words), line
    assert not out.exists()


def test_run_and_batch_refuse_an_out_that_is_a_file(tmp_path):
    """The real CLI: ``run --out FILE`` exits 1, ``batch --out FILE`` 2, each with one line; the file is untouched."""
    target = tmp_path / "taken.mp4"
    target.write_bytes(b"keep me")
    (tmp_path / "jobs.csv").write_text("id,6.seed\na,1\n")
    bad_wf = tmp_path / "wf.json"
    bad_wf.write_bytes(b'{"1": "\xff"}')
    for argv, code, words in [
        (["run", str(SINGLE), "--out", str(target)], 1, f"--out {target} is a file"),
        (["batch", str(tmp_path / "jobs.csv"), "--workflow", str(SINGLE), "--out", str(target)], 2,
         f"--out {target} is a file"),
        (["run", str(bad_wf), "--out", str(tmp_path / "o")], 1, "is not UTF-8 text"),
    ]:
        proc = subprocess.run([sys.executable, "-m", "runner.cli", *argv], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == code and words in _one_error_line(proc.stderr), proc.stderr
    assert target.read_bytes() == b"keep me" and not (tmp_path / "o").exists()
    helps = [" ".join(subprocess.run([sys.executable, "-m", "runner.cli", cmd, "--help"], cwd=REPO_ROOT,
                                     capture_output=True, text=True, timeout=60).stdout.split())
             for cmd in ("run", "batch")]
    assert "2 bad command-line arguments" in helps[0] and "130 interrupted" in helps[0]
    assert "2 bad arguments, workflow or jobs file" in helps[1] and "130 interrupted" in helps[1]


# ---------------------------------------------------------------- with ComfyUI: every row checked first


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("batch_checks")
    write_wav(d / "voice.wav", seconds=0.6)
    (d / "face.png").write_bytes((WORKFLOWS_DIR / "assets" / "portrait_one_speaker.jpg").read_bytes())
    return d


def _seed_rows(n: int, bad_row: int | None = None, bad_seed: int = -5) -> str:
    return "id,portrait,voice,6.seed\n" + "".join(
        f"j{i:04d},face.png,voice.wav,{bad_seed if i == bad_row else i}\n" for i in range(1, n + 1))


@pytest.mark.comfyui
@pytest.mark.parametrize(("jobs_text", "maps", "words"), [
    (_seed_rows(2).replace("6.seed", "6.nosuch"), ["voice=3.audio"],
     ["column '6.nosuch': node 6 (MagicInfiniteSampler) has no input 'nosuch'", "seed"]),
    (_seed_rows(2), ["voice=3.nosuch"], ["--map voice=3.nosuch: node 3 (LoadAudio) has no input 'nosuch'"]),
    (_seed_rows(2), ["voice=3.audio", "voice2=3.audio"], ["--map voice2=3.audio: jobs.csv has no column 'voice2'"]),
    (_seed_rows(1000, bad_row=1000), ["voice=3.audio"],
     ["1 of 1000 job(s) are invalid; nothing was run", "job j1000: invalid workflow: node 6", "seed"]),
    (_seed_rows(2).replace("6.seed", "6.mode").replace(",1\n", ",distiled\n").replace(",2\n", ",base (CFG)\n"),
     ["voice=3.audio"], ["job j0001: invalid workflow: node 6", "mode 'distiled' is not an allowed value"]),
], ids=["column", "map-input", "map-column", "seed-row-1000", "choice"])
def test_batch_checks_every_row_before_the_first_job(comfyui_install, comfyui_models, magic_test_bundle, files,
                                                     tmp_path, capsys, jobs_text, maps, words):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(magic_workflow("single_speaker", magic_test_bundle, "unused.wav")))
    jobs = files / "jobs.csv"
    jobs.write_text(jobs_text)
    out = tmp_path / "out"
    argv = [str(jobs), "--workflow", str(wf), "--out", str(out), "--cpu", "--comfyui", str(comfyui_install),
            "--models-dir", str(comfyui_models), "--map", "portrait=2.image"]
    for m in maps:
        argv += ["--map", m]
    code = batch.main(argv)
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and all(w in line for w in words), line
    assert not out.exists()  # no job ran, no table, no folder


@pytest.mark.comfyui
def test_run_set_refuses_an_input_the_node_does_not_have(comfyui_install, comfyui_models, magic_test_bundle, files,
                                                          tmp_path, capsys):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(magic_workflow("single_speaker", magic_test_bundle, "voice.wav")))
    out = tmp_path / "out"
    common = [str(wf), "--out", str(out), "--cpu", "--input-dir", str(files), "--comfyui", str(comfyui_install),
              "--models-dir", str(comfyui_models)]
    assert headless.main([*common, "--set", "6.sed=1"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "--set 6.sed: node 6 (MagicInfiniteSampler) has no input 'sed' (did you mean 'seed'?)" in line, line
    assert headless.main([*common, "--set", "9.seed=1"]) == 1
    assert "--set 9.seed: no node with id '9'" in _one_error_line(capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.comfyui
def test_batch_subprocess_refuses_an_unknown_column(comfyui_install, comfyui_models, magic_test_bundle, files,
                                                    tmp_path):
    """The real CLI in a fresh process: exit 2, one line, nothing written."""
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(magic_workflow("single_speaker", magic_test_bundle, "unused.wav")))
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"id,2.image,3.audio,6.nosuch\na,{files / 'face.png'},{files / 'voice.wav'},1\n")
    env = dict(os.environ, MAGICINFINITE_COMFYUI=str(comfyui_install))
    proc = subprocess.run([sys.executable, "-m", "runner.cli", "batch", str(jobs), "--workflow", str(wf), "--out",
                           str(tmp_path / "out"), "--cpu", "--models-dir", str(comfyui_models)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "column '6.nosuch': node 6 (MagicInfiniteSampler) has no input 'nosuch'" in _one_error_line(proc.stderr)
    assert not (tmp_path / "out").exists()
