"""Offline text for calibration and evaluation, and perplexity.

Two texts ship with secateur (``secateur/data``), built once by ``python -m secateur.llm.corpus`` from
the Python installation that runs it, so figures are reproducible on any machine:
- ``stdlib_docstrings.txt``: every docstring of the standard library's modules, classes and functions,
  read with ``ast`` (nothing is imported), files in sorted order;
- ``python_reference.txt``: the reference manual's help topics (``pydoc_data.topics``), a different text.
"""

from __future__ import annotations

import ast
import math
import sys
import sysconfig
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from ..errors import InvalidParameterError, ModelFileError
from ..progress import progress_bar
from ..transaction import eval_mode

CORPORA = {"stdlib-docstrings": "stdlib_docstrings.txt", "python-reference": "python_reference.txt"}


def build_docstrings(root: Path | None = None) -> str:
    """The standard library's docstrings, in file and definition order."""
    root = root or Path(sysconfig.get_paths()["stdlib"])
    skip = ("site-packages", "test", "tests", "idle_test", "lib2to3")
    parts = []
    for path in sorted(root.rglob("*.py")):
        if any(p in skip for p in path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in [tree, *ast.walk(tree)]:
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 40:
                    parts.append(doc)
    return "\n\n".join(dict.fromkeys(parts))


def build_reference() -> str:
    """The reference manual's help topics, sorted by topic."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def check_text(name: str) -> str:
    """``name`` if it is a shipped corpus or an existing text file, else a named error."""
    if name in CORPORA or Path(name).is_file():
        return name
    raise ModelFileError(f"unknown text {name!r}; choose one of {', '.join(CORPORA)} or give a UTF-8 text file")


def load_corpus(name: str = "stdlib-docstrings") -> str:
    """A shipped text by name (``stdlib-docstrings`` or ``python-reference``), or a UTF-8 text file."""
    check_text(name)
    if name not in CORPORA:
        try:
            return Path(name).read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ModelFileError(f"{name} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    return (resources.files("secateur") / "data" / CORPORA[name]).read_text(encoding="utf-8")


def windows(ids: torch.Tensor, length: int, count: int, start: int = 0) -> torch.Tensor:
    """``count`` non-overlapping windows of ``length`` tokens from ``ids`` (1-D), beginning at ``start``.

    >>> windows(torch.arange(10), 3, 2, start=1).tolist()
    [[1, 2, 3], [4, 5, 6]]
    """
    needed = start + length * count
    if needed > ids.numel():
        raise InvalidParameterError(f"{count} windows of {length} from token {start} need {needed} tokens; the text "
                                    f"has {ids.numel()}: ask for fewer or shorter windows, or give a longer text")
    return ids[start:needed].view(count, length)


def perplexity(model: nn.Module, batches: torch.Tensor, batch_size: int = 4, progress: bool = True) -> float:
    """exp(mean next-token negative log-likelihood) over every position of every window."""
    total, count = 0.0, 0
    with torch.no_grad(), eval_mode(model):
        for i in progress_bar(range(0, len(batches), batch_size), "perplexity", enabled=progress):
            ids = batches[i : i + batch_size]
            logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                               reduction="sum")
            total, count = total + float(loss), count + ids[:, 1:].numel()
    return math.exp(total / count)


if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "data"
    (out / CORPORA["stdlib-docstrings"]).write_text(build_docstrings(), encoding="utf-8")
    (out / CORPORA["python-reference"]).write_text(build_reference(), encoding="utf-8")
    print(f"wrote {out} with Python {sys.version.split()[0]}")
