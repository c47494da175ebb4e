"""Optional dependencies: each lives in an extra, and a missing one is a clear, named error.

    pip install 'secateur[onnx]'    # onnx, onnxscript, onnxruntime: export, quantization, ORT latency
    pip install 'secateur[hf]'      # transformers, gguf, accelerate: Hugging Face models, SmolLM2
    pip install 'secateur[plots]'   # matplotlib: report plots
    pip install 'secateur[demo]'    # the above for the demo, plus scikit-learn's digits
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

EXTRAS = {"onnx": "onnx", "onnxscript": "onnx", "onnxruntime": "onnx", "matplotlib": "plots", "transformers": "hf",
          "gguf": "hf", "accelerate": "hf", "sklearn": "demo", "tensorboard": "logging", "mnist1d": "bench"}


def require(module: str, purpose: str = "") -> ModuleType:
    """Import ``module``, or raise :class:`MissingDependencyError` naming the extra that installs it.

    >>> require("json").__name__
    'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        extra = EXTRAS.get(top)
        hint = f"pip install 'secateur[{extra}]'" if extra else f"pip install {top}"
        raise MissingDependencyError(f"{purpose or 'this'} needs {top}, which is not installed ({err}); "
                                     f"{hint}") from None
