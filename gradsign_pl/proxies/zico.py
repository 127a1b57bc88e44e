"""ZiCo (Li et al., "ZiCo: Zero-shot NAS via Inverse Coefficient of Variation on Gradients", ICLR 2023).

For the selected weight tensors theta_l (one per Conv/Linear layer l) and gradients g_1..g_N of the loss with
respect to them::

    ratio_lk = mean_i |g_ik| / std_i(g_ik)            # over the N gradients, std with ddof = 0
    score    = sum_l log( sum_{k: std_lk > 0} ratio_lk )   # layers whose inner sum is 0 contribute nothing

Higher = better predicted accuracy (gradients that are large and consistent across inputs). What the N gradients
are is ``groups``:

* ``groups=None`` (default): one gradient per *sample* -- the quantity of the paper's analysis -- from the shared
  vectorised engine (:mod:`gradsign_pl.proxies._per_sample`, BatchNorm per ``bn_policy``), reduced as the chunks
  arrive into three float64 running sums per weight (sum g, sum g^2, sum |g|): O(parameters) memory;
* ``groups=k``: the batch split into k near-equal contiguous groups and one gradient of each group's *mean* loss
  on a train-mode copy (BatchNorm normalises with each group's statistics) -- what the authors' code does with
  k = 2 mini-batches (``compute_zico.py`` in SLDGroup/ZiCo; the AZ-NAS NB-201 port uses two batches of 64).

As in the authors' ``caculate_zico``: only Conv/Linear weights, the signed gradient's standard deviation (the
paper's text writes the std of |g|; the code, which produced the published numbers, does not), entries with zero
std dropped without an epsilon, natural log of each layer's sum. A weight whose variance is below 1e-12 of its
mean square counts as zero std (float rounding of identical gradients would otherwise give a near-infinite ratio).
``per_layer`` holds each layer's log term (0 for a skipped layer); they add up to the score.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradsign_pl.proxies import _per_sample as ps
from gradsign_pl.proxies._common import LossFn, ScoringContext, loss_name
from gradsign_pl.proxies._registry import register_proxy
from gradsign_pl.proxies._result import ProxyResult

#: a weight's gradient variance at or below this fraction of its mean square is read as zero std
ZERO_VARIANCE_RTOL = 1e-12


class GradientMoments:
    """Streaming reducer: per weight, float64 running sums of g, g^2 and |g| over the gradients seen."""

    def __init__(self, params: dict[str, Tensor]) -> None:
        self.sums = {k: torch.zeros(p.shape, dtype=torch.float64, device=p.device) for k, p in params.items()}
        self.squares = {k: torch.zeros_like(v) for k, v in self.sums.items()}
        self.absolutes = {k: torch.zeros_like(v) for k, v in self.sums.items()}
        self.count = 0
        self.nonfinite: set[str] = set()

    def update(self, grads: dict[str, Tensor]) -> None:
        """Fold a chunk (``grads[k]``: gradients x parameter shape) into the sums."""
        for k, g in grads.items():
            g = g.to(torch.float64)
            if not bool(torch.isfinite(g.sum())):
                self.nonfinite.add(k)
            self.sums[k] += g.sum(0)
            self.squares[k] += g.square().sum(0)
            self.absolutes[k] += g.abs().sum(0)
        self.count += next(iter(grads.values())).shape[0]

    def layer_terms(self) -> dict[str, float]:
        """``log(sum_k mean|g| / std(g))`` per layer over its weights with non-zero std (0 when that sum is 0)."""
        n = self.count
        terms = {}
        for k in self.sums:
            mean, mean_sq = self.sums[k] / n, self.squares[k] / n
            var = (mean_sq - mean.square()).clamp_min(0.0)
            keep = var > ZERO_VARIANCE_RTOL * mean_sq
            total = float((self.absolutes[k][keep] / n / var[keep].sqrt()).sum())
            terms[k] = math.log(total) if total > 0 else 0.0
        return terms


def _group_gradients(
    model: nn.Module, names: list[str], ctx: ScoringContext, loss_fn: LossFn, groups: int
) -> dict[str, Tensor]:
    """One gradient of the mean loss per contiguous group of the batch, on a train-mode copy (stacked per weight)."""
    net = ctx.copy(train=True)
    named = dict(net.named_parameters())
    leaves = [named[k] for k in names]
    rows: dict[str, list[Tensor]] = {k: [] for k in names}
    for x, y in zip(torch.tensor_split(ctx.inputs, groups), torch.tensor_split(ctx.targets, groups)):
        with torch.enable_grad():
            loss = loss_fn(net(x), y)
            gs = torch.autograd.grad(loss, leaves, allow_unused=True, materialize_grads=True)
        for k, g in zip(names, gs):
            rows[k].append(g.detach())
    return {k: torch.stack(v) for k, v in rows.items()}


@register_proxy("zico", per_sample=True)
def zico(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    *,
    loss_fn: LossFn = F.cross_entropy,
    groups: int | None = None,
    bn_policy: ps.BNPolicy = "auto",
    chunk_size: int | None = None,
    engine: ps.Engine = "auto",
) -> ProxyResult:
    """ZiCo: sum over layers of the log of the summed inverse coefficients of variation of the weight gradients.

    Args:
        model: any ``nn.Module`` with Conv/Linear layers; it is not modified.
        inputs: mini-batch of n >= 2 samples (n >= 2 * ``groups`` with groups).
        targets: n targets (class indices for the default loss).
        loss_fn: loss of a model output and its targets; per sample it sees one sample, per group the group
            (it must average over the group, as ``F.cross_entropy`` does).
        groups: ``None`` for one gradient per sample (vectorised engine), or k >= 2 for one gradient per
            contiguous group of the batch (the authors' code: k = 2 mini-batches).
        bn_policy, chunk_size, engine: per-sample engine settings (see :func:`gradsign_pl.gradsign`); unused
            with ``groups``.

    Returns:
        :class:`ProxyResult`; higher = better predicted accuracy; ``nan`` with ``reason`` on non-finite
        gradients.
    """
    if groups is not None and (isinstance(groups, bool) or not isinstance(groups, int) or groups < 2):
        raise ValueError(
            f"groups must be None (one gradient per sample) or an integer >= 2 (gradients of that many "
            f"sub-batches), got {groups!r}"
        )
    with ScoringContext(model, inputs, targets, min_samples=2 * (groups or 1)) as ctx:
        names = ps.select_parameters(model, "weights")
        if groups is None:
            prepared, grads = ps.per_sample_gradients(
                model,
                names,
                ctx.inputs,
                ctx.targets,
                loss_fn,
                bn_policy=bn_policy,
                chunk_size=chunk_size,
                engine=engine,
            )
            chunk_size = grads.chunk_size
            moments = GradientMoments(grads.params)
            for _, chunk in grads:
                moments.update(chunk)
            engine_info = {"engine": grads.engine_used, "bn_policy": prepared.bn_policy, "chunk_size": chunk_size}
        else:
            stacked = _group_gradients(model, names, ctx, loss_fn, groups)
            moments = GradientMoments({k: g[0] for k, g in stacked.items()})
            moments.update(stacked)
            engine_info = {"engine": "groups", "bn_policy": "train (group statistics)", "chunk_size": None}
        per_layer = moments.layer_terms()
    reason = None
    if moments.nonfinite:
        reason = f"non-finite gradients in {len(moments.nonfinite)} layer(s), e.g. {sorted(moments.nonfinite)[:3]}"
    value = float("nan") if reason else math.fsum(per_layer.values())
    return ctx.result(
        "zico",
        value,
        n_params=sum(dict(model.named_parameters())[k].numel() for k in names),
        options={"groups": groups, "loss_fn": loss_name(loss_fn), "requested_bn_policy": bn_policy, **engine_info},
        per_layer=per_layer,
        reason=reason,
    )
