"""Helpers shared by the benchmarks: timing, peers, output-layer detection, Markdown tables."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch
from torch import nn

from secateur import analyze
from secateur.inputs import Inputs


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def output_layers(model: nn.Module, inputs: object) -> list[nn.Module]:
    """Layers whose outputs are model outputs: a peer must be told to leave them alone."""
    mods = dict(model.named_modules())
    names = {m for m, why in analyze(model, inputs).skipped_modules.items() if why == "tied to a model output"}
    return [mods[n] for n in names if n in mods and isinstance(mods[n], nn.Linear | nn.modules.conv._ConvNd)]


def runs_like(model: nn.Module, inputs: Inputs, shapes: list) -> str:
    """'yes' if the pruned model runs with the dense output shapes, else the error in a few words."""
    try:
        return "yes" if inputs.output_shapes(model.eval()) == shapes else "wrong output shape"
    except Exception as exc:  # report any failure of a pruned model
        return f"fails: {type(exc).__name__}: {str(exc).splitlines()[0][:60]}"


def torch_pruning(model: nn.Module, inputs: Inputs, ratio: float, heads_only: bool = False) -> None:
    """Torch-Pruning's MetaPruner with L2 magnitude, as its README shows; output layers ignored."""
    import torch_pruning as tp

    example = inputs.kwargs if inputs.kwargs else inputs.args[0] if len(inputs.args) == 1 else inputs.args
    kwargs = {}
    if heads_only:  # its documented way to prune attention heads: name the q/k/v layers and their heads
        heads = {}
        for m in model.modules():
            if hasattr(m, "num_attention_heads") and hasattr(m, "query"):
                heads.update(dict.fromkeys((m.query, m.key, m.value), m.num_attention_heads))
        kwargs = {"num_heads": heads, "prune_num_heads": True, "prune_head_dims": False, "head_pruning_ratio": ratio}
        ratio = 0.0
    first = lambda out: out[0] if isinstance(out, tuple | list) or hasattr(out, "to_tuple") else out  # noqa: E731
    pruner = tp.pruner.MetaPruner(model, example, tp.importance.MagnitudeImportance(p=2), pruning_ratio=ratio,
                                  ignored_layers=output_layers(model, inputs), output_transform=first, **kwargs)
    pruner.step()


def table(rows: list[dict]) -> str:
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
    return "\n".join(lines)


def set_threads(n: int = 2) -> None:
    """``n`` threads, or ``SECATEUR_BENCH_THREADS`` (two runs side by side on 2 cores: 1 each, no oversubscription)."""
    torch.set_num_threads(int(os.environ.get("SECATEUR_BENCH_THREADS", n)))
