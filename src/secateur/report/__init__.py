"""A run's report: ``report.json`` (the data), ``report.md``, a self-contained ``report.html`` with plots,
``report.png``, and an 80-column table for the terminal."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .html import to_html
from .text import table, to_markdown


def _write(path: Path, data: str | bytes) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
    return path


def write_report(report: dict, out: str | Path, with_plot: bool = True) -> list[Path]:
    """Write ``report.json``, ``report.md``, ``report.html`` and (with ``with_plot``) ``report.png``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [_write(out / "report.json", json.dumps(report, indent=1)), _write(out / "report.md", to_markdown(report)),
             _write(out / "report.html", to_html(report))]
    if with_plot:
        from . import plots

        paths.append(_write(out / "report.png", plots.stages(report)))
    return paths


def print_table(report: dict) -> None:
    """Print the stage table (fits 80 columns) and any latency warning."""
    from .text import warnings

    print(table(report))
    for w in warnings(report):
        print(f"warning: {w}")


__all__ = ["print_table", "table", "to_html", "to_markdown", "write_report"]
