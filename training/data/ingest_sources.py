"""What to ingest: video files, folders of them, or a CSV / JSONL list, as one sorted list of sources.

List columns (CSV header or JSONL keys): ``path`` (required; relative paths are relative to the
list file), ``caption``, ``start`` / ``end`` (seconds of the video to use), ``boxes`` (speaker face
boxes ``[[x0, y0, x1, y1], ...]`` in source pixels: multi-speaker mode, where several faces are
expected and each box's face is a character; a JSON string in CSV) and ``speaker`` (which box
talks, default 0).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp")
LIST_SUFFIXES = (".csv", ".jsonl")


@dataclass(frozen=True)
class Source:
    """One video to ingest, with what the list said about it."""

    path: str  # absolute
    caption: str | None = None
    start: float | None = None
    end: float | None = None
    boxes: tuple[tuple[float, float, float, float], ...] | None = None
    speaker: int = 0
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        """Stable name of this source (file stem + hash of path and time range): clip folder prefix."""
        stem = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(self.path).stem)[:40].strip("-") or "video"
        h = hashlib.sha256(f"{self.path}|{self.start}|{self.end}|{self.boxes}".encode()).hexdigest()[:10]
        return f"{stem}-{h}"

    def to_dict(self) -> dict:
        return {"path": self.path, "caption": self.caption, "start": self.start, "end": self.end,
                "boxes": [list(b) for b in self.boxes] if self.boxes else None, "speaker": self.speaker}


def _float(v, what: str, where: str) -> float | None:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {what} {v!r} is not a number of seconds") from None


def _boxes(v, where: str) -> tuple | None:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except json.JSONDecodeError:
            raise ValueError(f"{where}: boxes {v!r} is not JSON; write [[x0, y0, x1, y1], ...]") from None
    try:
        out = tuple(tuple(float(c) for c in b) for b in v)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: boxes {v!r}; write [[x0, y0, x1, y1], ...] in pixels") from None
    if not out or any(len(b) != 4 or b[2] <= b[0] or b[3] <= b[1] for b in out):
        raise ValueError(f"{where}: boxes {v!r}; each box is [x0, y0, x1, y1] with x1 > x0 and y1 > y0")
    return out


def _row_source(row: dict, base: Path, where: str) -> Source:
    if not row.get("path"):
        raise ValueError(f"{where}: no 'path'; every row needs the video's path")
    p = Path(str(row["path"]))
    p = (p if p.is_absolute() else base / p).resolve()
    if not p.is_file():
        raise FileNotFoundError(f"{where}: {p} does not exist")
    start, end = _float(row.get("start"), "start", where), _float(row.get("end"), "end", where)
    if start is not None and end is not None and end <= start:
        raise ValueError(f"{where}: end {end} must be after start {start}")
    boxes = _boxes(row.get("boxes"), where)
    speaker = int(row.get("speaker") or 0)
    if boxes is not None and not 0 <= speaker < len(boxes):
        raise ValueError(f"{where}: speaker {speaker} but {len(boxes)} box(es); speakers count from 0")
    caption = row.get("caption")
    caption = str(caption).strip() if caption is not None and str(caption).strip() else None
    return Source(str(p), caption, start, end, boxes, speaker)


def read_list(path: Path) -> list[Source]:
    """Sources of a CSV (with a header row) or JSONL list."""
    base = path.resolve().parent
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = []
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i}: not JSON ({e.msg})") from None
    return [_row_source(r, base, f"{path}:{i + (2 if path.suffix.lower() == '.csv' else 1)}")
            for i, r in enumerate(rows)]


def collect_sources(srcs: list[str]) -> list[Source]:
    """Every source named by the arguments (files, folders searched recursively, lists), deduplicated
    and sorted by key so the run's order never depends on how they were given."""
    out: dict[str, Source] = {}
    for s in srcs:
        p = Path(s)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in VIDEO_SUFFIXES)
            items = [Source(str(q.resolve())) for q in found]
        elif p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            items = read_list(p)
        elif p.is_file():
            items = [Source(str(p.resolve()))]
        else:
            raise FileNotFoundError(f"{s} does not exist (give video files, folders or a .csv / .jsonl list)")
        for it in items:
            out.setdefault(it.key, it)
    if not out:
        raise ValueError(f"no videos found in {srcs} (looked for {', '.join(VIDEO_SUFFIXES)})")
    return [out[k] for k in sorted(out)]
