"""Task quality: classification accuracy of a torch module or an ONNX model."""

from __future__ import annotations

from collections.abc import Callable

import torch


def accuracy(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 512) -> float:
    """Fraction of ``x`` whose arg-max prediction equals ``y`` (module in eval mode, no grad).

    >>> accuracy(lambda t: torch.eye(2)[t.long().squeeze(1)], torch.tensor([[0.], [1.]]), torch.tensor([0, 0]))
    0.5
    """
    if hasattr(model, "eval"):
        model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            correct += int((model(x[i : i + batch_size]).argmax(-1) == y[i : i + batch_size]).sum())
    return correct / len(x)
