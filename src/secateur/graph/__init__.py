"""Graph capture and coupling rules: what must be pruned together."""

from .capture import CouplingGraph, capture
from .rules import register_rule
from .spaces import Group, Member

__all__ = ["CouplingGraph", "Group", "Member", "capture", "register_rule"]
