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
* ``"bohb"`` / ``"g-bohb"`` -- :class:`Bohb` (optuna TPE; see its docstring for what "fidelity" means here)

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
4. The best is the evaluated architecture with the highest reward (the first one reaching it on ties).

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

from gradsign_pl._registry import Registry

__all__ = [
    "Bohb",
    "Budget",
    "CellSpace",
    "Evaluator",
    "RandomSearch",
    "RegularizedEvolution",
    "Reinforce",
    "Scorer",
    "SearchTrace",
    "Strategy",
    "create_strategy",
    "hyperband_bracket_sizes",
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
        if self.max_seconds is not None and (isinstance(self.max_seconds, bool) or
                                             not isinstance(self.max_seconds, (int, float)) or
                                             not 0 < self.max_seconds < math.inf):
            raise ValueError(f"Budget.max_seconds must be a positive finite number or None, got {self.max_seconds!r}")
        if self.max_evaluations is not None and (isinstance(self.max_evaluations, bool) or
                                                 not isinstance(self.max_evaluations, int) or
                                                 self.max_evaluations < 1):
            raise ValueError(f"Budget.max_evaluations must be an integer >= 1 or None, got {self.max_evaluations!r}")
        if self.max_seconds is None and self.max_evaluations is None:
            raise ValueError("Budget needs max_seconds or max_evaluations (or both); an unlimited search never ends")
        if not isinstance(self.charge_scoring, bool):
            raise ValueError(f"Budget.charge_scoring must be a bool, got {self.charge_scoring!r}")  # noqa: TRY004


@dataclasses.dataclass
class SearchTrace:
    """One search run.

    Attributes:
        strategy: registry name of the strategy (``"g-rea"`` ...).
        seed: the seed of the run.
        history: one dict per counted evaluation, in order: ``arch``, ``reward`` (%), ``cost`` (s),
            ``spent_seconds`` (after it, scoring seconds included when charged), ``evaluations`` (after it, 1-based),
            ``scored`` (proxy calls so far), ``score`` (proxy score of this arch, ``None`` if it was not scored),
            ``best_arch`` and ``best_reward`` (so far).
        best_arch: the evaluated architecture with the highest reward (``None`` when nothing was evaluated).
        best_reward: its reward (``-inf`` when nothing was evaluated).
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

    def run(self, space: CellSpace, evaluator: Evaluator, budget: Budget, *, seed: int,
            scorer: Scorer | None = None) -> SearchTrace:
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

    def __init__(self, name: str, seed: int, budget: Budget, evaluator: Evaluator, scorer: Scorer | None,
                 settings: dict[str, Any], progress: Callable[..., None]) -> None:
        self.budget = budget
        self.evaluator = evaluator
        self.scorer = scorer
        self.progress = progress
        self.stopped = False
        self.trace = SearchTrace(strategy=name, seed=seed, history=[], best_arch=None, best_reward=-math.inf,
                                 spent_seconds=0.0, evaluations=0, proxy_calls=0, settings=dict(settings),
                                 budget=dataclasses.asdict(budget))

    def exhausted(self) -> bool:
        """True once no further evaluation may be made."""
        t, b = self.trace, self.budget
        return (self.stopped or (b.max_seconds is not None and t.spent_seconds >= b.max_seconds)
                or (b.max_evaluations is not None and t.evaluations >= b.max_evaluations))

    def score(self, archs: Sequence[str]) -> list[float]:
        """Proxy scores of ``archs`` (one scorer call each, counted; seconds charged with ``charge_scoring``)."""
        if self.scorer is None:
            raise RuntimeError("internal error: scoring without a scorer")
        scores = []
        for arch in archs:
            score, seconds = self.scorer(arch)
            seconds = float(seconds)
            if not (math.isfinite(seconds) and seconds >= 0):
                raise ValueError(f"the scorer returned {seconds!r} scoring seconds for {arch!r}; need a finite "
                                 "number >= 0")
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

    def evaluate(self, arch: str, score: float | None = None) -> float | None:
        """Evaluate ``arch`` if budget is left and charge it; ``None`` when nothing was left or it was discarded.

        ``None`` means the search must stop.
        """
        if self.exhausted():
            return None
        reward, cost = self.evaluator.evaluate(arch)
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
        if reward > t.best_reward:
            t.best_arch, t.best_reward = arch, reward
        t.history.append({
            "arch": arch, "reward": reward, "cost": cost, "spent_seconds": t.spent_seconds,
            "evaluations": t.evaluations, "scored": t.proxy_calls, "score": score,
            "best_arch": t.best_arch, "best_reward": t.best_reward,
        })
        self.progress(spent=t.spent_seconds, evaluations=t.evaluations, best=t.best_reward)
        return reward


@contextlib.contextmanager
def _progress_bar(enabled: bool, name: str, budget: Budget) -> Iterator[Callable[..., None]]:
    """A rich progress bar over the budget (seconds if limited, else evaluations); a no-op when disabled."""
    if not enabled:
        yield lambda **_: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    by_seconds = budget.max_seconds is not None
    total = budget.max_seconds if by_seconds else budget.max_evaluations
    columns = (TextColumn(f"[bold]{name}[/]"), BarColumn(),
               TextColumn("{task.completed:.0f}/{task.total:.0f} " + ("s" if by_seconds else "evals")),
               TextColumn("evals={task.fields[evals]} best={task.fields[best]}"), TimeElapsedColumn())
    with Progress(*columns) as bar:
        task = bar.add_task(name, total=total, evals=0, best="-")

        def update(*, spent: float, evaluations: int, best: float) -> None:
            bar.update(task, completed=min(spent if by_seconds else evaluations, total), evals=evaluations,
                       best=f"{best:.4g}")

        yield update


# ------------------------------------------------------------------------------------------------- validation


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_float(name: str, value: Any, low: float, high: float, *, low_open: bool = True,
                 high_open: bool = False) -> None:
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

    def run(self, space: CellSpace, evaluator: Evaluator, budget: Budget, *, seed: int,
            scorer: Scorer | None = None, progress: bool = False) -> SearchTrace:
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
            raise ValueError(f"seed must be an integer, got {seed!r}")  # noqa: TRY004
        budget.validate()
        if self.assisted and scorer is None:
            raise ValueError(f"{self.name} needs a scorer: pass scorer=...")
        with _progress_bar(progress, self.name, budget) as update:
            ledger = _Ledger(self.name, seed, budget, evaluator, scorer if self.assisted else None,
                             self._settings(), update)
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
            raise ValueError(f"assisted_init must be a bool, got {self.assisted_init!r}")  # noqa: TRY004
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

    def __init__(self, shape: tuple[int, ...], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
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


def hyperband_bracket_sizes(min_fidelity: float, max_fidelity: float, eta: int) -> list[int]:
    """Configurations in the first rung of each Hyperband bracket, most exploratory first (Li et al. 2018).

    ``s_max`` is the largest ``s`` with ``min_fidelity * eta**s <= max_fidelity``; bracket ``s`` (``s_max`` down to
    0) starts ``ceil((s_max + 1) * eta**s / (s + 1))`` configurations. NAS-Bench-201 BOHB (12, 200, 3) -> [9, 5, 3].
    """
    s_max = 0
    while min_fidelity * eta ** (s_max + 1) <= max_fidelity:
        s_max += 1
    return [-(-((s_max + 1) * eta**s) // (s + 1)) for s in range(s_max, -1, -1)]


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
    """BOHB-style search with optuna's TPE over one categorical op per edge, and its assisted variant G-BOHB.

    **Fidelity.** BOHB (Falkner et al. 2018) runs Hyperband over a fidelity (epochs) and fits its density model
    on the results. The tabular :class:`Evaluator` gives one reward per architecture, with no learning curve, so
    there is nothing to stop early and no lower-fidelity measurement to promote from. The NAS-Bench-201 reference
    (``exps/algos/BOHB.py``: ``min_budget=12, max_budget=200, eta=3``) ignores the budget too: its worker returns
    the same 12-epoch accuracy at every budget and charges the full cost again each time a configuration is
    promoted. Here no evaluation is repeated and no pruner is attached (``optuna.pruners.HyperbandPruner`` would
    have no intermediate values to act on); Hyperband only sets the *round sizes*: rounds cycle through the
    brackets of :func:`hyperband_bracket_sizes` ``(min_fidelity, max_fidelity, eta)`` (defaults: 9, 5, 3, 9, ...),
    and a round asks TPE for all its configurations before telling any result, so TPE's model is refit between
    rounds, as BOHB's is between Hyperband iterations. ``min_fidelity``/``max_fidelity`` are therefore epochs in
    name only: they and ``eta`` only shape these round sizes. A multi-fidelity evaluator (e.g. an
    ``evaluate_at(arch, epochs)``) is not supported.

    Each configuration: ``study.ask()``, then ``trial.suggest_categorical(f"edge{e}", range(num_ops))`` per edge,
    evaluated; rewards are told (maximised) at the end of the round. Model: ``optuna.samplers.TPESampler(seed=seed,
    n_startup_trials=n_startup_trials)`` (optuna defaults otherwise; the reference's hpbandster KDE settings --
    ``random_fraction=0.33``, ``num_samples=64``, ``bandwidth_factor=3``, ``min_bandwidth=0.3`` -- have no exact
    counterpart). Deterministic for a seed (single-threaded, in-memory study).

    Assisted (``"g-bohb"``): each configuration TPE would propose is replaced by the best-scoring of ``pool_size``
    TPE proposals (``pool_size`` asks from the same model state); the chosen trial is evaluated and told with its
    reward, the others are told ``FAIL`` right away (TPE ignores failed trials, so proxy-rejected proposals neither
    count as good nor as bad). This departs from the authors' code (``hpbandster/.../config_generators/bohb.py``),
    which discards the KDE proposal and returns the best-scoring of 10 *uniformly random* architectures -- i.e.
    G-RS driven by Hyperband.

    Args:
        min_fidelity: smallest Hyperband budget (NAS-Bench-201: 12); > 0.
        max_fidelity: largest Hyperband budget (NAS-Bench-201: 200); >= ``min_fidelity``.
        eta: Hyperband reduction factor (NAS-Bench-201: 3); integer >= 2.
        n_startup_trials: random trials before TPE models (optuna default 10); >= 0.
        pool_size: TPE proposals scored per evaluation (assisted only; authors: 10 random archs); >= 1.
        assisted: set by the registry name.
    """

    min_fidelity: float = 12
    max_fidelity: float = 200
    eta: int = 3
    n_startup_trials: int = 10
    pool_size: int = 10
    assisted: bool = False

    def __post_init__(self) -> None:
        _check_float("min_fidelity", self.min_fidelity, 0.0, math.inf, high_open=True)
        _check_float("max_fidelity", self.max_fidelity, 0.0, math.inf, high_open=True)
        if self.max_fidelity < self.min_fidelity:
            raise ValueError(f"max_fidelity ({self.max_fidelity}) must be >= min_fidelity ({self.min_fidelity})")
        _check_int("eta", self.eta, 2)
        _check_int("n_startup_trials", self.n_startup_trials, 0)
        _check_int("pool_size", self.pool_size, 1)
        self.name = "g-bohb" if self.assisted else "bohb"

    def _search(self, space: CellSpace, ledger: _Ledger, seed: int) -> None:
        import optuna
        from optuna.trial import TrialState

        rounds = hyperband_bracket_sizes(self.min_fidelity, self.max_fidelity, self.eta)
        choices = list(range(space.num_ops))

        def propose() -> tuple[optuna.Trial, str]:
            trial = study.ask()
            ops = [trial.suggest_categorical(f"edge{e}", choices) for e in range(space.num_edges)]
            return trial, space.decode(ops)

        with _quiet_optuna():
            sampler = optuna.samplers.TPESampler(seed=seed % (2**32), n_startup_trials=self.n_startup_trials)
            study = optuna.create_study(direction="maximize", sampler=sampler)
            bracket = 0
            while not ledger.exhausted():
                done: list[tuple[optuna.Trial, float]] = []
                stop = False
                for _ in range(rounds[bracket % len(rounds)]):
                    if ledger.exhausted():
                        stop = True
                        break
                    if self.assisted:
                        proposals = [propose() for _ in range(self.pool_size)]
                        i, score = ledger.best_index([a for _, a in proposals])
                        chosen, arch = proposals[i]
                        for j, (t, _) in enumerate(proposals):
                            if j != i:
                                study.tell(t, state=TrialState.FAIL)
                    else:
                        chosen, arch = propose()
                        score = None
                    reward = ledger.evaluate(arch, score)
                    if reward is None:
                        stop = True
                        break
                    done.append((chosen, reward))
                for trial, reward in done:
                    study.tell(trial, reward)
                if stop:
                    return
                bracket += 1


# ------------------------------------------------------------------------------------------------ registration


def _factory(cls: type, assisted: bool, exclude: tuple[str, ...]) -> StrategyFactory:
    allowed = [f.name for f in dataclasses.fields(cls) if f.name != "assisted" and f.name not in exclude]

    def make(**kwargs: Any) -> Strategy:
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown:
            name = cls.__name__
            raise TypeError(f"{'g-' if assisted else ''}{name} got unexpected keyword(s) {', '.join(unknown)}; "
                            f"it takes: {', '.join(allowed) or 'none'}")
        return cls(assisted=assisted, **kwargs)

    make.__doc__ = cls.__doc__
    return make


for _name, _cls in (("rs", RandomSearch), ("rea", RegularizedEvolution), ("reinforce", Reinforce), ("bohb", Bohb)):
    register_strategy(_name)(_factory(_cls, False, _cls.assisted_only))
    register_strategy(f"g-{_name}")(_factory(_cls, True, ()))
