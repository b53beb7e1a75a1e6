"""Preprocessing on Ray Data (local mode): 1 and 2 encoder workers give byte-identical caches and
manifests; resume re-encodes only missing clips; without Ray the CLI says how to install it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray for the module (a start costs ~10 s here): 2 encoder actors + decoding."""
    from magicinfinite_core.distributed.ray_runtime import init_ray

    ray = init_ray(num_cpus=3)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from training.data.speech import espeak_available

    if not espeak_available():
        pytest.skip("espeak-ng is needed to build world clips")
    from magicinfinite_core.config import VAEConfig
    from magicinfinite_core.media.autoencoders import save_autoencoder as save_vae
    from magicinfinite_core.media.vae import VideoVAE
    from training.data.clip import make_clip, save_clip
    from training.data.render import WorldConfig

    root = tmp_path_factory.mktemp("world")
    torch.manual_seed(0)
    vae = save_vae(root / "vae.safetensors", VideoVAE(VAEConfig(spatial_compression_ratio=4)))
    for i, split in enumerate(("train", "train", "heldout", "train")):
        save_clip(make_clip(i, split, 9, WorldConfig(32, 32, 0.3, 0.4, 1, 0.0)), root / "data" / f"c{i}")
    return root / "data", vae


@pytest.fixture(scope="module")
def caches(ray_local, world, tmp_path_factory):
    """The same clips cached with 1 and with 2 encoder workers."""
    from training.preprocess import preprocess

    data, vae = world
    root = tmp_path_factory.mktemp("caches")
    one = preprocess([data], vae, root / "one", workers=1, threads=1, log_every=0, shard_rows=2)
    two = preprocess([data], vae, root / "two", workers=2, threads=1, log_every=0, shard_rows=2)
    return one.parent, two.parent


@pytest.mark.slow
def test_two_workers_give_the_same_cache_and_manifest_as_one(caches):
    from training.preprocess import read_cache_manifest
    from training.shards import read_index

    one, two = caches
    a, b = _hashes(one), _hashes(two)
    assert a == b  # every file, byte for byte (the safetensors headers are canonical)
    assert {"manifest.jsonl", "shards.json", "cache.json", "null_text.safetensors", "c0.safetensors",
            "shards/train-00000.jsonl", "shards/train-00001.jsonl", "shards/heldout-00000.jsonl"} <= set(a)
    assert [r["name"] for r in read_cache_manifest(one)] == ["c0", "c1", "c2", "c3"]
    index = read_index(one)
    assert index.counts == {"train": 3, "heldout": 1}
    assert [s.rows for s in index.shards] == [1, 2, 1]  # heldout-00000, train-00000, train-00001


@pytest.mark.slow
def test_resume_encodes_only_missing_clips_and_keeps_the_bytes(caches, world, tmp_path):
    import shutil

    from training.preprocess import preprocess

    data, vae = world
    out = tmp_path / "cache"
    shutil.copytree(caches[0], out)
    kept = (out / "c0.safetensors").stat().st_mtime_ns
    (out / "c2.safetensors").unlink()  # an interrupted run: one clip and the manifests missing
    for name in ("manifest.jsonl", "shards.json"):
        (out / name).unlink()
    preprocess([data], vae, out, workers=2, threads=1, log_every=0, shard_rows=2)
    assert _hashes(out) == _hashes(caches[0])
    assert (out / "c0.safetensors").stat().st_mtime_ns == kept  # not encoded again


@pytest.mark.slow
def test_a_split_run_keeps_the_other_rows_of_the_manifest(caches, world, tmp_path):
    """Caching one split into a cache keeps the earlier rows whose files exist (and drops the rest)."""
    import shutil

    from training.preprocess import preprocess, read_cache_manifest
    from training.shards import split_rows

    data, vae = world
    out = tmp_path / "cache"
    shutil.copytree(caches[0], out)
    (out / "c3.safetensors").unlink()  # listed by the manifest, file gone
    preprocess([data], vae, out, split="train", limit=2, workers=1, threads=1, log_every=0)  # c0, c1: cached
    assert [r["name"] for r in read_cache_manifest(out)] == ["c0", "c1", "c2"]
    assert [r["name"] for r in split_rows(out, "heldout")] == ["c2"]


def test_without_ray_the_cli_says_how_to_install_it(tmp_path):
    """A real interpreter where `import ray` fails (sys.modules['ray'] = None): one error line, exit 2,
    the install command, and nothing written."""
    (tmp_path / "data").mkdir()
    (tmp_path / "vae.safetensors").write_bytes(b"x")
    code = ("import sys; sys.modules['ray'] = None; from training.preprocess import main; "
            f"sys.exit(main(['--data', {str(tmp_path / 'data')!r}, '--vae', {str(tmp_path / 'vae.safetensors')!r}, "
            f"'--out', {str(tmp_path / 'out')!r}]))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and "needs Ray" in err[0] and 'pip install "comfyui-magicinfinite[ray]"' in err[0], err
    assert not (tmp_path / "out").exists()


def test_bad_worker_count_is_one_clear_error(tmp_path, capsys):
    from training.preprocess import main

    (tmp_path / "data").mkdir()
    (tmp_path / "vae.safetensors").write_bytes(b"x")
    rc = main(["--data", str(tmp_path / "data"), "--vae", str(tmp_path / "vae.safetensors"),
               "--out", str(tmp_path / "out"), "--workers", "0"])
    assert rc == 2 and "--workers 0: need at least 1" in capsys.readouterr().err


@pytest.mark.slow
def test_shard_processes_fill_one_cache_and_the_last_manifest_lists_all(caches, world, tmp_path):
    from training.preprocess import preprocess, read_cache_manifest

    data, vae = world
    out = tmp_path / "cache"
    for i in range(2):  # as two processes would, one after the other
        preprocess([data], vae, out, shard=(i, 2), workers=1, threads=1, log_every=0, shard_rows=2)
    assert [r["name"] for r in read_cache_manifest(out)] == ["c0", "c1", "c2", "c3"]
    assert _hashes(out) == _hashes(caches[0])
