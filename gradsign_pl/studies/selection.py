"""Architecture selection with a zero-cost proxy (the GradSign paper's Table 5.4).

Each run samples N candidate archs uniformly without replacement from a pool, picks the one with the highest
score of each proxy, and records the chosen arch's 200-epoch validation and test accuracies on CIFAR-10,
CIFAR-100 and ImageNet16-120. Reference rows:

* ``random`` - a uniformly random one of the N (its distribution does not depend on N: it is a uniform draw from
  the pool; the paper's "Random uniformly samples architectures in the search space").
* ``optimal`` - the paper's "Optimal always chooses the best architecture across N candidates" does not say by
  which metric. Searches are "conducted on CIFAR-10", so ``optimal`` picks the best 200-epoch CIFAR-10
  *validation* accuracy (``cifar10_valid``) among the N, and reports that arch on every column.
* ``oracle`` - an upper bound: each column's own maximum among the N (a different arch per column).
  ``oracle >= every pick`` on every column; ``optimal >= every pick`` on CIFAR-10 validation.

The pool is the set of archs every requested proxy has a score for; with the ~1000 archs of a
``gradsign-bench correlate --n_archs 1000`` cache, N = 1000 means "all of them" (every run picks the same arch,
std 0), unlike the paper, whose N archs come from all 15625. An N larger than the pool is clamped to it
(``n_effective``). A failed score (``nan``) never wins unless all N failed. Ties go to the first in sample order.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gradsign_pl.search.nb201_tabular import REPORT_COLUMNS
from gradsign_pl.spaces.nb201 import NB201Table

SELECTION_METRIC = "cifar10_valid"
"""The column ``optimal`` maximises."""

COLUMN_TITLES = {
    "cifar10_valid": "C10 valid",
    "cifar10_test": "C10 test",
    "cifar100_valid": "C100 valid",
    "cifar100_test": "C100 test",
    "imagenet16_valid": "IN16 valid",
    "imagenet16_test": "IN16 test",
}

PAPER_TABLE_5_4: dict[str, dict[str, tuple[float, float]]] = {
    "synflow(N=100)": {
        "cifar10_valid": (89.83, 0.75),
        "cifar10_test": (93.12, 0.52),
        "cifar100_valid": (69.89, 1.87),
        "cifar100_test": (69.94, 1.88),
        "imagenet16_valid": (41.94, 4.13),
        "imagenet16_test": (42.26, 4.26),
    },
    "naswot(N=100)": {
        "cifar10_valid": (89.55, 0.89),
        "cifar10_test": (92.81, 0.99),
        "cifar100_valid": (69.35, 1.70),
        "cifar100_test": (69.48, 1.70),
        "imagenet16_valid": (42.81, 3.05),
        "imagenet16_test": (43.10, 3.16),
    },
    "naswot(N=1000)": {
        "cifar10_valid": (89.69, 0.73),
        "cifar10_test": (92.96, 0.81),
        "cifar100_valid": (69.98, 1.22),
        "cifar100_test": (69.86, 1.21),
        "imagenet16_valid": (44.44, 2.10),
        "imagenet16_test": (43.95, 2.05),
    },
    "gradsign(N=100)": {
        "cifar10_valid": (89.84, 0.61),
        "cifar10_test": (93.31, 0.47),
        "cifar100_valid": (70.22, 1.32),
        "cifar100_test": (70.33, 1.28),
        "imagenet16_valid": (42.07, 2.78),
        "imagenet16_test": (42.42, 2.81),
    },
    "random": {
        "cifar10_valid": (83.20, 13.28),
        "cifar10_test": (86.61, 13.46),
        "cifar100_valid": (60.70, 12.55),
        "cifar100_test": (60.83, 12.58),
        "imagenet16_valid": (33.34, 9.39),
        "imagenet16_test": (33.13, 9.66),
    },
    "optimal(N=100)": {
        "cifar10_valid": (91.05, 0.28),
        "cifar10_test": (93.84, 0.23),
        "cifar100_valid": (71.45, 0.79),
        "cifar100_test": (71.56, 0.78),
        "imagenet16_valid": (45.37, 0.61),
        "imagenet16_test": (45.67, 0.64),
    },
}
"""GradSign thesis Table 5.4: mean (std) over 500 runs, searched on CIFAR-10; rows ``<method>(N=<n>)``, Random
without N. Its NASWOT rows are quoted from the NASWOT paper; Optimal's metric is not stated."""


@dataclasses.dataclass
class SelectionRow:
    """Aggregate of one method at one N: ``mean[column]``, ``std[column]`` over the runs."""

    method: str
    n: int
    n_effective: int
    runs: int
    mean: dict[str, float]
    std: dict[str, float]
    paper: dict[str, tuple[float, float]] | None = None

    @property
    def label(self) -> str:
        return f"{self.method}(N={self.n})"


@dataclasses.dataclass
class SelectionStudy:
    rows: list[SelectionRow]
    picks: list[dict[str, Any]]
    settings: dict[str, Any]

    def row(self, method: str, n: int) -> SelectionRow:
        for r in self.rows:
            if r.method == method and r.n == n:
                return r
        raise KeyError(f"no row {method}(N={n}); rows: {', '.join(r.label for r in self.rows)}")


def paper_row(method: str, n: int) -> dict[str, tuple[float, float]] | None:
    """The Table 5.4 row for ``method`` at ``n`` (Random: any N), or ``None``."""
    if method == "random":
        return PAPER_TABLE_5_4["random"]
    return PAPER_TABLE_5_4.get(f"{method}(N={n})")


def run_selection(
    scores: Mapping[str, Mapping[str, float]],
    table: NB201Table,
    *,
    n_values: Sequence[int] = (10, 100, 1000),
    runs: int = 500,
    seed: int = 0,
    pool: Sequence[str] | None = None,
    columns: Sequence[str] = REPORT_COLUMNS,
) -> SelectionStudy:
    """Table 5.4 on a table and cached scores (see the module docstring for the protocol).

    Args:
        scores: proxy -> {arch string -> score} (higher is better).
        table: ground truth with ``columns`` and :data:`SELECTION_METRIC`.
        n_values: candidates per run.
        runs: runs per N (each with its own sample; run ``r`` of N uses ``numpy`` seed ``(seed, N, r)``).
        pool: archs to sample from (default: those scored by every proxy, in the first proxy's order).
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    proxies = list(scores)
    if pool is None:
        if not proxies:
            raise ValueError("give at least one proxy's scores, or an explicit pool")
        common = set.intersection(*(set(scores[p]) for p in proxies))
        pool = [a for a in scores[proxies[0]] if a in common]
    pool = list(dict.fromkeys(pool))
    if not pool:
        raise ValueError("the pool of candidate archs is empty (no arch is scored by every proxy)")
    for p in proxies:
        missing = [a for a in pool if a not in scores[p]]
        if missing:
            raise KeyError(f"proxy {p!r} has no score for {len(missing)} pool archs, e.g. {missing[0]!r}")
    idx = np.array([table.index_of(a) for a in pool], dtype=np.int64)
    truth = {c: table.column(c)[idx] for c in dict.fromkeys([*columns, SELECTION_METRIC])}
    score_arr = {p: np.array([scores[p][a] for a in pool], dtype=np.float64) for p in proxies}
    # nan (failed) never wins unless all N failed: rank it below every finite score
    rank_arr = {p: np.where(np.isnan(s), -np.inf, s) for p, s in score_arr.items()}
    methods = [*proxies, "random", "optimal", "oracle"]
    rows: list[SelectionRow] = []
    picks: list[dict[str, Any]] = []
    for n in n_values:
        if n < 1:
            raise ValueError(f"N must be >= 1, got {n}")
        k = min(int(n), len(pool))
        values = {m: {c: np.empty(runs) for c in columns} for m in methods}
        for r in range(runs):
            rng = np.random.default_rng([seed, int(n), r])
            sample = rng.choice(len(pool), size=k, replace=False)
            chosen = {p: int(sample[int(np.argmax(rank_arr[p][sample]))]) for p in proxies}
            chosen["random"] = int(sample[int(rng.integers(k))])
            chosen["optimal"] = int(sample[int(np.argmax(truth[SELECTION_METRIC][sample]))])
            for m, i in chosen.items():
                for c in columns:
                    values[m][c][r] = truth[c][i]
            for c in columns:
                values["oracle"][c][r] = truth[c][sample].max()
            picks.append({"n": int(n), "run": r, **{m: pool[i] for m, i in chosen.items()}})
        for m in methods:
            rows.append(
                SelectionRow(
                    m,
                    int(n),
                    k,
                    runs,
                    {c: float(values[m][c].mean()) for c in columns},
                    {c: float(values[m][c].std()) for c in columns},
                    paper_row(m, int(n)),
                )
            )
    settings = {
        "n_values": [int(n) for n in n_values],
        "runs": runs,
        "seed": seed,
        "pool_size": len(pool),
        "proxies": proxies,
        "columns": list(columns),
        "optimal_metric": SELECTION_METRIC,
        "table": table.source,
    }
    return SelectionStudy(rows, picks, settings)


# ------------------------------------------------------------------------------------------------ report


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "--"
    return f"{mean:.2f} ± {std:.2f}"


def table_rows(study: SelectionStudy) -> list[list[str]]:
    """One row per method and N: label, N used, then "ours (paper)" per column."""
    cols = study.settings["columns"]
    out = []
    for row in study.rows:
        cells = []
        for c in cols:
            ours = _pm(row.mean[c], row.std[c])
            paper = row.paper.get(c) if row.paper else None
            cells.append(f"{ours} ({_pm(*paper)})" if paper else ours)
        out.append([row.label, str(row.n_effective), *cells])
    return out


def header(study: SelectionStudy) -> list[str]:
    return ["method", "N used", *(COLUMN_TITLES.get(c, c) for c in study.settings["columns"])]


def markdown_table(study: SelectionStudy) -> str:
    h = header(study)
    title = (
        f"Architecture selection (Table 5.4): mean ± std over {study.settings['runs']} runs, "
        f"pool of {study.settings['pool_size']} scored archs; paper's value in parentheses where it has one."
    )
    lines = [
        title,
        "",
        "| " + " | ".join(h) + " |",
        "|" + "|".join([" --- "] + [" ---: "] * (len(h) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(study)]
    return "\n".join(lines) + "\n"


def print_table(study: SelectionStudy) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(
        title=f"Architecture selection (Table 5.4): {study.settings['runs']} runs, pool "
        f"{study.settings['pool_size']}; (paper)"
    )
    for i, h in enumerate(header(study)):
        t.add_column(h, justify="left" if i == 0 else "right")
    for r in table_rows(study):
        t.add_row(*r)
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 230)
    console.print(t)


def write_selection(study: SelectionStudy, out: str | os.PathLike) -> dict[str, Path]:
    """``selection.csv`` (one row per method and N), ``selection.json`` (settings, rows, picks), ``selection.md``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "selection.csv", "json": out / "selection.json", "markdown": out / "selection.md"}
    cols = study.settings["columns"]
    with open(paths["csv"], "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "method",
                "n",
                "n_effective",
                "runs",
                *(f"{c}_{s}" for c in cols for s in ("mean", "std")),
                *(f"paper_{c}_{s}" for c in cols for s in ("mean", "std")),
            ]
        )
        for r in study.rows:
            paper = [v for c in cols for v in ((r.paper or {}).get(c) or ("", ""))]
            w.writerow(
                [r.method, r.n, r.n_effective, r.runs, *(v for c in cols for v in (r.mean[c], r.std[c])), *paper]
            )
    paths["json"].write_text(
        json.dumps(
            {
                "settings": study.settings,
                "rows": [dataclasses.asdict(r) for r in study.rows],
                "picks": study.picks,
            },
            indent=1,
        )
        + "\n"
    )
    paths["markdown"].write_text(markdown_table(study))
    return paths
