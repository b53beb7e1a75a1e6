"""What every training command line shares: nested `--set` overrides checked against the config
dataclasses, one-line input errors before anything is written, log files that stay free of repeated
steps after a resume, the progress bar, and the guard that keeps exports out of the package.

Why one module: the VAE trainer, the stage trainer and the distillation trainer should fail, resume
and report the same way, so a newcomer learns one set of rules.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

PACKAGE_ASSETS = Path(__file__).resolve().parents[1] / "magicinfinite_core" / "assets"


class ConfigError(ValueError):
    """A bad config key, value or input path; command lines print it as one `error:` line."""


# --------------------------------------------------------------------------------------- overrides
def parse_value(text: str) -> Any:
    """JSON when it parses (5, 1e-4, true, [5, 9], {"a": 1}, "07"), else the text itself (paths)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_sets(items: Iterable[str]) -> list[tuple[str, Any]]:
    """`KEY.SUB=VALUE` strings -> [(dotted key, value)]; a missing `=` is a ConfigError."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE (nested keys with dots: stage2.lr=1e-4)")
        out.append((key.strip(), parse_value(value)))
    return out


def apply_sets(d: dict, sets: Iterable[tuple[str, Any]]) -> dict:
    """A copy of the nested dict `d` with each dotted key set (intermediate dicts created)."""
    d = json.loads(json.dumps(d))
    for key, value in sets:
        node = d
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p, {}), dict):
                raise ConfigError(f"--set {key}: {p!r} is not a group of settings")
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return d


def _check_type(where: str, value: Any, hint: Any) -> Any:
    """`value` converted to the annotated type (int -> float, list -> tuple) or a ConfigError."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or str(origin) == "types.UnionType":
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(where, value, a)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin in (tuple, list) or hint in (tuple, list):
        if isinstance(value, (list, tuple)):
            inner = args[0] if args else None
            if inner is not None and inner is not Ellipsis:
                value = [_check_type(f"{where}[{i}]", v, inner) for i, v in enumerate(value)]
            return tuple(value) if (origin or hint) is tuple else list(value)
    elif origin is dict or hint is dict:
        if isinstance(value, dict):
            return value
    else:
        return value
    name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{where}: expected {name}, got {value!r}")


def build_dataclass(cls: type, d: dict, where: str = "") -> Any:
    """`cls(**d)` with unknown keys and wrongly typed values refused by name (nested dataclasses too)."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a group of settings, got {d!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in d.items():
        if k.startswith("_"):  # "_comment"
            continue
        key = f"{where}.{k}" if where else k
        if k not in names:
            raise ConfigError(f"unknown setting {key!r} (known{' in ' + where if where else ''}: {', '.join(names)})")
        hint = hints[k]
        if dataclasses.is_dataclass(hint):
            kwargs[k] = build_dataclass(hint, v, key)
        else:
            kwargs[k] = _check_type(key, v, hint)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def check_keys(cls: type, d: dict, where: str) -> None:
    """Keys and value types of a free-form dict (e.g. the DiT's) checked against a dataclass's
    fields, without building it (its own cross-field checks run when the model is made)."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a group of settings, got {d!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for k, v in d.items():
        if k not in names:
            raise ConfigError(f"unknown setting '{where}.{k}' (known in {where}: {', '.join(names)})")
        _check_type(f"{where}.{k}", v, hints[k])


# ----------------------------------------------------------------------------------- input checks
def missing_inputs(checks: Sequence[tuple[bool, str]]) -> list[str]:
    """Messages of the checks that failed: each entry is (ok, what to say when not ok)."""
    return [msg for ok, msg in checks if not ok]


def fail(problems: Sequence[str], prog: str) -> int:
    """Print the problems as one `error:` line on stderr and return the exit code 2."""
    print(f"{prog}: error: " + "; ".join(problems), file=sys.stderr)
    return 2


def inside_package(path: str | Path) -> bool:
    """True when `path` is in magicinfinite_core/assets (the shipped demo model lives there)."""
    p = Path(path).resolve()
    return p == PACKAGE_ASSETS or PACKAGE_ASSETS in p.parents


# ------------------------------------------------------------------------------------- log files
def trim_log(path: str | Path, step: int) -> int:
    """Drop the records logged after `step` (a resumed run logs them again); returns how many.

    Records without a "step" (start events) are kept. Written atomically (tmp + rename).
    """
    path = Path(path)
    if not path.is_file():
        return 0
    keep, dropped = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            dropped += 1
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] > step:
            dropped += 1
            continue
        keep.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(x + "\n" for x in keep))
    tmp.replace(path)
    return dropped


def split_counts(splits: Iterable[str | None]) -> dict[str, int]:
    """{"train": n, "heldout": m, ...} of the given split labels (missing labels count as "unknown")."""
    c = Counter(s if s else "unknown" for s in splits)
    return {k: c.get(k, 0) for k in ("train", "heldout")} | {k: v for k, v in c.items() if k not in ("train", "heldout")}


def describe_counts(what: str, counts: dict[str, int], used: str = "train") -> str:
    """One human line: which clips a trainer saw and which it trained on."""
    others = ", ".join(f"{k} {v}" for k, v in counts.items() if k != used and v)
    return f"{what}: training on {counts.get(used, 0)} {used} clips" + (f" (seen and not trained on: {others})"
                                                                        if others else "")


def progress(total: int, initial: int, desc: str, enabled: bool = True):
    """A tqdm bar (steps, loss as postfix, rate, ETA) on stderr; a no-op object when disabled."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True,
                file=sys.stderr, mininterval=1.0)
