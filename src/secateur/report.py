"""Write a run's report as JSON, Markdown and a PNG plot, and print it as a table."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .io.output import OutputFolder, output_folder

COLUMNS = ("accuracy", "params", "non-zero", "MACs", "ONNX bytes", "torch ms", "ORT ms")


def _row(stage: dict, dense: dict) -> list[str]:
    m, d = stage["metrics"], dense["metrics"]
    ratio = lambda k: f" ({m[k] / d[k]:.2f}x)" if d[k] else ""  # noqa: E731
    lat = lambda k: f"{m['latency_ms'][k]:.2f} ({m['latency_ms'][k] / d['latency_ms'][k]:.2f}x)"  # noqa: E731
    return [stage["name"], f"{100 * m['accuracy']:.2f}%", f"{m['params']:,}{ratio('params')}",
            f"{m['nonzero_params']:,}{ratio('nonzero_params')}",
            f"{m['macs']:,}{ratio('macs')}", f"{m['file_bytes']:,}{ratio('file_bytes')}", lat("torch"),
            lat("onnxruntime")]


def rows(report: dict) -> list[list[str]]:
    """One row of formatted cells per stage, ratios against the dense stage."""
    dense = report["stages"][0]
    return [_row(s, dense) for s in report["stages"]]


def to_markdown(report: dict) -> str:
    """The report as a Markdown document."""
    head = ["stage", *COLUMNS]
    lines = [f"# secateur report: {report['recipe']['name']}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows(report)]
    lines += ["", *(f"- **{k}**: {v}" for k, v in report["notes"].items())]
    kept = (report.get("interpretability") or {}).get("kept_fraction")
    if kept:
        lines += ["", "Units kept per layer (importance scores per unit are in report.json; input-feature "
                  "importance in importance.png):", *(f"- `{k}`: {v:.0%}" for k, v in kept.items())]
    if report.get("prune"):
        p = report["prune"]
        lines += ["", f"Pruned with `{p['method']['method']}`: {len(p['groups'])} coupled groups considered."]
        lines += [f"- `{g}`" for g in p["groups"]]
    env = report["environment"]
    lines += ["", f"torch {env['torch']}, {env['threads']} threads, {env['machine']}, Python {env['python']}."]
    return "\n".join(lines) + "\n"


def print_table(report: dict, console: Console | None = None) -> None:
    """Print the before/after table to the terminal."""
    table = Table(title=f"secateur: {report['recipe']['name']}")
    for c in ("stage", *COLUMNS):
        table.add_column(c, justify="left" if c == "stage" else "right")
    for r in rows(report):
        table.add_row(*r)
    (console or Console()).print(table)


def plot(report: dict, path: Path) -> None:
    """Bar charts of accuracy, MACs, ONNX bytes and latency for every stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = report["stages"]
    names = [s["name"] for s in stages]
    get = lambda f: [f(s["metrics"]) for s in stages]  # noqa: E731
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    panels = [("test accuracy (%)", get(lambda m: 100 * m["accuracy"])), ("MACs per sample", get(lambda m: m["macs"])),
              ("ONNX file (KB)", get(lambda m: m["file_bytes"] / 1024))]
    for ax, (title, values) in zip(axes, panels, strict=False):
        ax.bar(names, values, color="#4c72b0")
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=30)
    ax = axes[3]
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], get(lambda m: m["latency_ms"]["torch"]), 0.4, label="torch")
    ax.bar([x + 0.2 for x in xs], get(lambda m: m["latency_ms"]["onnxruntime"]), 0.4, label="onnxruntime")
    ax.set_xticks(list(xs), names, rotation=30)
    ax.set_title("latency (ms)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict, out: str | Path | OutputFolder, with_plot: bool = True) -> list[Path]:
    """Write ``report.json``, ``report.md`` and (optionally) ``report.png`` into ``out`` (a folder path, or an
    open :class:`~secateur.io.OutputFolder`)."""
    with output_folder(out) as folder:
        paths = [folder.write_text("report.json", json.dumps(report, indent=1)),
                 folder.write_text("report.md", to_markdown(report))]
        if with_plot:
            paths.append(folder.path("report.png"))
            plot(report, paths[-1])
    return paths
