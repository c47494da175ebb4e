"""Built-in models and offline data sets, addressed as ``zoo:NAME`` from recipes and the command line.

Every entry knows how to make the model and example inputs of the shape it takes (and, for the
classifiers, which offline data set it is built for). Hugging Face entries need the ``hf`` extra.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ModelFileError
from .data import DATASETS, Dataset, Split, check_data, digits, load_dataset, mnist1d
from .hf import HF
from .models import DigitsCNN, DigitsMLP, Mnist1dCNN
from .tricky import TRICKY


@dataclass(frozen=True)
class Entry:
    """A zoo model: a factory, example inputs it takes, and the data set it is built for (if any)."""

    make: Callable[[], nn.Module]
    example: Callable[[], object]
    data: str | None = None


def _signal(channels: int, length: int) -> Callable[[], tuple]:
    return lambda: (torch.rand(2, channels, length),)


ZOO: dict[str, Entry] = {
    "digits-cnn": Entry(DigitsCNN, lambda: (torch.rand(2, 1, 8, 8),), "digits"),
    "digits-mlp": Entry(DigitsMLP, lambda: (torch.rand(2, 1, 8, 8),), "digits"),
    "mnist1d-cnn": Entry(Mnist1dCNN, _signal(1, 40), "mnist1d"),
    **{name: Entry(make, example) for name, (make, example) in {**TRICKY, **HF}.items()},
}


def entry(name: str) -> Entry:
    """The zoo entry ``name``, or a named error listing them."""
    if name not in ZOO:
        raise ModelFileError(f"unknown zoo model {name!r}; choose one of {', '.join(sorted(ZOO))}")
    return ZOO[name]


def build_model(name: str) -> nn.Module:
    """A fresh, randomly initialised zoo model.

    >>> type(build_model("digits-cnn")).__name__
    'DigitsCNN'
    """
    return entry(name).make()


__all__ = ["DATASETS", "ZOO", "Dataset", "DigitsCNN", "DigitsMLP", "Entry", "Mnist1dCNN", "Split", "build_model",
           "check_data", "digits", "entry", "load_dataset", "mnist1d"]
