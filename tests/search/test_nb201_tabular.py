"""Tabular NB-201: the cell space (full and subset), the simulated evaluator and the cached proxy scorer."""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest

from gradsign_pl.scoring.cache import ScoreCache
from gradsign_pl.search.nb201_tabular import (
    DEFAULT_SCORING_SECONDS,
    REPORT_COLUMNS,
    CachedScorer,
    NB201CellSpace,
    ParamsCostModel,
    TabularEvaluator,
)
from gradsign_pl.spaces.nb201 import OPS, NB201Table, all_archs, load_table, ops_of

ARCHS = all_archs()


def synthetic_table(n: int = 8) -> NB201Table:
    archs = ARCHS[:n]
    cols = {c: np.linspace(50.0, 90.0, n) + k for k, c in enumerate(REPORT_COLUMNS)}
    cols["cifar10_valid_12ep"] = np.linspace(40.0, 80.0, n)
    cols["params_m_cifar10"] = np.linspace(0.1, 1.5, n)
    return NB201Table(archs, cols, "synthetic")


def n_diff(a: str, b: str) -> int:
    return sum(x != y for x, y in zip(ops_of(a), ops_of(b)))


def test_full_space_samples_uniformly_mutates_one_edge_and_round_trips():
    space = NB201CellSpace()
    assert len(space) == 15625 and space.num_edges == 6 and space.num_ops == 5
    rng = random.Random(0)
    samples = [space.sample(rng) for _ in range(5000)]
    for e in range(6):
        counts = Counter(ops_of(a)[e] for a in samples)
        assert set(counts) == set(OPS)
        assert all(abs(c / 5000 - 0.2) < 0.03 for c in counts.values())
    for a in samples[:300]:
        b = space.mutate(a, rng)
        assert n_diff(a, b) == 1 and b in space
        assert space.decode(space.encode(a)) == a
    assert len(space.neighbours(samples[0])) == 24
    with pytest.raises(ValueError, match="6 op indices"):
        space.decode((0, 1, 2))


def test_subset_space_stays_in_the_subset():
    center = ARCHS[0]
    near = NB201CellSpace().neighbours(center)[:3]
    far = next(a for a in ARCHS if all(n_diff(a, x) > 1 for x in [center, *near]))
    subset = [center, *near, far]
    space = NB201CellSpace(subset)
    assert len(space) == 5 and far in space and ARCHS[-1] not in space
    rng = random.Random(1)
    assert Counter(space.sample(rng) for _ in range(2000)).keys() == set(subset)
    for parent in subset:  # mutations stay in the subset and never return the parent
        for _ in range(30):
            child = space.mutate(parent, rng)
            assert child in subset and child != parent
    b = space.mutate(far, rng)  # far has no neighbour in the subset: projected onto the subset
    assert b in subset and b != far and space.restarts >= 1
    star = NB201CellSpace([center, *NB201CellSpace().neighbours(center)])  # center + all 24 neighbours
    assert all(n_diff(center, star.mutate(center, rng)) == 1 for _ in range(50)) and star.restarts == 0
    for a in subset:
        assert space.decode(space.encode(a)) == a
    full = NB201CellSpace()
    outside = [a for a in (full.sample(rng) for _ in range(50)) if a not in space][:20]
    for a in outside:  # an encoding outside the subset is projected onto its nearest subset arch
        projected = space.decode(full.encode(a))
        assert projected in subset
        assert n_diff(projected, a) == min(n_diff(x, a) for x in subset)
        assert space.decode(full.encode(a)) == projected  # deterministic
    assert space.projections == 2 * len(outside)


def test_evaluator_on_a_synthetic_table():
    table = synthetic_table()
    ev = TabularEvaluator(table, cost_model=ParamsCostModel(mean_seconds=100.0, fixed_fraction=0.25))
    assert ev.costs.mean() == pytest.approx(100.0)
    assert np.all(np.diff(ev.costs) > 0)  # more params, more seconds
    reward, cost = ev.evaluate(ARCHS[3])
    assert reward == table.columns["cifar10_valid_12ep"][3] and cost == pytest.approx(ev.costs[3])
    assert ev.report(ARCHS[3]) == {c: table.columns[c][3] for c in REPORT_COLUMNS}
    assert ev.settings["reward"] == "cifar10_valid_12ep"
    with pytest.raises(KeyError, match="no column 'cifar100_valid_12ep'"):
        TabularEvaluator(table, dataset="cifar100")
    with pytest.raises(KeyError, match="is not in synthetic"):
        ev.evaluate(ARCHS[100])


def test_evaluator_has_12_and_200_epoch_fidelities():
    from gradsign_pl.search.strategies import MultiFidelityEvaluator

    table = synthetic_table()
    ev = TabularEvaluator(table, cost_model=ParamsCostModel(mean_seconds=100.0, fixed_fraction=0.25))
    assert isinstance(ev, MultiFidelityEvaluator) and ev.fidelities == (12, 200)
    assert ev.evaluate_at(ARCHS[3], 12) == ev.evaluate(ARCHS[3])
    reward, cost = ev.evaluate_at(ARCHS[3], 200)
    assert reward == table.columns["cifar10_valid"][3]  # the 200-epoch validation accuracy
    assert cost == pytest.approx(ev.costs[3] * 200 / 12)  # charged 200/12 of the 12-epoch cost
    assert ev.settings["fidelities"] == {"12": "cifar10_valid_12ep", "200": "cifar10_valid"}
    with pytest.raises(ValueError, match="no results after 100 epochs"):
        ev.evaluate_at(ARCHS[3], 100)
    # a table without the 200-epoch column has one fidelity; explicit fidelities must exist in the table
    cols = {c: v for c, v in table.columns.items() if c != "cifar10_valid"}
    assert TabularEvaluator(NB201Table(table.archs, cols, "no200")).fidelities == (12,)
    with pytest.raises(KeyError, match="cifar10_test_12ep"):
        TabularEvaluator(table, fidelities={12: "valid_12ep", 13: "test_12ep"})
    with pytest.raises(ValueError, match="cost_epochs"):
        TabularEvaluator(table, cost_epochs=0)


@pytest.mark.shared_data
def test_evaluator_on_the_real_table(shared_data):
    table = load_table(shared_data)
    ev = TabularEvaluator(table)
    assert ev.costs.mean() == pytest.approx(12 * 9.14)
    arch = table.archs[1]
    reward, cost = ev.evaluate(arch)
    assert reward == pytest.approx(82.834)  # cifar10_valid_12ep of index 1
    assert 60 < ev.costs.min() < cost < ev.costs.max() < 300
    assert ev.evaluate_at(arch, 200) == (pytest.approx(90.769333), pytest.approx(cost * 200 / 12))  # cifar10_valid
    report = ev.report(arch)
    assert report["cifar10_test"] == pytest.approx(93.66) and report["imagenet16_valid"] == pytest.approx(44.0)
    assert list(report) == list(REPORT_COLUMNS)


def test_cached_scorer_reads_index_and_arch_keys(tmp_path):
    table = synthetic_table()
    cache = ScoreCache(tmp_path, {"space": "nb201", "dataset": "cifar10"})
    cache.add(2, "gradsign", 5.0, seconds=0.5)
    cache.add(5, "gradsign", float("nan"), reason="overflow", seconds=0.25)
    cache.add(ARCHS[6], "gradsign", 7.0)  # an arch-string key, no seconds recorded
    cache.add(2, "synflow", 1.0, seconds=0.1)
    scorer = CachedScorer(tmp_path, "gradsign", table)
    assert scorer.archs == [ARCHS[2], ARCHS[5], ARCHS[6]] and ARCHS[2] in scorer
    assert scorer(ARCHS[2]) == (5.0, 0.5)
    assert scorer(ARCHS[5]) == (-math.inf, 0.25)
    assert scorer(ARCHS[6]) == (7.0, DEFAULT_SCORING_SECONDS)
    assert scorer.calls == 3 and scorer.settings["cache_meta"]["dataset"] == "cifar10"
    assert CachedScorer(tmp_path, "gradsign", table, seconds=2.0)(ARCHS[2]) == (5.0, 2.0)
    with pytest.raises(KeyError, match="no cached gradsign score"):
        scorer(ARCHS[3])
    with pytest.raises(KeyError, match="cached proxies: gradsign, synflow"):
        CachedScorer(tmp_path, "naswot", table)
    with pytest.raises(FileNotFoundError, match="run gradsign-bench correlate --dataset cifar10 --n_archs 1000"):
        CachedScorer(tmp_path / "nothing", "gradsign", table)
    assert not (tmp_path / "nothing").exists()


def test_cached_scorer_combines_a_rank_ensemble(tmp_path):
    table = synthetic_table()
    cache = ScoreCache(tmp_path, {"space": "nb201", "dataset": "cifar10"})
    for i, (g, s) in enumerate([(1.0, 9.0), (3.0, 1.0), (2.0, float("nan")), (4.0, 5.0)]):
        cache.add(i, "gradsign", g, seconds=0.5)
        cache.add(i, "synflow", s, seconds=0.25)
    cache.add(7, "gradsign", 8.0, seconds=0.5)  # no synflow record: not in the ensemble
    scorer = CachedScorer(tmp_path, "gradsign+synflow", table)
    assert scorer.archs == ARCHS[:4]
    # ranks (nan last): gradsign 1 3 2 4, synflow 4 2 1 3 over m = 4
    expected = np.log(np.array([1, 3, 2, 4]) / 4) + np.log(np.array([4, 2, 1, 3]) / 4)
    assert [scorer(a)[0] for a in ARCHS[:4]] == pytest.approx(expected.tolist())
    assert scorer(ARCHS[0])[1] == 0.75  # both parts' seconds
    assert CachedScorer(tmp_path, "mean_rank:gradsign+synflow", table)(ARCHS[3])[0] == 3.5
    with pytest.raises(ValueError, match="name the ensemble's parts"):
        CachedScorer(tmp_path, "ensemble", table)
    with pytest.raises(KeyError, match="proxy 'az_expressivity' has no scores"):
        CachedScorer(tmp_path, "az_nas", table)


def test_read_cache_sees_only_the_latest_settings(tmp_path):
    from gradsign_pl.search.nb201_tabular import read_cache

    old = ScoreCache(tmp_path, {"space": "nb201", "dataset": "cifar10", "batch_size": 32})
    old.add(1, "gradsign", 1.0, seconds=0.5)
    old.add(2, "gradsign", 2.0, seconds=0.5)
    new = ScoreCache(tmp_path, {"space": "nb201", "dataset": "cifar10", "batch_size": 64}, on_change="recompute")
    new.add(3, "gradsign", 3.0, seconds=0.5)
    records, meta = read_cache(tmp_path)
    assert [r["candidate"] for r in records] == ["3"] and meta["batch_size"] == 64
    scorer = CachedScorer(tmp_path, "gradsign", synthetic_table())
    assert scorer.archs == [ARCHS[3]] and scorer.settings["cache_meta"]["batch_size"] == 64
    empty = ScoreCache(tmp_path / "empty", {"space": "nb201"})
    assert len(empty) == 0
    with pytest.raises(FileNotFoundError, match=r"holds no scores under its latest settings.*gradsign-bench correlate"):
        read_cache(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"no proxy score cache at .*gradsign-bench correlate"):
        read_cache(tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()
