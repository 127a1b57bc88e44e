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


# ----------------------------------------------------------------------------------------------------- flops


def test_flops_hand_count_conv_linear_pool_bn():
    # conv 3->4, 3x3, bias, 8x8 output: 8*8*4*(27 + 1); BN: 3 per output; maxpool 2x2 -> 4x4: 4 per output;
    # linear 64->5 with bias: 64*5 + 5. ReLU, flatten: 0.
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 5)
    )
    expected = 8 * 8 * 4 * 28 + 3 * 4 * 8 * 8 + 4 * 4 * 4 * 4 + 64 * 5 + 5
    result = score("flops", net, torch.randn(3, 3, 8, 8), torch.tensor([0, 1, 2]))
    assert result.score == expected
    assert result.per_layer["0"] == 8 * 8 * 4 * 28 and result.per_layer["5"] == 325


def test_flops_grouped_conv_without_bias_and_attention():
    conv = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False))
    assert score("flops", conv, torch.randn(2, 8, 5, 5), torch.tensor([0, 1])).score == 5 * 5 * 8 * 9 * 2

    class Attn(nn.Module):
        def forward(self, x):
            return torch.nn.functional.scaled_dot_product_attention(x, x, x).flatten(1)

    # q k^T: 6*6*4 MACs, attn v: 6*6*4 MACs (per head, 1 head)
    model = nn.Sequential(nn.Linear(4, 4, bias=False), Attn())
    x = torch.randn(2, 6, 4)
    assert score("flops", model, x, torch.tensor([0, 1])).score == 6 * 4 * 4 + 2 * 6 * 6 * 4


@pytest.mark.parametrize(
    ("arch", "naslib_mflops"),
    [
        (ARCH, 122.345152),  # NB-201 index 117
        ("|nor_conv_3x3~0|+|avg_pool_3x3~0|nor_conv_3x3~1|+|nor_conv_1x1~0|nor_conv_3x3~1|none~2|", 121.054912),
    ],
)
def test_flops_matches_nas_bench_suite_zero(arch, naslib_mflops):
    result = score("flops", NB201Network(arch), torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    assert abs(result.score / 1e6 / naslib_mflops - 1) < 1e-4


def test_flops_leaves_the_model_alone_and_ignores_values():
    net = models.bn_cnn()
    net.train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(4, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 3])
    a = score("flops", net, x, y).score
    assert a == score("flops", net, x * 100, y).score
    assert net.training
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
