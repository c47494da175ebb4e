"""``Structured``: physically remove channels, heads, hidden width or whole blocks, with every coupled layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..criteria.base import Criterion, get_criterion
from ..errors import InvalidParameterError, InvalidSparsityError
from .base import Latency, Macs, Method, Params, Scope, Target, check_fraction, check_patterns, register_method

Unit = Literal["channels", "heads", "hidden", "groups", "blocks"]
UNITS: tuple[str, ...] = Unit.__args__
# The default criterion of a causal language model pruned with calibration data (the best one-shot criterion in
# docs/benchmarks.md, "Structured compression of SmolLM2"); other models default to magnitude.
LM_CRITERION = "flap"


@register_method
@dataclass(frozen=True)
class Structured(Method):
    """Physically remove channels/neurons, with every coupled layer, so the model really shrinks.

    Give ``sparsity`` (the fraction of each coupled group's units removed), per-group ``ratios``, or a
    ``target`` (:class:`Macs`, :class:`Params` or :class:`Latency`; a bare float means MACs).
    ``units`` restricts what is removed: ``"channels"`` (conv channels, neurons, FFN width; in a grouped
    conv or GroupNorm, channel ``j`` of every group, so groups stay equal and as many), ``"heads"``
    (attention heads; query heads inside key-value groups under GQA), ``"hidden"`` (a transformer's
    residual stream), ``"groups"`` (whole groups of grouped convs and GroupNorm) and ``"blocks"`` (whole
    residual blocks, as the criterion's ``choose_blocks`` says: ShortGPT's block influence unless it is
    ``angular``); None means every unit but blocks, which are opt-in. With both channels and groups (or
    None), each grouped conv and GroupNorm takes the finer pruning, the one with more units: channel ``j``
    of every group when a group holds at least as many channels as there are groups, else whole groups
    (:attr:`grouping`). Blocks take ``sparsity`` (a fraction of each stack) or, alone, a
    ``Params``/``Macs`` target (the fewest blocks that reach it).

    ``round_to`` keeps channel counts at multiples of it (inside groups: the channels of each group). Heads are
    rounded to the nearest count the attention layout allows (under grouped-query attention every key-value
    group keeps as many query heads as the others); heads named in ``units`` that a fraction leaves untouched
    raise an error that says why. ``ignore`` holds module-name patterns (fnmatch) whose outputs stay; ``ratios``
    maps group keys (:func:`secateur.group_key`, shown by ``secateur.analyze``) to their own sparsity.
    ``criterion`` scores units (a name or a criterion object; None: ``magnitude``, or ``LM_CRITERION`` for a
    causal language model given calibration data). ``scope="layer"`` gives every layer the same width (a Hugging
    Face config can express it); ``scope="global"`` ranks units of all layers together (non-uniform widths,
    FLAP's adaptive structure; a target then budgets the parameters each unit holds).

    >>> Structured(target=0.5).target
    Macs(fraction=0.5)
    """

    sparsity: float | None = None
    target: Target | float | None = None
    criterion: str | Criterion | None = None
    scope: Scope = "layer"
    round_to: int = 1
    ignore: tuple[str, ...] = ()
    units: tuple[Unit, ...] | None = None
    ratios: dict[str, float] | None = None
    name = "structured"

    def validate(self) -> None:
        for key, value in (self.ratios or {}).items():
            check_fraction(f"ratios[{key!r}]", value)
        if self.target is not None and (self.sparsity is not None or self.ratios):
            raise InvalidSparsityError("give sparsity= (and/or per-group ratios=) or a target=, not both")
        if self.sparsity is None and self.target is None and not self.ratios:
            raise InvalidSparsityError("give one of sparsity=, ratios= or target=, e.g. Structured(sparsity=0.5)")
        if self.sparsity is not None:
            check_fraction("sparsity", self.sparsity)
        if isinstance(self.target, float | int):
            object.__setattr__(self, "target", Macs(float(self.target)))
        if self.units is not None and not self.units:
            raise InvalidParameterError("units=() selects nothing; omit it or name units such as ('channels',)")
        if self.round_to < 1:
            raise InvalidParameterError(f"round_to={self.round_to} must be a positive integer, e.g. 8")
        self._check_blocks()
        check_patterns("ignore", self.ignore)

    def _check_blocks(self) -> None:
        blocks = bool(self.units and "blocks" in self.units)
        if blocks and self.target is not None and (self.width_units or isinstance(self.target, Latency)):
            raise InvalidParameterError("a target with blocks is met by blocks alone (units=('blocks',)) and counts "
                                        "params or MACs; to combine depth and width, prune twice: blocks first, then "
                                        "width units, each with its own target")
        if blocks and self.ratios:
            raise InvalidParameterError("ratios= sets widths of coupled groups; blocks take sparsity= or a target=")
        criterion = get_criterion(self.criterion) if self.criterion is not None else None
        if criterion is not None and criterion.blocks_only and self.width_units != ():
            raise InvalidParameterError(f"criterion {criterion.name!r} chooses whole blocks only; use it with "
                                        "units=('blocks',), or pick a unit criterion (flap, minitron, taylor, ...)")

    @property
    def grouping(self) -> str:
        """What grouped convs and GroupNorm lose (``secateur.graph.capture``'s ``grouping``): whole groups when
        ``units`` names ``"groups"`` but not ``"channels"``, channel ``j`` of every group when it names channels
        but not groups, else per layer whichever gives more units.

        >>> Structured(sparsity=0.5, units=("groups",)).grouping, Structured(sparsity=0.5).grouping
        ('groups', 'finer')
        """
        units = self.width_units or ()
        if ("groups" in units) != ("channels" in units):
            return "groups" if "groups" in units else "channels"
        return "finer"

    @property
    def width_units(self) -> tuple[str, ...] | None:
        """The units besides whole blocks (None: every unit but blocks)."""
        return None if self.units is None else tuple(u for u in self.units if u != "blocks")


__all__ = ["LM_CRITERION", "UNITS", "Latency", "Macs", "Params", "Structured"]
