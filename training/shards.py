"""Sharded cache manifests: each trainer process reads only the manifest shards of its own clips.

Why: a cache of millions of clips has a manifest of millions of rows, and every rank reading all
of it (or listing the cache folder) does not scale. Next to the full ``manifest.jsonl`` (kept for
tools and older readers) the preprocessor writes the rows of each split in fixed-size shards
``shards/<split>-00000.jsonl`` and an index ``shards.json`` with each shard's row count. Rank r of
W owns the contiguous rows ``[r*N//W, (r+1)*N//W)`` of a split (in manifest order), so the ranks
are disjoint, together cover the split, differ by at most one clip, and each opens only the
shards that overlap its range. A cache without ``shards.json`` (made before shards existed) loads
through its ``manifest.jsonl``, split the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from training.data.jsonl import write_text_atomic

INDEX = "shards.json"
SHARD_DIR = "shards"
INDEX_FORMAT = "magicinfinite-cache-shards/1"
DEFAULT_SHARD_ROWS = 1000
MANIFEST = "manifest.jsonl"


class ShardError(RuntimeError):
    """A sharded manifest is inconsistent, or a split cannot be divided among the processes."""


def split_label(row: dict) -> str:
    """The split a manifest row belongs to ("unknown" when it records none, as split_counts says)."""
    return row.get("split") or "unknown"


def _jsonl(rows: Iterable[dict]) -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)


def write_manifests(cache: str | Path, rows: list[dict], shard_rows: int = DEFAULT_SHARD_ROWS) -> Path:
    """Write manifest.jsonl, the per-split shards and shards.json for `rows` (sorted by file name).

    Every file is written under a temporary name and renamed; the index goes last, so a reader
    never sees an index pointing at missing shards. Returns the manifest.jsonl path.
    """
    if shard_rows < 1:
        raise ShardError(f"shard_rows must be >= 1, got {shard_rows}")
    cache = Path(cache)
    rows = sorted(rows, key=lambda r: r["file"])
    (cache / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    by_split: dict[str, list[dict]] = {}
    for r in rows:
        by_split.setdefault(split_label(r), []).append(r)
    shards = []
    for split in sorted(by_split):
        part = by_split[split]
        for k, i in enumerate(range(0, len(part), shard_rows)):
            name = f"{SHARD_DIR}/{split}-{k:05d}.jsonl"
            chunk = part[i:i + shard_rows]
            write_text_atomic(cache / name, _jsonl(chunk))
            shards.append({"file": name, "split": split, "rows": len(chunk)})
    manifest = cache / MANIFEST
    write_text_atomic(manifest, _jsonl(rows))
    counts = {s: len(v) for s, v in sorted(by_split.items())}
    index = {"format": INDEX_FORMAT, "rows": len(rows), "shard_rows": shard_rows, "counts": counts,
             "shards": shards}
    write_text_atomic(cache / INDEX, json.dumps(index, indent=1, sort_keys=True) + "\n")
    keep = {s["file"] for s in shards}
    for old in (cache / SHARD_DIR).glob("*.jsonl"):  # shards of an earlier, larger manifest
        if f"{SHARD_DIR}/{old.name}" not in keep:
            old.unlink()
    return manifest


@dataclass(frozen=True)
class ShardInfo:
    """One manifest shard: its path relative to the cache, its split and its row count."""

    file: str
    split: str
    rows: int


@dataclass(frozen=True)
class ShardIndex:
    """What a cache holds per split without reading any rows (legacy caches: read from manifest.jsonl)."""

    counts: dict[str, int]
    shards: tuple[ShardInfo, ...]
    legacy_rows: tuple[dict, ...] | None = None  # a manifest.jsonl-only cache: its rows


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def read_index(cache: str | Path) -> ShardIndex:
    """The shard index of a cache, or one built from manifest.jsonl for caches made before shards."""
    from training.runconfig import split_counts

    cache = Path(cache)
    path = cache / INDEX
    if path.is_file():
        d = json.loads(path.read_text())
        if d.get("format") != INDEX_FORMAT:
            raise ShardError(f"{path}: format {d.get('format')!r}, expected {INDEX_FORMAT!r}; rerun "
                             "python -m training.preprocess with this --out to rewrite it")
        shards = tuple(ShardInfo(s["file"], s["split"], int(s["rows"])) for s in d["shards"])
        counts = {k: sum(s.rows for s in shards if s.split == k) for k in d["counts"]}
        return ShardIndex(split_counts_from(counts), shards)
    if not (cache / MANIFEST).is_file():
        raise ShardError(f"{cache} has neither {INDEX} nor {MANIFEST}; build the cache with "
                         f"python -m training.preprocess --out {cache}")
    rows = tuple(_read_jsonl(cache / MANIFEST))
    return ShardIndex(split_counts(r.get("split") for r in rows), (), rows)


def split_counts_from(counts: dict[str, int]) -> dict[str, int]:
    """Counts in split_counts' order: train, heldout, then the other labels."""
    first = {k: counts.get(k, 0) for k in ("train", "heldout")}
    return first | {k: v for k, v in counts.items() if k not in first}


def rank_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of rank's rows among n: contiguous, disjoint, covering, sizes within one."""
    if world < 1 or not 0 <= rank < world:
        raise ShardError(f"rank {rank} of {world} processes: need 0 <= rank < processes")
    return rank * n // world, (rank + 1) * n // world


@dataclass
class RankPart:
    """The rows of one split that one process owns, and where they sit in the split."""

    rows: list[dict]
    start: int  # global row index (in the split's manifest order) of rows[0]
    stop: int
    total: int  # rows of the split considered (after `limit`)
    counts: dict[str, int]  # rows per split in the whole cache
    shards_read: list[str] = field(default_factory=list)


def rank_rows(cache: str | Path, split: str, rank: int = 0, world: int = 1, limit: int | None = None) -> RankPart:
    """The rows of `split` owned by `rank` of `world` processes (first `limit` rows of the split only,
    when given), reading only the manifest shards that overlap them."""
    cache = Path(cache)
    index = read_index(cache)
    if index.legacy_rows is not None:
        rows = [r for r in index.legacy_rows if split_label(r) == split][:limit]
        start, stop = rank_range(len(rows), rank, world)
        return RankPart(rows[start:stop], start, stop, len(rows), index.counts, [MANIFEST])
    shards = [s for s in index.shards if s.split == split]
    total = sum(s.rows for s in shards)
    total = total if limit is None else min(total, limit)
    start, stop = rank_range(total, rank, world)
    rows, read, offset = [], [], 0
    for s in shards:
        lo, hi = offset, offset + s.rows
        offset = hi
        if hi <= start or lo >= stop:
            continue
        got = _read_jsonl(cache / s.file)
        if len(got) != s.rows:
            raise ShardError(f"{cache / s.file} has {len(got)} rows, the index says {s.rows}; rerun "
                             f"python -m training.preprocess with --out {cache} to rewrite the manifests")
        rows.extend(got[max(start - lo, 0):min(stop, hi) - lo])
        read.append(s.file)
    return RankPart(rows, start, stop, total, index.counts, read)


def split_rows(cache: str | Path, split: str, limit: int | None = None) -> list[dict]:
    """All rows of one split (first `limit`), reading only that split's shards."""
    return rank_rows(cache, split, 0, 1, limit).rows


def has_manifest(cache: str | Path) -> bool:
    """A cache the trainers can read: a shard index or (older caches) a manifest.jsonl."""
    cache = Path(cache)
    return (cache / INDEX).is_file() or (cache / MANIFEST).is_file()
