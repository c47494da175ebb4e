"""The user's rule table: rules registered with :func:`register_rule`.

A capture combines it *after* the built-in rules, so a registered rule overrides a built-in one
whatever was imported first. It changes only when the user calls these functions.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import InvalidParameterError
from .table import Rule, RuleTable, check_name

_user = RuleTable()


def register_rule(*op_names: str) -> Callable[[Rule], Rule]:
    """Decorator: use ``fn(walk, node) -> value`` for the ops named (``"linear"``, a custom op's name),
    in every later capture, over the built-in rule; returns ``fn`` unchanged.

    >>> import torch
    >>> from torch import nn
    >>> from secateur.graph import capture
    >>> @register_rule("relu")
    ... def opaque_relu(walk, node):
    ...     return walk.unknown(node, "a rule that understands nothing")
    >>> capture(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), (torch.randn(1, 4),)).prunable
    []
    >>> unregister_rule("relu")
    """
    if not op_names:
        raise InvalidParameterError("register_rule needs at least one op name, e.g. @register_rule('linear')")
    for name in op_names:
        check_name(name)

    def deco(fn: Rule) -> Rule:
        global _user
        _user = _user + RuleTable([(op_names, fn)])
        return fn

    return deco


def unregister_rule(*op_names: str) -> None:
    """Remove the user rules for ``op_names``; the built-in rules apply to those ops again."""
    global _user
    missing = [n for n in op_names if n not in _user]
    if missing:
        raise KeyError(f"no user rule is registered for {missing}; registered: {sorted(_user)}")
    _user = RuleTable({n: fn for n, fn in _user.items() if n not in op_names})


def user_rules() -> RuleTable:
    """The rules registered so far (a value: later registrations do not change it)."""
    return _user
