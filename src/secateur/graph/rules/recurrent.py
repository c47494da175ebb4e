"""Recurrent layers (``aten.lstm``, ``aten.gru``): each layer's hidden units are a space whose rows repeat
once per gate in the stacked weights."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import fx

from ..spaces import Member, Segment
from ..table import RuleTable

if TYPE_CHECKING:
    from ..walk import ParamRef, Value, Walk


def _hidden_spaces(walk: Walk, node: fx.Node, refs: list[ParamRef], prev, gates: int) -> tuple[Segment, ...]:
    """Walk the layers: ``prev`` feeds a layer's ``w_ih`` columns, whose hidden space feeds the next."""
    params, has_biases, num_layers = node.args[2], node.args[3], node.args[4]
    per_layer, first = 4 if has_biases else 2, None
    for layer in range(num_layers):
        w_ih, w_hh, *biases = refs[layer * per_layer : (layer + 1) * per_layer]
        hidden = walk.shape(params[layer * per_layer + 1])[1]
        walk.member(prev, w_ih.name, 1, "in")
        gate_rows = {"repeat": gates, "stride": hidden}
        extra = [Member(w_ih.name, 0, **gate_rows), Member(w_hh.name, 0, **gate_rows)]
        extra += [Member(b.name, 0, **gate_rows) for b in biases]
        seg = walk.produce(w_hh, 1, hidden, extra)
        first = first or seg
        walk.tie((first,), (seg,), node)  # nn.LSTM has one hidden_size for every layer
        prev = (seg,)
    return prev


def _recurrent(walk: Walk, node: fx.Node, gates: int) -> list[Value]:
    """aten.lstm / aten.gru: ``(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, ...)``."""
    x, hx, params, bidirectional = node.args[0], node.args[1], node.args[2], node.args[7]
    hx = hx if isinstance(hx, list | tuple) else [hx]  # gru takes one state tensor, lstm a list
    refs = [walk.param(p) for p in params]
    value, rank = walk.value(x), len(walk.shape(x))
    user_state = any(isinstance(h, fx.Node) and h.op == "placeholder" for h in hx)
    if bidirectional or None in refs or user_state:
        return [walk.unknown(node, "a bidirectional RNN or given state"), {}, {}][: len(node.meta["val"])]
    last = _hidden_spaces(walk, node, refs, value.get(rank - 1), gates)
    for user in node.users:
        if user.args[1] != 0 and user.users:
            walk.block(last, f"{walk.label(node)} returns its final state")
    out = {d: s for d, s in value.items() if d != rank - 1}
    out[rank - 1] = last
    return [out, {}, {}][: len(node.meta["val"])]


def _lstm(walk: Walk, node: fx.Node) -> list[Value]:
    return _recurrent(walk, node, 4)


def _gru(walk: Walk, node: fx.Node) -> list[Value]:
    return _recurrent(walk, node, 3)


RECURRENT = RuleTable({"lstm": _lstm, "gru": _gru})
