"""GraSP (Wang et al., 2020) as a zero-cost proxy (Abdelfattah et al., 2021): gradient-signal preservation.

With the Conv/Linear weights theta, the mini-batch loss L, its gradient g = dL/dtheta and the Hessian H::

    score = sum_theta ( -theta * (H g) )

``H g`` is a Hessian-vector product: the gradient of ``z = sum(stop_grad(g) * dL/dtheta)`` with respect to theta
(a second backward through the first one). The sign is the one of ``grasp.py`` in the authors' code (NASLib's
``naslib/predictors/utils/pruners/measures/grasp.py``): ``-theta * Hg`` per weight, summed, and ranked with
higher = better (NASLib's ZeroCost predictor uses the sum as is). The authors note that accuracy correlated
negatively with ``+theta * Hg``, hence the minus sign. The score can be negative.

Private copy in train mode (BatchNorm uses the mini-batch statistics), temperature T = 1. The reference runs two
forward passes (one for g, one for the graph that is differentiated twice); this runs one forward with
``create_graph=True``, which gives the same numbers for a deterministic forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradsign_pl.proxies._common import LossFn, ScoringContext, loss_name
from gradsign_pl.proxies._registry import register_proxy
from gradsign_pl.proxies._result import ProxyResult
from gradsign_pl.proxies._saliency import batch_loss, finish, scoring_copy, weight_grads, weight_layers


@register_proxy("grasp")
def grasp(model: nn.Module, inputs: Tensor, targets: Tensor, *, loss_fn: LossFn = F.cross_entropy) -> ProxyResult:
    """GraSP: sum over Conv/Linear weights of -theta * (H g), H the Hessian and g the gradient of the batch loss.

    Args:
        model: any ``nn.Module`` with Conv/Linear layers; it is not modified (a private copy is scored).
            Its forward must be twice differentiable (no ``torch.no_grad`` / custom backward without double
            backward).
        inputs: mini-batch of n >= 2 samples along dim 0 (the whole batch goes through one forward pass).
        targets: n targets (class indices for the default loss).
        loss_fn: ``loss_fn(model(inputs), targets)`` -> scalar loss of the batch (mean cross-entropy by default).

    Returns:
        :class:`ProxyResult`; ``score`` (any sign), higher = better predicted accuracy (the authors' sign);
        ``per_layer`` maps each weight name to its sum of -theta * Hg (they add up to the score).
    """
    with ScoringContext(model, inputs, targets) as ctx:
        net = scoring_copy(ctx)
        layers = weight_layers(net)
        weights = [m.weight for m in layers.values()]
        grads = weight_grads(batch_loss(net, ctx, loss_fn), weights, create_graph=True)
        z = sum((g.detach() * g).sum() for g in grads if g.requires_grad)
        if isinstance(z, Tensor):
            hg = weight_grads(z, weights)
        else:  # the loss does not depend on any scored weight
            hg = [torch.zeros_like(w) for w in weights]
        per_layer = {k: -(w.detach() * h.detach()).sum() for k, w, h in zip(layers, weights, hg)}
    return finish(ctx, "grasp", per_layer, sum(w.numel() for w in weights), {"loss_fn": loss_name(loss_fn), "T": 1})
