"""The one-way flow of docs/design.md, checked on the imports: models -> profiler -> capture_folder ->
analysis -> reports -> cli, with roofline (pure Python) beside them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "moeprof"

# part -> the moeprof parts it must not import
FORBIDDEN = {
    "roofline": {"models", "profiler", "capture_folder", "analysis", "reports", "cli"},
    "capture_folder": {"models", "profiler", "roofline", "analysis", "reports", "cli"},
    "models": {"profiler", "capture_folder", "analysis", "reports", "cli"},
    "profiler": {"analysis", "reports", "cli"},
    "analysis": {"models", "profiler", "reports", "cli"},
    "reports": {"profiler", "models", "cli"},
}

# The one edge against the flow, named: the layer (and its sharded form) marks its phases with the
# profiler's NVTX ranges (profiler/nvtx.py, a no-op unless a profiler asked for them).
ALLOWED = {("models/layer.py", "profiler"), ("models/sharded.py", "profiler")}


def _part(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def _imported_parts(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            if node.module == "moeprof":
                names += [f"moeprof.{a.name}" for a in node.names]
    return {n.split(".")[1] for n in names if n.startswith("moeprof.") and len(n.split(".")) > 1}


MODULES = sorted(p for p in PKG.rglob("*.py") if _part(p) in FORBIDDEN)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_flow_one_way(path: Path):
    rel = str(path.relative_to(PKG))
    bad = {p for p in _imported_parts(path) & FORBIDDEN[_part(path)] if (rel, p) not in ALLOWED}
    assert not bad, f"{path.relative_to(PKG)} imports {sorted(bad)} against the flow in docs/design.md"


def test_the_check_sees_imports():
    assert _imported_parts(PKG / "analysis" / "load.py") >= {"capture_folder", "errors"}
    assert "models" in _imported_parts(PKG / "profiler" / "_point_runner.py")
