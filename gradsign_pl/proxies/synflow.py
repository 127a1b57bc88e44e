"""SynFlow (Tanaka et al., NeurIPS 2020; as a zero-cost NAS proxy: Abdelfattah et al., ICLR 2021).

On a private copy of the model with every parameter (and floating buffer) replaced by its absolute value::

    R = sum(f_|theta|(1))                   # 1: an all-ones input of shape (1, *input_shape), float64
    score = sum_l sum_k | theta_lk * dR/dtheta_lk |     over the weights of Conv1d/2d/3d and Linear layers

Higher = better predicted accuracy. Only the input *shape* of the batch is used, never its values or targets.

BatchNorm: bypassed (every ``_BatchNorm`` layer is the identity), as ``copynet(bn=False)`` / ``@measure('synflow',
bn=False)`` do in the zero-cost-nas / NASLib code (``naslib/predictors/utils/pruners/predictive.py`` and
``measures/synflow.py``); ``synflow_bn`` there (BN kept) is not this proxy. The copy runs in eval mode so dropout
is off (the authors' copy is in train mode; with BN bypassed that only differs for dropout-like layers).
The copy is computed in float64 because the synaptic flow of NB-201-sized networks overflows float32.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from gradsign_pl.proxies._common import ScoringContext, finite_or_reason
from gradsign_pl.proxies._registry import register_proxy
from gradsign_pl.proxies._result import ProxyResult

WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _identity(self: nn.Module, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    return x


def bypass_batchnorm(net: nn.Module) -> int:
    """Make every BatchNorm layer of ``net`` the identity (in place); return how many were bypassed."""
    count = 0
    for m in net.modules():
        if isinstance(m, _BatchNorm):
            # a per-instance forward is the point (mypy models methods as class-level only)
            m.forward = types.MethodType(_identity, m)  # type: ignore[method-assign]
            count += 1
    return count


@register_proxy("synflow")
def synflow(model: nn.Module, inputs: Tensor, targets: Tensor, *, loss_fn: Any = None) -> ProxyResult:
    """SynFlow: sum of |theta * dR/dtheta| for R = sum of the output of the |theta| network on an all-ones input.

    Args:
        model: any ``nn.Module`` returning a tensor; it is not modified.
        inputs: mini-batch (n >= 2) -- only ``inputs.shape[1:]`` is used.
        targets: n targets, only validated (SynFlow is data- and label-free).
        loss_fn: accepted and ignored (SynFlow uses no loss), so all proxies can be called alike.

    Returns:
        :class:`ProxyResult`; ``score`` >= 0, higher = better predicted accuracy; ``per_layer`` holds each
        weight's contribution; ``nan`` with ``reason`` when the flow overflows even in float64.
    """
    with ScoringContext(model, inputs, targets) as ctx:
        net = ctx.copy(train=False).double()
        n_bn = bypass_batchnorm(net)
        with torch.no_grad():
            for t in list(net.parameters()) + list(net.buffers()):
                if t.is_floating_point():
                    t.abs_()
        names, weights = [], []
        for mod_name, m in net.named_modules():
            if isinstance(m, WEIGHT_LAYERS) and isinstance(m.weight, Tensor) and m.weight.requires_grad:
                names.append(f"{mod_name}.weight" if mod_name else "weight")
                weights.append(m.weight)
        if not weights:
            raise ValueError(
                f"the model ({type(model).__name__}) has no trainable Conv1d/2d/3d or Linear weights, so SynFlow "
                "has nothing to score"
            )
        ones = torch.ones((1, *ctx.inputs.shape[1:]), dtype=torch.float64, device=ctx.device)
        output = net(ones)
        if not isinstance(output, Tensor):
            raise TypeError(f"synflow needs a model returning a tensor, got {type(output).__name__}")
        grads = torch.autograd.grad(output.sum(), weights, allow_unused=True)
        per_layer = {}
        for name, w, g in zip(names, weights, grads):
            per_layer[name] = 0.0 if g is None else float((w.detach() * g).abs().sum())
    total = sum(per_layer.values())
    value, reason = finite_or_reason(total, "the synaptic flow (float64)")
    return ctx.result(
        "synflow",
        value,
        n_params=sum(w.numel() for w in weights),
        options={"input": "ones", "compute_dtype": "float64", "batchnorm": "bypassed", "n_batchnorm": n_bn},
        per_layer=per_layer,
        reason=reason,
    )
