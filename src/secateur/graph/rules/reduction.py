"""Reductions and spatial ops: reducing drops dims; pooling, resizing and padding change spatial dims."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import fx

from ..table import RuleTable
from .common import broadcast

if TYPE_CHECKING:
    from ..walk import Value, Walk


def _reduce(walk: Walk, node: fx.Node, dim_at: int = 1) -> Value:
    """Reducing over a channel dim keeps shapes consistent (like LayerNorm statistics); others shift."""
    a, val = walk.shape(node.args[0]), node.meta.get("val")
    b = tuple(val[0].shape) if isinstance(val, tuple | list) else walk.shape(node)  # max.dim: (values, indices)
    if b is None:
        return {}
    value = walk.value(node.args[0])
    dims = walk.arg(node, dim_at, "dim", None)
    dims = set(range(len(a))) if dims is None else {d % len(a) for d in ([dims] if isinstance(dims, int) else dims)}
    keep = len(a) == len(b)
    return {d if keep else d - sum(r < d for r in dims): s for d, s in value.items() if d not in dims}


def _vector_norm(walk: Walk, node: fx.Node) -> Value:
    """``linalg_vector_norm(x, ord, dim)``: a reduction whose dims come third."""
    return _reduce(walk, node, dim_at=2)


def _extremum(walk: Walk, node: fx.Node) -> Value | list[Value]:
    """``max``/``min`` of two tensors is element-wise; over dims it reduces (``max.dim`` also gives indices)."""
    if isinstance(walk.arg(node, 1, "other"), fx.Node):
        return broadcast(walk, node)
    value = _reduce(walk, node)
    return [value, dict(value)] if isinstance(node.meta.get("val"), tuple | list) else value


def _spatial(walk: Walk, node: fx.Node) -> Value:
    """Pooling and resizing: batch and channel dims pass, spatial dims change size."""
    value = walk.value(node.args[0])
    for d, segs in value.items():
        if d > 1:
            walk.block(segs, f"{walk.label(node)} resizes that dim")
    return {d: s for d, s in value.items() if d <= 1}


def _pad(walk: Walk, node: fx.Node) -> Value:
    """A padded dim changes size, so its channels are blocked; the others pass."""
    a, b = walk.shape(node.args[0]), walk.shape(node)
    value = dict(walk.value(node.args[0]))
    for d in [d for d in value if a[d] != b[d]]:
        walk.block(value.pop(d), f"{walk.label(node)} pads that dim")
    return value


REDUCTION = RuleTable([
    (("mean", "sum", "amax", "amin", "var", "std", "norm", "logsumexp", "argmax", "argmin", "any", "all"), _reduce),
    (("max", "min"), _extremum),
    ("linalg_vector_norm", _vector_norm),
    (("max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
      "adaptive_avg_pool2d", "adaptive_max_pool2d", "upsample_nearest2d", "upsample_bilinear2d",
      "_adaptive_avg_pool2d", "max_pool2d_with_indices"), _spatial),
    (("pad", "constant_pad_nd", "reflection_pad2d", "replication_pad2d"), _pad),
])
