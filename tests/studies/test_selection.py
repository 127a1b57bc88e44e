"""Architecture selection (Table 5.4) on synthetic tables and scores."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gradsign_pl.search.nb201_tabular import REPORT_COLUMNS
from gradsign_pl.spaces.nb201 import NB201Table, all_archs
from gradsign_pl.studies.selection import PAPER_TABLE_5_4, markdown_table, run_selection, write_selection

ARCHS = all_archs()


def table_of(values: dict[str, list[float]], n: int) -> NB201Table:
    return NB201Table(ARCHS[:n], {c: np.asarray(v, dtype=float) for c, v in values.items()}, "synthetic")


def test_exact_picks_when_n_is_the_whole_pool():
    # 4 archs; per column a known best. cifar10_valid best: arch 2; other columns best: arch 3.
    cols = {c: [10.0, 20.0, 30.0, 40.0] for c in REPORT_COLUMNS}
    cols["cifar10_valid"] = [10.0, 20.0, 50.0, 40.0]
    table = table_of(cols, 4)
    a = ARCHS[:4]
    scores = {
        "good": {a[0]: 1.0, a[1]: 2.0, a[2]: 3.0, a[3]: 2.5},  # picks arch 2
        "bad": {a[0]: 9.0, a[1]: 2.0, a[2]: 3.0, a[3]: 2.5},  # picks arch 0
        "failing": {a[0]: math.nan, a[1]: 0.5, a[2]: math.nan, a[3]: math.nan},  # nan never wins: arch 1
    }
    study = run_selection(scores, table, n_values=(4, 10), runs=5, seed=3)
    for n in (4, 10):  # 10 > pool: clamped to the pool
        assert study.row("good", n).mean["cifar10_valid"] == 50.0 and study.row("good", n).std["cifar10_valid"] == 0
        assert study.row("bad", n).mean["cifar10_test"] == 10.0
        assert study.row("failing", n).mean["cifar10_test"] == 20.0
        assert study.row("optimal", n).mean["cifar10_valid"] == 50.0
        assert study.row("optimal", n).mean["cifar10_test"] == 30.0  # optimal reports the C10-valid pick
        assert study.row("oracle", n).mean["cifar10_test"] == 40.0  # oracle: each column's own max
        assert study.row("good", n).n_effective == 4
    picks = [p for p in study.picks if p["n"] == 4]
    assert len(picks) == 5 and all(p["good"] == a[2] and p["bad"] == a[0] and p["failing"] == a[1] for p in picks)
    assert study.settings["pool_size"] == 4


def test_ties_go_to_the_first_in_sample_order():
    cols = {c: [1.0, 2.0] for c in REPORT_COLUMNS}
    table = table_of(cols, 2)
    scores = {"tied": {ARCHS[0]: 1.0, ARCHS[1]: 1.0}}
    study = run_selection(scores, table, n_values=(2,), runs=200, seed=0)
    picked = [p["tied"] for p in study.picks]
    # the sample order is a random permutation, so both archs get picked, and each pick is the first sampled
    rng_first = [ARCHS[int(np.random.default_rng([0, 2, r]).choice(2, size=2, replace=False)[0])] for r in range(200)]
    assert picked == rng_first and set(picked) == {ARCHS[0], ARCHS[1]}


def test_optimal_beats_proxies_and_random_matches_the_pool_mean():
    rng = np.random.default_rng(7)
    n = 300
    quality = rng.normal(size=n)
    cols = {c: 80 + 5 * quality + rng.normal(scale=1.0, size=n) for c in REPORT_COLUMNS}
    table = NB201Table(ARCHS[:n], cols, "synthetic")
    scores = {
        "proxy_a": dict(zip(ARCHS[:n], quality + rng.normal(scale=0.5, size=n))),
        "proxy_b": dict(zip(ARCHS[:n], rng.normal(size=n))),
    }
    runs = 400
    study = run_selection(scores, table, n_values=(10, 100), runs=runs, seed=1)
    for N in (10, 100):
        opt, oracle = study.row("optimal", N), study.row("oracle", N)
        for p in ("proxy_a", "proxy_b", "random"):
            row = study.row(p, N)
            assert opt.mean["cifar10_valid"] >= row.mean["cifar10_valid"]
            assert all(oracle.mean[c] >= row.mean[c] for c in REPORT_COLUMNS)
        assert study.row("proxy_a", N).mean["cifar10_test"] > study.row("proxy_b", N).mean["cifar10_test"]
        rnd = study.row("random", N)
        for c in REPORT_COLUMNS:
            assert abs(rnd.mean[c] - cols[c].mean()) < 4 * cols[c].std() / math.sqrt(runs)
    # per run too: optimal's C10-valid is the max among the N, so never below any proxy pick
    idx = {a: i for i, a in enumerate(ARCHS[:n])}
    for p in study.picks:
        best = cols["cifar10_valid"][idx[p["optimal"]]]
        assert all(best >= cols["cifar10_valid"][idx[p[m]]] for m in ("proxy_a", "proxy_b", "random"))


def test_reports_and_errors(tmp_path):
    cols = {c: [1.0, 2.0, 3.0] for c in REPORT_COLUMNS}
    table = table_of(cols, 3)
    scores = {"gradsign": {ARCHS[0]: 1.0, ARCHS[1]: 2.0, ARCHS[2]: 0.0}}
    study = run_selection(scores, table, n_values=(100,), runs=2)
    md = markdown_table(study)
    g = PAPER_TABLE_5_4["gradsign(N=100)"]["cifar10_test"]
    assert f"({g[0]:.2f} ± {g[1]:.2f})" in md and "gradsign(N=100)" in md and "oracle(N=100)" in md
    paths = write_selection(study, tmp_path / "out")
    doc = json.loads(paths["json"].read_text())
    assert doc["settings"]["pool_size"] == 3 and len(doc["rows"]) == 4 and len(doc["picks"]) == 2
    assert paths["csv"].read_text().splitlines()[0].startswith("method,n,n_effective,runs,cifar10_valid_mean")
    with pytest.raises(KeyError, match="no score for 1 pool archs"):
        run_selection(scores, table, pool=ARCHS[:4], runs=1)
    with pytest.raises(ValueError, match="runs must be >= 1"):
        run_selection(scores, table, runs=0)
    with pytest.raises(ValueError, match="pool of candidate archs is empty"):
        run_selection({"a": {ARCHS[0]: 1.0}, "b": {ARCHS[1]: 1.0}}, table, runs=1)
