"""Rank agreement between a score and an achieved accuracy: one implementation, SciPy's.

* :func:`kendall_tau` -- Kendall tau-b (``scipy.stats.kendalltau``), :func:`spearman_rho` -- Spearman rho
  (``scipy.stats.spearmanr``); both ``nan`` where undefined (a constant side).
* :func:`rank_agreement` -- both, over the candidates where score and accuracy are finite (``nan`` under 3).
* :func:`pairs_tau` -- Kendall tau-b accumulated over an explicit set of pairs, each judged by its own scores
  (leave-one-family-out cross-validation, or tau restricted to pairs of one kind).

Rank averaging (ties share their mean rank) is ``scipy.stats.rankdata`` behind
:func:`gradsign_pl.proxies.ensemble.ranks`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import stats

__all__ = ["kendall_tau", "pairs_tau", "rank_agreement", "spearman_rho"]

# what the functions take: a sequence of numbers or a 1-D array (anything ``np.asarray`` makes a float vector of)
Floats = Sequence[float] | np.ndarray


def _undefined(x: np.ndarray, y: np.ndarray) -> bool:
    return len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0


def kendall_tau(x: Floats, y: Floats) -> float:
    """Kendall tau-b of ``x`` against ``y``; ``nan`` when either side is constant."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(a) != len(b):
        raise ValueError(f"lengths differ: {len(a)} scores vs {len(b)} accuracies")
    return math.nan if _undefined(a, b) else float(stats.kendalltau(a, b, variant="b").statistic)


def spearman_rho(x: Floats, y: Floats) -> float:
    """Spearman rho (Pearson correlation of average ranks); ``nan`` when either side is constant."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(a) != len(b):
        raise ValueError(f"lengths differ: {len(a)} scores vs {len(b)} accuracies")
    return math.nan if _undefined(a, b) else float(stats.spearmanr(a, b).statistic)


def rank_agreement(scores: Floats, accuracy: Floats, *, min_n: int = 3) -> tuple[float, float, int]:
    """``(spearman rho, kendall tau-b, n)`` over the candidates where both values are finite; nan if ``n < min_n``."""
    s, a = np.asarray(scores, dtype=np.float64), np.asarray(accuracy, dtype=np.float64)
    if len(s) != len(a):
        raise ValueError(f"lengths differ: {len(s)} scores vs {len(a)} accuracies")
    keep = np.isfinite(s) & np.isfinite(a)
    n = int(keep.sum())
    if n < min_n:
        return math.nan, math.nan, n
    return spearman_rho(s[keep], a[keep]), kendall_tau(s[keep], a[keep]), n


def pairs_tau(pairs: Iterable[tuple[float, float, float, float]]) -> tuple[float, int]:
    """Kendall tau-b over explicit pairs ``(score_i, score_j, acc_i, acc_j)``, and the number of pairs.

    Each pair counts +1 when its scores order it as its accuracies do, -1 when the other way, 0 when either side
    ties; the sum is divided by ``sqrt(pairs untied in score * pairs untied in accuracy)`` (tau-b's denominator).
    Over all pairs of one score vector this is exactly :func:`kendall_tau`.
    """
    num = untied_s = untied_a = count = 0
    for si, sj, ai, aj in pairs:
        ds, da = np.sign(si - sj), np.sign(ai - aj)
        num += ds * da
        untied_s += ds != 0
        untied_a += da != 0
        count += 1
    return (float(num / math.sqrt(untied_s * untied_a)) if untied_s and untied_a else math.nan), count
