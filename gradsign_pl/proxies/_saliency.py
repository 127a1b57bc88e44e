"""Helpers shared by the whole-batch saliency proxies (grad_norm, snip, grasp, fisher).

They score a private train-mode copy (BatchNorm with the mini-batch's statistics, dropout off), the
``weight`` of every Conv/Linear layer, from one forward pass of the whole mini-batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from gradsign_pl.proxies._common import LossFn, ScoringContext, check_output_and_loss, finite_or_reason
from gradsign_pl.proxies._result import ProxyResult

#: the layers whose ``weight`` the saliency proxies score (the reference uses Conv2d and Linear).
WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
WeightLayer = nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear


def weight_layers(net: nn.Module) -> dict[str, WeightLayer]:
    """``{"<module name>.weight": module}`` for every Conv/Linear layer of ``net`` (in ``modules()`` order)."""
    layers: dict[str, WeightLayer] = {
        f"{name}.weight" if name else "weight": m
        for name, m in net.named_modules()
        if isinstance(m, WEIGHT_LAYERS) and isinstance(getattr(m, "weight", None), Tensor)
    }
    if not layers:
        raise ValueError(
            f"the model ({type(net).__name__}) has no Conv1d/2d/3d or Linear layer, so these saliency proxies "
            "have no weights to score; use a proxy that scores all parameters (e.g. gradsign with params='all')"
        )
    return layers


def scoring_copy(ctx: ScoringContext) -> nn.Module:
    """Private train-mode copy (BatchNorm uses batch statistics, dropout off), every weight trainable."""
    return ctx.copy(train=True)


def batch_loss(net: nn.Module, ctx: ScoringContext, loss_fn: LossFn) -> Tensor:
    """The loss of the whole mini-batch in one forward pass, with the targets and loss checked."""
    output = net(ctx.inputs)
    if isinstance(output, Tensor) and output.ndim >= 1 and output.shape[0] == ctx.n:
        check_output_and_loss(output[:1], ctx.targets, loss_fn)
    loss = loss_fn(output, ctx.targets)
    if not isinstance(loss, Tensor) or loss.numel() != 1 or not loss.is_floating_point():
        raise ValueError(
            "loss_fn(model(inputs), targets) must return one floating-point scalar for the mini-batch; "
            "reduce it (e.g. reduction='mean')"
        )
    return loss.reshape(())


def weight_grads(loss: Tensor, weights: list[Tensor], *, create_graph: bool = False) -> list[Tensor]:
    """dL/dW for each weight (zeros where the loss does not depend on it)."""
    grads = torch.autograd.grad(loss, weights, allow_unused=True, create_graph=create_graph)
    return [torch.zeros_like(w) if g is None else g for w, g in zip(weights, grads)]


def finish(
    ctx: ScoringContext, proxy: str, per_layer: dict[str, Tensor], n_params: int, options: dict[str, Any]
) -> ProxyResult:
    """Sum the per-layer contributions (in float64) and build the result (``nan`` with a reason if not finite)."""
    values = {k: float(v) for k, v in per_layer.items()}
    total = torch.stack([v.detach().to(torch.float64) for v in per_layer.values()]).sum()
    score, reason = finite_or_reason(total, f"the {proxy} score")
    return ctx.result(proxy, score, n_params=n_params, options=options, per_layer=values, reason=reason)
