"""The layering of the project, read from the source (no imports run): no cycles, and the core alone.

Why a test: a cycle or an upward import is invisible until it bites (a partially initialised module
at import time, ComfyUI needed to train); walking the imports keeps the architecture the docs show.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("magicinfinite_core", "nodes", "runner", "training")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, top_level_only: bool) -> set[str]:
    """Absolute names of the modules a file imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = module_name(path).split(".")
    if path.name != "__init__.py":
        pkg = pkg[:-1]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and is_type_checking(node):
                continue  # annotations only: never executed
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
            if top_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for field in ("body", "orelse", "finalbody", "handlers"):
                child = getattr(node, field, None)
                if isinstance(child, list) and child and isinstance(child[0], (ast.stmt, ast.ExceptHandler)):
                    visit(child if isinstance(child[0], ast.stmt) else [s for h in child for s in h.body])

    visit(tree.body)
    return found


def project_files() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
            if "assets" not in p.parts}


def graph(top_level_only: bool) -> dict[str, set[str]]:
    files = project_files()
    return {m: {i for i in imports_of(p, top_level_only) if i in files and i != m} for m, p in files.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(g[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (c := dfs(n)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state and (c := dfs(m)):
            return c
    return None


def test_the_walk_sees_the_real_imports():
    g = graph(top_level_only=True)
    assert "magicinfinite_core.sampling.guidance" in g["magicinfinite_core.sampling.predictor"]
    assert "magicinfinite_core.weights.bundle" in g["magicinfinite_core.generate"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_between_modules():
    cycle = find_cycle(graph(top_level_only=True))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_cycle_even_through_imports_inside_functions():
    """A function-level import that closes a loop is a cycle postponed, not removed."""
    cycle = find_cycle(graph(top_level_only=False))
    assert cycle is None, "import cycle (through a lazy import): " + " -> ".join(cycle)


def test_the_core_imports_neither_comfyui_nor_the_layers_above_it():
    above = ("comfy", "comfy_api", "folder_paths", "server", "nodes", "runner", "training")
    for m, p in project_files().items():
        if not m.startswith("magicinfinite_core"):
            continue
        bad = sorted(i for i in imports_of(p, top_level_only=False) if i.split(".")[0] in above)
        assert not bad, f"{p.relative_to(ROOT)} imports {bad}: the core must stay below nodes/runner/training"


def test_training_does_not_need_comfyui():
    for m, p in project_files().items():
        if m.startswith("training"):
            bad = sorted(i for i in imports_of(p, top_level_only=False)
                         if i.split(".")[0] in ("comfy", "comfy_api", "folder_paths", "nodes"))
            assert not bad, f"{p.relative_to(ROOT)} imports {bad}"
