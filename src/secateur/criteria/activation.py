"""Activation-aware magnitude (as in Wanda, Sun et al. 2024): ``|w| * ||x_j||`` for input feature ``j``."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Criterion, register_criterion


@register_criterion
@dataclass(frozen=True)
class Activation(Criterion):
    """``|w_ij| * ||x_j||_2`` over the calibration inputs of Linear and ungrouped Conv layers; ``|w|`` for
    tensors without input statistics (biases, norms)."""

    name = "activation"
    needs = frozenset({"input_norm"})

    def saliency(self, weight, stats):
        w = weight.detach().float().abs()
        norm = stats.get("input_norm")
        if norm is None or w.dim() < 2:
            return w
        dim = int(stats.get("input_dim", 1))  # 0 for a Hugging Face Conv1D, stored (in, out)
        shape = [1] * w.dim()
        shape[dim] = -1
        return w * norm.to(w.device).view(shape)
