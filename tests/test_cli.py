import json
import subprocess
import sys

import numpy as np
from PIL import Image

from magicinfinite_core.config import VAEConfig
from magicinfinite_core.media.video_io import probe_video, write_wav
from magicinfinite_core.weights.bundle import random_bundle, save_bundle
from runner.cli import main


def _demo_width(portrait_width: int) -> int:
    """The embedded demo's video width: the portrait's own for a motion-latent model (it moves the
    picture), else its bundle.json resolution."""
    from magicinfinite_core.weights.bundle import DEMO_MODEL_DIR

    spec = json.loads((DEMO_MODEL_DIR / "bundle.json").read_text())
    return portrait_width if spec["vae"]["config"].get("kind") == "motion" else int(spec["resolution"][1])

def _inputs(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    t = np.arange(8000) / 16000
    write_wav(tmp_path / "a.wav", (0.2 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000)
    return str(tmp_path / "p.png"), str(tmp_path / "a.wav")


def test_help_is_readable():
    out = subprocess.run([sys.executable, "-m", "runner.cli", "generate", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for flag in ("--portrait", "--audio", "--prompt", "--out", "--speaker-mask", "--model", "--resume", "examples:"):
        assert flag in out


def test_missing_demo_model_says_so_in_one_line(tmp_path, capsys, monkeypatch):
    import magicinfinite_core.weights.bundle as bundle

    monkeypatch.setattr(bundle, "DEMO_MODEL_DIR", tmp_path / "not-installed")
    p, a = _inputs(tmp_path)
    code = main(["generate", "--portrait", p, "--audio", a, "--prompt", "hi", "--out", str(tmp_path / "o.mp4")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0 and "--model PATH" in err


def test_default_model_is_the_embedded_demo(tmp_path, capsys):
    import av

    p, a = _inputs(tmp_path)
    out = tmp_path / "demo.mp4"
    code = main(["generate", "--portrait", p, "--audio", a, "--prompt", "a person talking", "--out", str(out),
                 "--steps", "2", "--no-cfg", "--speaker-box", "4,4,28,28", "-q"])
    assert code == 0, capsys.readouterr().err
    with av.open(str(out)) as c:
        assert c.streams.video[0].width == _demo_width(40) and c.streams.audio


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    p, a = _inputs(tmp_path)
    model = save_bundle(random_bundle(0, height=32, width=32), tmp_path / "model")
    base = ["generate", "--model", str(model), "--out", str(tmp_path / "o.mp4"), "--speaker-box", "4,4,28,28", "-q"]
    for bad in (["--portrait", str(tmp_path / "nope.png"), "--audio", a],
                ["--portrait", p, "--audio", str(tmp_path / "nope.wav")],
                ["--portrait", p, "--audio", a, "--window", "9", "--overlap", "8"]):
        assert main(base + bad) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and err.count("\n") == 0, err


def test_max_size_shrinks_a_motion_model_video_and_is_range_checked(tmp_path, capsys):
    """--max-size caps the longer side of the embedded (motion-latent) demo's video, which otherwise has the
    picture's own size; it never enlarges a smaller picture, and a value outside 64..4096 is a one-line error."""
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (96, 80, 3), dtype=np.uint8)).save(tmp_path / "tall.png")
    _, a = _inputs(tmp_path)
    common = ["generate", "--portrait", str(tmp_path / "tall.png"), "--audio", a, "--prompt", "a person talking",
              "--speaker-box", "8,8,72,72", "-q"]
    for max_size, size in ((64, (52, 64)), (4096, (80, 96))):  # (width, height) of the video
        out = tmp_path / f"m{max_size}.mp4"
        assert main(common + ["--max-size", str(max_size), "--out", str(out)]) == 0, capsys.readouterr().err
        capsys.readouterr()
        info = probe_video(out)
        assert (info.width, info.height) == size
    assert main(common + ["--max-size", "32", "--out", str(tmp_path / "bad.mp4")]) == 1
    err = capsys.readouterr().err.strip()
    assert "--max-size must be in 64..4096, got 32" in err and err.count("\n") == 0, err
    assert not (tmp_path / "bad.mp4").exists()


def test_generate_command_writes_video_and_json_report(tmp_path, capsys):
    p, a = _inputs(tmp_path)
    vae = VAEConfig(block_out_channels=(8, 8, 8, 8), norm_num_groups=4, mid_block_add_attention=False)
    model = save_bundle(random_bundle(1, height=32, width=32, vae_cfg=vae), tmp_path / "model")
    out = tmp_path / "o.mp4"
    code = main(["generate", "--portrait", p, "--audio", a, "--prompt", "hello", "--out", str(out),
                 "--model", str(model), "--steps", "2", "--window", "9", "--overlap", "4",
                 "--speaker-box", "4,4,28,28", "--json", "-q"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames"] == 13 == probe_video(out).frames  # round(0.5 s * 25) = 12.5 -> 13 (halves up)
    assert not (tmp_path / "o.mp4.state").exists()  # progress is dropped after success


def test_the_generator_is_the_default_when_the_model_has_one(tmp_path, capsys):
    """The embedded demo ships a 4-step generator: it is what `generate` uses unless --base (or a
    base-only option, with a note saying so) asks for the base transformer."""
    p, a = _inputs(tmp_path)
    common = ["generate", "--portrait", p, "--audio", a, "--prompt", "a person talking", "--speaker-box", "4,4,28,28",
              "-q", "--json"]

    def mode(extra: list[str], name: str) -> tuple[str, str]:
        assert main(common + extra + ["--out", str(tmp_path / name)]) == 0
        cap = capsys.readouterr()
        return json.loads(cap.out)["mode"], cap.err

    assert mode([], "d.mp4")[0] == "distilled"
    m, err = mode(["--base", "--steps", "2", "--no-cfg"], "b.mp4")
    assert m == "base" and "note:" not in err
    m, err = mode(["--steps", "2"], "s.mp4")
    assert m == "base" and "note: --steps given" in err
    assert subprocess.run([sys.executable, "-m", "runner.cli", "generate", "--portrait", p, "--audio", a,
                           "--prompt", "x", "--out", str(tmp_path / "x.mp4"), "--base", "--distilled"],
                          capture_output=True, text=True).returncode == 2
