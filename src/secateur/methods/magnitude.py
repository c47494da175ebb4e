"""One-shot magnitude pruning: the smallest ``|w|`` of each layer (or of each N:M group) go. A baseline."""

from __future__ import annotations

from dataclasses import dataclass

from .base import register_method
from .oneshot import OneShot


@register_method
@dataclass(frozen=True)
class Magnitude(OneShot):
    """Smallest ``|w|`` first, per layer (or per N:M group); needs no calibration data.

    >>> import torch
    >>> w, keep = Magnitude(0.5).prune_weight(torch.tensor([[1.0, -3.0, 2.0, 0.5]]), None, 0.5)
    >>> keep.tolist()
    [[False, True, True, False]]
    """

    name = "magnitude"

    def prune_weight(self, weight, statistic, sparsity):
        keep = self.keep_mask(weight.abs(), sparsity, per_row=False)
        return weight * keep, keep
