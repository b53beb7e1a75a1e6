"""Manifests as JSON lines: sorted keys, one row a line, written atomically (a reader never sees half)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    os.replace(tmp, path)
    return path


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
