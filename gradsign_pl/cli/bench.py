"""``gradsign-bench``: studies of zero-cost proxies on search spaces with ground truth.

    gradsign-bench correlate --dataset cifar10 --n_archs 1000            # Table 5.2 + scatter plots
    gradsign-bench correlate --help
"""

from __future__ import annotations

import sys
from pathlib import Path

from gradsign_pl.studies.correlation import DEFAULT_PROXIES, run_correlation
from gradsign_pl.studies.report import print_table, write_study

DEFAULT_ENSEMBLES = (
    "log_rank:gradsign+synflow",
    "log_rank:gradsign+naswot",
    "log_rank:gradsign+synflow+naswot",
    "mean_rank:gradsign+synflow+naswot",
    "log_rank:gradsign+synflow+naswot+jacov",
)


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
            (default: the built-in combinations of gradsign, synflow, naswot and jacov whose parts are scored).
        n_archs: number of architectures, the first n of a seeded permutation (so runs with more archs reuse fewer).
        seed: seed for the arch sample, the mini-batch and every network's initialisation.
        batch_size: images in the scoring mini-batch.
        out: output and cache directory (default runs/correlate/<space>-<dataset>-b<batch>-s<seed>).
        data_dir: directory with the image files (default $GRADSIGN_DATA, then ../shared/data).
        table: ground-truth table file or directory (default: the data directory).
        device: 'auto' (CUDA when present), 'cpu' or 'cuda[:i]'.
        threads: torch CPU threads (default: torch's choice).
        plots: draw the scatter PNGs.
    """
    import torch

    from gradsign_pl.spaces import create_space

    if proxies is None:
        proxies = list(DEFAULT_PROXIES)
    if threads:
        torch.set_num_threads(threads)
    if ensembles is None:
        ensembles = [e for e in DEFAULT_ENSEMBLES if set(e.split(":")[-1].split("+")) <= set(proxies)]
    out_dir = Path(out or f"runs/correlate/{space}-{dataset}-b{batch_size}-s{seed}")
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
    )
    print_table(study)
    paths = write_study(study, out_dir, plots=plots)
    print(f"wrote {', '.join(str(p) for k, p in paths.items() if not k.startswith('scatter_'))} "
          f"and {sum(k.startswith('scatter_') for k in paths)} scatter plots in {out_dir}")
    if study.failures:
        print(f"{len(study.failures)} scores failed (nan); reasons are in summary.json", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``gradsign-bench`` console script."""
    from jsonargparse import CLI

    try:
        CLI({"correlate": correlate}, args=argv, as_positional=False)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"gradsign-bench: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
