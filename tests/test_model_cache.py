"""magicinfinite_core.weights.model_cache: what counts as the same model, capacity, the load counter."""

from __future__ import annotations

import os

import pytest

from magicinfinite_core.weights.bundle import load_bundle, random_bundle, save_bundle
from magicinfinite_core.weights.model_cache import (
    ENV_CAPACITY,
    ModelCache,
    cache_key,
    file_stats,
    model_cache,
)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cache_bundle") / "b"
    save_bundle(random_bundle(0, height=32, width=32), d)
    return d


def test_second_get_reuses_the_loaded_bundle(bundle_dir):
    cache = ModelCache(capacity=1)
    first = cache.get("bundle", bundle_dir, lambda: load_bundle(bundle_dir), distilled=False)
    again = cache.get("bundle", bundle_dir, lambda: load_bundle(bundle_dir), distilled=False)
    assert again is first
    assert cache.stats() == {"loads": 1, "hits": 1, "cached": 1, "capacity": 1}


def test_changed_file_or_other_options_load_again(bundle_dir):
    cache = ModelCache(capacity=4)
    calls = []

    def loader():
        calls.append(1)
        return object()

    a = cache.get("bundle", bundle_dir, loader, distilled=False)
    assert cache.get("bundle", bundle_dir, loader, distilled=True) is not a  # other load options
    assert cache.get("dit", bundle_dir, loader, distilled=False) is not a  # other kind
    vae = bundle_dir / "vae.safetensors"
    st = vae.stat()
    os.utime(vae, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # the file was replaced
    assert cache.get("bundle", bundle_dir, loader, distilled=False) is not a
    assert len(calls) == 4 and cache.hits == 0
    assert cache_key("bundle", bundle_dir) != cache_key("bundle", bundle_dir, dtype="float16")


def test_a_shard_index_stands_for_its_shards(tmp_path):
    (tmp_path / "dit.safetensors.index.json").write_text("{}")
    (tmp_path / "dit-00001.safetensors").write_bytes(b"a")
    before = file_stats(tmp_path / "dit.safetensors.index.json")
    (tmp_path / "dit-00001.safetensors").write_bytes(b"bb")  # a shard replaced, the index unchanged
    assert file_stats(tmp_path / "dit.safetensors.index.json") != before


def test_capacity_evicts_oldest_and_zero_keeps_nothing(tmp_path):
    files = []
    for name in "abc":
        (tmp_path / name).write_bytes(name.encode())
        files.append(tmp_path / name)
    cache = ModelCache(capacity=2)
    for f in files:
        cache.get("dit", f, object)
    cache.get("dit", files[0], object)  # evicted by 'c': loaded again
    assert cache.stats()["loads"] == 4 and cache.stats()["cached"] == 2
    cache.get("dit", files[2], object)
    assert cache.hits == 1
    off = ModelCache(capacity=0)
    off.get("dit", files[0], object)
    off.get("dit", files[0], object)
    assert off.stats() == {"loads": 2, "hits": 0, "cached": 0, "capacity": 0}
    cache.set_capacity(0)
    assert cache.stats()["cached"] == 0


def test_bad_capacity_and_missing_path_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=">= 0"):
        ModelCache(capacity=-1)
    with pytest.raises(FileNotFoundError, match="no model file or folder"):
        ModelCache(1).get("dit", tmp_path / "missing.safetensors", object)
    import magicinfinite_core.weights.model_cache as mc

    monkeypatch.setattr(mc, "_SHARED", None)
    monkeypatch.setenv(ENV_CAPACITY, "two")
    with pytest.raises(ValueError, match="whole number"):
        model_cache()
    monkeypatch.setenv(ENV_CAPACITY, "3")
    assert model_cache().capacity == 3
