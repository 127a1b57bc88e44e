"""Budgeted triage on CIFAR-10: how well do zero-cost scores, short training and successive halving pick real models?

Reads the ground truth of ``benchmarks/halving_groundtruth.py`` (27 timm / torchvision models trained 4 epochs on
16000 CIFAR-10 images, each run's whole training-loss curve and validation at a geometric grid of steps; test
accuracy on all 10000 test images) and scores the same models at initialisation (``rank()``: #params, FLOPs, GradSign
under the real-model and the cell-space policy, synflow; cached under ``runs/halving_cifar10``). Then, at compute
fractions of "train every candidate fully" (0 = zero-cost, 1%, 3%, 10%, 30%), it measures

* each zero-cost ranking (fraction 0);
* each low-fidelity signal at a fixed budget: every candidate trained for the fraction of its schedule, ranked by
  the signal there (a prefix of the same run: same initialisation and data order);
* successive halving (``gradsign_pl.halving.successive_halving`` on the recorded curves, rungs snapped to the
  recorded validation steps) at eta = 2, 3, 4 for every signal, with and without a zero-cost rung 0 that keeps
  only the best third (by #params) -- so the compute the zero-cost rung saves at equal regret can be read off;
* the 2-epoch, 8000-image training of the triage study (docs/results/triage.json) as one more low-fidelity point;

each by Kendall tau-b of the whole order against the test accuracy (eliminated candidates ordered by their last
rung), top-1 regret (accuracy of the chosen model minus the best, in points) and top-3 recall, with 90% bootstrap
intervals over models, and options chosen by leave-one-family-out cross-validation (``policy_cv.cross_validate``
over every option's order). The seed-to-seed noise ceiling comes from the second training seed of a subset. A
finer sweep of budgets (0.5% .. 54%) gives the compute each option needs to reach the targets (regret <= 1 point,
top-3 recall >= 2/3, tau >= 0.6), with and without the zero-cost rung 0, so the compute that rung saves at equal
regret can be read off.

Writes ``docs/results/halving.md``, ``halving.json`` and ``halving.png`` (``--quick``: the quick ground truth of
``halving_groundtruth.py --quick``, written under ``runs/``).

    python benchmarks/halving_cifar10.py [--quick] [--bootstrap 1000]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from halving_groundtruth import (
    QUICK_MODELS,
    QUICK_SCHEDULE,
    RESULTS,
    SCHEDULE,
    datamodule,
    eval_grid,
    read_runs,
    steps_per_run,
)
from triage_models import MODELS

from gradsign_pl.fidelity import NEEDS_EVAL, Curve, get_signal, list_signals
from gradsign_pl.halving import plan_rungs, successive_halving
from gradsign_pl.scoring.agreement import kendall_tau
from gradsign_pl.studies.policy_cv import cross_validate

ROOT = Path(__file__).resolve().parents[1]
FRACTIONS = (0.01, 0.03, 0.10, 0.30)
#: the finer sweep for "compute needed to reach a target" and the plot's curves
SWEEP = tuple(round(0.005 * 2 ** (k / 4), 5) for k in range(0, 27))  # 0.5% .. ~54%
#: gradsign-fit's default (HalvingOptions) and the options shown beside it in the headline table
HEADLINE = ("last_loss", "halving eta=3, last_loss")
HEADLINE_ROWS = (
    ("#params", "#params"),
    ("fixed budget, last_loss", "fixed budget, last_loss"),
    ("halving eta=3, last_loss (default)", "halving eta=3, last_loss"),
    ("same, rung 0 keeps 1/3", "halving eta=3, last_loss, rung 0 keeps 1/3"),
)
#: the issue's targets at <= 10% compute
TARGET = {"regret": 1.0, "recall3": 2 / 3, "tau": 0.6}
ETAS = (2, 3, 4)
PRUNE = 1 / 3  # the zero-cost rung 0 keeps the best third (by #params) when it prunes
ZERO_COST = {  # label -> (proxy, policy)
    "#params": ("params", "real-model"),
    "FLOPs": ("flops", "real-model"),
    "GradSign (real-model policy: uniform init, 3 seeds)": ("gradsign", "real-model"),
    "GradSign as the authors ran it": ("gradsign", "cell-space"),
    "synflow (real-model policy)": ("synflow", "real-model"),
}


# ------------------------------------------------------------------------------------------------ inputs


def zero_cost_scores(
    names: list[str], schedule: dict[str, Any], data_dir: str | None, quick: bool
) -> dict[str, np.ndarray]:
    """label -> score per model (higher = predicted better), from rank() with a cache."""
    from gradsign_pl import rank

    dm = datamodule(data_dir, schedule)
    cache = ROOT / "runs" / ("halving_cifar10_quick" if quick else "halving_cifar10")
    out: dict[str, np.ndarray] = {}
    for policy in ("real-model", "cell-space"):
        ranking = rank(
            {n: MODELS[n][1] for n in names},
            dm,
            ["gradsign", "params", "flops", "synflow"],
            policy=policy,
            cache=cache / policy,
            num_classes=10,
        )
        for label, (proxy, pol) in ZERO_COST.items():
            if pol != policy:
                continue
            if proxy in ("params", "flops"):
                out[label] = np.array([float(getattr(ranking[n], proxy) or math.nan) for n in names])
            else:
                out[label] = np.array([ranking[n].scores[proxy] for n in names])
    return out


def two_epoch_accuracy(names: list[str]) -> np.ndarray | None:
    """The triage study's mean test accuracy per model (2 epochs on 8000 images), or None when missing."""
    path = ROOT / "docs" / "results" / "triage.json"
    if not path.is_file():
        return None
    models = json.loads(path.read_text())["models"]
    return np.array([float(np.mean(models[n]["test_acc"])) if n in models else math.nan for n in names])


# ------------------------------------------------------------------------------------------------ metrics


def metrics(order: list[str], acc: dict[str, float]) -> dict[str, float]:
    """tau of the whole order, top-1 regret (points), top-3 recall."""
    names = list(acc)
    position = {n: i for i, n in enumerate(order)}
    tau = kendall_tau([-position[n] for n in names], [acc[n] for n in names])
    best = max(acc.values())
    true3 = set(sorted(names, key=lambda n: -acc[n])[:3])
    return {"tau": tau, "regret": 100 * (best - acc[order[0]]), "recall3": len(true3 & set(order[:3])) / 3}


def order_by(values: dict[str, float], tie: list[str]) -> list[str]:
    """Names best first by ``values`` (nan last), ties in ``tie`` order."""
    pos = {n: i for i, n in enumerate(tie)}
    return sorted(values, key=lambda n: (-(values[n] if math.isfinite(values[n]) else -math.inf), pos[n]))


class Curves:
    """The recorded runs: signal of a model after t steps (validation signals at the recorded steps only)."""

    def __init__(self, runs: dict[str, dict[str, Any]]) -> None:
        self.curves = {n: Curve.from_dict(r["curve"]) for n, r in runs.items()}
        self.memo: dict[tuple[str, str, int], float] = {}

    def signal(self, signal: str, name: str, steps: int) -> float:
        key = (signal, name, steps)
        if key not in self.memo:
            curve = self.curves[name].cut(steps)
            if signal in NEEDS_EVAL and not any(e["step"] == steps for e in curve.evals):
                raise ValueError(f"{signal} at step {steps}: not a recorded validation step")
            self.memo[key] = get_signal(signal)(curve)
        return self.memo[key]


def fixed_budget(curves: Curves, names: list[str], signal: str, steps: int, tie: list[str]) -> list[str]:
    return order_by({n: curves.signal(signal, n, steps) for n in names}, tie)


def halving_order(
    curves: Curves,
    names: list[str],
    signal: str,
    eta: int,
    fraction: float,
    full: int,
    grid: list[int],
    order0: list[str],
    prune: bool,
) -> tuple[list[str], float] | None:
    """The order successive halving gives (rungs snapped to the grid) and the compute it spent; None if the budget
    cannot fund the rungs. With ``prune`` the zero-cost rung 0 keeps the best third of ``order0``."""
    entering = order0[: max(2, math.ceil(PRUNE * len(order0)))] if prune else order0
    budget_steps = fraction * len(names) * full
    try:
        plan = plan_rungs(len(entering), full, eta=eta, budget=None, budget_steps=int(budget_steps), final=1, snap=grid)
    except ValueError:
        return None
    result = successive_halving(entering, plan, lambda n, t: curves.signal(signal, n, t))
    order = result.order + [n for n in order0 if n not in entering]
    return order, plan.cost / (len(names) * full)


# ------------------------------------------------------------------------------------------------ study


def options_at(
    fraction: float, curves: Curves, names: list[str], full: int, grid: list[int], order0: list[str]
) -> dict[str, tuple[list[str], float]]:
    """option label -> (order, compute fraction spent) at one budget."""
    out: dict[str, tuple[list[str], float]] = {}
    steps = max(1, round(fraction * full))
    snapped = min(grid, key=lambda s: (abs(s - steps), s))
    for signal in list_signals():
        t = snapped if signal in NEEDS_EVAL else steps
        out[f"fixed budget, {signal}"] = (fixed_budget(curves, names, signal, t, order0), t / full)
        for eta in ETAS:
            for prune in (False, True):
                got = halving_order(curves, names, signal, eta, fraction, full, grid, order0, prune)
                if got is not None:
                    label = f"halving eta={eta}, {signal}" + (", rung 0 keeps 1/3" if prune else "")
                    out[label] = got
    return out


def bootstrap(names: list[str], fn, n: int, seed: int = 0) -> tuple[float, float]:
    """90% interval of ``fn(sample of names)`` over ``n`` resamples of the models with replacement."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        pick = list(rng.choice(len(names), size=len(names), replace=True))
        v = fn(pick)
        if math.isfinite(v):
            values.append(v)
    return (float(np.percentile(values, 5)), float(np.percentile(values, 95))) if values else (math.nan, math.nan)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick ground truth (halving_groundtruth --quick)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the models")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    schedule = QUICK_SCHEDULE if args.quick else SCHEDULE
    log = (ROOT / "runs" / "halving_groundtruth_quick" / "runs.jsonl") if args.quick else RESULTS / "runs.jsonl"
    runs = read_runs(log, schedule)
    seed0 = {n: r for (n, s), r in runs.items() if s == 0}
    names = [n for n in MODELS if n in seed0]
    if len(names) < 3:
        raise SystemExit(f"{log}: {len(names)} finished seed-0 runs; run halving_groundtruth.py first")
    full, grid = steps_per_run(schedule), eval_grid(steps_per_run(schedule))
    acc = {n: seed0[n]["test_acc"] for n in names}
    families = [MODELS[n][0] for n in names]
    zc = zero_cost_scores(names, schedule, args.data_dir, args.quick)
    order0 = order_by(dict(zip(names, zc["#params"])), names)
    curves = Curves(seed0)

    rows: list[dict[str, Any]] = []

    def add(fraction: float, label: str, kind: str, order: list[str], spent: float) -> None:
        rows.append(
            {"fraction": fraction, "option": label, "kind": kind, "spent": spent, "order": order, **metrics(order, acc)}
        )

    for label, values in zc.items():
        add(0.0, label, "zero-cost", order_by(dict(zip(names, values)), names), 0.0)
    two = two_epoch_accuracy(names)
    if two is not None and np.isfinite(two).all():
        frac = (2 * 8000) / (schedule["epochs"] * schedule["train_size"])
        add(
            frac,
            "triage study's 2-epoch training (a separate run)",
            "separate run",
            order_by(dict(zip(names, two)), names),
            frac,
        )
    for fraction in FRACTIONS:
        for label, (order, spent) in options_at(fraction, curves, names, full, grid, order0).items():
            add(fraction, label, "halving" if label.startswith("halving") else "fixed budget", order, spent)

    # leave-one-family-out choice of the option, per budget (options as the negative position in their order)
    chosen: dict[str, Any] = {}
    for fraction in (0.0, *FRACTIONS):
        here = [r for r in rows if r["fraction"] == fraction]
        policies = {r["option"]: [-r["order"].index(n) for n in names] for r in here}
        cv = cross_validate(policies, [acc[n] for n in names], families)
        pick = next(r for r in here if r["option"] == cv.chosen_all)
        chosen[str(fraction)] = {
            "tau_cv": cv.tau,
            "rho_cv": cv.rho,
            "chosen_all": cv.chosen_all,
            "chosen_per_family": cv.chosen,
            **{k: pick[k] for k in ("tau", "regret", "recall3", "spent")},
        }

    # bootstrap intervals of the best options at each budget (by tau)
    def interval(order: list[str], key: str) -> tuple[float, float]:
        def fn(pick: list[int]) -> float:
            sub = {f"{names[i]}#{k}": acc[names[i]] for k, i in enumerate(pick)}
            pos = {n: i for i, n in enumerate(order)}
            sub_order = sorted(sub, key=lambda s: (pos[s.split("#")[0]], s))
            return metrics(sub_order, sub)[key]

        return bootstrap(names, fn, args.bootstrap)

    for r in rows:
        r["tau_ci"] = interval(r["order"], "tau") if args.bootstrap else (math.nan, math.nan)

    sweep = sweep_options(curves, names, full, grid, order0, acc)
    noise = noise_ceiling(runs, names)
    out = ROOT / "runs" / "halving_cifar10_quick" if args.quick else ROOT / "docs" / "results"
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "schedule": schedule,
        "missing": [n for n in (QUICK_MODELS if args.quick else MODELS) if n not in names],
        "full_steps": full,
        "grid": grid,
        "models": {
            n: {"family": MODELS[n][0], "test_acc": acc[n], "params": int(zc["#params"][i])}
            for i, n in enumerate(names)
        },
        "rows": rows,
        "cross_validated": chosen,
        "sweep": sweep,
        "noise_ceiling": noise,
        "bootstrap": args.bootstrap,
    }
    (out / "halving.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    _plot(out / "halving.png", rows, sweep, noise)
    md = _markdown(args, payload)
    (out / "halving.md").write_text(md)
    print(md)
    return 0


def sweep_options(
    curves: Curves, names: list[str], full: int, grid: list[int], order0: list[str], acc: dict[str, float]
) -> dict[str, list[dict[str, float]]]:
    """Every halving configuration and fixed-budget signal over the fine budget sweep: ``{option: [metrics at each
    budget it could be planned for, with the compute spent]}`` -- for the compute each needs to reach a target."""
    out: dict[str, list[dict[str, float]]] = {}
    for fraction in SWEEP:
        for label, (order, spent) in options_at(fraction, curves, names, full, grid, order0).items():
            out.setdefault(label, []).append({"budget": fraction, "spent": spent, **metrics(order, acc)})
    return out


def compute_to_reach(points: list[dict[str, float]], key: str, target: float) -> float | None:
    """The least compute spent at which ``key`` reaches ``target`` (regret: at most; others: at least) and stays
    there at every larger budget of the sweep; None if it never does."""
    ok = [p[key] <= target + 1e-9 if key == "regret" else p[key] >= target - 1e-9 for p in points]
    for i in range(len(points)):
        if all(ok[i:]):
            return points[i]["spent"]
    return None


def noise_ceiling(runs: dict[tuple[str, int], dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Seed 0 against seed 1 on the models trained under both: how well one training predicts another."""
    both = [n for n in names if (n, 1) in runs]
    if len(both) < 3:
        return {"models": both}
    a = {n: runs[(n, 0)]["test_acc"] for n in both}
    b = {n: runs[(n, 1)]["test_acc"] for n in both}
    m = metrics(order_by(a, both), b)
    return {
        "models": both,
        "tau": m["tau"],
        "regret": m["regret"],
        "recall3": m["recall3"],
        "mean_abs_diff_points": float(np.mean([100 * abs(a[n] - b[n]) for n in both])),
    }


def _f(x: Any, d: int = 3) -> str:
    return "--" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{d}f}"


def _markdown(args, p: dict[str, Any]) -> str:
    rows, cv, noise = p["rows"], p["cross_validated"], p["noise_ceiling"]
    s = p["schedule"]
    md = [
        "# Budgeted triage: which real model to train, for a few percent of the compute",
        "",
        f"Generated by `python benchmarks/halving_cifar10.py{' --quick' if args.quick else ''}` from the ground truth "
        f"of `python benchmarks/halving_groundtruth.py`: {len(p['models'])} timm / torchvision models, each trained "
        f"from scratch on CIFAR-10 for {s['epochs']} epochs on {s['train_size']} images ({p['full_steps']} steps of "
        f"{s['batch_size']}, AdamW lr {s['lr']}, {100 * s['warmup_fraction']:.0f}% warm-up then cosine), tested on "
        f"{'all 10000' if s['test_size'] is None else s['test_size']} test images. Compute fractions are of training "
        "every candidate fully; a fixed-budget signal and every halving rung is a prefix of the candidate's own run "
        "(what `gradsign_pl.halving` continues from a rung checkpoint). Rungs of halving end at the steps where "
        f"validation was recorded ({len(p['grid'])} geometric steps); the compute each option actually spent is "
        "shown. Intervals: 90% bootstrap over models.",
        "",
    ]
    if p["missing"]:
        md += [
            f"**Not yet in the ground truth:** {', '.join(p['missing'])} (their trainings had not finished when "
            "this page was generated; `halving_groundtruth.py` resumes them, and a rerun of this script adds them).",
            "",
        ]
    if noise.get("tau") is not None:
        md += [
            f"Noise ceiling: on the {len(noise['models'])} models trained under a second seed, seed 0's order "
            f"predicts seed 1's with Kendall tau {noise['tau']:.3f}, top-3 recall {noise['recall3']:.2f} and "
            f"top-1 regret {noise['regret']:.2f} points (accuracies move {noise['mean_abs_diff_points']:.2f} points "
            "on average).",
            "",
        ]
    md += [
        "## At each compute fraction",
        "",
        f"The default of `gradsign-fit --triage.strategy halving` ({HEADLINE[1]}) beside #params, the same signal "
        "at a fixed budget, and the same halving behind a zero-cost rung 0 that keeps the best third by #params. "
        "Each cell: Kendall tau of the whole order [90% CI] / top-1 regret in points / top-3 recall.",
        "",
        "| compute | " + " | ".join(label for label, _ in HEADLINE_ROWS) + " |",
        "| ---: |" + " --- |" * len(HEADLINE_ROWS),
    ]
    for frac in (0.0, *FRACTIONS):
        cells = []
        for _, option in HEADLINE_ROWS:
            want = "#params" if frac == 0.0 and option != "#params" else option
            r = next((r for r in rows if r["fraction"] == frac and r["option"] == want), None)
            if r is None or (frac == 0.0 and option != "#params"):
                cells.append("(= #params)" if frac == 0.0 else "--")
                continue
            lo, hi = r["tau_ci"]
            cells.append(f"{_f(r['tau'], 2)} [{_f(lo, 2)}, {_f(hi, 2)}] / {_f(r['regret'], 2)} / {_f(r['recall3'], 2)}")
        md.append(f"| {100 * frac:.0f}% | " + " | ".join(cells) + " |")
    md += [
        "",
        "## Cross-validated choice per budget",
        "",
        "At each budget the option (signal, eta, rung-0 prune, or fixed budget) is chosen by leave-one-family-out "
        "cross-validation on Kendall tau (`gradsign_pl.studies.policy_cv`); CV tau judges every pair of models by "
        "the option chosen with both their families held out. Regret and recall are those of the option chosen on "
        "all families.",
        "",
        "| budget | CV Kendall tau | chosen on all families | its tau | top-1 regret (points) | top-3 recall | "
        "compute spent |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for frac, c in cv.items():
        md.append(
            f"| {100 * float(frac):.0f}% | {_f(c['tau_cv'])} | {c['chosen_all']} | {_f(c['tau'])} | "
            f"{_f(c['regret'], 2)} | {_f(c['recall3'], 2)} | {100 * c['spent']:.1f}% |"
        )
    md += [
        "",
        "## Compute needed to reach each target",
        "",
        "Over a finer sweep of budgets (0.5% to 54%, 4 per octave): the least compute spent from which the option "
        f"meets the target at every larger budget (top-1 regret at most {TARGET['regret']:.0f} point, top-3 recall "
        f"at least 2/3, Kendall tau at least {TARGET['tau']}); '--' where it never does. Pairs with and without the "
        "zero-cost rung 0 (keep the best third by #params) give the compute that rung saves at equal regret.",
        "",
        "| option | regret <= 1 | recall >= 2/3 | tau >= 0.6 | all three | same without rung-0 prune (all three) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    sweep = p["sweep"]

    def need(label: str, keys: tuple[str, ...]) -> float | None:
        pts = sweep.get(label)
        if not pts:
            return None
        got = [compute_to_reach(pts, k, TARGET[k]) for k in keys]
        return None if any(g is None for g in got) else max(g for g in got if g is not None)

    def pct(x: float | None) -> str:
        return "--" if x is None else f"{100 * x:.1f}%"

    ranked = sorted(sweep, key=lambda lb: (need(lb, tuple(TARGET)) is None, need(lb, tuple(TARGET)) or 0, lb))
    for label in ranked:
        base = label.replace(", rung 0 keeps 1/3", "")
        md.append(
            f"| {label} | {pct(need(label, ('regret',)))} | {pct(need(label, ('recall3',)))} | "
            f"{pct(need(label, ('tau',)))} | {pct(need(label, tuple(TARGET)))} | "
            f"{pct(need(base, tuple(TARGET))) if base != label else ''} |"
        )
    md += [
        "",
        "## Every option",
        "",
        "| budget | option | compute spent | Kendall tau [90% CI] | top-1 regret | top-3 recall |",
        "| ---: | --- | ---: | --- | ---: | ---: |",
    ]
    for r in sorted(rows, key=lambda r: (r["fraction"], -(r["tau"] if math.isfinite(r["tau"]) else -9))):
        lo, hi = r["tau_ci"]
        md.append(
            f"| {100 * r['fraction']:.0f}% | {r['option']} | {100 * r['spent']:.1f}% | {_f(r['tau'])} "
            f"[{_f(lo, 2)}, {_f(hi, 2)}] | {_f(r['regret'], 2)} | {_f(r['recall3'], 2)} |"
        )
    md += ["", "## Models", "", "| model | family | params | test acc % |", "| --- | --- | ---: | ---: |"]
    for n, m in sorted(p["models"].items(), key=lambda kv: -kv[1]["test_acc"]):
        md.append(f"| {n} | {m['family']} | {m['params'] / 1e6:.2f}M | {100 * m['test_acc']:.2f} |")
    md += ["", "![halving](halving.png)", ""]
    return "\n".join(md)


def _plot(
    path: Path, rows: list[dict[str, Any]], sweep: dict[str, list[dict[str, float]]], noise: dict[str, Any]
) -> None:
    """Each metric against the compute spent: zero-cost rankings at the left edge, every option of the sweep as a
    faint line, the best halving and fixed-budget options (by compute to reach all targets) bold, targets dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), dpi=100)
    colour = {"fixed budget": "tab:blue", "halving": "tab:orange"}
    for ax, key, title in zip(
        axes, ("tau", "regret", "recall3"), ("Kendall tau of the whole order", "top-1 regret (points)", "top-3 recall")
    ):
        for label, unsorted in sweep.items():
            pts = sorted(unsorted, key=lambda q: q["spent"])
            kind = "halving" if label.startswith("halving") else "fixed budget"
            ax.plot([max(q["spent"], 1e-3) for q in pts], [q[key] for q in pts], c=colour[kind], lw=0.5, alpha=0.25)
        for kind in colour:  # the option of each kind with the best mean of this metric over the sweep
            labels = [lb for lb in sweep if (lb.startswith("halving")) == (kind == "halving")]
            if not labels:
                continue
            sign = -1 if key == "regret" else 1
            best = max(labels, key=lambda lb: sign * float(np.nanmean([q[key] for q in sweep[lb]])))
            pts = sorted(sweep[best], key=lambda q: q["spent"])
            ax.plot([max(q["spent"], 1e-3) for q in pts], [q[key] for q in pts], c=colour[kind], lw=2, label=best)
        for r in rows:
            if r["kind"] == "zero-cost":
                ax.scatter([1e-3], [r[key]], s=14, c="k")
                ax.annotate(
                    r["option"].split(" (")[0], (1e-3, r[key]), fontsize=6, xytext=(3, 0), textcoords="offset points"
                )
        if key in TARGET:
            ax.axhline(TARGET[key], ls="--", c="tab:red", lw=0.8)
        if noise.get(key) is not None:
            ax.axhline(noise[key], ls=":", c="grey", lw=0.8, label="seed-to-seed noise ceiling")
        ax.axvline(0.10, ls="--", c="grey", lw=0.5)
        ax.set_xscale("log")
        ax.set_xlabel("compute spent / training every candidate fully (log; zero-cost at 0.1%)", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
