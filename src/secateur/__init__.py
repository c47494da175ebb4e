"""secateur: prune PyTorch and Hugging Face models so they get smaller and faster, measured.

>>> import torch, secateur as sc
>>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
>>> result = sc.prune(net, sc.Structured(sparsity=0.5), example_inputs=torch.randn(1, 8))
>>> sc.analyze(net, torch.randn(1, 8)).prunable[0].size
8

Names are imported on first use, so ``import secateur`` (and the command line) starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_EXPORTS = {
    "errors": ["GraphCaptureError", "InputError", "InvalidParameterError", "InvalidSparsityError",
               "MissingDependencyError", "ModelFileError", "PruningError", "RecipeError", "SecateurError",
               "UnknownCriterionError", "UnknownMethodError", "CheckpointError", "FolderLockedError",
               "NotExpressibleError", "OutputError", "OutputExistsError"],
    "methods": ["BlockSensitivity", "Latency", "LossSearch", "Macs", "Magnitude", "Method", "OWL", "OneShot", "Params",
                "Reconstruction", "SemiStructured", "SparseGPT", "Structured", "Unstructured", "Wanda",
                "register_method"],
    "criteria": ["Criterion", "register_criterion"],
    "pruning": ["prune"],
    "results": ["PruneResult", "UnitReport"],
    "handlers": ["register_handler"],
    "plan": ["Plan", "apply"],
    "planner": ["Planner"],
    "analysis": ["Analysis", "analyze"],
    "structured": ["group_key"],
    "masks": ["unmask"],
    "graph": ["register_rule"],
    "io": ["load", "save", "save_pretrained"],
    "training": ["FinetuneResult", "finetune"],
    "training.hf": ["DistillationTrainer", "PruningCallback"],
    "loss": ["ForwardLoss"],
    "tracking": ["TensorBoard"],
    "schedule": ["GradualPruning", "iterative_prune"],
    "allocation": ["Sensitivity", "allocate", "sensitivity"],
    "evaluate": ["accuracy"],
    "llm.corpus": ["perplexity"],
    "llm.shards": ["CheckpointResult", "prune_checkpoint"],
    "onnx_export": ["OnnxModel", "export_onnx"],
    "profiling": ["Profile", "profile"],
    "quant": ["quantize"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        try:  # a submodule: secateur.criteria, secateur.zoo, ...
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module 'secateur' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .allocation import Sensitivity, allocate, sensitivity
    from .criteria import Criterion, register_criterion
    from .errors import (
        CheckpointError,
        FolderLockedError,
        GraphCaptureError,
        InputError,
        InvalidParameterError,
        InvalidSparsityError,
        MissingDependencyError,
        ModelFileError,
        NotExpressibleError,
        OutputError,
        OutputExistsError,
        PruningError,
        RecipeError,
        SecateurError,
        UnknownCriterionError,
        UnknownMethodError,
    )
    from .evaluate import accuracy
    from .graph import register_rule
    from .handlers import register_handler
    from .io import load, save, save_pretrained
    from .llm.corpus import perplexity
    from .llm.shards import CheckpointResult, prune_checkpoint
    from .loss import ForwardLoss
    from .masks import unmask
    from .methods import (
        OWL,
        BlockSensitivity,
        Latency,
        LossSearch,
        Macs,
        Magnitude,
        Method,
        OneShot,
        Params,
        Reconstruction,
        SemiStructured,
        SparseGPT,
        Structured,
        Unstructured,
        Wanda,
        register_method,
    )
    from .onnx_export import OnnxModel, export_onnx
    from .plan import Plan, apply
    from .planner import Planner
    from .profiling import Profile, profile
    from .pruning import prune
    from .quant import quantize
    from .results import PruneResult, UnitReport
    from .schedule import GradualPruning, iterative_prune
    from .structured import group_key
    from .tracking import TensorBoard
    from .training import FinetuneResult, finetune
    from .training.hf import DistillationTrainer, PruningCallback
