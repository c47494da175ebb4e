"""Built-in models for the demo, tests and benchmarks."""

from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """A small residual CNN for 8x8 digits: conv-bn-relu x2, pool, a residual conv block, two Linears."""

    def __init__(self, width: int = 32, classes: int = 10) -> None:
        super().__init__()
        w2 = 2 * width
        self.conv1, self.bn1 = nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, w2, 3, padding=1), nn.BatchNorm2d(w2)
        self.pool = nn.MaxPool2d(2)
        self.conv3, self.bn3 = nn.Conv2d(w2, w2, 3, padding=1), nn.BatchNorm2d(w2)
        self.fc1 = nn.Linear(w2 * 16, 64)
        self.fc2 = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        x = x + torch.relu(self.bn3(self.conv3(x)))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


class DigitsMLP(nn.Module):
    """A fully connected net for 8x8 digits (flattened): 64 -> 512 -> 256 -> 10."""

    def __init__(self, hidden: tuple[int, int] = (512, 256), classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(64, hidden[0]), nn.ReLU(), nn.Linear(hidden[0], hidden[1]), nn.ReLU(),
            nn.Linear(hidden[1], classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Mnist1dCNN(nn.Module):
    """A 1-D CNN for mnist1d: three conv-bn-relu layers with a residual, global pooling, two Linears."""

    def __init__(self, width: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv1d(1, width, 5, padding=2), nn.BatchNorm1d(width)
        self.conv2, self.bn2 = nn.Conv1d(width, 2 * width, 3, padding=1), nn.BatchNorm1d(2 * width)
        self.conv3, self.bn3 = nn.Conv1d(2 * width, 2 * width, 3, padding=1), nn.BatchNorm1d(2 * width)
        self.fc1 = nn.Linear(2 * width * 10, 128)
        self.fc2 = nn.Linear(128, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = nn.functional.max_pool1d(torch.relu(self.bn2(self.conv2(x))), 2)
        x = nn.functional.max_pool1d(x + torch.relu(self.bn3(self.conv3(x))), 2)
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


MODELS = {"digits-cnn": (DigitsCNN, "digits"), "digits-mlp": (DigitsMLP, "digits"),
          "mnist1d-cnn": (Mnist1dCNN, "mnist1d")}
