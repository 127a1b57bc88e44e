"""The params baseline."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradsign_pl import score
from gradsign_pl.spaces.nb201 import NB201Network
from tests import models

ARCH = "|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|avg_pool_3x3~0|nor_conv_3x3~1|avg_pool_3x3~2|"


def test_params_counts_every_parameter_once():
    net = NB201Network(ARCH)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    result = score("params", net, x, y, loss_fn=None)
    assert result.score == 830426  # NAS-Bench-Suite-Zero: 0.830426 M
    assert sum(result.per_layer.values()) == result.score


def test_shared_and_frozen_parameters():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(4, 2))
    model[3].weight.requires_grad_(False)
    x, y = torch.randn(3, 4), torch.tensor([0, 1, 0])
    assert score("params", model, x, y).score == 20 + 10
    assert score("params", model, x, y, trainable_only=True).score == 20 + 2


def test_params_validates_the_batch():
    with pytest.raises(ValueError, match="disagree on the number of samples"):
        score("params", models.mlp(), torch.randn(3, 12), torch.tensor([0, 1]))
