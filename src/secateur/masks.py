"""Weight masks held as parametrizations: the effective weight is ``original * mask``.

Because the mask multiplies the weight on every forward, pruned weights stay exactly zero whatever
the optimizer does to the stored original (momentum, weight decay, Adam state).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize


class Mask(nn.Module):
    """A fixed 0/1 mask applied to a weight by ``torch.nn.utils.parametrize``."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask.to(weight.dtype)


def find_mask(module: nn.Module, name: str = "weight") -> Mask | None:
    """The :class:`Mask` on ``module.<name>``, or None."""
    if not parametrize.is_parametrized(module, name):
        return None
    return next((p for p in module.parametrizations[name] if isinstance(p, Mask)), None)


def _plain_state(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """``state_dict`` post-hook: a masked tensor appears under its plain name with its masked value, so
    ``save_pretrained``, ``torch.save`` and every other state-dict consumer see an ordinary model."""
    if not parametrize.is_parametrized(module):
        return
    for name in module.parametrizations:
        inner = f"{prefix}parametrizations.{name}."
        for key in [k for k in state_dict if k.startswith(inner)]:
            del state_dict[key]
        state_dict[f"{prefix}{name}"] = getattr(module, name).detach()


def _plain_load(module: nn.Module, state_dict: dict, prefix: str, *_: object) -> None:
    """``load_state_dict`` pre-hook: a plain tensor loads into the masked tensor's stored values; the
    mask stays as it is."""
    if not parametrize.is_parametrized(module):
        return
    for name, plist in module.parametrizations.items():
        if f"{prefix}{name}" in state_dict:
            state_dict[f"{prefix}parametrizations.{name}.original"] = state_dict.pop(f"{prefix}{name}")
            for key, buffer in plist.named_buffers():
                state_dict.setdefault(f"{prefix}parametrizations.{name}.{key}", buffer)


def apply_mask(module: nn.Module, mask: torch.Tensor, name: str = "weight") -> None:
    """Mask ``module.<name>``; an existing mask is intersected with the new one. The module's state dict
    keeps its plain keys (the masked value under ``<name>``), so it saves and loads like any module.

    >>> lin = nn.Linear(2, 1)
    >>> apply_mask(lin, torch.tensor([[True, False]]))
    >>> lin.weight[0, 1].item() == 0, sorted(lin.state_dict())
    (True, ['bias', 'weight'])
    """
    existing = find_mask(module, name)
    if existing is not None:
        existing.mask = existing.mask & mask.to(torch.bool)
        return
    if not parametrize.is_parametrized(module):
        module.register_state_dict_post_hook(_plain_state)
        module.register_load_state_dict_pre_hook(_plain_load)
    parametrize.register_parametrization(module, name, Mask(mask))


def masked_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Modules of ``model`` whose weight carries a :class:`Mask`, by qualified name."""
    return {n: m for n, m in model.named_modules() if find_mask(m) is not None}


def _unparametrize(module: nn.Module) -> None:
    """Fold every parametrization of ``module`` into plain Parameters.

    ``parametrize.remove_parametrizations`` deletes the property from the module's dynamic class,
    which deep copies share; swapping this instance's class back leaves every copy intact.
    """
    values = {name: (getattr(module, name).detach().clone(), plist.original.requires_grad)
              for name, plist in module.parametrizations.items()}
    module.__class__ = module.__class__.__bases__[0]
    del module._modules["parametrizations"]
    for name, (value, grad) in values.items():
        module._parameters[name] = nn.Parameter(value, requires_grad=grad)


def unmask(model: nn.Module) -> list[str]:
    """Fold every mask into its weight (zeros stay zero) and remove the parametrization, in place: the
    model becomes a plain module again (what ONNX export and ``save_pretrained`` want). Returns the
    names of the weights that were masked.

    >>> lin = nn.Linear(2, 1)
    >>> apply_mask(lin, torch.tensor([[True, False]]))
    >>> unmask(lin), lin.weight[0, 1].item() == 0, find_mask(lin) is None
    (['weight'], True, True)
    """
    masked = masked_modules(model)
    for module in masked.values():
        _unparametrize(module)
    return [f"{name}.weight" if name else "weight" for name in masked]


def baked_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with masks folded into plain weights; ``model`` is untouched."""
    frozen = copy.deepcopy(model)
    unmask(frozen)
    return frozen
