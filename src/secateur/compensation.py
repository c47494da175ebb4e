"""Bias compensation (FLAP, An et al. 2024, Sec. 3.3): a removed input channel ``j`` of a layer ``y = W x + b``
no longer adds ``W[:, j] x_j``; adding its mean ``W[:, j] E[x_j]`` to ``b`` keeps the layer's output right on
average. Applied to the layers that read pruned heads or FFN channels (o_proj, down_proj), with the input
means streamed during calibration; never to the hidden size (its readers sit behind a normalisation).
"""

from __future__ import annotations

import torch
from torch import nn

from .adapters import bias_layers
from .graph import Group
from .plan import Plan


def _reads_features(module: nn.Module | None) -> bool:
    return isinstance(module, nn.Linear) or (type(module).__name__ == "Conv1D" and hasattr(module, "nf"))


def _readers(model: nn.Module, groups: list[Group], plan: Plan) -> list[tuple[str, object, list[int]]]:
    """``(layer, member, input channels cut)`` for every Linear that reads removed heads or channels."""
    modules = dict(model.named_modules())
    out = []
    for group in groups:
        for m in group.members if group.kind != "hidden" else []:
            name = m.tensor.removesuffix(".weight")
            if m.role == "in" and _reads_features(modules.get(name)):
                span = set(m.indices(list(range(group.size))))
                cut = sorted(set(plan.cuts.get(m.tensor, {}).get(m.dim, [])) & span)
                if cut:
                    out.append((name, m, cut))
    return out


def bias_shifts(model: nn.Module, groups: list[Group], plan: Plan, stats: dict) -> dict[str, torch.Tensor]:
    """Per layer, ``W[:, removed] @ mean(x[removed])`` over the input channels ``plan`` removes from it.

    >>> from secateur.graph import Member
    >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    >>> _ = nn.init.ones_(net[2].weight)
    >>> group = Group(0, 3, [Member("0.weight", 0), Member("2.weight", 1, role="in")])
    >>> shifts = bias_shifts(net, [group], Plan(cuts={"2.weight": {1: [0, 2]}}),
    ...                      {"2.weight": {"input_mean": torch.tensor([1.0, 5.0, 2.0])}})
    >>> shifts["2"].tolist()
    [3.0]
    """
    shifts: dict[str, torch.Tensor] = {}
    for name, m, cut in _readers(model, groups, plan):
        mean = stats.get(m.tensor, {}).get("input_mean")
        if mean is not None:
            index = torch.tensor(cut)
            columns = model.get_submodule(name).weight.detach().float().index_select(m.dim, index).movedim(m.dim, -1)
            shifts[name] = shifts.get(name, 0) + columns @ mean.float()[index]
    return shifts


def with_biases(model: nn.Module, groups: list[Group], plan: Plan) -> tuple[Plan, dict[str, str]]:
    """``plan`` with the biases compensation needs (``Plan.biases``, cut like their weights' outputs), and
    the layers left uncompensated because the model's Hugging Face config cannot express a bias there."""
    names = sorted({name for name, _, _ in _readers(model, groups, plan)})
    biases, unexpressed = bias_layers(model, names)
    out = Plan(cuts={t: dict(d) for t, d in plan.cuts.items()}, blocks=list(plan.blocks), biases=biases)
    for name in biases:
        rows = plan.cuts.get(f"{name}.weight", {}).get(1 if hasattr(model.get_submodule(name), "nf") else 0, [])
        if rows:
            out.add_cut(f"{name}.bias", 0, rows)
    skipped = {f"bias compensation of {n}": f"the {type(model.config).__name__} cannot express a bias there "
               "(from_pretrained would drop it); pass Flap(compensate=False) to prune without it" for n in unexpressed}
    return out, skipped


def add_shifts(model: nn.Module, plan: Plan, shifts: dict[str, torch.Tensor]) -> None:
    """After ``plan`` was applied, add each shift (rows ``plan`` kept) to its layer's bias (a new tensor)."""
    for name, shift in shifts.items():
        layer = model.get_submodule(name)
        out_dim = 1 if hasattr(layer, "nf") else 0
        keep = torch.ones(shift.numel(), dtype=torch.bool)
        keep[plan.cuts.get(f"{name}.weight", {}).get(out_dim, [])] = False
        bias = layer.bias.detach()
        layer.bias = nn.Parameter(bias + shift[keep].to(bias), requires_grad=layer.bias.requires_grad)
