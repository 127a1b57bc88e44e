"""Plain reference implementations the proxies are checked against (no torch.func, no chunking)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def scoring_network(model: nn.Module, x: torch.Tensor, bn_policy: str) -> nn.Module:
    """A copy in eval mode whose BatchNorm layers use per-sample or whole-batch (fixed) statistics."""
    net = copy.deepcopy(model).eval()
    bns = [m for m in net.modules() if isinstance(m, _BatchNorm)]
    for bn in bns:  # train mode without running statistics: normalise with the statistics of what comes in
        bn.train()
        bn.track_running_stats = False
        bn.running_mean = bn.running_var = None
    if bn_policy == "batch":
        seen = {}
        hooks = [bn.register_forward_pre_hook(lambda m, a: seen.__setitem__(m, a[0].detach().clone())) for bn in bns]
        with torch.no_grad():
            net(x)
        for h in hooks:
            h.remove()
        for bn in bns:
            inp = seen[bn]
            dims = [0, *range(2, inp.ndim)]
            bn.eval()
            bn.track_running_stats = True
            bn.running_mean = inp.mean(dims)
            bn.running_var = inp.var(dims, unbiased=False)
    return net


def per_sample_weight_gradients(model, x, y, *, bn_policy="per_sample", loss_fn=F.cross_entropy):
    """n x m matrix of per-sample gradients of all Conv/Linear weights, one backward per sample."""
    net = scoring_network(model, x, bn_policy)
    layers = [m for m in net.modules() if isinstance(m, WEIGHT_LAYERS)]
    rows = []
    for i in range(x.shape[0]):
        net.zero_grad()
        loss_fn(net(x[i : i + 1]), y[i : i + 1]).backward()
        rows.append(
            torch.cat(
                [(m.weight.grad if m.weight.grad is not None else torch.zeros_like(m.weight)).flatten() for m in layers]
            )
        )
    return torch.stack(rows)


def reference_gradsign(model, x, y, **kwargs) -> float:
    """sum_k |sum_i sign(g_ik)| from the explicit n x m gradient matrix."""
    g = per_sample_weight_gradients(model, x, y, **kwargs)
    return float(g.sign().sum(0).abs().sum())
