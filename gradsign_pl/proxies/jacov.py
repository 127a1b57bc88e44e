"""Jacobian covariance, "jacov" (Mellor et al., "Neural Architecture Search without Training", arXiv v1, 2020).

For a mini-batch x_1..x_n, with the model in train mode::

    J_i   = d sum(f(x)) / d x_i, flattened           # one backward of the summed output of the whole batch
    Sigma = corrcoef(J_1, ..., J_n)                   # n x n correlation matrix of the Jacobians
    score = -sum_j [ log(v_j + k) + 1 / (v_j + k) ],  v = eigenvalues of Sigma, k = 1e-5

Higher = better predicted accuracy (less correlated Jacobians: eigenvalues near 1 rather than near 0).

Matches ``eval_score`` in NASLib's ``naslib/predictors/utils/pruners/measures/jacov.py`` (``@measure("jacov",
bn=True)``): BatchNorm is kept and, the copy being in train mode, normalises with the batch statistics, so J_i
includes the (small) cross-sample terms through BN exactly like the authors' ``y.backward(ones_like(y))``.
Dropout layers are switched off. Eigenvalues come from ``eigvalsh`` (the matrix is symmetric) in float64.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from gradsign_pl.proxies._common import ScoringContext, finite_or_reason
from gradsign_pl.proxies._registry import register_proxy
from gradsign_pl.proxies._result import ProxyResult


def train_mode_copy(ctx: ScoringContext, *, requires_grad: bool = False) -> nn.Module:
    """Private copy in train mode (BatchNorm uses batch statistics, dropout off)."""
    return ctx.copy(train=True, requires_grad=requires_grad)


def output_tensor(output: Any, proxy: str) -> Tensor:
    if not isinstance(output, Tensor):
        raise TypeError(f"{proxy} needs a model returning a tensor, got {type(output).__name__}")
    return output


def jacov_from_jacobians(jacobians: Tensor, k: float = 1e-5) -> Tensor:
    """The jacov score of n flattened Jacobians (n x d), computed in float64."""
    corr = torch.corrcoef(jacobians.reshape(jacobians.shape[0], -1).double())
    if not bool(torch.isfinite(corr).all()):  # a constant Jacobian has no correlation
        return torch.tensor(float("nan"), dtype=torch.float64)
    v = torch.linalg.eigvalsh(corr)
    return -(torch.log(v + k) + 1.0 / (v + k)).sum()


@register_proxy("jacov")
def jacov(model: nn.Module, inputs: Tensor, targets: Tensor, *, k: float = 1e-5, loss_fn: Any = None) -> ProxyResult:
    """Jacobian covariance (NASWOT v1): eigenvalue score of the correlation of the n input-Jacobians.

    Args:
        model: any ``nn.Module`` returning a tensor; it is not modified.
        inputs: mini-batch of n >= 2 samples.
        targets: n targets, only validated (jacov is label-free).
        k: the regulariser added to the eigenvalues (1e-5 as in the authors' code).
        loss_fn: accepted and ignored (jacov uses no loss), so all proxies can be called alike.

    Returns:
        :class:`ProxyResult`; higher = better predicted accuracy; ``nan`` with ``reason`` when a Jacobian is
        constant (e.g. all zero), which leaves its correlation undefined.
    """
    with ScoringContext(model, inputs, targets) as ctx:
        net = train_mode_copy(ctx)
        x = ctx.inputs.detach().clone().requires_grad_(True)
        out = output_tensor(net(x), "jacov")
        (jac,) = torch.autograd.grad(out.sum(), x)
        value = jacov_from_jacobians(jac, k)
    score, reason = finite_or_reason(value, "the Jacobian correlation score (a constant Jacobian?)")
    return ctx.result(
        "jacov",
        score,
        n_params=sum(p.numel() for p in model.parameters()),
        options={"k": k, "batchnorm": "train (batch statistics)"},
        reason=reason,
    )
