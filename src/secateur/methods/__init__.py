"""Pruning methods, one per module: ``Structured``, ``Unstructured``, ``SemiStructured`` and the one-shot
language-model methods ``Magnitude``, ``Wanda``, ``SparseGPT`` (with their sparsity profiles ``OWL``,
``BlockSensitivity``, ``LossSearch`` and the ``Reconstruction`` option). Every module of this package is
imported here, so a new method is one new file (see ``docs/architecture.md``)."""

import importlib
import pkgutil

from .base import METHODS, Latency, Macs, Method, Params, Target, register_method
from .magnitude import Magnitude
from .oneshot import OneShot
from .profiles import OWL, PROFILES, BlockSensitivity, LossSearch, Profile
from .reconstruction import Reconstruction
from .sparsegpt import SparseGPT
from .structured import UNITS, Structured
from .unstructured import SemiStructured, Unstructured
from .wanda import Wanda

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["METHODS", "OWL", "PROFILES", "UNITS", "BlockSensitivity", "Latency", "LossSearch", "Macs", "Magnitude",
           "Method", "OneShot", "Params", "Profile", "Reconstruction", "SemiStructured", "SparseGPT", "Structured",
           "Target", "Unstructured", "Wanda", "register_method"]
