"""NASWOT (Mellor et al., "Neural Architecture Search without Training", ICML 2021).

For a mini-batch x_1..x_n, with c_i the binary code of sample i (1 where the input of a ReLU-type module is > 0,
concatenated over every such module in the network)::

    K_ij  = c_i . c_j + (1 - c_i) . (1 - c_j)     # units where samples i and j agree (N_A - Hamming distance)
    score = log |det K|                           # slogdet

Higher = better predicted accuracy (samples are told apart by their activation patterns).

Follows ``compute_nwot`` in NASLib's ``naslib/predictors/utils/pruners/measures/nwot.py`` (the code of
BayesWatch/nas-without-training v2): forward hooks on ReLU modules, codes ``input > 0``, K summed over layers,
``np.linalg.slogdet`` log-magnitude; ``@measure("nwot", bn=True)`` keeps BatchNorm and the copy is in train mode,
so BN normalises with the batch statistics. Hooked modules are torch.nn's ReLU family (ReLU, ReLU6, LeakyReLU,
PReLU, RReLU) -- the authors match any module whose type name contains "ReLU", which can also hook composite
blocks such as NB-201's ``ReLUConvBN`` and count their ReLU twice; functional ``F.relu`` calls are not seen.
Dropout is off. K is accumulated in float64 (exact counts).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from gradsign_pl.proxies._common import ScoringContext, finite_or_reason
from gradsign_pl.proxies._registry import register_proxy
from gradsign_pl.proxies._result import ProxyResult
from gradsign_pl.proxies.jacov import train_mode_copy

RELU_TYPES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU)


@register_proxy("naswot")
def naswot(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    *,
    activations: tuple[type[nn.Module], ...] = RELU_TYPES,
    loss_fn: Any = None,
) -> ProxyResult:
    """NASWOT: log |det K| of the Hamming-agreement kernel of the samples' binary ReLU codes.

    Args:
        model: any ``nn.Module`` with ReLU-type activation modules; it is not modified.
        inputs: mini-batch of n >= 2 samples.
        targets: n targets, only validated (NASWOT is label-free).
        activations: module types whose inputs are binarised (``> 0``).
        loss_fn: accepted and ignored (NASWOT uses no loss), so all proxies can be called alike.

    Returns:
        :class:`ProxyResult`; higher = better predicted accuracy; ``options["n_units"]`` is the code length;
        ``nan`` with ``reason`` when the model has no such activation or K is singular.
    """
    activations = tuple(activations)
    with ScoringContext(model, inputs, targets) as ctx:
        net = train_mode_copy(ctx)
        n = ctx.n
        kernel = torch.zeros((n, n), dtype=torch.float64, device=ctx.device)
        units: dict[str, float] = {}

        def make_hook(name: str):
            def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
                nonlocal kernel
                codes = (args[0].detach().reshape(n, -1) > 0).double()
                kernel = kernel + codes @ codes.T + (1.0 - codes) @ (1.0 - codes).T
                units[name] = units.get(name, 0.0) + codes.shape[1]

            return hook

        handles = [
            m.register_forward_pre_hook(make_hook(name))
            for name, m in net.named_modules()
            if isinstance(m, activations)
        ]
        try:
            with torch.no_grad():
                net(ctx.inputs)
        finally:
            for h in handles:
                h.remove()
        reason: str | None
        if not units:
            value, reason = (
                float("nan"),
                (
                    f"the model ({type(model).__name__}) has no {'/'.join(t.__name__ for t in activations)} module, so "
                    "there are no activation codes (functional F.relu calls are not seen)"
                ),
            )
        else:
            _, logabsdet = torch.linalg.slogdet(kernel)
            value, reason = finite_or_reason(logabsdet, "log|det K| (two samples with identical codes?)")
    return ctx.result(
        "naswot",
        value,
        n_params=sum(p.numel() for p in model.parameters()),
        options={
            "activations": [t.__name__ for t in activations],
            "batchnorm": "train (batch statistics)",
            "n_units": int(sum(units.values())),
        },
        reason=reason,
    )
