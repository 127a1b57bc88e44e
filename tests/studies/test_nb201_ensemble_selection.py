"""How the NB-201 pages choose and judge "our best ensemble" (benchmarks/nb201_correlation.py and
benchmarks/nb201_newer_proxies.py): every subset scored on every dataset, a selection that never sees the dataset it
is reported on, and paired bootstrap intervals."""

from __future__ import annotations

import importlib.util
import math
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradsign_pl.proxies.ensemble import rank_ensemble
from gradsign_pl.scoring.agreement import rank_agreement

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


correlation_page = load("nb201_correlation")
newer_page = load("nb201_newer_proxies")


def study(rng: np.random.Generator, n: int = 40, proxies=("a", "b", "c", "d", "e")):
    accuracy = rng.normal(size=n)
    scores = {p: accuracy * w + rng.normal(size=n) for p, w in zip(proxies, (1.0, 0.5, 0.2, 0.0, 2.0))}
    scores["c"][3] = math.nan  # a proxy that could not score one arch
    return scores, accuracy


def test_every_subset_and_method_is_scored_on_every_dataset_as_the_plain_computation_gives():
    rng = np.random.default_rng(0)
    studies = {"x": study(rng), "y": study(rng)}
    table = correlation_page.ensemble_agreements(studies)
    subsets = sum(len(list(combinations(range(5), k))) for k in (2, 3, 4))
    assert len(table) == 2 * subsets
    assert set(table["mean_rank:a+b+c"]) == {"x", "y"}
    for name in ("log_rank:a+c", "mean_rank:b+c+d+e"):
        method, parts = name.split(":")
        for ds, (scores, accuracy) in studies.items():
            expected = rank_agreement(rank_ensemble({p: scores[p] for p in parts.split("+")}, method), accuracy)[:2]
            assert table[name][ds] == pytest.approx(expected)


def test_leave_one_dataset_out_reports_what_the_other_datasets_chose():
    table = {
        "log_rank:a+b": {"x": (0.90, 0.7), "y": (0.90, 0.7), "z": (0.50, 0.4)},
        "log_rank:a+c": {"x": (0.80, 0.6), "y": (0.85, 0.6), "z": (0.99, 0.9)},
        "mean_rank:a+b": {"x": (0.95, 0.8), "y": (0.70, 0.5), "z": (0.60, 0.4)},
    }
    held_out = correlation_page.leave_one_dataset_out(table, ["x", "y", "z"])
    # z's best ensemble (a+c, 0.99) is not what z reports: x and y chose a+b (mean 0.90), which scores 0.50 on z
    assert held_out["z"] == ("log_rank:a+b", 0.50, 0.4)
    assert held_out["x"] == ("log_rank:a+c", 0.80, 0.6)  # y and z: a+c 0.92 beats a+b 0.70
    assert correlation_page.select_ensemble(table, ["x"]) == "mean_rank:a+b"
    with pytest.raises(ValueError, match="at least one dataset"):
        correlation_page.select_ensemble(table, [])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_the_held_out_choice_never_depends_on_the_held_out_dataset(seed):
    rng = np.random.default_rng(seed)
    studies = {ds: study(rng, n=25, proxies=("a", "b", "c", "d")) for ds in ("x", "y", "z")}
    before = correlation_page.leave_one_dataset_out(correlation_page.ensemble_agreements(studies), ["x", "y", "z"])
    scores, accuracy = studies["z"]
    studies["z"] = (scores, rng.permutation(accuracy))  # any other ground truth on z
    after = correlation_page.leave_one_dataset_out(correlation_page.ensemble_agreements(studies), ["x", "y", "z"])
    assert after["z"][0] == before["z"][0]


def test_bootstrap_intervals_hold_the_estimate_and_pair_the_archs():
    rng = np.random.default_rng(1)
    accuracy = rng.normal(size=200)
    good, worse = accuracy + rng.normal(size=200), accuracy + 3 * rng.normal(size=200)
    low, high = newer_page.bootstrap_rho(good, accuracy, 500)
    assert low < rank_agreement(good, accuracy)[0] < high < 1
    # nearly the same scores, judged on the same resampled archs: the difference stays near 0 (unpaired resamples
    # would move it by about the width of the first interval)
    low, high = newer_page.bootstrap_rho(good, accuracy, 300, minus=good + 1e-3 * rng.normal(size=200))
    assert -0.005 < low <= high < 0.005
    low, high = newer_page.bootstrap_rho(good, accuracy, 500, minus=worse)
    assert 0 < low < high
    assert all(math.isnan(v) for v in newer_page.bootstrap_rho(good, accuracy, 0))


@pytest.mark.parametrize(
    ("page", "args", "message"),
    [
        ("correlation", ["--n-others", "0"], "--n-others must be between 1 and 15625 (the NB-201 archs), got 0"),
        ("correlation", ["--n-cifar10", "20000"], "--n-cifar10 must be between 1 and 15625"),
        ("correlation", ["--threads", "0"], "--threads must be >= 1, got 0"),
        ("correlation", ["--timing-archs", "0"], "--timing-archs must be >= 1, got 0"),
        ("correlation", ["--executor", "dask"], "invalid choice: 'dask' (choose from 'local', 'ray')"),
        ("correlation", ["--datasets", "cifar-10"], "invalid choice: 'cifar-10'"),
        ("newer", ["--bootstrap", "-1"], "--bootstrap and --variants must be >= 0, got -1 and 100"),
        ("newer", ["--variants", "600"], "--variants 600 exceeds the archs scored (1000 / 500)"),
        ("newer", ["--n-others", "-5"], "--n-others must be between 1 and 15625"),
    ],
)
def test_the_pages_refuse_what_they_cannot_run_before_any_work(page, args, message, capsys):
    module = correlation_page if page == "correlation" else newer_page
    with pytest.raises(SystemExit) as exit_info:
        module.main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
