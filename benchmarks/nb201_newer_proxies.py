"""ZiCo, MeCo and AZ-NAS on NAS-Bench-201 against their authors' published correlations, beside our best ensemble.

Scores the first ``--n-cifar10`` archs of the seed-42 sample on CIFAR-10 and the first ``--n-others`` on CIFAR-100
and ImageNet16-120 with ``zico``, ``meco``, the four AZ-NAS proxies, and ``gradsign`` + ``jacov`` (the parts of our
best ensemble), under the protocol of ``nb201_correlation.py`` (one real batch of 64 drawn with seed 42, every
network built under seed 42), through the same resumable caches (``runs/correlate/nb201-<dataset>-b64-s42``), so
the archs are the same as that study's and a rerun resumes. Then, per dataset and on the same archs:

* Spearman rho / Kendall tau of each proxy against test accuracy, beside what its authors publish;
* AZ-NAS (the log-rank sum of its four proxies) beside our best NB-201 ensemble, log-rank gradsign + jacov;
* every 2-4 proxy log-rank / mean-rank ensemble of these proxies (AZ-NAS's aggregation is one), selected on
  CIFAR-10 and reported on the others;
* mean scoring seconds per arch of each proxy (from the cache, single-thread CPU);
* the authors' own protocols on the first ``--variants`` archs of each dataset, to tell a protocol difference
  from an implementation difference: AZ-NAS on a Gaussian-noise batch of 64 with every network re-initialised
  Kaiming-normal (fan-in, ReLU gain; BatchNorm weight 1, bias 0), and ZiCo with ``groups=2`` (the authors' two
  mini-batches; here the two halves of the batch), cached in ``runs/nb201_newer_variants/<dataset>``.

Writes ``docs/results/nb201_newer.md`` and ``.json`` (``--quick``: 30 / 15 archs, report under
``runs/nb201_newer_quick`` only).

    python benchmarks/nb201_newer_proxies.py [--quick] [--n-cifar10 N] [--n-others N] [--variants N] [--data-dir DIR]
        [--executor ray]
    python benchmarks/nb201_newer_proxies.py --variants-only --datasets cifar10   # just the protocol variants
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
from pathlib import Path

import numpy as np
import torch

from gradsign_pl.data.batches import load_batch
from gradsign_pl.proxies import batch_fingerprint, score
from gradsign_pl.proxies.az_nas import COMPONENTS as AZ_COMPONENTS
from gradsign_pl.proxies.ensemble import METHODS, rank_ensemble
from gradsign_pl.rng import seeded
from gradsign_pl.scoring.agreement import rank_agreement
from gradsign_pl.scoring.cache import ScoreCache
from gradsign_pl.spaces import create_space
from gradsign_pl.studies.correlation import run_correlation

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("cifar10", "cifar100", "imagenet16")
NEWER = ("zico", "meco", *AZ_COMPONENTS)
PROXIES = (*NEWER, "gradsign", "jacov")
AZ_NAS = "log_rank:" + "+".join(AZ_COMPONENTS)
OURS = "log_rank:gradsign+jacov"

#: What the authors publish on NB-201 (all 15625 archs, 200-epoch test accuracy): {proxy: {dataset: (rho, tau)}}.
#: ZiCo: its paper's Table 1 (Li et al., ICLR 2023). MeCo: its paper (Jiang et al., NeurIPS 2023), Spearman only.
#: AZ-NAS and its components: the AZ-NAS paper's Tables 1 and 4 (Lee & Ham, CVPR 2024), Kendall only except for
#: AZ-NAS itself; the CIFAR-10 AZ-NAS values are also the output stored in the authors' NB201 notebook
#: (tau 0.7409, rho 0.9127). The AZ-NAS paper also lists ZiCo at tau 0.589 / 0.590 / 0.584 (its own run).
PUBLISHED: dict[str, dict[str, tuple[float | None, float | None]]] = {
    "zico": {"cifar10": (0.80, 0.61), "cifar100": (0.81, 0.61), "imagenet16": (0.79, 0.60)},
    "meco": {"cifar10": (0.894, None), "cifar100": (0.883, None), "imagenet16": (0.845, None)},
    "az_expressivity": {"cifar10": (None, 0.569), "cifar100": (None, 0.563), "imagenet16": (None, 0.506)},
    "az_progressivity": {"cifar10": (None, 0.521), "cifar100": (None, 0.508), "imagenet16": (None, 0.489)},
    "az_trainability": {"cifar10": (None, 0.349), "cifar100": (None, 0.353), "imagenet16": (None, 0.407)},
    "az_complexity": {"cifar10": (None, 0.578), "cifar100": (None, 0.551), "imagenet16": (None, 0.517)},
    AZ_NAS: {"cifar10": (0.913, 0.741), "cifar100": (0.900, 0.723), "imagenet16": (0.886, 0.710)},
}
TOLERANCE = 0.03


def fmt(x: float | None) -> str:
    return "--" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def combos(scores: dict[str, np.ndarray], accuracy: np.ndarray) -> list[tuple[float, float, str]]:
    """Every 2-4 proxy ensemble x method (AZ-NAS's own aggregation is one of them), as (rho, tau, name), best first."""
    found = []
    for k in (2, 3, 4):
        for parts in itertools.combinations(sorted(scores), k):
            for method in METHODS:
                rho, tau, _ = rank_agreement(rank_ensemble({p: scores[p] for p in parts}, method), accuracy)
                found.append((rho, tau, f"{method}:{'+'.join(parts)}"))
    found.sort(key=lambda t: -t[0])
    return found


def agreement_of(study, name: str) -> tuple[float, float, int]:
    if name in study.scores:
        return rank_agreement(study.scores[name], study.accuracy)
    method, parts = name.split(":")
    return rank_agreement(rank_ensemble({p: study.scores[p] for p in parts.split("+")}, method), study.accuracy)


def verdict(ours: tuple[float, float, int], published: tuple[float | None, float | None]) -> str:
    """Conformance against what is published: rho where they give it, else tau."""
    rho, tau, _ = ours
    i, mine = (0, rho) if published[0] is not None else (1, tau)
    theirs = published[i]
    if theirs is None:
        return "--"
    gap = mine - theirs
    what = "rho" if i == 0 else "tau"
    return f"{'within' if abs(gap) <= TOLERANCE else 'OFF'} ({what} {gap:+.3f})"


def kaiming_fan_in(net: torch.nn.Module) -> torch.nn.Module:
    """The AZ-NAS authors' ``init_model('kaiming_norm_fanin')``: Conv/Linear Kaiming normal, zero bias; BN 1 / 0."""
    for m in net.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
        elif isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.affine:
            torch.nn.init.ones_(m.weight)
            torch.nn.init.zeros_(m.bias)
    return net


VARIANTS = (*(f"{p}@authors" for p in AZ_COMPONENTS), "zico@groups2")


def score_variants(space, ds: str, indices: list[int], data_dir) -> dict[str, np.ndarray]:
    """The authors' protocols (module docstring) on ``indices``: {variant: score per arch}, cached and resumable."""
    x, y = load_batch(ds, 64, seed=42, root=data_dir)
    cache = ScoreCache(ROOT / "runs" / "nb201_newer_variants" / ds, {"batch": batch_fingerprint(x, y), "seed": 42})
    side = x.shape[-1]
    for n, index in enumerate(indices):
        if all((index, v) in cache for v in VARIANTS):
            continue
        with seeded(42):
            net = space.build(index, ds)
        with seeded(42 + index):  # a fresh noise batch per arch, as the authors draw one
            noise = torch.randn(64, 3, side, side)
            authors_net = kaiming_fan_in(space.build(index, ds))
        for p in AZ_COMPONENTS:
            r = score(p, authors_net, noise, y)
            cache.add(index, f"{p}@authors", r.score, reason=r.reason, seconds=round(r.elapsed_s, 4))
        r = score("zico", net, x, y, groups=2)
        cache.add(index, "zico@groups2", r.score, reason=r.reason, seconds=round(r.elapsed_s, 4))
        if (n + 1) % 50 == 0:
            print(f"{ds} variants: {n + 1}/{len(indices)}", flush=True)
    return {v: np.array([cache.score(i, v) for i in indices], dtype=np.float64) for v in VARIANTS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 CIFAR-10 archs, 15 for the others; no docs written")
    parser.add_argument("--n-cifar10", type=int, default=1000)
    parser.add_argument("--n-others", type=int, default=300)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument(
        "--variants", type=int, default=100, help="archs per dataset scored under the authors' protocols"
    )
    parser.add_argument("--variants-only", action="store_true", help="score only the protocol variants")
    parser.add_argument("--executor", default="local", help="'local' or 'ray' (RAY_ADDRESS, else a local instance)")
    parser.add_argument("--data-dir", default=None, help="data directory (default $GRADSIGN_DATA or ../shared/data)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the cost column assumes 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    n = (
        {"cifar10": 30, "cifar100": 15, "imagenet16": 15}
        if args.quick
        else {"cifar10": args.n_cifar10, "cifar100": args.n_others, "imagenet16": args.n_others}
    )
    docs = ROOT / "runs" / "nb201_newer_quick" if args.quick else ROOT / "docs" / "results"
    docs.mkdir(parents=True, exist_ok=True)
    space = create_space("nb201", table=args.data_dir)

    n_variants = 10 if args.quick else args.variants
    variants = {}
    for ds in args.datasets if n_variants > 0 else ():
        variants[ds] = (score_variants(space, ds, space.sample(n_variants, 42), args.data_dir), n_variants)
    if args.variants_only:
        return 0
    studies = {}
    for ds in args.datasets:
        studies[ds] = run_correlation(
            space,
            ds,
            proxies=PROXIES,
            n_archs=n[ds],
            out=ROOT / "runs" / "correlate" / f"nb201-{ds}-b64-s42",
            data_dir=args.data_dir,
            executor=args.executor,
        )
    if set(studies) != set(DATASETS):
        print(f"scored {sorted(studies)}; the report needs all three datasets")
        return 0

    rows = {ds: {name: agreement_of(st, name) for name in (*PROXIES, AZ_NAS, OURS)} for ds, st in studies.items()}
    seconds = {
        p: float(np.nanmean([c.seconds_per_arch for c in studies["cifar10"].correlations if c.name == p]))
        for p in PROXIES
    }
    variant_rows = {}
    for ds, (scores, k) in variants.items():
        st = studies[ds]
        acc = st.accuracy[:k]  # the variants' archs are the study's first k (the same seeded permutation)
        assert list(st.indices[:k]) == space.sample(k, 42)
        rows_v = {}
        for p in AZ_COMPONENTS:
            rows_v[p] = (rank_agreement(st.scores[p][:k], acc), rank_agreement(scores[f"{p}@authors"], acc))
        rows_v[AZ_NAS] = (
            rank_agreement(rank_ensemble({p: st.scores[p][:k] for p in AZ_COMPONENTS}), acc),
            rank_agreement(rank_ensemble({p: scores[f"{p}@authors"] for p in AZ_COMPONENTS}), acc),
        )
        rows_v["zico"] = (rank_agreement(st.scores["zico"][:k], acc), rank_agreement(scores["zico@groups2"], acc))
        variant_rows[ds] = rows_v
    c10 = studies["cifar10"]
    searched = combos({p: c10.scores[p] for p in PROXIES}, c10.accuracy)
    best = searched[0][2]
    rows_best = {ds: agreement_of(st, best) for ds, st in studies.items()}
    report = {
        "command": "python benchmarks/nb201_newer_proxies.py" + (" --quick" if args.quick else ""),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "torch_threads": args.threads,
            "torch": torch.__version__,
        },
        "n_archs": {ds: len(st.indices) for ds, st in studies.items()},
        "failures": {ds: len(st.failures) for ds, st in studies.items()},
        "correlations": {
            ds: {k: {"spearman": v[0], "kendall": v[1], "n": v[2]} for k, v in r.items()} for ds, r in rows.items()
        },
        "published": {
            k: {ds: {"spearman": v[0], "kendall": v[1]} for ds, v in d.items()} for k, d in PUBLISHED.items()
        },
        "seconds_per_arch": seconds,
        "searched_top10_cifar10": [{"name": nm, "spearman": r, "kendall": t} for r, t, nm in searched[:10]],
        "best_searched": {"name": best, **{ds: {"spearman": v[0], "kendall": v[1]} for ds, v in rows_best.items()}},
        "authors_protocols": {
            ds: {
                "n_archs": variants[ds][1],
                **{
                    k: {"ours": {"spearman": a[0], "kendall": a[1]}, "authors": {"spearman": b[0], "kendall": b[1]}}
                    for k, (a, b) in r.items()
                },
            }
            for ds, r in variant_rows.items()
        },
    }
    (docs / "nb201_newer.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (docs / "nb201_newer.md").write_text(
        markdown(report, rows, rows_best, best, searched, seconds, n)
        + (variants_markdown(variant_rows, variants) if variants else "")
    )
    print((docs / "nb201_newer.md").read_text())
    return 0


def markdown(report, rows, rows_best, best, searched, seconds, n) -> str:
    best_text = "; ".join(f"{ds} {fmt(v[0])} / {fmt(v[1])}" for ds, v in rows_best.items())
    label = {AZ_NAS: "AZ-NAS (log-rank of its four)", OURS: "ours: log-rank gradsign + jacov"}
    out = [
        "# ZiCo, MeCo and AZ-NAS on NAS-Bench-201, against their authors' numbers",
        "",
        f"Reproduce: `{report['command']}` (resumable; it shares the score caches of `nb201_correlation.py`).",
        "",
        f"Archs: the first {n['cifar10']} (CIFAR-10) and {n['cifar100']} (CIFAR-100, ImageNet16-120) of the seed-42 "
        "sample of the 15625 NB-201 cells, the same archs as [nb201.md](nb201.md); each scored on one real batch of "
        "64 training images (seed 42) at the network's own seeded PyTorch initialisation; ground truth: 200-epoch "
        "test accuracy (mean over seeds). ImageNet16-120 images are an approximation (120 real photos, see the data "
        "README). The authors score all 15625 archs; AZ-NAS feeds Gaussian noise and re-initialises every network "
        "(Kaiming normal), ZiCo takes two mini-batches of 64, MeCo one sample: see the notes below.",
        "",
        "Each cell: Spearman rho / Kendall tau (ours), then the published value(s), then whether ours is within "
        f"{TOLERANCE} of it (rho where published, else tau). s / arch: mean scoring seconds recorded in the cache "
        "(one thread; on a 2-core machine that other jobs shared while these ran).",
        "",
        "| proxy | " + " | ".join(("CIFAR-10", "CIFAR-100", "ImageNet16-120")) + " | s / arch |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in (*PROXIES, AZ_NAS, OURS):
        cells = []
        for ds in DATASETS:
            rho, tau, _ = rows[ds][name]
            pub = PUBLISHED.get(name, {}).get(ds)
            text = f"{fmt(rho)} / {fmt(tau)}"
            if pub:
                text += f" (pub. {fmt(pub[0])} / {fmt(pub[1])}; {verdict(rows[ds][name], pub)})"
            cells.append(text)
        cost = fmt(seconds.get(name)) if name in seconds else "--"
        out.append(f"| {label.get(name, name)} | " + " | ".join(cells) + f" | {cost} |")
    out += ["", "**Target: our best NB-201 ensemble at or above AZ-NAS** (Spearman rho, same archs, one run):", ""]
    for ds in DATASETS:
        ours, az, pub = rows[ds][OURS][0], rows[ds][AZ_NAS][0], PUBLISHED[AZ_NAS][ds][0]
        verdict_ds = "holds" if ours >= az and ours >= pub else "misses"
        out.append(
            f"- {ds}: log-rank gradsign + jacov {fmt(ours)} vs AZ-NAS {fmt(az)} here and {fmt(pub)} published: "
            f"**{verdict_ds}**"
        )
    out += [
        "",
        "## Ensembles",
        "",
        f"Every 2-4 proxy ensemble of the {len(PROXIES)} proxies above (log-rank and mean-rank; AZ-NAS's own is one "
        "of them), selected by "
        f"CIFAR-10 rho: the best is `{best}`, {best_text} "
        "(CIFAR-100 and ImageNet16-120 were not used to select it). Top 10 on CIFAR-10:",
        "",
        "| ensemble | rho | tau |",
        "| --- | --- | --- |",
        *[f"| `{nm}` | {fmt(r)} | {fmt(t)} |" for r, t, nm in searched[:10]],
        "",
    ]
    return "\n".join(out) + "\n"


def variants_markdown(variant_rows: dict, variants: dict) -> str:
    k = next(iter(variants.values()))[1]
    out = [
        "## Our protocol against the authors'",
        "",
        f"On the first {k} archs of each dataset (a subset of the archs above): each proxy under this study's protocol "
        "(real batch, each network's own seeded PyTorch initialisation; ZiCo one gradient per sample) and under its "
        "authors' (AZ-NAS: a Gaussian-noise batch, every network re-initialised Kaiming-normal; ZiCo: two "
        "sub-batches, `groups=2`). Spearman rho / Kendall tau, ours -> authors' protocol:",
        "",
        "| proxy | " + " | ".join(("CIFAR-10", "CIFAR-100", "ImageNet16-120")) + " |",
        "| --- | --- | --- | --- |",
    ]
    names = list(next(iter(variant_rows.values())))
    for name in names:
        cells = []
        for ds in DATASETS:
            if ds not in variant_rows:
                cells.append("--")
                continue
            (r1, t1, _), (r2, t2, _) = variant_rows[ds][name]
            cells.append(f"{fmt(r1)} / {fmt(t1)} -> {fmt(r2)} / {fmt(t2)}")
        out.append(f"| {'AZ-NAS' if name == AZ_NAS else name} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
