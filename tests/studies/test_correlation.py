"""The correlation study: rank statistics, scoring with a cache, resume, isolated failures, the report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from gradsign_pl.proxies._registry import _PROXIES, register_proxy
from gradsign_pl.scoring.agreement import rank_agreement
from gradsign_pl.spaces._registry import permutation_sample
from gradsign_pl.studies import correlation
from gradsign_pl.studies.correlation import parse_ensemble, run_correlation
from gradsign_pl.studies.report import write_study
from tests.proxies.test_ensemble import plain_ranks


def plain_spearman(x, y):
    rx, ry = np.array(plain_ranks(list(x))), np.array(plain_ranks(list(y)))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / math.sqrt((rx**2).sum() * (ry**2).sum()))


def plain_kendall_b(x, y):
    n = len(x)
    conc = disc = tx = ty = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tx += 1
            elif dy == 0:
                ty += 1
            elif dx == dy:
                conc += 1
            else:
                disc += 1
    return (conc - disc) / math.sqrt((conc + disc + tx) * (conc + disc + ty))


values = st.lists(st.integers(0, 6).map(float), min_size=4, max_size=25)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_rank_agreement_matches_plain_formulas(data):
    x = data.draw(values)
    y = data.draw(st.lists(st.integers(0, 6).map(float), min_size=len(x), max_size=len(x)))
    if len(set(x)) < 2 or len(set(y)) < 2:
        return
    rho, tau, n = rank_agreement(x, y)
    assert n == len(x)
    assert rho == pytest.approx(plain_spearman(x, y), abs=1e-5)  # torchmetrics adds eps=1e-6 to the denominator
    assert tau == pytest.approx(plain_kendall_b(x, y), abs=1e-6)  # computed in float32


def test_rank_agreement_drops_nan_and_handles_constants():
    rho, tau, n = rank_agreement([1.0, math.nan, 3.0, 2.0], [10.0, 0.0, 30.0, 20.0])
    assert (rho, tau, n) == (pytest.approx(1.0, abs=1e-5), pytest.approx(1.0), 3)
    assert math.isnan(rank_agreement([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])[0])


def test_parse_ensemble():
    assert parse_ensemble("gradsign+synflow") == ("log_rank", ["gradsign", "synflow"])
    assert parse_ensemble("mean_rank:a+b+c") == ("mean_rank", ["a", "b", "c"])
    with pytest.raises(ValueError, match="write \\[method:\\]proxy\\+proxy"):
        parse_ensemble("gradsign")
    with pytest.raises(ValueError, match="method one of"):
        parse_ensemble("best:a+b")


class ToySpace:
    """MLPs whose width is the arch index; accuracy grows with width; index 3 cannot be built."""

    name = "toy"
    datasets = ("d",)

    def __len__(self):
        return 8

    def arch(self, index):
        return f"width-{index + 1}"

    def build(self, arch, dataset):
        if arch == 3:
            raise RuntimeError("broken candidate")
        width = arch + 1
        return nn.Sequential(nn.Linear(6, width), nn.ReLU(), nn.Linear(width, 3))

    def accuracy(self, dataset):
        return np.arange(8, dtype=float) * 10

    def sample(self, n, seed):
        return permutation_sample(8, n, seed)


@pytest.fixture
def failing_proxy():
    @register_proxy("test_fails_on_wide")
    def fails(model, inputs, targets, **_):
        if model[0].out_features > 6:
            raise RuntimeError("too wide for this test proxy")
        from gradsign_pl import score

        return score("params", model, inputs, targets)

    yield "test_fails_on_wide"
    del _PROXIES["test_fails_on_wide"]


def test_study_scores_caches_and_resumes(tmp_path, failing_proxy, monkeypatch):
    batch = (torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1]))
    kwargs = {
        "proxies": ["params", failing_proxy],
        "n_archs": 8,
        "seed": 1,
        "out": tmp_path,
        "batch": batch,
        "progress": False,
        "ensembles": ["mean_rank:params+" + failing_proxy],
    }
    study = run_correlation(ToySpace(), "d", **kwargs)
    by_name = {c.name: c for c in study.correlations}
    # params = 6w + w + 3w + 3 grows with width, as does accuracy: perfect ranking over the 7 buildable archs
    assert by_name["params"].spearman == pytest.approx(1.0) and by_name["params"].n == 7
    assert by_name[failing_proxy].n == 5 and by_name[failing_proxy].n_failed == 3
    reasons = {(i, p): r for i, p, r in study.failures}
    assert "build/forward failed: RuntimeError: broken candidate" in reasons[(3, "params")]
    assert "too wide for this test proxy" in reasons[(7, failing_proxy)]
    assert "ensemble:mean_rank:params+test_fails_on_wide" in by_name

    # a second run computes nothing: every score comes from the cache
    calls = []
    monkeypatch.setattr(correlation, "get_proxy", lambda name: calls.append(name) or _PROXIES[name])
    original = ToySpace.build
    monkeypatch.setattr(ToySpace, "build", lambda self, *a: pytest.fail("rebuilt a cached arch"))
    again = run_correlation(ToySpace(), "d", **kwargs)
    np.testing.assert_array_equal(again.scores["params"], study.scores["params"])
    monkeypatch.setattr(ToySpace, "build", original)

    paths = write_study(again, tmp_path / "report")
    header = paths["csv"].read_text().splitlines()[0].split(",")
    assert header[:4] == ["index", "arch", "test_accuracy", "params"]
    summary = json.loads(paths["json"].read_text())
    assert summary["settings"]["n_archs"] == 8 and len(summary["failures"]) == 4
    assert paths["scatter_params"].stat().st_size > 1000
    assert "| params | 1.000 |" in paths["markdown"].read_text()


def test_study_rejects_bad_requests(tmp_path):
    batch = (torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1]))
    with pytest.raises(KeyError, match="did you mean 'synflow'"):
        run_correlation(ToySpace(), "d", proxies=["synflw"], out=tmp_path, batch=batch, progress=False)
    with pytest.raises(ValueError, match="not among the scored proxies"):
        run_correlation(
            ToySpace(), "d", proxies=["params"], ensembles=["params+synflow"], out=tmp_path, batch=batch, progress=False
        )
    with pytest.raises(ValueError, match="list it under ensembles"):
        run_correlation(ToySpace(), "d", proxies=["ensemble"], out=tmp_path, batch=batch, progress=False)
    with pytest.raises(ValueError, match="AZ-NAS: 'log_rank:az_expressivity"):
        run_correlation(ToySpace(), "d", proxies=["az_nas"], out=tmp_path, batch=batch, progress=False)


def test_the_study_scores_every_single_model_proxy_by_default():
    """A proxy added to the registry is in the NB-201 table without anyone remembering to list it."""
    from gradsign_pl import list_proxies
    from gradsign_pl.proxies import get_proxy

    single = {p for p in list_proxies() if not get_proxy(p).set_level}
    assert set(correlation.DEFAULT_PROXIES) == single
    assert len(correlation.DEFAULT_PROXIES) == len(set(correlation.DEFAULT_PROXIES))
    # AZ-NAS is the study's rank ensemble of exactly its authors' four components
    method, parts = parse_ensemble(correlation.AZ_NAS)
    assert method == "log_rank" and parts == ["az_expressivity", "az_progressivity", "az_trainability", "az_complexity"]
    assert set(correlation.PUBLISHED_NEWER) <= set(correlation.DEFAULT_PROXIES) | {correlation.AZ_NAS}
