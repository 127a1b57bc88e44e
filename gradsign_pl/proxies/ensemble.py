"""Rank ensembles of proxies over a set of candidates: mean rank and the AZ-NAS log-rank sum.

A rank ensemble is defined over a *set* of candidates: each proxy ranks the candidates (1 = lowest score,
``m`` = highest, ties share their mean rank) and the ranks are combined per candidate:

* ``mean_rank``: ``mean_j rank_j``, in ``[1, m]``;
* ``log_rank``: ``sum_j log(rank_j / m)`` (AZ-NAS, Lee & Ham, CVPR 2024), in ``(-inf, 0]``; one bad rank
  pulls a candidate down more than under the mean, so it favours candidates that no proxy dislikes.

Higher = better for both. A candidate whose score for a proxy is ``nan`` (the proxy could not score it) is
ranked below every finite score of that proxy. Use :func:`rank_ensemble` on scores you already have, or
``score("ensemble", [model_a, model_b, ...], inputs, targets, proxies=[...])`` to compute and combine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats
from torch import Tensor, nn

from gradsign_pl.proxies._registry import get_proxy, register_proxy
from gradsign_pl.proxies._result import ProxyResult

METHODS = ("mean_rank", "log_rank")
#: ensembles known by one name (``az_nas`` registers its four proxies here): name -> (method, proxies)
NAMED_ENSEMBLES: dict[str, tuple[str, tuple[str, ...]]] = {}
DEFAULT_COMPONENTS = ("gradsign", "jacov")
"""The best pair of the NB-201 study (docs/results/nb201.md): log-rank rho 0.934 / 0.920 / 0.861 on CIFAR-10 / 100 /
ImageNet16-120, selected on CIFAR-10."""


def ranks(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ascending ranks 1..m of ``values`` (ties share their mean rank; ``nan`` ranks below every number).

    ``scipy.stats.rankdata(method="average")`` with ``nan`` read as ``-inf``.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected one score per candidate (a 1-D sequence), got shape {x.shape}")
    return stats.rankdata(np.where(np.isnan(x), -np.inf, x), method="average")


def is_ensemble_spec(spec: str) -> bool:
    """Whether ``spec`` names a rank ensemble (``a+b``, ``method:a+b``, or a named one such as ``az_nas``)."""
    return "+" in spec or spec in NAMED_ENSEMBLES


def parse_ensemble(spec: str) -> tuple[str, list[str]]:
    """``"log_rank:gradsign+synflow"`` (method optional, default ``log_rank``), or a named ensemble such as
    ``"az_nas"`` -> ``(method, [proxies])``."""
    if spec in NAMED_ENSEMBLES:
        method, named = NAMED_ENSEMBLES[spec]
        return method, list(named)
    if spec == "ensemble":
        raise ValueError("name the ensemble's parts, e.g. 'log_rank:gradsign+jacov' (or a named one: az_nas)")
    method, _, body = spec.rpartition(":")
    method = method or "log_rank"
    parts = [p for p in body.split("+") if p]
    if method not in METHODS or len(parts) < 2:
        raise ValueError(
            f"bad ensemble {spec!r}: write [method:]proxy+proxy[+...] with method one of {', '.join(METHODS)}, "
            "e.g. 'log_rank:gradsign+synflow+naswot'"
        )
    return method, parts


def rank_ensemble(scores: Mapping[str, Sequence[float] | np.ndarray], method: str = "log_rank") -> np.ndarray:
    """One combined score per candidate from ``scores`` = {proxy name: score per candidate}; higher = better."""
    if method not in METHODS:
        raise ValueError(f"unknown ensemble method {method!r}; choose one of {', '.join(METHODS)}")
    if not scores:
        raise ValueError("the ensemble needs at least one proxy's scores")
    lengths = {name: len(v) for name, v in scores.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"every proxy must score the same candidates; got these counts: {lengths}")
    m = next(iter(lengths.values()))
    if m == 0:
        raise ValueError("the ensemble needs at least one candidate")
    rank_matrix = np.stack([ranks(v) for v in scores.values()])
    if method == "mean_rank":
        return rank_matrix.mean(axis=0)
    return np.log(rank_matrix / m).sum(axis=0)


@register_proxy("ensemble", set_level=True)
def ensemble(
    models: Sequence[nn.Module],
    inputs: Tensor,
    targets: Tensor,
    *,
    proxies: Sequence[str] = DEFAULT_COMPONENTS,
    method: str = "log_rank",
    **options: Any,
) -> list[ProxyResult]:
    """Rank ensemble of ``proxies`` over a set of candidate models (see the module docstring).

    Args:
        models: the candidates (two or more), each scored on the same batch; none is modified.
        inputs, targets: the mini-batch.
        proxies: registered proxy names to combine.
        method: ``"log_rank"`` (AZ-NAS) or ``"mean_rank"``.
        options: passed to every component proxy (e.g. ``loss_fn``).

    Returns:
        One :class:`ProxyResult` per model, in order; ``per_layer`` holds the component scores by proxy name,
        ``elapsed_s`` their total time.
    """
    if isinstance(models, nn.Module):
        raise TypeError(
            "the ensemble ranks a set of candidates, so one model has no ensemble score; pass a list of models, "
            "e.g. score('ensemble', [model_a, model_b], inputs, targets, proxies=['gradsign', 'synflow'])"
        )
    models = list(models)
    if len(models) < 2:
        raise ValueError(f"the ensemble needs at least two candidates to rank, got {len(models)}")
    if method not in METHODS:
        raise ValueError(f"unknown ensemble method {method!r}; choose one of {', '.join(METHODS)}")
    components = list(proxies)
    if not components or "ensemble" in components:
        raise ValueError(f"proxies must name one or more registered proxies other than 'ensemble', got {components}")
    fns = {name: get_proxy(name).fn for name in components}
    results = [{name: fn(model, inputs, targets, **options) for name, fn in fns.items()} for model in models]
    combined = rank_ensemble({name: [r[name].score for r in results] for name in components}, method)
    out = []
    for parts, value in zip(results, combined):
        first = parts[components[0]]
        reasons = [f"{name}: {r.reason}" for name, r in parts.items() if r.reason]
        out.append(
            ProxyResult(
                proxy="ensemble",
                score=float(value),
                n_samples=first.n_samples,
                n_params=first.n_params,
                elapsed_s=math.fsum(r.elapsed_s for r in parts.values()),
                peak_memory_bytes=max(peaks)
                if (peaks := [r.peak_memory_bytes for r in parts.values() if r.peak_memory_bytes is not None])
                else None,
                device=first.device,
                dtype=first.dtype,
                batch_fingerprint=first.batch_fingerprint,
                options={"proxies": components, "method": method},
                per_layer={name: r.score for name, r in parts.items()},
                reason="; ".join(reasons) or None,
            )
        )
    return out
