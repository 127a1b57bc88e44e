"""Does distillation lift the Zen student? Teacher accuracy against lift, 2 seeds, logit KD and the feature term.

The student is the structure ``recipes/zen_cifar10.yaml``'s search keeps (``--structure``; default: the best
structure in ``<recipe run_dir>/search/best_structure.txt``, so run the recipe first, or pass one). Every condition
trains that student with the recipe's own data, model, optimiser and trainer sections (equal epochs and data),
through ``gradsign-fit`` itself, in its own run directory ``<--run>/<condition>_s<seed>`` (each resumable: a
finished training is reused only under identical settings). The conditions:

- ``none``: the student alone (``DistillationModule`` without a teacher: the same loss, optimiser and schedule);
- ``b3``: logit KD from the EfficientNet-B3 teacher of ``benchmarks/teacher_b3_cifar10.py`` (its latest
  ``benchmarks/results/teacher_b3/summary_*.json`` names the weights and the resolution it was trained at, passed
  as ``distill.checkpoint`` / ``distill.teacher_resolution``), and ``b3_feat``: the same plus the feature term
  (``feature_weight`` ``--feature-weight``);
- ``b3_ep<k>``: logit KD from that teacher's weights after epoch ``k`` (``--b3-epochs``), the lower-accuracy points
  of the teacher-accuracy vs lift curve;
- ``r18`` / ``r18_feat``: the control, a ``timm:resnet18`` teacher trained by the recipe itself (4 epochs at 32 px,
  the recipe's data, under the first seed; every seed distils from that one teacher), logit KD and with the
  feature term.

Each condition runs for every ``--seeds`` value (``seed_everything``: weights and data order). Results -- one record
per condition and seed with the teacher's test accuracy, the student's, the training seconds -- are appended to
``benchmarks/results/zen_lift/results.jsonl`` as they finish, and the page ``docs/results/zen_distill.md`` (with
``zen_distill_lift.png``: lift against teacher accuracy) is rewritten from them: per condition the mean student
accuracy over the seeds, its lift over ``none`` (mean, and the two seeds' lifts), and the cost.

    python benchmarks/zen_distill_lift.py [--seeds 0 1] [--conditions none b3 ...] [--jobs 2] [--data-dir DIR]
    python benchmarks/zen_distill_lift.py --quick     # 1 epoch on 512 images, conditions none and r18, seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from gradsign_pl.scoring.cache import append_jsonl, iter_jsonl

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "zen_cifar10.yaml"
RESULTS = ROOT / "benchmarks" / "results" / "zen_lift"
CONDITIONS = ("none", "b3", "b3_feat", "r18", "r18_feat")


def b3_teachers(results: Path) -> dict[str, dict[str, Any]]:
    """Every ``teacher_b3_cifar10.py`` run recorded in ``results``, by tag, oldest first (by its curve's mtime).

    A finished run is its summary ``{tag, weights, side, epochs, test_acc, curve, probes, command, ...}``; a run still
    training has no summary yet, so its per-epoch curve stands in, with ``weights`` and ``test_acc`` ``None`` (the
    ``b3_ep<k>`` conditions can run from it; ``b3`` / ``b3_feat`` wait for the end)."""
    runs: dict[str, dict[str, Any]] = {}
    for path in sorted(results.glob("curve_*.jsonl"), key=lambda p: p.stat().st_mtime):
        curve = list(iter_jsonl(path, ("side", "epoch", "weights")))
        tag = path.stem.removeprefix("curve_")
        if curve:
            runs[tag] = {"tag": tag, "side": curve[-1]["side"], "curve": curve, "weights": None, "test_acc": None}
    for path in results.glob("summary_*.json"):
        summary = json.loads(path.read_text())
        runs[summary["tag"]] = summary
    return runs


def condition_recipe(base: dict[str, Any], condition: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """The recipe of one condition: the base recipe's data/model/trainer, the fixed student, this teacher."""
    recipe = {k: v for k, v in base.items() if k not in ("search", "distill", "run_dir", "candidates", "triage")}
    recipe["seed_everything"] = seed
    recipe["run_dir"] = str(Path(args.run) / f"{condition}_s{seed}")
    recipe["candidates"] = [{"model": f"zen:{args.structure}", "name": "zen-student"}]
    recipe["triage"] = {"proxies": ["params"], "top_k": 1}
    if args.quick:
        recipe["trainer"] = {**recipe["trainer"], "max_epochs": 1}
        recipe["data"] = {**recipe["data"], "init_args": {**recipe["data"]["init_args"], "train_size": 512}}
    if args.data_dir:
        recipe["data"]["init_args"] = {**recipe["data"]["init_args"], "root": args.data_dir}
    if condition == "none":
        return recipe
    family, _, variant = condition.partition("_")
    distill: dict[str, Any] = {"temperature": 1.0, "kd_weight": 1.0, "baseline": False}
    if family == "r18":
        distill.update(
            teacher="timm:resnet18",
            checkpoint=str(Path(args.run) / "teachers" / ("resnet18_quick.pth" if args.quick else "resnet18.pth")),
            # trained once, under the first seed (the recipe's teacher identity includes the seed); the other seeds
            # load that same file as given weights (0 epochs), so every seed distils from one teacher
            train_teacher_epochs=(1 if args.quick else 4) if seed == args.seeds[0] else 0,
            teacher_hparams={"optimizer": "adamw", "lr": 0.002},
        )
    else:
        b3 = args.b3
        if b3 is None:
            raise SystemExit(
                f"condition {condition}: no EfficientNet-B3 teacher in {args.teacher_results}; run "
                "benchmarks/teacher_b3_cifar10.py first (it writes curve_*.jsonl and summary_*.json there)"
            )
        weights = b3["weights"]
        if weights is None and not variant.startswith("ep"):
            raise SystemExit(f"condition {condition}: the B3 teacher is still training (only its curve exists)")
        if variant.startswith("ep"):
            epoch = int(variant[2:])
            weights = next((r["weights"] for r in b3["curve"] if r["epoch"] == epoch), None)
            if weights is None:
                raise SystemExit(f"condition {condition}: the B3 teacher has no weights after epoch {epoch}")
        distill.update(teacher="timm:efficientnet_b3", checkpoint=weights, teacher_resolution=int(b3["side"]))
    if variant == "feat":
        distill["feature_weight"] = args.feature_weight
    recipe["distill"] = distill
    return recipe


def run_condition(base: dict[str, Any], condition: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run (or resume) one condition with gradsign-fit; its result record."""
    recipe = condition_recipe(base, condition, seed, args)
    run_dir = Path(recipe["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    with open(run_dir / "gradsign-fit.log", "a") as log:
        done = subprocess.run(
            [sys.executable, "-m", "gradsign_pl.cli.fit", "--config", str(path)], stdout=log, stderr=log, env=env
        )
    if done.returncode != 0:
        return {"condition": condition, "seed": seed, "status": "failed", "log": str(run_dir / "gradsign-fit.log")}
    report = json.loads((run_dir / "report.json").read_text())
    # this invocation's student: the report's row, matched to its record by checkpoint (a run directory keeps the
    # trainings of every teacher it saw, each under its own identity)
    row = next(c for c in report["candidates"] if c["name"] == "zen-student")
    trained = [r for r in iter_jsonl(run_dir / "trained.jsonl", ("name",)) if r["name"] == "zen-student"]
    student = next((r for r in reversed(trained) if r.get("checkpoint") == row.get("checkpoint")), trained[-1])
    teacher = report.get("distillation") or {}
    teacher_acc = teacher.get("test_acc")
    if teacher_acc is None and condition.startswith("b3"):  # weights from the teacher benchmark: its own record
        b3 = args.b3
        variant = condition.partition("_")[2]
        if variant.startswith("ep"):
            teacher_acc = next(r["val_acc"] for r in b3["curve"] if r["epoch"] == int(variant[2:]))
        else:
            teacher_acc = b3["test_acc"]
    return {
        "condition": condition,
        "seed": seed,
        "status": student.get("status"),
        "structure": args.structure,
        "teacher": teacher.get("model"),
        "teacher_resolution": teacher.get("resolution"),
        "teacher_acc": teacher_acc,
        "test_acc": student.get("test_acc"),
        "val_acc": student.get("val_acc"),
        "seconds": student.get("seconds"),
        "identity": student.get("identity"),
        "epochs": recipe["trainer"]["max_epochs"],
        "train_size": recipe["data"]["init_args"].get("train_size"),
        "teacher_run": args.b3["tag"] if condition.startswith("b3") else None,
        "command": args.command,
    }


def label(record: dict[str, Any], teachers: dict[str, dict[str, Any]]) -> str:
    """A row's name: the condition, and for a B3 condition which teacher run (``b3 (e6)``: the 6-epoch run)."""
    run = record.get("teacher_run")
    if not run:
        return record["condition"]
    epochs = teachers.get(run, {}).get("epochs")
    return f"{record['condition']} ({'e' + str(epochs) if epochs else run})"


def teacher_lines(
    teachers: dict[str, dict[str, Any]],
    student_alone: float | None,
    lifts: dict[str, float],
    controls: dict[str, tuple[float, float]],
) -> list[str]:
    """The B3 teacher runs' probe and curves (``teacher_b3_cifar10.py``'s summaries) and the two targets, measured:
    teacher at least 15 points above the student alone, and a mean lift of at least 2 points (``lifts``: B3 rows'
    mean lifts; ``controls``: ``{row: (teacher acc, mean lift)}`` of the ResNet-18 control, in points)."""
    done = [t for t in teachers.values() if t.get("test_acc") is not None]
    if not done:
        return []
    newest = done[-1]
    lines = [
        "",
        "## The EfficientNet-B3 teacher",
        "",
        f"Trained by `benchmarks/teacher_b3_cifar10.py` on {newest['train_size']} CIFAR-10 training images (batch "
        f"{newest['batch_size']}, AdamW, warmup + cosine over the run's epochs, label smoothing 0.1, random crop + "
        "flip). Resolution probe (equal CPU budget per side; the smallest side within one standard error of the best "
        "is kept):",
        "",
        "| side (px) | steps | CPU s / step | val acc (%) |",
        "|---:|---:|---:|---:|",
    ]
    for r in sorted(newest["probes"], key=lambda r: r["side"]):
        lines.append(f"| {r['side']} | {r['steps']} | {r['cpu_s_per_step']:.2f} | {100 * r['val_acc']:.1f} |")
    lines += ["", "Training runs (CPU seconds are process time, summed over threads):", ""]
    lines += ["| run | epoch | val acc (%) | CPU s (cumulative) |", "|---|---:|---:|---:|"]
    for t in done:
        for r in t["curve"]:
            lines.append(f"| e{t['epochs']} | {r['epoch']} | {100 * r['val_acc']:.1f} | {r['cpu_seconds']:.0f} |")
    lines += [""] + [
        f"- e{t['epochs']} (`{t['command']}`, {t['side']} px): test accuracy **{100 * t['test_acc']:.2f}%** after "
        f"{t['curve'][-1]['cpu_seconds'] / 3600:.2f} CPU hours."
        for t in done
    ]
    if student_alone is None:
        return lines
    best_teacher = max(done, key=lambda t: t["test_acc"])
    teacher = 100 * best_teacher["test_acc"]
    target = student_alone + 15
    lines += [
        "",
        "## Targets",
        "",
        f"- Teacher at least 15 points above the student alone ({student_alone:.2f}%, mean of the seeds): the best "
        f"B3 (e{best_teacher['epochs']}) is **{teacher - student_alone:+.2f} points** -- "
        + ("met." if teacher >= target else "missed."),
    ]
    if lifts:
        best = max(lifts.items(), key=lambda kv: kv[1])
        lines.append(
            f"- A mean lift of at least 2 points from a B3 teacher: best `{best[0]}` **{best[1]:+.2f}** -- "
            + ("met." if best[1] >= 2 else "missed.")
        )
    hours = [(t["curve"][-1]["cpu_seconds"] / 3600, 100 * t["test_acc"]) for t in done]
    hours.sort()
    if teacher < target and len(hours) >= 2 and hours[-1][1] > hours[0][1]:
        (h0, a0), (h1, a1) = hours[0], hours[-1]
        slope = (a1 - a0) / np.log(h1 / h0)  # points per e-fold of CPU time, through the two measured runs
        need = h1 * float(np.exp((target - a1) / slope))
        lines.append(
            f"- What it would take: the teacher must pass {target:.1f}%. The measured runs gained "
            f"{a1 - a0:+.1f} points going from {h0:.2f} to {h1:.2f} CPU hours; extrapolating that log-linear trend "
            f"(an extrapolation from two runs, not a measurement) puts {target:.1f}% at about {need:.1f} CPU hours."
        )
    elif teacher < target:
        lines.append(
            f"- What it would take: the teacher must pass {target:.1f}%, {target - teacher:.1f} points above where "
            f"{hours[-1][0]:.2f} CPU hours left it. Longer runs were not measured here."
        )
    for row, (acc, lift) in sorted(controls.items()):
        lines.append(
            f"- The control `{row}`: a {acc:.2f}% teacher, {acc - student_alone:+.2f} points from the student alone, "
            f"lifts it by {lift:+.2f} points."
        )
    return lines


def write_page(records: list[dict[str, Any]], out: Path, teachers: dict[str, dict[str, Any]]) -> None:
    """docs/results/zen_distill.md and its plot, from every finished record (``teachers``: :func:`b3_teachers`)."""
    ok = [r for r in records if r.get("status") == "trained" and r.get("test_acc") is not None]
    by: dict[str, dict[int, dict[str, Any]]] = {}
    for r in ok:
        by.setdefault(label(r, teachers), {})[int(r["seed"])] = r  # the latest record of a (row, seed) wins
    base = by.get("none", {})
    winners = [r for runs in by.values() for r in runs.values()]
    commands = list(dict.fromkeys(r["command"] for r in winners if r.get("command")))
    lines = [
        "# Distilling the Zen student: teacher accuracy against lift",
        "",
        "Generated by `benchmarks/zen_distill_lift.py` (each row records the command that trained it: "
        + "; ".join(f"`{c}`" for c in commands)
        + "); CPU: 2 cores, no GPU. Student: the structure `recipes/zen_cifar10.yaml` searched, trained with that "
        "recipe's data, optimiser and epochs in every row; lift = student accuracy with the teacher minus without "
        "it, per seed (same seed = same weights and data order), then averaged. Teacher accuracy: the final "
        "teacher's test accuracy; for `b3_ep<k>` (B3's weights after epoch k of that run) its validation accuracy "
        "on 1000 held-out training images. `(eN)`: the B3 teacher of the N-epoch run.",
        "",
        "| row | teacher | teacher acc (%) | seeds | student test acc (%) per seed | mean | lift (points) "
        "per seed | mean lift | train s (mean) |",
        "|---|---|---:|---|---|---:|---|---:|---:|",
    ]
    points = []
    for row in sorted(by, key=lambda c: (c != "none", c)):
        runs = by[row]
        seeds = sorted(runs)
        accs = [100 * runs[s]["test_acc"] for s in seeds]
        lifts = [100 * (runs[s]["test_acc"] - base[s]["test_acc"]) for s in seeds if s in base]
        teacher_acc = runs[seeds[0]].get("teacher_acc")
        mean_lift = float(np.mean(lifts)) if lifts and row != "none" else None
        if mean_lift is not None and teacher_acc is not None:
            points.append((100 * teacher_acc, mean_lift, lifts, row))
        lines.append(
            f"| {row} | {runs[seeds[0]].get('teacher') or 'none'}"
            + (f" @ {runs[seeds[0]]['teacher_resolution']} px" if runs[seeds[0]].get("teacher_resolution") else "")
            + f" | {'' if teacher_acc is None else f'{100 * teacher_acc:.2f}'} | {seeds} | "
            + ", ".join(f"{a:.2f}" for a in accs)
            + f" | {np.mean(accs):.2f} | "
            + ("" if row == "none" else ", ".join(f"{x:+.2f}" for x in lifts))
            + f" | {'' if mean_lift is None else f'{mean_lift:+.2f}'} | "
            + f"{np.mean([runs[s].get('seconds') or np.nan for s in seeds]):.0f} |"
        )
    alone = [100 * r["test_acc"] for r in base.values()]
    b3_lifts = {c: lift for _, lift, _, c in points if c.startswith("b3")}
    controls = {c: (acc, lift) for acc, lift, _, c in points if c.startswith("r18")}
    lines += teacher_lines(teachers, float(np.mean(alone)) if alone else None, b3_lifts, controls)
    failed = [r for r in records if r.get("status") != "trained"]
    if failed:
        lines += ["", "Failed runs (see their logs): " + ", ".join(f"{r['condition']} s{r['seed']}" for r in failed)]
    out.mkdir(parents=True, exist_ok=True)
    if points:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
        for acc, lift, lifts, row in points:
            ax.errorbar(acc, lift, yerr=[[lift - min(lifts)], [max(lifts) - lift]], fmt="o", capsize=3)
            ax.annotate(row, (acc, lift), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("teacher test accuracy (%)")
        ax.set_ylabel("lift of the student (points, mean and range of seeds)")
        ax.set_title("Zen student on CIFAR-10: distillation lift")
        fig.tight_layout()
        fig.savefig(out / "zen_distill_lift.png")
        plt.close(fig)
        lines += ["", "![lift against teacher accuracy](zen_distill_lift.png)"]
    (out / "zen_distill.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(RECIPE))
    parser.add_argument("--structure", default=None, help="the student (default: the recipe's searched best)")
    parser.add_argument("--conditions", nargs="+", default=None, help=f"default {list(CONDITIONS)}")
    parser.add_argument("--b3-epochs", type=int, nargs="*", default=[], help="also distil from B3 after these epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1")
    parser.add_argument("--feature-weight", type=float, default=1.0)
    parser.add_argument("--jobs", type=int, default=1, help="conditions run side by side (one core each is sane)")
    parser.add_argument("--threads", type=int, default=1, help="OMP threads per gradsign-fit")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--run", default=None, help="run directories (default runs/zen_lift)")
    parser.add_argument(
        "--teacher-results",
        default=str(RESULTS.parent / "teacher_b3"),
        help="where teacher_b3_cifar10.py wrote its summary_*.json (its --quick run: runs/teacher_b3_quick/results)",
    )
    parser.add_argument(
        "--b3-run",
        default=None,
        help="which teacher_b3_cifar10.py run the b3 conditions distil from, by tag (e.g. r64_e3_n45000_b64; "
        "default: the newest)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 epoch on 512 images; by default conditions none and r18, seed 0"
    )
    parser.add_argument("--page-only", action="store_true", help="rewrite the page from the recorded results")
    args = parser.parse_args(argv)
    argv_used = sys.argv[1:] if argv is None else argv
    args.command = shlex.join(["python", "benchmarks/zen_distill_lift.py", *argv_used])
    args.conditions = args.conditions or (["none", "r18"] if args.quick else list(CONDITIONS))
    args.seeds = args.seeds or ([0] if args.quick else [0, 1])
    conditions = list(args.conditions) + [f"b3_ep{k}" for k in args.b3_epochs]
    for c in conditions:
        family, _, variant = c.partition("_")
        if family not in ("none", "b3", "r18") or (variant not in ("", "feat") and not variant.startswith("ep")):
            parser.error(f"unknown condition {c!r}; choose from {list(CONDITIONS)} (and --b3-epochs K for b3_epK)")
    if args.jobs < 1 or args.threads < 1:
        parser.error("--jobs and --threads must be >= 1")
    base = yaml.safe_load(Path(args.recipe).read_text())
    if args.structure is None:
        best = ROOT / base.get("run_dir", "runs/zen_cifar10") / "search" / "best_structure.txt"
        if not best.is_file():
            parser.error(f"no --structure and no searched one at {best}: run gradsign-fit --config {args.recipe} first")
        args.structure = best.read_text().strip()
    args.run = args.run or str(ROOT / "runs" / ("zen_lift_quick" if args.quick else "zen_lift"))
    teachers = b3_teachers(Path(args.teacher_results))
    if args.b3_run is not None and args.b3_run not in teachers:
        parser.error(
            f"--b3-run {args.b3_run!r}: no such run in {args.teacher_results}; "
            f"recorded runs: {sorted(teachers) or 'none'}"
        )
    args.b3 = teachers[args.b3_run] if args.b3_run else (list(teachers.values())[-1] if teachers else None)
    results = Path(args.run) / "results.jsonl" if args.quick else RESULTS / "results.jsonl"
    results.parent.mkdir(parents=True, exist_ok=True)
    out = Path(args.run) if args.quick else ROOT / "docs" / "results"
    # the r18 teacher is trained by the first r18 run: run those first, one at a time, so two never train it at once
    jobs = [(c, s) for c in conditions for s in args.seeds]
    first = [j for j in jobs if j[0].startswith("r18")][:1]
    rest = [j for j in jobs if j not in first]

    def one(job: tuple[str, int]) -> None:
        record = run_condition(base, job[0], job[1], args)
        append_jsonl(results, record)
        acc = record.get("test_acc")
        print(
            f"{job[0]} seed {job[1]}: {record['status']}" + ("" if acc is None else f", {100 * acc:.2f}%"), flush=True
        )

    if not args.page_only:
        for job in first:
            one(job)
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(one, rest))
    write_page(list(iter_jsonl(results, ("condition",))), out, teachers)
    print(f"page: {out / 'zen_distill.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
