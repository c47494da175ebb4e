"""Built-in models and offline data sets, addressed as ``zoo:NAME`` from recipes and the CLI."""

from __future__ import annotations

from torch import nn

from .data import DATASETS, Dataset, Split, digits, mnist1d
from .models import MODELS, DigitsCNN, DigitsMLP, Mnist1dCNN


def build_model(name: str) -> nn.Module:
    """A fresh, randomly initialised zoo model.

    >>> type(build_model("digits-cnn")).__name__
    'DigitsCNN'
    """
    if name not in MODELS:
        raise KeyError(f"unknown zoo model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name][0]()


def load_dataset(name: str, seed: int = 0) -> Dataset:
    """An offline data set by name."""
    if name not in DATASETS:
        raise KeyError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name](seed)


__all__ = ["DATASETS", "MODELS", "Dataset", "DigitsCNN", "DigitsMLP", "Mnist1dCNN", "Split", "build_model",
           "digits", "load_dataset", "mnist1d"]
