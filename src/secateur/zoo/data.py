"""Offline data sets, as tensors split into train / validation / test."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset


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
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = (raw.images / 16.0).astype(np.float32)[:, None]
    return Dataset("digits", *_split(x, raw.target.astype(np.int64), seed))


def mnist1d(seed: int = 0) -> Dataset:
    """The ``mnist1d`` benchmark (Greydanus 2020) generated offline with ``make_dataset()``: 40-sample
    1-D signals as ``(N, 1, 40)``; its 4000 training signals split 90/10 into train/val, 1000 test.
    Needs the ``mnist1d`` package (``pip install -e '.[bench]'``)."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:
        raise ImportError("the mnist1d data set needs the mnist1d package: pip install -e '.[bench]'") from exc
    raw = make_dataset(get_dataset_args())  # generated locally; never the download path
    x, y = raw["x"].astype(np.float32)[:, None], raw["y"].astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.9 * len(x))
    split = lambda idx: Split(torch.as_tensor(x[idx]), torch.as_tensor(y[idx]))  # noqa: E731
    test = Split(torch.as_tensor(raw["x_test"].astype(np.float32)[:, None]), torch.as_tensor(raw["y_test"]))
    return Dataset("mnist1d", split(order[:cut]), split(order[cut:]), test)


DATASETS = {"digits": digits, "mnist1d": mnist1d}
