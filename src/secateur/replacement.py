"""Module replacement: swap a module whose own code blocks every cut for an equivalent one that does not.

``nn.MultiheadAttention`` asserts its widths, so no plan may narrow it; :class:`SplitMultiheadAttention`
computes the same function from separate layers. A plan lists the modules it swapped
(``Plan.replacements``) and ``apply`` swaps them before its cuts, so ``load`` replays the swap on a fresh
dense model. The planner decides the swaps before it captures the graph, and plans on a *subject*
(:func:`swapped`): the user's model with the swapped modules on copies of their parents, every other
module and tensor shared, so nothing of the user's model changes until a plan is applied.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import nn

from .errors import PruningError
from .methods.base import match
from .split_attention import SplitMultiheadAttention


def _mha_refusal(mha: nn.Module) -> str | None:
    """What of an ``nn.MultiheadAttention`` the split module cannot reproduce exactly."""
    extras = [name for name, on in (("add_bias_kv", mha.bias_k is not None), ("add_zero_attn", mha.add_zero_attn))
              if on]
    if extras:
        return (f"nn.MultiheadAttention with {' and '.join(extras)} is kept whole (its code asserts its widths; "
                "secateur's equivalent module does not reproduce this option)")
    return None


# module type -> (why an instance cannot be swapped exactly, or None; its equivalent module)
REPLACEMENTS: dict[type[nn.Module], tuple[Callable[[nn.Module], str | None], Callable[[nn.Module], nn.Module]]] = {
    nn.MultiheadAttention: (_mha_refusal, SplitMultiheadAttention.from_mha)}
REPLACED: tuple[type[nn.Module], ...] = (SplitMultiheadAttention,)


def refusal(module: nn.Module) -> str | None:
    """Why ``module`` cannot be swapped (None when it can).

    >>> refusal(nn.MultiheadAttention(8, 2)) is None, refusal(nn.Linear(2, 2))
    (True, 'Linear has no equivalent module')
    """
    entry = REPLACEMENTS.get(type(module))
    if entry is None:
        return f"{type(module).__name__} has no equivalent module"
    return entry[0](module)


def candidates(model: nn.Module, ignore: tuple[str, ...] = ()) -> tuple[list[str], dict[str, str]]:
    """Modules of ``model`` to swap before planning, and those kept whole with the reason (``ignore=``
    patterns keep a module as it is)."""
    names, kept = [], {}
    for name, module in model.named_modules():
        if not name or type(module) not in REPLACEMENTS:  # a model that is the module itself has nothing around it
            continue
        why = "matches ignore=" if match(name, ignore) else refusal(module)
        if why is None:
            names.append(name)
        else:
            kept[name] = why
    return names, kept


def replace_modules(model: nn.Module, names: list[str]) -> nn.Module:
    """Swap each named module for its equivalent, in place (one already swapped is left as it is).

    >>> net = nn.Sequential(nn.MultiheadAttention(8, 2))
    >>> type(replace_modules(net, ["0"])[0]).__name__
    'SplitMultiheadAttention'
    """
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise PruningError(f"the plan swaps module {name!r}, which this model does not have: was the plan "
                               "made for another architecture?") from None
        if isinstance(module, REPLACED):
            continue
        why = refusal(module)
        if why is not None:
            raise PruningError(f"the plan swaps module {name!r}, but {why}")
        _set(model, name, REPLACEMENTS[type(module)][1](module))
    return model


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def swapped(model: nn.Module, names: list[str]) -> nn.Module:
    """``model`` with the named modules swapped, without changing ``model``: the swapped modules' ancestors
    are shallow copies, every other module and tensor is shared (``model`` itself when ``names`` is empty)."""
    if not names:
        return model
    clones: dict[str, nn.Module] = {}

    def clone(path: str) -> nn.Module:
        if path not in clones:
            original = model.get_submodule(path) if path else model
            clones[path] = copy.copy(original)
            clones[path]._modules = dict(original._modules)
            if path:
                parent, _, leaf = path.rpartition(".")
                clone(parent)._modules[leaf] = clones[path]
        return clones[path]

    for name in names:
        clone(name.rpartition(".")[0])
    return replace_modules(clone(""), names)


def replaced_modules(model: nn.Module) -> list[str]:
    """Names of the modules of ``model`` that a plan swapped (``save`` cannot describe them to transformers)."""
    return [name for name, m in model.named_modules() if isinstance(m, REPLACED)]
