"""Rule tables: coupling rules as values.

A *rule* ``fn(walk, node) -> value`` says how the channel spaces of an ATen op's inputs reach its
output (see :mod:`secateur.graph.walk`). A :class:`RuleTable` maps op names to rules; tables combine
with ``+``, the right side winning, so a capture runs with ``BUILTIN + user rules + private rules``.
Nothing here is filled by import side effects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from torch import fx

from ..errors import InvalidParameterError

if TYPE_CHECKING:
    from .walk import Value, Walk

Rule = Callable[["Walk", fx.Node], "Value | list[Value]"]
Entries = Mapping[str, Rule] | Iterable[tuple[str | Iterable[str], Rule]]


def check_name(name: object) -> str:
    """``name`` if it is an ATen op name as rules are looked up (``"linear"``), else an InvalidParameterError."""
    if not isinstance(name, str) or not name.isidentifier():
        raise InvalidParameterError(f"{name!r} is not an op name: give the op's name without namespace or overload, "
                         "e.g. 'linear' for aten.linear.default or 'my_op' for a torch.library op mylib::my_op")
    return name


def _check_rule(name: str, fn: object) -> Rule:
    if not callable(fn):
        raise TypeError(f"the rule for {name!r} must be callable as fn(walk, node) -> value, not {type(fn).__name__}")
    return fn


class RuleTable(Mapping[str, Rule]):
    """An immutable mapping from op name to rule; ``a + b`` holds both, ``b``'s rule winning for a name in both.

    Build it from a mapping or from ``(names, rule)`` pairs:

    >>> def keep(walk, node):
    ...     return dict(walk.value(node.args[0]))
    >>> def drop(walk, node):
    ...     return walk.unknown(node)
    >>> table = RuleTable([(("relu", "gelu"), keep)]) + RuleTable({"gelu": drop})
    >>> table
    RuleTable(['gelu', 'relu'])
    >>> table["gelu"] is drop, table["relu"] is keep
    (True, True)
    """

    __slots__ = ("_rules",)

    def __init__(self, entries: Entries = ()) -> None:
        pairs = entries.items() if isinstance(entries, Mapping) else entries
        rules: dict[str, Rule] = {}
        for names, fn in pairs:
            for name in (names,) if isinstance(names, str) else names:
                rules[check_name(name)] = _check_rule(name, fn)
        self._rules = MappingProxyType(rules)

    def __getitem__(self, name: str) -> Rule:
        return self._rules[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    def __add__(self, other: Mapping[str, Rule]) -> RuleTable:
        if not isinstance(other, Mapping):
            return NotImplemented
        return RuleTable({**self._rules, **other})

    def __repr__(self) -> str:
        return f"RuleTable({sorted(self._rules)})"
