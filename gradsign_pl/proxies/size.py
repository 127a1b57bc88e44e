"""Model-size baselines: ``params`` and ``flops``.

On real model zoos the plain parameter count ranks trained accuracy surprisingly well, so every ranking
reports the size of each candidate beside the zero-cost proxies.

FLOPs convention (the NAS-Bench-201 / NAS-Bench-Suite-Zero one, so that NB-201 figures compare directly):
operations are counted per sample for one forward pass in eval mode, with

* convolution, linear and matrix products: one per multiply-accumulate, plus one per output element for a bias;
* average / max pooling: ``prod(kernel_size)`` per output element (adaptive pooling is not counted);
* batch normalisation: 3 per output element;
* scaled dot-product attention: one per multiply-accumulate of its two matrix products;
* everything else (activations, additions, concatenation, ...): 0.

On the 725 CIFAR-10 NB-201 archs of ``nb201_zc_naslib_subset.csv`` this agrees with NASLib's ``flops`` column to
within 0.014% (``benchmarks/nb201_conformance.py``). The counting runs on
:class:`torch.utils.flop_counter.FlopCounterMode` with formulas for these conventions.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils import flop_counter

from gradsign_pl.proxies._common import ScoringContext
from gradsign_pl.proxies._registry import register_proxy
from gradsign_pl.proxies._result import ProxyResult


@register_proxy("params")
def params(
    model: nn.Module, inputs: Tensor, targets: Tensor, *, trainable_only: bool = False, loss_fn: Any = None
) -> ProxyResult:
    """Number of scalar parameters (higher = bigger model = predicted better).

    ``trainable_only``: count only parameters with ``requires_grad``. Shared parameters count once. The batch is
    only validated (it does not change the count); ``loss_fn`` is accepted and ignored so that every proxy can be
    called alike, and any other option is refused.
    """
    with ScoringContext(model, inputs, targets, min_samples=1) as ctx:
        per_layer = {n: float(p.numel()) for n, p in model.named_parameters() if p.requires_grad or not trainable_only}
    total = sum(per_layer.values())
    return ctx.result(
        "params", total, n_params=int(total), options={"trainable_only": trainable_only}, per_layer=per_layer
    )


def _macs(default_formula: Any) -> Any:
    """A flop formula counting multiply-accumulates from torch's 2-per-MAC ``default_formula``."""

    def formula(*args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return default_formula(*args, out_shape=out_shape, **kwargs) // 2

    return formula


def _first_shape(out_shape: Any) -> Any:
    return (
        out_shape[0]
        if isinstance(out_shape, (tuple, list)) and isinstance(out_shape[0], (tuple, list, torch.Size))
        else out_shape
    )


def _conv(
    x_shape, w_shape, bias, stride, padding, dilation, transposed, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    macs = flop_counter.conv_flop_count(x_shape, w_shape, out_shape, transposed=transposed) // 2
    return macs + (math.prod(out_shape) if bias is not None else 0)


def _addmm(bias_shape, a_shape, b_shape, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return a_shape[0] * a_shape[1] * b_shape[1] + math.prod(out_shape)


def _pool(x_shape, kernel_size, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    kernel = kernel_size if isinstance(kernel_size, (tuple, list)) else [kernel_size]
    if len(kernel) == 1:
        kernel = list(kernel) * (len(x_shape) - 2)
    return math.prod(kernel) * math.prod(_first_shape(out_shape))


def _batch_norm(*args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return 3 * math.prod(_first_shape(out_shape))


def _attention(q_shape, k_shape, v_shape, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    batch = math.prod(q_shape[:-2])
    return batch * q_shape[-2] * k_shape[-2] * (q_shape[-1] + v_shape[-1])


def _formulas() -> dict[Any, Any]:
    aten = torch.ops.aten
    registry = flop_counter.flop_registry
    mapping: dict[Any, Any] = {}
    for op in (aten.mm, aten.bmm, aten.baddbmm):
        mapping[op] = _macs(registry[op].__wrapped__)
    for name in (
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_fused_attention_overrideable",
    ):
        if hasattr(aten, name):
            mapping[getattr(aten, name)] = _attention
    mapping[aten.addmm] = _addmm
    for op in (aten.convolution, aten._convolution):
        mapping[op] = _conv
    for name in (
        "avg_pool1d",
        "avg_pool2d",
        "avg_pool3d",
        "max_pool1d",
        "max_pool2d",
        "max_pool3d",
        "max_pool2d_with_indices",
        "max_pool3d_with_indices",
    ):
        if hasattr(aten, name):
            mapping[getattr(aten, name)] = _pool
    for name in (
        "native_batch_norm",
        "_native_batch_norm_legit",
        "_native_batch_norm_legit_no_training",
        "cudnn_batch_norm",
        "miopen_batch_norm",
    ):
        if hasattr(aten, name):
            mapping[getattr(aten, name)] = _batch_norm
    return mapping


def count_flops(model: nn.Module, inputs: Tensor) -> tuple[int, dict[str, int]]:
    """Operations per sample for one eval-mode forward of ``model`` on ``inputs`` (see the module docstring).

    Returns ``(total, per_module)`` where ``per_module`` maps top-level module names to their share.
    """
    counter = flop_counter.FlopCounterMode(display=False, depth=2, custom_mapping=_formulas())
    with torch.no_grad(), counter:
        model(inputs)
    n = inputs.shape[0]
    counts = counter.get_flop_counts()
    per_module = {
        name.split(".", 1)[1]: sum(ops.values()) // n
        for name, ops in counts.items()
        if name != "Global" and name.count(".") == 1
    }
    return sum(counts["Global"].values()) // n, per_module


@register_proxy("flops")
def flops(model: nn.Module, inputs: Tensor, targets: Tensor, *, loss_fn: Any = None) -> ProxyResult:
    """Operations per sample for one forward pass, NAS-Bench-201 convention (higher = bigger = predicted better).

    One multiply-accumulate counts one operation (so NB-201's "FLOPs" are this count); pooling, batch norm and
    biases count as described in the module docstring. The count uses an eval-mode private copy on the first two
    samples of the batch; the batch's values do not change it, only its shape. ``loss_fn`` is accepted and
    ignored so that every proxy can be called alike; any other option is refused.
    """
    with ScoringContext(model, inputs, targets, min_samples=1) as ctx:
        net = ctx.copy(train=False, requires_grad=False)
        total, per_module = count_flops(net, ctx.inputs[:2])
        n_params = sum(p.numel() for p in model.parameters())
    return ctx.result(
        "flops", total, n_params=n_params, options={}, per_layer={k: float(v) for k, v in per_module.items()}
    )
