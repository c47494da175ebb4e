"""Torch-Pruning on the same sweep: MetaPruner, L2 magnitude, 50%, its default handling; output layers ignored."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils import _pytree as pytree

from .outcome import CAPTURE, CRASH

TOOL = "torch-pruning"


def _leaves(out: object) -> list[torch.Tensor]:
    out = out.to_tuple() if hasattr(out, "to_tuple") else out
    return [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor) and t.is_floating_point()]


def output_layers(model: nn.Module, inputs: dict) -> list[nn.Module]:
    """Leaf modules with weights whose output tensor is (a view of) a model output."""
    made: dict[int, nn.Module] = {}

    def hook(module: nn.Module, _args: object, out: object) -> None:
        for t in _leaves(out):
            made.setdefault(t.untyped_storage().data_ptr(), module)

    leaves = [m for m in model.modules() if not list(m.children()) and list(m.parameters(recurse=False))]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            outputs = _leaves(model(**inputs))
    finally:
        for h in handles:
            h.remove()
    found = {made[p] for t in outputs if (p := t.untyped_storage().data_ptr()) in made}
    return [m for m in leaves if m in found]


class TPStepError(RuntimeError):
    """Torch-Pruning failed after its graph was built (while choosing or cutting channels)."""


def prune50(model: nn.Module, inputs: dict) -> None:
    """Torch-Pruning's MetaPruner at 50% (its README's recipe), every model output traced for the graph."""
    import torch_pruning as tp

    total = lambda out: sum(t.sum() for t in _leaves(out))  # noqa: E731  every output reaches the graph
    pruner = tp.pruner.MetaPruner(model, inputs, tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5,
                                  ignored_layers=output_layers(model, inputs), output_transform=total)
    try:
        pruner.step()
    except Exception as exc:
        raise TPStepError(f"{type(exc).__name__}: {exc}") from exc


def classify(exc: BaseException) -> str:
    """Building Torch-Pruning's dependency graph is its capture; any later exception is a crash."""
    return CRASH if isinstance(exc, TPStepError) else CAPTURE


def save_load(model: nn.Module, make: Callable[[], nn.Module], directory: Path) -> nn.Module:
    """Torch-Pruning's documented way: pickle the whole pruned model (``make`` is not needed; loading runs code)."""
    path = directory / "tp.pth"
    torch.save(model, path)
    return torch.load(path, weights_only=False)
