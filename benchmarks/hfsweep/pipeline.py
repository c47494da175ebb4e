"""One model type through one tool: build, run dense, prune 50%, check the pruned model, reload it.

Each stage that fails stops the record with its outcome class (see ``outcome.py``).
"""

from __future__ import annotations

import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from . import with_secateur, with_tp
from .build import DenseError, class_name, tiny
from .outcome import BROKEN, CANNOT_BUILD, CANNOT_RUN, NOTHING, RELOAD, Record, Stop
from .with_tp import _leaves

TOOLS = {with_secateur.TOOL: with_secateur, with_tp.TOOL: with_tp, "dense": None}  # dense: build and run only
EXACT = 1e-6  # reloaded outputs must match the pruned model's to this (relative to their scale)


@contextmanager
def stage(record: Record, name: str, outcome: str, classify=None):
    """Run a stage; an exception fails ``record`` with ``outcome`` (or ``classify(exc)``) and stops the run."""
    record.enter(name)
    try:
        yield
    except Stop:
        raise
    except Exception as exc:
        record.fail(name, classify(exc) if classify else outcome, exc)
        raise Stop from exc


def outputs(model: nn.Module, inputs: dict, grad: bool = False) -> list[torch.Tensor]:
    """The float tensors of one seeded forward pass."""
    torch.manual_seed(0)
    with torch.set_grad_enabled(grad):
        return _leaves(model(**inputs))


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def gap(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """The largest difference between two output lists, relative to their scale (inf if shapes differ)."""
    if [t.shape for t in a] != [t.shape for t in b]:
        return float("inf")
    diffs = [((x - y).abs().max() / (x.abs().max() + 1)).item() for x, y in zip(a, b, strict=True) if x.numel()]
    return max(diffs, default=0.0)


def check_pruned(record: Record, model: nn.Module, inputs: dict, shapes: list) -> list[torch.Tensor]:
    """Forward and backward run, output shapes are the dense ones, parameters fell."""
    record.params_after = params(model)
    outs = outputs(model, inputs, grad=True)
    if [tuple(t.shape) for t in outs] != shapes:
        raise ValueError(f"output shapes changed: {shapes[:3]} -> {[tuple(t.shape) for t in outs][:3]}")
    loss = sum(t.float().mean() for t in outs if t.requires_grad)
    if not isinstance(loss, torch.Tensor):
        raise ValueError("no output depends on the weights: nothing to back-propagate")
    loss.backward()
    if record.params_after >= record.params_before:
        raise ValueError(f"parameters did not fall ({record.params_before} -> {record.params_after})")
    return [t.detach() for t in outs]


def check_reload(record: Record, tool, model: nn.Module, make, inputs: dict, expected: list) -> None:
    """The tool's save/load gives the same outputs; so does ``from_pretrained`` where the config says it can."""
    with tempfile.TemporaryDirectory() as tmp:
        loaded = tool.save_load(model, make, Path(tmp)).eval()
        if (g := gap(outputs(loaded, inputs), expected)) > EXACT:
            raise ValueError(f"reloaded outputs differ by {g:.3g}")
        if tool is with_secateur:
            record.notes["from_pretrained"] = _pretrained(model, Path(tmp), inputs, expected)


def _pretrained(model: nn.Module, folder: Path, inputs: dict, expected: list) -> str:
    if gaps := with_secateur.config_gaps(folder):
        return f"config cannot express: {', '.join(gaps)}"
    again = type(model).from_pretrained(folder).float().eval()  # the folder secateur.save wrote
    if (g := gap(outputs(again, inputs), expected)) > EXACT:
        raise ValueError(f"from_pretrained outputs differ by {g:.3g}")
    return "exact"


def _prune(record: Record, tool, model: nn.Module, inputs: dict) -> None:
    if tool is with_secateur:
        with stage(record, "analyze", "", tool.classify):
            found = tool.analyze(model, inputs)
        record.notes.update(found)
        if not found["prunable"]:
            record.fail("analyze", NOTHING, found["reason"] or "no coupled groups")
            raise Stop
    with stage(record, "prune", "", tool.classify):
        tool.prune50(model, inputs)
    if tool is with_tp and params(model) == record.params_before:
        record.fail("prune", NOTHING, "Torch-Pruning removed nothing")
        raise Stop


def run(model_type: str, tool_name: str, progress=None) -> Record:
    """The full pipeline for one model type and one tool; never raises. ``progress(stage)`` hears each stage."""
    start, tool = time.perf_counter(), TOOLS[tool_name]
    record = Record(model_type, tool_name, progress=progress)
    try:
        with stage(record, "build", CANNOT_BUILD, lambda e: CANNOT_RUN if isinstance(e, DenseError) else CANNOT_BUILD):
            record.model_class = class_name(model_type)
            made = tiny(model_type)
            make, model, inputs = made.make, made.model, made.inputs
        with stage(record, "dense", CANNOT_RUN):
            shapes = [tuple(t.shape) for t in outputs(model, inputs)]
        record.inputs, record.params_before = sorted(inputs), params(model)
        record.notes["variant"] = made.variant
        if tool is None:
            raise Stop
        _prune(record, tool, model, inputs)
        with stage(record, "check", BROKEN):
            expected = check_pruned(record, model.eval(), inputs, shapes)
        with stage(record, "reload", RELOAD):
            check_reload(record, tool, model, make, inputs, expected)
        record.stage = "done"
    except Stop:
        pass
    record.seconds = round(time.perf_counter() - start, 2)
    return record
