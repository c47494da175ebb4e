"""Which units each coupled group loses: per group (layer scope) or ranked over all groups (global scope),
and the plan's cuts for them.

Heads under grouped-query attention (a key-value head serving ``r`` query heads, as in Llama, Qwen2,
SmolLM2) are chosen as *query heads*: every key-value group of a layer keeps the same number of query
heads (Hugging Face maps query head ``h`` to group ``h // r``), and a group whose query heads all go
takes its key and value heads with it. A layer of ``G`` groups of ``r`` heads can therefore keep
``g * k`` query heads (``g <= G`` groups of ``k <= r``); a requested count is rounded to the nearest of
those (ties: fewer removed), and the ``(g, k)`` that keeps the highest summed score wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from .graph import Group
from .plan import Plan
from .structured import cut_units


def gqa_layout(group: Group) -> tuple[int, int, int] | None:
    """``(key-value groups, query heads per group, head size)`` of a grouped-query heads group, else None."""
    factors = sorted({m.factor for m in group.members})
    if group.kind != "heads" or len(factors) != 2 or factors[1] % factors[0]:
        return None
    return group.size, factors[1] // factors[0], factors[0]


def query_heads(group: Group) -> Group:
    """The query-head view of a grouped-query heads group: its q/o members at one-head granularity."""
    groups, per, dim = gqa_layout(group)
    members = [replace(m, factor=dim) for m in group.members if m.factor == per * dim]
    return Group(group.id, groups * per, members, kind="heads")


@dataclass
class Units:
    """A candidate group as selection sees it: unit scores, the parameters one unit holds, and for
    grouped-query attention ``heads = (groups, query heads per group)`` (its units are then query heads)."""

    group: Group
    scores: torch.Tensor
    cost: float = 1.0
    heads: tuple[int, int] | None = None

    @property
    def size(self) -> int:
        return len(self.scores)

    @property
    def view(self) -> Group:
        """The group whose units these are (the query-head view under grouped-query attention)."""
        return query_heads(self.group) if self.heads else self.group


def _lowest(scores: torch.Tensor, n: int) -> list[int]:
    """Indices of the ``n`` lowest scores (ties broken by position)."""
    return sorted(torch.argsort(scores, stable=True)[:n].tolist())


def head_options(groups: int, per: int) -> dict[int, list[tuple[int, int]]]:
    """Query heads removable from ``groups`` key-value groups of ``per`` heads -> the ``(g, k)`` layouts kept.

    >>> sorted(head_options(3, 3))
    [0, 3, 5, 6, 7, 8]
    """
    options: dict[int, list[tuple[int, int]]] = {}
    for g in range(1, groups + 1):
        for k in range(1, per + 1):
            options.setdefault(groups * per - g * k, []).append((g, k))
    return options


def nearest_removal(options: list[int], wanted: float) -> int:
    """The option closest to ``wanted`` (ties: the smaller).

    >>> nearest_removal([0, 3, 5], 2.25), nearest_removal([0, 3, 5], 0.9), nearest_removal([0, 2], 1.0)
    (3, 0, 0)
    """
    return min(options, key=lambda n: (abs(n - wanted), n))


def gqa_drops(scores: torch.Tensor, groups: int, per: int, removal: int) -> list[int]:
    """Query heads to remove (``removal`` of them, an option of :func:`head_options`): the layout and heads
    that keep the highest summed score.

    >>> gqa_drops(torch.tensor([9.0, 8, 7, 9, 8, 7, 1, 1, 1]), 3, 3, 3)  # a weak group goes whole
    [6, 7, 8]
    >>> gqa_drops(torch.tensor([9.0, 8, 1, 9, 8, 1, 9, 8, 1]), 3, 3, 3)  # a weak head in every group
    [2, 5, 8]
    """
    ranked = scores.view(groups, per).sort(dim=1, descending=True)
    best, keep = -math.inf, []
    for g, k in head_options(groups, per)[removal]:
        value = ranked.values[:, :k].sum(1)
        chosen = torch.argsort(value, descending=True, stable=True)[:g]
        if float(value[chosen].sum()) > best:
            best = float(value[chosen].sum())
            keep = [int(c) * per + int(j) for c in chosen for j in ranked.indices[c, :k]]
    return sorted(set(range(groups * per)) - set(keep))


def drop_units(units: Units, wanted: float, round_to: int = 1) -> list[int]:
    """Remove about ``wanted`` units of a group: the lowest-scored (channels: keep rounded up to ``round_to``;
    heads: the nearest count the attention layout allows)."""
    if units.heads:
        groups, per = units.heads
        removal = nearest_removal(list(head_options(groups, per)), wanted)
        return gqa_drops(units.scores, groups, per, removal)
    if units.group.kind == "heads":
        return _lowest(units.scores, min(nearest_removal(list(range(units.size)), wanted), units.size - 1))
    keep = max(units.size - math.floor(wanted + 1e-9), 1)
    return _lowest(units.scores, units.size - min(units.size, math.ceil(keep / round_to) * round_to))


def layer_drops(units: list[Units], sparsity: float, round_to: int, ratios: dict[str, float] | None,
                key) -> dict[int, list[int]]:
    """Each group loses its own ``ratios[key]`` (or ``sparsity``) of its lowest-scored units."""
    return {u.group.id: drop_units(u, (ratios or {}).get(key(u.group), sparsity) * u.size, round_to) for u in units}


def global_drops(units: list[Units], fraction: float, round_to: int, normalize) -> dict[int, list[int]]:
    """Rank the units of all groups together by ``normalize``-d score and remove the lowest until ``fraction``
    of the total cost is gone (each group keeps at least one unit), FLAP's adaptive structure."""
    pooled = sorted((float(s), i) for i, u in enumerate(units) for s in normalize(u.scores))
    budget = fraction * sum(u.cost * u.size for u in units)
    removed = [0] * len(units)
    for _, i in pooled:
        if budget < units[i].cost / 2:
            break
        if removed[i] < units[i].size - 1:
            removed[i] += 1
            budget -= units[i].cost
    return {u.group.id: drop_units(u, n, round_to) if n else [] for u, n in zip(units, removed, strict=True)}


def plan_from_drops(units: list[Units], drops: dict[int, list[int]]) -> Plan:
    """Turn units removed per group into tensor cuts for every member (whole key-value groups whose query
    heads all go lose their k/v heads too)."""
    plan = Plan()
    for u in units:
        drop = set(drops.get(u.group.id, []))
        whole, partial = sorted(drop), []
        if u.heads:
            per = u.heads[1]
            whole = [c for c in range(u.heads[0]) if all(c * per + j in drop for j in range(per))]
            partial = sorted(h for h in drop if h // per not in whole)
        cut_units(plan, u.group.members, whole)
        cut_units(plan, u.view.members, partial)
    return plan


def unit_cost(group: Group, shapes: dict[str, torch.Size]) -> float:
    """Parameters one unit of ``group`` holds (tensors shared under two names counted once)."""
    seen, total = set(), 0
    for m in group.members:
        shape = shapes.get(m.tensor)
        if shape is None or (m.tensor, m.dim, m.offset) in seen:
            continue
        seen.add((m.tensor, m.dim, m.offset))
        total += m.factor * m.repeat * math.prod(shape) // shape[m.dim]
    return float(total)
