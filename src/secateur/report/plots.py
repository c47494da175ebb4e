"""Report figures as PNG bytes (matplotlib, the ``plots`` extra): stages, latency with its spread,
sensitivity curves, units kept per layer, and the input-feature importance map."""

from __future__ import annotations

import io

from ..deps import require
from .text import LATENCY, timing


def _pyplot():
    matplotlib = require("matplotlib", "report plots")
    matplotlib.use("Agg")
    return require("matplotlib.pyplot", "report plots")


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    _pyplot().close(fig)
    return buffer.getvalue()


def stages(report: dict) -> bytes:
    """Accuracy, MACs and file size of every stage, and latency with its interquartile range."""
    plt = _pyplot()
    names = [s["name"] for s in report["stages"]]
    metrics = [s["metrics"] for s in report["stages"]]
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    panels = [("accuracy (%)", [100 * m.get("accuracy", 0) for m in metrics]),
              ("MACs per sample", [m["macs"] for m in metrics]),
              ("ONNX file (KB)", [m["file_bytes"] / 1024 for m in metrics])]
    for ax, (title, values) in zip(axes, panels, strict=False):
        ax.bar(names, values, color="#4c72b0")
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=30)
    ax, xs = axes[3], range(len(names))
    for offset, (engine, label) in zip((-0.2, 0.2), LATENCY.items(), strict=True):
        times = [timing(m, engine) for m in metrics]
        err = [[t.median - t.p25 for t in times], [t.p75 - t.median for t in times]]
        ax.bar([x + offset for x in xs], [t.median for t in times], 0.4, yerr=err, capsize=3, label=label)
    ax.set_xticks(list(xs), names, rotation=30)
    ax.set_title("latency (median, IQR)")
    ax.legend(fontsize=8)
    return _png(fig)


def curves(sensitivity: dict) -> bytes:
    """Quality against the fraction of each group removed (one line per group)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for c in sensitivity["curves"]:
        ax.plot(c["ratios"], c["quality"], marker="o", label=c["key"])
    ax.set_xlabel("fraction of the group removed")
    ax.set_ylabel("quality")
    ax.set_title("sensitivity: one group pruned at a time")
    ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def kept(fractions: dict[str, float]) -> bytes:
    """Fraction of units kept per layer."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.35 * len(fractions)))
    ax.barh(list(fractions), list(fractions.values()), color="#55a868")
    ax.set_xlim(0, 1)
    ax.set_title("fraction of units kept per layer")
    return _png(fig)


def importance(values: list) -> bytes:
    """Input-feature importance: a map for 2-D inputs (an 8x8 digit), bars otherwise."""
    import numpy as np

    plt = _pyplot()
    data = np.asarray(values, dtype=float).squeeze()
    fig, ax = plt.subplots(figsize=(4.5, 3.8))
    if data.ndim == 2:
        fig.colorbar(ax.imshow(data, cmap="viridis"), ax=ax)
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        ax.bar(range(data.size), data.flatten())
    ax.set_title("input-feature importance |x * grad|")
    return _png(fig)
