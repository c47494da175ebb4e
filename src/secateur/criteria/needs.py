"""The calibration statistics a criterion can ask for, and a clear error when one is missing."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import PruningError

STATISTICS = {"grad": "gradients of the loss, summed over the calibration batches",
              "grad_sq": "mean squared gradients (a diagonal Fisher)",
              "input_norm": "the L2 norm of every input feature of Linear and Conv layers",
              "input_mean": "the mean of every input feature of Linear and Conv layers (input_moments)",
              "input_var": "the variance of every input feature of Linear and Conv layers (input_moments)",
              "input_seq_abs": "the (batch L2, sequence mean) of |input| per feature (input_moments)"}


def stat(stats: Mapping[str, torch.Tensor], key: str, criterion: str) -> torch.Tensor:
    """``stats[key]``, or a :class:`PruningError` that says why it is missing and what to do."""
    if key not in stats:
        raise PruningError(f"criterion {criterion!r} needs {STATISTICS[key]}, and a tensor has none: it does not "
                           "require grad or no calibration batch reached it; unfreeze it, pass ignore=[...] for "
                           "its layer, or choose a weight-only criterion such as 'l2'")
    return stats[key].float()
