"""The report as text: a Markdown document for files, and a table that fits an 80-column terminal."""

from __future__ import annotations

from ..latency import Timing

WIDTH = 80
LATENCY = {"torch": "torch ms", "onnxruntime": "ORT ms"}


def timing(metrics: dict, engine: str) -> Timing | None:
    """A stage's latency in ``engine`` with its spread (older reports carry the median only)."""
    median = metrics.get("latency_ms", {}).get(engine)
    if median is None:
        return None
    p25, p75 = metrics.get("latency_iqr_ms", {}).get(engine, (median, median))
    return Timing(median, p25, p75, 0)


def _ratio(m: dict, d: dict, key: str) -> str:
    return f"{m[key] / d[key]:.2f}x" if d.get(key) else "-"


def _latency_cell(stage: dict, dense: dict, engine: str) -> str:
    t, d = timing(stage["metrics"], engine), timing(dense["metrics"], engine)
    if t is None or d is None:
        return "-"
    same = "~" if stage is not dense and t.overlaps(d) else ""
    if stage is dense:
        return f"{t.median:.2f} ±{t.spread:.0%}"
    return f"{t.median:.2f} {same}{t.median / d.median:.2f}x"


def rows(report: dict) -> list[list[str]]:
    """One row of cells per stage: accuracy, then ratios to the dense stage."""
    dense = report["stages"][0]
    out = []
    for s in report["stages"]:
        m, d = s["metrics"], dense["metrics"]
        out.append([s["name"], f"{100 * m['accuracy']:.2f}%" if "accuracy" in m else "-", _ratio(m, d, "params"),
                    _ratio(m, d, "nonzero_params"), _ratio(m, d, "macs"), _ratio(m, d, "file_bytes"),
                    *(_latency_cell(s, dense, e) for e in LATENCY)])
    return out


HEAD = ["stage", "accuracy", "params", "non-zero", "MACs", "ONNX B", *LATENCY.values()]


def warnings(report: dict) -> list[str]:
    """Latency comparisons the noise makes unreliable, in words."""
    notes, dense = [], report["stages"][0]
    for s in report["stages"][1:]:
        for engine, label in LATENCY.items():
            t, d = timing(s["metrics"], engine), timing(dense["metrics"], engine)
            if t and d and t.spread + d.spread > 0 and t.overlaps(d):
                notes.append(f"{s['name']} vs dense in {label.split()[0]}: the ranges overlap "
                             f"({t.median:.2f} ±{t.spread:.0%} vs {d.median:.2f} ±{d.spread:.0%}); the difference is "
                             "within the noise (a busy machine?)")
    return notes


def table(report: dict, width: int = WIDTH) -> str:
    """The stage table for a terminal: ratios to dense, dense figures in the heading, at most ``width`` wide."""
    d = report["stages"][0]["metrics"]
    grid = [HEAD, *rows(report)]
    widths = [max(len(r[i]) for r in grid) for i in range(len(HEAD))]
    lines = [f"secateur: {report['recipe']['name']} (ratios to dense; ~ marks a latency within the noise)",
             f"dense: {d['params']:,} params, {d['macs']:,} MACs per sample, {d['file_bytes']:,} ONNX bytes"]
    lines += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
              for r in grid]
    return "\n".join(fit(line, width) for line in lines)


def fit(line: str, width: int = WIDTH) -> str:
    """``line`` cut to ``width`` characters (with an ellipsis)."""
    return line if len(line) <= width else line[: width - 1] + "…"


def to_markdown(report: dict) -> str:
    """The report as a Markdown document."""
    lines = [f"# secateur report: {report['recipe']['name']}", "", "| " + " | ".join(HEAD) + " |",
             "|" + "---|" * len(HEAD)]
    lines += ["| " + " | ".join(r) + " |" for r in rows(report)]
    lines += ["", *(f"- **{k}**: {v}" for k, v in report.get("notes", {}).items())]
    lines += [f"- **warning**: {w}" for w in warnings(report)]
    kept = (report.get("interpretability") or {}).get("kept_fraction")
    if kept:
        lines += ["", "Units kept per layer (scores per unit are in report.json; the input-feature importance map is "
                  "in report.html):", *(f"- `{k}`: {v:.0%}" for k, v in kept.items())]
    if report.get("prune"):
        p = report["prune"]
        lines += ["", f"Pruned with `{p['method']['method']}` in {p.get('seconds', 0):.1f} s: {len(p['groups'])} "
                  "groups.", *(f"- `{g}`" for g in p["groups"])]
        lines += [f"- skipped `{g}`: {why}" for g, why in p.get("skipped", {}).items()]
    env = report["environment"]
    lines += ["", f"torch {env['torch']}, {env['threads']} threads, {env.get('machine', '')}, Python {env['python']}."]
    return "\n".join(lines) + "\n"
