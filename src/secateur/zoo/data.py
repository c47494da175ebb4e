"""Offline data sets, as tensors split into train / validation / test."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from ..deps import require
from ..errors import MissingDependencyError, ModelFileError


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor

    def loader(self, batch_size: int = 64, shuffle: bool = False, seed: int = 0) -> DataLoader:
        """Batches of ``(x, y)``; shuffling is seeded so runs repeat exactly."""
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(TensorDataset(self.x, self.y), batch_size=batch_size, shuffle=shuffle, generator=gen)


@dataclass
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split

    @property
    def example(self) -> torch.Tensor:
        """One input sample with its batch dimension (for tracing and counting MACs per sample)."""
        return self.test.x[:1]


def _split(x: np.ndarray, y: np.ndarray, seed: int, fractions=(0.7, 0.1)) -> tuple[Split, Split, Split]:
    order = np.random.default_rng(seed).permutation(len(x))
    n_train, n_val = int(fractions[0] * len(x)), int(fractions[1] * len(x))
    parts = np.split(order, [n_train, n_train + n_val])
    return tuple(Split(torch.as_tensor(x[p]), torch.as_tensor(y[p])) for p in parts)


def digits(seed: int = 0) -> Dataset:
    """scikit-learn's 1797 8x8 digit images as ``(N, 1, 8, 8)`` floats in [0, 1]; 70/10/20 split.

    >>> digits().test.x.shape
    torch.Size([361, 1, 8, 8])
    """
    raw = require("sklearn.datasets", "the digits data set").load_digits()
    x = (raw.images / 16.0).astype(np.float32)[:, None]
    return Dataset("digits", *_split(x, raw.target.astype(np.int64), seed))


def mnist1d(seed: int = 0) -> Dataset:
    """The ``mnist1d`` benchmark (Greydanus 2020) generated offline with ``make_dataset()``: 40-sample
    1-D signals as ``(N, 1, 40)``; its 4000 training signals split 90/10 into train/val, 1000 test.
    Needs the ``mnist1d`` package (``pip install -e '.[bench]'``)."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise MissingDependencyError("the mnist1d data set needs the mnist1d package: pip install "
                                     "'secateur[bench]'") from None
    raw = make_dataset(get_dataset_args())  # generated locally; never the download path
    x, y = raw["x"].astype(np.float32)[:, None], raw["y"].astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.9 * len(x))
    split = lambda idx: Split(torch.as_tensor(x[idx]), torch.as_tensor(y[idx]))  # noqa: E731
    test = Split(torch.as_tensor(raw["x_test"].astype(np.float32)[:, None]), torch.as_tensor(raw["y_test"]))
    return Dataset("mnist1d", split(order[:cut]), split(order[cut:]), test)


def from_npz(path: str | Path, seed: int = 0) -> Dataset:
    """A data set of your own: a ``.npz`` file (read without pickle) holding ``x`` and ``y`` (split 70/10/20
    with ``seed``) or ``x_train``, ``y_train``, ``x_test``, ``y_test`` (and optionally ``x_val``, ``y_val``).
    ``x`` is anything the model takes with a batch dimension first; ``y`` integer class labels."""
    try:
        with np.load(path, allow_pickle=False) as raw:
            arrays = {k: raw[k] for k in raw.files}
    except (OSError, ValueError) as err:
        raise ModelFileError(f"{path} is not a readable .npz file ({err})") from None
    x = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
    y = lambda a: torch.as_tensor(np.asarray(a, dtype=np.int64))  # noqa: E731
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        train, test = Split(x(arrays["x_train"]), y(arrays["y_train"])), Split(x(arrays["x_test"]), y(arrays["y_test"]))
        val = Split(x(arrays["x_val"]), y(arrays["y_val"])) if "x_val" in arrays else test
        return Dataset(Path(path).stem, train, val, test)
    if {"x", "y"} <= arrays.keys() and len(arrays["x"]) == len(arrays["y"]) and len(arrays["x"]) >= 10:
        return Dataset(Path(path).stem, *_split(arrays["x"].astype(np.float32), arrays["y"].astype(np.int64), seed))
    raise ModelFileError(f"{path} holds {sorted(arrays)}; a data file needs x and y (10 samples or more), or "
                         "x_train, y_train, x_test and y_test")


DATASETS = {"digits": digits, "mnist1d": mnist1d}


def check_data(name: str) -> str:
    """``name`` if it is a built-in data set or an existing ``.npz`` file, else a named error."""
    if name in DATASETS or (name.endswith(".npz") and Path(name).is_file()):
        return name
    raise ModelFileError(f"unknown data {name!r}; choose one of {', '.join(DATASETS)} or give a .npz file "
                         "(arrays x and y, or x_train, y_train, x_test, y_test)")


def load_dataset(name: str, seed: int = 0) -> Dataset:
    """A built-in data set by name, or a ``.npz`` file of your own."""
    check_data(name)
    return DATASETS[name](seed) if name in DATASETS else from_npz(name, seed)
