"""ZenNAS-style evolutionary search on a toy mutable space with a pure fitness (fast, no proxy), plus proxy_fitness."""

from __future__ import annotations

import csv
import json
import math
import random

import pytest
import torch
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from torch import nn

from gradsign_pl.search import EvolutionSettings, MutableSpace, SearchResult, evolution_search, proxy_fitness
from gradsign_pl.search import evolution as evo

WIDTHS = (4, 8, 16, 32)
IN_CHANS = 3


class ToyConvSpace:
    """Structures ``"w1-w2-..."``: 3x3 convs (stride 1, padding 1, bias) of those widths, global pool, linear head.

    Sizes are analytic: params count every weight and bias; FLOPs are multiply-accumulates per image.
    """

    name = "toy"
    initial_structure = "8-8"
    max_depth = 8

    @staticmethod
    def widths(structure: str) -> list[int]:
        return [int(w) for w in structure.split("-")]

    def mutate(self, structure: str, rng: random.Random, num_replaces: int = 1) -> str:
        ws = self.widths(structure)
        for _ in range(num_replaces):
            i = rng.randrange(len(ws))
            op = rng.random()
            if op < 0.2 and len(ws) < self.max_depth:
                ws.insert(i, rng.choice(WIDTHS))
            elif op < 0.35 and len(ws) > 1:
                ws.pop(i)
            else:
                ws[i] = rng.choice(WIDTHS)
        return "-".join(map(str, ws))

    def params(self, structure: str, num_classes: int) -> int:
        total, c = 0, IN_CHANS
        for w in self.widths(structure):
            total += c * w * 9 + w
            c = w
        return total + c * num_classes + num_classes

    def flops(self, structure: str, resolution: int, num_classes: int) -> int:
        total, c = 0, IN_CHANS
        for w in self.widths(structure):
            total += resolution * resolution * c * w * 9
            c = w
        return total + c * num_classes

    def layers(self, structure: str) -> int:
        return len(self.widths(structure)) + 1

    def build(self, structure: str, num_classes: int, in_chans: int = 3) -> nn.Module:
        mods: list[nn.Module] = []
        c = in_chans
        for w in self.widths(structure):
            mods += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU()]
            c = w
        return nn.Sequential(*mods, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))


def toy_fitness(structure: str) -> float:
    """Pure and deterministic: grows with width and depth (so budgets bind)."""
    ws = ToyConvSpace.widths(structure)
    return sum(math.log2(w) for w in ws) + 0.1 * len(ws)


def run(s: EvolutionSettings, fitness=toy_fitness, space=None, **kw) -> SearchResult:
    return evolution_search(space or ToyConvSpace(), fitness, s, progress=False, **kw)


def test_toy_space_satisfies_the_protocol():
    assert isinstance(ToyConvSpace(), MutableSpace)
    space = ToyConvSpace()
    net = space.build("8-16", 10)
    assert sum(p.numel() for p in net.parameters()) == space.params("8-16", 10)


def test_search_improves_and_best_is_monotone():
    res = run(EvolutionSettings(iterations=300, population_size=16, seed=1))
    assert res.population[0][1] >= toy_fitness(ToyConvSpace.initial_structure)
    assert res.population[0][1] > toy_fitness(ToyConvSpace.initial_structure) + 5  # it really climbs
    bests = [h["best_score"] for h in res.history if h["best_score"] is not None]
    assert bests == sorted(bests)
    assert bests[-1] == res.population[0][1] == res.best[1]
    assert [s for s, _ in res.population[:3]] == [s for s, _ in res.top(3)]
    assert [v for _, v in res.population] == sorted((v for _, v in res.population), reverse=True)
    assert all(v == toy_fitness(s) for s, v in res.population)
    assert res.evaluated + sum(res.rejected.values()) == len(res.history) == 300
    assert [h["iteration"] for h in res.history] == list(range(300))


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    iterations=st.integers(1, 60),
    population_size=st.integers(1, 14),
    params_factor=st.none() | st.floats(1.0, 30.0),
    flops_factor=st.none() | st.floats(1.0, 30.0),
    max_layers=st.none() | st.integers(3, 8),
)
def test_budgets_and_population_size_are_respected(
    seed, iterations, population_size, params_factor, flops_factor, max_layers
):
    space = ToyConvSpace()
    init = space.initial_structure
    s = EvolutionSettings(
        iterations=iterations,
        population_size=population_size,
        seed=seed,
        resolution=8,
        max_layers=max_layers,
        max_params=None if params_factor is None else space.params(init, 10) * params_factor,
        max_flops=None if flops_factor is None else space.flops(init, 8, 10) * flops_factor,
    )
    res = run(s)
    for structure, _ in res.population:
        if s.max_params is not None:
            assert space.params(structure, 10) <= s.max_params
        if s.max_flops is not None:
            assert space.flops(structure, 8, 10) <= s.max_flops
        if s.max_layers is not None:
            assert space.layers(structure) <= s.max_layers
    assert all(h["population_size"] <= population_size for h in res.history)
    assert len(res.population) <= population_size
    assert res.evaluated + sum(res.rejected.values()) == iterations
    statuses = [h["status"] for h in res.history]
    for reason in evo.REJECTION_REASONS:
        assert statuses.count(reason) == res.rejected[reason]
    if s.max_params is None:
        assert res.rejected["params"] == 0


@pytest.mark.parametrize("population_size", [1, 5, 12])
def test_population_holds_the_best_seen_members(population_size):
    s = EvolutionSettings(iterations=200, population_size=population_size, seed=3, max_layers=6)
    res = run(s)
    # brute replay: append every scored candidate, drop the (first) minimum while over size
    replay: list[float] = []
    for h in res.history:
        if h["status"] == "ok":
            replay.append(h["candidate_score"])
            while len(replay) > population_size:
                replay.pop(replay.index(min(replay)))
        assert h["population_size"] == len(replay)
    assert sorted(replay, reverse=True) == [v for _, v in res.population]
    seen = sorted((h["candidate_score"] for h in res.history if h["status"] == "ok"), reverse=True)
    assert [v for _, v in res.population] == seen[:population_size]


def test_parents_follow_zennas_phases():
    calls: list[tuple[str, int]] = []

    class Recording(ToyConvSpace):
        def mutate(self, structure, rng, num_replaces=1):
            calls.append((structure, num_replaces))
            return super().mutate(structure, rng, num_replaces)

    res = run(EvolutionSettings(iterations=40, population_size=20, seed=0), space=Recording())
    sizes_before = [0] + [h["population_size"] for h in res.history[:-1]]
    for (parent, k), size in zip(calls, sizes_before):
        if size <= evo.SEED_POPULATION:
            assert (parent, k) == ("8-8", 1)
        else:
            assert k == 2
    assert any(k == 2 for _, k in calls)


def test_same_seed_same_result_and_seeds_differ():
    s = EvolutionSettings(iterations=120, population_size=12, seed=7, max_params=20_000)
    a, b = run(s), run(s)
    assert a.population == b.population and a.history == b.history and a.rejected == b.rejected
    c = run(EvolutionSettings(iterations=120, population_size=12, seed=8, max_params=20_000))
    assert c.history != a.history


class Interrupt:
    """Fitness that raises KeyboardInterrupt at its ``at``-th call (1-based)."""

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0

    def __call__(self, structure: str) -> float:
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return toy_fitness(structure)


@pytest.mark.parametrize("interrupt_at", [1, 7, 30, 75])
def test_resume_after_interruption_equals_uninterrupted(tmp_path, interrupt_at):
    s = EvolutionSettings(iterations=120, population_size=14, seed=11, max_params=15_000, max_layers=6)
    reference = run(s)
    ckpt = tmp_path / "search.ckpt.json"
    with pytest.raises(KeyboardInterrupt):
        run(s, fitness=Interrupt(interrupt_at), checkpoint=ckpt)
    if interrupt_at > 1:
        assert ckpt.exists()
        assert json.loads(ckpt.read_text())["next_iteration"] < 120
    resumed = run(s, checkpoint=ckpt)
    assert resumed.population == reference.population
    assert resumed.history == reference.history
    assert resumed.rejected == reference.rejected and resumed.evaluated == reference.evaluated


def test_resume_twice_and_finished_checkpoint_is_not_rerun(tmp_path):
    s = EvolutionSettings(iterations=100, population_size=12, seed=5)
    reference = run(s)
    ckpt = tmp_path / "c.json"
    for at in (10, 20):
        with pytest.raises(KeyboardInterrupt):
            run(s, fitness=Interrupt(at), checkpoint=ckpt)
    resumed = run(s, checkpoint=ckpt)
    assert (resumed.population, resumed.history) == (reference.population, reference.history)

    def never(structure):
        raise AssertionError("a finished search must not be scored again")

    again = run(s, fitness=never, checkpoint=ckpt)
    assert (again.population, again.history) == (reference.population, reference.history)
    assert not list(tmp_path.glob("*.tmp"))


def test_checkpoint_settings_mismatch_is_a_clear_error(tmp_path):
    ckpt = tmp_path / "c.json"
    run(EvolutionSettings(iterations=10, population_size=4, seed=1), checkpoint=ckpt)
    with pytest.raises(ValueError, match=r"different settings: .*population_size.*seed.*new checkpoint path"):
        run(EvolutionSettings(iterations=10, population_size=5, seed=2), checkpoint=ckpt)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("iterations", 0),
        ("population_size", 0),
        ("resolution", 0),
        ("num_classes", 0),
        ("max_params", 0),
        ("max_flops", -1.0),
        ("max_layers", 0),
        ("iterations", 2.5),
        ("init_structure", ""),
    ],
)
def test_bad_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"EvolutionSettings.{field}"):
        run(EvolutionSettings(**{field: value}))


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_params", 100), ("max_flops", 1000), ("max_layers", 2)],
)
def test_initial_structure_over_budget(field, value):
    with pytest.raises(ValueError, match=f"initial structure already exceeds {field}.*smaller init_structure"):
        run(EvolutionSettings(iterations=5, **{field: value}))
    # a smaller initial structure fits the same budget
    if field == "max_layers":
        run(EvolutionSettings(iterations=5, max_layers=2, init_structure="4"))


def test_failing_candidates_are_counted_and_skipped():
    def picky(structure):
        if "32" in structure:
            raise ValueError("no 32s")
        if "4" in structure.split("-"):
            return float("nan")
        return toy_fitness(structure)

    res = run(EvolutionSettings(iterations=150, population_size=10, seed=2), fitness=picky)
    assert res.rejected["nan"] > 0 and res.evaluated > 0
    assert all("32" not in s and "4" not in s.split("-") for s, _ in res.population)
    assert "no 32s" in res.last_error or "nan" in res.last_error

    class Flaky(ToyConvSpace):
        def mutate(self, structure, rng, num_replaces=1):
            if rng.random() < 0.3:
                raise RuntimeError("bad block")
            return super().mutate(structure, rng, num_replaces)

    res = run(EvolutionSettings(iterations=100, population_size=10, seed=2), space=Flaky())
    assert res.rejected["invalid"] > 0 and res.evaluated > 0


def test_all_failing_raises_with_the_last_error():
    calls = []

    def broken(structure):
        calls.append(structure)
        raise KeyError("typo_in_proxy_name")

    with pytest.raises(RuntimeError, match=r"first 20 candidates all failed.*typo_in_proxy_name"):
        run(EvolutionSettings(iterations=1000), fitness=broken)
    assert len(calls) == evo.MAX_INITIAL_FAILURES


def test_write_outputs(tmp_path):
    res = run(EvolutionSettings(iterations=50, population_size=8, seed=4, resolution=16))
    paths = res.write(tmp_path / "out", k=3, extra={"proxy": "toy"})
    assert all(p.exists() for p in paths.values())
    assert paths["best_structure"].read_text().strip() == res.population[0][0]
    lines = paths["top_structures"].read_text().splitlines()
    assert len(lines) == 3 and lines[0].split("\t") == [repr(res.population[0][1]), res.population[0][0]]
    with paths["history_csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 50 and set(rows[0]) == {"iteration", "best_score", "candidate_score", "status"}
    doc = json.loads(paths["search_json"].read_text())
    space = ToyConvSpace()
    top = doc["top"][0]
    assert top["structure"] == res.population[0][0]
    assert top["params"] == space.params(top["structure"], 10) and top["flops"] == space.flops(top["structure"], 16, 10)
    assert doc["settings"]["iterations"] == 50 and doc["extra"] == {"proxy": "toy"} and doc["space"] == "toy"
    assert paths["plot"].read_bytes()[:4] == b"\x89PNG"


def test_write_refuses_an_empty_population(tmp_path):
    res = run(EvolutionSettings(iterations=20))
    empty = SearchResult(population=[], history=res.history[:0], evaluated=0, rejected=dict(res.rejected))
    with pytest.raises(ValueError, match="no candidate was scored"):
        empty.write(tmp_path)


def test_progress_and_callback(capsys):
    seen = []
    run(EvolutionSettings(iterations=15, population_size=4), on_iteration=lambda i, b: seen.append((i, b)))
    assert capsys.readouterr().out == ""
    assert [i for i, _ in seen] == list(range(15))
    evolution_search(ToyConvSpace(), toy_fitness, EvolutionSettings(iterations=5), progress=True)


def test_proxy_fitness_gradsign_is_finite_repeatable_and_isolated():
    space = ToyConvSpace()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 8, 8, generator=gen)
    y = torch.randint(0, 10, (8,), generator=gen)
    fitness = proxy_fitness("gradsign", x, y, space, num_classes=10, in_chans=3, device="cpu", init_seed=3)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = fitness("8-16")
    assert torch.equal(torch.get_rng_state(), before)
    b = fitness("8-16")
    assert math.isfinite(a) and a == b and a > 0
    assert fitness("4") != a
    with pytest.raises(KeyError, match="unknown proxy"):
        proxy_fitness("gradsing", x, y, space, num_classes=10, in_chans=3)
    res = evolution_search(
        space, fitness, EvolutionSettings(iterations=4, population_size=2, resolution=8), progress=False
    )
    assert res.evaluated == 4 and len(res.population) == 2


@hsettings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    max_params=st.integers(120_000, 400_000),
    max_flops=st.integers(10_000_000, 60_000_000),
    max_layers=st.integers(8, 20),
)
def test_zen_space_search_mutates_members_with_two_replacements_within_budgets(seed, max_params, max_flops, max_layers):
    from gradsign_pl.spaces.zen import ZenSpace

    space = ZenSpace()  # initial structure: 91k params, 6.9M FLOPs, 6 layers at 32 px
    settings = EvolutionSettings(
        iterations=80,
        population_size=12,
        max_params=max_params,
        max_flops=max_flops,
        max_layers=max_layers,
        resolution=32,
        num_classes=10,
        seed=seed,
    )
    result = evolution_search(space, lambda s: float(space.params(s, 10)), settings, progress=False)
    assert result.evaluated > 12  # past the seed phase: members were mutated (2 blocks replaced)
    for structure, score in result.population:
        space.validate(structure, in_chans=3, resolution=32)
        assert score == space.params(structure, 10) <= max_params
        assert space.flops(structure, 32, 10) <= max_flops and space.layers(structure) <= max_layers
    best = [h["best_score"] for h in result.history if h["best_score"] is not None]
    # the best never drops, and the search improves on the initial structure (its first best may already sit at
    # the budget, so it need not improve on that)
    assert best == sorted(best) and best[-1] > space.params(space.initial_structure, 10)
