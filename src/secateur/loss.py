"""The loss of one batch, whatever the model returns and whatever the batch holds.

In order: a :class:`ForwardLoss` (your function computes it from the model and the batch as you gave
it); ``loss_fn(prediction, targets)`` for ``(inputs, targets)`` batches; the model's own ``.loss`` (a
Hugging Face batch that includes ``labels``); and for token ids alone with a model that returns
``(batch, length, vocabulary)`` logits, the next-token loss of a causal language model (positions
where ``attention_mask`` is 0 are skipped).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputError
from .inputs import Batch, Inputs, logits_of

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ForwardLoss:
    """Your own forward pass: ``fn(model, batch)`` returns the loss (a scalar tensor, or an output with
    ``.loss``); ``batch`` is the item as your data yields it. Pass it wherever ``loss_fn=`` is taken.

    >>> import secateur as sc
    >>> loss = sc.ForwardLoss(lambda model, batch: model(batch["x"]).pow(2).mean())
    >>> batch_loss(nn.Linear(2, 1), Batch(Inputs((), {"x": torch.ones(3, 2)}), raw={"x": torch.ones(3, 2)}),
    ...            loss)[0].dim()
    0
    """

    fn: Callable[[nn.Module, Any], Any]


def token_ids(inputs: Inputs) -> torch.Tensor | None:
    """The ``(batch, length)`` integer token ids of language-model inputs, or None."""
    ids = inputs.kwargs.get("input_ids", inputs.args[0] if len(inputs.args) == 1 else None)
    if isinstance(ids, torch.Tensor) and not ids.is_floating_point() and ids.dim() == 2:
        return ids
    return None


def _positions(inputs: Inputs, ids: torch.Tensor) -> torch.Tensor:
    """1 where a next token is predicted: every position but the last, and not where the mask is 0."""
    mask = inputs.kwargs.get("attention_mask")
    keep = torch.ones_like(ids[:, 1:], dtype=torch.bool) if mask is None else mask[:, 1:].bool()
    return keep


def next_token_loss(logits: torch.Tensor, inputs: Inputs) -> torch.Tensor:
    """Mean cross-entropy of predicting token ``t+1`` from the logits at ``t``.

    >>> ids = torch.tensor([[1, 2, 3]])
    >>> round(next_token_loss(torch.zeros(1, 3, 4), Inputs((), {"input_ids": ids})).item(), 4)  # log(4)
    1.3863
    """
    ids = token_ids(inputs)
    keep = _positions(inputs, ids)
    per_token = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                reduction="none")
    return (per_token * keep.reshape(-1)).sum() / keep.sum().clamp_min(1)


def is_language_model_batch(batch: Batch, logits: torch.Tensor) -> bool:
    """Token ids alone, and logits of shape ``(batch, length, vocabulary)`` over them."""
    ids = token_ids(batch.inputs)
    return batch.target is None and ids is not None and logits.dim() == 3 and logits.shape[:2] == ids.shape


def loss_items(batch: Batch) -> int:
    """How many items a batch's loss is a mean over: next-token positions for token ids, non-ignored
    labels for a Hugging Face causal-LM batch, else samples. Gradient accumulation weights by it."""
    labels = batch.inputs.kwargs.get("labels")
    ids = token_ids(batch.inputs)
    if batch.target is not None:
        return int(batch.target.shape[0]) if batch.target.dim() else 1
    if isinstance(labels, torch.Tensor):
        return int((labels[:, 1:] != -100).sum()) if labels.dim() == 2 else int(labels.shape[0])
    if ids is not None:
        return int(_positions(batch.inputs, ids).sum())
    tensors = batch.inputs.tensors()
    return int(tensors[0].shape[0]) if tensors and tensors[0].dim() else 1


def own_loss(out: Any) -> torch.Tensor | None:
    """The ``.loss`` a model computed itself (Hugging Face outputs with labels), or None."""
    own = out.get("loss") if isinstance(out, Mapping) else getattr(out, "loss", None)
    return own if isinstance(own, torch.Tensor) else None


def task_loss(out: Any, batch: Batch, loss_fn: LossFn) -> torch.Tensor:
    """The loss of ``batch`` given the model's output ``out`` (see the module docstring for the order)."""
    if batch.target is not None:
        return loss_fn(logits_of(out), batch.target)
    own = own_loss(out)
    if own is not None:
        return own
    logits = logits_of(out)
    if is_language_model_batch(batch, logits):
        return next_token_loss(logits, batch.inputs)
    raise InputError("a loss needs (inputs, targets) batches, a model whose output has .loss (e.g. a Hugging Face "
                     "batch that includes labels), token ids for a causal language model, or "
                     "loss_fn=secateur.ForwardLoss(fn) that computes it")


def batch_loss(model: nn.Module, batch: Batch, loss_fn: LossFn | ForwardLoss) -> tuple[torch.Tensor, object]:
    """(loss, raw model output) of ``batch``.

    >>> from secateur.inputs import as_batch
    >>> loss, _ = batch_loss(nn.Linear(3, 2), as_batch((torch.ones(4, 3), torch.zeros(4, dtype=torch.long))),
    ...                      nn.functional.cross_entropy)
    >>> loss.dim()
    0
    """
    if isinstance(loss_fn, ForwardLoss):
        out = loss_fn.fn(model, batch.raw if batch.raw is not None else batch.inputs.kwargs or batch.inputs.args)
        loss = out if isinstance(out, torch.Tensor) else own_loss(out)
        if loss is None or loss.dim() != 0:
            raise InputError(f"ForwardLoss's function must return a scalar loss tensor or an output with .loss; got "
                             f"{type(out).__name__}{f' of shape {tuple(out.shape)}' if loss is not None else ''}")
        return loss, out
    out = batch.inputs.call(model)
    return task_loss(out, batch, loss_fn), out
