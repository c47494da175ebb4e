"""What users pass as example inputs and calibration data, normalised once.

Example inputs: a tensor, a tuple/list of tensors (positional), a dict of tensors (keyword, e.g. a
Hugging Face tokenizer's output), a ``DataLoader`` or any iterable of batches (its first batch).
Calibration: one batch, or a list, ``DataLoader`` or iterable of batches, where a batch is a tensor,
a dict, or ``(inputs, targets)``. Anything else is an :class:`~secateur.errors.InputError` that says
which forms work.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

from .errors import InputError

FORMS = ("a tensor, a tuple/list of tensors, a dict of tensors (e.g. a tokenizer's output), "
         "or a DataLoader / iterable of those")


@dataclass
class Inputs:
    """The arguments of one forward call."""

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.args or self.kwargs)

    def call(self, model: nn.Module) -> Any:
        return model(*self.args, **self.kwargs)

    def output_shapes(self, model: nn.Module) -> list[tuple[int, ...]]:
        """Shapes of every tensor in ``model``'s output on these inputs (Hugging Face outputs included); a model
        that does not run on them is an :class:`InputError`."""
        with torch.no_grad():
            try:
                out = self.call(model)
            except Exception as err:  # the user's model rejected the user's inputs, whatever it raised
                raise InputError(f"the model does not run on the example inputs ({type(err).__name__}: "
                                 f"{str(err)[:200]}); pass inputs it accepts (py: models: --input-shape)") from err
        return [tuple(t.shape) for t in output_tensors(out)]

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (*self.args, *self.kwargs.values()) if isinstance(t, torch.Tensor)]

    @property
    def batch_size(self) -> int:
        return self.tensors()[0].shape[0]

    def map(self, fn) -> Inputs:
        """These inputs with ``fn`` applied to every tensor."""
        conv = lambda t: fn(t) if isinstance(t, torch.Tensor) else t  # noqa: E731
        return Inputs(tuple(conv(a) for a in self.args), {k: conv(v) for k, v in self.kwargs.items()})

    def to_meta(self) -> Inputs:
        return self.map(lambda t: t.to("meta"))

    def repeat_batch(self, size: int) -> Inputs:
        """The first sample repeated to a batch of ``size`` (for latency at a given batch size)."""
        return self.map(lambda t: t[:1].expand(size, *t.shape[1:]).contiguous())


@dataclass
class Batch:
    """One calibration or training batch: model inputs and, for a supervised loss, targets."""

    inputs: Inputs
    target: torch.Tensor | None = None
    raw: Any = None  # the item as the user's data yielded it (for a ForwardLoss)


def output_tensors(out: Any) -> list[torch.Tensor]:
    """Every tensor in a model output (a tensor, tuple, dict or Hugging Face ``ModelOutput``)."""
    return [t for t in pytree.tree_leaves(dict(out) if isinstance(out, Mapping) else out)
            if isinstance(t, torch.Tensor)]


def logits_of(out: Any) -> torch.Tensor:
    """The prediction tensor of a model output: itself, ``.logits``, or the first tensor in it."""
    if isinstance(out, torch.Tensor):
        return out
    logits = out.get("logits") if isinstance(out, Mapping) else getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    tensors = output_tensors(out)
    if not tensors:
        raise InputError(f"the model returned {type(out).__name__} with no tensor in it")
    return tensors[0]


def _is_batches(value: Any) -> bool:
    """An iterable of batches (a DataLoader, generator, list...), not a tensor, dict or string."""
    return isinstance(value, Iterable) and not isinstance(value, torch.Tensor | Mapping | str | bytes)


def _is_text(value: Any) -> bool:
    """A text column of a data set (a string, or a list of them): no model input, dropped from batches."""
    return isinstance(value, str) or (isinstance(value, list | tuple) and bool(value)
                                      and all(isinstance(v, str) for v in value))


def _kwargs(mapping: Mapping, where: str) -> dict:
    out = {k: v for k, v in mapping.items() if not _is_text(v)}
    if not any(isinstance(v, torch.Tensor) for v in out.values()):
        raise InputError(f"{where}: a dict of inputs needs at least one tensor; got keys {sorted(out)}")
    return out


def as_inputs(example_inputs: Any, where: str = "example_inputs") -> Inputs:
    """Normalise example inputs (see the module docstring).

    >>> as_inputs({"input_ids": torch.zeros(1, 4, dtype=torch.long)}).batch_size
    1
    >>> as_inputs([torch.zeros(2, 3)]).args[0].shape
    torch.Size([2, 3])
    """
    if example_inputs is None:
        return Inputs()
    if isinstance(example_inputs, Inputs):
        return example_inputs
    if isinstance(example_inputs, Batch):
        return example_inputs.inputs
    if isinstance(example_inputs, torch.Tensor):
        return Inputs((example_inputs,))
    if isinstance(example_inputs, Mapping):
        return Inputs((), _kwargs(example_inputs, where))
    if isinstance(example_inputs, list | tuple) and example_inputs and all(
            isinstance(t, torch.Tensor) for t in example_inputs):
        return Inputs(tuple(example_inputs))
    if _is_batches(example_inputs):
        first = next(iter(example_inputs), None)
        if first is None:
            raise InputError(f"{where} is empty; pass {FORMS}")
        return as_batch(first, where).inputs
    raise InputError(f"{where} is a {type(example_inputs).__name__}; pass {FORMS}")


def as_batch(item: Any, where: str = "calibration") -> Batch:
    """One batch: a tensor, a dict, ``(inputs, targets)`` or ``(inputs,)``.

    >>> as_batch((torch.zeros(2, 3), torch.tensor([0, 1]))).target.tolist()
    [0, 1]
    """
    if isinstance(item, Batch):
        return item
    if isinstance(item, torch.Tensor | Mapping):
        return Batch(as_inputs(item, where), raw=item)
    if isinstance(item, list | tuple) and len(item) in (1, 2):
        target = item[1] if len(item) == 2 else None
        if target is not None and not isinstance(target, torch.Tensor):
            raise InputError(f"{where}: the targets of an (inputs, targets) batch must be a tensor, got "
                             f"{type(target).__name__}")
        return Batch(as_inputs(item[0], where), target, raw=item)
    raise InputError(f"{where}: a batch is a tensor, a dict of tensors or (inputs, targets); got "
                     f"{type(item).__name__}{f' of {len(item)} items' if isinstance(item, list | tuple) else ''}")


def as_batches(calibration: Any, where: str = "calibration") -> list[Batch]:
    """Every calibration batch, normalised (a single batch becomes a list of one)."""
    if calibration is None:
        return []
    if isinstance(calibration, torch.Tensor | Mapping | Batch):
        return [as_batch(calibration, where)]
    if not _is_batches(calibration):
        raise InputError(f"{where} is a {type(calibration).__name__}; pass {FORMS}")
    batches = [as_batch(item, f"{where} batch {i}") for i, item in enumerate(calibration)]
    if not batches:
        raise InputError(f"{where} holds no batch; pass at least one")
    return batches


def token_rows(calibration: Any, where: str = "calibration") -> Iterator[Batch]:
    """Language-model calibration as batches of token ids: a ``(sequences, length)`` tensor yields one
    row per sequence, a list of ``(1, L)`` or ``(L,)`` tensors one row each, dict batches stay as given."""
    items = [calibration] if isinstance(calibration, torch.Tensor | Mapping) else calibration
    if items is None or not _is_batches(items):
        raise InputError(f"{where}: language-model calibration is token ids: a (sequences, length) tensor, a list "
                         f"of (1, length) tensors, or tokenizer dicts; got {type(calibration).__name__}")
    for i, item in enumerate(items):
        batch = as_batch(item, f"{where} item {i}")
        ids = batch.inputs.kwargs.get("input_ids", batch.inputs.args[0] if batch.inputs.args else None)
        if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.dim() not in (1, 2):
            raise InputError(f"{where} item {i}: token ids must be an integer tensor of shape (length,) or "
                             f"(sequences, length); got {getattr(ids, 'dtype', type(ids).__name__)}")
        if batch.inputs.kwargs:
            yield Batch(Inputs((), {k: v for k, v in batch.inputs.kwargs.items() if k != "labels"}))
            continue
        for row in ids.reshape(-1, ids.shape[-1]):
            yield Batch(Inputs((), {"input_ids": row[None]}))
