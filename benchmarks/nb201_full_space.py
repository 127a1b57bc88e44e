"""The whole NAS-Bench-201 space on CIFAR-10: every one of the 15625 archs scored, resumable across sessions.

Scores the archs in the order of the seed-42 permutation (so the first 1000 are exactly the sampled study of
``nb201_correlation.py``) with ``--proxies`` (default GradSign, params, FLOPs) under the sampled study's protocol
(one batch of 64 real CIFAR-10 training images drawn with seed 42, every network built under seed 42), through
:func:`gradsign_pl.studies.correlation.score_archs` and the executor you name (``local``, or ``ray`` on the
cluster ``RAY_ADDRESS`` points at). Every score is appended to the cache
``runs/nb201_full_cache/scores.jsonl`` (``--cache``) the moment it exists, keyed on the batch and settings, so a run can
be killed at any time and resumed in a later session (a cache written under other settings is refused).

Then writes ``docs/results/nb201_full.md`` and ``.json``: Spearman rho / Kendall tau of every proxy over the archs
scored so far and over the first 1000, the number scored, the measured cost per arch, and the wall time projected
for N workers for the rest. While the space is incomplete the page says so and gives no full-space number.

    python benchmarks/nb201_full_space.py [--executor ray] [--max-archs N] [--report-only] [--data-dir DIR]
    python benchmarks/nb201_full_space.py --quick       # 20 archs into runs/nb201_full_quick, report there
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

from gradsign_pl.data.batches import load_batch
from gradsign_pl.executors import create_executor
from gradsign_pl.proxies import batch_fingerprint
from gradsign_pl.scoring.agreement import rank_agreement
from gradsign_pl.scoring.cache import ScoreCache, append_jsonl, iter_jsonl
from gradsign_pl.spaces import create_space
from gradsign_pl.studies.correlation import score_archs

ROOT = Path(__file__).resolve().parents[1]
SEED, BATCH, DATASET = 42, 64, "cifar10"
SAMPLED = 1000  # the sampled study's CIFAR-10 size (docs/results/nb201.md)
WORKERS = (1, 8, 32, 128)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxies", nargs="+", default=["gradsign", "params", "flops"])
    parser.add_argument("--executor", default="local", help="local or ray (RAY_ADDRESS names the cluster)")
    parser.add_argument("--max-archs", type=int, default=None, help="stop after scoring this many more archs")
    parser.add_argument("--report-only", action="store_true", help="score nothing, report what is cached")
    parser.add_argument("--cache", default=None, help="score cache directory (default runs/nb201_full_cache)")
    parser.add_argument("--quick", action="store_true", help="20 archs into runs/nb201_full_quick")
    parser.add_argument("--data-dir", default=None, help="data directory (default $GRADSIGN_DATA, ../shared/data)")
    args = parser.parse_args(argv)
    if args.max_archs is not None and args.max_archs < 1:
        parser.error(f"--max-archs must be >= 1, got {args.max_archs}")
    engine = create_executor(args.executor)  # a bad name, or ray without Ray, fails before any work

    space = create_space("nb201", table=args.data_dir)
    order = [int(i) for i in space.sample(len(space), SEED)]
    if args.quick:
        order = order[:20]
    # the per-arch score cache is run data (6 MB for the whole space), kept out of the repository like runs/correlate;
    # the committed results are the pages and sessions.jsonl (the measured wall clock of each run)
    out = Path(args.cache) if args.cache else ROOT / "runs" / ("nb201_full_quick" if args.quick else "nb201_full_cache")
    sessions = out if args.quick else ROOT / "benchmarks" / "results" / "nb201_full"
    x, y = load_batch(DATASET, BATCH, seed=SEED, root=args.data_dir)
    meta = {
        "space": space.name,
        "dataset": DATASET,
        "seed": SEED,
        "batch_size": BATCH,
        "batch": batch_fingerprint(x, y),
        "dtype": "float32",
    }
    cache = ScoreCache(out, meta)  # refuses a cache written under other settings, naming what changed
    device = torch.device(engine.device_type("auto"))
    if not args.report_only:
        todo = [i for i in order if any((i, p) not in cache for p in args.proxies)]
        if args.max_archs is not None:
            todo = todo[: args.max_archs]
        print(f"{len(order) - len(todo)} of {len(order)} archs cached; scoring {len(todo)} with {engine!r}")
        t0 = time.perf_counter()
        done = [0]

        def advance(k: int) -> None:  # one line per 100 archs: the run is meant for the background and a log file
            done[0] += k
            if done[0] % 100 == 0 or done[0] == len(todo):
                print(f"  {done[0]}/{len(todo)} in {time.perf_counter() - t0:.0f} s", flush=True)

        score_archs(
            space, todo, args.proxies, x, y, cache, dataset=DATASET, seed=SEED, device=device,
            progress=advance, executor=engine,
        )  # fmt: skip
        if todo:  # measured throughput of this session (wall clock, all workers), for the cost section
            append_jsonl(
                sessions / "sessions.jsonl",
                {"archs": len(todo), "wall_seconds": time.perf_counter() - t0, "executor": repr(engine)},
            )
    report(space, order, args.proxies, ScoreCache.read(out), out if args.quick else ROOT / "docs" / "results", sessions)
    return 0


def report(space, order: list[int], proxies: list[str], cache: ScoreCache, out: Path, sessions: Path) -> None:
    accuracy = space.accuracy(DATASET)
    scored = [i for i in order if all((i, p) in cache for p in proxies)]
    first = [i for i in order[:SAMPLED] if i in set(scored)]
    rows = []
    for p in proxies:
        row: dict = {"proxy": p}
        for label, idx in (("scored", scored), ("first_1000", first)):
            values = np.array([cache.score(i, p) for i in idx])
            rho, tau, n = rank_agreement(values, accuracy[np.asarray(idx, dtype=np.int64)]) if idx else (math.nan,) * 3
            row[label] = {"rho": rho, "tau": tau, "n": n}
        secs = [(cache.get(i, p) or {}).get("seconds") for i in scored]
        secs = [s for s in secs if s is not None]
        row["seconds_per_arch"] = float(np.mean(secs)) if secs else math.nan
        rows.append(row)
    sampled_page = ROOT / "docs" / "results" / "nb201.json"  # the sampled study: same protocol, same first 1000
    sampled = {}
    if sampled_page.is_file():
        for c in json.loads(sampled_page.read_text())["datasets"][DATASET]["correlations"]:
            sampled[c["name"]] = (c["spearman"], c["kendall"], c["n"])
    for r in rows:
        r["sampled_study"] = dict(zip(("rho", "tau", "n"), sampled.get(r["proxy"], (None, None, None))))
    per_arch = sum(r["seconds_per_arch"] for r in rows if math.isfinite(r["seconds_per_arch"]))
    remaining = len(order) - len(scored)
    complete = remaining == 0
    payload = {
        "space_size": len(order),
        "scored": len(scored),
        "complete": complete,
        "seconds_per_arch": per_arch,
        "remaining_hours_by_workers": {n: remaining * per_arch / n / 3600 for n in WORKERS},
        "whole_space_hours_by_workers": {n: len(order) * per_arch / n / 3600 for n in WORKERS},
        "sessions": list(iter_jsonl(sessions / "sessions.jsonl", ("archs",))),
        "proxies": rows,
        "settings": {"dataset": DATASET, "batch": BATCH, "seed": SEED, "cache": "runs/nb201_full_cache (--cache)"},
        "machine": {"cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads()},
    }

    def f(v: float) -> str:
        return "--" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"

    status = (
        f"All {len(order)} archs are scored."
        if complete
        else f"**Partial: {len(scored)} of {len(order)} archs scored so far** ({100 * len(scored) / len(order):.1f}%); "
        "the rho / tau below are over the scored archs only (a uniformly random subset: the seed-42 permutation's "
        "prefix), not full-space numbers. The run resumes where it stopped."
    )
    lines = [
        "# NAS-Bench-201, the whole space (CIFAR-10)",
        "",
        "Generated by `python benchmarks/nb201_full_space.py` (resumable; scores cached in "
        "`runs/nb201_full_cache/scores.jsonl`, run data kept out of the repository; a rerun rebuilds it in ~6 CPU "
        "hours). Protocol of the sampled study "
        "(docs/results/nb201.md): one batch of 64 real CIFAR-10 training images drawn with seed 42, every network "
        "built under seed 42, ground truth = 200-epoch test accuracy. Archs are scored in the order of the seed-42 "
        "permutation, so its first 1000 are the sampled study's archs.",
        "",
        status,
        "",
        "| proxy | rho (scored) | tau (scored) | n | rho (first 1000) | tau (first 1000) | n | sampled study rho / tau "
        "(n) | s / arch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        s, k, m = r["scored"], r["first_1000"], r["sampled_study"]
        lines.append(
            f"| {r['proxy']} | {f(s['rho'])} | {f(s['tau'])} | {s['n']} | {f(k['rho'])} | {f(k['tau'])} | {k['n']} | "
            f"{f(m['rho'])} / {f(m['tau'])} ({m['n'] or '--'}) | {r['seconds_per_arch']:.3f} |"
        )
    lines += [
        "",
        "The sampled study's column is docs/results/nb201.md's CIFAR-10 row, computed on the first 1000 archs of the "
        "same permutation under the same protocol: once those 1000 are scored here, the first-1000 columns should "
        "equal it (a check that the executor path scores as the study did; scores can differ in the last bits when the "
        "torch thread count differs, docs/distributed.md).",
    ]
    lines += [
        "",
        f"Cost: {per_arch:.2f} s per arch for these proxies together (mean of the recorded per-proxy times, one "
        f"CPU core of this 2-core machine, {torch.get_num_threads()} torch thread(s), the other core scoring other "
        "archs or running other benchmarks). The space at that rate (scoring is one independent task per arch, so "
        "it divides by the number of workers; the projection is arithmetic, not a measurement -- the measured wall "
        "clock of the actual runs follows it):",
        "",
        "| workers | " + " | ".join(str(n) for n in WORKERS) + " |",
        "| --- | " + " | ".join("---" for _ in WORKERS) + " |",
        "| hours left | " + " | ".join(f"{h:.2f}" for h in payload["remaining_hours_by_workers"].values()) + " |",
        "| hours, whole space | "
        + " | ".join(f"{h:.2f}" for h in payload["whole_space_hours_by_workers"].values())
        + " |",
        "",
    ]
    if payload["sessions"]:
        lines += [
            "Measured wall clock of the runs that scored the space (all workers together; `sessions.jsonl`, written "
            "by the script since this record was added):",
            "",
            "| archs | wall s | archs / min | executor |",
            "| ---: | ---: | ---: | --- |",
        ]
        for r in payload["sessions"]:
            rate = 60 * r["archs"] / r["wall_seconds"] if r["wall_seconds"] else math.nan
            lines.append(f"| {r['archs']} | {r['wall_seconds']:.0f} | {rate:.1f} | {r['executor']} |")
        lines.append("")
    lines += [
        "Run it on a cluster: `ray start --head` on one machine, `ray start --address=<head>:6379` on the others, "
        "then `RAY_ADDRESS=<head>:6379 python benchmarks/nb201_full_space.py --executor ray` (docs/distributed.md).",
        "",
    ]
    out.mkdir(parents=True, exist_ok=True)
    sampled_md = out / "nb201.md"
    if sampled_md.is_file():  # the sampled study's page carries the whole-space numbers beside its own
        text = sampled_md.read_text()
        begin, end = text.find(BEGIN), text.find(END)
        if begin >= 0 and end > begin:
            sampled_md.write_text(text[:begin] + whole_space_summary(payload) + text[end + len(END) :])
    (out / "nb201_full.md").write_text("\n".join(lines))
    (out / "nb201_full.json").write_text(json.dumps(payload, indent=1) + "\n")
    print("\n".join(lines[6:]))


BEGIN, END = "<!-- whole-space:begin -->", "<!-- whole-space:end -->"


def whole_space_summary(payload: dict) -> str:
    """The paragraph docs/results/nb201.md carries about the whole space (between ``BEGIN`` / ``END`` markers, which
    this script rewrites and ``nb201_correlation.py`` renders from ``nb201_full.json``)."""
    rows = {r["proxy"]: r["scored"] for r in payload["proxies"]}
    cells = ", ".join(f"{p} rho {r['rho']:.3f} / tau {r['tau']:.3f}" for p, r in rows.items())
    if payload["complete"]:
        head = f"**The whole space** (all {payload['space_size']} archs, CIFAR-10, same protocol): {cells}."
    else:
        head = (
            f"The whole {payload['space_size']}-arch CIFAR-10 space is being scored resumably through the executors: "
            f"{payload['scored']} done so far ({cells} over those; not full-space numbers)."
        )
    return (
        f"{BEGIN}\n{head} Cost per arch, the projection for N workers and the first-1000 check: "
        f"[nb201_full.md](nb201_full.md). The newer proxies (ZiCo, MeCo, AZ-NAS) on the sampled archs, against their "
        f"authors' numbers and beside our best ensemble: [nb201_newer.md](nb201_newer.md).\n{END}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
