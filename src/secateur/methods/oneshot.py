"""The base of one-shot language-model methods (run block by block by ``secateur.llm.engine``).

A one-shot method is two hooks: a *streaming statistic* of a layer's inputs, updated batch by batch
(``new_statistic`` returns an object with ``update(x)``, ``x`` shaped ``(tokens, in_features)``), and a
*weight update* ``prune_weight(weight, statistic, sparsity) -> (new_weight, keep_mask)`` on the
``(out, in)`` float32 weight. Masks are then held on the model (parametrizations), so fine-tuning
keeps the sparsity. See ``secateur/methods/wanda.py`` for a whole method in one file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from ..errors import InvalidParameterError, InvalidSparsityError
from ..selection import keep_top, keep_top_rows, nm_mask
from .base import Method, check_fraction, check_patterns, match
from .profiles import Profile
from .reconstruction import Reconstruction


class Statistic(Protocol):
    def update(self, x: torch.Tensor) -> None:
        """Fold in one batch of a layer's inputs, ``(tokens, in_features)`` in float32."""


def parse_pattern(pattern: str) -> tuple[int, int] | None:
    """``"unstructured"`` -> None, ``"2:4"`` -> (2, 4).

    >>> parse_pattern("4:8")
    (4, 8)
    """
    if pattern == "unstructured":
        return None
    found = re.fullmatch(r"(\d+):(\d+)", pattern)
    if not found or not 0 < int(found[1]) < int(found[2]):
        raise InvalidSparsityError(f"pattern={pattern!r} is not 'unstructured' or 'N:M' with 0 < N < M, e.g. '2:4'")
    return int(found[1]), int(found[2])


@dataclass(frozen=True)
class OneShot(Method):
    """Options every one-shot method shares: ``sparsity`` per layer (or a ``pattern`` "N:M", which fixes
    it at ``1 - N/M``), ``ignore`` (fnmatch patterns of layers left dense) and ``profile``: a mapping of
    layer patterns to their sparsity, or a measured profile (``OWL()``, ``BlockSensitivity()``, ``LossSearch()``) that
    chooses each block's sparsity with a mean of ``sparsity``. ``reconstruct`` (a
    :class:`Reconstruction`) tunes each pruned block towards the dense block's outputs (EBFT).
    ``batch_size`` sequences go through a block at once (None: about ``secateur.llm.states.TOKENS``
    tokens); the statistics stream over the micro-batches, so memory does not grow with the calibration set.
    ``autocast`` ("bfloat16" or "float16") runs the blocks' calibration forwards under ``torch.autocast``
    in that dtype: their matrix products about twice as fast on GPUs and on CPUs with AVX512-BF16 or AMX,
    at a small cost in the statistics' precision; statistics and weight updates stay float32.
    """

    sparsity: float = 0.5
    pattern: str = "unstructured"
    ignore: tuple[str, ...] = ("lm_head", "*embed*")
    profile: dict[str, float] | Profile | None = None
    batch_size: int | None = None
    reconstruct: Reconstruction | None = None
    autocast: Literal["bfloat16", "float16"] | None = None

    def validate(self) -> None:
        parse_pattern(self.pattern)
        if self.batch_size is not None and self.batch_size < 1:
            raise InvalidParameterError(f"batch_size={self.batch_size} must be a positive number of sequences")
        check_fraction("sparsity", self.sparsity)
        for key, value in (self.profile if isinstance(self.profile, dict) else {}).items():
            check_fraction(f"profile[{key!r}]", value)
        if self.profile and self.nm:
            raise InvalidSparsityError("an N:M pattern fixes every layer's sparsity; drop profile= or the pattern")
        if isinstance(self.profile, Profile):
            self.profile.check(self.sparsity)
        check_patterns("ignore", self.ignore)

    @property
    def nm(self) -> tuple[int, int] | None:
        return parse_pattern(self.pattern)

    def layer_sparsity(self, layer: str) -> float:
        """The sparsity asked of ``layer``: its profile entry, or the method's (a measured profile is turned
        into per-block entries by the engine)."""
        if self.nm:
            return 1 - self.nm[0] / self.nm[1]
        key = match(layer, self.profile if isinstance(self.profile, dict) else {})
        return self.sparsity if key is None else self.profile[key]

    def new_statistic(self, in_features: int) -> Statistic | None:
        """A fresh statistic for a layer with ``in_features`` inputs; None if the method reads weights only."""
        return None

    def prune_weight(self, weight: torch.Tensor, statistic: Statistic | None, sparsity: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def keep_mask(self, scores: torch.Tensor, sparsity: float, per_row: bool) -> torch.Tensor:
        """Keep-mask from scores: N:M groups, or exactly ``sparsity`` per row (``per_row``) or per matrix."""
        if self.nm:
            return nm_mask(scores, *self.nm)
        if per_row:
            return keep_top_rows(scores, sparsity)
        return keep_top(scores, scores.numel() - int(scores.numel() * sparsity))
