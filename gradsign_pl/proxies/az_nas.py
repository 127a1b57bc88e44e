"""AZ-NAS (Lee & Ham, "AZ-NAS: Assembling Zero-Cost Proxies for Network Architecture Search", CVPR 2024).

Four proxies from one train-mode forward (and, for trainability, backward) of the batch, read at the network's
*features* F_0..F_L: F_0 is the input of the first block and F_l the output of block l (see :func:`feature_blocks`;
for NAS-Bench-201 these are the stem output and the 17 cell / reduction outputs, as in the authors' code):

* ``az_expressivity`` = sum_l H(F_l): the rows of F_l (one per sample and position, C channels; ``B*H*W x C``)
  centred, their covariance (divided by the number of rows), its eigenvalues s normalised to p = s / sum(s), and
  the entropy H = -sum_j p_j ln(p_j + 1e-8). High when features spread over many directions.
* ``az_progressivity`` = min_l [H(F_l) - H(F_{l-1})]: the smallest step of that entropy between consecutive
  features. High when every block adds expressivity.
* ``az_trainability`` = mean_l [2 - sigma_l - 1 / (sigma_l + 1e-6)], sigma_l the largest singular value of
  M_l = G_{l-1}^T R_l / rows, where R_l is a Rademacher (+-1) tensor shaped like F_l and G_{l-1} = J^T R_l its
  vector-Jacobian product onto F_{l-1} (rows of channels as above; at a stride-2 block G_{l-1} is pixel-unshuffled
  to the output's positions; a block whose sizes cannot be paired, e.g. ceil-mode pooling 7x7 -> 3x3, is left out
  and named in ``options["skipped_blocks"]``). Best (0) when every block's Jacobian has spectral norm 1.
* ``az_complexity``: FLOPs (the authors read NB-201's table; ours counts them, :func:`gradsign_pl.proxies.size.flops`).
* ``az_nas``: their non-linear rank aggregation over a *set* of candidates, sum_j log(rank_j / m) of the four
  (ranks ascending, ties averaged) -- :func:`gradsign_pl.proxies.ensemble.rank_ensemble` with ``log_rank``.

Higher = better for all. Follows ``compute_az_nas_score.py`` of cvlab-yonsei/AZ-NAS (NB201). Where the authors'
score is ``-inf`` or ``nan`` (ranked last), ours stays finite so that it ranks last and is still a number a
correlation can use: a feature with zero total variance (every path into it is ``none``) has entropy 0, the
minimum; a block whose vector-Jacobian product returns its probe unchanged (an identity block) or that does not
depend on its input scores as sigma = 0 does (about -1e6). The authors draw Gaussian noise as the input and
re-initialise every network (Kaiming normal); ours score the batch and the weights they are given, like every
other proxy (the study's protocol decides both).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradsign_pl.proxies._common import ScoringContext
from gradsign_pl.proxies._registry import register_proxy
from gradsign_pl.proxies._result import ProxyResult
from gradsign_pl.proxies.ensemble import NAMED_ENSEMBLES, ensemble
from gradsign_pl.proxies.size import flops

COMPONENTS = ("az_expressivity", "az_progressivity", "az_trainability", "az_complexity")
"""The four proxies ``az_nas`` aggregates."""
NAMED_ENSEMBLES["az_nas"] = ("log_rank", COMPONENTS)
ENTROPY_EPS = 1e-8
SIGMA_EPS = 1e-6
#: the pair score of a block whose Jacobian product is zero or the identity (the authors: -inf)
DEAD_BLOCK_SCORE = 2.0 - 1.0 / SIGMA_EPS
_CONTAINERS = (nn.Sequential, nn.ModuleList)


def feature_blocks(model: nn.Module) -> list[str]:
    """Names of the blocks whose outputs are the AZ-NAS features, in module order.

    A block is a module with sub-modules that sits in a plain ``nn.Sequential`` or ``nn.ModuleList`` (searched
    through the whole model, descending into nested plain containers but never into a block): NB-201's cells and
    reduction blocks, timm ResNets' ``layerN[i]``, EfficientNets' ``blocks[s][i]``, ViTs' ``blocks[i]``.
    Subclasses of ``nn.Sequential`` (e.g. a ReLU-Conv-BN unit) count as blocks, not containers. A model without
    such a chain (timm's RegNet, DLA) falls back to its own composite children, e.g. ``stem, s1, .., s4``.
    """
    names: list[str] = []

    def visit(module: nn.Module, prefix: str, in_chain: bool) -> None:
        for name, child in module.named_children():
            full = f"{prefix}.{name}" if prefix else name
            if type(child) in _CONTAINERS:
                visit(child, full, True)
            elif in_chain and next(child.children(), None) is not None:
                names.append(full)
            else:
                visit(child, full, False)

    visit(model, "", type(model) in _CONTAINERS)  # a model that is itself a plain Sequential is a chain too
    if not names:  # no chain of blocks (timm RegNet's stages name their blocks b1, b2, ...; DLA is a tree)
        names = [name for name, child in model.named_children() if next(child.children(), None) is not None]
    return names


def _rows(feature: Tensor) -> Tensor:
    """``(rows, channels)`` view of a feature: channels first after the batch for 4-D maps, last for 3-D tokens."""
    if feature.ndim == 4:
        return feature.permute(0, 2, 3, 1).reshape(-1, feature.shape[1])
    return feature.reshape(-1, feature.shape[-1])


def feature_entropy(feature: Tensor) -> float:
    """Entropy of the normalised covariance spectrum of a feature's rows (0 when the feature is constant)."""
    x = _rows(feature.detach()).double()
    x = x - x.mean(0, keepdim=True)
    s = torch.linalg.eigvalsh(x.T @ x / x.shape[0])
    total = float(s.sum())
    if not total > 0:
        return 0.0
    p = s / total
    return float(-(p * torch.log(p + ENTROPY_EPS)).sum())


def block_trainability(f_in: Tensor, f_out: Tensor) -> float | None:
    """``2 - sigma - 1/(sigma + 1e-6)`` for the block from ``f_in`` to ``f_out`` (one Rademacher probe).

    ``None`` when the two features cannot be paired position by position: a spatial size that is not an integer
    multiple of the output's (e.g. a ceil-mode pooling, 7x7 -> 3x3), or token sequences of different lengths.
    """
    probe = torch.randint(0, 2, f_out.shape, device=f_out.device).to(f_out.dtype) * 2 - 1
    (g_in,) = torch.autograd.grad(f_out, f_in, probe, retain_graph=True, allow_unused=True)
    if g_in is None or (g_in.shape == probe.shape and torch.equal(g_in, probe)):
        return DEAD_BLOCK_SCORE
    if g_in.ndim == 4 and g_in.shape[-2:] != probe.shape[-2:]:
        (h, w), (ho, wo) = g_in.shape[-2:], probe.shape[-2:]
        if h % ho or w % wo or h // ho != w // wo:
            return None
        g_in = F.pixel_unshuffle(g_in, h // ho)
    a, b = _rows(g_in).double(), _rows(probe).double()
    if a.shape[0] != b.shape[0]:
        return None
    sigma = float(torch.linalg.svdvals(a.T @ b / a.shape[0]).max())
    return 2.0 - sigma - 1.0 / (sigma + SIGMA_EPS)


class _Features:
    """One train-mode forward of a private copy, recording the AZ-NAS features in execution order."""

    def __init__(self, ctx: ScoringContext, blocks: Sequence[str] | None, *, graph: bool) -> None:
        net = ctx.copy(train=True, requires_grad=graph)
        modules = dict(net.named_modules())
        names = list(blocks) if blocks is not None else feature_blocks(net)
        unknown = [b for b in names if b not in modules]
        if unknown:
            raise ValueError(f"blocks {unknown} are not modules of {type(ctx.model).__name__}; name its blocks")
        self.names = names
        self.features: list[Tensor] = []
        self.reason: str | None = None
        if len(names) < 1:
            self.reason = (
                f"no blocks found in {type(ctx.model).__name__} (modules with sub-modules inside an nn.Sequential "
                "or nn.ModuleList); pass blocks=[module names] in forward order"
            )
            return

        def take(t: Any) -> None:
            if isinstance(t, Tensor) and t.ndim in (3, 4) and t.is_floating_point():
                self.features.append(t)

        def take_input(_m: nn.Module, args: tuple) -> None:
            if not self.features:  # the first block's first call: its input is F_0
                take(args[0])

        first = modules[names[0]].register_forward_pre_hook(take_input)
        handles = [first] + [modules[b].register_forward_hook(lambda _m, _a, out: take(out)) for b in names]
        try:
            with torch.enable_grad() if graph else torch.no_grad():
                net(ctx.inputs.detach().requires_grad_(graph))  # a first block without a stem still has a graph
        finally:
            for h in handles:
                h.remove()
        if len(self.features) < 2:
            self.reason = (
                f"AZ-NAS needs at least two 3-D/4-D features, got {len(self.features)} from blocks {names[:3]}...; "
                "pass blocks=[module names] whose outputs are feature maps"
            )


def _result(ctx: ScoringContext, proxy: str, value: float, feats: _Features, per_layer: dict, **options: Any):
    return ctx.result(
        proxy,
        value if feats.reason is None else float("nan"),
        n_params=sum(p.numel() for p in ctx.model.parameters()),
        options={"blocks": len(feats.names), "features": len(feats.features), "batchnorm": "train", **options},
        per_layer=per_layer if feats.reason is None else {},
        reason=feats.reason,
    )


def _entropies(feats: _Features) -> dict[str, float]:
    labels = ["(input)", *feats.names][: len(feats.features)]
    return {label: feature_entropy(f) for label, f in zip(labels, feats.features)}


@register_proxy("az_expressivity")
def az_expressivity(
    model: nn.Module, inputs: Tensor, targets: Tensor, *, blocks: Sequence[str] | None = None, loss_fn: Any = None
) -> ProxyResult:
    """AZ-NAS expressivity: sum over features of the entropy of their covariance spectrum.

    Args:
        model: any ``nn.Module``; it is not modified.
        inputs: mini-batch of n >= 2 samples; targets: only validated (label-free).
        blocks: module names whose outputs are the features, in forward order (default :func:`feature_blocks`).
        loss_fn: accepted and ignored, so all proxies can be called alike.
    """
    with ScoringContext(model, inputs, targets) as ctx:
        feats = _Features(ctx, blocks, graph=False)
        per = {} if feats.reason else _entropies(feats)
    return _result(ctx, "az_expressivity", math.fsum(per.values()), feats, per)


@register_proxy("az_progressivity")
def az_progressivity(
    model: nn.Module, inputs: Tensor, targets: Tensor, *, blocks: Sequence[str] | None = None, loss_fn: Any = None
) -> ProxyResult:
    """AZ-NAS progressivity: the smallest increase of feature entropy from one feature to the next.

    Same arguments as :func:`az_expressivity`; ``per_layer`` holds each feature's entropy (not a sum).
    """
    with ScoringContext(model, inputs, targets) as ctx:
        feats = _Features(ctx, blocks, graph=False)
        per = {} if feats.reason else _entropies(feats)
        values = list(per.values())
        value = min(b - a for a, b in zip(values, values[1:])) if len(values) > 1 else float("nan")
    return _result(ctx, "az_progressivity", value, feats, per)


@register_proxy("az_trainability")
def az_trainability(
    model: nn.Module, inputs: Tensor, targets: Tensor, *, blocks: Sequence[str] | None = None, loss_fn: Any = None
) -> ProxyResult:
    """AZ-NAS trainability: mean over consecutive features of ``2 - sigma - 1/sigma`` of a probed block Jacobian.

    Same arguments as :func:`az_expressivity`; the Rademacher probes are drawn from the scoring context's seeded,
    isolated RNG (the caller's RNG is untouched). ``per_layer`` holds each block's pair score.
    """
    with ScoringContext(model, inputs, targets) as ctx:
        feats = _Features(ctx, blocks, graph=True)
        per: dict[str, float] = {}
        skipped: list[str] = []
        if feats.reason is None:
            labels = ["(input)", *feats.names][: len(feats.features)]
            # last pair first, as the authors (each product only walks its own block's graph)
            for i in range(len(feats.features) - 1, 0, -1):
                pair = block_trainability(feats.features[i - 1], feats.features[i])
                if pair is None:
                    skipped.append(labels[i])
                else:
                    per[labels[i]] = pair
            per = dict(reversed(per.items()))
            if not per:
                feats.reason = (
                    f"no block's input and output can be paired position by position (blocks {skipped[:3]}); "
                    "pass blocks=[module names] whose outputs keep or halve the spatial size"
                )
        value = math.fsum(per.values()) / len(per) if per else float("nan")
    return _result(ctx, "az_trainability", value, feats, per, skipped_blocks=skipped[::-1])


@register_proxy("az_complexity")
def az_complexity(model: nn.Module, inputs: Tensor, targets: Tensor, *, loss_fn: Any = None) -> ProxyResult:
    """AZ-NAS complexity: FLOPs of one forward per sample (:func:`gradsign_pl.proxies.size.flops`)."""
    result = flops(model, inputs, targets)
    result.proxy = "az_complexity"
    return result


@register_proxy("az_nas", set_level=True)
def az_nas(models: Sequence[nn.Module], inputs: Tensor, targets: Tensor, **options: Any) -> list[ProxyResult]:
    """AZ-NAS: the log-rank sum of its four proxies over a set of candidate models (higher = better).

    ``score("az_nas", [model_a, model_b, ...], inputs, targets)``; ``options`` go to every component (e.g.
    ``loss_fn``). One :class:`ProxyResult` per model, ``per_layer`` holding the four component scores.
    """
    if "proxies" in options or "method" in options:
        raise ValueError("az_nas always combines its four proxies by log-rank; use 'ensemble' for other choices")
    results = ensemble(models, inputs, targets, proxies=COMPONENTS, method="log_rank", **options)
    for r in results:
        r.proxy = "az_nas"
    return results
