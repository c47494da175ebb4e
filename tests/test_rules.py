"""Coupling rules as values: rule tables, their precedence, user rules and the graph package's imports."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
GRAPH = SRC / "secateur" / "graph"


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


# ---------------------------------------------------------------- the defect: a user rule made before any capture
USER_RULE_FIRST = """
import torch
from torch import nn
import secateur as sc

calls = []

@sc.register_rule("linear")
def opaque_linear(walk, node):
    calls.append(node.name)
    return walk.unknown(node, "a user rule")

from secateur.graph import capture
g = capture(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), (torch.randn(1, 4),))
print(len(calls), len(g.prunable))
"""


def test_user_rule_registered_before_the_first_capture_is_used():
    """In a fresh interpreter, nothing imported later may replace the user's rule with the built-in one."""
    run = _python(USER_RULE_FIRST)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["2", "0"]  # both linears went through the user rule; nothing prunable


# ---------------------------------------------------------------- no import cycle
def _runtime_imports(path: Path) -> set[str]:
    """Modules of ``secateur.graph`` that ``path`` imports at run time (``TYPE_CHECKING`` blocks excluded)."""
    module = "secateur." + ".".join(path.relative_to(SRC / "secateur").with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for child in node.body for n in ast.walk(child)}
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and id(node) not in skip:
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            target = ".".join(p for p in (base, node.module) if p)
            found.update(f"{target}.{a.name}" for a in node.names)
            found.add(target)
    return {m.removesuffix(".__init__") for m in found if m.startswith("secateur.graph")}


def _graph_modules() -> dict[str, Path]:
    paths = sorted(GRAPH.rglob("*.py"))
    return {"secateur." + ".".join(p.relative_to(SRC / "secateur").with_suffix("").parts).removesuffix(".__init__"): p
            for p in paths}


def test_graph_package_has_no_import_cycle():
    modules = _graph_modules()
    deps = {m: {d for d in _runtime_imports(p) if d in modules and d != m} for m, p in modules.items()}
    try:
        order = list(TopologicalSorter(deps).static_order())
    except CycleError as exc:
        pytest.fail(f"import cycle in secateur.graph: {exc.args[1]}")
    assert order.index("secateur.graph.walk") < order.index("secateur.graph.rules.linear")
    assert order.index("secateur.graph.rules") < order.index("secateur.graph.capture")
    assert not any(d == "secateur.graph.capture" for m, ds in deps.items() if ".rules" in m for d in ds)


@pytest.mark.parametrize("first", ["secateur.graph.rules.linear", "secateur.graph.rules.elementwise",
                                   "secateur.graph.walk", "secateur.graph.capture"])
def test_any_graph_module_imports_first(first):
    run = _python(f"import {first}\nfrom secateur.graph import BUILTIN\nprint(BUILTIN['linear'].__module__)")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "secateur.graph.rules.linear"
