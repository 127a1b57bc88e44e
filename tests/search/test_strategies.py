"""Budgeted NAS strategies (rs/rea/reinforce/bohb and their proxy-assisted g- variants) on a tiny tabular space."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence

import pytest

from gradsign_pl.search import strategies as st
from gradsign_pl.search.strategies import (
    Budget,
    CellSpace,
    MultiFidelityEvaluator,
    SearchTrace,
    create_strategy,
    hyperband_brackets,
    list_strategies,
)

PLAIN = ("rs", "rea", "reinforce", "bohb")
ALL = PLAIN + tuple(f"g-{n}" for n in PLAIN)
SCORING_SECONDS = 0.5


class TinySpace:
    """``num_edges`` edges x ``num_ops`` ops; arch strings like ``"0-2-1"`` (op index per edge)."""

    def __init__(self, num_edges: int = 3, num_ops: int = 3) -> None:
        self.num_edges, self.num_ops = num_edges, num_ops

    def sample(self, rng: random.Random) -> str:
        return self.decode([rng.randrange(self.num_ops) for _ in range(self.num_edges)])

    def mutate(self, arch: str, rng: random.Random) -> str:
        ops = list(self.encode(arch))
        e = rng.randrange(self.num_edges)
        ops[e] = rng.choice([o for o in range(self.num_ops) if o != ops[e]])
        return self.decode(ops)

    def encode(self, arch: str) -> tuple[int, ...]:
        return tuple(int(o) for o in arch.split("-"))

    def decode(self, ops: Sequence[int]) -> str:
        return "-".join(str(int(o)) for o in ops)

    def all_archs(self) -> list[str]:
        return [self.decode(ops) for ops in itertools.product(range(self.num_ops), repeat=self.num_edges)]


class Table:
    """Reward table: additive per-edge gains plus a small pairwise term; unique optimum; op-dependent cost.

    Two fidelities, like NB-201's 12 and 200 epochs: ``evaluate`` (= ``evaluate_at(arch, 12)``) gives the reward,
    ``evaluate_at(arch, 200)`` the reward + 30 (+ ``high_noise`` times a fixed per-arch perturbation, so the two
    fidelities can rank archs differently) at ``200 / 12`` of the cost. Counts evaluator calls of both kinds.
    """

    fidelities = (12, 200)

    def __init__(self, space: TinySpace, seed: int = 1234, high_noise: float = 0.0) -> None:
        rng = random.Random(seed)
        self.space = space
        self.gain = [[rng.uniform(0, 10) for _ in range(space.num_ops)] for _ in range(space.num_edges)]
        self.pair = rng.uniform(0, 2)
        self.rewards = {a: self._reward(a) for a in space.all_archs()}
        ranked = sorted(self.rewards.values(), reverse=True)
        assert ranked[0] > ranked[1], "the optimum must be unique"
        self.optimum = max(self.rewards, key=self.rewards.get)
        self.high = {a: r + 30 + high_noise * random.Random(f"high{a}").uniform(-1, 1) for a, r in self.rewards.items()}
        self.calls = 0

    def _reward(self, arch: str) -> float:
        ops = self.space.encode(arch)
        return 50 + sum(self.gain[e][o] for e, o in enumerate(ops)) + self.pair * (ops[0] == ops[-1])

    def cost(self, arch: str) -> float:
        return 100.0 + 10.0 * sum(self.space.encode(arch))

    def evaluate(self, arch: str) -> tuple[float, float]:
        self.calls += 1
        return self.rewards[arch], self.cost(arch)

    def evaluate_at(self, arch: str, fidelity: float) -> tuple[float, float]:
        if fidelity == 12:
            return self.evaluate(arch)
        assert fidelity == 200, fidelity
        self.calls += 1
        return self.high[arch], self.cost(arch) * 200 / 12


class SingleFidelity:
    """An evaluator without ``evaluate_at``."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def evaluate(self, arch: str) -> tuple[float, float]:
        return self.table.evaluate(arch)


class CountingScorer:
    """A proxy: ``sign * reward`` plus a small deterministic perturbation; counts calls."""

    def __init__(self, table: Table, sign: float = 1.0, noise: float = 0.5) -> None:
        self.table, self.sign, self.noise, self.calls = table, sign, noise, 0

    def __call__(self, arch: str) -> tuple[float, float]:
        self.calls += 1
        jitter = random.Random(arch).uniform(-self.noise, self.noise)
        return self.sign * self.table.rewards[arch] + jitter, SCORING_SECONDS


def run(name: str, table: Table, budget: Budget, seed: int, scorer=None, **kwargs) -> SearchTrace:
    if scorer is None and name.startswith("g-"):
        scorer = CountingScorer(table)
    return create_strategy(name, **kwargs).run(table.space, table, budget, seed=seed, scorer=scorer)


def evals_to_optimum(trace: SearchTrace, optimum: str, cap: int) -> int:
    """1-based index of the first evaluation of the optimum, ``cap + 1`` if it was never evaluated."""
    return next((h["evaluations"] for h in trace.history if h["arch"] == optimum), cap + 1)


@pytest.fixture(scope="module")
def small() -> Table:
    return Table(TinySpace(3, 3))  # 27 archs


@pytest.fixture(scope="module")
def medium() -> Table:
    return Table(TinySpace(4, 4))  # 256 archs


# ------------------------------------------------------------------------------------------------------ registry


def test_registry_lists_creates_and_suggests():
    assert set(ALL) <= set(list_strategies())
    assert list_strategies("g-*") == sorted(f"g-{n}" for n in PLAIN)
    strat = create_strategy("g-rea", pool_size=20)
    assert strat.name == "g-rea" and strat.pool_size == 20
    assert create_strategy("rea").name == "rea"
    with pytest.raises(KeyError, match=r"'g-rea'.*registered: .*bohb"):
        create_strategy("g_rea")
    with pytest.raises(TypeError, match="pool_size"):
        create_strategy("rea", pool_size=5)  # assisted-only keyword
    with pytest.raises(ValueError, match="already registered"):
        st.register_strategy("rs")(lambda **_: None)


def test_protocol_conformance(small):
    assert isinstance(small.space, CellSpace)
    assert isinstance(small, st.Evaluator) and isinstance(small, MultiFidelityEvaluator)
    assert not isinstance(SingleFidelity(small), MultiFidelityEvaluator)


# ---------------------------------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("name", "kwargs", "bad"),
    [
        ("g-rs", {"pool_size": 0}, "pool_size"),
        ("g-rea", {"pool_size": 0}, "pool_size"),
        ("rea", {"population_size": 2, "sample_size": 3}, "population_size"),
        ("rea", {"sample_size": 0}, "sample_size"),
        ("rea", {"population_size": 1.5}, "population_size"),
        ("reinforce", {"learning_rate": 0.0}, "learning_rate"),
        ("reinforce", {"baseline_momentum": 1.0}, "baseline_momentum"),
        ("g-reinforce", {"credit": "both"}, "credit"),
        ("g-reinforce", {"pool_size": -1}, "pool_size"),
        ("bohb", {"eta": 1}, "eta"),
        ("bohb", {"eta": 2.5}, "eta"),
        ("bohb", {"n_startup_trials": -1}, "n_startup_trials"),
        ("g-bohb", {"pool_size": 0}, "pool_size"),
    ],
)
def test_bad_kwargs_raise_value_error_naming_them(name, kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        create_strategy(name, **kwargs)


@pytest.mark.parametrize("name", [f"g-{n}" for n in PLAIN])
def test_assisted_needs_a_scorer(name, small):
    with pytest.raises(ValueError, match=f"{name} needs a scorer: pass scorer="):
        create_strategy(name).run(small.space, small, Budget(max_evaluations=5), seed=0)


def test_bad_budget_and_seed(small):
    strat = create_strategy("rs")
    for budget, field in (
        (Budget(), "max_seconds or max_evaluations"),
        (Budget(max_seconds=0), "max_seconds"),
        (Budget(max_evaluations=0), "max_evaluations"),
    ):
        with pytest.raises(ValueError, match=field):
            strat.run(small.space, small, budget, seed=0)
    with pytest.raises(ValueError, match="seed"):
        strat.run(small.space, small, Budget(max_evaluations=3), seed=1.5)


# ---------------------------------------------------------------------------------------------------- accounting


@pytest.mark.parametrize("name", ALL)
def test_max_evaluations_exact_and_trace_consistent(name, small):
    small.calls = 0
    trace = run(name, small, Budget(max_evaluations=23), seed=3)
    assert trace.evaluations == len(trace.history) == small.calls == 23
    assert trace.discarded is None
    assert trace.spent_seconds == pytest.approx(sum(h["cost"] for h in trace.history))
    assert [h["evaluations"] for h in trace.history] == list(range(1, 24))

    def rank(h):  # the highest fidelity first (None: single-fidelity), then the reward
        return (-math.inf if h["fidelity"] is None else h["fidelity"], h["reward"])

    best = max(trace.history, key=rank)  # first max
    assert (trace.best_arch, trace.best_reward, trace.best_fidelity) == (best["arch"], best["reward"], best["fidelity"])
    running = (-math.inf, -math.inf)
    for h in trace.history:
        running = max(running, rank(h))
        assert (h["best_fidelity"] or -math.inf, h["best_reward"]) == running
    assert trace.strategy == name and trace.seed == 3
    assert SearchTrace.from_dict(trace.to_dict()) == trace


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("charge", [False, True])
def test_seconds_budget_never_overshoots_and_discards_the_last(name, charge, small):
    max_seconds = 2000.0
    small.calls = 0
    scorer = CountingScorer(small) if name.startswith("g-") else None
    trace = run(name, small, Budget(max_seconds=max_seconds, charge_scoring=charge), seed=5, scorer=scorer)
    costs = sum(h["cost"] for h in trace.history)
    scoring = trace.proxy_calls * SCORING_SECONDS
    assert trace.scoring_seconds == pytest.approx(scoring)
    assert trace.spent_seconds == pytest.approx(costs + (scoring if charge else 0.0))
    assert trace.history[-1]["spent_seconds"] <= max_seconds
    # the search stopped because the budget was reached, or because the next evaluation would have crossed it
    assert trace.spent_seconds >= max_seconds or trace.discarded is not None
    if trace.discarded is not None:
        assert trace.history[-1]["spent_seconds"] + trace.discarded["cost"] > max_seconds
    assert small.calls == trace.evaluations + (trace.discarded is not None)
    if not charge:
        assert trace.spent_seconds <= max_seconds
    if scorer is not None:
        assert scorer.calls == trace.proxy_calls


def test_discarded_evaluation_is_not_charged_or_best():
    class Fixed:
        """Every arch costs 300 s; the 4th evaluated arch is the best by far."""

        def __init__(self):
            self.n = 0

        def evaluate(self, arch):
            self.n += 1
            return (99.0 if self.n == 4 else float(self.n)), 300.0

    space = TinySpace(3, 3)
    trace = create_strategy("rs").run(space, Fixed(), Budget(max_seconds=1000.0), seed=0)
    assert trace.evaluations == 3 and trace.spent_seconds == 900.0
    assert trace.discarded is not None and trace.discarded["reward"] == 99.0
    assert trace.best_reward == 3.0
    # landing exactly on the budget keeps the evaluation and stops
    trace = create_strategy("rs").run(space, Fixed(), Budget(max_seconds=900.0), seed=0)
    assert trace.evaluations == 3 and trace.spent_seconds == 900.0 and trace.discarded is None


def test_charged_scoring_can_exhaust_budget_before_evaluating(small):
    # g-rs pools cost 10 x 0.5 s = 5 s of scoring; a 1-second budget is gone after the first pool
    scorer = CountingScorer(small)
    small.calls = 0
    trace = run("g-rs", small, Budget(max_seconds=1.0, charge_scoring=True), seed=0, scorer=scorer)
    assert trace.evaluations == 0 and small.calls == 0 and trace.best_arch is None
    assert scorer.calls == trace.proxy_calls == 10 and trace.spent_seconds == 5.0


@pytest.mark.parametrize(
    ("name", "kwargs", "unscored"),
    [
        ("g-rs", {"pool_size": 7}, 0),
        ("g-rea", {"pool_size": 7}, 10),  # authors: the initial population is plain random
        ("g-rea", {"pool_size": 7, "assisted_init": True}, 0),
        ("g-reinforce", {"pool_size": 7}, 0),
        ("g-reinforce", {"pool_size": 7, "credit": "sampled"}, 0),
    ],
)
def test_assisted_scores_pool_size_per_evaluation(name, kwargs, unscored, small):
    scorer = CountingScorer(small)
    trace = run(name, small, Budget(max_evaluations=30), seed=1, scorer=scorer, **kwargs)
    assert trace.evaluations == 30
    assert scorer.calls == trace.proxy_calls == 7 * (30 - unscored)
    scored = [h["scored"] for h in trace.history]
    assert scored == [7 * max(0, i + 1 - unscored) for i in range(30)]
    assert all((h["score"] is None) == (i < unscored) for i, h in enumerate(trace.history))


@pytest.mark.parametrize("name", PLAIN)
def test_plain_strategies_ignore_a_scorer(name, small):
    scorer = CountingScorer(small)
    trace = run(name, small, Budget(max_evaluations=10), seed=0, scorer=scorer)
    assert scorer.calls == trace.proxy_calls == 0


# --------------------------------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", ALL)
def test_deterministic_by_seed(name, small):
    budget = Budget(max_evaluations=25)
    a, b = run(name, small, budget, seed=11), run(name, small, budget, seed=11)
    assert a.history == b.history
    c = run(name, small, budget, seed=12)
    assert [h["arch"] for h in c.history] != [h["arch"] for h in a.history]


def test_global_rngs_untouched(small):
    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone())
    for name in ALL:
        run(name, small, Budget(max_evaluations=15), seed=2)
    assert random.getstate() == states[0]
    assert (np.random.get_state()[1] == states[1]).all()
    assert torch.equal(torch.get_rng_state(), states[2])


# ------------------------------------------------------------------------------------------------ search quality


def test_hyperband_brackets():
    # Li et al. 2018, Table 1 (R = 81, eta = 3: five levels)
    assert hyperband_brackets(5, 3) == [[81, 27, 9, 3, 1], [34, 11, 3, 1], [15, 5, 1], [8, 2], [5]]
    assert hyperband_brackets(2, 16) == [[16, 1], [2]]  # NB-201's 12 and 200 epochs, the default eta
    assert hyperband_brackets(2, 3) == [[3, 1], [2]]
    assert hyperband_brackets(1, 3) == [[1]]
    with pytest.raises(ValueError, match="levels"):
        hyperband_brackets(0, 3)


@pytest.mark.parametrize("name", ALL)
def test_finds_the_optimum_within_a_generous_budget(name, small):
    # 27 archs, ~120 s each: 15000 s is ~115 evaluations. bohb: its 200-epoch evaluations cost 200/12 as much, so
    # the budget is 40 evaluations (two Hyperband iterations of 19 and a bit); g-bohb scores pools of 4 (TPE asks
    # are slow). Measured: every strategy found it in 10/10 runs
    kwargs = {"pool_size": 4} if name == "g-bohb" else {}
    budget = Budget(max_evaluations=40) if name.endswith("bohb") else Budget(max_seconds=15000.0)
    seeds = range(10)
    hits = sum(run(name, small, budget, seed=s, **kwargs).best_arch == small.optimum for s in seeds)
    assert hits >= 9, f"{name}: optimum found in {hits}/10 runs"


@pytest.mark.parametrize("name", ("rs", "rea", "reinforce"))
def test_assisted_reaches_the_optimum_with_fewer_evaluations(name, medium):
    """Mean evaluations until the optimum is first evaluated (censored at cap + 1), 256-arch space.

    Measured (40 seeds): rs 117.2 vs g-rs 24.5, rea 65.1 vs 19.0, reinforce 105.9 vs 60.5.
    """
    cap = 150
    budget = Budget(max_evaluations=cap)
    seeds = range(40)
    plain = [evals_to_optimum(run(name, medium, budget, seed=s), medium.optimum, cap) for s in seeds]
    good = [evals_to_optimum(run(f"g-{name}", medium, budget, seed=s), medium.optimum, cap) for s in seeds]
    mean_plain, mean_good = sum(plain) / len(plain), sum(good) / len(good)
    assert mean_good < 0.6 * mean_plain, f"{name}: g-{name} {mean_good:.1f} vs {mean_plain:.1f} evaluations"


def test_assisted_bohb_returns_better_archs(medium):
    """Rank (0 = the optimum) of the returned arch after one Hyperband iteration (19 evaluations), 256 archs.

    BOHB returns its best 200-epoch result, so "first evaluation of the optimum" (the test above) does not measure
    it. Measured (10 seeds, pools of 5): bohb 12.4 vs g-bohb 2.1.
    """
    ranked = sorted(medium.rewards, key=medium.rewards.get, reverse=True)
    position = {a: i for i, a in enumerate(ranked)}
    budget = Budget(max_evaluations=19)
    plain = [position[run("bohb", medium, budget, seed=s).best_arch] for s in range(10)]
    good = [position[run("g-bohb", medium, budget, seed=s, pool_size=5).best_arch] for s in range(10)]
    assert sum(good) < 0.5 * sum(plain), f"g-bohb {good} vs bohb {plain}"


# ---------------------------------------------------------------------------------------------------------- bohb


def brackets_of(history: list[dict], fidelities: Sequence[float], eta: int) -> list[list[list[dict]]]:
    """Split a BOHB history into its brackets (lists of rungs, each a list of history entries) by the shapes of
    ``hyperband_brackets``; the last bracket may be cut short by the budget."""
    shapes = hyperband_brackets(len(fidelities), eta)
    out, k, b = [], 0, 0
    while k < len(history):
        rungs = []
        for size in shapes[b % len(shapes)]:
            rungs.append(history[k : k + size])
            k += size
            if k >= len(history):
                break
        out.append(rungs)
        b += 1
    return out


@pytest.mark.parametrize(("name", "eta"), [("bohb", 16), ("bohb", 3), ("g-bohb", 3)])
def test_bohb_runs_hyperband_brackets_and_promotes_the_top_1_over_eta(name, eta):
    # the 200-epoch reward disagrees with the 12-epoch one, so what is promoted and what is returned differ
    table = Table(TinySpace(4, 4), high_noise=8.0)
    budget = Budget(max_seconds=30000.0)
    trace = run(name, table, budget, seed=4, eta=eta, **({"pool_size": 3} if name == "g-bohb" else {}))
    shapes = hyperband_brackets(2, eta)
    assert shapes == ([[16, 1], [2]] if eta == 16 else [[3, 1], [2]])
    brackets = brackets_of(trace.history, table.fidelities, eta)
    assert len(brackets) >= 3
    for b, rungs in enumerate(brackets):
        shape = shapes[b % len(shapes)]
        first = 2 - len(shape)
        for i, rung in enumerate(rungs):
            assert {h["fidelity"] for h in rung} == {table.fidelities[first + i]}
            assert len(rung) == shape[i] or (b == len(brackets) - 1 and i == len(rungs) - 1)
        if len(rungs) == 2:  # promoted: the best 12-epoch reward of the bracket (first on ties), retrained for 200
            low, high = rungs
            best = max(low, key=lambda h: h["reward"])
            assert [h["arch"] for h in high] == [best["arch"]][: len(high)]
            for h in high:
                assert h["cost"] == pytest.approx(table.cost(h["arch"]) * 200 / 12)
                assert h["reward"] == table.high[h["arch"]] and h["score"] is None  # promotions are not scored
            assert all(h["cost"] == table.cost(h["arch"]) for h in low)
    assert sum(h["fidelity"] == 200 for h in trace.history) >= 3
    # the incumbent: the best 200-epoch reward (not the best 12-epoch one)
    high = [h for h in trace.history if h["fidelity"] == 200]
    best = max(high, key=lambda h: h["reward"])
    assert (trace.best_arch, trace.best_reward, trace.best_fidelity) == (best["arch"], best["reward"], 200)
    assert trace.spent_seconds <= budget.max_seconds
    assert trace.spent_seconds == pytest.approx(sum(h["cost"] for h in trace.history))
    if trace.discarded is not None:
        assert trace.spent_seconds + trace.discarded["cost"] > budget.max_seconds
    if name == "g-bohb":  # one pool per new configuration (the discarded one's too, if new), none for a promotion
        pools = sum(h["score"] is not None for h in trace.history)
        assert trace.proxy_calls - 3 * pools in ((0, 3) if trace.discarded is not None else (0,))
        assert sum(h["score"] is None for h in trace.history) == sum(len(r) == 2 for r in brackets)


def test_bohb_three_fidelities_successive_halving():
    class Ladder:
        """Three fidelities (1, 3, 9 'epochs'): reward = epochs * (1 + ops sum), cost = epochs."""

        fidelities = (1, 3, 9)

        def __init__(self, space):
            self.space = space

        def evaluate(self, arch):
            return self.evaluate_at(arch, 1)

        def evaluate_at(self, arch, fidelity):
            return fidelity * (1.0 + sum(self.space.encode(arch))) + random.Random(arch).random(), float(fidelity)

    space = TinySpace(4, 4)
    trace = create_strategy("bohb", eta=3).run(space, Ladder(space), Budget(max_seconds=300.0), seed=0)
    # one Hyperband iteration: brackets [9, 3, 1], [5, 1], [3] starting at fidelities 1, 3 and 9
    fids = [h["fidelity"] for h in trace.history]
    assert fids[:22] == [1] * 9 + [3] * 3 + [9] + [3] * 5 + [9] + [9] * 3
    for lo, hi, keep in (
        (slice(0, 9), slice(9, 12), 3),
        (slice(9, 12), slice(12, 13), 1),
        (slice(13, 18), slice(18, 19), 1),
    ):
        ranked = sorted(trace.history[lo], key=lambda h: -h["reward"])[:keep]
        assert sorted(h["arch"] for h in trace.history[hi]) == sorted(h["arch"] for h in ranked)


def test_bohb_needs_a_multi_fidelity_evaluator(small):
    with pytest.raises(TypeError, match="needs a MultiFidelityEvaluator"):
        create_strategy("bohb").run(small.space, SingleFidelity(small), Budget(max_evaluations=5), seed=0)


def test_bohb_max_evaluations_counts_every_fidelity(small):
    trace = run("bohb", small, Budget(max_evaluations=19), seed=0)  # one full Hyperband iteration: 16 + 1 + 2
    assert [h["fidelity"] for h in trace.history] == [12] * 16 + [200] * 3
    assert small.calls >= 19 and trace.evaluations == 19


def test_misleading_scorer_hurts(medium):
    cap, seeds = 150, range(30)
    budget = Budget(max_evaluations=cap)
    good = [evals_to_optimum(run("g-rs", medium, budget, seed=s), medium.optimum, cap) for s in seeds]
    bad = [
        evals_to_optimum(
            run("g-rs", medium, budget, seed=s, scorer=CountingScorer(medium, sign=-1.0)), medium.optimum, cap
        )
        for s in seeds
    ]
    assert sum(bad) / len(bad) > 3 * sum(good) / len(good)
    # picking the worst of 10 random archs never picks the optimum unless all 10 are the optimum
    assert all(b == cap + 1 for b in bad)


def test_trace_write(tmp_path, small):
    trace = run("g-rea", small, Budget(max_evaluations=12), seed=0)
    path = trace.write(tmp_path / "sub" / "trace.json")
    import json

    doc = json.loads(path.read_text())
    assert doc["strategy"] == "g-rea" and doc["evaluations"] == 12
    assert doc["settings"] == {"population_size": 10, "sample_size": 3, "pool_size": 10, "assisted_init": False}
    assert SearchTrace.from_dict(doc) == trace


def test_numpy_reinforce_update_matches_torch_adam():
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    theta0 = rng.standard_normal((3, 4))
    theta_t = torch.tensor(theta0, requires_grad=True)
    opt = torch.optim.Adam([theta_t], lr=0.01)
    adam, theta = st._Adam(theta0.shape, 0.01), theta0.copy()
    for step in range(5):
        actions = rng.integers(0, 4, size=3)
        adv = float(rng.standard_normal())
        loss = -adv * torch.log_softmax(theta_t, dim=-1)[torch.arange(3), torch.as_tensor(actions)].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        grad = st._softmax(theta)
        grad[np.arange(3), actions] -= 1.0
        theta = adam.step(theta, adv * grad)
        assert np.allclose(theta, theta_t.detach().numpy(), atol=1e-10), step
