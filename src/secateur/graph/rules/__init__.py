"""The built-in coupling rules, one table per family of ATen ops; :data:`BUILTIN` is their sum.

A rule ``fn(walk, node) -> value`` says where the channel spaces of an op's inputs go in its output
(a list of values for an op with several outputs); whatever it cannot carry forward it must block.
Each family module imports only types and helpers, and exports its table as a value.

>>> BUILTIN["linear"].__module__
'secateur.graph.rules.linear'
"""

from __future__ import annotations

from ..table import RuleTable
from .attention import ATTENTION
from .conv import CONV
from .elementwise import ELEMENTWISE
from .embedding import EMBEDDING
from .gather import GATHER
from .indexing import INDEXING
from .layout import LAYOUT
from .linear import LINEAR
from .norms import NORMS
from .recurrent import RECURRENT
from .reduction import REDUCTION

FAMILIES = (ELEMENTWISE, LAYOUT, INDEXING, GATHER, REDUCTION, LINEAR, CONV, NORMS, EMBEDDING, ATTENTION, RECURRENT)
BUILTIN: RuleTable = sum(FAMILIES, RuleTable())

__all__ = ["ATTENTION", "BUILTIN", "CONV", "ELEMENTWISE", "EMBEDDING", "FAMILIES", "GATHER", "INDEXING", "LAYOUT",
           "LINEAR", "NORMS", "RECURRENT", "REDUCTION"]
