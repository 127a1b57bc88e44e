"""Choosing a scoring policy without fitting it to the benchmark: leave-one-family-out cross-validation.

Given several candidate policies (each a score per model), the models' achieved accuracies and each model's
family, the question is not "which policy ranks this benchmark best" (that is fitted to the benchmark) but "how
well does *choosing* a policy this way rank models of a family it has not seen". Two estimates:

* **Cross-validated Kendall tau** (pairwise). For every pair of models (i, j) the policy is chosen -- by Kendall
  tau-b against accuracy -- on the models of every *other* family (both i's and j's family held out), and the pair
  counts as concordant (+1), discordant (-1) or tied (0) under that policy. The tau-b formula over all pairs then
  gives the estimate; no pair is judged by a policy chosen with its own models.
* **Cross-validated Spearman rho** (insertion). For each held-out family the policy is chosen on the other
  families, and each held-out model is placed among the other families' models by that policy: its position is
  the fraction of them it outscores (ties count one half), its own score breaking ties within its family. Spearman
  of these positions against accuracy is the estimate.

Ties among policies during a choice go to the earliest in the given order, so put simpler policies first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from gradsign_pl.proxies.ensemble import ranks
from gradsign_pl.scoring.agreement import kendall_tau, pairs_tau, spearman_rho


@dataclasses.dataclass
class CrossValidation:
    """The result of :func:`cross_validate`.

    Attributes:
        tau: cross-validated Kendall tau (pairwise); rho: cross-validated Spearman rho (insertion).
        chosen: held-out family -> the policy chosen on the other families.
        chosen_all: the policy chosen on every family (the one to ship).
        n_models, n_families: the benchmark's size.
    """

    tau: float
    rho: float
    chosen: dict[str, str]
    chosen_all: str
    n_models: int
    n_families: int


def cross_validate(
    policies: Mapping[str, Sequence[float]], accuracy: Sequence[float], families: Sequence[str]
) -> CrossValidation:
    """Leave-one-family-out estimate of choosing among ``policies`` by Kendall tau (module docstring).

    Args:
        policies: policy name -> score per model (higher = predicted better), all finite, in model order.
        accuracy: achieved accuracy per model; families: family label per model (at least 3 families).
    """
    names = list(policies)
    if not names:
        raise ValueError("cross_validate needs at least one policy")
    lengths = {p: len(policies[p]) for p in names}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"lengths differ: every policy needs one score per model, got {lengths}")
    table = np.asarray([np.asarray(policies[p], dtype=np.float64) for p in names])
    acc = np.asarray(accuracy, dtype=np.float64)
    fam = np.asarray(list(families))
    if table.shape[1] != len(acc) or len(fam) != len(acc):
        raise ValueError(f"lengths differ: {table.shape[1]} scores, {len(acc)} accuracies, {len(fam)} families")
    bad = [names[i] for i in np.nonzero(~np.isfinite(table).all(axis=1))[0]]
    if bad:
        raise ValueError(f"scores must be finite; drop or repair policies {bad[:5]} first")
    if not np.isfinite(acc).all():
        raise ValueError("accuracies must be finite; drop the models without a trained accuracy first")
    labels = list(dict.fromkeys(fam.tolist()))
    if len(labels) < 3:
        raise ValueError(f"need at least 3 families to hold one out and still choose, got {labels}")

    def choose(held_out: set[str]) -> int:
        keep = ~np.isin(fam, list(held_out))
        taus = np.round([kendall_tau(row, acc[keep]) for row in table[:, keep]], 12)  # equal taus tie
        return int(np.argmax(np.where(np.isnan(taus), -np.inf, taus)))

    memo: dict[frozenset[str], int] = {}
    n = len(acc)

    def judged(i: int, j: int) -> tuple[float, float, float, float]:
        held = frozenset((fam[i], fam[j]))
        if held not in memo:
            memo[held] = choose(set(held))
        s = table[memo[held]]
        return s[i], s[j], acc[i], acc[j]

    tau, _ = pairs_tau(judged(i, j) for i in range(n) for j in range(i + 1, n))

    chosen: dict[str, str] = {}
    position = np.empty(n)
    for label in labels:
        k = choose({label})
        chosen[label] = names[k]
        s = table[k]
        inside, outside = fam == label, fam != label
        within = ranks(s[inside]) / max(inside.sum(), 1) * 1e-6  # breaks ties within the family only
        for idx, local in zip(np.nonzero(inside)[0], within):
            others = s[outside]
            position[idx] = ((s[idx] > others).sum() + 0.5 * (s[idx] == others).sum()) / len(others) + local
    rho = spearman_rho(position, acc)
    return CrossValidation(float(tau), float(rho), chosen, names[choose(set())], n, len(labels))


def seed_spread_of_tau(per_seed_scores: Sequence[Sequence[float]], accuracy: Sequence[float]) -> tuple[float, float]:
    """Mean and standard deviation of Kendall tau over several score vectors (e.g. one per init seed)."""
    taus = np.array([kendall_tau(s, accuracy) for s in per_seed_scores])
    return float(np.nanmean(taus)), float(np.nanstd(taus))
