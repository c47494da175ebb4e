"""secateur: prune PyTorch and Hugging Face models so they get smaller and faster, measured.

>>> import torch, secateur as sc
>>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
>>> result = sc.prune(net, sc.Structured(sparsity=0.5), example_inputs=torch.randn(1, 8))
"""

__version__ = "0.1.0"

from .errors import (
    GraphCaptureError,
    InvalidSparsityError,
    ModelFileError,
    PruningError,
    RecipeError,
    SecateurError,
    UnknownCriterionError,
)
from .evaluate import accuracy
from .finetune import FinetuneResult, finetune
from .graph import register_rule
from .io import load, save
from .llm import Magnitude, SparseGPT, Wanda, perplexity
from .methods import Latency, Macs, Params, SemiStructured, Structured, Unstructured
from .onnx_export import OnnxModel, export_onnx
from .plan import Plan
from .profile import Profile, profile
from .prune import PruneResult, prune
from .quant import quantize
from .schedule import GradualPruning, iterative_prune
from .sensitivity import Sensitivity, allocate, sensitivity
from .structured import group_key

__all__ = [
    "FinetuneResult", "GraphCaptureError", "InvalidSparsityError", "Latency", "Macs", "ModelFileError", "OnnxModel",
    "Params", "Plan", "Profile", "PruneResult", "PruningError", "RecipeError", "SecateurError", "SemiStructured",
    "Structured",
    "UnknownCriterionError", "Unstructured", "__version__", "accuracy", "export_onnx", "finetune", "load",
    "profile", "prune", "quantize", "register_rule", "save", "GradualPruning", "iterative_prune", "Sensitivity",
    "allocate", "sensitivity", "group_key", "Magnitude", "SparseGPT", "Wanda", "perplexity",
]
