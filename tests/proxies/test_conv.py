"""The unfold-backward Conv2d used inside the scoring copy gives PyTorch's gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from gradsign_pl.proxies._conv import _unfold_pays, use_unfold_weight_grad

CONVS = {
    "3x3_small_map": dict(in_channels=16, out_channels=8, kernel_size=3, padding=1),
    "strided_dilated_bias": dict(
        in_channels=12, out_channels=6, kernel_size=3, stride=2, padding=2, dilation=2, bias=True
    ),
    "grouped": dict(in_channels=16, out_channels=8, kernel_size=3, padding=1, groups=4),
    "depthwise": dict(in_channels=16, out_channels=16, kernel_size=3, padding=1, groups=16),
    "pointwise": dict(in_channels=16, out_channels=32, kernel_size=1),
    "reflect": dict(in_channels=16, out_channels=8, kernel_size=3, padding=1, padding_mode="reflect"),
    "same": dict(in_channels=16, out_channels=8, kernel_size=(2, 3), padding="same"),
    "large_map": dict(in_channels=3, out_channels=4, kernel_size=3, padding=1),  # keeps PyTorch's conv
}


@pytest.mark.parametrize("name", list(CONVS))
def test_per_sample_gradients_match_pytorch(name):
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(**CONVS[name]), nn.Tanh(), nn.Conv2d(CONVS[name]["out_channels"], 2, 1)).double()
    x = torch.randn(5, CONVS[name]["in_channels"], 4, 4, dtype=torch.float64)
    fast = copy.deepcopy(conv)
    assert use_unfold_weight_grad(fast) == 2
    torch.testing.assert_close(fast(x), conv(x), rtol=0, atol=1e-12)

    def per_sample(model):
        params = {k: v.detach() for k, v in model.named_parameters()}
        loss = lambda p, xi: functional_call(model, p, (xi[None],)).pow(2).sum()  # noqa: E731
        return vmap(grad(loss), in_dims=(None, 0))(params, x)

    expected, got = per_sample(conv), per_sample(fast)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-10, atol=1e-12)


def test_the_unfold_path_is_taken_for_wide_layers_on_small_maps_only():
    w = torch.empty(512, 512, 3, 3)
    assert _unfold_pays(torch.empty(1, 512, 2, 2), w, (1, 1), (1, 1), (1, 1))
    assert not _unfold_pays(torch.empty(1, 512, 56, 56), w, (1, 1), (1, 1), (1, 1))
    assert _unfold_pays(torch.empty(1, 16, 56, 56), torch.empty(32, 16, 1, 1), (1, 1), (0, 0), (1, 1))


def test_conv_subclasses_with_their_own_forward_are_left_alone():
    class Custom(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * 2

    model = nn.Sequential(Custom(3, 3, 1), nn.Conv2d(3, 3, 1))
    assert use_unfold_weight_grad(model) == 1
    assert "forward" not in vars(model[0])
