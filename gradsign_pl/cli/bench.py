"""``gradsign-bench``: studies of zero-cost proxies on search spaces with ground truth.

gradsign-bench correlate --dataset cifar10 --n_archs 1000            # Table 5.2 + scatter plots
gradsign-bench correlate --help
gradsign-bench select --runs 500                                     # Table 5.4 from the cached scores
gradsign-bench nas --runs 500 --budget_seconds 12000                 # Table 5.5 on tabular NB-201
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from gradsign_pl.studies.correlation import AZ_NAS, DEFAULT_PROXIES, run_correlation
from gradsign_pl.studies.report import print_table, write_study

DEFAULT_ENSEMBLES = (
    "log_rank:gradsign+synflow",
    "log_rank:gradsign+naswot",
    "log_rank:gradsign+synflow+naswot",
    "mean_rank:gradsign+synflow+naswot",
    "log_rank:gradsign+synflow+naswot+jacov",
    "log_rank:gradsign+jacov",
    AZ_NAS,
)


def correlate_dir(space: str = "nb201", dataset: str = "cifar10", batch_size: int = 64, seed: int = 42) -> str:
    """The default output (and score cache) directory of ``correlate``."""
    return f"runs/correlate/{space}-{dataset}-b{batch_size}-s{seed}"


DEFAULT_CACHE = correlate_dir()
"""Where ``select`` and ``nas`` look for proxy scores by default: ``correlate``'s CIFAR-10, batch 64, seed 42 run."""


def correlate(
    space: str = "nb201",
    dataset: str = "cifar10",
    proxies: list[str] | None = None,
    ensembles: list[str] | None = None,
    n_archs: int = 1000,
    seed: int = 42,
    batch_size: int = 64,
    out: str | None = None,
    data_dir: str | None = None,
    table: str | None = None,
    device: str = "auto",
    threads: int | None = None,
    plots: bool = True,
    executor: str = "local",
) -> None:
    """Score sampled architectures with zero-cost proxies and rank-correlate them with test accuracy.

    Every score is cached in the output directory as soon as it is computed; run the same command again to resume
    an interrupted run without recomputing. Writes scores.csv, summary.json, summary.md and one scatter PNG per
    proxy/ensemble there, and prints the table beside the GradSign paper's Table 5.2.

    Args:
        space: registered search space (see gradsign_pl.spaces.list_spaces()).
        dataset: cifar10, cifar100 or imagenet16 (ImageNet16-120 images are an approximation; see the data README).
        proxies: registered proxies to score (default: all single-model proxies).
        ensembles: rank ensembles to evaluate, '[log_rank|mean_rank:]proxy+proxy[+...]', built from cached scores
            (default: the built-in combinations of gradsign, synflow, naswot and jacov, and AZ-NAS's log-rank of
            its four components, whose parts are scored).
        n_archs: number of architectures, the first n of a seeded permutation (so runs with more archs reuse fewer).
        seed: seed for the arch sample, the mini-batch and every network's initialisation.
        batch_size: images in the scoring mini-batch.
        out: output and cache directory (default runs/correlate/<space>-<dataset>-b<batch>-s<seed>).
        data_dir: directory with the image files (default $GRADSIGN_DATA, then ../shared/data).
        table: ground-truth table file or directory (default: the data directory).
        device: 'auto' (CUDA when present), 'cpu' or 'cuda[:i]'.
        threads: torch CPU threads (default: torch's choice).
        plots: draw the scatter PNGs.
        executor: 'local' (this process) or 'ray' (one Ray task per arch on the cluster RAY_ADDRESS names, else a
            local Ray instance; pip install "gradsign-pl[ray]"). The scores are the same; the cache resumes across.
    """
    import torch

    from gradsign_pl.executors import create_executor
    from gradsign_pl.spaces import create_space

    if proxies is None:
        proxies = list(DEFAULT_PROXIES)
    if threads:
        torch.set_num_threads(threads)
    if ensembles is None:
        ensembles = [e for e in DEFAULT_ENSEMBLES if set(e.split(":")[-1].split("+")) <= set(proxies)]
    out_dir = Path(out or correlate_dir(space, dataset, batch_size, seed))
    study = run_correlation(
        create_space(space, table=table if table is not None else data_dir),
        dataset,
        proxies=proxies,
        n_archs=n_archs,
        seed=seed,
        batch_size=batch_size,
        ensembles=ensembles,
        out=out_dir,
        data_dir=data_dir,
        device=device,
        executor=create_executor(executor),
    )
    print_table(study)
    paths = write_study(study, out_dir, plots=plots)
    print(
        f"wrote {', '.join(str(p) for k, p in paths.items() if not k.startswith('scatter_'))} "
        f"and {sum(k.startswith('scatter_') for k in paths)} scatter plots in {out_dir}"
    )
    if study.failures:
        print(f"{len(study.failures)} scores failed (nan); reasons are in summary.json", file=sys.stderr)


def _load_table(table: str | None, data_dir: str | None):
    from gradsign_pl.spaces.nb201 import load_table

    try:
        return load_table(table if table is not None else data_dir)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"the NB-201 ground-truth table is needed: {exc}") from None


def _cache_dir(cache: str | None) -> Path:
    from gradsign_pl.search.nb201_tabular import CORRELATE_HINT

    path = Path(cache or DEFAULT_CACHE)
    if not (path / "scores.jsonl").is_file():
        raise FileNotFoundError(f"no proxy score cache at {path}; {CORRELATE_HINT} (or pass --cache DIR)")
    return path


def select(
    cache: str | None = None,
    proxies: list[str] | None = None,
    n_values: list[int] | None = None,
    runs: int = 500,
    seed: int = 0,
    out: str | None = None,
    table: str | None = None,
    data_dir: str | None = None,
) -> None:
    """Architecture selection (Table 5.4): best-by-proxy among N random candidates, vs Random and Optimal.

    Each run samples N of the cached (scored) archs, picks the highest score of each proxy, and reports the
    pick's 200-epoch accuracies (mean +- std over the runs) beside the paper's Table 5.4. Writes selection.csv,
    selection.json and selection.md. The pool is the archs every proxy has a score for; N larger than the
    pool uses the whole pool (with a 1000-arch cache, N=1000 picks the same arch every run).

    Args:
        cache: a gradsign-bench correlate output directory (default runs/correlate/nb201-cifar10-b64-s42).
        proxies: cached proxies to select with (default gradsign, synflow, naswot); a rank ensemble of cached
            proxies as ``[log_rank|mean_rank:]a+b[+...]``, or ``az_nas`` (the log-rank of its four proxies), is ranked
            over the cached archs and selected with like a proxy.
        n_values: candidates per run (default 10, 100, 1000).
        runs: runs per N.
        seed: seed of the samples.
        out: output directory (default runs/select/<cache name>-r<runs>-s<seed>).
        table: ground-truth table file or directory (default: the data directory).
        data_dir: data directory holding the table.
    """
    from gradsign_pl.search.nb201_tabular import CachedScorer
    from gradsign_pl.studies import selection

    cache_dir = _cache_dir(cache)
    nb_table = _load_table(table, data_dir)
    proxies = list(proxies or ["gradsign", "synflow", "naswot"])
    scores = {p: CachedScorer(cache_dir, p, nb_table, failed_score=float("nan")).scores() for p in proxies}
    study = selection.run_selection(scores, nb_table, n_values=tuple(n_values or (10, 100, 1000)), runs=runs, seed=seed)
    study.settings["cache"] = str(cache_dir)
    out_dir = Path(out or f"runs/select/{cache_dir.name}-r{runs}-s{seed}")
    selection.print_table(study)
    paths = selection.write_selection(study, out_dir)
    print(f"wrote {', '.join(str(p) for p in paths.values())}")


def nas(
    cache: str | None = None,
    proxy: str = "gradsign",
    strategies: list[str] | None = None,
    runs: int = 500,
    seed: int = 0,
    budget_seconds: float | None = 12000.0,
    max_evaluations: int | None = None,
    charge_scoring: bool = False,
    pool_size: int | None = None,
    strategy_kwargs: dict[str, dict[str, Any]] | None = None,
    restrict_to_cache: bool = True,
    epoch_seconds: float = 9.14,
    fixed_fraction: float = 0.5,
    out: str | None = None,
    table: str | None = None,
    data_dir: str | None = None,
    plot: bool = True,
) -> None:
    """NAS with and without proxy assistance on tabular NB-201 (Table 5.5).

    Training an arch is simulated: its reward is the 12-epoch CIFAR-10 validation accuracy of the table, and it
    costs simulated seconds (12 epochs x epoch_seconds on average, scaled by the parameter count; see
    gradsign_pl.search.nb201_tabular.ParamsCostModel). bohb and g-bohb also train archs for 200 epochs (the
    200-epoch validation accuracy, at 200/12 of the 12-epoch cost) in Hyperband brackets. Each run is appended to
    runs.jsonl as it finishes; run the same command again to resume. Writes nas.csv, nas.json, nas.md and
    nas_curves.png.

    Args:
        cache: a gradsign-bench correlate output directory with the proxy's scores
            (default runs/correlate/nb201-cifar10-b64-s42).
        proxy: the cached proxy the g-* strategies use, or a rank ensemble of cached proxies
            (``[log_rank|mean_rank:]a+b[+...]``, ``az_nas``) ranked over the cached archs.
        strategies: rs, g-rs, rea, g-rea, reinforce, g-reinforce, bohb, g-bohb (default: all).
        runs: runs per strategy (seeds seed .. seed+runs-1).
        seed: first seed.
        budget_seconds: simulated training seconds per search (the paper: 12000).
        max_evaluations: also stop after this many evaluations.
        charge_scoring: charge the proxy's recorded scoring seconds to the budget too.
        pool_size: candidates scored per proposal by g-* strategies (default: the strategies' own).
        strategy_kwargs: extra constructor arguments per strategy, e.g. '{bohb: {eta: 3}, g-bohb: {eta: 3}}'
            (recorded in meta.json; see gradsign_pl.search.strategies).
        restrict_to_cache: search only the cached archs (needed by g-* strategies, since only they have scores;
            all strategies then search the same space).
        epoch_seconds: mean seconds per training epoch of the cost model (NATS-Bench cifar10-valid: ~9.14).
        fixed_fraction: share of the training time that does not scale with parameters in the cost model.
        out: output directory (default runs/nas/<cache name>-<proxy>-b<budget>-s<seed>).
        table: ground-truth table file or directory (default: the data directory).
        data_dir: data directory holding the table.
        plot: draw nas_curves.png.
    """
    from gradsign_pl.search.nb201_tabular import (
        NB201_EPOCHS,
        CachedScorer,
        NB201CellSpace,
        ParamsCostModel,
        TabularEvaluator,
    )
    from gradsign_pl.studies import nas as nas_study

    strategies = list(strategies or nas_study.DEFAULT_STRATEGIES)
    need_cache = restrict_to_cache or any(nas_study.is_assisted(s) for s in strategies)
    cache_dir = _cache_dir(cache) if need_cache else None
    nb_table = _load_table(table, data_dir)
    scorer = CachedScorer(cache_dir, proxy, nb_table) if cache_dir is not None else None
    space = NB201CellSpace(scorer.archs if restrict_to_cache and scorer is not None else None)
    evaluator = TabularEvaluator(
        nb_table,
        "cifar10",
        cost_model=ParamsCostModel(mean_seconds=NB201_EPOCHS * epoch_seconds, fixed_fraction=fixed_fraction),
    )
    budget_tag = f"{budget_seconds:g}" if budget_seconds is not None else f"e{max_evaluations}"
    name = cache_dir.name if cache_dir is not None else "full"
    out_dir = Path(out or f"runs/nas/{name}-{proxy}-b{budget_tag}-s{seed}")
    try:
        study = nas_study.run_nas(
            strategies,
            runs=runs,
            budget_seconds=budget_seconds,
            max_evaluations=max_evaluations,
            charge_scoring=charge_scoring,
            seed=seed,
            space=space,
            evaluator=evaluator,
            scorer=scorer,
            out_dir=out_dir,
            pool_size=pool_size,
            strategy_kwargs=strategy_kwargs,
        )
    except ModuleNotFoundError as exc:
        raise ValueError(f"the NAS strategies are not available ({exc})") from None
    nas_study.print_table(study)
    paths = nas_study.write_nas(study, out_dir, plot=plot)
    print(
        f"wrote {', '.join(str(p) for p in paths.values())} ({study.computed} new runs, "
        f"{len(study.records)} in total; runs.jsonl holds every run)"
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``gradsign-bench`` console script."""
    from jsonargparse import CLI

    try:
        CLI({"correlate": correlate, "select": select, "nas": nas}, args=argv, as_positional=False)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"gradsign-bench: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
