"""The paper's Table 5.2 on NAS-Bench-201: every proxy x CIFAR-10 / CIFAR-100 / ImageNet16-120, plus ensembles.

Scores the first ``--n-cifar10`` archs of the seed-42 sample on CIFAR-10 and the first ``--n-others`` on CIFAR-100
and ImageNet16-120 (real images, batch 64, every network initialised with seed 42), through the same resumable
cache as ``gradsign-bench correlate`` (``runs/correlate/nb201-<dataset>-b64-s42``), so an interrupted run resumes
and the command's runs are reused. Then:

* Spearman rho / Kendall tau of each proxy against test accuracy, beside the paper's Table 5.2;
* rank ensembles: a fixed list, plus every 2-4 proxy subset searched on CIFAR-10 (the winner is then reported on
  the other two datasets, where it was not selected);
* archs scored per minute for each proxy, timed on the first ``--timing-archs`` archs with nothing else cached;
* one scatter grid per dataset.

Writes ``docs/results/nb201.md`` and ``docs/results/nb201/*.png`` (``--quick``: 40/20 archs from the same caches,
report written under ``runs/correlate-quick`` only).

    python benchmarks/nb201_correlation.py [--quick] [--data-dir DIR] [--threads N]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from gradsign_pl import score
from gradsign_pl.data.batches import load_batch
from gradsign_pl.executors import list_executors
from gradsign_pl.proxies.ensemble import METHODS, parse_ensemble, rank_ensemble
from gradsign_pl.scoring.agreement import rank_agreement
from gradsign_pl.spaces import create_space
from gradsign_pl.studies.correlation import AZ_NAS, DEFAULT_PROXIES, PAPER_TABLE_5_2, PUBLISHED_NEWER, run_correlation
from gradsign_pl.studies.report import DATASET_TITLES, set_score_scale, write_study

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling script, also when imported from elsewhere
from nb201_full_space import whole_space_summary

ROOT = Path(__file__).resolve().parents[1]
FULL_SPACE = ROOT / "docs" / "results" / "nb201_full.json"  # written by nb201_full_space.py
DATASETS = ("cifar10", "cifar100", "imagenet16")
FIXED_ENSEMBLES = (
    "log_rank:gradsign+synflow",
    "log_rank:gradsign+naswot",
    "log_rank:gradsign+jacov",
    "log_rank:gradsign+synflow+naswot",
    "mean_rank:gradsign+synflow+naswot",
    "log_rank:gradsign+synflow+naswot+jacov",
    AZ_NAS,
)


def fmt(x: float | None) -> str:
    return "--" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def ensemble_agreements(
    studies: Mapping[str, tuple[Mapping[str, np.ndarray], np.ndarray]], sizes=(2, 3, 4)
) -> dict[str, dict[str, tuple[float, float]]]:
    """Every subset of the proxies (``sizes`` members) x method -> {dataset: (Spearman rho, Kendall tau)}.

    ``studies`` maps a dataset to ``(scores, accuracy)``: ``scores`` maps each proxy to its score per arch. The
    proxies are those every dataset scored; names are ``<method>:<a>+<b>...`` with the parts sorted.
    """
    proxies = sorted(set.intersection(*(set(scores) for scores, _ in studies.values())))
    table = {}
    for k in sizes:
        for parts in itertools.combinations(proxies, k):
            for method in METHODS:
                table[f"{method}:{'+'.join(parts)}"] = {
                    ds: rank_agreement(rank_ensemble({p: scores[p] for p in parts}, method), accuracy)[:2]
                    for ds, (scores, accuracy) in studies.items()
                }
    return table


def ranked_by(table: Mapping[str, Mapping[str, tuple[float, float]]], on: Sequence[str]) -> list[tuple[str, float]]:
    """Every ensemble of ``table`` (see :func:`ensemble_agreements`) with its mean Spearman rho over ``on``, best
    first (ties keep the table's order)."""
    if not on:
        raise ValueError("select on at least one dataset")
    means = {name: float(np.mean([table[name][ds][0] for ds in on])) for name in table}
    return sorted(means.items(), key=lambda kv: -kv[1])


def select_ensemble(table: Mapping[str, Mapping[str, tuple[float, float]]], on: Sequence[str]) -> str:
    """The ensemble with the highest mean Spearman rho over ``on``."""
    return ranked_by(table, on)[0][0]


def ensemble_scores(study, name: str) -> np.ndarray:
    """The rank ensemble ``<method>:<a>+<b>...`` of a study's cached scores."""
    method, parts = parse_ensemble(name)
    return rank_ensemble({p: study.scores[p] for p in parts}, method)


def leave_one_dataset_out(
    table: Mapping[str, Mapping[str, tuple[float, float]]], datasets: Sequence[str]
) -> dict[str, tuple[str, float, float]]:
    """For each dataset, the ensemble selected on the others and its (rho, tau) on the held-out one."""
    out = {}
    for held_out in datasets:
        name = select_ensemble(table, [ds for ds in datasets if ds != held_out])
        out[held_out] = (name, *table[name][held_out])
    return out


def time_proxies(space, indices, data_dir) -> dict[str, float]:
    """Mean seconds per arch for each proxy on the given archs (batch 64, fresh networks, no cache)."""
    x, y = load_batch("cifar10", 64, seed=42, root=data_dir)
    seconds = {p: 0.0 for p in DEFAULT_PROXIES}
    for i in indices:
        for p in DEFAULT_PROXIES:
            torch.manual_seed(42)
            net = space.build(i, "cifar10")
            t0 = time.perf_counter()
            score(p, net, x, y)
            seconds[p] += time.perf_counter() - t0
    return {p: s / len(indices) for p, s in seconds.items()}


def scatter_grid(study, extra: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(c.name, study.scores[c.name], c.spearman) for c in study.correlations if not c.name.startswith("ens")]
    panels += [(name, values, rank_agreement(values, study.accuracy)[0]) for name, values in extra.items()]
    cols = 4
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), dpi=100, squeeze=False)
    for ax, (name, x, rho) in zip(axes.flat, panels):
        keep = np.isfinite(x)
        ax.scatter(x[keep], study.accuracy[keep], s=3, alpha=0.4, linewidths=0)
        set_score_scale(ax, x[keep])
        ax.set_title(f"{name}  rho={fmt(rho)}", fontsize=8 if len(name) < 40 else 5.5)
        ax.tick_params(labelsize=6)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    fig.supylabel(f"{DATASET_TITLES[study.dataset]} test accuracy (%)", fontsize=9)
    fig.suptitle(
        f"NAS-Bench-201 / {DATASET_TITLES[study.dataset]}: proxy score (x) vs test accuracy, "
        f"{len(study.indices)} archs",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def add_study_arguments(parser: argparse.ArgumentParser, *, threads: int | None) -> None:
    """The arguments every script over the NB-201 score caches takes (this one and nb201_newer_proxies.py)."""
    parser.add_argument("--n-cifar10", type=int, default=1000, help="CIFAR-10 archs: the first N of the sample")
    parser.add_argument("--n-others", type=int, default=500, help="CIFAR-100 / ImageNet16-120 archs")
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=list(DATASETS),
        choices=DATASETS,
        help="datasets to score, in this order (the report needs all three)",
    )
    parser.add_argument(
        "--executor",
        default="local",
        choices=list_executors(),
        help="where archs are scored: 'local', or 'ray' (RAY_ADDRESS, else a local instance)",
    )
    parser.add_argument("--data-dir", default=None, help="data directory (default $GRADSIGN_DATA or ../shared/data)")
    parser.add_argument("--threads", type=int, default=threads, help="torch CPU threads (per Ray worker with ray)")


def check_study_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse, before any work, what :func:`add_study_arguments` cannot run."""
    for flag, value in (("--n-cifar10", args.n_cifar10), ("--n-others", args.n_others)):
        if not 1 <= value <= 15625:
            parser.error(f"{flag} must be between 1 and 15625 (the NB-201 archs), got {value}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 CIFAR-10 archs, 20 for the others; no docs written")
    add_study_arguments(parser, threads=None)
    parser.add_argument("--timing-archs", type=int, default=20, help="archs each proxy is timed on (>= 1)")
    args = parser.parse_args(argv)
    check_study_arguments(parser, args)
    if args.timing_archs < 1:
        parser.error(f"--timing-archs must be >= 1, got {args.timing_archs}")
    if args.threads:
        torch.set_num_threads(args.threads)
    n = (
        {"cifar10": 40, "cifar100": 20, "imagenet16": 20}
        if args.quick
        else {"cifar10": args.n_cifar10, "cifar100": args.n_others, "imagenet16": args.n_others}
    )
    cache_root = ROOT / "runs" / "correlate"  # shared by --quick: same settings, so the same scores
    docs = ROOT / "runs" / "correlate-quick" if args.quick else ROOT / "docs" / "results"
    (docs / "nb201").mkdir(parents=True, exist_ok=True)
    space = create_space("nb201", table=args.data_dir)

    scored = {}
    for ds in dict.fromkeys(args.datasets):
        cache = cache_root / f"nb201-{ds}-b64-s42"
        scored[ds] = run_correlation(
            space,
            ds,
            proxies=DEFAULT_PROXIES,
            n_archs=n[ds],
            ensembles=FIXED_ENSEMBLES,
            out=cache,
            data_dir=args.data_dir,
            executor=args.executor,
        )
        write_study(scored[ds], docs / "nb201" / ds if args.quick else cache)
    if set(scored) != set(DATASETS):
        print(f"scored {sorted(scored)}; the report needs all three datasets")
        return 0
    studies = {ds: scored[ds] for ds in DATASETS}

    table = ensemble_agreements(
        {ds: ({p: st.scores[p] for p in DEFAULT_PROXIES}, st.accuracy) for ds, st in studies.items()}
    )
    searched = [name for name, _ in ranked_by(table, ["cifar10"])]  # every ensemble, best on CIFAR-10 first
    held_out = leave_one_dataset_out(table, DATASETS)
    best_name = searched[0]
    best_by_dataset = {}
    for ds, st in studies.items():
        combined = ensemble_scores(st, best_name)
        best_by_dataset[ds] = rank_agreement(combined, st.accuracy)
        extra = {
            f"selected on CIFAR-10 ({best_name})": combined,
            f"held out ({held_out[ds][0]})": ensemble_scores(st, held_out[ds][0]),
        }
        scatter_grid(st, extra, docs / "nb201" / f"scatter_{ds}.png")

    timing_archs = space.sample(3 if args.quick else args.timing_archs, 42)
    seconds = time_proxies(space, timing_archs, args.data_dir)

    report = {
        "command": " ".join(["python", "benchmarks/nb201_correlation.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "datasets": {
            ds: {
                "n_archs": len(st.indices),
                "correlations": [{k: v for k, v in vars(c).items()} for c in st.correlations],
                "failures": len(st.failures),
            }
            for ds, st in studies.items()
        },
        "searched_ensembles_top10_cifar10": [
            {"method": m, "proxies": p, "spearman": table[name]["cifar10"][0], "kendall": table[name]["cifar10"][1]}
            for name in searched[:10]
            for m, p in [parse_ensemble(name)]
        ],
        "held_out_ensembles": {
            ds: {"name": name, "spearman": rho, "kendall": tau} for ds, (name, rho, tau) in held_out.items()
        },
        "best_ensemble": {
            "name": best_name,
            **{ds: {"spearman": v[0], "kendall": v[1], "n": v[2]} for ds, v in best_by_dataset.items()},
        },
        "seconds_per_arch": seconds,
        "timing_archs": timing_archs,
    }
    (docs / "nb201.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (docs / "nb201.md").write_text(markdown(report, studies, searched, best_name, best_by_dataset, seconds, args))
    print((docs / "nb201.md").read_text())
    return 0


def markdown(report, studies, searched, best_name, best_by_dataset, seconds, args) -> str:
    c = {ds: {x.name: x for x in st.correlations} for ds, st in studies.items()}
    lines = [
        "# NAS-Bench-201: zero-cost proxies vs trained accuracy (the paper's Table 5.2)",
        "",
        whole_space_summary(json.loads(FULL_SPACE.read_text())) if FULL_SPACE.is_file() else "",
        "",
        f"Generated by `{report['command']}` (cached scores in `runs/correlate/`; the same caches as "
        "`gradsign-bench correlate --dataset <name>`). Settings: the first "
        f"{len(studies['cifar10'].indices)} (CIFAR-10) and {len(studies['cifar100'].indices)} / "
        f"{len(studies['imagenet16'].indices)} (CIFAR-100 / ImageNet16-120) architectures of a seed-42 random "
        "permutation of the 15625; one real mini-batch of 64 training images drawn with seed 42; every network "
        "initialised with `torch.manual_seed(42)` (PyTorch default init); ground truth = 200-epoch test accuracy "
        "(NATS-Bench tss, mean over seeds). The paper uses all 15625 archs.",
        "",
        "**ImageNet16-120 uses approximate images**: 120 real ImageNet photos (one per class) box-resized to 16x16, "
        "because the official ImageNet16-120 files are not available here; its accuracies are the benchmark's real "
        "ones. Treat its row as indicative.",
        "",
        "## Every proxy: Spearman rho / Kendall tau, ours (published)",
        "",
        "Published: the GradSign paper's Table 5.2 (Spearman) for the proxies it reports; for ZiCo, MeCo and "
        "AZ-NAS, what their authors publish (AZ-NAS's components: Kendall only). All published values are over "
        "the whole space; [nb201_newer.md](nb201_newer.md) compares the newer proxies with them, and with the "
        "authors' protocols, in detail. s / arch: CIFAR-10 scoring seconds, see the cost section.",
        "",
        "| proxy | " + " | ".join(DATASET_TITLES[ds] for ds in studies) + " | s / arch |",
        "| --- | " + " | ".join(["---:"] * (len(studies) + 1)) + " |",
    ]
    for name in (*DEFAULT_PROXIES, AZ_NAS):
        key = name if name in DEFAULT_PROXIES else f"ensemble:{name}"
        cells = []
        for ds in studies:
            rho, tau = c[ds][key].spearman, c[ds][key].kendall
            pub_rho, pub_tau = PUBLISHED_NEWER.get(name, {}).get(ds) or (PAPER_TABLE_5_2[ds].get(name), None)
            cells.append(
                fmt(rho)
                + (f" ({fmt(pub_rho)})" if pub_rho is not None else "")
                + f" / {fmt(tau)}"
                + (f" ({fmt(pub_tau)})" if pub_tau is not None else "")
            )
        label = "AZ-NAS (log-rank of its four)" if name == AZ_NAS else name
        cost = f"{seconds[name]:.3f}" if name in seconds else "sum of its parts"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {cost} |")
    lines += [
        "",
        f"Archs: {', '.join(f'{DATASET_TITLES[ds]} {len(st.indices)}' for ds, st in studies.items())}. "
        "`naswot` is NASWOT v2 (ReLU-code kernel log-determinant), `jacov` NASWOT v1 (Jacobian "
        "covariance); the paper does not say which its NASWOT column is. `zen` agrees with NASLib's published "
        "Zen-scores (rank agreement 0.999 on the CIFAR-10 sample, see the conformance page); the paper's "
        "near-zero Zen column does not match either.",
    ]
    failed = {
        ds: [(x.name, x.n_failed) for x in st.correlations if x.n_failed and not x.name.startswith("ens")]
        for ds, st in studies.items()
    }
    lines += [
        "",
        "Archs a proxy could not score (`nan`, e.g. an all-zero Jacobian on a network whose cell "
        "disconnects input from output) are left out of that proxy's correlation: "
        + "; ".join(
            f"{DATASET_TITLES[ds]}: " + (", ".join(f"{p} {k}" for p, k in v) or "none") for ds, v in failed.items()
        )
        + ".",
        "",
        "## Rank ensembles",
        "",
        "Fixed combinations listed in the script (gradsign+jacov was added after a first look at 65 CIFAR-10 "
        "archs, so its CIFAR-10 figure is not independent of that look), Spearman rho:",
        "",
        "| ensemble | " + " | ".join(DATASET_TITLES[ds] for ds in studies) + " |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name in FIXED_ENSEMBLES:
        key = f"ensemble:{name}"
        lines.append(f"| {name} | " + " | ".join(fmt(c[ds][key].spearman) for ds in studies) + " |")
    lines += [
        "",
        f"Searched: every 2-4 subset of the {len(DEFAULT_PROXIES)} proxies x {{log_rank, mean_rank}} "
        f"({len(searched)} ensembles) on CIFAR-10. Best: **{best_name}**, rho = "
        f"{fmt(best_by_dataset['cifar10'][0])} on CIFAR-10 (where it was selected, so optimistic), "
        f"{fmt(best_by_dataset['cifar100'][0])} on CIFAR-100 and {fmt(best_by_dataset['imagenet16'][0])} on "
        "ImageNet16-120 (not selected there). Top 10 on CIFAR-10:",
        "",
        "| method | proxies | rho | tau |",
        "| --- | --- | ---: | ---: |",
    ]
    for row in report["searched_ensembles_top10_cifar10"]:
        lines.append(
            f"| {row['method']} | {' + '.join(row['proxies'])} | {fmt(row['spearman'])} | {fmt(row['kendall'])} |"
        )
    held_out = report["held_out_ensembles"]
    lines += [
        "",
        "Selected without looking at the dataset it is reported on (each dataset in turn held out; the ensemble with "
        "the best mean rho on the other two): "
        + "; ".join(
            f"{DATASET_TITLES[ds]} `{h['name']}` {fmt(h['spearman'])} / {fmt(h['kendall'])}"
            for ds, h in held_out.items()
        )
        + ". AZ-NAS and these, with intervals: [nb201_newer.md](nb201_newer.md).",
        "",
        "## Cost: archs scored per minute on this CPU",
        "",
        f"Each proxy timed alone on {len(report['timing_archs'])} archs of the sample (CIFAR-10, batch 64, "
        f"{report['machine']['torch_threads']} torch thread(s), {report['machine']['cpu']}, torch "
        f"{report['machine']['torch']}), network construction excluded.",
        "",
        "| proxy | seconds / arch | archs / minute |",
        "| --- | ---: | ---: |",
    ]
    for p, s in seconds.items():
        lines.append(f"| {p} | {s:.3f} | {60 / s:.1f} |")
    lines += ["", "## Plots", ""]
    for ds in studies:
        lines.append(f"![{DATASET_TITLES[ds]}](nb201/scatter_{ds}.png)")
        lines.append("")
    lines += [
        "Per-proxy PNGs, `scores.csv` (every arch's scores) and `summary.json` are written next to the cache "
        "in `runs/correlate/nb201-<dataset>-b64-s42/`.",
        "",
        "Peer conformance of these implementations: [nb201_conformance.md](../../benchmarks/results/"
        "nb201_conformance.md).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
