"""Files several processes write at once (a cache's cache.json and manifests, written by every shard)
are never seen half-written: session 10 lost a preprocess shard to an empty cache.json."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

from training.data.jsonl import write_text_atomic

TEXT = json.dumps({"pad": "x" * 400_000})


def _half_reads(path: Path, write: Callable[[Path, str], object], writes: int) -> list[Exception]:
    """Write TEXT `writes` times while another thread reads and parses the file; the failed parses."""
    path.write_text(TEXT)
    stop, bad = threading.Event(), []

    def writer() -> None:
        for _ in range(writes):
            write(path, TEXT)
            if bad:
                break
        stop.set()

    def reader() -> None:
        while not stop.is_set():
            try:
                json.loads(path.read_text())
            except ValueError as e:
                bad.append(e)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert stop.is_set()
    return bad


def test_a_reader_never_sees_a_half_written_file_and_no_temp_file_is_left(tmp_path):
    path = tmp_path / "cache.json"
    assert not _half_reads(path, write_text_atomic, 150)
    assert [p.name for p in tmp_path.iterdir()] == ["cache.json"]


def test_the_same_test_catches_a_plain_write(tmp_path):
    """The check above can fail: a plain write_text, which truncates first, is caught half-written."""
    assert _half_reads(tmp_path / "cache.json", Path.write_text, 300)
