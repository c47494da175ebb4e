"""A map-style data set of token windows as Hugging Face ``Trainer`` reads them (dicts with labels)."""

import torch


class RowsDataset(torch.utils.data.Dataset):
    def __init__(self, windows: torch.Tensor) -> None:
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.windows[i], "labels": self.windows[i]}
