"""Successive halving over candidate models: the zero-cost ranking is rung 0, a little real training decides.

The algorithm (Jamieson & Talwalkar, 2016), with a zero-cost first rung:

* **Rung 0** is :func:`gradsign_pl.rank`: every candidate is built and scored at initialisation under the validated
  policy; failures and over-budget candidates drop out here, and ``keep_after_rung0`` (optional) keeps only the
  best of that order.
* **Rungs 1..R** train the survivors with the recipe's own module, optimiser, schedule and trainer, each to a
  growing number of optimiser steps ``r_1 < r_2 < ... < r_R`` (``r_k = r_1 * eta**(k-1)``); a candidate continues
  from its rung checkpoint, never restarts. After each rung the candidates are ordered by a low-fidelity signal
  (:mod:`gradsign_pl.fidelity`: ``sotl``, ``sotl_ema``, ``last_loss``, ``val_loss``, ``val_acc``) -- ties broken by
  the rung-0 order -- and the top ``ceil(n / eta)`` go on, until ``final`` remain.
* The ``final`` survivors then train the full schedule, continuing from their last rung.

The plan is fixed before any training by :func:`plan_rungs` from the budget: a fraction of the compute of training
every (rung-1) candidate for the full schedule, or a number of steps; ``r_1`` is the largest that keeps the rungs
within it. Everything is deterministic given the recipe: the same configuration gives the same eliminations.

:func:`successive_halving` is the algorithm itself, over any ``signal_at(name, steps) -> float``; :func:`halving`
is the face that trains real candidates with a :class:`~gradsign_pl.training.TrainingRecipe` (resumable: every
finished rung is written to ``<out>/rungs.jsonl`` at once and reused when the run is started again with the same
settings; a rung killed part-way continues from the candidate's ``last.ckpt``). The benchmark
``benchmarks/halving_cifar10.py`` runs the same :func:`successive_halving` on recorded training curves.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gradsign_pl.candidates import Candidate, candidate
from gradsign_pl.executors import Executor, create_executor
from gradsign_pl.fidelity import NEEDS_EVAL, Curve, FidelityRecorder, get_signal
from gradsign_pl.scoring.cache import append_jsonl, iter_jsonl, settings_hash
from gradsign_pl.training import TrainingRecipe, run_identity, train_candidate
from gradsign_pl.triage import Ranking, rank

__all__ = ["HalvingResult", "RungPlan", "halving", "plan_rungs", "successive_halving"]


@dataclasses.dataclass(frozen=True)
class RungPlan:
    """The rungs of one successive-halving run, fixed before any training.

    Attributes:
        steps: cumulative optimiser steps each rung trains its candidates to (``r_1 < ... < r_R``; rungs that would
            pass the full schedule stop at it, and the later of them then only choose, at no extra cost).
        counts: candidates entering each rung (``n_1 = candidates``, ``n_{k+1} = ceil(n_k / eta)``).
        final: candidates left after the last rung (they go on to the full schedule).
        full_steps: the full schedule's steps per candidate (``S``).
        eta: the reduction factor.
    """

    steps: tuple[int, ...]
    counts: tuple[int, ...]
    final: int
    full_steps: int
    eta: float

    @property
    def cost(self) -> int:
        """Optimiser steps the rungs spend in all (each candidate's steps beyond its previous rung, summed)."""
        total, before = 0, 0
        for n, r in zip(self.counts, self.steps):
            total += n * (r - before)
            before = r
        return total

    def fraction(self) -> float:
        """:attr:`cost` as a fraction of training every rung-1 candidate for the full schedule."""
        return self.cost / (self.counts[0] * self.full_steps) if self.counts else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": list(self.steps),
            "counts": list(self.counts),
            "final": self.final,
            "full_steps": self.full_steps,
            "eta": self.eta,
            "cost_steps": self.cost,
            "cost_fraction": self.fraction(),
        }


def plan_rungs(
    candidates: int,
    full_steps: int,
    *,
    eta: float = 3,
    budget: float | None = 0.1,
    budget_steps: int | None = None,
    final: int = 1,
    snap: Sequence[int] | None = None,
) -> RungPlan:
    """The rungs for ``candidates`` within a budget (see the module docstring).

    Args:
        candidates: candidates entering rung 1. full_steps: steps of the full schedule per candidate.
        eta: keep the top ``1/eta`` after each rung (> 1).
        budget: the rungs' compute as a fraction of training every candidate fully (``budget_steps`` instead: in
            steps). final: how many go on to the full schedule.
        snap: allowed rung ends (e.g. the steps where a benchmark recorded validation): each ``r_k`` is moved to
            the nearest allowed step, and the cost is that of the snapped plan.

    Raises ``ValueError`` naming the bad value, or when the budget does not buy one step per candidate.
    """
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
        raise ValueError(f"need at least one candidate, got {candidates!r}")
    if not isinstance(full_steps, int) or full_steps < 1:
        raise ValueError(f"full_steps must be a positive int, got {full_steps!r}")
    if not (isinstance(eta, (int, float)) and eta > 1 and math.isfinite(eta)):
        raise ValueError(f"eta must be a number > 1 (keep the top 1/eta after each rung), got {eta!r}")
    if not isinstance(final, int) or final < 1:
        raise ValueError(f"final must be a positive int (candidates trained fully), got {final!r}")
    if (budget is None) == (budget_steps is None):
        raise ValueError(
            "give the budget either as a fraction of training every candidate fully (budget) or as "
            "steps (budget_steps), not both or neither"
        )
    if budget is not None and not 0 < budget <= 1:
        raise ValueError(f"budget is a fraction of training every candidate fully, in (0, 1], got {budget!r}")
    total = budget_steps if budget_steps is not None else budget * candidates * full_steps  # type: ignore[operator]
    counts: list[int] = []
    n = candidates
    while n > final:
        counts.append(n)
        n = max(final, math.ceil(n / eta))
    if not counts:  # no more candidates than final: nothing to decide, no rungs
        return RungPlan((), (), candidates, full_steps, float(eta))
    if total < sum(counts):
        raise ValueError(
            f"a budget of {total:.0f} steps cannot train {candidates} candidates through {len(counts)} "
            f"rungs: that takes at least {sum(counts)} (one more step per candidate per rung); raise "
            "the budget, or prune more at rung 0"
        )
    # cost(r1) = sum_k n_k (r_k - r_{k-1}) with r_k = r1 * eta**k: linear in r1
    unit = sum(c * (eta**k - (eta ** (k - 1) if k else 0)) for k, c in enumerate(counts))
    allowed = sorted({int(s) for s in snap if 1 <= s <= full_steps}) if snap else None

    def nearest(choices: list[int], r: int) -> int:
        return min(choices, key=lambda s: (abs(s - r), s))

    def steps_for(first: float) -> tuple[int, ...]:
        raw = [min(full_steps, max(1, round(first * eta**k))) for k in range(len(counts))]
        if allowed:
            raw = [nearest(allowed, r) for r in raw]
        out: list[int] = []
        for r in raw:  # strictly increasing below the full schedule: a rung trains at least one step more
            if out and r <= out[-1]:  # the next allowed step (or one more step) after the previous rung
                later = [s for s in allowed if s > out[-1]] if allowed else []
                r = later[0] if later else out[-1] + 1
            out.append(min(full_steps, r))  # rungs capped at full: a pick at the end
        return tuple(out)

    first = total / unit
    plan = RungPlan(steps_for(first), tuple(counts), n, full_steps, float(eta))
    while plan.cost > total and first > 1e-3:  # rounding or snapping overshot: shrink r1 until it fits
        first *= 0.97
        plan = dataclasses.replace(plan, steps=steps_for(first))
    return plan


@dataclasses.dataclass
class RungRecord:
    """One candidate at the end of one rung."""

    name: str
    rung: int
    steps: int
    signal: float
    kept: bool


@dataclasses.dataclass
class HalvingResult:
    """What successive halving did.

    Attributes:
        plan: the rungs. order0: the candidates in rung-0 order (the zero-cost ranking's).
        rungs: every (candidate, rung) record. survivors: the ``final`` candidates, best first.
        order: every candidate, best first: survivors, then the others by the last rung they reached (later rungs
            first), within a rung by their signal there; candidates that never entered rung 1 last, in rung-0 order.
        ranking: the rung-0 :class:`~gradsign_pl.triage.Ranking` (``None`` for the functional core).
        trained: the survivors' full trainings (``train_candidate`` records; empty for the functional core).
        spent_steps: optimiser steps trained in the rungs; full_steps_all: steps of training every rung-1
            candidate fully.
    """

    plan: RungPlan
    order0: list[str]
    rungs: list[RungRecord]
    survivors: list[str]
    order: list[str]
    ranking: Ranking | None = None
    trained: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    spent_steps: int = 0
    full_steps_all: int = 0

    def signal_table(self) -> dict[str, dict[int, float]]:
        """``{candidate: {steps: signal}}`` for every rung each candidate reached."""
        out: dict[str, dict[int, float]] = {}
        for r in self.rungs:
            out.setdefault(r.name, {})[r.steps] = r.signal
        return out

    def eliminated_at(self) -> dict[str, int | None]:
        """``{candidate: rung it was eliminated after}`` (``None`` for the survivors)."""
        out: dict[str, int | None] = {}
        for r in self.rungs:
            if not r.kept:
                out[r.name] = r.rung
        return {n: out.get(n) for n in self.order0}


def successive_halving(
    order0: Sequence[str],
    plan: RungPlan,
    signal_at: Callable[[str, int], float],
    prefetch: Callable[[list[str], int], None] | None = None,
) -> HalvingResult:
    """Run the plan's rungs over ``order0`` (best first), asking ``signal_at(name, steps)`` (higher = better).

    ``signal_at`` is called rung by rung, in rung-0 order within a rung, for the candidates still in; a ``nan``
    signal (a failed training) ranks below every number. Ties keep the rung-0 order. ``prefetch(names, steps)``,
    when given, is called at the start of each rung with the candidates in it, so their trainings can run at once.
    """
    alive = list(order0[: plan.counts[0]]) if plan.counts else []
    position = {n: i for i, n in enumerate(order0)}
    rungs: list[RungRecord] = []
    reached: dict[str, tuple[int, float]] = {}
    spent, before = 0, 0
    for k, steps in enumerate(plan.steps):
        if prefetch is not None:
            prefetch(list(alive), steps)
        values = {n: signal_at(n, steps) for n in alive}
        spent += len(alive) * (steps - before)
        before = steps
        ranked = sorted(alive, key=lambda n: (-_finite(values[n]), position[n]))
        keep = plan.counts[k + 1] if k + 1 < len(plan.counts) else plan.final
        kept = set(ranked[:keep])
        for n in alive:
            rungs.append(RungRecord(n, k + 1, steps, values[n], n in kept))
            reached[n] = (k + 1, values[n])
        alive = [n for n in ranked if n in kept]
    eliminated = sorted(
        (n for n in reached if n not in alive), key=lambda n: (-reached[n][0], -_finite(reached[n][1]), position[n])
    )
    never = [n for n in order0 if n not in reached and n not in alive]
    order = alive + eliminated + never
    return HalvingResult(
        plan,
        list(order0),
        rungs,
        alive,
        order,
        spent_steps=spent,
        full_steps_all=plan.counts[0] * plan.full_steps if plan.counts else 0,
    )


def _finite(x: float) -> float:
    return x if isinstance(x, (int, float)) and math.isfinite(x) else -math.inf


def full_steps_of(recipe: TrainingRecipe) -> int:
    """Optimiser steps of the recipe's full schedule per candidate (``max_steps``, else epochs x batches)."""
    trainer = recipe.trainer(default_root_dir=os.devnull, callbacks=[], log_name="plan")
    if trainer.max_steps is not None and trainer.max_steps > 0:
        return int(trainer.max_steps)
    dm = recipe.datamodule
    dm.setup("fit")
    batches = len(dm.train_dataloader())
    limit = trainer.limit_train_batches
    if isinstance(limit, int):
        batches = min(batches, limit)
    elif limit is not None and limit < 1.0:
        batches = int(batches * limit)
    accumulate = max(1, int(trainer.accumulate_grad_batches))
    epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else 1
    return int(epochs * math.ceil(batches / accumulate))


def halving(
    candidates: Sequence[Any] | Mapping[str, Any],
    recipe: TrainingRecipe,
    out: str | os.PathLike,
    *,
    eta: float = 3,
    budget: float | None = 0.1,
    budget_steps: int | None = None,
    signal: str = "last_loss",
    final: int = 1,
    keep_after_rung0: int | None = None,
    proxies: Sequence[str] = ("gradsign", "params", "flops"),
    policy: Any = "auto",
    max_params: float | None = None,
    max_flops: float | None = None,
    max_samples: int | None = 64,
    train_survivors: bool = True,
    progress: bool = True,
    ranking: Ranking | None = None,
    log: Callable[[str], None] = print,
    executor: str | Executor | None = None,
) -> HalvingResult:
    """Successive halving over ``candidates`` with real training (see the module docstring).

    Args:
        candidates: specs or ``{name: spec}`` (anything :func:`gradsign_pl.rank` takes).
        recipe: how every candidate trains (its trainer's ``max_epochs`` / ``max_steps`` is the full schedule).
        out: the run's folder (rung-0 cache, every candidate's training, ``rungs.jsonl``).
        eta, budget, budget_steps, final: the plan (:func:`plan_rungs`).
        signal: the low-fidelity signal ranking each rung (:func:`gradsign_pl.fidelity.list_signals`).
        keep_after_rung0: keep only the best this many of the zero-cost order for rung 1 (``None``: all ranked).
        proxies, policy, max_params, max_flops, max_samples: rung 0 (:func:`gradsign_pl.rank`).
        train_survivors: train the survivors for the full schedule (and test them) after the last rung.
        ranking: a rung-0 ranking already made of these candidates (``gradsign-fit`` passes its own); default: rank.
        executor: where rung 0 scores and each rung's trainings run (``"local"``: one after the other; ``"ray"``:
            one Ray task per candidate and rung, see :mod:`gradsign_pl.executors`; ``out`` must then be on storage
            every worker sees, since the rungs continue from the checkpoints there). Every finished rung is written
            to ``rungs.jsonl`` as it arrives; the eliminations do not depend on the executor.
    """
    engine = create_executor(executor)
    get_signal(signal)  # an unknown signal fails before any work
    if keep_after_rung0 is not None and (not isinstance(keep_after_rung0, int) or keep_after_rung0 < 1):
        raise ValueError(f"keep_after_rung0 must be a positive int or None, got {keep_after_rung0!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dm: Any = recipe.datamodule  # duck-typed: the recipes' datamodules expose num_classes, in_chans, image_size
    items = list(candidates.items()) if isinstance(candidates, Mapping) else [(None, c) for c in candidates]
    cands = {c.name: c for c in (candidate(spec, name=name) for name, spec in items)}
    if ranking is None:
        ranking = rank(
            cands,
            dm,
            list(proxies),
            policy=policy,
            max_params=max_params,
            max_flops=max_flops,
            cache=out / "scores",
            num_classes=dm.num_classes,
            max_samples=max_samples,
            progress=progress,
            executor=engine,
        )
    order0 = [r.name for r in ranking if r.status == "ok"]
    if keep_after_rung0 is not None:
        order0 = order0[:keep_after_rung0]
    if not order0:
        raise ValueError(
            "no candidate survived rung 0 (every one failed or was over budget): "
            + "; ".join(f"{r.name}: {r.reason}" for r in ranking)
        )
    full = full_steps_of(recipe)
    plan = plan_rungs(len(order0), full, eta=eta, budget=budget, budget_steps=budget_steps, final=final)
    log(
        f"halving: {len(order0)} candidates, rungs at {list(plan.steps)} steps (of {full}), keeping "
        f"{list(plan.counts[1:]) + [plan.final]}; {100 * plan.fraction():.1f}% of training every candidate fully"
    )
    settings = {"plan": plan.to_dict(), "signal": signal, "recipe": recipe.settings}
    key = settings_hash(settings)
    log_path = out / "rungs.jsonl"
    done = {(r["name"], r["steps"]): r for r in iter_jsonl(log_path, ("name", "steps", "key")) if r["key"] == key}
    eval_at = set(plan.steps) if signal in NEEDS_EVAL else set()

    def prefetch(names: list[str], steps: int) -> None:
        todo = [(n, cands[n]) for n in names if (n, steps) not in done]
        shared = {"recipe": recipe, "out": out, "steps": steps, "eval_at": sorted(eval_at), "signal": signal}
        for _, row in engine.map(_train_rung, todo, shared=shared):
            row["key"] = key
            append_jsonl(log_path, row)  # written the moment it arrives: a kill loses only the rungs in flight
            done[(row["name"], steps)] = row
            value = math.nan if row["signal"] is None else float(row["signal"])
            log(
                f"  {row['name']}: {signal} {value:.4g} after {steps} steps"
                if math.isfinite(value)
                else f"  {row['name']}: failed after {steps} steps ({row.get('error')})"
            )

    def signal_at(name: str, steps: int) -> float:
        if (name, steps) not in done:
            prefetch([name], steps)
        value = done[(name, steps)]["signal"]
        return float(value) if value is not None else math.nan

    result = successive_halving(order0, plan, signal_at, prefetch)
    result.ranking = ranking
    if train_survivors:
        for name in result.survivors:
            log(f"training {name} for the full schedule ({full} steps), continuing from its last rung")
            result.trained.append(
                train_candidate(cands[name], recipe, out / "train", identity=run_identity(cands[name], recipe))
            )
    (out / "halving.json").write_text(json.dumps(_summary(result, signal), indent=2, default=str) + "\n")
    return result


def _train_rung(
    item: tuple[str, Candidate],
    *,
    recipe: TrainingRecipe,
    out: Path,
    steps: int,
    eval_at: list[int],
    signal: str,
) -> dict[str, Any]:
    """Train one candidate up to ``steps`` (continuing from its checkpoint) and measure ``signal`` (on a worker)."""
    name, cand = item
    recorder = FidelityRecorder(eval_at, signal=signal)
    rec = train_candidate(
        cand, recipe, out / "train", stop_at=steps, recorder=recorder, test=False, identity=run_identity(cand, recipe)
    )
    value = get_signal(signal)(Curve.from_dict(rec["curve"]).cut(steps)) if rec.get("status") != "failed" else math.nan
    return {
        "name": name,
        "steps": steps,
        "signal": value if math.isfinite(value) else None,
        "status": rec.get("status"),
        "error": rec.get("error"),
        "seconds": rec.get("seconds"),
    }


def summary(result: HalvingResult, signal: str) -> dict[str, Any]:
    """The JSON record of a run (what ``halving.json`` and gradsign-fit's report hold)."""
    return _summary(result, signal)


def _summary(result: HalvingResult, signal: str) -> dict[str, Any]:
    return {
        "signal": signal,
        "plan": result.plan.to_dict(),
        "order0": result.order0,
        "order": result.order,
        "survivors": result.survivors,
        "spent_steps": result.spent_steps,
        "full_steps_all": result.full_steps_all,
        "eliminated_at": result.eliminated_at(),
        "rungs": [dataclasses.asdict(r) for r in result.rungs],
        "trained": [{k: v for k, v in t.items() if k != "curve"} for t in result.trained],
    }
