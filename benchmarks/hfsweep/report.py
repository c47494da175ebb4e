"""The sweep's results: ``coverage.json`` (one record per model type and tool) and a Markdown table of counts.

>>> results = {"models": {"bert": {"model_class": "BertModel", "secateur": {"outcome": "passed"}}}}
>>> counts(results, "secateur")["passed"]
1
>>> print(count_table([("secateur", results, "secateur")]).splitlines()[-1])
| **passed / builds and runs dense** | 1/1 = 100.0% |
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from .outcome import CLASSES, NOT_RUNNABLE, PASSED

KEEP = ("outcome", "stage", "error_type", "message", "seconds", "params_before", "params_after", "inputs", "notes")


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"models": {}}


def add(results: dict, record: dict) -> None:
    """Put one runner record into ``results`` under its model type and tool."""
    entry = results["models"].setdefault(record["model_type"], {})
    entry["model_class"] = record.get("model_class") or entry.get("model_class", "")
    entry[record["tool"]] = {k: record[k] for k in KEEP if k in record}


def save(results: dict, path: Path) -> None:
    results["models"] = dict(sorted(results["models"].items()))
    path.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")


def counts(results: dict, tool: str) -> Counter:
    return Counter(m[tool]["outcome"] for m in results["models"].values() if tool in m)


def runnable(results: dict, tool: str) -> list[str]:
    """Model types whose tiny dense model builds and runs (the acceptance figure's denominator)."""
    return [t for t, m in results["models"].items() if tool in m and m[tool]["outcome"] not in NOT_RUNNABLE]


def count_table(columns: list[tuple[str, dict, str]]) -> str:
    """Outcome classes (rows) by column (a label, the results, a tool), and the pass rate over the models
    that build and run dense."""
    lines = ["| outcome | " + " | ".join(label for label, _, _ in columns) + " |", "|---|" + "---:|" * len(columns)]
    per = [counts(results, tool) for _, results, tool in columns]
    for name in CLASSES:
        if any(c[name] for c in per):
            lines.append(f"| {name} | " + " | ".join(str(c[name]) for c in per) + " |")
    lines.append("| **total** | " + " | ".join(str(sum(c.values())) for c in per) + " |")
    rates = []
    for _, results, tool in columns:
        ok = runnable(results, tool)
        passed = sum(results["models"][m][tool]["outcome"] == PASSED for m in ok)
        rates.append(f"{passed}/{len(ok)} = {passed / max(len(ok), 1):.1%}")
    lines.append("| **passed / builds and runs dense** | " + " | ".join(rates) + " |")
    return "\n".join(lines)


def reasons(results: dict, tool: str, top: int = 12) -> str:
    """For each failure class of ``tool``: how many, and the most common reasons with example model types."""
    out = []
    for name in CLASSES:
        if name == PASSED:
            continue
        rows = [(t, m[tool]) for t, m in results["models"].items() if tool in m and m[tool]["outcome"] == name]
        if not rows:
            continue
        out.append(f"\n#### {name} ({len(rows)})\n")
        by_reason: dict[str, list[str]] = {}
        for t, r in rows:
            by_reason.setdefault(_gist(r), []).append(t)
        for why, types in sorted(by_reason.items(), key=lambda kv: -len(kv[1]))[:top]:
            out.append(f"- {len(types)} x `{why}`: {', '.join(types[:8])}{' ...' if len(types) > 8 else ''}")
        if len(by_reason) > top:
            out.append(f"- {len(by_reason) - top} other reasons (see coverage.json)")
    return "\n".join(out)


def _gist(record: dict) -> str:
    """A failure's message without the numbers and names that make every one different."""
    text = record.get("message", "")
    for sep in (" in ", "(", " got ", " at ", "[", " of size", " expected"):
        head = text.split(sep)[0]
        text = head if len(head) > 24 else text
    return f"{record.get('stage', '')}: {text[:110]}"
