"""Progress bars for long work (rich), drawn only when the output is a terminal."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator
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
    with _rich_bar() as bar:
        task = bar.add_task(label, total=total if total is not None else _len(items))
        for item in items:
            yield item
            bar.advance(task)


@contextlib.contextmanager
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


def _rich_bar(status: bool = False):
    """A rich progress display on standard error: label, bar, count, elapsed, remaining (and a status text)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn()] + ([TextColumn("{task.fields[status]}")] if status else [])
    return Progress(*columns, console=Console(stderr=True), transient=False)


@contextlib.contextmanager
def status_bar(label: str, total: int | None, enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """A bar advanced one step each time the yielded function is called with a status text (e.g. the
    loss and tokens per second); nothing is drawn unless ``enabled`` and on a terminal.

    >>> with status_bar("train", 2) as advance:
    ...     advance("loss 1.0"); advance("loss 0.5")
    """
    if not (enabled and interactive()):
        yield lambda status: None
        return
    with _rich_bar(status=True) as bar:
        task = bar.add_task(label, total=total, status="")
        yield lambda status: bar.update(task, advance=1, status=status)
