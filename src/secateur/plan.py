"""A pruning plan is data: whole blocks removed, indices cut from tensor dimensions, and keep-masks.

It is what ``prune`` did, what ``analyze`` shows before anything changes, what ``save`` records and
what ``load`` replays. ``apply(model, plan)`` is the one way a plan changes a model: ``prune``, dry
runs, latency measurement and ``load`` all go through it. Every model a plan is applied to keeps its history of
plans outside the model (``history``), so ``save(model, dir)`` records them without being told.
"""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .adapters import sync_attention, update_config
from .depth import remove_blocks
from .errors import ModelFileError
from .masks import apply_mask
from .replacement import replace_modules
from .surgery import add_bias, apply_cuts, owner

FORMAT, VERSION = "secateur.plan", 2  # 2: replacements (a plan without any is still written as version 1)
_HISTORY: weakref.WeakKeyDictionary[nn.Module, list[Plan]] = weakref.WeakKeyDictionary()


def mask_digest(mask: torch.Tensor) -> str:
    """SHA-256 of a keep-mask's shape and packed bits (a mask's identity in ``Plan.to_dict``)."""
    bits = np.packbits(mask.detach().flatten().cpu().numpy().astype(bool)).tobytes()
    return hashlib.sha256(repr(tuple(mask.shape)).encode() + bits).hexdigest()


@dataclass
class Plan:
    """``blocks``: whole blocks removed (named before removal); ``replacements``: modules swapped for an
    equivalent one whose sizes may shrink (``replacement.py``; named after the blocks went);
    ``biases``: layers given a bias (zeros, before the cuts; e.g. FLAP's compensation; their values live in
    the weights); ``cuts[tensor][dim]``: indices removed (coordinates after the blocks went and the
    swaps); ``masks[tensor]``: boolean keep-masks."""

    cuts: dict[str, dict[int, list[int]]] = field(default_factory=dict)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    blocks: list[str] = field(default_factory=list)
    biases: list[str] = field(default_factory=list)
    replacements: list[str] = field(default_factory=list)

    def add_cut(self, tensor: str, dim: int, indices: list[int]) -> None:
        """Record that ``indices`` leave dimension ``dim`` of ``tensor`` (merged with earlier cuts)."""
        dims = self.cuts.setdefault(tensor, {})
        dims[dim] = sorted(set(dims.get(dim, [])) | set(indices))

    def is_empty(self) -> bool:
        return (not any(i for dims in self.cuts.values() for i in dims.values()) and not self.masks and not self.blocks
                and not self.biases and not self.replacements)

    def sparsity(self) -> dict[str, float]:
        """The fraction of each masked tensor that its mask zeroes."""
        return {name: 1.0 - float(m.float().mean()) for name, m in self.masks.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: blocks, cuts, and for each mask its shape, sparsity and digest (the bits live in
        the weights file)."""
        cuts = {t: {str(d): list(i) for d, i in dims.items() if i} for t, dims in self.cuts.items()}
        masks = {n: {"shape": list(m.shape), "sparsity": round(1.0 - float(m.float().mean()), 8),
                     "sha256": mask_digest(m)} for n, m in self.masks.items()}
        data = {"format": FORMAT, "version": VERSION if self.replacements else 1, "blocks": list(self.blocks),
                "cuts": {t: d for t, d in cuts.items() if d}, "masks": masks}
        data |= {"biases": list(self.biases)} if self.biases else {}
        return data | ({"replacements": list(self.replacements)} if self.replacements else {})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        """The blocks and cuts of a recorded plan (mask bits are not in the record: see ``load``)."""
        version = data.get("version", 1) if isinstance(data, dict) else None
        if type(version) is not int or not 1 <= version <= VERSION or data.get("format", FORMAT) != FORMAT:
            raise ModelFileError(f"not a secateur plan of version <= {VERSION}: {str(data)[:120]}")
        try:
            cuts = {str(t): {int(d): [int(i) for i in idx] for d, idx in dims.items()}
                    for t, dims in data.get("cuts", {}).items()}
            return cls(cuts=cuts, blocks=[str(b) for b in data.get("blocks", [])],
                       biases=[str(b) for b in data.get("biases", [])],
                       replacements=[str(r) for r in data.get("replacements", [])])
        except (AttributeError, TypeError, ValueError) as err:
            raise ModelFileError(f"a recorded plan is malformed ({err}); the manifest is damaged") from None


def history(model: nn.Module) -> list[Plan]:
    """The plans applied to ``model`` so far (by ``prune``, ``apply`` or ``load``), oldest first."""
    return list(_HISTORY.get(model, []))


def record(model: nn.Module, plan: Plan) -> None:
    """Append ``plan`` to ``model``'s history."""
    _HISTORY.setdefault(model, []).append(plan)


def forget(model: nn.Module) -> None:
    """Clear ``model``'s history (e.g. after ``unmask`` or before reusing an instance as a fresh base)."""
    _HISTORY.pop(model, None)


def apply(model: nn.Module, plan: Plan, *, remember: bool = True) -> nn.Module:
    """Remove ``plan``'s blocks, swap its replaced modules, add its biases, slice its cuts (attention bookkeeping
    and the Hugging Face config follow), and mask its masked weights; in place. ``remember`` records the plan in
    the model's history, which ``save`` writes.

    >>> import torch, secateur as sc
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> plan = sc.Plan(cuts={"0.weight": {0: [0, 1]}, "0.bias": {0: [0, 1]}, "2.weight": {1: [0, 1]}})
    >>> apply(net, plan)[0].out_features
    6
    """
    if plan.blocks:
        remove_blocks(model, plan.blocks)
    replace_modules(model, plan.replacements)
    for name in plan.biases:
        add_bias(model.get_submodule(name))
    if plan.cuts:
        apply_cuts(model, plan.cuts)
    if plan.blocks or plan.cuts or plan.biases:
        sync_attention(model)
        update_config(model)
    for name, keep in plan.masks.items():
        module, leaf = owner(model, name)
        apply_mask(module, keep, leaf)
    if remember:
        record(model, plan)
    return model
