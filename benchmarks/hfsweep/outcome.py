"""The outcome classes of one model in the sweep, and the record kept for it.

>>> r = Record("bert", "secateur")
>>> r.fail("prune", CRASH, ValueError("boom")).outcome
'crash'
>>> r.message
'ValueError: boom'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

PASSED = "passed"
CANNOT_BUILD = "cannot build tiny"
CANNOT_RUN = "cannot run dense"
CAPTURE = "capture failed"
NOTHING = "nothing prunable"
BROKEN = "pruned model broken"
RELOAD = "reload broken"
CRASH = "crash"
TIMEOUT = "timeout"
CLASSES = (PASSED, CANNOT_BUILD, CANNOT_RUN, CAPTURE, NOTHING, BROKEN, RELOAD, CRASH, TIMEOUT)
NOT_RUNNABLE = (CANNOT_BUILD, CANNOT_RUN)  # outside the set the acceptance figure is taken over


def short(exc: BaseException, limit: int = 240) -> str:
    """``Type: first line of the message``, cut to ``limit`` characters."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:limit]


@dataclass
class Record:
    """One model type run through one tool: how far it got and why it stopped."""

    model_type: str
    tool: str
    model_class: str = ""
    outcome: str = PASSED
    stage: str = ""
    error_type: str = ""
    message: str = ""
    seconds: float = 0.0
    params_before: int | None = None
    params_after: int | None = None
    inputs: list[str] = field(default_factory=list)
    notes: dict = field(default_factory=dict)
    progress: Callable[[str], None] | None = field(default=None, repr=False, compare=False)

    def enter(self, stage: str) -> None:
        """Note that ``stage`` starts (a parent process watching a time limit hears of it)."""
        self.stage = stage
        if self.progress:
            self.progress(stage)

    def fail(self, stage: str, outcome: str, exc: BaseException | str) -> Record:
        """Mark the record failed at ``stage`` with ``outcome``, from an exception or a plain reason."""
        self.stage, self.outcome = stage, outcome
        if isinstance(exc, BaseException):
            self.error_type, self.message = type(exc).__name__, short(exc)
        else:
            self.error_type, self.message = "", exc[:240]
        return self

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "progress"}


class Stop(Exception):  # noqa: N818  (control flow, not an error)
    """Raised inside the pipeline once a record has failed: the later stages are skipped."""
