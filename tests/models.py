"""Small models used across the tests."""

from __future__ import annotations

import torch
from torch import nn


def mlp(in_features: int = 12, hidden: int = 16, classes: int = 5) -> nn.Module:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, classes))


def bn_cnn(channels: int = 8, classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.Conv2d(channels, channels, 3, stride=2, padding=1),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, classes),
    )


def bn_head_cnn(channels: int = 8, classes: int = 10) -> nn.Module:
    """BatchNorm1d after global pooling: one value per channel for a single sample."""
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.BatchNorm1d(channels),
        nn.Linear(channels, classes),
    )


class DataDependent(nn.Module):
    """Branches on a tensor value in Python, which vmap cannot trace."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 4)
        self.b = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        if h.sum().item() > 0:
            h = h * 2
        return self.b(torch.relu(h))


class TinyCNN(nn.Module):
    """A small CNN for end-to-end tests: ``width`` channels, any input channels, ``num_classes`` outputs."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.AdaptiveAvgPool2d(2)
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class BrokenCNN(TinyCNN):
    """Builds, but its forward fails: a candidate that must be reported, not sink a ranking."""

    def forward(self, x):
        raise RuntimeError("this candidate's forward is broken on purpose")
