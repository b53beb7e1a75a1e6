"""Issue 29 (part A): hostile but realistic inputs on the real CLI (`python -m runner.cli generate`).

Every case asserts the one `error:` line, the exit code, and that no input changed and nothing was
left behind. The server-side messages of the same checks are in tests/test_nodes_safety.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from magicinfinite_core.media.video_io import probe_video, write_wav
from magicinfinite_core.weights.bundle import random_bundle, save_bundle

REPO = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def _tone(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.2 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 32x32 random bundle, a 40x40 noise portrait and a 0.3 s voice, in a folder of inputs."""
    d = tmp_path_factory.mktemp("hostile")
    save_bundle(random_bundle(0, height=32, width=32), d / "model")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(d / "p.png")
    write_wav(d / "a.wav", _tone(0.3), 16000)
    return d


def _cli(*args: str, stdin: bytes | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "runner.cli", *args], capture_output=True, env=ENV,
                       input=stdin, timeout=timeout)
    r.stdout, r.stderr = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    return r


def _args(tiny: Path, out: Path, *extra: str, model: Path | None = None, portrait: Path | None = None,
          audio: str | None = None) -> list[str]:
    return ["generate", "--model", str(model or tiny / "model"), "--portrait", str(portrait or tiny / "p.png"),
            "--audio", audio or str(tiny / "a.wav"), "--prompt", "hi", "--out", str(out), "--window", "9",
            "--overlap", "4", "--steps", "1", "-q", "--speaker-box", "4,4,28,28", *extra]


def _one_error(r: subprocess.CompletedProcess, expect: str) -> str:
    err = r.stderr.strip()
    assert r.returncode == 1, (r.returncode, err)
    assert err.startswith("error:") and err.count("\n") == 0, err
    assert "Traceback" not in err and expect in err, err
    return err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------- 1, 12, 19: CLI numbers, device, --out name

CLI_CASES = [
    (["--steps", "1000000000"], "--steps must be at most 200"),
    (["--window", "100001", "--overlap", "8"], "--window must be in 5..1025"),
    (["--overlap", "100000"], "--overlap must be in 0..1024"),
    (["--device", "tpu:3"], "--device 'tpu:3' is not a device"),
    (["--device", "cuda:abc"], "is not a device"),
    (["--head-motion", "2"], "--head-motion must be in 0..1"),
    (["--head-motion", "nan"], "--head-motion must be in 0..1"),
    (["--head-deadzone", "0.5"], "--head-deadzone must be in 0..0.1"),
    (["--head-deadzone", "nan"], "--head-deadzone must be in 0..0.1"),
]
if not torch.cuda.is_available():
    CLI_CASES.append((["--device", "cuda"], "--device 'cuda': no CUDA GPU is available"))


@pytest.mark.parametrize(("extra", "expect"), CLI_CASES)
def test_cli_counts_and_devices_are_bounded_before_any_work(tmp_path, tiny, extra, expect):
    t0 = time.monotonic()
    _one_error(_cli(*_args(tiny, tmp_path / "o.mp4", *extra)), expect)
    assert time.monotonic() - t0 < 120 and not any(tmp_path.iterdir())


def test_out_that_is_not_an_mp4_name_is_refused(tmp_path, tiny):
    _one_error(_cli(*_args(tiny, tmp_path / "video.txt")), "would be an H.264 + AAC MP4 video; name it video.mp4")
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------- 1, 10, 11, 14: bundle.json and checkpoint metadata


def _set(spec: dict, path: str, value) -> None:
    *head, last = path.split(".")
    for k in head:
        spec = spec[k]
    spec[last] = value


def _deep(n: int):
    v: object = 1
    for _ in range(n):
        v = [v]
    return v


PATCH_VAE = {"kind": "linear_patch", "patch": 1000000, "spatial_channels": 4, "temporal_channels": 0,
             "temporal_compression_ratio": 4, "scaling_factor": 1.0}
BUNDLE_CASES = {
    "deep-nesting": ("training", _deep(100000), "nested deeper than any bundle.json"),
    "nesting-40": ("training", _deep(40), "nested deeper than 32 levels"),
    "n_mels": ("audio.n_mels", 1e9, "'audio' 'n_mels' must be an integer in 8..512"),
    "vae-patch": ("vae.config", PATCH_VAE, "'vae' 'config': 'patch' must be in 1..64, got 1000000"),
    "resolution-huge": ("resolution", [100000, 100000], "'resolution' height must be in 16..4096"),
    "resolution-zero": ("resolution", [0, 0], "'resolution' height must be in 16..4096, got 0"),
    "vae-kind": ("vae.config.kind", "magic", "unknown autoencoder kind 'magic'"),
    "format": ("format", "magicinfinite-bundle/9", "'format' is 'magicinfinite-bundle/9'"),
    "overlap": ("sampler", {"window_frames": 33, "overlap_frames": -5}, "overlap must be in 0..1024, got -5"),
    "max_length": ("text_encoder", {"config": {"kind": "minilm", "max_length": 0}}, "'max_length' must be in 1..4096"),
    "steps": ("sampler", {"steps": 1e9}, "'sampler' 'steps' must be an integer in 1..200"),
    "nan-scale": ("vae.config.scaling_factor", float("nan"), "'scaling_factor' must be a finite number"),
    "missing-vae": (None, None, "'vae.weights' names vae.safetensors, which is not in"),
}
DIT_CASES = {
    "depth_double": ("depth_double", 10**7, "'depth_double' must be in 0..512, got 10000000"),
    "num_heads": ("num_heads", 0, "'num_heads' must be in 1..512, got 0"),
    "patch_size": ("patch_size", "x", "'patch_size' must be a list of 1..16 integers, got 'x'"),
}


@pytest.mark.parametrize("case", [*BUNDLE_CASES, *DIT_CASES])
def test_hostile_bundle_values_are_one_line_naming_the_file_and_field(tmp_path, tiny, case):
    model = tmp_path / "model"
    shutil.copytree(tiny / "model", model)
    if case in DIT_CASES:  # the DiT's own metadata: the config it is built from
        field, value, expect = DIT_CASES[case]
        tensors = load_file(model / "dit.safetensors")
        from safetensors import safe_open

        with safe_open(str(model / "dit.safetensors"), "pt") as f:
            meta = f.metadata()
        cfg = json.loads(meta["config"])
        cfg[field] = value
        save_file(tensors, str(model / "dit.safetensors"), metadata={**meta, "config": json.dumps(cfg)})
        where = "dit.safetensors metadata 'config'"
    else:
        field, value, expect = BUNDLE_CASES[case]
        spec = json.loads((model / "bundle.json").read_text())
        if field is None:
            (model / "vae.safetensors").unlink()
        elif case == "deep-nesting":  # more levels than Python's JSON reader can recurse into
            (model / "bundle.json").write_text(json.dumps(spec)[:-1] + ', "training": ' + "[" * 100000 + "]" * 100000
                                               + "}")
        else:
            _set(spec, field, value)
        if field is not None and case != "deep-nesting":
            (model / "bundle.json").write_text(json.dumps(spec))
        where = "bundle.json"
    before = _snapshot(model)
    out = tmp_path / "out"
    out.mkdir()
    t0 = time.monotonic()
    err = _one_error(_cli(*_args(tiny, out / "o.mp4", "--base", model=model), timeout=120), expect)
    assert where in err and time.monotonic() - t0 < 90, err
    assert not any(out.iterdir()) and _snapshot(model) == before


# ------------------------------------------------------------------------- 2: an output that is an input


def test_an_output_that_resolves_to_an_input_is_refused_and_the_input_kept(tmp_path, tiny):
    inputs = tmp_path / "in"
    shutil.copytree(tiny, inputs, ignore=shutil.ignore_patterns("model"))
    (inputs / "voice.mp4").write_bytes((inputs / "a.wav").read_bytes())  # an input that is named like a video
    (inputs / "link.mp4").symlink_to(inputs / "p.png")
    before = _snapshot(inputs)
    audio = str(inputs / "a.wav")
    for out, extra, audio_arg, expect in [
        (inputs / "a.wav", [], audio, "--out " + str(inputs / "a.wav") + " is the input"),
        (inputs / "link.mp4", [], audio, "is the input " + str(inputs / "p.png")),
        (inputs / "voice.mp4", [], str(inputs / "voice.mp4"), "is the input"),
        (tmp_path / "o.mp4", ["--sweep", "--latent-file", audio], audio, "--latent-file " + audio + " is the input"),
        (tmp_path / "o.mp4", ["--state-dir", str(inputs)], audio, "--state-dir"),
    ]:
        _one_error(_cli(*_args(tiny, out, *extra, portrait=inputs / "p.png", audio=audio_arg)), expect)
    assert _snapshot(inputs) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


# --------------------------------------------------------------------- 3: two runs on the same output


def test_second_run_on_the_same_output_says_who_holds_it_and_stale_locks_are_taken_over(tmp_path, tiny):
    write_wav(tmp_path / "long.wav", _tone(2.0), 16000)
    out = tmp_path / "o.mp4"
    lock = tmp_path / "o.mp4.lock"
    lock.write_text("999999\n")  # left by a killed run: nobody holds it
    first = subprocess.Popen([sys.executable, "-m", "runner.cli", *_args(tiny, out, "--base", "--steps", "8",
                                                                          audio=str(tmp_path / "long.wav"))],
                             env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None and lock.read_text().strip() != str(first.pid):
            time.sleep(0.05)
        assert first.poll() is None, first.communicate()
        second = _cli(*_args(tiny, out, audio=str(tmp_path / "long.wav")))
        assert first.poll() is None, "the first run ended before the second one asked; make it longer"
        _one_error(second, f"is being written by another run (pid {first.pid}")
        _, err = first.communicate(timeout=300)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == 0, err
    assert probe_video(out).frames == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.wav", "o.mp4"]  # no lock, no state, no partial


# -------------------------------------------------------------- 6, 7: EXIF rotation, 16-bit greyscale PNG


@pytest.fixture(scope="module")
def astronaut():
    import skimage.data

    return np.asarray(Image.fromarray(skimage.data.astronaut()).resize((256, 256), Image.LANCZOS))


def test_exif_rotated_jpeg_and_16_bit_grey_png_are_read_as_seen(tmp_path, tiny, astronaut):
    """Without the fixes both gave "no face found": the JPEG was read sideways, the 16-bit PNG white."""
    from magicinfinite_core.inputs.portrait import read_portrait

    sideways = Image.fromarray(np.ascontiguousarray(np.rot90(astronaut, 1)))  # stored rotated left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    sideways.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    grey = Image.fromarray(astronaut).convert("L")
    g16 = (np.asarray(grey).astype(np.uint16) * 257)
    Image.fromarray(g16).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as im:
        assert im.mode in ("I;16", "I")  # really a 16-bit file
    up = read_portrait(tmp_path / "rotated.jpg")
    assert up.shape == astronaut.shape and np.abs(up.astype(int) - astronaut).mean() < 8
    assert np.abs(read_portrait(tmp_path / "grey16.png")[..., 0].astype(int) - np.asarray(grey)).max() <= 1
    for name in ("rotated.jpg", "grey16.png"):
        out = tmp_path / f"{name}.mp4"
        args = [a for a in _args(tiny, out, portrait=tmp_path / name) if a not in ("--speaker-box", "4,4,28,28")]
        r = _cli(*args)  # faces detected on the portrait as a person sees it
        assert r.returncode == 0, r.stderr
        assert out.is_file() and "no face" not in r.stderr


# ------------------------------------------------------------------------- 8: 192 / 384 kHz voices


def test_a_192_khz_voice_is_resampled_for_aac(tmp_path, tiny):
    write_wav(tmp_path / "hi.wav", _tone(0.3, 192000), 192000)
    out = tmp_path / "o.mp4"
    r = _cli(*_args(tiny, out, audio=str(tmp_path / "hi.wav")))
    assert r.returncode == 0, r.stderr
    info = probe_video(out)
    assert info.audio_rate == 48000 and info.audio_codec == "aac" and abs(info.audio_seconds - 0.3) < 0.05
    r = _cli(*_args(tiny, tmp_path / "s.mp4", "--sweep", "--resume", audio=str(tmp_path / "hi.wav")))
    assert r.returncode == 0, r.stderr
    assert probe_video(tmp_path / "s.mp4").audio_rate == 48000
    r = _cli(*_args(tiny, tmp_path / "live.mp4", audio="-"), stdin=(tmp_path / "hi.wav").read_bytes())  # live
    assert r.returncode == 0, r.stderr
    info = probe_video(tmp_path / "live.mp4")
    assert info.audio_rate == 48000 and abs(info.audio_seconds - 0.3) < 0.05, info


# ------------------------------------------------------------------------------ 14: damaged audio


def _float_wav(samples: np.ndarray, rate: int = 16000) -> bytes:
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def test_damaged_audio_is_blamed_on_the_audio_and_leaves_no_state(tmp_path, tiny):
    loud = _tone(0.3)
    loud[100:200] = 1e30
    nan = _tone(0.3)
    nan[50] = np.nan
    (tmp_path / "loud.wav").write_bytes(_float_wav(loud))
    (tmp_path / "nan.wav").write_bytes(_float_wav(nan))
    out = tmp_path / "out"
    out.mkdir()
    _one_error(_cli(*_args(tiny, out / "a.mp4", audio=str(tmp_path / "loud.wav"))),
               "contains samples of 1e+30 (full scale is 1.0) (first at 0.006 s); the audio is damaged")
    _one_error(_cli(*_args(tiny, out / "b.mp4", audio=str(tmp_path / "nan.wav"))), "contains NaN or infinite samples")
    r = _cli(*_args(tiny, out / "c.mp4", audio="-"), stdin=_float_wav(nan))
    _one_error(r, "the live audio contains NaN or infinite samples")
    assert not any(out.iterdir())  # no video, no partial, no .state, no lock


# ---------------------------------------------------------- 15: sizes reported right, one-line warnings


def test_a_20000_by_20_portrait_is_reported_at_its_size(tmp_path, tiny):
    Image.fromarray(np.full((20, 20000, 3), 120, np.uint8)).save(tmp_path / "strip.png")
    _one_error(_cli(*_args(tiny, tmp_path / "o.mp4", portrait=tmp_path / "strip.png")), "is 20000x20 pixels")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["strip.png"]


def test_python_warnings_are_one_line_without_source(tmp_path, tiny):
    write_wav(tmp_path / "silent.wav", np.zeros(4800, np.float32), 16000)  # an AudioWarning
    r = _cli(*_args(tiny, tmp_path / "o.mp4", audio=str(tmp_path / "silent.wav")))
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "silent" in ln]
    assert lines and all(ln.startswith(("warning: ", "note: ")) for ln in lines), r.stderr
    assert "warnings.warn(" not in r.stderr and ".py:" not in r.stderr, r.stderr


def test_warnings_from_any_library_are_one_line():
    """The CLI's warning display (runner/console_warnings.py): a library's multi-line UserWarning is one
    ``warning:`` line, without the file:line prefix or the source line Python prints by default."""
    code = ("import sys, warnings; from runner import console_warnings; console_warnings.install(); "
            "warnings.warn('first\\n  second', UserWarning); warnings.showwarning('shown', RuntimeWarning, 'x.py', 3)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 0 and r.stderr == "warning: first second\nwarning: shown\n", r.stderr


def test_node_exception_names_carry_no_folder_path():
    """ComfyUI names a pack's module after its folder, so its exceptions came out as
    ``/tmp/.../custom_nodes/<pack>.nodes.common.NodeInputError``; the CLI line keeps the class name."""
    from runner.headless import exception_name, node_failure_line

    assert exception_name("/tmp/pytest-7/comfyui0/custom_nodes/ComfyUI-MagicInfinite.nodes.common.NodeInputError") \
        == "NodeInputError"
    assert exception_name("C:\\ComfyUI\\custom_nodes\\pack.nodes.common.Oops") == "Oops"
    assert exception_name("av.error.InvalidDataError") == "av.error.InvalidDataError"
    assert exception_name(None) == "error"
    line = node_failure_line({"node_id": "5", "node_type": "X", "exception_type": "/tmp/a b/p.nodes.E",
                              "exception_message": "bad\nthing"})
    assert line == "node 5 (X) failed: E: bad thing"


@pytest.mark.comfyui
def test_run_node_error_and_warnings_name_no_temporary_path(comfyui_install, tmp_path):
    """``magicinfinite run`` in a fresh process: a pack node's error is one line without the pack's or a
    temporary folder's path, and a pack warning (silent voice) is printed without a source line."""
    from tests.comfyui_server import magic_workflow

    models, inputs = tmp_path / "models", tmp_path / "in"
    save_bundle(random_bundle(0, height=32, width=32), models / "diffusion_models" / "tb")
    inputs.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(inputs / "p.png")
    write_wav(inputs / "silent.wav", np.zeros(4800, np.float32), 16000)
    env = dict(ENV, MAGICINFINITE_COMFYUI=str(comfyui_install))

    def run(wf: dict) -> subprocess.CompletedProcess:
        (tmp_path / "wf.json").write_text(json.dumps(wf))
        return subprocess.run([sys.executable, "-m", "runner.cli", "run", str(tmp_path / "wf.json"), "--out",
                               str(tmp_path / "out"), "--cpu", "--input-dir", str(inputs), "--models-dir", str(models)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=600)

    drawn = magic_workflow("single_speaker", "tb", "silent.wav", **{"2.image": "p.png", "5.source": "drawn masks"})
    r = run(drawn)
    err = r.stderr.strip()
    assert r.returncode == 1 and err.count("\n") == 0, err
    assert err.startswith("error: node 5 (MagicInfiniteSpeakerMasks) failed: ") and "connect mask_1" in err, err
    assert str(REPO) not in err and str(tmp_path) not in err and "/tmp" not in err, err

    silent = magic_workflow("single_speaker", "tb", "silent.wav", **{"2.image": "p.png", "5.source": "detect faces, else centre"})
    r = run(silent)
    assert r.returncode == 0, r.stderr
    assert "warning: ComfyUI AUDIO is silent" in r.stdout, r.stdout
    assert "warnings.warn(" not in r.stderr and ".py:" not in r.stderr and "Traceback" not in r.stderr, r.stderr


# ------------------------------------------------------------------------------------- 17: full disk


def _in_small_tmpfs(size: str, script: str) -> subprocess.CompletedProcess:
    """Run ``script`` (sh) with a private tmpfs of ``size`` mounted at $D (a user + mount namespace)."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not available")
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip(f"no user namespaces here: {probe.stderr.decode().strip()}")
    import tempfile

    d = tempfile.mkdtemp(prefix="mi-tmpfs-")
    try:
        return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                               f"mount -t tmpfs -o size={size} tmpfs {d} && D={d} && export D && {script}"],
                              capture_output=True, text=True, env=ENV, timeout=600)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_full_disk_names_the_file_removes_the_partial_and_keeps_the_resumable_state(tmp_path, tiny):
    write_wav(tmp_path / "long.wav", _tone(4.0), 16000)
    cli = " ".join([sys.executable, "-m", "runner.cli", *_args(tiny, Path("$D/o.mp4"), "--save-every", "0",
                                                                  audio=str(tmp_path / "long.wav"))])
    r = _in_small_tmpfs("24k", f"{cli}; echo rc=$?; ls -A $D; ls -A $D/o.mp4.state; "
                               f"mount -o remount,size=20m $D && {cli} --resume && echo resumed && ls -A $D")
    out = r.stdout.splitlines()
    assert "rc=1" in out, (r.stdout, r.stderr)
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "no space left writing" in err[0] and "--resume" in err[0], r.stderr
    listing = out[out.index("rc=1") + 1:out.index("resumed") if "resumed" in out else None]
    assert "o.partial.mp4" not in listing and not any(x.endswith(".tmp") for x in listing), out
    assert "stream.safetensors" in listing, out  # what was saved before the disk filled
    assert "resumed" in out and out[-1] == "o.mp4", (r.stdout, r.stderr)
