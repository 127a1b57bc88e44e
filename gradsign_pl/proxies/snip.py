"""SNIP (Lee et al., 2019) as a zero-cost proxy (Abdelfattah et al., 2021): connection sensitivity.

For every Conv/Linear weight theta and the loss L of one mini-batch (one forward)::

    score = sum_theta | theta * dL/dtheta |

which is |dL/dc| for a multiplicative mask c = 1 on each connection (how the reference code computes it).
Higher predicts better trained accuracy. As in ``snip.py`` of the authors' code (and NASLib's
``naslib/predictors/utils/pruners/measures/``): private copy in train mode, so BatchNorm uses the statistics
of the mini-batch; biases and BatchNorm parameters are not scored.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from gradsign_pl.proxies._common import LossFn, ScoringContext, loss_name
from gradsign_pl.proxies._registry import register_proxy
from gradsign_pl.proxies._result import ProxyResult
from gradsign_pl.proxies._saliency import batch_loss, finish, scoring_copy, weight_grads, weight_layers


@register_proxy("snip")
def snip(model: nn.Module, inputs: Tensor, targets: Tensor, *, loss_fn: LossFn = F.cross_entropy) -> ProxyResult:
    """SNIP: sum over Conv/Linear weights of |theta * dL/dtheta| on one mini-batch.

    Args:
        model: any ``nn.Module`` with Conv/Linear layers; it is not modified (a private copy is scored).
        inputs: mini-batch of n >= 2 samples along dim 0 (the whole batch goes through one forward pass).
        targets: n targets (class indices for the default loss).
        loss_fn: ``loss_fn(model(inputs), targets)`` -> scalar loss of the batch (mean cross-entropy by default).

    Returns:
        :class:`ProxyResult`; ``score`` >= 0, higher = better predicted accuracy; ``per_layer`` maps each weight
        name to its sum of |theta * dL/dtheta| (they add up to the score).
    """
    with ScoringContext(model, inputs, targets) as ctx:
        net = scoring_copy(ctx)
        layers = weight_layers(net)
        weights = [m.weight for m in layers.values()]
        grads = weight_grads(batch_loss(net, ctx, loss_fn), weights)
        per_layer = {k: (w.detach() * g.detach()).abs().sum() for k, w, g in zip(layers, weights, grads)}
    return finish(ctx, "snip", per_layer, sum(w.numel() for w in weights), {"loss_fn": loss_name(loss_fn)})
