"""Graph capture and coupling rules: what must be pruned together."""

from .capture import CouplingGraph, capture
from .registry import register_rule, unregister_rule, user_rules
from .rules import BUILTIN
from .spaces import Group, Member
from .table import Rule, RuleTable

__all__ = ["BUILTIN", "CouplingGraph", "Group", "Member", "Rule", "RuleTable", "capture", "register_rule",
           "unregister_rule", "user_rules"]
