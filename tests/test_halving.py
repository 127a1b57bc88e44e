"""Successive halving: the plan fits its budget, the algorithm keeps the best by the signal, and the face trains
real candidates in rungs that continue from their checkpoints, resumable and deterministic."""

from __future__ import annotations

import json
import math
import random

import lightning.pytorch as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradsign_pl.data.datamodules import DigitsDataModule
from gradsign_pl.fidelity import Curve, list_signals
from gradsign_pl.halving import halving, plan_rungs, successive_halving
from gradsign_pl.modules import ClassificationModule
from gradsign_pl.training import TrainingRecipe


@given(
    n=st.integers(2, 60),
    full=st.integers(50, 5000),
    eta=st.sampled_from([2, 3, 4]),
    budget=st.floats(0.01, 0.5),
    final=st.integers(1, 3),
)
@settings(max_examples=80, deadline=None)
def test_the_plan_stays_within_its_budget_and_halves_to_final(n, full, eta, budget, final):
    needed, m = 0, n
    while m > final:
        needed, m = needed + m, max(final, math.ceil(m / eta))
    if budget * n * full < needed:
        with pytest.raises(ValueError, match="cannot train"):
            plan_rungs(n, full, eta=eta, budget=budget, final=final)
        return
    plan = plan_rungs(n, full, eta=eta, budget=budget, final=final)
    if n <= final:
        assert plan.steps == () and plan.final == n
        return
    assert plan.cost <= budget * n * full + 1e-9
    below = [r for r in plan.steps if r < full]
    assert below == sorted(set(below)) and list(plan.steps) == sorted(plan.steps) and plan.steps[-1] <= full
    assert plan.counts[0] == n and plan.final == final
    for a, b in zip(plan.counts, plan.counts[1:]):
        assert b == max(final, math.ceil(a / eta))


def test_plan_errors_name_the_problem():
    for kwargs, message in [
        ({"eta": 1}, "eta must be a number > 1"),
        ({"budget": 0}, r"in \(0, 1\]"),
        ({"budget": None}, "either as a fraction"),
        ({"budget_steps": 10}, "either as a fraction"),
        ({"final": 0}, "final must be a positive int"),
    ]:
        with pytest.raises(ValueError, match=message):
            plan_rungs(9, 100, **kwargs)
    with pytest.raises(ValueError, match="cannot train 9 candidates through 2 rungs: that takes at least 12"):
        plan_rungs(9, 100, budget=None, budget_steps=5)


def test_halving_keeps_the_best_by_the_signal_and_orders_everyone():
    names = [f"m{i}" for i in range(27)]
    quality = {n: random.Random(i).random() for i, n in enumerate(names)}
    plan = plan_rungs(27, 1000, eta=3, budget=0.1)
    asked: list[tuple[str, int]] = []

    def signal_at(name, steps):
        asked.append((name, steps))
        return quality[name] if name != "m5" else math.nan  # m5's training failed

    result = successive_halving(names, plan, signal_at)
    assert result.survivors == [max(quality, key=quality.get)]
    assert [s for _, s in asked] == [plan.steps[0]] * 27 + [plan.steps[1]] * 9 + [plan.steps[2]] * 3
    assert result.order[0] == result.survivors[0] and set(result.order) == set(names)
    assert result.order[-1] == "m5"  # a failed candidate ranks last
    assert result.spent_steps == plan.cost
    eliminated = result.eliminated_at()
    assert sum(v == 1 for v in eliminated.values()) == 18 and eliminated[result.survivors[0]] is None


def test_ties_keep_the_rung0_order():
    plan = plan_rungs(4, 100, eta=2, budget=0.5)
    result = successive_halving(["a", "b", "c", "d"], plan, lambda n, s: 1.0)
    assert result.survivors == ["a"] and result.order == ["a", "b", "c", "d"]


def test_every_signal_orders_a_curve_that_learns_above_one_that_does_not():
    learns = Curve([2.3 - 0.01 * i for i in range(100)], [{"step": 100, "val_loss": 1.2, "val_acc": 0.6}])
    stuck = Curve([2.3] * 100, [{"step": 100, "val_loss": 2.3, "val_acc": 0.1}])
    diverged = Curve([2.3] * 50 + [math.nan] * 50, [{"step": 100, "val_loss": math.nan, "val_acc": 0.1}])
    from gradsign_pl.fidelity import get_signal

    for name in list_signals():
        fn = get_signal(name)
        assert fn(learns) > fn(stuck) >= fn(diverged), name
        assert fn(learns.cut(100)) == fn(learns)


def _recipe(tmp_path, max_epochs=2):
    dm = DigitsDataModule(batch_size=64, image_size=8)

    def trainer(*, default_root_dir, callbacks, log_name, **overrides):
        return pl.Trainer(
            **{
                "max_epochs": max_epochs,
                "accelerator": "cpu",
                "logger": False,
                "enable_progress_bar": False,
                "enable_model_summary": False,
                "limit_val_batches": 2,
                "limit_test_batches": 2,
                "default_root_dir": default_root_dir,
                "callbacks": callbacks,
                **overrides,
            }
        )

    return TrainingRecipe(
        module=lambda net: ClassificationModule(net, 10, lr=0.01, warmup_fraction=0.1),
        trainer=trainer,
        datamodule=dm,
        seed=0,
        settings={"test": max_epochs},
        checkpoint_every=5,
    )


#: the arguments every halving() call in these tests shares: rank by params, no progress bar, no log lines
QUIET = {"proxies": ("params",), "progress": False, "log": lambda s: None}

CANDIDATES = {f"tiny{w}": {"class_path": "tests.models.TinyCNN", "init_args": {"width": w}} for w in (2, 4, 8, 16)}


def test_rungs_continue_from_their_checkpoints_and_a_rerun_reuses_every_rung(tmp_path):
    recipe = _recipe(tmp_path)
    result = halving(
        CANDIDATES,
        recipe,
        tmp_path / "run",
        eta=2,
        budget=0.3,
        final=1,
        signal="sotl",
        **QUIET,
    )
    plan = result.plan
    assert plan.counts == (4, 2) and len(result.survivors) == 1
    assert result.trained[0]["status"] == "trained" and result.trained[0]["steps"] == plan.full_steps
    # the survivor's full training continued from its last rung instead of starting again
    assert result.trained[0]["resumed_from_step"] == plan.steps[-1]
    rows = [json.loads(x) for x in (tmp_path / "run" / "rungs.jsonl").read_text().splitlines()]
    assert len(rows) == 4 + 2 and all(r["status"] == "stopped" for r in rows)
    # the rung-2 candidates' signal is the SoTL of their whole curve so far: they were not restarted
    again = halving(
        CANDIDATES,
        recipe,
        tmp_path / "run",
        eta=2,
        budget=0.3,
        final=1,
        signal="sotl",
        **QUIET,
        train_survivors=False,
    )
    assert again.survivors == result.survivors and again.order == result.order
    assert len((tmp_path / "run" / "rungs.jsonl").read_text().splitlines()) == 6  # nothing trained again


def test_the_same_configuration_gives_the_same_eliminations(tmp_path):
    a = halving(
        CANDIDATES,
        _recipe(tmp_path),
        tmp_path / "a",
        eta=2,
        budget=0.2,
        signal="last_loss",
        **QUIET,
        train_survivors=False,
    )
    b = halving(
        CANDIDATES,
        _recipe(tmp_path),
        tmp_path / "b",
        eta=2,
        budget=0.2,
        signal="last_loss",
        **QUIET,
        train_survivors=False,
    )
    assert a.order == b.order and [r.signal for r in a.rungs] == [r.signal for r in b.rungs]


def test_validation_signals_evaluate_at_each_rung_end(tmp_path):
    result = halving(
        CANDIDATES,
        _recipe(tmp_path),
        tmp_path / "run",
        eta=2,
        budget=0.2,
        signal="val_acc",
        **QUIET,
        train_survivors=False,
    )
    assert all(0.0 <= r.signal <= 1.0 for r in result.rungs)


def test_a_rung_that_stops_mid_epoch_off_the_checkpoint_grid_continues_as_one_uninterrupted_training(tmp_path):
    """Rungs end at steps 3 and 4, mid-epoch and before the first periodic save (every 5 steps; the quickstart's
    first rung ends at 6 of 60 with saves every 50): the continued run must still train every step of the schedule
    and end with the uninterrupted run's weights and curve."""
    import torch

    from gradsign_pl.candidates import candidate
    from gradsign_pl.training import train_candidate

    tiny = candidate(CANDIDATES["tiny4"], name="tiny4")
    whole = train_candidate(tiny, _recipe(tmp_path), tmp_path / "whole", test=False)
    for stop in (3, 4):
        rung = train_candidate(tiny, _recipe(tmp_path), tmp_path / "rungs", stop_at=stop, test=False)
        assert rung["status"] == "stopped" and rung["steps"] == stop
    rest = train_candidate(tiny, _recipe(tmp_path), tmp_path / "rungs", test=False)
    assert rest["resumed_from_step"] == 4
    assert rest["steps"] == whole["steps"] and rest["epochs"] == whole["epochs"]
    assert rest["curve"]["train_loss"] == whole["curve"]["train_loss"]
    a = torch.load(whole["last_checkpoint"], weights_only=True)["state_dict"]
    b = torch.load(rest["last_checkpoint"], weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
