"""grad_norm (Abdelfattah et al., 2021, "Zero-Cost Proxies for Lightweight NAS"): size of the loss gradient.

For the Conv/Linear weight tensors W_l of the network and the loss L of one mini-batch (one forward)::

    score = sum_l || dL/dW_l ||_2          (Frobenius norm of each layer's weight gradient)

Higher predicts better trained accuracy. Semantics follow ``grad_norm.py`` in the authors' code (also in
NASLib's ``naslib/predictors/utils/pruners/measures/``): a copy of the model in train mode, so BatchNorm
normalises with the statistics of the whole mini-batch; biases and BatchNorm parameters are not scored.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from gradsign_pl.proxies._common import LossFn, ScoringContext, loss_name
from gradsign_pl.proxies._registry import register_proxy
from gradsign_pl.proxies._result import ProxyResult
from gradsign_pl.proxies._saliency import batch_loss, finish, scoring_copy, weight_grads, weight_layers


@register_proxy("grad_norm")
def grad_norm(model: nn.Module, inputs: Tensor, targets: Tensor, *, loss_fn: LossFn = F.cross_entropy) -> ProxyResult:
    """grad_norm: sum over Conv/Linear layers of the L2 norm of the weight gradient of the mini-batch loss.

    Args:
        model: any ``nn.Module`` with Conv/Linear layers; it is not modified (a private copy is scored).
        inputs: mini-batch of n >= 2 samples along dim 0 (the whole batch goes through one forward pass).
        targets: n targets (class indices for the default loss).
        loss_fn: ``loss_fn(model(inputs), targets)`` -> scalar loss of the batch (mean cross-entropy by default).

    Returns:
        :class:`ProxyResult`; ``score`` = sum_l ||dL/dW_l||_2, higher = better predicted accuracy;
        ``per_layer`` maps each weight name to its norm.
    """
    with ScoringContext(model, inputs, targets) as ctx:
        net = scoring_copy(ctx)
        layers = weight_layers(net)
        weights = [m.weight for m in layers.values()]
        grads = weight_grads(batch_loss(net, ctx, loss_fn), weights)
        per_layer = {k: g.detach().norm() for k, g in zip(layers, grads)}
    return finish(ctx, "grad_norm", per_layer, sum(w.numel() for w in weights), {"loss_fn": loss_name(loss_fn)})
