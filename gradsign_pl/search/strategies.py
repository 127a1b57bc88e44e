"""Budgeted NAS strategies on a discrete cell space, plain and proxy-assisted (GradSign paper, Table 5.5).

The NAS-Bench-201 protocol (Dong & Yang, ICLR 2020; ``exps/algos/*.py`` of D-X-Y/AutoDL-Projects) runs each
search algorithm on a tabular benchmark against a *simulated* time budget (12000 s on CIFAR-10): "training" an
architecture is a table look-up that returns its validation accuracy and the seconds its training would have taken.
The GradSign paper (Zhang & Jia, ICLR 2022) plugs a zero-cost proxy into four of them ("G-" variants,
``autodl/*.py`` of cmu-catalyst/GradSign): wherever the algorithm would evaluate one candidate, it draws a pool of
``pool_size`` candidates, scores them with the proxy and evaluates only the best-scoring one.

Registered strategies (``create_strategy(name, **kwargs)``; each is deterministic for a fixed ``seed``):

* ``"rs"`` / ``"g-rs"`` -- :class:`RandomSearch`
* ``"rea"`` / ``"g-rea"`` -- :class:`RegularizedEvolution`
* ``"reinforce"`` / ``"g-reinforce"`` -- :class:`Reinforce`
* ``"bohb"`` / ``"g-bohb"`` -- :class:`Bohb` (optuna TPE proposals, Hyperband brackets over the evaluator's
  fidelities; needs a :class:`MultiFidelityEvaluator`, e.g. NB-201's 12- and 200-epoch results)

Budget accounting (one helper, :class:`_Ledger`, shared by every strategy):

1. Before every evaluation the budget is checked: nothing is evaluated once ``spent_seconds >= max_seconds`` or
   ``evaluations >= max_evaluations``.
2. The evaluator returns ``(reward, cost)``. Following NAS-Bench-201's ``R_EA.py`` / ``RANDOM.py``
   (``if total_time_cost + time_cost > time_budget: stop``), an evaluation whose cost would push
   ``spent_seconds`` **past** ``max_seconds`` is *discarded*: it is not charged, not recorded in the history, cannot
   become the best, and the search stops (it is kept in :attr:`SearchTrace.discarded`). So the last evaluation
   never overshoots and ``spent_seconds <= max_seconds`` always holds -- except with ``charge_scoring``, where the
   proxy seconds of a pool already scored are charged even when they cross the limit (the search then stops
   before evaluating). An evaluation landing exactly on ``max_seconds`` is kept. The reference ``reinforce.py``
   appends the overshooting architecture to its trace before breaking (so it can be picked as the best) while
   ``R_EA.py`` does not; here every strategy follows ``R_EA.py``.
3. Otherwise its cost is added to ``spent_seconds`` and the evaluation counts. With ``charge_scoring`` every
   proxy call also adds its scoring seconds when it is made (the GradSign paper did not charge proxy time; its code
   adds the wall-clock of a table look-up, i.e. ~0).
4. The best is the evaluated architecture with the highest reward (the first one reaching it on ties). With
   several fidelities (BOHB) rewards at different fidelities are not comparable (a 12-epoch accuracy is far below
   a 200-epoch one), so the best is the highest reward *at the highest fidelity evaluated so far*, as in BOHB
   (hpbandster's incumbent is the best result on the largest budget). Every evaluation, at any fidelity, is one
   evaluation of ``max_evaluations`` and is charged what the evaluator says it costs.

Nothing is cached: an architecture drawn twice is evaluated (and charged) twice, as in the reference code.
Proxy scores that are not finite rank below every finite score; ties go to the first candidate of the pool
(``np.argmax`` in the reference code).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from gradsign_pl.registry import Registry

__all__ = [
    "Bohb",
    "Budget",
    "CellSpace",
    "Evaluator",
    "MultiFidelityEvaluator",
    "RandomSearch",
    "RegularizedEvolution",
    "Reinforce",
    "Scorer",
    "SearchTrace",
    "Strategy",
    "create_strategy",
    "hyperband_brackets",
    "list_strategies",
    "register_strategy",
]


# --------------------------------------------------------------------------------------------------- protocols


@runtime_checkable
class CellSpace(Protocol):
    """A discrete cell space (e.g. NAS-Bench-201: 6 edges, 5 ops each, 15625 architectures).

    Attributes:
        num_edges: number of edges of the cell.
        num_ops: number of candidate operations per edge.
    """

    num_edges: int
    num_ops: int

    def sample(self, rng: random.Random) -> str:
        """A uniformly random architecture string, drawing only from ``rng``."""

    def mutate(self, arch: str, rng: random.Random) -> str:
        """``arch`` with one uniformly drawn edge switched to a different op (REA's mutation), drawing from ``rng``."""

    def encode(self, arch: str) -> tuple[int, ...]:
        """The op index (``0 <= i < num_ops``) on each edge."""

    def decode(self, ops: Sequence[int]) -> str:
        """The architecture string with op index ``ops[e]`` on edge ``e`` (inverse of :meth:`encode`)."""


@runtime_checkable
class Evaluator(Protocol):
    """Simulated training of an architecture."""

    def evaluate(self, arch: str) -> tuple[float, float]:
        """``(reward, cost)``: validation accuracy in percent and simulated training seconds (>= 0)."""


@runtime_checkable
class MultiFidelityEvaluator(Evaluator, Protocol):
    """Simulated training to one of several budgets (NAS-Bench-201: 12 or 200 epochs).

    Attributes:
        fidelities: the budgets it can train to, ascending (e.g. ``(12, 200)`` epochs); ``evaluate(arch)`` is
            ``evaluate_at(arch, fidelities[0])``.
    """

    fidelities: tuple[float, ...]

    def evaluate_at(self, arch: str, fidelity: float) -> tuple[float, float]:
        """``(reward, cost)`` of training ``arch`` from scratch to ``fidelity`` (one of :attr:`fidelities`):
        validation accuracy in percent and simulated seconds (>= 0)."""


#: A zero-cost proxy: ``arch -> (score, seconds)``; a higher score is better, ``seconds`` is what scoring took.
Scorer = Callable[[str], tuple[float, float]]


@dataclasses.dataclass
class Budget:
    """What a search may spend; either or both limits (at least one must be set).

    Attributes:
        max_seconds: simulated training seconds (NAS-Bench-201 protocol: 12000), > 0, or ``None``.
        max_evaluations: number of evaluations (>= 1), or ``None``.
        charge_scoring: also charge the proxy's scoring seconds to ``spent_seconds`` (the paper did not).
    """

    max_seconds: float | None = None
    max_evaluations: int | None = None
    charge_scoring: bool = False

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        if self.max_seconds is not None and (
            isinstance(self.max_seconds, bool)
            or not isinstance(self.max_seconds, (int, float))
            or not 0 < self.max_seconds < math.inf
        ):
            raise ValueError(f"Budget.max_seconds must be a positive finite number or None, got {self.max_seconds!r}")
        if self.max_evaluations is not None and (
            isinstance(self.max_evaluations, bool)
            or not isinstance(self.max_evaluations, int)
            or self.max_evaluations < 1
        ):
            raise ValueError(f"Budget.max_evaluations must be an integer >= 1 or None, got {self.max_evaluations!r}")
        if self.max_seconds is None and self.max_evaluations is None:
            raise ValueError("Budget needs max_seconds or max_evaluations (or both); an unlimited search never ends")
        if not isinstance(self.charge_scoring, bool):
            raise ValueError(f"Budget.charge_scoring must be a bool, got {self.charge_scoring!r}")


@dataclasses.dataclass
class SearchTrace:
    """One search run.

    Attributes:
        strategy: registry name of the strategy (``"g-rea"`` ...).
        seed: the seed of the run.
        history: one dict per counted evaluation, in order: ``arch``, ``reward`` (%), ``cost`` (s),
            ``spent_seconds`` (after it, scoring seconds included when charged), ``evaluations`` (after it, 1-based),
            ``scored`` (proxy calls so far), ``score`` (proxy score of this arch, ``None`` if it was not scored),
            ``fidelity`` (the budget it was trained to, e.g. epochs; ``None``: ``evaluator.evaluate``'s only one),
            ``best_arch``, ``best_reward`` and ``best_fidelity`` (so far).
        best_arch: the evaluated architecture with the highest reward at the highest fidelity evaluated (``None``
            when nothing was evaluated).
        best_reward: its reward at ``best_fidelity`` (``-inf`` when nothing was evaluated).
        best_fidelity: the fidelity of ``best_reward`` (``None`` for single-fidelity evaluations).
        spent_seconds: simulated seconds charged: costs of the counted evaluations (+ scoring seconds of every proxy
            call with ``charge_scoring``).
        evaluations: counted evaluations (``len(history)``).
        proxy_calls: scorer calls.
        scoring_seconds: scoring seconds of all proxy calls, charged or not.
        discarded: the evaluation that would have exceeded ``max_seconds`` (``arch``, ``reward``, ``cost``), which
            was neither charged nor counted and ended the search; ``None`` if there was none. The evaluator was
            therefore called ``evaluations + (discarded is not None)`` times.
        settings: the strategy's keyword arguments.
        budget: the budget as a dict.
    """

    strategy: str
    seed: int
    history: list[dict[str, Any]]
    best_arch: str | None
    best_reward: float
    spent_seconds: float
    evaluations: int
    proxy_calls: int
    scoring_seconds: float = 0.0
    best_fidelity: float | None = None
    discarded: dict[str, Any] | None = None
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    budget: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (``-inf`` best reward becomes ``None``)."""
        doc = dataclasses.asdict(self)
        if not math.isfinite(doc["best_reward"]):
            doc["best_reward"] = None
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> SearchTrace:
        """Inverse of :meth:`to_dict`."""
        doc = dict(doc)
        if doc.get("best_reward") is None:
            doc["best_reward"] = -math.inf
        return cls(**doc)

    def write(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON to ``path`` (parents created); returns the path."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return out


class Strategy(Protocol):
    """A search algorithm; ``run`` is deterministic given ``seed`` (and deterministic evaluator and scorer)."""

    name: str

    def run(
        self, space: CellSpace, evaluator: Evaluator, budget: Budget, *, seed: int, scorer: Scorer | None = None
    ) -> SearchTrace:
        """Search ``space`` within ``budget``; assisted (``g-``) strategies need ``scorer``."""


# ---------------------------------------------------------------------------------------------------- registry

StrategyFactory = Callable[..., Strategy]
_STRATEGIES: Registry[StrategyFactory] = Registry("search strategy")


def register_strategy(name: str) -> Callable[[StrategyFactory], StrategyFactory]:
    """Decorator: register a strategy factory (a class or function taking the strategy's kwargs) under ``name``."""

    def decorate(factory: StrategyFactory) -> StrategyFactory:
        _STRATEGIES.add(name, factory)
        return factory

    return decorate


def list_strategies(filter: str = "*") -> list[str]:
    """Sorted names of the registered strategies matching the shell-style pattern ``filter``."""
    return _STRATEGIES.names(filter)


def create_strategy(name: str, **kwargs: Any) -> Strategy:
    """The strategy registered as ``name`` built with ``kwargs`` (e.g. ``create_strategy("g-rea", pool_size=20)``).

    Raises:
        KeyError: unknown name (the message lists close matches and every registered name).
        TypeError: a keyword the strategy does not take.
        ValueError: a bad value, naming the keyword.
    """
    return _STRATEGIES.lookup(name)(**kwargs)


# ------------------------------------------------------------------------------------------------- accounting


class _Ledger:
    """The one place where budget is checked and charged, proxy calls are counted and the trace is built."""

    def __init__(
        self,
        name: str,
        seed: int,
        budget: Budget,
        evaluator: Evaluator,
        scorer: Scorer | None,
        settings: dict[str, Any],
        progress: Callable[..., None],
    ) -> None:
        self.budget = budget
        self.evaluator = evaluator
        self.scorer = scorer
        self.progress = progress
        self.stopped = False
        self.trace = SearchTrace(
            strategy=name,
            seed=seed,
            history=[],
            best_arch=None,
            best_reward=-math.inf,
            spent_seconds=0.0,
            evaluations=0,
            proxy_calls=0,
            settings=dict(settings),
            budget=dataclasses.asdict(budget),
        )

    def exhausted(self) -> bool:
        """True once no further evaluation may be made."""
        t, b = self.trace, self.budget
        return (
            self.stopped
            or (b.max_seconds is not None and t.spent_seconds >= b.max_seconds)
            or (b.max_evaluations is not None and t.evaluations >= b.max_evaluations)
        )

    def score(self, archs: Sequence[str]) -> list[float]:
        """Proxy scores of ``archs`` (one scorer call each, counted; seconds charged with ``charge_scoring``)."""
        if self.scorer is None:
            raise RuntimeError("internal error: scoring without a scorer")
        scores = []
        for arch in archs:
            score, seconds = self.scorer(arch)
            seconds = float(seconds)
            if not (math.isfinite(seconds) and seconds >= 0):
                raise ValueError(
                    f"the scorer returned {seconds!r} scoring seconds for {arch!r}; need a finite number >= 0"
                )
            self.trace.proxy_calls += 1
            self.trace.scoring_seconds += seconds
            if self.budget.charge_scoring:
                self.trace.spent_seconds += seconds
            score = float(score)
            scores.append(score if math.isfinite(score) else -math.inf)
        return scores

    def best_of(self, pool: Sequence[str]) -> tuple[str, float]:
        """The best-scoring member of ``pool`` (first on ties) and its score; scores every member once."""
        i, score = self.best_index(pool)
        return pool[i], score

    def best_index(self, pool: Sequence[str]) -> tuple[int, float]:
        """Index of the best-scoring member of ``pool`` (first on ties) and its score."""
        scores = self.score(pool)
        i = int(np.argmax(scores))
        return i, scores[i]

    def evaluate(self, arch: str, score: float | None = None, fidelity: float | None = None) -> float | None:
        """Evaluate ``arch`` if budget is left and charge it; ``None`` when nothing was left or it was discarded.

        ``fidelity``: train to this budget (``evaluator.evaluate_at``); ``None``: ``evaluator.evaluate``.
        ``None`` means the search must stop.
        """
        if self.exhausted():
            return None
        if fidelity is None:
            reward, cost = self.evaluator.evaluate(arch)
        else:
            reward, cost = self.evaluator.evaluate_at(arch, fidelity)  # type: ignore[attr-defined]
        reward, cost = float(reward), float(cost)
        if not (math.isfinite(cost) and cost >= 0):
            raise ValueError(f"the evaluator returned cost {cost!r} for {arch!r}; need a finite number >= 0")
        if math.isnan(reward):
            raise ValueError(f"the evaluator returned reward nan for {arch!r}")
        t, b = self.trace, self.budget
        if b.max_seconds is not None and t.spent_seconds + cost > b.max_seconds:
            t.discarded = {"arch": arch, "reward": reward, "cost": cost}
            self.stopped = True
            return None
        t.spent_seconds += cost
        t.evaluations += 1
        if _rank(fidelity, reward) > _rank(t.best_fidelity, t.best_reward):
            t.best_arch, t.best_reward, t.best_fidelity = arch, reward, fidelity
        t.history.append(
            {
                "arch": arch,
                "reward": reward,
                "cost": cost,
                "spent_seconds": t.spent_seconds,
                "evaluations": t.evaluations,
                "scored": t.proxy_calls,
                "score": score,
                "fidelity": fidelity,
                "best_arch": t.best_arch,
                "best_reward": t.best_reward,
                "best_fidelity": t.best_fidelity,
            }
        )
        self.progress(spent=t.spent_seconds, evaluations=t.evaluations, best=t.best_reward)
        return reward


def _rank(fidelity: float | None, reward: float) -> tuple[float, float]:
    """Incumbent order: a higher fidelity first (``None``, the single-fidelity case, lowest), then the reward."""
    return (-math.inf if fidelity is None else float(fidelity), reward)


@contextlib.contextmanager
def _progress_bar(enabled: bool, name: str, budget: Budget) -> Iterator[Callable[..., None]]:
    """A rich progress bar over the budget (seconds if limited, else evaluations); a no-op when disabled."""
    if not enabled:
        yield lambda **_: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    by_seconds = budget.max_seconds is not None
    total = budget.max_seconds if by_seconds else budget.max_evaluations
    assert total is not None  # Budget.validate (run before the search) requires max_seconds or max_evaluations
    columns = (
        TextColumn(f"[bold]{name}[/]"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} " + ("s" if by_seconds else "evals")),
        TextColumn("evals={task.fields[evals]} best={task.fields[best]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns) as bar:
        task = bar.add_task(name, total=total, evals=0, best="-")

        def update(*, spent: float, evaluations: int, best: float) -> None:
            bar.update(
                task, completed=min(spent if by_seconds else evaluations, total), evals=evaluations, best=f"{best:.4g}"
            )

        yield update


# ------------------------------------------------------------------------------------------------- validation


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_float(
    name: str, value: Any, low: float, high: float, *, low_open: bool = True, high_open: bool = False
) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"{name} must be a number in {lo}{low}, {high}{hi}, got {value!r}")


class _Base:
    """Shared ``run`` scaffolding: argument checks, the ledger and the progress bar."""

    name: str = ""
    assisted: bool = False
    #: Keyword arguments that only the assisted variant takes.
    assisted_only: ClassVar[tuple[str, ...]] = ("pool_size",)

    def _settings(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)  # type: ignore[call-overload]
        doc.pop("assisted", None)
        return {k: v for k, v in doc.items() if self.assisted or k not in self.assisted_only}

    def run(
        self,
        space: CellSpace,
        evaluator: Evaluator,
        budget: Budget,
        *,
        seed: int,
        scorer: Scorer | None = None,
        progress: bool = False,
    ) -> SearchTrace:
        """Search ``space`` within ``budget`` with ``seed``; see the class docstring for the algorithm.

        Args:
            space: the cell space.
            evaluator: simulated training (``arch -> (reward %, cost s)``).
            budget: limits (validated).
            seed: seeds every random draw of the run (the global RNGs are neither used nor touched).
            scorer: the zero-cost proxy; required by assisted (``g-``) strategies, ignored by plain ones.
            progress: show a rich progress bar.
        """
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        budget.validate()
        if self.assisted and scorer is None:
            raise ValueError(f"{self.name} needs a scorer: pass scorer=...")
        with _progress_bar(progress, self.name, budget) as update:
            ledger = _Ledger(
                self.name, seed, budget, evaluator, scorer if self.assisted else None, self._settings(), update
            )
            self._search(space, ledger, seed)
        return ledger.trace

    def _search(self, space: CellSpace, ledger: _Ledger, seed: int) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------- random search


@dataclasses.dataclass
class RandomSearch(_Base):
    """Random search (NAS-Bench-201 ``RANDOM.py``) and its assisted variant G-RS (GradSign ``autodl/RANDOM.py``).

    Plain (``"rs"``): repeat until the budget is spent: draw ``space.sample(rng)``, evaluate it.
    Assisted (``"g-rs"``): draw ``pool_size`` random architectures, score each once, evaluate the best-scoring.

    Args:
        pool_size: candidates scored per evaluation (assisted only; the authors used 10); >= 1.
        assisted: whether the proxy picks from a pool (set by the registry name).
    """

    pool_size: int = 10
    assisted: bool = False

    def __post_init__(self) -> None:
        _check_int("pool_size", self.pool_size, 1)
        self.name = "g-rs" if self.assisted else "rs"

    def _search(self, space: CellSpace, ledger: _Ledger, seed: int) -> None:
        rng = random.Random(seed)
        while not ledger.exhausted():
            if self.assisted:
                arch, score = ledger.best_of([space.sample(rng) for _ in range(self.pool_size)])
            else:
                arch, score = space.sample(rng), None
            if ledger.evaluate(arch, score) is None:
                return


# ------------------------------------------------------------------------------------------ regularized evolution


@dataclasses.dataclass
class RegularizedEvolution(_Base):
    """Regularized (aging) evolution (Real et al. 2019, Alg. 1; NAS-Bench-201 ``R_EA.py``) and G-REA.

    1. Initial population: ``population_size`` random architectures, each evaluated, in order.
    2. Then, until the budget is spent: a tournament of ``sample_size`` members drawn uniformly *with replacement*
       (``random.choice`` in the reference); the parent is the one with the highest reward (first drawn on ties);
       the child is ``space.mutate(parent, rng)``; it is evaluated, appended, and the **oldest** member is removed.

    Assisted (``"g-rea"``, GradSign ``autodl/R_EA.py``): the child is the best-scoring of ``pool_size``
    independent mutations of the parent. The authors' initial population is plain random (no proxy), which is
    the default here; ``assisted_init=True`` makes each initial member the best-scoring of ``pool_size`` random
    architectures instead. So by default the first ``population_size`` evaluations make no proxy call and every
    later one makes exactly ``pool_size``.

    Args:
        population_size: members kept (NAS-Bench-201: 10); >= 1 and >= ``sample_size``.
        sample_size: tournament size (NAS-Bench-201: 3); >= 1.
        pool_size: mutations scored per child (assisted only; authors: 10); >= 1.
        assisted_init: also pick the initial members by proxy (assisted only; authors: no).
        assisted: set by the registry name.
    """

    population_size: int = 10
    sample_size: int = 3
    pool_size: int = 10
    assisted_init: bool = False
    assisted: bool = False
    assisted_only: ClassVar[tuple[str, ...]] = ("pool_size", "assisted_init")

    def __post_init__(self) -> None:
        _check_int("population_size", self.population_size, 1)
        _check_int("sample_size", self.sample_size, 1)
        _check_int("pool_size", self.pool_size, 1)
        if self.population_size < self.sample_size:
            raise ValueError(f"population_size ({self.population_size}) must be >= sample_size ({self.sample_size})")
        if not isinstance(self.assisted_init, bool):
            raise ValueError(f"assisted_init must be a bool, got {self.assisted_init!r}")
        self.name = "g-rea" if self.assisted else "rea"

    def _search(self, space: CellSpace, ledger: _Ledger, seed: int) -> None:
        rng = random.Random(seed)
        population: deque[tuple[str, float]] = deque()
        while len(population) < self.population_size:
            if ledger.exhausted():
                return
            if self.assisted and self.assisted_init:
                arch, score = ledger.best_of([space.sample(rng) for _ in range(self.pool_size)])
            else:
                arch, score = space.sample(rng), None
            reward = ledger.evaluate(arch, score)
            if reward is None:
                return
            population.append((arch, reward))
        while not ledger.exhausted():
            members = list(population)
            tournament = [rng.choice(members) for _ in range(self.sample_size)]
            parent = max(tournament, key=lambda m: m[1])[0]
            if self.assisted:
                child, score = ledger.best_of([space.mutate(parent, rng) for _ in range(self.pool_size)])
            else:
                child, score = space.mutate(parent, rng), None
            reward = ledger.evaluate(child, score)
            if reward is None:
                return
            population.append((child, reward))
            population.popleft()


# ---------------------------------------------------------------------------------------------------- reinforce


class _EMA:
    """Bias-corrected exponential moving average (the reference ``ExponentialMovingAverage``)."""

    def __init__(self, momentum: float) -> None:
        self.momentum, self.num, self.den = momentum, 0.0, 0.0

    def update(self, value: float) -> None:
        self.num = self.momentum * self.num + (1 - self.momentum) * value
        self.den = self.momentum * self.den + (1 - self.momentum)

    def value(self) -> float:
        return self.num / self.den


@dataclasses.dataclass
class Reinforce(_Base):
    """REINFORCE (Williams 1992; NAS-Bench-201 ``reinforce.py``) and G-REINFORCE (GradSign ``autodl/reinforce.py``).

    Policy: logits ``theta`` of shape ``(num_edges, num_ops)``, initialised ``1e-3 * N(0, 1)``; an architecture
    draws one op per edge independently from ``softmax(theta[e])``. Each step, until the budget is spent:

    1. sample actions ``a`` from the policy (``arch = space.decode(a)``);
    2. evaluate ``arch``, reward ``r`` (a discarded over-budget evaluation ends the search without an update);
    3. update the baseline ``b`` (bias-corrected EMA with ``baseline_momentum``; updated *before* use, as in the
       reference, so the first advantage is 0);
    4. one Adam step (``learning_rate``) on ``-(r - b) * log pi(a)``.

    Assisted (``"g-reinforce"``): after step 1, ``pool_size`` independent ``space.mutate`` of the sample are scored
    and the best-scoring one is evaluated. ``credit`` chooses whose log-probability gets the reward:
    ``"evaluated"`` (default) credits the evaluated architecture (``space.encode`` of it) -- the policy learns what
    was actually measured; ``"sampled"`` credits the unmutated sample, as the authors' code does (the reward of
    a mutation is attributed to the arch it was mutated from).

    Randomness: ``np.random.default_rng(seed)`` (policy init and sampling) and ``random.Random(seed)``
    (mutations). The policy is tiny, so it is plain numpy in float64 with the exact gradient of the log-softmax
    and a hand-written Adam matching ``torch.optim.Adam`` defaults (torch ops this small are dominated by
    dispatch and thread-pool overhead).

    Args:
        learning_rate: Adam learning rate (NAS-Bench-201 ``scripts-search/algos/REINFORCE.sh``: 0.001); > 0.
        baseline_momentum: EMA momentum of the baseline (NAS-Bench-201: 0.9); in [0, 1).
        pool_size: mutations scored per step (assisted only; authors: 10); >= 1.
        credit: ``"evaluated"`` or ``"sampled"`` (assisted only).
        assisted: set by the registry name.
    """

    learning_rate: float = 0.001
    baseline_momentum: float = 0.9
    pool_size: int = 10
    credit: str = "evaluated"
    assisted: bool = False
    assisted_only: ClassVar[tuple[str, ...]] = ("pool_size", "credit")

    def __post_init__(self) -> None:
        _check_float("learning_rate", self.learning_rate, 0.0, math.inf, high_open=True)
        _check_float("baseline_momentum", self.baseline_momentum, 0.0, 1.0, low_open=False, high_open=True)
        _check_int("pool_size", self.pool_size, 1)
        if self.credit not in ("evaluated", "sampled"):
            raise ValueError(f"credit must be 'evaluated' or 'sampled', got {self.credit!r}")
        self.name = "g-reinforce" if self.assisted else "reinforce"

    def _search(self, space: CellSpace, ledger: _Ledger, seed: int) -> None:
        rng = random.Random(seed)
        np_rng = np.random.default_rng(seed % (2**63))
        theta = 1e-3 * np_rng.standard_normal((space.num_edges, space.num_ops))
        adam = _Adam(theta.shape, self.learning_rate)
        baseline = _EMA(self.baseline_momentum)
        edges = np.arange(space.num_edges)
        while not ledger.exhausted():
            probs = _softmax(theta)
            # inverse-CDF draw per edge (one uniform each)
            u = np_rng.random(space.num_edges)[:, None]
            actions = np.minimum((np.cumsum(probs, axis=1) < u).sum(axis=1), space.num_ops - 1)
            sampled = space.decode([int(a) for a in actions])
            if self.assisted:
                arch, score = ledger.best_of([space.mutate(sampled, rng) for _ in range(self.pool_size)])
                if self.credit == "evaluated":
                    actions = np.asarray(space.encode(arch), dtype=np.int64)
            else:
                arch, score = sampled, None
            reward = ledger.evaluate(arch, score)
            if reward is None:
                return
            baseline.update(reward)
            # d/dtheta of -(r - b) * log pi(a) = -(r - b) * (onehot(a) - softmax(theta)), row by row
            grad = probs.copy()
            grad[edges, actions] -= 1.0
            theta = adam.step(theta, (reward - baseline.value()) * grad)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


class _Adam:
    """Adam (Kingma & Ba 2015) with ``torch.optim.Adam``'s defaults: betas (0.9, 0.999), eps 1e-8, no decay."""

    def __init__(
        self, shape: tuple[int, ...], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        self.lr, self.b1, self.b2, self.eps = lr, betas[0], betas[1], eps
        self.m, self.v, self.t = np.zeros(shape), np.zeros(shape), 0

    def step(self, param: np.ndarray, grad: np.ndarray) -> np.ndarray:
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * grad
        self.v = self.b2 * self.v + (1 - self.b2) * grad * grad
        m_hat = self.m / (1 - self.b1**self.t)
        v_hat = self.v / (1 - self.b2**self.t)
        return param - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


# --------------------------------------------------------------------------------------------------------- bohb


def hyperband_brackets(levels: int, eta: int) -> list[list[int]]:
    """The successive-halving brackets of one Hyperband iteration over ``levels`` fidelity levels (Li et al. 2018).

    ``s_max = levels - 1``; bracket ``s`` (``s_max`` down to 0, most exploratory first) starts
    ``n = ceil((s_max + 1) * eta**s / (s + 1))`` configurations at level ``s_max - s`` and keeps
    ``floor(n * eta**-i)`` of them at its ``i``-th rung, i.e. the top ``1/eta`` of a rung are promoted to the next
    level, up to the highest. Returns, per bracket, the configurations at each of its rungs (a bracket with ``k``
    rungs starts at level ``levels - k``). Li et al.'s Table 1 (5 levels, 1 to 81 epochs, eta 3):
    ``[[81, 27, 9, 3, 1], [34, 11, 3, 1], [15, 5, 1], [8, 2], [5]]``; NAS-Bench-201's two levels (12 and 200
    epochs) with eta 16: ``[[16, 1], [2]]``.
    """
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"levels must be an integer >= 1, got {levels!r}")
    _check_int("eta", eta, 2)
    s_max = levels - 1
    brackets = []
    for s in range(s_max, -1, -1):
        n = -(-((s_max + 1) * eta**s) // (s + 1))
        brackets.append([n // eta**i for i in range(s + 1)])
    return brackets


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


@dataclasses.dataclass
class Bohb(_Base):
    """BOHB (Falkner et al. 2018): TPE proposals evaluated in Hyperband brackets, and its assisted variant G-BOHB.

    **Fidelities.** The evaluator must be a :class:`MultiFidelityEvaluator`; its ``fidelities`` (ascending) are
    the rungs. On tabular NAS-Bench-201 (:class:`~gradsign_pl.search.nb201_tabular.TabularEvaluator`) they are the
    two budgets the table really has: 12 epochs (reward ``cifar10_valid_12ep``) and 200 epochs (``cifar10_valid``),
    a 200-epoch evaluation charged ``200 / 12`` times the 12-epoch cost of the same arch. A promoted arch is
    trained again from scratch at the higher fidelity and charged its full cost (NB-201's 12- and 200-epoch runs
    are separate trainings with their own learning-rate schedules; one cannot be continued into the other).

    **Brackets.** One Hyperband iteration runs the brackets of :func:`hyperband_brackets` ``(len(fidelities),
    eta)``, most exploratory first; iterations repeat until the budget is spent. Each bracket is synchronous
    successive halving: it draws its configurations from TPE and evaluates each at the bracket's first fidelity
    (no result of a rung is told to TPE before the whole rung is evaluated), then promotes the top ``1/eta`` by
    reward (ties: the first evaluated) to the next fidelity, and so on. With the two NB-201
    levels and the default ``eta = 16`` the brackets are ``[16, 1]`` (16 archs at 12 epochs, the best one
    retrained for 200) and ``[2]`` (2 archs trained for 200 epochs directly): Hyperband with ``R = 200`` epochs
    and ``eta = 16`` has ``s_max = floor(log_16(200 / 12)) = 1`` and a lower rung of ``200 / 16 = 12.5`` epochs,
    served by the 12-epoch results; both brackets spend about the same (``16 * 12 + 200 = 392`` against
    ``2 * 200 = 400`` epochs), as Hyperband intends. ``eta`` in 5..16 gives two levels too; NAS-Bench-201's own
    BOHB used ``eta = 3`` (rungs of 22, 67 and 200 epochs, which the table does not have, so it returned the
    12-epoch accuracy at every budget); ``eta = 3`` on the two real levels gives brackets ``[3, 1]`` and ``[2]``,
    whose costs are far from balanced. ``optuna.pruners.HyperbandPruner`` is not used: it is asynchronous
    (a trial is promoted when it beats the ``1/eta`` quantile of those that reached its rung *so far*), assigns
    brackets by a hash of the trial number, and places rungs at ``min_resource * eta**k`` steps, not on the two
    budgets the table has.

    **Model.** One optuna study, ``optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)``
    (optuna defaults otherwise; in optuna 5 these are the multivariate TPE, close to BOHB's multivariate KDE, and
    ``constant_liar``: configurations drawn but not yet told count among the bad ones, which spreads the
    proposals of one bracket), one categorical ``edge{e}`` per edge; one trial per configuration, which reports
    its reward at each rung it reaches (``trial.report(reward, step=level)``, ``level`` = 0 for the lowest
    fidelity). A configuration stopped by successive halving is told ``PRUNED``; one that reaches the highest
    fidelity is told ``COMPLETE`` with its highest-fidelity reward. TPE ranks complete trials above pruned ones and
    pruned ones by the level they reached, then by their reward there -- optuna's own multi-fidelity order, where
    BOHB instead fits its KDE on the largest budget with at least ``d + 1`` results (the hpbandster KDE settings
    -- ``random_fraction=0.33``, ``num_samples=64``, ``bandwidth_factor=3``, ``min_bandwidth=0.3`` -- have no
    exact counterpart either). Deterministic for a seed (single-threaded, in-memory study).

    **Result.** The incumbent: the best reward at the highest fidelity evaluated (on NB-201: the best 200-epoch
    validation accuracy once any arch was trained that long), see the module docstring.

    Assisted (``"g-bohb"``): each new configuration of a bracket is the best-scoring of ``pool_size`` TPE proposals
    (``pool_size`` asks in a row); the others are told ``FAIL`` right away (TPE ignores failed
    trials, so proxy-rejected proposals count neither as good nor as bad). Promotions are decided by reward, not
    scored. This departs from the authors' code (``hpbandster/.../config_generators/bohb.py``), which discards the
    KDE proposal and returns the best-scoring of 10 *uniformly random* architectures -- i.e. G-RS driven by
    Hyperband.

    Args:
        eta: Hyperband reduction factor: the top ``1/eta`` of a rung are promoted; integer >= 2 (default 16, see
            above).
        n_startup_trials: configurations drawn at random before TPE models (optuna default 10); >= 0.
        pool_size: TPE proposals scored per new configuration (assisted only; authors: 10 random archs); >= 1.
        assisted: set by the registry name.
    """

    eta: int = 16
    n_startup_trials: int = 10
    pool_size: int = 10
    assisted: bool = False

    def __post_init__(self) -> None:
        _check_int("eta", self.eta, 2)
        _check_int("n_startup_trials", self.n_startup_trials, 0)
        _check_int("pool_size", self.pool_size, 1)
        self.name = "g-bohb" if self.assisted else "bohb"

    def _search(self, space: CellSpace, ledger: _Ledger, seed: int) -> None:
        import optuna
        from optuna.trial import TrialState

        evaluator = ledger.evaluator
        if not isinstance(evaluator, MultiFidelityEvaluator):
            raise TypeError(
                f"{self.name} needs a MultiFidelityEvaluator (fidelities and evaluate_at(arch, "
                f"fidelity)); {type(evaluator).__name__} has one fidelity only"
            )
        fidelities = tuple(evaluator.fidelities)
        if not fidelities or any(b <= a for a, b in zip(fidelities, fidelities[1:])):
            raise ValueError(f"evaluator.fidelities must be non-empty and ascending, got {fidelities!r}")
        brackets = hyperband_brackets(len(fidelities), self.eta)
        choices = list(range(space.num_ops))

        def propose() -> tuple[optuna.Trial, str]:
            trial = study.ask()
            ops = [trial.suggest_categorical(f"edge{e}", choices) for e in range(space.num_edges)]
            return trial, space.decode(ops)

        def new_config() -> tuple[optuna.Trial, str, float | None]:
            if not self.assisted:
                return (*propose(), None)
            proposals = [propose() for _ in range(self.pool_size)]
            i, score = ledger.best_index([a for _, a in proposals])
            for j, (t, _) in enumerate(proposals):
                if j != i:
                    study.tell(t, state=TrialState.FAIL)
            return (*proposals[i], score)

        with _quiet_optuna():
            sampler = optuna.samplers.TPESampler(seed=seed % (2**32), n_startup_trials=self.n_startup_trials)
            study = optuna.create_study(direction="maximize", sampler=sampler)
            while True:
                for rungs in brackets:
                    level = len(fidelities) - len(rungs)  # the bracket's first rung
                    # rung 0: new configurations, each evaluated as soon as it is drawn (none is told before the
                    # rung is complete, so all come from the same model state, as if drawn at once)
                    results: list[tuple[optuna.Trial, str, float]] = []
                    for _ in range(rungs[0]):
                        if ledger.exhausted():
                            return
                        trial, arch, score = new_config()
                        reward = ledger.evaluate(arch, score, fidelities[level])
                        if reward is None:
                            return
                        trial.report(reward, step=level)
                        results.append((trial, arch, reward))
                    for keep in rungs[1:]:
                        # successive halving: the top `keep` (= 1/eta) of this rung go on, the others are pruned
                        ranked = sorted(range(len(results)), key=lambda k: -results[k][2])  # stable: ties by order
                        for k in ranked[keep:]:
                            study.tell(results[k][0], state=TrialState.PRUNED)
                        promoted = [results[k][:2] for k in sorted(ranked[:keep])]
                        level += 1
                        results = []
                        for trial, arch in promoted:
                            reward = ledger.evaluate(arch, None, fidelities[level])
                            if reward is None:
                                return
                            trial.report(reward, step=level)
                            results.append((trial, arch, reward))
                    for trial, _, reward in results:  # reached the highest fidelity
                        study.tell(trial, reward)


# ------------------------------------------------------------------------------------------------ registration


def _factory(cls: type, assisted: bool, exclude: tuple[str, ...]) -> StrategyFactory:
    allowed = [f.name for f in dataclasses.fields(cls) if f.name != "assisted" and f.name not in exclude]

    def make(**kwargs: Any) -> Strategy:
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown:
            name = cls.__name__
            raise TypeError(
                f"{'g-' if assisted else ''}{name} got unexpected keyword(s) {', '.join(unknown)}; "
                f"it takes: {', '.join(allowed) or 'none'}"
            )
        return cls(assisted=assisted, **kwargs)

    make.__doc__ = cls.__doc__
    return make


for _name, _cls in (("rs", RandomSearch), ("rea", RegularizedEvolution), ("reinforce", Reinforce), ("bohb", Bohb)):
    register_strategy(_name)(_factory(_cls, False, _cls.assisted_only))
    register_strategy(f"g-{_name}")(_factory(_cls, True, ()))
