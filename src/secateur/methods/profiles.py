"""Non-uniform sparsity profiles a one-shot method takes (``profile=``): one sparsity per block, chosen
from calibration measurements so that the mean over blocks is the requested sparsity.

- :class:`OWL` (Yin et al. 2024, "Outlier Weighed Layerwise Sparsity (OWL): A Missing Secret Sauce for
  Pruning LLMs to High Sparsity", ICML 2024): blocks with more activation outliers are pruned less.
- :class:`BlockSensitivity`: each block pruned alone (``sc.sensitivity``-style): blocks whose output
  suffers more are pruned less.
- :class:`LossSearch` (EvoPress, Sieberling et al. 2024): an evolutionary search scored on the whole model's
  next-token loss (``secateur/llm/search.py``), for when scores of blocks measured alone mislead.

OWL and BlockSensitivity map scores to sparsities with OWL's rule: min-max scaled into a band of width
``2 * lam`` around the requested sparsity, shifted so the mean is exactly the request (and clipped to
``[s - lam, s + lam]``, the bounds the paper states, with the shift redone so the mean stays exact). The
engine measures the scores in one dense pass over the calibration data before pruning (``secateur/llm/measure.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..errors import InvalidParameterError, InvalidSparsityError
from ..schema import ClaimedValueError, Spec, build

PROFILES: dict[str, type[Profile]] = {}
MAX_SPARSITY = 0.999


def options_of(value: Any, text: bool) -> Mapping[str, Any]:
    """Options written as a mapping, ``None``/``true`` (the defaults) or, on the command line, ``a=1,b=2``."""
    if value is None or value is True or (text and value in ("", "true", "default")):
        return {}
    if text and isinstance(value, str):
        pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
        if any(len(p) != 2 for p in pairs):
            raise InvalidParameterError(f"{value!r} is not NAME=VALUE[,NAME=VALUE...]")
        return {k.strip(): v.strip() for k, v in pairs}
    if not isinstance(value, Mapping):
        raise InvalidParameterError(f"{value!r} is not a mapping of options")
    return value


def spread(scores: Sequence[float], sparsity: float, lam: float) -> list[float]:
    """Sparsities for blocks with these scores (higher score: pruned less), mean exactly ``sparsity``,
    each within ``[sparsity - lam, sparsity + lam]``.

    >>> spread([0.0, 1.0, 0.5], 0.7, 0.1)
    [0.8, 0.6, 0.7]
    """
    low, high = min(scores), max(scores)
    if high == low or lam == 0:
        return [sparsity] * len(scores)
    base = [sparsity + lam - 2 * lam * (s - low) / (high - low) for s in scores]
    floor, ceiling = max(sparsity - lam, 0.0), min(sparsity + lam, MAX_SPARSITY)

    def mean_at(shift: float) -> float:
        return sum(min(max(b + shift, floor), ceiling) for b in base) / len(base)

    lo, hi = -2 * lam, 2 * lam  # mean_at(lo) <= sparsity <= mean_at(hi); the mean grows with the shift
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean_at(mid) < sparsity else (lo, mid)
    return [round(min(max(b + (lo + hi) / 2, floor), ceiling), 12) for b in base]


@dataclass(frozen=True)
class Profile(Spec):
    """Base of measured profiles: ``block_score`` (higher: keep more) from each layer's ``(weight, input
    norms)`` and, when ``needs_error``, the block's output error when pruned alone."""

    lam: float = 0.08
    key: ClassVar[str] = ""
    needs_error: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.key:
            PROFILES[cls.key] = cls

    def validate(self) -> None:
        if not 0 <= self.lam < 0.5:
            raise InvalidParameterError(f"lam={self.lam} must be in [0, 0.5), e.g. 0.08")

    def check(self, sparsity: float) -> None:
        """Refuse a mean ``sparsity`` this profile cannot spread around (its band would reach 1)."""
        if sparsity + self.lam >= 1:
            raise InvalidSparsityError(f"sparsity={sparsity} + lam={self.lam} reaches 1; lower either")

    def block_score(self, layers: list[tuple[torch.Tensor, torch.Tensor]], error: float | None) -> float:
        raise NotImplementedError

    def sparsities(self, scores: Sequence[float], sparsity: float) -> list[float]:
        return spread(scores, sparsity, self.lam)

    @classmethod
    def describe(cls) -> str:
        return f"a profile ({', '.join(sorted(PROFILES))}, e.g. {{owl: {{lam: 0.08, m: 5}}}} or {{search: {{}}}})"

    def to_value(self) -> dict[str, Any]:
        return {self.key: self.fields_dict()}

    @classmethod
    def coerce(cls, value: Any, text: bool = False) -> Profile:
        """``owl``, ``{owl: {lam: 0.1}}`` or, on the command line, ``owl:lam=0.1,m=7``."""
        if isinstance(value, Profile):
            return value
        if isinstance(value, str):
            name, _, rest = value.partition(":") if text else (value, "", "")
            value = {name: options_of(rest, text=True)} if name in PROFILES else value
        if not (isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in PROFILES):
            raise InvalidParameterError(f"{value!r} is not a profile; write one of {', '.join(sorted(PROFILES))}")
        key, options = next(iter(value.items()))
        try:
            return build(PROFILES[key], options_of(options, text), text=text, where=PROFILES[key].__name__)
        except InvalidParameterError as err:
            raise ClaimedValueError(str(err)) from None


@dataclass(frozen=True)
class OWL(Profile):
    """Outlier-weighted layerwise sparsity (Yin et al. 2024): a block's score is the fraction of its
    weights whose Wanda score ``|W_ij| * ||X_j||`` exceeds ``m`` times the block's mean score.

    >>> w, norms = torch.ones(2, 4), torch.tensor([1.0, 1.0, 1.0, 9.0])
    >>> OWL(m=2).block_score([(w, norms)], None)
    0.25
    """

    lam: float = 0.08
    m: float = 5.0
    key: ClassVar[str] = "owl"

    def validate(self) -> None:
        super().validate()
        if self.m <= 0:
            raise InvalidParameterError(f"m={self.m} must be positive, e.g. 5")

    def block_score(self, layers, error):
        scores = torch.cat([(w.abs() * n[None, :]).flatten() for w, n in layers])
        return float((scores > self.m * scores.mean()).float().mean())


@dataclass(frozen=True)
class BlockSensitivity(Profile):
    """Each block pruned alone to the requested sparsity (Wanda scores on the dense model's inputs): its
    score is the squared error of its output relative to what the block adds to its input."""

    key: ClassVar[str] = "sensitivity"
    needs_error: ClassVar[bool] = True

    def block_score(self, layers, error):
        return float(error)


@dataclass(frozen=True)
class LossSearch(Profile):
    """Evolutionary search of per-block sparsities on the model's next-token loss (EvoPress, Sieberling et
    al. 2024; ``secateur/llm/search.py``): levels ``step`` apart within ``lam`` of the request (capped below
    1), ``generations`` of ``offspring`` children each scored on the last ``windows`` calibration
    sequences, ``seed`` for the mutations. Costs ``generations * offspring`` forwards of those sequences;
    needs a causal language model held in memory."""

    lam: float = 0.25
    step: float = 0.05
    generations: int = 30
    offspring: int = 6
    windows: int = 2
    seed: int = 0
    key: ClassVar[str] = "search"

    def validate(self) -> None:
        super().validate()
        if not 0 < self.step <= self.lam:
            raise InvalidParameterError(f"step={self.step} must be in (0, lam={self.lam}], e.g. 0.05")
        for name in ("generations", "offspring", "windows"):
            if getattr(self, name) < 1:
                raise InvalidParameterError(f"{name}={getattr(self, name)} must be a positive count")

    def check(self, sparsity: float) -> None:
        """Any mean below 1: the levels above ``MAX_SPARSITY`` are left out of the grid."""
