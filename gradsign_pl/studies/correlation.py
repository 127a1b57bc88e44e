"""Proxy-vs-accuracy correlation study over a search space (the paper's Table 5.2 and Fig. A.1).

For each sampled architecture: seed the RNG with ``seed``, build the network (so every arch's initialisation is
independent of the order and of an interruption), score it with every requested proxy on one fixed real batch,
and cache each score on disk as soon as it exists. Then Spearman rho and Kendall tau (SciPy) of each
proxy and of the requested rank ensembles against the space's ground-truth test accuracy.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradsign_pl.data.batches import load_batch
from gradsign_pl.executors import Executor, create_executor
from gradsign_pl.proxies import batch_fingerprint, get_proxy
from gradsign_pl.proxies.az_nas import COMPONENTS as AZ_COMPONENTS
from gradsign_pl.proxies.ensemble import parse_ensemble, rank_ensemble
from gradsign_pl.scoring.agreement import rank_agreement
from gradsign_pl.scoring.cache import ScoreCache
from gradsign_pl.scoring.core import score_model
from gradsign_pl.spaces import SearchSpace

DEFAULT_PROXIES = (
    "gradsign",
    "grad_norm",
    "snip",
    "grasp",
    "fisher",
    "synflow",
    "jacov",
    "naswot",
    "zen",
    "params",
    "flops",
    "zico",
    "meco",
    "az_expressivity",
    "az_progressivity",
    "az_trainability",
    "az_complexity",
)
"""Every single-model proxy: the paper's, in its column order where it has one, then the newer ones (ZiCo, MeCo and
AZ-NAS's four components; AZ-NAS itself is their rank aggregation, an ensemble)."""

PAPER_TABLE_5_2: dict[str, dict[str, float]] = {
    "cifar10": {
        "zen": -0.016,
        "grad_norm": 0.594,
        "snip": 0.595,
        "grasp": 0.51,
        "fisher": 0.36,
        "synflow": 0.737,
        "naswot": 0.728,
        "gradsign": 0.765,
    },
    "cifar100": {
        "zen": -0.041,
        "grad_norm": 0.637,
        "snip": 0.637,
        "grasp": 0.549,
        "fisher": 0.386,
        "synflow": 0.763,
        "naswot": 0.703,
        "gradsign": 0.793,
    },
    "imagenet16": {
        "zen": 0.032,
        "grad_norm": 0.579,
        "snip": 0.579,
        "grasp": 0.552,
        "fisher": 0.328,
        "synflow": 0.751,
        "naswot": 0.696,
        "gradsign": 0.783,
    },
}
"""Spearman rho over all NB-201 archs, batch 64, from the GradSign paper's Table 5.2 (its NASWOT column is the
NASWOT paper's score; which version is not stated)."""

AZ_NAS = "log_rank:" + "+".join(AZ_COMPONENTS)
"""AZ-NAS as a rank ensemble of its four components (its authors' non-linear rank aggregation, ``log_rank``)."""

PUBLISHED_NEWER: dict[str, dict[str, tuple[float | None, float | None]]] = {
    "zico": {"cifar10": (0.80, 0.61), "cifar100": (0.81, 0.61), "imagenet16": (0.79, 0.60)},
    "meco": {"cifar10": (0.894, None), "cifar100": (0.883, None), "imagenet16": (0.845, None)},
    "az_expressivity": {"cifar10": (None, 0.569), "cifar100": (None, 0.563), "imagenet16": (None, 0.506)},
    "az_progressivity": {"cifar10": (None, 0.521), "cifar100": (None, 0.508), "imagenet16": (None, 0.489)},
    "az_trainability": {"cifar10": (None, 0.349), "cifar100": (None, 0.353), "imagenet16": (None, 0.407)},
    "az_complexity": {"cifar10": (None, 0.578), "cifar100": (None, 0.551), "imagenet16": (None, 0.517)},
    AZ_NAS: {"cifar10": (0.913, 0.741), "cifar100": (0.900, 0.723), "imagenet16": (0.886, 0.710)},
}
"""What the newer proxies' authors publish on NB-201 (all 15625 archs, 200-epoch test accuracy), as
``{proxy: {dataset: (spearman rho, kendall tau)}}`` (``None``: not published). ZiCo: its paper's Table 1 (Li et
al., ICLR 2023). MeCo: its paper (Jiang et al., NeurIPS 2023), Spearman only. AZ-NAS and its components: the AZ-NAS
paper's Tables 1 and 4 (Lee & Ham, CVPR 2024), Kendall only except for AZ-NAS itself; the CIFAR-10 AZ-NAS values
are also the output stored in the authors' NB201 notebook (tau 0.7409, rho 0.9127). The AZ-NAS paper also lists
ZiCo at tau 0.589 / 0.590 / 0.584 (its own run)."""


@dataclasses.dataclass
class Correlation:
    """Rank correlation of one proxy (or ensemble) with ground-truth accuracy.

    Attributes:
        name: proxy name, or ``ensemble:<method>:<a>+<b>...``.
        spearman, kendall: Spearman rho and Kendall tau-b over the archs with a finite score.
        n: archs with a finite score; n_failed: archs the proxy could not score (``nan``).
        paper: the paper's Spearman rho for this proxy and dataset, when it reports one.
        seconds_per_arch: mean scoring time per arch (``nan`` for ensembles, whose parts are timed).
    """

    name: str
    spearman: float
    kendall: float
    n: int
    n_failed: int
    paper: float | None = None
    seconds_per_arch: float = math.nan

    @property
    def archs_per_minute(self) -> float:
        return 60.0 / self.seconds_per_arch if self.seconds_per_arch > 0 else math.nan


@dataclasses.dataclass
class CorrelationStudy:
    """Scores, ground truth and correlations of one study run.

    Attributes:
        space, dataset: what was scored; indices: the archs, in sample order.
        accuracy: ground-truth test accuracy per arch (percent).
        scores: proxy -> score per arch (``nan`` where the proxy failed).
        seconds: proxy -> scoring time per arch.
        correlations: one :class:`Correlation` per proxy and ensemble.
        failures: ``(index, proxy, reason)`` for every failed score.
    """

    space: str
    dataset: str
    indices: list[int]
    archs: list[str]
    accuracy: np.ndarray
    scores: dict[str, np.ndarray]
    seconds: dict[str, np.ndarray]
    correlations: list[Correlation]
    failures: list[tuple[int, str, str]]
    settings: dict[str, Any]


def score_archs(
    space: SearchSpace,
    indices: Sequence[int],
    proxies: Sequence[str],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    cache: ScoreCache,
    *,
    dataset: str,
    seed: int,
    device: torch.device,
    progress: Callable[[int], None] | None = None,
    batch_for: Callable[[int], tuple[torch.Tensor, torch.Tensor]] | None = None,
    executor: str | Executor | None = None,
) -> int:
    """Score every ``(arch, proxy)`` pair missing from ``cache``; return how many were computed.

    A failure (build error, exception in a proxy, non-finite score) is cached as ``nan`` with its reason and the
    study goes on. ``batch_for(index)``, when given, supplies each arch's own batch instead of ``inputs, targets``.
    ``executor`` (default ``"local"``) runs the archs, e.g. one Ray task each (:mod:`gradsign_pl.executors`);
    each result is cached the moment it arrives, so the scores do not depend on it and a rerun resumes.
    """
    for p in proxies:
        get_proxy(p)
    engine = create_executor(executor)
    todo = []
    for index in indices:
        missing = [p for p in proxies if (index, p) not in cache]
        if missing:
            todo.append((int(index), missing))
        elif progress is not None:
            progress(1)
    shared = {
        "space": space,
        "dataset": dataset,
        "inputs": inputs,
        "targets": targets,
        "batch_for": batch_for,
        "seed": seed,
        "device": device,
    }
    computed = 0
    for i, results in engine.map(_score_arch, todo, shared=shared):
        for p, (score, reason, seconds) in results.items():
            cache.add(todo[i][0], p, score, reason=reason, seconds=seconds)
            computed += 1
        if progress is not None:
            progress(1)
    return computed


def _score_arch(
    item: tuple[int, list[str]],
    *,
    space: SearchSpace,
    dataset: str,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    batch_for: Callable[[int], tuple[torch.Tensor, torch.Tensor]] | None,
    seed: int,
    device: torch.device,
) -> dict[str, tuple[float, str | None, float]]:
    """One arch's missing proxies -> ``(score, reason, seconds)``; out-of-memory results are left out (not final)."""
    index, missing = item
    x, y = (inputs, targets) if batch_for is None else batch_for(index)
    scored = score_model(
        functools.partial(space.build, index, dataset), x.to(device), y.to(device), missing, seed=seed, device=device
    )
    return {
        p: (scored.results[p].score, scored.reasons.get(p), round(scored.results[p].elapsed_s, 4))
        for p in missing
        if p not in scored.transient  # out of memory: scored again on the next run
    }


def run_correlation(
    space: SearchSpace,
    dataset: str,
    *,
    proxies: Sequence[str] = DEFAULT_PROXIES,
    indices: Sequence[int] | None = None,
    n_archs: int = 1000,
    seed: int = 42,
    batch_size: int = 64,
    ensembles: Sequence[str] = (),
    out: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    device: str = "auto",
    progress: bool = True,
    batch: tuple[torch.Tensor, torch.Tensor] | None = None,
    batch_per_arch: bool = False,
    executor: str | Executor | None = None,
) -> CorrelationStudy:
    """Score ``n_archs`` archs sampled with ``seed`` (or the given ``indices``) and correlate with accuracy.

    The mini-batch is ``batch_size`` real images of ``dataset`` drawn with ``seed`` (or ``batch``, given as
    ``(inputs, targets)``). Results are cached in ``out`` as they are computed; calling again with the same
    settings resumes. ``batch_per_arch=True`` gives every arch its own ``batch_size`` images drawn from the whole
    image set with a seed derived from ``seed`` and the arch index (the protocol of NAS-Bench-Suite-Zero, which
    draws a fresh batch per arch); the default scores every arch on the same batch, as the GradSign paper does.
    ``executor`` runs the archs (``"local"``, ``"ray"``, see :mod:`gradsign_pl.executors`); ``device`` is then
    where each of its workers scores.
    """
    proxies = list(dict.fromkeys(proxies))
    engine = create_executor(executor)
    for p in proxies:
        if get_proxy(p).set_level:  # unknown names fail before any work, with suggestions
            raise ValueError(
                f"{p!r} is built from other proxies: list it under ensembles, e.g. 'gradsign+synflow' "
                "(AZ-NAS: 'log_rank:az_expressivity+az_progressivity+az_trainability+az_complexity')"
            )
    parsed = [parse_ensemble(e) for e in ensembles]
    for _, parts in parsed:
        unknown = [p for p in parts if p not in proxies]
        if unknown:
            raise ValueError(f"ensemble parts {unknown} are not among the scored proxies {proxies}; add them")
    if indices is None and not 1 <= n_archs <= len(space):
        raise ValueError(f"n_archs must be between 1 and {len(space)} (the size of {space.name}), got {n_archs}")
    accuracy_all = space.accuracy(dataset)
    indices = list(indices) if indices is not None else space.sample(n_archs, seed)
    batch_for = None
    if batch_per_arch:
        pool_x, pool_y = batch if batch is not None else load_batch(dataset, None, seed=seed, root=data_dir)
        if not 1 <= batch_size <= len(pool_x):
            raise ValueError(f"batch_size must be between 1 and {len(pool_x)} (the images available), got {batch_size}")

        def batch_for(index: int) -> tuple[torch.Tensor, torch.Tensor]:
            g = torch.Generator().manual_seed(seed * 1_000_003 + index)
            pick = torch.randperm(len(pool_x), generator=g)[:batch_size]
            return pool_x[pick], pool_y[pick]

        inputs, targets = pool_x, pool_y
    else:
        inputs, targets = batch if batch is not None else load_batch(dataset, batch_size, seed=seed, root=data_dir)
        batch_size = len(inputs)
    torch_device = torch.device(engine.device_type(device))
    meta = {
        "space": space.name,
        "dataset": dataset,
        "seed": seed,
        "batch_size": batch_size,
        "batch": batch_fingerprint(inputs, targets),
        "dtype": "float32",
    }
    if batch_per_arch:
        meta["batch"] = f"per-arch draws from {meta['batch']}"
    cache = ScoreCache(out, meta)
    todo = sum(1 for i in indices if any((i, p) not in cache for p in proxies))
    if progress and todo:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns) as bar:
            task = bar.add_task(f"{space.name}/{dataset}: scoring {len(proxies)} proxies", total=len(indices))
            score_archs(
                space,
                indices,
                proxies,
                inputs,
                targets,
                cache,
                dataset=dataset,
                seed=seed,
                device=torch_device,
                progress=lambda k: bar.advance(task, k),
                batch_for=batch_for,
                executor=engine,
            )
    else:
        score_archs(
            space,
            indices,
            proxies,
            inputs,
            targets,
            cache,
            dataset=dataset,
            seed=seed,
            device=torch_device,
            batch_for=batch_for,
            executor=engine,
        )

    accuracy = accuracy_all[np.asarray(indices, dtype=np.int64)]
    scores = {p: np.array([cache.score(i, p) for i in indices]) for p in proxies}
    seconds = {
        p: np.array([(cache.get(i, p) or {}).get("seconds", math.nan) for i in indices], dtype=float) for p in proxies
    }
    failures = [
        (int(i), p, (cache.get(i, p) or {})["reason"])
        for p in proxies
        for i in indices
        if not math.isfinite(cache.score(i, p))
    ]
    paper = PAPER_TABLE_5_2.get(dataset, {}) if space.name == "nb201" else {}
    correlations = []
    for p in proxies:
        rho, tau, n = rank_agreement(scores[p], accuracy)
        correlations.append(Correlation(p, rho, tau, n, len(indices) - n, paper.get(p), float(np.nanmean(seconds[p]))))
    for method, parts in parsed:
        combined = rank_ensemble({p: scores[p] for p in parts}, method)
        rho, tau, n = rank_agreement(combined, accuracy)
        name = f"ensemble:{method}:{'+'.join(parts)}"
        scores[name] = combined
        correlations.append(Correlation(name, rho, tau, n, len(indices) - n))
    settings = dict(
        meta,
        proxies=proxies,
        ensembles=list(ensembles),
        n_archs=len(indices),
        device=str(torch_device),
        out=str(Path(out)),
    )
    return CorrelationStudy(
        space.name,
        dataset,
        [int(i) for i in indices],
        [space.arch(int(i)) for i in indices],
        accuracy,
        scores,
        seconds,
        correlations,
        failures,
        settings,
    )
