"""The report of a ``gradsign-fit`` run: did the zero-cost prediction hold once the survivors were trained?

Writes ``report.md`` (people), ``report.csv`` / ``report.json`` (machines) and ``predicted_vs_achieved.png`` into the
run directory. Spearman rho and Kendall tau (SciPy, gradsign_pl.scoring.agreement) compare each proxy's ranking of
the trained candidates with their achieved test accuracy (nan with a note when fewer than three were trained).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gradsign_pl.scoring.agreement import rank_agreement
from gradsign_pl.triage import Ranking


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "--"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def agreement(ranking: Ranking, trained: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | int | None]]:
    """Spearman / Kendall of each proxy (and params, flops) against achieved test accuracy over trained runs."""
    names = {r.name for r in ranking.rows}
    done = [
        t for t in trained if t.get("status") == "trained" and t.get("test_acc") is not None and t["name"] in names
    ]  # extra runs (a no-teacher baseline) were not ranked
    acc = [t["test_acc"] for t in done]
    out = {}
    for key in [*ranking.proxies, "params", "flops"]:
        values = []
        for t in done:
            row = ranking[t["name"]]
            values.append(float(row.scores[key]) if key in row.scores else float(getattr(row, key) or math.nan))
        out[key] = _agreement(values, acc)
    if ranking.order_description not in out:  # a combined order (e.g. gradsign + params): rank 1 = best
        out[f"the ranking ({ranking.order_description})"] = _agreement(
            [-float(ranking[t["name"]].rank or math.nan) for t in done], acc
        )
    return out


def _agreement(values: list[float], acc: list[float]) -> dict[str, float | int | None]:
    rho, tau, n = rank_agreement(values, acc) if len(acc) >= 3 else (math.nan, math.nan, len(acc))
    return {"spearman": None if math.isnan(rho) else rho, "kendall": None if math.isnan(tau) else tau, "n": n}


def write_report(
    run_dir: Path,
    ranking: Ranking,
    trained: Sequence[dict[str, Any]],
    *,
    command: str,
    score_only: bool,
    sections: dict[str, Any] | None = None,
    seconds: float | None = None,
) -> dict[str, Path]:
    """Write the run's report files; return their paths.

    ``sections`` holds the optional stages' summaries: ``"search"`` (the search's ``search.json``) and
    ``"distillation"`` (the teacher: model, checkpoint, test_acc); each gets a section in ``report.md`` and a key in
    ``report.json``. ``seconds``: the run's wall-clock time, stated in the report.
    """
    sections = dict(sections or {})
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": run_dir / "report.md", "csv": run_dir / "report.csv", "json": run_dir / "report.json"}
    by_name = {t["name"]: t for t in trained}
    halving = sections.get("halving")
    records = []
    for rec in ranking.records():
        t = by_name.get(rec["name"], {})
        if halving is not None and rec.get("status") == "ok":  # kept = survived the rungs
            rung = halving["eliminated_at"].get(rec["name"], "never entered")
            rec = {
                **rec,
                "kept": rec["name"] in halving["survivors"],
                "reason": None
                if rec["name"] in halving["survivors"]
                else (f"eliminated after rung {rung}" if isinstance(rung, int) else "not in rung 1 (keep_after_rung0)"),
            }
        records.append(
            {
                **rec,
                "train_status": t.get("status"),
                "val_acc": t.get("val_acc"),
                "test_acc": t.get("test_acc"),
                "train_seconds": t.get("seconds"),
                "train_epochs": t.get("epochs"),
                "train_steps": t.get("steps"),
                "checkpoint": t.get("checkpoint"),
                "train_error": t.get("error"),
            }
        )
    with open(paths["csv"], "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(records[0]) if records else ["name"])
        writer.writeheader()
        writer.writerows(records)
    stats = agreement(ranking, trained) if not score_only else {}
    paths["json"].write_text(
        json.dumps(
            {
                "command": command,
                "order_by": ranking.order_by,
                "order": ranking.order_description,
                "proxies": ranking.proxies,
                "seeds": ranking.seeds,
                "batch": ranking.batch,
                "policy": ranking.policy,
                "candidates": records,
                "agreement": stats,
                "seconds": seconds,
                **sections,
            },
            indent=2,
        )
        + "\n"
    )
    if not score_only and _n_trained(ranking, trained) >= MIN_AGREEMENT:
        paths["plot"] = _plot(run_dir / "predicted_vs_achieved.png", ranking, trained, stats)
    text = _markdown(
        ranking, records, stats, command, score_only, "plot" in paths, _n_trained(ranking, trained), seconds
    )
    if "search" in sections:
        text += _search_markdown(sections["search"], run_dir)
    if "distillation" in sections:
        text += _distillation_markdown(sections["distillation"], trained)
    if "halving" in sections:
        paths["halving_plot"] = _halving_plot(run_dir / "halving_signal.png", sections["halving"])
        text += _halving_markdown(sections["halving"])
    paths["markdown"].write_text(text)
    return paths


MIN_AGREEMENT = 3
"""Trained candidates needed before rank agreement (and its plot) says anything."""


def _n_trained(ranking: Ranking, trained: Sequence[dict[str, Any]]) -> int:
    names = {r.name for r in ranking.rows}
    return sum(1 for t in trained if t.get("test_acc") is not None and t["name"] in names)


def _value(ranking: Ranking, name: str, key: str) -> float:
    row = ranking[name]
    if key in ("params", "flops"):
        return float(getattr(row, key) or math.nan)
    if key in row.scores:
        return float(row.scores[key])
    return -float(row.rank or math.nan)  # a combined order: rank 1 = best


def _plot(path: Path, ranking: Ranking, trained: Sequence[dict[str, Any]], stats: dict) -> Path:
    """One panel per score against the achieved accuracy: first what the order follows, then the other proxies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {r.name for r in ranking.rows}
    done = [t for t in trained if t.get("test_acc") is not None and t["name"] in names]
    order = ranking.order_description
    order_key = order if order in (*ranking.proxies, "params", "flops") else f"the ranking ({order})"
    keys = [order_key] + [p for p in ranking.proxies if p != order_key and p not in ("params", "flops")]
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 4.2), dpi=110, squeeze=False)
    y = np.array([100 * t["test_acc"] for t in done])
    for ax, key in zip(axes[0], keys):
        x = np.array([_value(ranking, t["name"], order if key == order_key else key) for t in done], dtype=float)
        ax.scatter(x, y, s=30)
        for xi, yi, t in zip(x, y, done):
            ax.annotate(t["name"], (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
        s = stats.get(key, {})
        what = "the order" if key == order_key else "shown beside it"
        ax.set_title(
            f"{key} ({what}) vs test accuracy\nSpearman {_fmt(s.get('spearman'))}, "
            f"Kendall {_fmt(s.get('kendall'))} (n={s.get('n')})",
            fontsize=9,
        )
        ax.set_xlabel(f"{key} (higher = predicted better)")
        if key in ("params", "flops"):
            ax.set_xscale("log")
    axes[0][0].set_ylabel("test accuracy (%)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _markdown(
    ranking: Ranking,
    records: list[dict[str, Any]],
    stats: dict,
    command: str,
    score_only: bool,
    plot: bool,
    n_trained: int,
    seconds: float | None,
) -> str:
    took = (
        f" ({seconds / 60:.1f} min)"
        if seconds is not None and seconds >= 60
        else (f" ({seconds:.0f} s)" if seconds is not None else "")
    )
    lines = [
        "# gradsign-fit report",
        "",
        f"Command: `{command}`{took}",
        "",
        f"Scoring batch: {ranking.batch['shape']} ({ranking.batch['num_classes']} classes, fingerprint "
        f"`{ranking.batch['fingerprint']}`); proxies: {', '.join(ranking.proxies)}; ordered by "
        f"{ranking.order_description}; {ranking.seeds} initialisation seed(s).",
        "",
        f"Scoring policy: {ranking.policy.get('summary', 'not recorded')}. A rank marked `=` is a tie with "
        f"a neighbour: {ranking.tie_rule}.",
        "",
        "## Ranking at initialisation",
        "",
    ]
    shown = [p for p in ranking.proxies if p not in ("params", "flops")]  # they have their own columns
    head = ["rank", "candidate", *shown, "params (M)", "MFLOPs", "kept", "test acc (%)", "note"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        note = "; ".join(n for n in (r["reason"], r["train_error"], r.get("warnings")) if n)
        lines.append(
            "| "
            + " | ".join(
                [
                    _fmt(r["rank"]) + ("=" if r.get("tied") else ""),
                    r["name"],
                    *[f"{r[p]:.4g}" if isinstance(r[p], float) else "--" for p in shown],
                    _fmt(r["params"] / 1e6 if r["params"] is not None else None, 2),
                    _fmt(r["flops"] / 1e6 if r["flops"] is not None else None, 1),
                    "yes" if r["kept"] else "",
                    _fmt(100 * r["test_acc"] if r["test_acc"] is not None else None, 2),
                    note.replace("|", "/"),
                ]
            )
            + " |"
        )
    if score_only:
        lines += ["", "Score-only run: nothing was trained."]
    elif n_trained < MIN_AGREEMENT:
        lines += [
            "",
            f"{n_trained} ranked candidate(s) trained: rank agreement needs {MIN_AGREEMENT} or more, so this "
            "run says nothing about whether the ranking held.",
        ]
    else:
        lines += [
            "",
            "## Did the prediction hold?",
            "",
            "Rank agreement between each score and the achieved test accuracy of the trained candidates "
            "(Spearman rho / Kendall tau-b; needs 3 or more trained):",
            "",
            "| score | Spearman | Kendall | trained |",
            "|---|---|---|---|",
        ]
        for key, s in stats.items():
            lines.append(f"| {key} | {_fmt(s['spearman'])} | {_fmt(s['kendall'])} | {s['n']} |")
        if plot:
            lines += ["", "![predicted vs achieved](predicted_vs_achieved.png)"]
    return "\n".join(lines) + "\n"


def _g(x: Any) -> str:
    """4 significant digits, or ``--`` for a missing / non-finite value."""
    return f"{x:.4g}" if isinstance(x, (int, float)) and math.isfinite(x) else "--"


def _search_markdown(search: dict[str, Any], run_dir: Path) -> str:
    extra, summary = search.get("extra") or {}, search.get("history_summary") or {}
    settings = search.get("settings", {})
    lines = [
        "",
        "## Evolutionary search",
        "",
        f"Space `{search.get('space')}`, fitness `{extra.get('proxy')}` on {extra.get('max_samples')} images; "
        + ", ".join(f"{k} {v}" for k, v in settings.items() if v is not None and k != "init_structure")
        + ".",
    ]
    if summary:
        rejected = summary.get("rejected") or {}
        lines += [
            "",
            f"{summary.get('evaluated')} of {summary.get('iterations')} mutations scored (rejected: "
            + (
                ", ".join(
                    f"{n} over {k}" if k in ("params", "flops", "layers") else f"{n} {k}"
                    for k, n in rejected.items()
                    if n
                )
                or "none"
            )
            + f"); best score {_g(summary.get('first_best_score'))} at the first scored candidate, "
            f"{_g(summary.get('final_best_score'))} at the end (reached at iteration "
            f"{summary.get('iteration_best_reached')}).",
        ]
    note = (
        "Params and FLOPs in the space's convention (FLOPs: ZenNAS's, multiply-accumulates + BN/bias terms "
        "per image at the search resolution)."
    )
    lines += ["", note, "", "| rank | score | params (M) | MFLOPs | layers | structure |", "|---|---|---|---|---|---|"]
    for i, d in enumerate(search.get("top", [])):
        params, flops = d.get("params"), d.get("flops")
        lines.append(
            f"| {d.get('rank', i + 1)} | {_g(d.get('score'))} | "
            f"{_fmt(params / 1e6 if params is not None else None)} | "
            f"{_fmt(flops / 1e6 if flops is not None else None, 1)} | {_fmt(d.get('layers'))} | "
            f"`{d['structure']}` |"
        )
    if (run_dir / "search" / "best_score.png").exists():
        lines += ["", "![best score over iterations](search/best_score.png)"]
    return "\n".join(lines) + "\n"


def _distillation_markdown(teacher: dict[str, Any], trained: Sequence[dict[str, Any]]) -> str:
    acc = teacher.get("test_acc")
    lines = [
        "",
        "## Distillation",
        "",
        f"Teacher `{teacher.get('model')}` from `{teacher.get('checkpoint')}`"
        + (f" at {teacher['resolution']} px" if teacher.get("resolution") else "")
        + (f" (trained by this recipe: {100 * acc:.2f}% test)" if acc is not None else "")
        + ".",
    ]
    students = [
        t for t in trained if t.get("status") == "trained" and not str(t.get("name", "")).startswith("teacher ")
    ]
    accs = {t["name"]: t.get("test_acc") for t in students}
    for name, alone in accs.items():  # the baseline is "<best> (no teacher)": the lift is the pair's difference
        with_teacher = accs.get(name.removesuffix(" (no teacher)")) if name.endswith(" (no teacher)") else None
        if alone is not None and with_teacher is not None:
            lift = 100 * (with_teacher - alone)
            lines += [
                "",
                f"Lift: **{lift:+.2f} points** of test accuracy for `{name.removesuffix(' (no teacher)')}` "
                f"({100 * with_teacher:.2f}% with the teacher, {100 * alone:.2f}% without; equal epochs and data, "
                "one seed).",
            ]
    lines += ["", "| student | teacher | test acc (%) | val acc (%) | train s |", "|---|---|---|---|---|"]
    for t in students:
        lines.append(
            f"| {t['name']} | {t.get('teacher') or 'none'} | "
            f"{_fmt(100 * t['test_acc'] if t.get('test_acc') is not None else None, 2)} | "
            f"{_fmt(100 * t['val_acc'] if t.get('val_acc') is not None else None, 2)} | "
            f"{_fmt(t.get('seconds'), 0)} |"
        )
    return "\n".join(lines) + "\n"


def _halving_markdown(h: dict[str, Any]) -> str:
    """The rung table (candidate, steps trained, signal at each rung, eliminated after) and the compute spent."""
    plan = h["plan"]
    table: dict[str, dict[int, float | None]] = {}
    for r in h["rungs"]:
        table.setdefault(r["name"], {})[r["steps"]] = r["signal"]
    steps = list(dict.fromkeys(plan["steps"]))
    full_all = h["full_steps_all"] or 1
    spent = h["spent_steps"] + h.get("survivor_steps", 0)
    lines = [
        "",
        "## Successive halving",
        "",
        f"Signal `{h['signal']}` (higher = better), eta {plan['eta']:g}: {plan['counts'][0] if plan['counts'] else 0}"
        f" candidates entered rung 1; rungs end at {steps} of {plan['full_steps']} optimiser steps per candidate "
        f"and keep {list(plan['counts'][1:]) + [plan['final']]}.",
        "",
        f"Compute: the rungs trained {h['spent_steps']:,} steps, {100 * h['spent_steps'] / full_all:.1f}% of "
        f"training all {plan['counts'][0] if plan['counts'] else 0} fully ({full_all:,} steps); with the "
        f"survivors' full training, {spent:,} steps ({100 * spent / full_all:.1f}%).",
        "",
        "| candidate | steps trained | " + " | ".join(f"signal at {s}" for s in steps) + " | eliminated after |",
        "|---|---|" + "---|" * len(steps) + "---|",
    ]
    eliminated = h.get("eliminated_at") or {}
    for name in h["order"]:
        if name not in table:
            continue
        row = table[name]
        out = eliminated.get(name)
        reached = max(row) if row else 0
        lines.append(
            f"| {name} | {plan['full_steps'] if out is None else reached} | "
            + " | ".join(_g(row.get(s)) if row.get(s) is not None else ("--" if s > reached else "nan") for s in steps)
            + f" | {'survived' if out is None else f'rung {out}'} |"
        )
    lines += ["", "![signal against steps](halving_signal.png)"]
    return "\n".join(lines) + "\n"


def _halving_plot(path: Path, h: dict[str, Any]) -> Path:
    """The signal against steps per candidate; an x where a candidate was eliminated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    by_name: dict[str, list[tuple[int, float]]] = {}
    for r in h["rungs"]:
        if r["signal"] is not None:
            by_name.setdefault(r["name"], []).append((r["steps"], r["signal"]))
    eliminated = h.get("eliminated_at") or {}
    for name, points in by_name.items():
        xs, ys = zip(*sorted(points))
        line = ax.plot(xs, ys, marker="o", ms=3, lw=1, label=name if len(by_name) <= 12 else None)[0]
        if eliminated.get(name) is not None:
            ax.plot(xs[-1], ys[-1], marker="x", ms=8, color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlabel("optimiser steps trained (log)")
    ax.set_ylabel(f"{h['signal']} (higher = better)")
    ax.set_title("successive halving: signal per rung, x = eliminated", fontsize=9)
    if len(by_name) <= 12:
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
