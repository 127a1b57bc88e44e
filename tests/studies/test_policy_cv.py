"""Leave-one-family-out choice of a scoring policy: rank statistics, the cross-validated estimates, errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from gradsign_pl.scoring.agreement import kendall_tau, spearman_rho
from gradsign_pl.studies.policy_cv import CrossValidation, cross_validate, seed_spread_of_tau


def same(a: float, b: float, tol: float = 1e-12) -> bool:
    """Equal to ``tol``, or both nan."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol


def scipy_tau_b(x, y) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input
        return float(stats.kendalltau(x, y, variant="b").statistic)


def scipy_rho(x, y) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.spearmanr(x, y).statistic)


# small value sets force ties; the offsets keep the values non-integral
TIED = st.sampled_from([-1.5, 0.0, 0.25, 1.0, 2.75, 3.0])


@st.composite
def paired(draw, min_size: int = 2, max_size: int = 14):
    n = draw(st.integers(min_size, max_size))
    x = draw(st.lists(TIED, min_size=n, max_size=n))
    y = draw(st.lists(st.one_of(TIED, st.floats(-10, 10, allow_nan=False)), min_size=n, max_size=n))
    return x, y


@st.composite
def benchmark(draw, n_policies: int = 1, min_models: int = 3, max_models: int = 10):
    """(policies, accuracy, families) with at least 3 families, ties in scores and accuracies."""
    n = draw(st.integers(min_models, max_models))
    fams = [0, 1, 2] + draw(st.lists(st.integers(0, 3), min_size=n - 3, max_size=n - 3))
    order = draw(st.permutations(range(n)))
    families = [f"f{fams[i]}" for i in order]
    accuracy = draw(st.lists(st.integers(0, 4).map(float), min_size=n, max_size=n))
    policies = {
        f"p{k}": draw(st.lists(st.integers(0, 3).map(lambda v: v * 0.5), min_size=n, max_size=n))
        for k in range(n_policies)
    }
    return policies, accuracy, families


# ------------------------------------------------------------------------------------- rank statistics


@settings(max_examples=150, deadline=None)
@given(paired())
def test_kendall_tau_matches_scipy_with_ties(xy):
    x, y = xy
    assert same(kendall_tau(x, y), scipy_tau_b(x, y))


@settings(max_examples=150, deadline=None)
@given(paired(min_size=3))
def test_spearman_rho_matches_scipy_with_ties(xy):
    x, y = xy
    assert same(spearman_rho(x, y), scipy_rho(x, y))


def test_constant_input_gives_nan():
    assert math.isnan(kendall_tau([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert math.isnan(kendall_tau([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]))
    assert math.isnan(spearman_rho([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert math.isnan(spearman_rho([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]))


def test_known_values():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [40, 30, 20, 10]) == -1.0
    assert spearman_rho([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0, abs=1e-15)
    # x ties one pair: 5 of 6 pairs untied in x, all concordant -> 5 / sqrt(5 * 6)
    assert kendall_tau([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / math.sqrt(30), abs=1e-15)


# ------------------------------------------------------------------------------------- cross-validation


@settings(max_examples=80, deadline=None)
@given(benchmark(n_policies=1))
def test_one_policy_is_forced_so_cv_tau_is_its_plain_tau(data):
    policies, accuracy, families = data
    ((name, scores),) = policies.items()
    cv = cross_validate(policies, accuracy, families)
    assert same(cv.tau, kendall_tau(scores, accuracy))
    assert cv.chosen_all == name
    assert set(cv.chosen.values()) == {name}
    assert cv.chosen.keys() == set(families)
    assert cv.n_models == len(accuracy) and cv.n_families == len(set(families))
    assert math.isnan(cv.rho) or -1.0 - 1e-12 <= cv.rho <= 1.0 + 1e-12


def reference_cv_tau(policies, accuracy, families) -> float:
    """Plain double loop: every pair judged by the policy chosen (by tau-b) without both pairs' families."""
    names = list(policies)

    def choose(held: set[str]) -> str:
        keep = [i for i, f in enumerate(families) if f not in held]
        best, best_tau = names[0], -math.inf
        for p in names:  # strict '>' keeps the earliest of equal taus; nan never wins
            t = kendall_tau([policies[p][i] for i in keep], [accuracy[i] for i in keep])
            if not math.isnan(t) and t > best_tau:
                best, best_tau = p, t
        return best

    num = untied_s = untied_a = 0
    n = len(accuracy)
    for i in range(n):
        for j in range(i + 1, n):
            s = policies[choose({families[i], families[j]})]
            ds, da = np.sign(s[i] - s[j]), np.sign(accuracy[i] - accuracy[j])
            num += ds * da
            untied_s += ds != 0
            untied_a += da != 0
    return num / math.sqrt(untied_s * untied_a) if untied_s and untied_a else math.nan


@settings(max_examples=40, deadline=None)
@given(benchmark(n_policies=3, max_models=8))
def test_cv_tau_matches_a_plain_pairwise_loop(data):
    policies, accuracy, families = data
    assert same(cross_validate(policies, accuracy, families).tau, reference_cv_tau(policies, accuracy, families))


def test_perfect_and_reversed_policy():
    # 9 models, accuracy 0..8, families interleaved: f0 = {0, 3, 6}, f1 = {1, 4, 7}, f2 = {2, 5, 8}
    accuracy = [float(a) for a in range(9)]
    families = [f"f{a % 3}" for a in range(9)]
    policies = {"bad": [-a for a in accuracy], "good": list(accuracy)}
    cv = cross_validate(policies, accuracy, families)
    assert isinstance(cv, CrossValidation)
    assert cv.tau == 1.0
    assert cv.chosen_all == "good"
    assert cv.chosen == {"f0": "good", "f1": "good", "f2": "good"}
    assert (cv.n_models, cv.n_families) == (9, 3)
    # insertion positions (fraction of other-family models outscored) are strictly increasing in accuracy:
    # 0, 1/6, 2/6, 2/6+e, 3/6+e, 4/6+e, 4/6+2e, 5/6+2e, 1+2e  (e = within-family tie-break, 1e-6 / 3)
    assert cv.rho == pytest.approx(1.0, abs=1e-12)


def test_policy_perfect_except_on_one_family():
    # families A = {a1, a2}, B = {b1, b2}, C = {c1, c2}; accuracy 1..6 in that order.
    # "within" ranks every pair right except c1 < c2, which it reverses;
    # "by_family" only knows the family (A < B < C) and ties inside each one.
    accuracy = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    families = ["A", "A", "B", "B", "C", "C"]
    policies = {"by_family": [1.0, 1.0, 2.0, 2.0, 3.0, 3.0], "within": [1.0, 2.0, 3.0, 4.0, 6.0, 5.0]}
    # Choices (tau-b on the families left in):
    #   without A (B, C): within 4/6 = 0.667, by_family 4/sqrt(4*6) = 0.816 -> by_family
    #   without B (A, C): same numbers                                        -> by_family
    #   without C (A, B): within 1.0, by_family 0.816                         -> within
    #   only C left (A, B out): within -1, by_family nan (constant)           -> within
    #   only B / only A left: within 1, by_family nan                         -> within
    #   all: within 13/15 = 0.867, by_family 12/sqrt(12*15) = 0.894           -> by_family
    # Pairs, each under the policy chosen without its families:
    #   a1-a2 (by_family): tied      b1-b2 (by_family): tied      c1-c2 (within): discordant
    #   the 12 cross-family pairs (within): all concordant
    # tau = (12 - 1) / sqrt(13 untied scores * 15 untied accuracies) = 11 / sqrt(195)
    cv = cross_validate(policies, accuracy, families)
    assert cv.tau == pytest.approx(11 / math.sqrt(195), abs=1e-12)
    assert cv.chosen == {"A": "by_family", "B": "by_family", "C": "within"}
    assert cv.chosen_all == "by_family"
    # Insertion: A by by_family among B, C [2, 2, 3, 3] -> a1 = a2 = 0 + e/2;  B among A, C [1, 1, 3, 3] ->
    # b1 = b2 = 1/2 + e/2;  C by within among A, B [1, 2, 3, 4] -> c1 = 1 + e/2, c2 = 1 (e = 1e-6).
    # Ranks of the positions [1.5, 1.5, 3.5, 3.5, 6, 5] against 1..6:
    # deviations [-2, -2, 0, 0, 2.5, 1.5] . [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5] = 15.5, norms 16.5 and 17.5
    assert cv.rho == pytest.approx(15.5 / math.sqrt(16.5 * 17.5), abs=1e-12)


def test_equal_policies_go_to_the_earliest_name():
    accuracy = [1.0, 3.0, 2.0, 5.0, 4.0, 6.0]
    families = ["a", "b", "c", "a", "b", "c"]
    scores = [0.1, 0.2, 0.4, 0.3, 0.6, 0.5]
    for order in (["zeta", "alpha"], ["alpha", "zeta"]):
        cv = cross_validate({name: list(scores) for name in order}, accuracy, families)
        assert cv.chosen_all == order[0]
        assert set(cv.chosen.values()) == {order[0]}
    # a worse policy listed first does not win a tie it is not part of
    cv = cross_validate({"worse": [-s for s in scores], "x": scores, "y": scores}, accuracy, families)
    assert cv.chosen_all == "x" and set(cv.chosen.values()) == {"x"}


def test_mathematically_equal_taus_go_to_the_earliest_name():
    accuracy = [2.0, 2.0, 1.0, 2.0, 1.0]
    families = ["a", "b", "c", "a", "b"]
    first, second = [0.0, 3.0, 0.0, 2.0, 1.0], [1.0, 2.0, 1.0, 1.0, 1.0]
    # first: 3 concordant pairs of 9 untied -> 3 / sqrt(9 * 6); second: 2 of 4 -> 2 / sqrt(4 * 6); both 1/sqrt(6)
    assert scipy_tau_b(first, accuracy) == scipy_tau_b(second, accuracy)
    assert cross_validate({"first": first, "second": second}, accuracy, families).chosen_all == "first"


def test_nan_taus_never_win_the_choice():
    # "flat" is constant (tau nan everywhere); "anti" is reversed (tau -1) but still preferred over nan
    accuracy = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    families = ["a", "a", "b", "b", "c", "c"]
    cv = cross_validate({"flat": [0.0] * 6, "anti": [-a for a in accuracy]}, accuracy, families)
    assert cv.chosen_all == "anti" and set(cv.chosen.values()) == {"anti"}
    assert cv.tau == -1.0


# ------------------------------------------------------------------------------------- errors

ACC = [1.0, 2.0, 3.0, 4.0]
FAM = ["a", "b", "c", "a"]


def test_no_policies():
    with pytest.raises(ValueError, match="at least one policy"):
        cross_validate({}, ACC, FAM)


@pytest.mark.parametrize(
    "policies, accuracy, families",
    [
        ({"p": [1.0, 2.0, 3.0]}, ACC, FAM),
        ({"p": [1.0, 2.0, 3.0, 4.0]}, ACC[:3], FAM),
        ({"p": [1.0, 2.0, 3.0, 4.0]}, ACC, FAM[:3]),
    ],
)
def test_mismatched_lengths(policies, accuracy, families):
    with pytest.raises(ValueError, match="lengths differ"):
        cross_validate(policies, accuracy, families)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_scores_name_the_policy(bad):
    with pytest.raises(ValueError, match=r"finite.*'broken'"):
        cross_validate({"fine": [1.0, 2.0, 3.0, 4.0], "broken": [1.0, bad, 3.0, 4.0]}, ACC, FAM)


def test_non_finite_accuracy():
    with pytest.raises(ValueError, match="finite"):
        cross_validate({"p": [1.0, 2.0, 3.0, 4.0]}, [1.0, math.nan, 3.0, 4.0], FAM)


def test_fewer_than_three_families():
    with pytest.raises(ValueError, match=r"at least 3 families.*\['a', 'b'\]"):
        cross_validate({"p": [1.0, 2.0, 3.0, 4.0]}, ACC, ["a", "b", "a", "b"])


# ------------------------------------------------------------------------------------- seed spread


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 8), st.integers(1, 5), st.data())
def test_seed_spread_matches_per_row_tau(n, seeds, data):
    accuracy = data.draw(st.lists(TIED, min_size=n, max_size=n))
    rows = [data.draw(st.lists(TIED, min_size=n, max_size=n)) for _ in range(seeds)]
    taus = np.array([kendall_tau(r, accuracy) for r in rows])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # every row nan: mean of an empty slice
        mean, std = seed_spread_of_tau(rows, accuracy)
        want_mean, want_std = float(np.nanmean(taus)), float(np.nanstd(taus))
    assert same(mean, want_mean) and same(std, want_std)


def test_seed_spread_known_values():
    accuracy = [1.0, 2.0, 3.0]
    mean, std = seed_spread_of_tau([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [5.0, 5.0, 5.0]], accuracy)
    # taus 1, -1 and nan (constant row, ignored): mean 0, population std 1
    assert (mean, std) == (0.0, 1.0)
