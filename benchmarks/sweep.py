"""Prune every Hugging Face architecture: tiny random-weight models, secateur and Torch-Pruning side by side.

    .venv/bin/python benchmarks/sweep.py                           # all model types, both tools (hours)
    .venv/bin/python benchmarks/sweep.py --tools dense             # only: does the tiny model build and run?
    .venv/bin/python benchmarks/sweep.py --only bert,t5,swin       # a few types, merged into the JSON
    .venv/bin/python benchmarks/sweep.py --report                  # rewrite docs/coverage.md from the JSON

Each (model type, tool) runs in its own process with a time limit. Results go to docs/coverage.json
(one record per model type and tool) and the table of counts to docs/coverage.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from hfsweep import report
from hfsweep.build import model_types
from hfsweep.runner import sweep

ROOT = Path(__file__).resolve().parent.parent
JSON, MARKDOWN = ROOT / "docs" / "coverage.json", ROOT / "docs" / "coverage.md"
BASELINE = ROOT / "docs" / "coverage_before.json"  # secateur's records before the fixes the sweep led to
TOOLS = ("secateur", "torch-pruning")


def _environment() -> dict:
    from importlib.metadata import version

    import torch
    import transformers

    try:
        tp = version("torch-pruning")
    except Exception:  # not installed: the bench extra is missing
        tp = None
    return {"torch": torch.__version__, "transformers": transformers.__version__, "torch-pruning": tp}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tools", default=",".join(TOOLS), help="secateur, torch-pruning and/or dense")
    parser.add_argument("--only", default="", help="comma-separated model types (default: every registered one)")
    parser.add_argument("--jobs", type=int, default=2, help="processes at once (one torch thread each)")
    parser.add_argument("--limit", type=float, default=180, help="seconds allowed per model and tool")
    parser.add_argument("--json", type=Path, default=JSON)
    parser.add_argument("--report", action="store_true", help="only rewrite the Markdown from the JSON")
    args = parser.parse_args(argv)
    results = report.load(args.json)
    if not args.report:
        types = args.only.split(",") if args.only else model_types()
        tools = args.tools.split(",")
        start = time.perf_counter()

        def keep(record: dict) -> None:
            report.add(results, record)
            report.save(results, args.json)
            print(f"{record['model_type']:32} {record['tool']:14} {record['outcome']:20} {record['seconds']:7.1f}s "
                  f"{record['message'][:90]}", flush=True)

        sweep([(t, tool) for t in types for tool in tools], jobs=args.jobs, limit=args.limit, on_record=keep)
        results["environment"] = _environment()
        if not args.only:
            results["wall_seconds"] = {"tools": tools, "jobs": args.jobs, "seconds": round(time.perf_counter() - start)}
        report.save(results, args.json)
    MARKDOWN.write_text(markdown(results))


def markdown(results: dict) -> str:
    """docs/coverage.md: how the sweep was run, the counts side by side, and the reasons per class."""
    tools = [t for t in TOOLS if report.counts(results, t)]
    columns = [(tool, results, tool) for tool in tools]
    if BASELINE.is_file():
        columns.insert(0, ("secateur before the sweep's fixes", report.load(BASELINE), "secateur"))
    wall = results.get("wall_seconds", {})
    head = Path(__file__).with_name("coverage_head.md").read_text()
    body = [head.format(models=len(results["models"]), env=results.get("environment", {}),
                        wall=f"{wall.get('seconds', 0) / 3600:.1f} h ({wall.get('jobs')} processes, tools: "
                             f"{', '.join(wall.get('tools', []))})" if wall else "not measured yet"),
            report.count_table(columns)]
    for tool in tools:
        body.append(f"\n### Why {tool} stopped, by class\n{report.reasons(results, tool)}\n")
    return "\n".join(body) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
