"""Activation-based importance of Minitron (Muralidharan et al. 2024, "Compact Language Models via Pruning
and Knowledge Distillation", Sec. 2.2): every unit is scored by the activations it produces on calibration
data, aggregated with the paper's best choice: the mean of ``|a|`` over a sample's positions, then the L2
norm over samples."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Criterion, GroupWeights, register_criterion
from .magnitude import Magnitude


@register_criterion
@dataclass(frozen=True)
class Minitron(Criterion):
    """Units only. A unit's activations are what its consumers read: an FFN neuron is a column of the down
    projection (its activation ``act(x W_gate) * x W_up``, the paper's ``F_neuron``), a head its slice of
    the attention output that o_proj reads (``F_head``; aggregated per channel, then over the head's
    channels), a hidden channel the LayerNorm / RMSNorm outputs that q/k/v and the FFN read (``F_emb``;
    a tensor read by several layers counts once). The score of a unit is
    ``sqrt(sum_channels mean_samples (mean_positions |a|)**2)``. Groups no Linear or Conv reads (nothing to
    measure) fall back to the L2 magnitude.

    >>> Minitron().needs
    frozenset({'input_moments'})
    """

    name = "minitron"
    needs = frozenset({"input_moments"})
    units_only = True

    def unit_scores(self, group: GroupWeights) -> torch.Tensor:
        seen: set[int] = set()
        total = torch.zeros(group.size)
        for member, _, values in group.inputs("input_seq_abs"):
            if (key := (id(values), member.indices([0])[0])) not in seen:  # q/k/v read one tensor: count it once
                seen.add(key)
                total += group.unit_values(values, member).sum(1).cpu()
        return total.sqrt() if seen else Magnitude().unit_scores(group)
