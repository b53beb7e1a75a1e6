"""runner.batch: jobs files, overrides, the results table, skip / resume, in-process and --server."""

from __future__ import annotations

import argparse
import csv
import json
import shutil

import pytest

from ..runner import batch, headless, job_runner
from .comfyui_server import WORKFLOWS_DIR, magic_workflow, write_wav

SINGLE = WORKFLOWS_DIR / "single_speaker_api.json"

# ---------------------------------------------------------------- pure helpers (no ComfyUI needed)


def test_read_jobs_csv_and_jsonl(tmp_path):
    (tmp_path / "jobs.csv").write_text("id,6.prompt,6.seed,3.audio\na,hello there,5,v.wav\n,\"x, y\",7,w.wav\n")
    rows = batch.read_jobs(tmp_path / "jobs.csv")
    assert rows[0] == {"id": "a", "6.prompt": "hello there", "6.seed": 5, "3.audio": "v.wav"}
    assert rows[1]["id"] == "job0002" and rows[1]["6.prompt"] == "x, y"
    (tmp_path / "jobs.jsonl").write_text('{"id": "b", "6.seed": 3}\n\n{"6.seed": 4}\n')
    assert [r["id"] for r in batch.read_jobs(tmp_path / "jobs.jsonl")] == ["b", "job0002"]
    (tmp_path / "bad.csv").write_text("id,6.seed\n../x,1\n")
    with pytest.raises(batch.BatchError, match="plain name"):
        batch.read_jobs(tmp_path / "bad.csv")
    (tmp_path / "dup.csv").write_text("id\na\na\n")
    with pytest.raises(batch.BatchError, match="unique"):
        batch.read_jobs(tmp_path / "dup.csv")


def test_job_overrides_map_columns_files_and_resume_dir(tmp_path):
    wf = headless.load_workflow(SINGLE)
    (tmp_path / "me.png").write_bytes(b"png")
    row = {"id": "j1", "portrait": "me.png", "3.audio": "not_here.wav", "6.prompt": "hi"}
    overrides, files = batch.job_overrides(row, wf, {"portrait": "2.image"}, tmp_path)
    assert overrides == {"2.image": "me.png", "3.audio": "not_here.wav", "6.prompt": "hi",
                         "6.resume_dir": "batch_j1"}
    assert files == {"2.image": (tmp_path / "me.png").resolve()}
    with pytest.raises(batch.BatchError, match="neither NODE.INPUT nor mapped"):
        batch.job_overrides({"id": "j", "portrait": "x"}, wf, {}, tmp_path)
    with pytest.raises(batch.BatchError, match="no node '99'"):
        batch.job_overrides({"id": "j", "99.x": 1}, wf, {}, tmp_path)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_results_table_round_trip(tmp_path, suffix):
    path = tmp_path / f"results{suffix}"
    out = tmp_path / "a.mp4"
    out.write_bytes(b"x")
    rows = [{"id": "a", "status": "ok", "output": str(out), "seconds": 1.5, "error": ""},
            {"id": "b", "status": "error", "output": "", "seconds": 0.1, "error": "boom"}]
    batch.write_results(path, rows)
    back = batch.read_results(path)
    assert back["b"]["error"] == "boom" and batch.is_finished(back["a"]) and not batch.is_finished(back["b"])
    out.unlink()
    assert not batch.is_finished(back["a"])  # output gone: run it again


def test_stage_input_file_copies_into_the_input_folder_by_content(tmp_path):
    src_a, src_b = tmp_path / "a" / "face.png", tmp_path / "b" / "face.png"
    src_a.parent.mkdir()
    src_b.parent.mkdir()
    src_a.write_bytes(b"first face")
    src_b.write_bytes(b"second face")
    inputs = tmp_path / "input"
    name_a = job_runner.stage_input_file(src_a, inputs)
    name_b = job_runner.stage_input_file(src_b, inputs)
    # relative to the input folder (ComfyUI refuses absolute paths), same base name, different content
    assert name_a.startswith("magicinfinite_batch/") and name_a.endswith("_face.png") and name_a != name_b
    assert (inputs / name_a).read_bytes() == b"first face" and (inputs / name_b).read_bytes() == b"second face"
    assert job_runner.stage_input_file(src_a, inputs) == name_a  # same content: same name, no second copy
    assert sorted(p.name for p in (inputs / "magicinfinite_batch").iterdir()) == sorted(
        [name_a.split("/")[1], name_b.split("/")[1]])  # no temporary files left


# ---------------------------------------------------------------- with ComfyUI


@pytest.fixture(scope="module")
def job_inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("batch_inputs")
    write_wav(d / "voice.wav", seconds=1.2)
    shutil.copy(WORKFLOWS_DIR / "assets" / "portrait_one_speaker.jpg", d / "face.png")
    return d


def _workflow_file(tmp_path, bundle: str) -> str:
    p = tmp_path / "wf.json"
    p.write_text(json.dumps(magic_workflow("single_speaker", bundle, "unused.wav")))
    return str(p)


def _args(tmp_path, jobs, wf, **kw) -> list[str]:
    argv = [str(jobs), "--workflow", wf, "--out", str(tmp_path / "out")]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return argv


def _results(tmp_path) -> dict[str, dict]:
    with (tmp_path / "out" / "results.csv").open() as f:
        return {r["id"]: r for r in csv.DictReader(f)}


@pytest.mark.comfyui
def test_in_process_batch_skips_finished_and_resumes_interrupted(
    comfyui_install, comfyui_models, magic_test_bundle, job_inputs, tmp_path, capsys
):
    wf = _workflow_file(tmp_path, magic_test_bundle)
    jobs = job_inputs / "jobs.csv"
    # a job with a missing file is refused before any job runs (issue 29), nothing written
    jobs.write_text("id,portrait,3.audio,6.seed,7.device\nok1,face.png,voice.wav,1,auto\nbad,face.png,missing.wav,2,auto\n")
    inputs = tmp_path / "comfy_input"
    common = dict(map="portrait=2.image", models_dir=comfyui_models, comfyui=comfyui_install, input_dir=inputs)
    assert batch.main([*_args(tmp_path, jobs, wf, **common), "--cpu"]) == 2
    assert "job bad: invalid workflow: node 3 (LoadAudio)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # ok; a job whose save step fails after sampling (decode device 'cuda' on a CPU box)
    jobs.write_text(
        "id,portrait,3.audio,6.seed,7.device\n"
        "ok1,face.png,voice.wav,1,auto\n"
        "cut,face.png,voice.wav,3,cuda\n"
    )
    assert batch.main([*_args(tmp_path, jobs, wf, **common), "--cpu"]) == 1
    # the portrait and voice were copied into the input folder, not handed over by absolute path
    staged = {p.name for p in (inputs / "magicinfinite_batch").iterdir()}
    assert staged == {job_runner.staged_name(job_inputs / "face.png"), job_runner.staged_name(job_inputs / "voice.wav")}
    res = _results(tmp_path)
    assert res["ok1"]["status"] == "ok" and res["ok1"]["output"].endswith(".mp4")
    assert float(res["ok1"]["seconds"]) > 0
    assert res["cut"]["status"] == "error" and "node 7" in res["cut"]["error"]
    state = tmp_path / "out" / "cut" / "magicinfinite_state" / "batch_cut"
    from magicinfinite_core.sampling.state import has_state, load_state

    assert has_state(state) and load_state(state).step == load_state(state).total_steps  # sampling had finished

    # Second run: ok1 skipped, 'cut' continues from its saved sampler state and finishes.
    jobs.write_text(jobs.read_text().replace("voice.wav,3,cuda", "voice.wav,3,auto"))
    assert batch.main([*_args(tmp_path, jobs, wf, **common), "--cpu"]) == 0
    res2 = _results(tmp_path)
    assert res2["ok1"]["status"] == "skipped" and res2["ok1"]["output"] == res["ok1"]["output"]
    assert res2["cut"]["status"] == "ok" and not has_state(state)
    sampler_text = [d["output"]["text"][0] for ev, d in headless._Comfy.server.messages
                    if ev == "executed" and d.get("node") == "6"]
    assert sampler_text and "(resumed)" in sampler_text[-1]
    assert "ok1: skipped" in capsys.readouterr().err


@pytest.mark.comfyui
def test_server_mode_uploads_inputs_and_downloads_output(comfyui_server, magic_test_bundle, job_inputs, tmp_path):
    wf = _workflow_file(tmp_path, magic_test_bundle)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"id": "s1", "2.image": str(job_inputs / "face.png"),
                                "3.audio": str(job_inputs / "voice.wav"), "6.prompt": "hello"}) + "\n")
    argv = _args(tmp_path, jobs, wf, server=comfyui_server.base_url, results=tmp_path / "out" / "r.jsonl")
    assert batch.main(argv) == 0
    row = batch.read_results(tmp_path / "out" / "r.jsonl")["s1"]
    assert row["status"] == "ok"
    import av

    with av.open(row["output"]) as c:
        assert sum(1 for _ in c.decode(video=0)) == 30 and c.streams.audio
    assert (comfyui_server.server.input_dir / "magicinfinite_batch" / job_runner.staged_name(job_inputs / "face.png")).is_file()
    assert batch.main(argv) == 0  # everything finished: skipped
    assert batch.read_results(tmp_path / "out" / "r.jsonl")["s1"]["status"] == "skipped"


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert batch.main([str(tmp_path / "nope.csv"), "--workflow", str(SINGLE)]) == 2
    assert "jobs file not found" in capsys.readouterr().err
    assert isinstance(batch.build_parser().parse_args(["j.csv", "--workflow", "w"]), argparse.Namespace)
