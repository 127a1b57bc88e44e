"""MeCo (Jiang et al., "MeCo: Zero-Shot NAS with One Data and Single Forward Pass via Minimum Eigenvalue of
Correlation", NeurIPS 2023).

One forward pass of a single sample x (the batch's first) through a train-mode copy; for the output F of every
module (``model.named_modules()``, the model itself included) that is a map of channels over positions
(``N x C x ...``, at least 3-D)::

    R_F   = corrcoef( F reshaped to C x (H*W) )       # C x C correlation of the channels over the positions
    score = sum_F lambda_min(R_F)                      # nan/inf entries of R_F read as 0 first

Higher = better predicted accuracy (channels that are far from linearly dependent). Follows ``get_score`` in the
authors' ``correlation/NAS_Bench_201.py`` (HamsterMimi/MeCo): every module is hooked, so a tensor returned by
nested modules (a Sequential and its last layer) counts once per module, as there; a batch of one, so BatchNorm
normalises with that sample's own statistics over the positions; a channel that is constant has an undefined
correlation, read as 0, which makes that module's lambda_min 0 (the authors also hook 2-D outputs such as the
logits, whose one observation per channel always gives 0; ours skip them, which changes no sum).
``lambda_min`` comes from ``eigvalsh`` in float64 (the matrix is symmetric; the authors take the real part of a
general ``eig``), and a module whose value is still not finite is dropped, as there. Where one sample cannot pass
a BatchNorm layer (it would see one value per channel: real models at 32 px reach 1x1 maps), ``bn_policy="auto"``
forwards the whole batch instead and reads the first sample's maps (recorded in ``options["bn_used"]``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor, nn

from gradsign_pl.proxies._common import ScoringContext
from gradsign_pl.proxies._registry import register_proxy
from gradsign_pl.proxies._result import ProxyResult


def min_correlation_eigenvalue(feature: Tensor) -> float:
    """``lambda_min`` of the channel correlation of one sample's feature map (``C x ...``), nan entries as 0."""
    rows = feature.detach().reshape(feature.shape[0], -1).double()
    if rows.shape[1] < 2:  # one position: every correlation is undefined, read as 0
        return 0.0
    corr = torch.nan_to_num(torch.corrcoef(rows), nan=0.0, posinf=0.0, neginf=0.0)
    return float(torch.linalg.eigvalsh(corr)[0])


@register_proxy("meco")
def meco(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    *,
    bn_policy: Literal["auto", "per_sample", "batch"] = "auto",
    loss_fn: Any = None,
) -> ProxyResult:
    """MeCo: sum over modules of the minimum eigenvalue of their output's channel correlation, for one sample.

    Args:
        model: any ``nn.Module``; it is not modified.
        inputs: a batch; only its first sample's feature maps are read (MeCo needs one).
        targets: only validated (MeCo is label-free).
        bn_policy: ``"per_sample"``: forward the first sample alone, so BatchNorm uses its own statistics (the
            authors); ``"batch"``: forward the whole batch, so BatchNorm uses the batch's statistics; ``"auto"``
            (default): per sample unless a BatchNorm layer would see one value per channel (real models at small
            resolutions reach 1x1 maps), then the batch (``options["bn_used"]``, ``options["bn_reason"]``).
        loss_fn: accepted and ignored (MeCo uses no loss), so all proxies can be called alike.

    Returns:
        :class:`ProxyResult`; higher = better predicted accuracy; ``per_layer`` holds each module's
        ``lambda_min``; ``nan`` with ``reason`` when no module output has channels, or under ``"per_sample"`` when
        BatchNorm cannot normalise one sample.
    """
    if bn_policy not in ("auto", "per_sample", "batch"):
        raise ValueError(f"bn_policy must be 'auto', 'per_sample' or 'batch', got {bn_policy!r}")
    with ScoringContext(model, inputs, targets, min_samples=1) as ctx:
        net = ctx.copy(train=True, requires_grad=False)
        per_module: dict[str, float] = {}
        dropped: list[str] = []

        def make_hook(name: str):
            def hook(_module: nn.Module, _args: Any, output: Any) -> None:
                if isinstance(output, Tensor) and output.ndim >= 3 and output.is_floating_point():
                    value = min_correlation_eigenvalue(output[0])
                    key = name or "(model)"
                    if math.isfinite(value):
                        per_module[key] = per_module.get(key, 0.0) + value
                    else:
                        dropped.append(key)

            return hook

        handles = [m.register_forward_hook(make_hook(name)) for name, m in net.named_modules()]
        reason: str | None = None
        bn_used, bn_reason = ("batch", None) if bn_policy == "batch" else ("per_sample", None)
        try:
            with torch.no_grad():
                try:
                    net(ctx.inputs if bn_used == "batch" else ctx.inputs[:1])
                except ValueError as exc:
                    if "Expected more than 1 value per channel" not in str(exc):
                        raise
                    bn_reason = f"a BatchNorm layer sees one value per channel for one sample ({exc})"
                    if bn_policy == "per_sample" or ctx.n < 2:
                        reason = (
                            f"{bn_reason}; MeCo's one-sample forward needs feature maps larger than 1x1 before "
                            "every BatchNorm: use bn_policy='auto' or 'batch' with a batch, or a larger resolution"
                        )
                    else:
                        per_module.clear()
                        dropped.clear()
                        bn_used = "batch"
                        net(ctx.inputs)
        finally:
            for h in handles:
                h.remove()
    if reason is None and not per_module:
        reason = f"no module of {type(model).__name__} returned a floating tensor with a channel dimension"
    value = float("nan") if reason else math.fsum(per_module.values())
    return ctx.result(
        "meco",
        value,
        n_params=sum(p.numel() for p in model.parameters()),
        options={
            "bn_policy": bn_policy,
            "bn_used": bn_used,
            "bn_reason": bn_reason,
            "samples": 1,
            "dropped_modules": len(dropped),
        },
        per_layer={} if reason else per_module,
        reason=reason,
    )
