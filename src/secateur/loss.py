"""The loss of one batch, whatever the model returns: ``loss_fn(prediction, targets)`` for
``(inputs, targets)`` batches, or the model's own ``.loss`` (a Hugging Face batch with ``labels``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .errors import InputError
from .inputs import Batch, logits_of

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def batch_loss(model: nn.Module, batch: Batch, loss_fn: LossFn) -> tuple[torch.Tensor, object]:
    """(loss, raw model output) of ``batch``.

    >>> from secateur.inputs import as_batch
    >>> loss, _ = batch_loss(nn.Linear(3, 2), as_batch((torch.ones(4, 3), torch.zeros(4, dtype=torch.long))),
    ...                      nn.functional.cross_entropy)
    >>> loss.dim()
    0
    """
    out = batch.inputs.call(model)
    if batch.target is not None:
        return loss_fn(logits_of(out), batch.target), out
    own = out.get("loss") if isinstance(out, dict) else getattr(out, "loss", None)
    if isinstance(own, torch.Tensor):
        return own, out
    raise InputError("a loss needs (inputs, targets) batches, or a model whose output has .loss (e.g. a Hugging Face "
                     "batch that includes labels)")
