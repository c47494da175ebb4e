"""A self-contained HTML report (tables and inline PNG plots; no script, no network)."""

from __future__ import annotations

import base64
import html

from . import plots
from .text import HEAD, rows, warnings

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}.warn{background:#fff3cd;padding:.5em 1em;border-left:4px solid #e0a800}
img{max-width:100%;display:block;margin:1em 0}code{background:#f4f4f4;padding:0 3px}"""


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(head: list[str], body: list[list[str]]) -> str:
    cells = lambda tag, r: "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in r)  # noqa: E731
    body_rows = "".join(f"<tr>{cells('td', r)}</tr>" for r in body)
    return f"<table><tr>{cells('th', head)}</tr>{body_rows}</table>"


def _figures(report: dict) -> list[str]:
    """Every plot the report's contents allow (none when matplotlib is missing, with a note)."""
    from ..errors import MissingDependencyError

    explained = report.get("interpretability") or {}
    wanted = [("Stages", lambda: plots.stages(report), True),
              ("Sensitivity", lambda: plots.curves(report["sensitivity"]), bool(report.get("sensitivity"))),
              ("Units kept per layer", lambda: plots.kept(explained["kept_fraction"]),
               bool(explained.get("kept_fraction"))),
              ("Input-feature importance", lambda: plots.importance(explained["input_importance_after"]),
               bool(explained.get("input_importance_after")))]
    try:
        return [f"<h2>{title}</h2>" + _img(make(), title) for title, make, present in wanted if present]
    except MissingDependencyError as err:
        return [f'<p class="warn">{html.escape(str(err))}</p>']


def to_html(report: dict) -> str:
    """The whole report as one HTML page."""
    name = html.escape(report["recipe"]["name"])
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>secateur: {name}</title>",
             f"<style>{STYLE}</style></head><body><h1>secateur report: {name}</h1>",
             "<p>Ratios are to the dense stage; latency is the median with its interquartile range; "
             "<code>~</code> marks a difference within the noise.</p>", _table(HEAD, rows(report))]
    parts += [f'<p class="warn">{html.escape(w)}</p>' for w in warnings(report)]
    parts += _figures(report)
    notes = report.get("notes", {})
    parts.append("<h2>Notes</h2><ul>" + "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>"
                                                for k, v in notes.items()) + "</ul>")
    env = report["environment"]
    parts.append(f"<p>torch {html.escape(env['torch'])}, {env['threads']} threads, Python {env['python']}.</p>")
    return "\n".join(parts) + "</body></html>\n"
