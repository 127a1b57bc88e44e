"""Fisher (Theis et al., 2018; Turner et al., 2020) as a zero-cost proxy (Abdelfattah et al., 2021).

Take the activation a of every Conv/Linear layer -- its output, before any BatchNorm or nonlinearity -- and
the gradient of the mini-batch loss L with respect to it. Per sample n and output channel k::

    g_nk = sum_{spatial s} a_nks * dL/da_nks           (for Linear: a_nk * dL/da_nk)
    F_k  = 0.5 * mean_n g_nk ** 2

The reference (``fisher.py`` of the authors' code; NASLib ``naslib/predictors/utils/pruners/measures/fisher.py``)
scores channels, then broadcasts each F_k to every weight of that channel (``weight.shape[1:]``: in_channels /
groups x kernel for a convolution, in_features for Linear) before summing all values, so by default::

    score = sum_layers sum_k F_k * fan_in_l            (per_weight=True, the published numbers)
    score = sum_layers sum_k F_k                       (per_weight=False, the plain channel sum)

Higher predicts better trained accuracy; the score is >= 0. Private copy in train mode, so BatchNorm uses the
mini-batch statistics (NASLib's ``bn=True``); L is the mean loss of the whole batch in one forward pass.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradsign_pl.proxies._common import LossFn, ScoringContext, loss_name
from gradsign_pl.proxies._registry import register_proxy
from gradsign_pl.proxies._result import ProxyResult
from gradsign_pl.proxies._saliency import batch_loss, finish, scoring_copy, weight_layers


def channel_fisher(act: Tensor, grad: Tensor) -> Tensor:
    """F_k = 0.5 * mean_n (sum_spatial act * grad)^2 for activations of shape (n, channels, *spatial)."""
    g = act * grad
    if g.ndim > 2:
        g = g.sum(dim=tuple(range(2, g.ndim)))
    return 0.5 * g.pow(2).mean(0)


@register_proxy("fisher")
def fisher(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    *,
    loss_fn: LossFn = F.cross_entropy,
    per_weight: bool = True,
) -> ProxyResult:
    """Fisher: per-channel 0.5 * mean_n (sum_spatial activation * its gradient)^2 of Conv/Linear outputs, summed.

    Args:
        model: any ``nn.Module`` with Conv/Linear layers; it is not modified (a private copy is scored).
        inputs: mini-batch of n >= 2 samples along dim 0 (the whole batch goes through one forward pass).
        targets: n targets (class indices for the default loss).
        loss_fn: ``loss_fn(model(inputs), targets)`` -> scalar loss of the batch (mean cross-entropy by default).
        per_weight: weight each channel by the number of weights feeding it (``weight.shape[1:]``), as the
            reference's broadcast-then-sum does (default); ``False`` sums the channel values only.

    Returns:
        :class:`ProxyResult`; ``score`` >= 0, higher = better predicted accuracy; ``per_layer`` maps each
        layer's weight name to its contribution (they add up to the score).
    """
    with ScoringContext(model, inputs, targets) as ctx:
        net = scoring_copy(ctx)
        layers = weight_layers(net)
        acts: dict[str, list[Tensor]] = {k: [] for k in layers}

        def make_hook(key: str):
            def hook(module: nn.Module, args: object, output: Tensor) -> Tensor:
                acts[key].append(output)
                # a fresh tensor downstream, so an in-place op after the layer (ReLU(inplace=True)) cannot
                # overwrite the activation whose gradient is taken
                return output.clone()

            return hook

        handles = [m.register_forward_hook(make_hook(k)) for k, m in layers.items()]
        try:
            loss = batch_loss(net, ctx, loss_fn)
        finally:
            for h in handles:
                h.remove()
        flat = [(k, a) for k, calls in acts.items() for a in calls if a.requires_grad]
        grads = torch.autograd.grad(loss, [a for _, a in flat], allow_unused=True) if flat else []
        per_layer = {k: torch.zeros((), dtype=ctx.dtype, device=ctx.device) for k in layers}
        for (k, a), g in zip(flat, grads):
            if g is None:
                continue
            value = channel_fisher(a.detach(), g.detach()).sum()
            if per_weight:
                value = value * math.prod(layers[k].weight.shape[1:])
            per_layer[k] = per_layer[k] + value
        n_params = sum(m.weight.numel() for m in layers.values())
    return finish(ctx, "fisher", per_layer, n_params, {"loss_fn": loss_name(loss_fn), "per_weight": per_weight})
