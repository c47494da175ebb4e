"""A run's report: ``report.json`` (the data), ``report.md``, a self-contained ``report.html`` with plots,
``report.png``, and an 80-column table for the terminal."""

from __future__ import annotations

import json
from pathlib import Path

from ..io.output import OutputFolder, output_folder
from .html import to_html
from .text import table, to_markdown


def write_report(report: dict, out: str | Path | OutputFolder, with_plot: bool = True) -> list[Path]:
    """Write ``report.json``, ``report.md``, ``report.html`` and (with ``with_plot``) ``report.png`` into ``out``
    (a folder path, or an open :class:`~secateur.io.OutputFolder`)."""
    with output_folder(out) as folder:
        paths = [folder.write_text("report.json", json.dumps(report, indent=1)),
                 folder.write_text("report.md", to_markdown(report)),
                 folder.write_text("report.html", to_html(report))]
        if with_plot:
            from . import plots

            paths.append(folder.write_bytes("report.png", plots.stages(report)))
    return paths


def print_table(report: dict) -> None:
    """Print the stage table (fits 80 columns) and any latency warning."""
    from .text import warnings

    print(table(report))
    for w in warnings(report):
        print(f"warning: {w}")


__all__ = ["print_table", "table", "to_html", "to_markdown", "write_report"]
