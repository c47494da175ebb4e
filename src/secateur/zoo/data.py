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


DATASETS = {"digits": digits}
