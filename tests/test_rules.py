"""Coupling rules as values: rule tables, their precedence, user rules and the graph package's imports."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest
import torch
from torch import nn

import secateur as sc
from secateur.graph import BUILTIN, RuleTable, capture, unregister_rule, user_rules
from secateur.graph.rules import FAMILIES

SRC = Path(__file__).resolve().parents[1] / "src"
GRAPH = SRC / "secateur" / "graph"


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def _prunable(rules: RuleTable | None = None) -> list[str]:
    g = capture(_mlp(), (torch.randn(1, 4),), rules=rules)
    return [x.describe() for x in g.prunable]


def _opaque(walk, node):
    """A rule that understands nothing: every space it reads is blocked."""
    return walk.unknown(node, "a test rule")


def _python(code: str, wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    """Run ``code`` in a fresh interpreter (nothing of secateur imported yet)."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    if not wait:
        return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
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


def test_user_rule_overrides_builtin_and_can_be_removed():
    assert _prunable() == ["0.out => 2.in"]
    sc.register_rule("linear")(_opaque)
    try:
        assert user_rules()["linear"] is _opaque
        assert _prunable() == []
    finally:
        unregister_rule("linear")
    assert "linear" not in user_rules()
    assert _prunable() == ["0.out => 2.in"]


def test_register_rule_returns_the_function_and_checks_names():
    assert sc.register_rule("secateur_test_op", "secateur_test_op2")(_opaque) is _opaque
    try:
        assert sorted(user_rules()) == ["secateur_test_op", "secateur_test_op2"]
    finally:
        unregister_rule("secateur_test_op", "secateur_test_op2")
    assert len(user_rules()) == 0
    with pytest.raises(ValueError, match="op name"):
        sc.register_rule()
    with pytest.raises(KeyError, match="never_registered"):
        unregister_rule("never_registered")


# ---------------------------------------------------------------- a private table for one capture
def test_private_rules_apply_to_one_capture_only():
    before = user_rules()
    assert _prunable(RuleTable({"linear": _opaque})) == []
    assert _prunable() == ["0.out => 2.in"]
    assert user_rules() == before


def test_private_rules_win_over_registered_ones():
    seen: list[str] = []

    def registered(walk, node):
        seen.append("registered")
        return dict(walk.value(node.args[0]))

    def private(walk, node):
        seen.append("private")
        return _opaque(walk, node)

    sc.register_rule("relu")(registered)
    try:
        assert _prunable(RuleTable({"relu": private})) == []
        assert seen == ["private"]
        assert _prunable() == ["0.out => 2.in"]
        assert seen == ["private", "registered"]
    finally:
        unregister_rule("relu")


@torch.library.custom_op("secateur_test::double", mutates_args=())
def _double(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@_double.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class _CustomOpNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(_double(self.a(x)))


def test_a_custom_op_needs_a_rule_and_can_reuse_a_builtin_one():
    x = (torch.randn(1, 4),)
    without = capture(_CustomOpNet(), x)
    assert (without.prunable, without.unknown_ops) == ([], ["double: no coupling rule"])
    found = capture(_CustomOpNet(), x, rules=RuleTable({"double": BUILTIN["relu"]}))
    assert ([g.describe() for g in found.prunable], found.unknown_ops) == (["a.out => b.in"], [])
    assert [g.size for g in found.prunable] == [8]


# ---------------------------------------------------------------- the table value
def test_plus_is_a_union_where_the_right_side_wins():
    def f(walk, node):
        return {}

    def g(walk, node):
        return {}

    left, right = RuleTable({"a": f, "b": f}), RuleTable([(("b", "c"), g)])
    both = left + right
    assert dict(both) == {"a": f, "b": g, "c": g}
    assert (right + left)["b"] is f
    assert dict(left) == {"a": f, "b": f}  # operands are unchanged
    assert sum([left, right], RuleTable()) == both
    with pytest.raises(TypeError):
        both["a"] = g
    assert repr(RuleTable({"b": f, "a": g})) == "RuleTable(['a', 'b'])"


def test_table_rejects_what_is_not_a_rule():
    with pytest.raises(TypeError, match="callable"):
        RuleTable({"linear": "not a function"})
    with pytest.raises(ValueError, match="op name"):
        RuleTable({"": _opaque})


def test_builtin_is_the_disjoint_sum_of_the_families():
    assert len(FAMILIES) == 11
    assert sum(len(t) for t in FAMILIES) == len(BUILTIN)  # no family overrides another
    assert len(BUILTIN) == 187
    for name in ("linear", "conv2d", "layer_norm", "embedding", "scaled_dot_product_attention", "lstm", "cat",
                 "view", "add", "mean"):
        assert sum(name in t for t in FAMILIES) == 1


# ---------------------------------------------------------------- no import cycle
def _module_name(path: Path) -> str:
    return "secateur." + ".".join(path.relative_to(SRC / "secateur").with_suffix("").parts).removesuffix(".__init__")


def _runtime_imports(path: Path) -> set[str]:
    """Modules of ``secateur.graph`` that ``path`` imports at run time (``TYPE_CHECKING`` blocks excluded)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for child in node.body for n in ast.walk(child)}
    found = set()
    for node in (n for n in ast.walk(tree) if id(n) not in skip):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            target = ".".join(p for p in (base, node.module) if p)
            found.update({target, *(f"{target}.{a.name}" for a in node.names)})
    return {m for m in found if m.startswith("secateur.graph")}


def _graph_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(GRAPH.rglob("*.py"))}


def test_graph_package_has_no_import_cycle():
    modules = _graph_modules()
    deps = {m: {d for d in _runtime_imports(p) if d in modules and d != m} for m, p in modules.items()}
    try:
        order = list(TopologicalSorter(deps).static_order())
    except CycleError as exc:
        pytest.fail(f"import cycle in secateur.graph: {exc.args[1]}")
    assert order.index("secateur.graph.rules") < order.index("secateur.graph.capture")
    families = [m for m in deps if m.startswith("secateur.graph.rules.")]
    assert len(families) == 12  # eleven families and their shared helpers
    allowed = {"secateur.graph.table", "secateur.graph.spaces", "secateur.graph.walk", "secateur.graph.rules.common"}
    assert [m for m in families if not deps[m] <= allowed] == []  # rule modules import only types and helpers
    assert (deps["secateur.graph.walk"], deps["secateur.graph.table"]) == ({"secateur.graph.spaces"}, set())


def test_any_graph_module_imports_first():
    """Each module imported first in a fresh interpreter (run side by side) leaves the same built-in table."""
    firsts = ["secateur.graph.rules.linear", "secateur.graph.rules.elementwise", "secateur.graph.walk",
              "secateur.graph.table", "secateur.graph.capture"]
    code = "import {}\nfrom secateur.graph import BUILTIN\nprint(len(BUILTIN), BUILTIN['linear'].__module__)"
    runs = [_python(code.format(first), wait=False) for first in firsts]
    outs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0] * len(firsts), [err for _, err in outs]
    assert {out.strip() for out, _ in outs} == {"187 secateur.graph.rules.linear"}
