"""Every call the sweep makes into secateur: the one place to change when secateur's API moves."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from torch import nn

import secateur as sc

from .outcome import BROKEN, CAPTURE, CRASH, NOTHING

TOOL = "secateur"


def analyze(model: nn.Module, inputs: dict) -> dict:
    """Prunable groups, all groups, the most common reason a group is skipped, and the ops not understood."""
    report = sc.analyze(model, inputs)
    reasons = Counter(g.skipped for g in report.groups if g.skipped)
    return {"prunable": len(report.prunable), "groups": len(report.groups),
            "reason": reasons.most_common(1)[0][0] if reasons else "", "unknown_ops": report.unknown_ops[:5]}


def prune50(model: nn.Module, inputs: dict) -> None:
    """Structured pruning at 50% on the default units, in place."""
    sc.prune(model, sc.Structured(sparsity=0.5), example_inputs=inputs)


def classify(exc: BaseException) -> str:
    """The outcome class of an exception raised by ``analyze`` or ``prune50``."""
    if isinstance(exc, sc.GraphCaptureError):
        return CAPTURE
    nothing = ("no prunable groups", "removes nothing", "refuses every selected group")
    if isinstance(exc, sc.PruningError) and any(text in str(exc) for text in nothing):
        return NOTHING
    return BROKEN if isinstance(exc, sc.SecateurError) else CRASH


def save_load(model: nn.Module, make: Callable[[], nn.Module], directory: Path) -> nn.Module:
    """Save the pruned model and load it back onto a fresh dense instance from ``make``."""
    sc.save(model, directory)
    return sc.load(directory, base=make)


def config_gaps(directory: Path) -> list[str]:
    """Why ``from_pretrained`` cannot load the saved folder (empty: secateur wrote a Hugging Face checkpoint)."""
    manifest = json.loads((directory / "manifest.json").read_text())
    if manifest["kind"] == "huggingface":
        return []
    return [(manifest.get("huggingface") or {}).get("reason") or "not a Hugging Face model"]
