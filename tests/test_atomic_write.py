"""Files several processes write at once (a cache's cache.json and manifests, written by every shard)
are never seen half-written: session 10 lost a preprocess shard to an empty cache.json."""

from __future__ import annotations

import json
import threading

from training.data.jsonl import write_text_atomic


def test_a_reader_never_sees_a_half_written_file_and_no_temp_file_is_left(tmp_path):
    path = tmp_path / "cache.json"
    texts = [json.dumps({"i": i, "pad": "x" * 400_000}) for i in range(2)]
    write_text_atomic(path, texts[0])
    stop, bad = threading.Event(), []

    def writer() -> None:
        for k in range(150):
            write_text_atomic(path, texts[k % 2])
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
    assert stop.is_set() and not bad
    assert [p.name for p in tmp_path.iterdir()] == ["cache.json"]


def test_the_same_test_catches_a_plain_write(tmp_path):
    """The check above can fail: a plain write_text, which truncates first, is caught half-written."""
    path = tmp_path / "cache.json"
    text = json.dumps({"pad": "x" * 400_000})
    path.write_text(text)
    stop, bad = threading.Event(), []

    def writer() -> None:
        for _ in range(300):
            path.write_text(text)
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
    assert bad
