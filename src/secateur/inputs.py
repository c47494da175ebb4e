"""Example inputs: positional tensors, keyword tensors (Hugging Face ``input_ids=...``), or both."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils import _pytree as pytree


@dataclass
class Inputs:
    """The arguments of one forward call."""

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.args or self.kwargs)

    def call(self, model: nn.Module) -> object:
        return model(*self.args, **self.kwargs)

    def output_shapes(self, model: nn.Module) -> list[tuple[int, ...]]:
        """Shapes of every tensor in ``model``'s output on these inputs (Hugging Face outputs included)."""
        with torch.no_grad():
            out = self.call(model)
        leaves = pytree.tree_leaves(dict(out) if isinstance(out, Mapping) else out)
        return [tuple(t.shape) for t in leaves if isinstance(t, torch.Tensor)]

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (*self.args, *self.kwargs.values()) if isinstance(t, torch.Tensor)]

    @property
    def batch_size(self) -> int:
        return self.tensors()[0].shape[0]

    def to_meta(self) -> Inputs:
        meta = lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t  # noqa: E731
        return Inputs(tuple(meta(a) for a in self.args), {k: meta(v) for k, v in self.kwargs.items()})


def as_inputs(example_inputs: object) -> Inputs:
    """Normalise what users pass as ``example_inputs``: a tensor, a tuple/list of them, a dict of keyword
    tensors, or :class:`Inputs`.

    >>> as_inputs({"input_ids": torch.zeros(1, 4, dtype=torch.long)}).batch_size
    1
    """
    if example_inputs is None:
        return Inputs()
    if isinstance(example_inputs, Inputs):
        return example_inputs
    if isinstance(example_inputs, dict):
        return Inputs((), dict(example_inputs))
    if isinstance(example_inputs, list | tuple):
        return Inputs(tuple(example_inputs))
    return Inputs((example_inputs,))
