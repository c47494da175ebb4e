"""``Unstructured`` and ``SemiStructured`` (N:M): zero individual weights through masks held in training."""

from __future__ import annotations

from dataclasses import dataclass

from ..criteria.base import Criterion, get_criterion
from ..errors import InvalidParameterError, InvalidSparsityError, UnknownCriterionError
from .base import Method, Scope, check_fraction, check_patterns, register_method


def _weight_criterion(spec: str | Criterion) -> None:
    if get_criterion(spec).units_only:
        raise UnknownCriterionError(f"criterion {spec!r} scores whole channels; use it with Structured, or pick a "
                                    "weight criterion (magnitude, lamp, taylor, hessian, activation, random)")


def _profile(profile: dict[str, float] | None) -> None:
    for key, value in (profile or {}).items():
        check_fraction(f"profile[{key!r}]", value)


@register_method
@dataclass(frozen=True)
class Unstructured(Method):
    """Zero individual weights of Conv/Linear layers (masks held through fine-tuning).

    ``sparsity`` is the fraction of weights zeroed in each layer (``scope="layer"``) or across all of
    them (``scope="global"``). ``criterion`` defaults to ``magnitude`` for layer scope and ``lamp`` for
    global scope (LAMP makes scores comparable across layers; it was the best global criterion in
    docs/benchmarks.md). ``ignore`` holds module-name patterns (fnmatch) to leave dense; ``profile``
    maps module-name patterns to their own sparsity (layer scope).

    >>> Unstructured(0.8, scope="global").criterion
    'lamp'
    """

    sparsity: float
    scope: Scope = "layer"
    criterion: str | Criterion | None = None
    ignore: tuple[str, ...] = ()
    profile: dict[str, float] | None = None
    name = "unstructured"

    def validate(self) -> None:
        check_fraction("sparsity", self.sparsity)
        if self.criterion is None:
            object.__setattr__(self, "criterion", "lamp" if self.scope == "global" else "magnitude")
        _weight_criterion(self.criterion)
        check_patterns("ignore", self.ignore)
        _profile(self.profile)
        if self.profile and self.scope == "global":
            raise InvalidParameterError("profile= sets per-layer sparsity; it needs scope='layer'")


@register_method
@dataclass(frozen=True)
class SemiStructured(Method):
    """Semi-structured N:M sparsity: in every run of ``m`` consecutive weights along a layer's input
    dimension, keep the ``n`` most salient (2:4 is what sparse tensor cores accelerate).

    >>> SemiStructured(2, 4).sparsity
    0.5
    """

    n: int = 2
    m: int = 4
    criterion: str | Criterion = "magnitude"
    ignore: tuple[str, ...] = ()
    name = "semistructured"

    def validate(self) -> None:
        if not 0 < self.n < self.m:
            raise InvalidSparsityError(f"N:M needs integers 0 < n < m, got {self.n}:{self.m}; e.g. 2:4 or 4:8")
        _weight_criterion(self.criterion)
        check_patterns("ignore", self.ignore)

    @property
    def sparsity(self) -> float:
        return 1 - self.n / self.m
