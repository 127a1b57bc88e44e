"""Model-size baselines: ``params``.

On real model zoos the plain parameter count ranks trained accuracy surprisingly well, so every ranking
reports it beside the zero-cost proxies. (``flops`` joins it once its counting convention is matched to the
NAS-Bench-Suite-Zero figures; see the project's issue on the proxy family.)
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from gradsign_pl.proxies._common import ScoringContext
from gradsign_pl.proxies._registry import register_proxy
from gradsign_pl.proxies._result import ProxyResult


@register_proxy("params")
def params(model: nn.Module, inputs: Tensor, targets: Tensor, *, trainable_only: bool = False, **_: Any) -> ProxyResult:
    """Number of scalar parameters (higher = bigger model = predicted better).

    ``trainable_only``: count only parameters with ``requires_grad``. Shared parameters count once. The batch is
    only validated (it does not change the count); other options such as ``loss_fn`` are accepted and ignored
    so that every proxy can be called alike.
    """
    with ScoringContext(model, inputs, targets, min_samples=1) as ctx:
        per_layer = {n: float(p.numel()) for n, p in model.named_parameters() if p.requires_grad or not trainable_only}
    total = sum(per_layer.values())
    return ctx.result(
        "params", total, n_params=int(total), options={"trainable_only": trainable_only}, per_layer=per_layer
    )
