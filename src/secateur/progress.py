"""Progress bars for long work (rich), drawn only when the output is a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


def interactive() -> bool:
    """True when standard error is a terminal (bars are pointless in logs, pipes and CI)."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress_bar(items: Iterable[T], label: str, enabled: bool = True, total: int | None = None) -> Iterator[T]:
    """Yield ``items`` while showing a bar labelled ``label`` (only if ``enabled`` and on a terminal).

    >>> list(progress_bar([1, 2], "demo"))
    [1, 2]
    """
    if not (enabled and interactive()):
        yield from items
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(label, total=total if total is not None else _len(items))
        for item in items:
            yield item
            bar.advance(task)


@contextmanager
def phase(label: str, enabled: bool = True) -> Iterator[None]:
    """Show a spinner labelled ``label`` while one long step runs (capture, export, a profile), on a terminal.

    >>> with phase("demo"):
    ...     pass
    """
    if not (enabled and interactive()):
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(label):
        yield


def _len(items: Iterable) -> int | None:
    try:
        return len(items)  # type: ignore[arg-type]
    except TypeError:
        return None
