"""A Conv2d whose per-sample weight gradient stays cheap under ``torch.func.vmap`` on wide, small layers.

Under ``vmap(grad(...))`` PyTorch computes a convolution's input and per-sample weight gradients with one
grouped convolution over the chunk, for which it first copies the weight once per sample. For wide layers on
small feature maps (ResNet stage 4: 512x512x3x3 weights on 2x2 maps) the copy and the grouped kernel dominate
the whole score. Such calls go through a ``torch.autograd.Function`` with an explicit backward that ``vmap``
batches op by op (``generate_vmap_rule``):

* input gradient: ``convolution_backward`` for the input only (no weight copies);
* weight gradient: ``G_i @ unfold(X_i)^T``, a batched matmul over a small unfolded input.

Other calls keep PyTorch's own convolution, which is faster where maps are large. The gradients are the same
up to float rounding. Only plain ``nn.Conv2d`` instances are changed (subclasses with their own ``forward``,
e.g. timm's ``Conv2dSame``, keep theirs), and only inside the private copy a proxy scores.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _positions(x: Tensor, weight: Tensor, stride, padding, dilation) -> int:
    out = 1
    for size, k, s, p, d in zip(x.shape[-2:], weight.shape[-2:], stride, padding, dilation):
        out *= (size + 2 * p - d * (k - 1) - 1) // s + 1
    return out


def _unfold_pays(x: Tensor, weight: Tensor, stride, padding, dilation) -> bool:
    """Whether the unfold/matmul backward beats the grouped convolution: fewer output positions than input channels
    per group (or a 1x1 kernel)."""
    return _positions(x, weight, stride, padding, dilation) < weight.shape[1] or weight.shape[-2:] == (1, 1)


class _Conv2d(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None, stride, padding, dilation, groups: int) -> Tensor:
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, weight, bias, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx: Any, go: Tensor) -> tuple:
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        gx = gw = gb = None
        go = go.contiguous()
        if ctx.needs_input_grad[0]:
            gx = torch.ops.aten.convolution_backward(
                go, x, weight, None, stride, padding, dilation, False, [0, 0], groups, [True, False, False]
            )[0]
        if ctx.needs_input_grad[1]:
            c_out, c_in_g, kh, kw = weight.shape
            n, positions = x.shape[0], go.shape[-2] * go.shape[-1]
            cols = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)
            cols = cols.reshape(n, groups, c_in_g * kh * kw, positions)
            g = go.reshape(n, groups, c_out // groups, positions)
            gw = torch.matmul(g, cols.transpose(-1, -2))  # (n, groups, c_out/groups, c_in_g*kh*kw)
            gw = (gw[0] if n == 1 else gw.sum(0)).reshape(c_out, c_in_g, kh, kw)  # n == 1 per sample
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = go.sum((0, 2, 3))
        return gx, gw, gb, None, None, None, None


def _forward(self: nn.Conv2d, x: Tensor) -> Tensor:
    padding = self.padding
    if self.padding_mode != "zeros" or isinstance(padding, str):
        mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        x = F.pad(x, self._reversed_padding_repeated_twice, mode=mode)
        padding = (0, 0)
    if x.ndim == 4 and _unfold_pays(x, self.weight, self.stride, padding, self.dilation):
        return _Conv2d.apply(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)
    return F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)


def use_unfold_weight_grad(module: nn.Module) -> int:
    """Route every plain ``nn.Conv2d`` in ``module`` through :func:`_forward`; return how many."""
    count = 0
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and type(m).forward is nn.Conv2d.forward:
            # a per-instance forward is the point (mypy models methods as class-level only)
            m.forward = types.MethodType(_forward, m)  # type: ignore[method-assign]
            count += 1
    return count
