"""NAS algorithms with and without proxy assistance on tabular NAS-Bench-201 (the GradSign paper's Table 5.5).

Every strategy runs ``runs`` times (seeds ``seed .. seed+runs-1``) under the same budget of simulated training
seconds. Each finished run is appended to ``runs.jsonl`` in the output directory at once; calling again with the
same settings skips the ``(strategy, seed)`` pairs already there, and other settings are refused (``meta.json``,
as for :class:`~gradsign_pl.scoring.cache.ScoreCache`). The report gives the final incumbent's 200-epoch
accuracies (mean ± std per strategy) beside the paper's Table 5.5, and a plot of the mean incumbent 12-epoch
reward against the spent budget.

Multi-fidelity strategies (``bohb``) also train archs to 200 epochs (``evaluator.evaluate_at``) and return the
best 200-epoch result; every evaluation, at any fidelity, is charged to the same budget. So that all rows measure
the same thing, the "12-ep reward" column and the curves use the search-fidelity reward (``evaluator.evaluate``,
a table look-up, charged to nothing) of whatever arch each strategy holds as its incumbent, and the evaluations
column says how many were at a higher fidelity.

The strategies come from :mod:`gradsign_pl.search.strategies` (``create_strategy``); names starting with ``g-``
are proxy-assisted and get the scorer.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gradsign_pl.scoring.cache import append_jsonl, iter_jsonl
from gradsign_pl.search.nb201_tabular import REPORT_COLUMNS
from gradsign_pl.studies.selection import COLUMN_TITLES

DEFAULT_STRATEGIES = ("rs", "g-rs", "rea", "g-rea", "reinforce", "g-reinforce", "bohb", "g-bohb")
RUNS_FILE = "runs.jsonl"
META_FILE = "meta.json"

PAPER_NAMES = {
    "rs": "RS",
    "g-rs": "G-RS",
    "rea": "REA",
    "g-rea": "G-REA",
    "reinforce": "REINFORCE",
    "g-reinforce": "G-REINFORCE",
    "bohb": "BOHB",
    "g-bohb": "G-HB",
}
"""Our strategy names -> the paper's row names (its G-HB is our g-bohb)."""


def _row(*values: float | None) -> dict[str, tuple[float, float]]:
    pairs = [values[i : i + 2] for i in range(0, 12, 2)]
    return {c: (m, s) for c, (m, s) in zip(REPORT_COLUMNS, pairs) if m is not None and s is not None}


PAPER_TABLE_5_5: dict[str, dict[str, tuple[float, float]]] = {
    "REA": _row(91.08, 0.45, 93.85, 0.44, 71.59, 1.33, 71.64, 1.25, 44.90, 1.20, 45.25, 1.41),
    "A-REA": _row(91.20, 0.27, None, None, 71.95, 0.99, None, None, 45.70, 1.05, None, None),
    "G-REA": _row(91.27, 0.58, 94.10, 0.52, 72.64, 1.57, 72.70, 1.50, 45.69, 1.33, 45.7, 1.32),
    "RS": _row(90.93, 0.37, 93.72, 0.38, 70.96, 1.12, 71.07, 1.07, 44.47, 1.08, 44.61, 1.22),
    "G-RS": _row(91.24, 0.21, 94.02, 0.21, 72.15, 0.77, 72.20, 0.76, 45.38, 0.79, 45.77, 0.79),
    "REINFORCE": _row(90.32, 0.89, 93.21, 0.82, 70.03, 1.75, 70.14, 1.73, 43.57, 2.09, 43.64, 2.24),
    "G-REINFORCE": _row(90.47, 0.55, 93.37, 0.47, 70.00, 1.20, 70.20, 1.29, 44.33, 1.25, 44.05, 1.48),
    "BOHB": _row(90.84, 0.49, 93.64, 0.49, 70.82, 1.29, 70.92, 1.26, 44.36, 1.37, 44.50, 1.50),
    "G-HB": _row(91.18, 0.26, 93.96, 0.25, 71.92, 0.92, 71.99, 0.85, 45.29, 0.84, 45.53, 0.92),
}
"""GradSign thesis Table 5.5: mean (std) over 500 runs, search on CIFAR-10 with a 12000 s budget, 200-epoch
validation/test accuracies of the best-discovered arch (A-REA: the NASWOT paper's, validation only)."""


@dataclasses.dataclass
class NasRow:
    strategy: str
    runs: int
    mean: dict[str, float]
    std: dict[str, float]
    best_reward: tuple[float, float]
    evaluations: float
    proxy_calls: float
    spent_seconds: float
    paper: dict[str, tuple[float, float]] | None = None
    evaluations_by_fidelity: dict[str, float] = dataclasses.field(default_factory=dict)
    """Mean evaluations per run at each fidelity (e.g. ``{"12": 32.4, "200": 3.4}`` epochs); empty for
    strategies that only call ``evaluate``."""


@dataclasses.dataclass
class NasStudy:
    rows: list[NasRow]
    records: list[dict[str, Any]]
    settings: dict[str, Any]
    computed: int

    def row(self, strategy: str) -> NasRow:
        for r in self.rows:
            if r.strategy == strategy:
                return r
        raise KeyError(f"no strategy {strategy!r}; rows: {', '.join(r.strategy for r in self.rows)}")


def is_assisted(name: str) -> bool:
    return name.lower().startswith("g-")


def _space_fingerprint(space: Any) -> dict[str, Any]:
    subset = getattr(space, "subset", None)
    out: dict[str, Any] = {"type": type(space).__name__}
    try:
        out["size"] = len(space)
    except TypeError:
        pass
    if subset is not None:
        out["subset_sha1"] = hashlib.sha1("\n".join(sorted(subset)).encode()).hexdigest()[:16]
    return out


def _settings_of(obj: Any) -> Any:
    if obj is None:
        return None
    s = getattr(obj, "settings", None)
    return s if s is not None else type(obj).__name__


def _check_meta(out: Path, meta: dict[str, Any]) -> None:
    """Refuse other settings than those recorded. ``scorer`` is ``None`` for studies without assisted strategies;
    it is filled in by the first study that has them and compared only when both sides have one."""
    meta_path = out / META_FILE
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        diff = {
            k: (old.get(k), meta.get(k))
            for k in set(old) | set(meta)
            if old.get(k) != meta.get(k) and not (k == "scorer" and (old.get(k) is None or meta.get(k) is None))
        }
        if old.get("scorer") is None and meta.get("scorer") is not None and not diff:
            meta_path.write_text(json.dumps(dict(old, scorer=meta["scorer"]), indent=2) + "\n")
        if diff:
            detail = ", ".join(f"{k}: recorded {a!r} vs now {b!r}" for k, (a, b) in sorted(diff.items()))
            raise ValueError(
                f"{out} holds NAS runs made with other settings ({detail}); use the same settings to "
                "resume, or another output directory"
            )
    else:
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")


def read_runs(out: str | os.PathLike) -> dict[tuple[str, int], dict[str, Any]]:
    """The finished runs in ``out/runs.jsonl`` by ``(strategy, seed)`` (lines cut short are skipped)."""
    done: dict[tuple[str, int], dict[str, Any]] = {}
    for r in iter_jsonl(Path(out) / RUNS_FILE, ("strategy", "seed")):
        try:
            done[(r["strategy"], int(r["seed"]))] = r
        except (ValueError, TypeError):
            continue
    return done


def _curve(history: Sequence[Mapping[str, Any]], reward_of: Callable[[str], float] | None = None) -> list[list[float]]:
    """``[spent_seconds, reward]`` at every change of the incumbent, plus the last step.

    ``reward`` is ``reward_of(best_arch)`` (the search-fidelity reward of the incumbent) when given, else the
    history's ``best_reward``.
    """
    points: list[list[float]] = []
    last = None
    for k, h in enumerate(history):
        best = h.get("best_reward")
        if best is None:
            continue
        arch = h.get("best_arch")
        value = reward_of(arch) if reward_of is not None and arch is not None else best
        if value != last or k == len(history) - 1:
            points.append([float(h.get("spent_seconds", math.nan)), float(value)])
            last = value
    return points


def _by_fidelity(history: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Evaluations per fidelity (``{"12": n, "200": m}``); empty when no evaluation named one."""
    counts: dict[str, int] = {}
    for h in history:
        if h.get("fidelity") is not None:
            key = f"{h['fidelity']:g}"
            counts[key] = counts.get(key, 0) + 1
    return counts


@dataclasses.dataclass
class _Budget:
    """Stand-in with the fields of ``strategies.Budget`` (used only when that module is absent)."""

    max_seconds: float | None = None
    max_evaluations: int | None = None
    charge_scoring: bool = False


def _budget_class() -> type:
    try:
        from gradsign_pl.search.strategies import Budget
    except ImportError:
        return _Budget
    return Budget


def _default_factory(name: str, **kwargs: Any) -> Any:
    from gradsign_pl.search.strategies import create_strategy

    return create_strategy(name, **kwargs)


def run_nas(
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
    *,
    runs: int = 500,
    budget_seconds: float | None = 12000.0,
    max_evaluations: int | None = None,
    charge_scoring: bool = False,
    seed: int = 0,
    space: Any,
    evaluator: Any,
    scorer: Callable[[str], tuple[float, float]] | None = None,
    out_dir: str | os.PathLike,
    pool_size: int | None = None,
    strategy_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    factory: Callable[..., Any] | None = None,
    progress: bool = True,
) -> NasStudy:
    """Run every strategy ``runs`` times (resuming from ``out_dir``) and aggregate (Table 5.5).

    Args:
        strategies: strategy names (``g-*``: proxy-assisted, given ``scorer``).
        budget_seconds, max_evaluations, charge_scoring: the search budget (``Budget`` of the strategies module;
            ``charge_scoring`` also charges the scorer's seconds to it).
        space, evaluator, scorer: a ``CellSpace``, an ``Evaluator`` (with ``report(arch)`` for the 200-epoch
            accuracies; a ``MultiFidelityEvaluator`` for ``bohb``) and a ``Scorer``.
        pool_size: candidates scored per proposal by assisted strategies (their default when ``None``).
        strategy_kwargs: extra constructor arguments per strategy name.
        factory: ``factory(name, **kwargs) -> Strategy`` (default ``create_strategy``).
    """
    strategies = list(dict.fromkeys(strategies))
    if not strategies:
        raise ValueError("give at least one strategy")
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if budget_seconds is None and max_evaluations is None:
        raise ValueError("give budget_seconds or max_evaluations (or both); an unbounded search never ends")
    assisted = [s for s in strategies if is_assisted(s)]
    if assisted and scorer is None:
        raise ValueError(f"strategies {assisted} are proxy-assisted and need a scorer (a proxy score cache)")
    factory = factory or _default_factory
    strategy_kwargs = {k: dict(v) for k, v in (strategy_kwargs or {}).items()}

    def kwargs_for(name: str) -> dict[str, Any]:
        kw = dict(strategy_kwargs.get(name, {}))
        if pool_size is not None and is_assisted(name):
            kw.setdefault("pool_size", pool_size)
        return kw

    strategy_objs = {name: factory(name, **kwargs_for(name)) for name in strategies}  # unknown names fail now
    budget = _budget_class()(max_seconds=budget_seconds, max_evaluations=max_evaluations, charge_scoring=charge_scoring)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "budget_seconds": budget_seconds,
        "max_evaluations": max_evaluations,
        "charge_scoring": charge_scoring,
        "space": _space_fingerprint(space),
        "evaluator": _settings_of(evaluator),
        "scorer": _settings_of(scorer) if assisted else None,
        "pool_size": pool_size,
        "strategy_kwargs": strategy_kwargs,
    }
    meta = json.loads(json.dumps(meta, default=str))
    _check_meta(out, meta)
    done = read_runs(out)
    todo = [(name, s) for name in strategies for s in range(seed, seed + runs) if (name, s) not in done]
    path = out / RUNS_FILE

    memo: dict[str, float] = {}

    def search_reward(arch: str) -> float:
        """The search-fidelity reward of ``arch`` (a look-up for the report; nothing is charged)."""
        if arch not in memo:
            memo[arch] = float(evaluator.evaluate(arch)[0])
        return memo[arch]

    def one(name: str, s: int) -> None:
        strategy = strategy_objs[name]
        trace = strategy.run(space, evaluator, budget, seed=s, scorer=scorer if is_assisted(name) else None)
        report = evaluator.report(trace.best_arch) if hasattr(evaluator, "report") and trace.best_arch else {}
        record = {
            "strategy": name,
            "seed": s,
            "best_arch": trace.best_arch,
            "best_reward": trace.best_reward,
            "best_fidelity": getattr(trace, "best_fidelity", None),
            "search_reward": search_reward(trace.best_arch) if trace.best_arch else trace.best_reward,
            "spent_seconds": trace.spent_seconds,
            "evaluations": trace.evaluations,
            "evaluations_by_fidelity": _by_fidelity(trace.history),
            "proxy_calls": getattr(trace, "proxy_calls", 0),
            "accuracy": report,
            "curve": _curve(trace.history, search_reward),
        }
        append_jsonl(path, record)
        done[(name, s)] = json.loads(json.dumps(record, default=str))

    if progress and todo:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        ) as bar:
            task = bar.add_task(f"NAS: {len(strategies)} strategies x {runs} runs", total=len(todo))
            for name, s in todo:
                bar.update(task, description=f"NAS: {name} seed {s}")
                one(name, s)
                bar.advance(task)
    else:
        for name, s in todo:
            one(name, s)

    records = [done[(name, s)] for name in strategies for s in range(seed, seed + runs)]
    rows = [_aggregate(name, [r for r in records if r["strategy"] == name]) for name in strategies]
    settings = dict(meta, strategies=strategies, runs=runs, seed=seed, out=str(out))
    return NasStudy(rows, records, settings, computed=len(todo))


def _aggregate(name: str, records: list[dict[str, Any]]) -> NasRow:
    def stats(values: list[float]) -> tuple[float, float]:
        a = np.asarray(values, dtype=np.float64)
        return (float(a.mean()), float(a.std())) if a.size else (math.nan, math.nan)

    mean, std = {}, {}
    for c in REPORT_COLUMNS:
        vals = [r["accuracy"][c] for r in records if c in (r.get("accuracy") or {})]
        if vals:
            mean[c], std[c] = stats(vals)
    fidelities = sorted({k for r in records for k in (r.get("evaluations_by_fidelity") or {})}, key=float)
    by_fidelity = {
        k: stats([(r.get("evaluations_by_fidelity") or {}).get(k, 0) for r in records])[0] for k in fidelities
    }
    return NasRow(
        name,
        len(records),
        mean,
        std,
        stats([r.get("search_reward", r["best_reward"]) for r in records]),
        stats([r["evaluations"] for r in records])[0],
        stats([r["proxy_calls"] for r in records])[0],
        stats([r["spent_seconds"] for r in records])[0],
        PAPER_TABLE_5_5.get(PAPER_NAMES.get(name, name.upper())),
        by_fidelity,
    )


# ------------------------------------------------------------------------------------------------ report


def _pm(mean: float | None, std: float | None) -> str:
    return "--" if mean is None or math.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


HEADER = ["strategy", "runs", "evals", "proxy calls", "12-ep reward", *(COLUMN_TITLES[c] for c in REPORT_COLUMNS)]


def _evaluations(row: NasRow) -> str:
    """Mean evaluations per run, with those above the lowest fidelity (``"35.6 (3.4 at 200 ep)"``)."""
    text = f"{row.evaluations:.1f}"
    higher = list(row.evaluations_by_fidelity.items())[1:]
    if higher:
        text += " (" + ", ".join(f"{n:.1f} at {k} ep" for k, n in higher) + ")"
    return text


def table_rows(study: NasStudy) -> list[list[str]]:
    out = []
    for r in study.rows:
        cells = []
        for c in REPORT_COLUMNS:
            ours = _pm(r.mean.get(c), r.std.get(c)) if c in r.mean else "--"
            paper = (r.paper or {}).get(c)
            cells.append(f"{ours} ({_pm(*paper)})" if paper else ours)
        out.append([r.strategy, str(r.runs), _evaluations(r), f"{r.proxy_calls:.1f}", _pm(*r.best_reward), *cells])
    return out


def markdown_table(study: NasStudy) -> str:
    s = study.settings
    budget = f"{s['budget_seconds']:g} s" if s["budget_seconds"] is not None else "no time limit"
    lines = [
        f"NAS on tabular NB-201 (Table 5.5): mean ± std over {s['runs']} runs, budget {budget}"
        + (f", at most {s['max_evaluations']} evaluations" if s["max_evaluations"] else "")
        + (", scoring charged" if s["charge_scoring"] else "")
        + "; paper's value in parentheses. 12-ep reward: the 12-epoch validation accuracy of the returned arch "
        "(bohb returns its best 200-epoch result).",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join([" --- "] + [" ---: "] * (len(HEADER) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(study)]
    return "\n".join(lines) + "\n"


def print_table(study: NasStudy) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=markdown_table(study).splitlines()[0])
    for i, h in enumerate(HEADER):
        t.add_column(h, justify="left" if i == 0 else "right")
    for r in table_rows(study):
        t.add_row(*r)
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 200)
    console.print(t)


def mean_curves(study: NasStudy, points: int = 200) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Spent-budget grid and, per strategy, the mean incumbent reward on it (runs without an evaluation yet
    are left out of the mean at that point; ``nan`` where no run has one)."""
    horizon = study.settings["budget_seconds"] or max(
        (r["curve"][-1][0] for r in study.records if r["curve"]), default=1.0
    )
    grid = np.linspace(0.0, float(horizon), points)
    curves = {}
    for name in study.settings["strategies"]:
        rows = []
        for r in study.records:
            if r["strategy"] != name or not r["curve"]:
                continue
            t = np.array([p[0] for p in r["curve"]])
            v = np.array([p[1] for p in r["curve"]])
            k = np.searchsorted(t, grid, side="right") - 1
            rows.append(np.where(k >= 0, v[np.clip(k, 0, None)], np.nan))
        if rows:
            with np.errstate(all="ignore"):
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    curves[name] = np.nanmean(np.vstack(rows), axis=0)
    return grid, curves


def plot_curves(study: NasStudy, path: str | os.PathLike) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid, curves = mean_curves(study)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for name, y in curves.items():
        ax.plot(grid, y, label=name, linestyle="-" if is_assisted(name) else "--")
    ax.set_xlabel("spent budget (simulated seconds)")
    ax.set_ylabel("mean incumbent 12-epoch CIFAR-10 valid acc (%)")
    ax.set_title(f"NAS on tabular NB-201, {study.settings['runs']} runs per strategy", fontsize=9)
    finite = [y[np.isfinite(y)] for y in curves.values()]
    finite = [f for f in finite if f.size]
    if finite:
        top = max(f.max() for f in finite)
        ax.set_ylim(max(min(f[len(f) // 10] for f in finite) - 0.5, 0), top + 0.3)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_nas(study: NasStudy, out: str | os.PathLike, *, plot: bool = True) -> dict[str, Path]:
    """``nas.csv`` (one row per strategy), ``nas.json``, ``nas.md`` and ``nas_curves.png``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "nas.csv", "json": out / "nas.json", "markdown": out / "nas.md"}
    with open(paths["csv"], "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "strategy",
                "runs",
                "evaluations",
                "evaluations_by_fidelity",
                "proxy_calls",
                "spent_seconds",
                "best_reward_mean",
                "best_reward_std",
                *(f"{c}_{s}" for c in REPORT_COLUMNS for s in ("mean", "std")),
                *(f"paper_{c}_{s}" for c in REPORT_COLUMNS for s in ("mean", "std")),
            ]
        )
        for r in study.rows:
            ours = [v for c in REPORT_COLUMNS for v in ((r.mean[c], r.std[c]) if c in r.mean else ("", ""))]
            paper = [v for c in REPORT_COLUMNS for v in ((r.paper or {}).get(c) or ("", ""))]
            by_fidelity = " ".join(f"{k}:{n:g}" for k, n in r.evaluations_by_fidelity.items())
            w.writerow(
                [
                    r.strategy,
                    r.runs,
                    r.evaluations,
                    by_fidelity,
                    r.proxy_calls,
                    r.spent_seconds,
                    *r.best_reward,
                    *ours,
                    *paper,
                ]
            )
    paths["json"].write_text(
        json.dumps({"settings": study.settings, "rows": [dataclasses.asdict(r) for r in study.rows]}, indent=1) + "\n"
    )
    paths["markdown"].write_text(markdown_table(study))
    if plot:
        paths["plot"] = plot_curves(study, out / "nas_curves.png")
    return paths
