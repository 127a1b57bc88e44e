"""The Table 5.5 NAS runner (resume, settings checks, reports) and the select / nas CLI commands."""

from __future__ import annotations

import csv
import json
import random
from types import SimpleNamespace

import numpy as np
import pytest

from gradsign_pl.cli.bench import main
from gradsign_pl.scoring.cache import ScoreCache
from gradsign_pl.search.nb201_tabular import REPORT_COLUMNS, NB201CellSpace, ParamsCostModel, TabularEvaluator
from gradsign_pl.spaces.nb201 import NB201Table, all_archs
from gradsign_pl.studies.nas import PAPER_TABLE_5_5, markdown_table, read_runs, run_nas, write_nas

ARCHS = all_archs()
N = 40


def synthetic_table(n: int = N) -> NB201Table:
    rng = np.random.default_rng(0)
    q = rng.normal(size=n)
    cols = {c: 80 + 4 * q + rng.normal(scale=0.5, size=n) for c in REPORT_COLUMNS}
    cols["cifar10_valid_12ep"] = 70 + 4 * q
    cols["params_m_cifar10"] = rng.uniform(0.1, 1.5, size=n)
    return NB201Table(ARCHS[:n], cols, "synthetic")


class FakeStrategy:
    """Evaluates random archs until the budget is spent; counts its runs; can crash after a number of runs."""

    def __init__(self, name, log, crash_after=None, **kwargs):
        self.name, self.log, self.crash_after, self.kwargs = name, log, crash_after, kwargs

    def run(self, space, evaluator, budget, *, seed, scorer=None):
        if self.crash_after is not None and len(self.log) >= self.crash_after:
            raise KeyboardInterrupt  # an interruption mid-study
        self.log.append((self.name, seed, scorer is not None))
        rng = random.Random(seed)
        history, spent, best = [], 0.0, (None, float("-inf"))
        while True:
            arch = space.sample(rng)
            if scorer is not None:
                scorer(arch)
            reward, cost = evaluator.evaluate(arch)
            if spent + cost > budget.max_seconds:
                break
            spent += cost
            if reward > best[1]:
                best = (arch, reward)
            history.append(
                {
                    "arch": arch,
                    "reward": reward,
                    "cost": cost,
                    "spent_seconds": spent,
                    "evaluations": len(history) + 1,
                    "best_arch": best[0],
                    "best_reward": best[1],
                }
            )
        return SimpleNamespace(
            best_arch=best[0],
            best_reward=best[1],
            spent_seconds=spent,
            evaluations=len(history),
            proxy_calls=0,
            history=history,
        )


@pytest.fixture
def setup():
    table = synthetic_table()
    evaluator = TabularEvaluator(table, cost_model=ParamsCostModel(mean_seconds=100.0))
    space = NB201CellSpace(table.archs)
    scores = {a: float(table.columns["cifar10_valid_12ep"][i]) for i, a in enumerate(table.archs)}

    def scorer(arch):
        return scores[arch], 0.1

    return table, evaluator, space, scorer


def test_resume_after_an_interruption_redoes_nothing(tmp_path, setup):
    _, evaluator, space, scorer = setup
    log: list = []
    kw = {
        "runs": 4,
        "budget_seconds": 1000.0,
        "seed": 10,
        "space": space,
        "evaluator": evaluator,
        "scorer": scorer,
        "out_dir": tmp_path,
        "progress": False,
    }
    with pytest.raises(KeyboardInterrupt):
        run_nas(("rs", "g-rs"), factory=lambda name, **k: FakeStrategy(name, log, crash_after=3, **k), **kw)
    assert len(read_runs(tmp_path)) == 3
    study = run_nas(("rs", "g-rs"), factory=lambda name, **k: FakeStrategy(name, log, **k), **kw)
    assert study.computed == 5 and len(log) == 8 and len(set(log)) == 8  # no (strategy, seed) ran twice
    assert [(n, s) for n, s, _ in log] == [(n, s) for n in ("rs", "g-rs") for s in range(10, 14)]
    assert all(assisted == n.startswith("g-") for n, _, assisted in log)
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 8
    again = run_nas(("rs", "g-rs"), factory=lambda name, **k: FakeStrategy(name, log, **k), **kw)
    assert again.computed == 0 and len(log) == 8
    row = again.row("rs")
    assert row.runs == 4 and 0 < row.spent_seconds <= 1000 and row.evaluations > 3
    assert set(row.mean) == set(REPORT_COLUMNS)
    rec = again.records[0]
    assert rec["curve"][-1][0] == rec["spent_seconds"] and rec["curve"][-1][1] == rec["best_reward"]
    # a larger study reuses the finished runs
    more = run_nas(("rs",), factory=lambda name, **k: FakeStrategy(name, log, **k), **{**kw, "runs": 6})
    assert more.computed == 2 and more.row("rs").runs == 6


def test_settings_mismatch_and_bad_arguments(tmp_path, setup):
    _, evaluator, space, scorer = setup

    def factory(name, **k):
        return FakeStrategy(name, [], **k)

    kw = {
        "runs": 1,
        "space": space,
        "evaluator": evaluator,
        "scorer": scorer,
        "out_dir": tmp_path,
        "factory": factory,
        "progress": False,
    }
    run_nas(("rs",), budget_seconds=500.0, **kw)
    with pytest.raises(ValueError, match=r"budget_seconds: recorded 500.0 vs now 600.0"):
        run_nas(("rs",), budget_seconds=600.0, **kw)
    with pytest.raises(ValueError, match="space"):
        run_nas(("rs",), budget_seconds=500.0, **{**kw, "space": NB201CellSpace(ARCHS[:10])})
    with pytest.raises(ValueError, match="need a scorer"):
        run_nas(("g-rea",), budget_seconds=500.0, **{**kw, "scorer": None, "out_dir": tmp_path / "b"})
    with pytest.raises(ValueError, match="budget_seconds or max_evaluations"):
        run_nas(("rs",), budget_seconds=None, **{**kw, "out_dir": tmp_path / "c"})


def test_real_strategies_and_reports(tmp_path, setup):
    _, evaluator, space, scorer = setup
    study = run_nas(
        ("rs", "g-rs", "g-bohb"),
        runs=2,
        budget_seconds=800.0,
        space=space,
        evaluator=evaluator,
        scorer=scorer,
        out_dir=tmp_path,
        pool_size=5,
        progress=False,
    )
    assert [r.strategy for r in study.rows] == ["rs", "g-rs", "g-bohb"]
    g = study.row("g-rs")
    assert g.proxy_calls >= 5 * g.evaluations and study.row("rs").proxy_calls == 0
    assert g.paper == PAPER_TABLE_5_5["G-RS"] and study.row("g-bohb").paper == PAPER_TABLE_5_5["G-HB"]
    md = markdown_table(study)
    assert "budget 800 s" in md and "(94.02 ± 0.21)" in md
    paths = write_nas(study, tmp_path)
    assert paths["plot"].stat().st_size > 1000
    with open(paths["csv"]) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["strategy"] for r in rows] == ["rs", "g-rs", "g-bohb"] and rows[1]["paper_cifar10_test_mean"] == "94.02"
    assert json.loads(paths["json"].read_text())["settings"]["pool_size"] == 5


def test_bohb_study_trains_some_archs_for_200_epochs(tmp_path, setup):
    table, evaluator, space, scorer = setup
    # mean 12-epoch cost 100 s, so a 200-epoch evaluation costs ~1667 s: 9000 s fit the brackets [16, 1] and [2]
    study = run_nas(
        ("bohb", "g-bohb"),
        runs=2,
        budget_seconds=9000.0,
        space=space,
        evaluator=evaluator,
        scorer=scorer,
        out_dir=tmp_path,
        pool_size=3,
        progress=False,
    )
    valid = dict(zip(table.archs, table.columns["cifar10_valid"]))
    low = dict(zip(table.archs, table.columns["cifar10_valid_12ep"]))
    for rec in study.records:
        assert rec["evaluations_by_fidelity"]["200"] >= 1 and rec["evaluations_by_fidelity"]["12"] >= 16
        assert sum(rec["evaluations_by_fidelity"].values()) == rec["evaluations"]
        assert rec["best_fidelity"] == 200 and rec["best_reward"] == valid[rec["best_arch"]]
        assert rec["search_reward"] == low[rec["best_arch"]] and rec["curve"][-1][1] == rec["search_reward"]
        assert rec["spent_seconds"] <= 9000.0
    row = study.row("bohb")
    assert set(row.evaluations_by_fidelity) == {"12", "200"} and row.evaluations_by_fidelity["200"] >= 1
    assert row.best_reward[0] == pytest.approx(np.mean([r["search_reward"] for r in study.records[:2]]))
    assert " at 200 ep)" in markdown_table(study)


# ------------------------------------------------------------------------------------------------------- CLI


def write_table_csv(path, table: NB201Table) -> None:
    cols = list(table.columns)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "arch_str", *cols])
        for i, a in enumerate(table.archs):
            w.writerow([i, a, *(table.columns[c][i] for c in cols)])


def bench(argv, capsys):
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_errors_name_the_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = bench(["select", "--runs", "2"], capsys)
    assert code == 2 and "no proxy score cache at runs/correlate/nb201-cifar10-b64-s42" in err
    assert "run gradsign-bench correlate --dataset cifar10 --n_archs 1000 first" in err
    code, _, err = bench(["nas", "--runs", "2", "--cache", str(tmp_path / "none")], capsys)
    assert code == 2 and "run gradsign-bench correlate" in err
    cache = ScoreCache(tmp_path / "cache", {"space": "nb201"})
    cache.add(0, "gradsign", 1.0, seconds=0.1)
    code, _, err = bench(["select", "--cache", str(tmp_path / "cache"), "--table", str(tmp_path / "no_table")], capsys)
    assert code == 2 and "the NB-201 ground-truth table is needed" in err


def test_cli_select_and_nas_end_to_end(tmp_path, capsys, setup):
    table = setup[0]
    write_table_csv(tmp_path / "table.csv", table)
    cache = ScoreCache(tmp_path / "cache", {"space": "nb201", "dataset": "cifar10"})
    for i in range(30):
        for p in ("gradsign", "synflow", "naswot"):
            cache.add(i, p, float(table.columns["cifar10_valid_12ep"][i]) + (i % 3), seconds=0.2)
    common = ["--cache", str(tmp_path / "cache"), "--table", str(tmp_path / "table.csv")]
    code, out, err = bench(
        ["select", *common, "--runs", "20", "--n_values", "[5,30,100]", "--out", str(tmp_path / "sel")], capsys
    )
    assert code == 0, err
    assert "gradsign(N=100)" in out and "(93.31 ± 0.47)" in (tmp_path / "sel" / "selection.md").read_text()
    doc = json.loads((tmp_path / "sel" / "selection.json").read_text())
    assert doc["settings"]["pool_size"] == 30 and doc["settings"]["runs"] == 20
    nas_args = [
        "nas",
        *common,
        "--strategies",
        "[rs,g-rs]",
        "--runs",
        "2",
        "--budget_seconds",
        "600",
        "--out",
        str(tmp_path / "nas"),
    ]
    code, out, err = bench(nas_args, capsys)
    assert code == 0, err
    assert {"runs.jsonl", "meta.json", "nas.csv", "nas.json", "nas.md", "nas_curves.png"} <= {
        p.name for p in (tmp_path / "nas").iterdir()
    }
    runs = read_runs(tmp_path / "nas")
    assert len(runs) == 4 and all(r["best_arch"] in table.archs[:30] for r in runs.values())  # searched the cache
    code, out, err = bench(nas_args, capsys)
    assert code == 0 and "(0 new runs, 4 in total" in out
    code, out, err = bench([*nas_args[:-2], "--budget_seconds", "700", "--out", str(tmp_path / "nas")], capsys)
    assert code == 2 and "budget_seconds: recorded 600.0 vs now 700.0" in err
    # strategy keyword arguments: bohb with eta 3 has brackets [3, 1] and [2]
    code, out, err = bench(
        [
            "nas",
            *common,
            "--strategies",
            "[bohb]",
            "--runs",
            "1",
            "--budget_seconds",
            "8000",
            "--strategy_kwargs",
            "{bohb: {eta: 3}}",
            "--out",
            str(tmp_path / "eta3"),
        ],
        capsys,
    )
    assert code == 0, err
    assert json.loads((tmp_path / "eta3" / "meta.json").read_text())["strategy_kwargs"] == {"bohb": {"eta": 3}}
    (run,) = read_runs(tmp_path / "eta3").values()
    assert run["evaluations_by_fidelity"]["12"] >= 3 and run["evaluations_by_fidelity"]["200"] >= 3


def test_cli_select_with_rank_ensembles_and_az_nas(tmp_path, capsys, setup):
    from gradsign_pl.proxies.az_nas import COMPONENTS
    from gradsign_pl.proxies.ensemble import rank_ensemble

    table = setup[0]
    write_table_csv(tmp_path / "table.csv", table)
    cache = ScoreCache(tmp_path / "cache", {"space": "nb201", "dataset": "cifar10"})
    rng = np.random.default_rng(0)
    raw = {p: rng.normal(size=30) for p in ("gradsign", "jacov", *COMPONENTS)}
    for i in range(30):
        for p, v in raw.items():
            cache.add(i, p, float(v[i]), seconds=0.1)
    common = ["--cache", str(tmp_path / "cache"), "--table", str(tmp_path / "table.csv"), "--runs", "5"]
    code, _, err = bench(
        [
            "select",
            *common,
            "--proxies",
            "[gradsign, log_rank:gradsign+jacov, az_nas]",
            "--n_values",
            "[30]",
            "--out",
            str(tmp_path / "sel"),
        ],
        capsys,
    )
    assert code == 0, err
    doc = json.loads((tmp_path / "sel" / "selection.json").read_text())
    assert doc["settings"]["proxies"] == ["gradsign", "log_rank:gradsign+jacov", "az_nas"]
    # N = the whole pool: each method picks the arch its combined rank puts first
    best = {
        "log_rank:gradsign+jacov": int(np.argmax(rank_ensemble({p: raw[p] for p in ("gradsign", "jacov")}))),
        "az_nas": int(np.argmax(rank_ensemble({p: raw[p] for p in COMPONENTS}))),
    }
    rows = {r["method"]: r for r in doc["rows"]}
    for name, i in best.items():
        assert rows[name]["mean"]["cifar10_test"] == pytest.approx(table.columns["cifar10_test"][i])
    code, _, err = bench(["select", *common, "--proxies", "[ensemble]"], capsys)
    assert code == 2 and "name the ensemble's parts" in err
