"""Importance criteria, one per module, found by name: ``magnitude``/``l2``, ``l1``, ``lamp``, ``fpgm``,
``bn_scale``, ``taylor``, ``hessian``, ``activation``, ``minitron``, ``flap``, ``random``; for whole blocks
``block_influence`` and ``angular``. Every module of this package is imported here, so a new criterion is
one new file (see ``docs/architecture.md``)."""

import importlib
import pkgutil

from .base import CRITERIA, Criterion, GroupWeights, criterion_name, get_criterion, register_criterion

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["CRITERIA", "Criterion", "GroupWeights", "criterion_name", "get_criterion", "register_criterion"]
