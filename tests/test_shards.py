"""Sharded cache manifests: ranks own disjoint parts that cover a split and read only their shards;
old single-manifest caches load the same way; a real 2-process accelerate run splits the clips."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from tests.test_training import make_cache, tiny_config
from training.shards import ShardError, rank_range, rank_rows, read_index, split_rows, write_manifests
from training.trainer import CacheData

ROOT = Path(__file__).resolve().parents[1]


def _rows(n_train: int, n_heldout: int) -> list[dict]:
    rows = [{"name": f"t{i:03d}", "file": f"t{i:03d}.safetensors", "split": "train"} for i in range(n_train)]
    return rows + [{"name": f"h{i:03d}", "file": f"h{i:03d}.safetensors", "split": "heldout"}
                   for i in range(n_heldout)]


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_rank_ranges_are_disjoint_cover_and_balanced(world):
    for n in range(0, 23):
        ranges = [rank_range(n, r, world) for r in range(world)]
        covered = [i for a, b in ranges for i in range(a, b)]
        assert covered == list(range(n))  # disjoint, in order, nothing missing
        sizes = [b - a for a, b in ranges]
        assert max(sizes) - min(sizes) <= 1


def test_ranks_read_only_their_shards_and_together_see_every_clip_once(tmp_path):
    write_manifests(tmp_path, _rows(7, 3), shard_rows=2)
    index = read_index(tmp_path)
    assert index.counts == {"train": 7, "heldout": 3}
    assert [s.file for s in index.shards if s.split == "train"] == [f"shards/train-0000{k}.jsonl" for k in range(4)]
    parts = [rank_rows(tmp_path, "train", r, 3) for r in range(3)]
    names = [r["name"] for p in parts for r in p.rows]
    assert names == [f"t{i:03d}" for i in range(7)]  # each train clip exactly once, none held out
    assert [len(p.rows) for p in parts] == [2, 2, 3]
    assert parts[0].shards_read == ["shards/train-00000.jsonl"]  # rows 0-1: one shard, not all four
    assert parts[2].shards_read == ["shards/train-00002.jsonl", "shards/train-00003.jsonl"]
    assert [r["name"] for r in split_rows(tmp_path, "heldout")] == ["h000", "h001", "h002"]
    assert [r["name"] for r in split_rows(tmp_path, "train", limit=3)] == ["t000", "t001", "t002"]


def test_an_old_single_manifest_cache_splits_the_same_way(tmp_path):
    new, old = tmp_path / "new", tmp_path / "old"
    new.mkdir()
    old.mkdir()
    rows = _rows(5, 2)
    write_manifests(new, rows, shard_rows=2)
    (old / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))  # no shards.json
    for world in (1, 2, 3):
        for r in range(world):
            assert rank_rows(old, "train", r, world).rows == rank_rows(new, "train", r, world).rows
    assert read_index(old).counts == read_index(new).counts


def test_a_corrupt_index_and_bad_ranks_are_clear_errors(tmp_path):
    write_manifests(tmp_path, _rows(4, 0), shard_rows=2)
    with pytest.raises(ShardError, match="need 0 <= rank < processes"):
        rank_rows(tmp_path, "train", 2, 2)
    (tmp_path / "shards" / "train-00001.jsonl").write_text("{}\n")  # the index says 2 rows
    with pytest.raises(ShardError, match="rerun python -m training.preprocess"):
        rank_rows(tmp_path, "train", 1, 2)
    with pytest.raises(ShardError, match="neither shards.json nor manifest.jsonl"):
        read_index(tmp_path / "nothing")


def test_streamed_batches_equal_in_memory_ones_and_ranks_split_the_cache(tmp_path):
    cache = make_cache(tmp_path / "c", n=5)
    rows = [json.loads(x) for x in (cache / "manifest.jsonl").read_text().splitlines()]
    write_manifests(cache, rows, shard_rows=2)
    mem, streamed = CacheData(cache), CacheData(cache, max_in_memory=2)
    assert mem.in_memory and not streamed.in_memory
    idx = torch.tensor([4, 0, 4, 2])
    a, b = mem.batch(idx), streamed.batch(idx)
    assert all(torch.equal(a[k], b[k]) for k in CacheData.KEYS)
    assert streamed.frame_size == mem.frame_size
    parts = [CacheData(cache, rank=r, world=2) for r in range(2)]
    assert [r["name"] for p in parts for r in p.rows] == [f"clip{i}" for i in range(5)]
    assert torch.equal(parts[1].batch(torch.tensor([0]))["latent"], mem.batch(torch.tensor([2]))["latent"])
    with pytest.raises(RuntimeError, match="fewer than the 6 processes"):
        CacheData(cache, rank=0, world=6)


def test_distillation_data_splits_across_ranks(tmp_path):
    from training.distill.batch import open_examples

    cache = make_cache(tmp_path / "c", n=5)
    rows = [json.loads(x) for x in (cache / "manifest.jsonl").read_text().splitlines()]
    write_manifests(cache, rows, shard_rows=2)
    parts = [open_examples(cache, rank=r, world=2) for r in range(2)]
    assert [f.name for p in parts for f in p.files] == [f"clip{i}.safetensors" for i in range(5)]
    assert len(parts[0]) == 2 and len(parts[1]) == 3


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_accelerate_processes_train_on_disjoint_shards(tmp_path):
    """A real `accelerate launch` with 2 CPU processes on a sharded cache: each rank reports its part
    (gathered into the start record), the parts are disjoint and cover the train split."""
    cfg = tiny_config(tmp_path)
    cache = Path(cfg.cache)
    rows = [json.loads(x) for x in (cache / "manifest.jsonl").read_text().splitlines()]
    write_manifests(cache, rows, shard_rows=1)
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({**asdict(cfg), "tensorboard": False}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    yaml = ROOT / "training" / "configs" / "accelerate_cpu2.yaml"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(yaml),
           "--main_process_port", str(_free_port()),
           "-m", "training.trainer", "--stage", "2", "--config", str(path), "--max-steps", "1", "--cpu"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    start = json.loads((Path(cfg.out) / "stage2" / "log.jsonl").read_text().splitlines()[0])
    parts = start["data_parts"]
    assert [(p["start"], p["stop"], p["of"]) for p in parts] == [(0, 2, 4), (2, 4, 4)]
    assert [(p["first"], p["last"]) for p in parts] == [("clip0", "clip1"), ("clip2", "clip3")]
    assert parts[0]["shards"] == ["shards/train-00000.jsonl", "shards/train-00001.jsonl"]
    assert parts[1]["shards"] == ["shards/train-00002.jsonl", "shards/train-00003.jsonl"]
