"""Small models used across the tests."""

from __future__ import annotations

import torch
from torch import nn


def mlp(in_features: int = 12, hidden: int = 16, classes: int = 5) -> nn.Module:
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, classes)
    )


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


class FailingModule(__import__("lightning.pytorch").pytorch.LightningModule):
    """A training module that cannot train: every candidate trained in it fails."""

    def __init__(self, backbone=None, num_classes: int = 10) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return self.backbone(x)

    def training_step(self, batch, batch_idx):
        raise RuntimeError("training is broken on purpose")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class ExplodingDataModule(__import__("lightning.pytorch").pytorch.LightningDataModule):
    """Has the attributes gradsign-fit checks, then fails in setup: an unexpected error, not a usage error."""

    num_classes, in_chans, image_size = 10, 1, 8

    def setup(self, stage=None):
        raise RuntimeError("the data exploded")

    def train_dataloader(self):
        raise RuntimeError("the data exploded")


class KillAtStep(__import__("lightning.pytorch").pytorch.Callback):
    """Kills the process (no clean-up, as a crash or a pre-emption would) after the optimiser step given by
    ``$GRADSIGN_TEST_KILL_AT_STEP`` (unset: does nothing), so a recipe is the same whether or not it is killed."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        import os

        step = int(os.environ.get("GRADSIGN_TEST_KILL_AT_STEP", "0"))
        if step and trainer.global_step >= step:
            import os
            import sys

            print(f"killed at step {trainer.global_step}", file=sys.stderr, flush=True)
            os._exit(9)
