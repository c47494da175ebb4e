"""Pruning methods: plain dataclasses that say *what* to remove. ``secateur.prune`` knows how."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .criteria import UNITS_ONLY, check_criterion
from .errors import InvalidSparsityError, UnknownCriterionError

Scope = Literal["layer", "global"]
UNITS = ("channels", "heads", "hidden", "groups", "blocks")


def _check_fraction(name: str, value: float, *, low_open: bool, high_open: bool) -> None:
    low_ok = value > 0 if low_open else value >= 0
    high_ok = value < 1 if high_open else value <= 1
    if not (low_ok and high_ok):
        lo, hi = "(0" if low_open else "[0", "1)" if high_open else "1]"
        raise InvalidSparsityError(f"{name}={value!r} is outside {lo}, {hi}; pass a fraction such as 0.5")


def _check_scope(scope: str) -> None:
    if scope not in ("layer", "global"):
        raise ValueError(f"scope={scope!r} is not valid; choose 'layer' or 'global'")


@dataclass(frozen=True)
class Macs:
    """Target: keep this fraction of the dense model's multiply-accumulates."""

    fraction: float

    def __post_init__(self) -> None:
        _check_fraction("Macs.fraction", self.fraction, low_open=True, high_open=False)


@dataclass(frozen=True)
class Params:
    """Target: keep this fraction of the dense model's parameters."""

    fraction: float

    def __post_init__(self) -> None:
        _check_fraction("Params.fraction", self.fraction, low_open=True, high_open=False)


@dataclass(frozen=True)
class Unstructured:
    """Zero individual weights of Conv/Linear layers (masks held through fine-tuning).

    ``sparsity`` is the fraction of weights zeroed in each layer (``scope="layer"``) or across all of
    them (``scope="global"``). ``ignore`` holds module-name patterns (fnmatch) to leave dense.

    >>> Unstructured(0.8, scope="global").sparsity
    0.8
    """

    sparsity: float
    scope: Scope = "layer"
    criterion: str = "magnitude"
    ignore: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_fraction("sparsity", self.sparsity, low_open=False, high_open=True)
        _check_scope(self.scope)
        _check_weight_criterion(self.criterion)


@dataclass(frozen=True)
class SemiStructured:
    """Semi-structured N:M sparsity: in every run of ``m`` consecutive weights along a layer's input
    dimension, keep the ``n`` most salient (2:4 is what sparse tensor cores accelerate).

    >>> SemiStructured(2, 4).m
    4
    """

    n: int = 2
    m: int = 4
    criterion: str = "magnitude"
    ignore: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and isinstance(self.m, int) and 0 < self.n < self.m):
            raise InvalidSparsityError(f"N:M needs integers 0 < n < m, got {self.n}:{self.m}; e.g. 2:4 or 4:8")
        _check_weight_criterion(self.criterion)

    @property
    def sparsity(self) -> float:
        return 1 - self.n / self.m


def _check_weight_criterion(name: str) -> None:
    check_criterion(name)
    if name in UNITS_ONLY:
        raise UnknownCriterionError(f"criterion {name!r} scores whole channels; use it with Structured, or pick "
                                    "a weight criterion (magnitude, lamp, taylor, hessian, activation, random)")


@dataclass(frozen=True)
class Latency:
    """Target: an onnxruntime latency budget in milliseconds for ``batch_size`` copies of the example."""

    ms: float
    batch_size: int = 32
    runs: int = 20

    def __post_init__(self) -> None:
        if self.ms <= 0:
            raise InvalidSparsityError(f"Latency(ms={self.ms}) must be positive")


Target = Macs | Params | Latency


@dataclass(frozen=True)
class Structured:
    """Physically remove channels/neurons, with every coupled layer, so the model really shrinks.

    Give either ``sparsity`` (fraction of each coupled group's channels removed) or ``target``
    (a :class:`Macs` or :class:`Params` fraction to keep; a bare float means MACs). ``round_to`` keeps
    channel counts at multiples of it; ``ignore`` holds module-name patterns (fnmatch) of layers whose
    output channels stay (their inputs may still shrink when the layer before them is pruned).
    ``units`` restricts what is removed: ``"channels"`` (conv channels, neurons, FFN width),
    ``"heads"`` (attention heads; key-value groups under GQA), ``"hidden"`` (the residual stream of a
    transformer), ``"groups"`` (channel groups of grouped convs and GroupNorm) and ``"blocks"`` (whole
    residual blocks, by block influence); None means every unit but blocks, which are opt-in.
    ``ratios`` gives some groups their own sparsity, keyed by the layer whose outputs form the group
    (see :func:`secateur.group_key`); ``secateur.allocate`` computes such ratios from sensitivity.

    >>> Structured(target=0.5).target
    Macs(fraction=0.5)
    """

    sparsity: float | None = None
    target: Target | float | None = None
    criterion: str = "magnitude"
    scope: Scope = "layer"
    round_to: int = 1
    ignore: tuple[str, ...] = field(default=())
    units: tuple[str, ...] | None = None
    ratios: dict[str, float] | None = None

    def __post_init__(self) -> None:
        for key, value in (self.ratios or {}).items():
            _check_fraction(f"ratios[{key!r}]", value, low_open=False, high_open=True)
        if self.units is not None:
            bad = sorted(set(self.units) - set(UNITS))
            if bad:
                raise ValueError(f"unknown units {bad}; choose from {', '.join(UNITS)}")
        if self.target is not None and (self.sparsity is not None or self.ratios):
            raise InvalidSparsityError("give sparsity= (and/or per-group ratios=) or a target=, not both")
        if self.sparsity is None and self.target is None and not self.ratios:
            raise InvalidSparsityError("give exactly one of sparsity= or target=, e.g. Structured(sparsity=0.5)")
        if self.sparsity is not None:
            _check_fraction("sparsity", self.sparsity, low_open=False, high_open=True)
        if isinstance(self.target, int | float):
            object.__setattr__(self, "target", Macs(float(self.target)))
        _check_scope(self.scope)
        check_criterion(self.criterion)
        if self.round_to < 1:
            raise ValueError(f"round_to={self.round_to} must be a positive integer, e.g. 8")
