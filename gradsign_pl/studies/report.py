"""Report a correlation study: a console table, CSV/JSON for machines, markdown and scatter plots for people."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from gradsign_pl.studies.correlation import CorrelationStudy

DATASET_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet16": "ImageNet16-120"}


def _fmt(x: float | None, digits: int = 3) -> str:
    return "--" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def table_rows(study: CorrelationStudy) -> list[list[str]]:
    """Rows of the summary table: proxy, Spearman, paper, Kendall, n, failed, archs/min."""
    return [
        [
            c.name,
            _fmt(c.spearman),
            _fmt(c.paper),
            _fmt(c.kendall),
            str(c.n),
            str(c.n_failed),
            _fmt(c.archs_per_minute, 1),
        ]
        for c in study.correlations
    ]


HEADER = ["proxy", "Spearman rho", "paper rho (Table 5.2)", "Kendall tau", "archs", "failed", "archs/min"]


def print_table(study: CorrelationStudy) -> None:
    """The summary as a rich table on the console."""
    from rich.console import Console
    from rich.table import Table

    title = (
        f"{study.space} / {DATASET_TITLES.get(study.dataset, study.dataset)}: {len(study.indices)} archs, "
        f"batch {study.settings['batch_size']}, seed {study.settings['seed']}"
    )
    table = Table(title=title)
    for i, h in enumerate(HEADER):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in table_rows(study):
        table.add_row(*row)
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 120)
    console.print(table)


def markdown_table(study: CorrelationStudy) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join([" --- "] + [" ---: "] * (len(HEADER) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(study)]
    return "\n".join(lines) + "\n"


def write_study(study: CorrelationStudy, out: str | Path, *, plots: bool = True) -> dict[str, Path]:
    """Write ``scores.csv`` (one row per arch), ``summary.json``, ``summary.md`` and ``scatter_<proxy>.png``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "scores.csv", "json": out / "summary.json", "markdown": out / "summary.md"}
    names = list(study.scores)
    with open(paths["csv"], "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["index", "arch", "test_accuracy", *names])
        for k, index in enumerate(study.indices):
            writer.writerow(
                [index, study.archs[k], study.accuracy[k], *(_csv_value(study.scores[n][k]) for n in names)]
            )
    summary = {
        "settings": study.settings,
        "correlations": [
            {
                **{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in vars(c).items()},
                "archs_per_minute": None if math.isnan(c.archs_per_minute) else c.archs_per_minute,
            }
            for c in study.correlations
        ],
        "failures": [{"index": i, "proxy": p, "reason": r} for i, p, r in study.failures],
    }
    paths["json"].write_text(json.dumps(summary, indent=2) + "\n")
    paths["markdown"].write_text(markdown_table(study))
    if plots:
        paths.update(scatter_plots(study, out))
    return paths


def _csv_value(x: float) -> str:
    return "" if math.isnan(x) else repr(float(x))


def set_score_scale(ax, x: np.ndarray) -> None:
    """Log x-axis for non-negative scores spanning more than three decades (synflow, fisher), else linear."""
    positive = x[np.isfinite(x) & (x > 0)]
    if positive.size and np.nanmin(x) >= 0 and positive.max() / positive.min() > 1e3:
        if (x == 0).any():
            ax.set_xscale("symlog", linthresh=float(positive.min()))
        else:
            ax.set_xscale("log")


def scatter_plots(study: CorrelationStudy, out: Path) -> dict[str, Path]:
    """One PNG per proxy/ensemble: score (x) against test accuracy (y), with rho in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}
    for c in study.correlations:
        x = study.scores[c.name]
        keep = np.isfinite(x)
        fig, ax = plt.subplots(figsize=(4.5, 3.6), dpi=110)
        ax.scatter(x[keep], study.accuracy[keep], s=5, alpha=0.5, linewidths=0)
        set_score_scale(ax, x[keep])
        ax.set_xlabel(f"{c.name} score")
        ax.set_ylabel(f"{DATASET_TITLES.get(study.dataset, study.dataset)} test accuracy (%)")
        ax.set_title(f"{c.name}: rho={_fmt(c.spearman)}, tau={_fmt(c.kendall)} (n={c.n})", fontsize=9)
        fig.tight_layout()
        safe = c.name.replace(":", "_").replace("+", "-")
        path = out / f"scatter_{safe}.png"
        fig.savefig(path)
        plt.close(fig)
        paths[f"scatter_{c.name}"] = path
    return paths
