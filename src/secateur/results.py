"""Typed results: what ``prune`` did, with the plan, the counts before and after, and per-unit reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .methods import Method
from .plan import Plan


@dataclass
class UnitReport:
    """One coupled group: its unit kind, how many units it had, which survived, and every unit's score."""

    kind: str
    size: int
    kept: list[int]
    scores: list[float]

    @property
    def kept_fraction(self) -> float:
        return len(self.kept) / self.size


@dataclass
class Outcome:
    """What a method's handler returns to ``prune`` (the model is already changed)."""

    plan: Plan
    groups: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    units: dict[str, UnitReport] = field(default_factory=dict)
    predicted: tuple[int, int] | None = None
    profile: dict[str, float] = field(default_factory=dict)


@dataclass
class PruneResult:
    """What ``prune`` did: the method, the plan, the model's counts before and after, what was pruned
    (``groups``: coupled groups or layers), what was skipped and why, per-unit reports (structured:
    what survived and its importance), and the wall time.

    ``predicted`` holds the (params, MACs) the plan promised on a shape-only copy before the real
    surgery; after a structured prune they equal ``params_after`` / ``macs_after``. ``profile`` holds
    the sparsity a one-shot method asked of each block (uniform, or chosen by OWL or a sensitivity profile).
    """

    method: Method
    plan: Plan
    params_before: int
    params_after: int
    nonzero_before: int
    nonzero_after: int
    macs_before: int | None = None
    macs_after: int | None = None
    predicted: tuple[int, int] | None = None
    groups: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    units: dict[str, UnitReport] = field(default_factory=dict)
    profile: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k not in ("method", "plan", "units")}
        return {"method": self.method.to_dict(), "plan": self.plan.to_dict(),
                "units": {k: asdict(u) for k, u in self.units.items()}, **data}

    def summary(self) -> str:
        macs = f", MACs {self.macs_before:,} -> {self.macs_after:,}" if self.macs_before else ""
        return (f"{self.method.name}: params {self.params_before:,} -> {self.params_after:,}, non-zero "
                f"{self.nonzero_before:,} -> {self.nonzero_after:,}{macs} in {self.seconds:.1f} s")

    def __str__(self) -> str:
        return self.summary()
