"""Run every benchmark in turn and write its output to runs/bench/<name>.md (``make bench``).

    .venv/bin/python benchmarks/run_all.py              # the quick ones (about 20 minutes on 2 cores)
    .venv/bin/python benchmarks/run_all.py --all        # also the language-model ones (about 1.5 hours)

Each script is also runnable on its own; its docstring gives the command, and docs/benchmarks.md the
latest results with the command that produced them.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUICK = ["spine.py", "structural.py", "accuracy.py"]
SLOW = ["minilm_embeddings.py", "llm.py", "llm_recovery.py"]


def main() -> int:
    scripts = QUICK + (SLOW if "--all" in sys.argv else [])
    out = HERE.parent / "runs" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    for script in scripts:
        start = time.perf_counter()
        print(f"== {script}", flush=True)
        result = subprocess.run([sys.executable, str(HERE / script)], cwd=HERE, capture_output=True, text=True)
        (out / f"{Path(script).stem}.md").write_text(result.stdout + result.stderr)
        print(f"   {'ok' if result.returncode == 0 else 'FAILED'} in {time.perf_counter() - start:.0f} s", flush=True)
        if result.returncode:
            failed.append(script)
    print(f"wrote {out}; failed: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
