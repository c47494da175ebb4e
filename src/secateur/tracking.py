"""Metrics of each stage (prune, fine-tune, evaluation) to TensorBoard or to your own function.

A tracker is anything with ``log(metrics, step)``. :class:`TensorBoard` writes event files (it needs
the ``tensorboard`` package, ``pip install 'secateur[log]'``); a plain function ``fn(metrics, step)``
is a tracker too, so any other service (Weights & Biases, MLflow, a CSV) is one line away.
``finetune(log=...)`` logs every optimizer step and epoch; recipes log every stage.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .errors import InvalidParameterError, MissingDependencyError

if TYPE_CHECKING:
    from .io.output import OutputFolder


class Tracker(Protocol):
    def log(self, metrics: Mapping[str, float], step: int) -> None: ...


def tensorboard_available() -> bool:
    """True when the ``tensorboard`` package is installed."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


class TensorBoard:
    """Scalars into TensorBoard event files under ``log_dir`` (view with ``tensorboard --logdir DIR``).

    >>> import tempfile
    >>> tb = TensorBoard(tempfile.mkdtemp())
    >>> tb.log({"finetune/loss": 2.5}, step=1); tb.close()
    """

    def __init__(self, log_dir: str | os.PathLike) -> None:
        if not tensorboard_available():
            raise MissingDependencyError("logging to TensorBoard needs the tensorboard package: "
                                         "pip install 'secateur[log]'")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir))

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for key, value in flat(metrics).items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


@dataclass
class Trackers:
    """Several trackers as one; a function ``fn(metrics, step)`` counts as a tracker."""

    members: list[Any] = field(default_factory=list)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for member in self.members:
            (member.log if hasattr(member, "log") else member)(dict(metrics), step)


def as_tracker(log: Tracker | Callable | list | None) -> Trackers:
    """``None``, a tracker, a function ``fn(metrics, step)`` or a list of them, as one tracker."""
    members = [] if log is None else list(log) if isinstance(log, list | tuple) else [log]
    for m in members:
        if not (hasattr(m, "log") or callable(m)):
            raise InvalidParameterError(f"log= takes a tracker (with .log(metrics, step)), a function fn(metrics, "
                                        f"step) or a list of them; got {type(m).__name__}")
    return Trackers(members)


def flat(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric values of a nested mapping, keys joined by '/' (strings and lists are left out).

    >>> flat({"pruned": {"params": 10, "latency_ms": {"torch": 1.5}, "sample": "text"}})
    {'pruned/params': 10.0, 'pruned/latency_ms/torch': 1.5}
    """
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out |= flat(value, f"{name}/")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def masked_sparsity(model: Any) -> float:
    """The zero fraction of every masked weight together (0.0 with no masks).

    >>> import torch; from secateur.masks import apply_mask
    >>> lin = torch.nn.Linear(2, 2); apply_mask(lin, torch.tensor([[True, False], [True, True]]))
    >>> masked_sparsity(lin)
    0.25
    """
    from .masks import masked_modules

    weights = [m.weight for m in masked_modules(model).values()]
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / total if total else 0.0


def prune_metrics(result: Any) -> dict[str, float]:
    """The figures of a :class:`~secateur.PruneResult` worth plotting.

    >>> import torch, secateur as sc
    >>> net = torch.nn.Linear(4, 4)
    >>> result = sc.prune(net, sc.Unstructured(0.5), example_inputs=torch.ones(1, 4))
    >>> prune_metrics(result)["nonzero_after"]  # 8 weights + 4 biases
    12.0
    """
    return flat({"params_before": result.params_before, "params_after": result.params_after,
                 "nonzero_before": result.nonzero_before, "nonzero_after": result.nonzero_after,
                 "macs_before": result.macs_before or 0, "macs_after": result.macs_after or 0,
                 "seconds": result.seconds})


def recipe_tracker(setting: Any, out: OutputFolder) -> Trackers:
    """The tracker a recipe's ``log:`` asks for: TensorBoard under ``<out>/tensorboard`` when ``tensorboard``
    is true, or when it is unset and the package is installed."""
    wanted = setting.tensorboard if setting.tensorboard is not None else tensorboard_available()
    return as_tracker(TensorBoard(out.directory("tensorboard")) if wanted else None)
