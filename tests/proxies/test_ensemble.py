"""Rank ensembles: ranks with ties and nan, mean rank, AZ-NAS log-rank sum, the set-level proxy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from gradsign_pl import list_proxies, score
from gradsign_pl.proxies.ensemble import rank_ensemble, ranks
from tests import models


def plain_ranks(values):
    """Reference: rank of v = (# values below v) + (# equal to v + 1) / 2; nan below everything."""
    key = [-math.inf if math.isnan(v) else v for v in values]
    return [sum(k < v for k in key) + (sum(k == v for k in key) + 1) / 2 for v in key]


def test_ranks_ties_and_nan():
    assert ranks([3.0, 1.0, 3.0, math.nan, 2.0]).tolist() == [4.5, 2.0, 4.5, 1.0, 3.0]


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_subnormal=False)


@given(st.lists(st.one_of(finite, st.just(math.nan), st.sampled_from([0.0, 1.0])), min_size=1, max_size=30))
def test_ranks_match_reference(values):
    assert ranks(values).tolist() == plain_ranks(values)


def test_mean_rank_and_log_rank_by_hand():
    scores = {"a": [1.0, 2.0, 3.0], "b": [3.0, 2.0, 1.0], "c": [1.0, 3.0, 2.0]}
    # ranks a: 1 2 3; b: 3 2 1; c: 1 3 2
    assert rank_ensemble(scores, "mean_rank").tolist() == pytest.approx([5 / 3, 7 / 3, 2.0])
    expected = [
        math.log(1 / 3) + math.log(3 / 3) + math.log(1 / 3),
        math.log(2 / 3) * 2 + math.log(3 / 3),
        math.log(3 / 3) + math.log(1 / 3) + math.log(2 / 3),
    ]
    assert rank_ensemble(scores, "log_rank").tolist() == pytest.approx(expected)


@given(st.lists(st.tuples(finite, finite), min_size=2, max_size=20), st.sampled_from(["mean_rank", "log_rank"]))
def test_ensemble_depends_only_on_order(pairs, method):
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    base = rank_ensemble({"a": a, "b": b}, method)
    moved = rank_ensemble({"a": a * 4.0, "b": b * 2.0}, method)  # exact and order-preserving (no underflow)
    np.testing.assert_allclose(base, moved)


def test_one_proxy_log_rank_orders_like_the_proxy():
    x = [0.3, -2.0, 7.0, 1.0]
    assert np.argsort(rank_ensemble({"x": x}, "log_rank")).tolist() == np.argsort(x).tolist()


@pytest.mark.parametrize(
    ("scores", "method", "message"),
    [
        ({"a": [1.0, 2.0]}, "median", "unknown ensemble method 'median'"),
        ({}, "log_rank", "at least one proxy"),
        ({"a": [1.0, 2.0], "b": [1.0]}, "log_rank", "same candidates"),
        ({"a": []}, "log_rank", "at least one candidate"),
    ],
)
def test_rank_ensemble_errors(scores, method, message):
    with pytest.raises(ValueError, match=message):
        rank_ensemble(scores, method)


def test_ensemble_proxy_over_models():
    assert "ensemble" in list_proxies()
    torch.manual_seed(0)
    nets = [models.bn_cnn(channels=c) for c in (4, 8, 16)]
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    results = score("ensemble", nets, x, y, proxies=["params", "synflow"], method="mean_rank")
    assert [r.per_layer["params"] for r in results] == [score("params", n, x, y).score for n in nets]
    # params grows with width, and so does synflow here: the widest model ranks first on both
    assert [r.score for r in results] == [1.0, 2.0, 3.0]
    assert results[0].options == {"proxies": ["params", "synflow"], "method": "mean_rank"}


def test_ensemble_proxy_rejects_one_model_with_the_fix():
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    with pytest.raises(TypeError, match="pass a list of models"):
        score("ensemble", models.bn_cnn(), x, y)
    with pytest.raises(ValueError, match="at least two candidates"):
        score("ensemble", [models.bn_cnn()], x, y)
    with pytest.raises(ValueError, match="other than 'ensemble'"):
        score("ensemble", [models.bn_cnn(), models.bn_cnn()], x, y, proxies=["ensemble"])
    with pytest.raises(KeyError, match="did you mean 'synflow'"):
        score("ensemble", [models.bn_cnn(), models.bn_cnn()], x, y, proxies=["synflw"])
