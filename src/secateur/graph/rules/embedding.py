"""Embeddings: the table's columns are a new ``hidden`` space, the residual stream it feeds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import fx

from ..table import RuleTable

if TYPE_CHECKING:
    from ..walk import Value, Walk


def _embedding(walk: Walk, node: fx.Node) -> Value:
    weight, ids = node.args[0], node.args[1]
    ref = walk.param(weight)
    out = dict(walk.value(ids))
    if ref is None:
        return walk.unknown(node, "an embedding with a computed table")
    out[len(walk.shape(node)) - 1] = (walk.produce(ref, 1, walk.shape(weight)[1], kind="hidden"),)
    return out


EMBEDDING = RuleTable({"embedding": _embedding})
