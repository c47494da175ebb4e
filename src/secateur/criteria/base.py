"""The criterion base class, its registry, and the per-unit view of a coupled group's weights.

A criterion says how much each weight matters (``saliency``, higher keeps) and how a unit of a
coupled group is scored from the weights it spans (``unit_scores``; by default the criterion's
``reduce`` of the unit's summed saliency), how scores of different groups compare in a global
ranking (``normalize``), and which whole blocks go first (``block_scores``, ``choose_blocks``; by
default ShortGPT's block influence). It lists the calibration statistics it ``needs`` (``grad``,
``grad_sq``, ``input_norm``, ``input_moments``). A new criterion is one class in one file of this
package, decorated with :func:`register_criterion`; recipes, the CLI and the tests find it by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from ..errors import UnknownCriterionError
from ..schema import Spec, build

if TYPE_CHECKING:
    from ..depth import BlockStats

CRITERIA: dict[str, type[Criterion]] = {}
Stats = Mapping[str, Mapping[str, torch.Tensor]]


def register_criterion(cls: type[Criterion]) -> type[Criterion]:
    """Class decorator: make a criterion available by its ``name``."""
    CRITERIA[cls.name] = cls
    return cls


@dataclass(frozen=True)
class Criterion(Spec):
    """Base of every importance criterion; options are dataclass fields (most criteria have none)."""

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()
    units_only: ClassVar[bool] = False  # scores whole units only (no per-weight saliency)
    blocks_only: ClassVar[bool] = False  # chooses whole blocks only (no unit scores)
    contiguous: ClassVar[bool] = False  # chooses a run of consecutive blocks (one stack only)

    @property
    def compensates(self) -> bool:
        """Whether pruning adds the removed inputs' mean contribution to the reading layers' biases."""
        return False

    def saliency(self, weight: torch.Tensor, stats: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Importance of every element of ``weight`` (float32, same shape)."""
        raise NotImplementedError(f"criterion {self.name!r} scores whole units only")

    def layer_scores(self, saliency: torch.Tensor) -> torch.Tensor:
        """Scores that rank one layer's weights against other layers' (global unstructured pruning)."""
        return saliency

    def reduce(self, unit_sums: torch.Tensor) -> torch.Tensor:
        """A unit's score from the summed saliency of every weight it spans."""
        return unit_sums

    def unit_scores(self, group: GroupWeights) -> torch.Tensor:
        """One score per unit of a coupled group."""
        return self.reduce(group.total(self.saliency))

    def normalize(self, scores: torch.Tensor) -> torch.Tensor:
        """A group's unit scores made comparable with other groups' (global scope): over their mean."""
        return scores / (scores.mean() + 1e-12)

    def block_scores(self, blocks: BlockStats) -> torch.Tensor:
        """One score per block of a stack, lowest removed first: ShortGPT's block influence by default."""
        return blocks.influence()

    def choose_blocks(self, blocks: BlockStats, count: int) -> list[int]:
        """Indices of the ``count`` blocks of a stack to remove."""
        return sorted(torch.argsort(self.block_scores(blocks), stable=True)[:count].tolist())

    @classmethod
    def describe(cls) -> str:
        return f"a criterion: one of {', '.join(sorted(CRITERIA))}, or {{name: NAME, option: value}}"

    def to_value(self) -> str | dict[str, Any]:
        options = self.fields_dict()
        return {"name": self.name, **options} if options else self.name

    @classmethod
    def coerce(cls, value: Any, text: bool = False) -> str | Criterion:
        """A criterion name stays a name; ``{name: random, seed: 1}`` or ``"random:seed=1"`` builds one."""
        if isinstance(value, Criterion):
            return value
        if isinstance(value, str) and not (text and ":" in value):
            return value
        if isinstance(value, str):
            name, _, rest = value.partition(":")
            value = {"name": name, **dict(p.split("=", 1) for p in rest.split(",") if "=" in p)}
        if not isinstance(value, Mapping) or "name" not in value:
            raise UnknownCriterionError(f"{value!r} is not a criterion; give its name, e.g. 'lamp'")
        options = dict(value)
        return build(criterion_class(options.pop("name")), options, text=text)


def criterion_class(name: str) -> type[Criterion]:
    if name not in CRITERIA:
        raise UnknownCriterionError(f"unknown criterion {name!r}; choose one of {', '.join(sorted(CRITERIA))}")
    return CRITERIA[name]


def get_criterion(spec: str | Criterion) -> Criterion:
    """The criterion a method names (a registered name, or a criterion object).

    >>> get_criterion("l1").saliency(torch.tensor([-2.0, 1.0]), {})
    tensor([2., 1.])
    """
    return spec if isinstance(spec, Criterion) else criterion_class(spec)()


def criterion_name(spec: str | Criterion) -> str:
    return spec if isinstance(spec, str) else spec.name


@dataclass
class GroupWeights:
    """The tensors of one coupled group, each with the positions every unit occupies in it."""

    size: int
    members: list = field(default_factory=list)  # (Member, tensor, owning module or None, stats of the tensor)

    @classmethod
    def of(cls, model: nn.Module, group: Any, stats: Stats) -> GroupWeights:
        params = dict(model.named_parameters(remove_duplicate=False))
        modules = dict(model.named_modules())
        members = [(m, params[m.tensor].detach(), modules.get(m.tensor.rpartition(".")[0]), stats.get(m.tensor, {}))
                   for m in group.members if m.tensor in params]
        return cls(group.size, members)

    def rows(self, tensor: torch.Tensor, member: Any) -> torch.Tensor:
        """``tensor`` (shaped like the member's tensor) as a ``(units, positions)`` matrix."""
        idx = torch.tensor(member.indices(list(range(self.size))), device=tensor.device)
        block = tensor.movedim(member.dim, 0).index_select(0, idx)
        return block.reshape(member.repeat, self.size, -1).transpose(0, 1).reshape(self.size, -1)

    def unit_values(self, vector: torch.Tensor, member: Any) -> torch.Tensor:
        """A per-position ``vector`` along the member's dim (e.g. an input feature statistic) as a
        ``(units, positions)`` matrix."""
        idx = torch.tensor(member.indices(list(range(self.size))), device=vector.device)
        return vector.index_select(0, idx).reshape(member.repeat, self.size, -1).transpose(0, 1).reshape(self.size, -1)

    def inputs(self, key: str) -> list[tuple[Any, torch.Tensor, torch.Tensor]]:
        """``(member, tensor, statistic)`` for every member that reads the group as a layer's input features
        and has the input statistic ``key`` (e.g. down_proj's columns, the FFN channels, with their variance)."""
        return [(m, t, stats[key].float()) for m, t, _, stats in self.members
                if m.role == "in" and key in stats and stats[key].numel() == t.shape[m.dim]
                and int(stats.get("input_dim", m.dim)) == m.dim]

    def total(self, elementwise: Callable[[torch.Tensor, Mapping], torch.Tensor]) -> torch.Tensor:
        """Per unit, the sum of ``elementwise(tensor, stats)`` over every position it occupies."""
        out = torch.zeros(self.size)
        for member, tensor, _, stats in self.members:
            out += self.rows(elementwise(tensor, stats), member).sum(1).cpu()
        return out
