"""Tabular NAS-Bench-201 for NAS algorithms: a cell space, a simulated trainer and cached proxy scores.

* :class:`NB201CellSpace` - the 5^6 = 15625 NB-201 cells as a ``CellSpace`` (sample / mutate / encode / decode),
  optionally restricted to a subset of archs (those a proxy cache has scores for).
* :class:`TabularEvaluator` - "training" an arch is a table lookup: the reward is its 12-epoch validation accuracy
  (the NAS-Bench-201 paper's protocol for REA, RS, REINFORCE and BOHB: ``hp='12'`` on ``cifar10-valid``) and the
  cost is a *simulated* number of seconds (see :class:`ParamsCostModel`), charged against the search budget. For
  multi-fidelity strategies (BOHB) it also trains to 200 epochs (``evaluate_at(arch, 200)``: the 200-epoch
  validation accuracy, at ``200 / 12`` times the 12-epoch cost).
* :class:`CachedScorer` - a proxy's scores read from a ``gradsign-bench correlate`` cache directory.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gradsign_pl.proxies.ensemble import is_ensemble_spec, parse_ensemble, rank_ensemble
from gradsign_pl.spaces.nb201 import N_EDGES, OPS, NB201Table, arch_from_ops, load_table, ops_of, parse_arch

# ------------------------------------------------------------------------------------------------ space


class NB201CellSpace:
    """The NB-201 cell space: 6 edges x 5 operations, archs as NB-201 arch strings.

    Args:
        archs: restrict the space to these archs (e.g. the ones a proxy cache holds scores for); ``None``: all
            15625 cells. With a subset, :meth:`sample` draws uniformly from it, and :meth:`mutate` changes one
            random edge as usual; when that arch is not in the subset, it returns the subset arch nearest to it
            (fewest differing edges; the parent itself excluded; ties broken with ``rng``), so mutations stay
            local but never get stuck: a sparse subset (~1000 of 15625 archs) has 200 isolated archs and small
            islands under one-edge moves, on which a neighbours-only mutation (with random restarts) made
            REA plateau early. ``restarts`` counts the mutations that needed this projection.
            :meth:`decode` of an encoding outside the subset (strategies that propose ops per edge,
            such as BOHB's TPE or REINFORCE's policy) *projects* it the same way (ties broken by a deterministic
            hash of the encoding); ``projections`` counts them. The strategy then learns from the projected
            arch's reward under the proposed encoding.
    """

    num_edges = N_EDGES
    num_ops = len(OPS)

    def __init__(self, archs: Sequence[str] | None = None) -> None:
        self.subset: tuple[str, ...] | None = None
        self._members: set[str] | None = None
        self.restarts = 0
        self.projections = 0
        self._codes: np.ndarray | None = None
        if archs is not None:
            unique = list(dict.fromkeys(archs))
            for a in unique:
                parse_arch(a)
            if not unique:
                raise ValueError("NB201CellSpace needs at least one arch in its subset")
            self.subset = tuple(unique)
            self._members = set(unique)
            self._pos = {a: i for i, a in enumerate(unique)}
            self._codes = np.array([self.encode(a) for a in unique], dtype=np.int8)

    def __len__(self) -> int:
        return len(self.subset) if self.subset is not None else self.num_ops**self.num_edges

    def __contains__(self, arch: object) -> bool:
        if self._members is not None:
            return arch in self._members
        try:
            parse_arch(arch)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
        return True

    def sample(self, rng: random.Random) -> str:
        """A uniformly random arch (of the subset, when restricted)."""
        if self.subset is not None:
            return self.subset[rng.randrange(len(self.subset))]
        return arch_from_ops([OPS[rng.randrange(self.num_ops)] for _ in range(self.num_edges)])

    def neighbours(self, arch: str) -> list[str]:
        """Every arch that differs from ``arch`` on exactly one edge (24 of them), in the subset when restricted."""
        ops = list(ops_of(arch))
        out = []
        for e in range(self.num_edges):
            for op in OPS:
                if op != ops[e]:
                    cand = arch_from_ops(ops[:e] + [op] + ops[e + 1 :])
                    if self._members is None or cand in self._members:
                        out.append(cand)
        return out

    def mutate(self, arch: str, rng: random.Random) -> str:
        """Change the operation of one random edge to another random operation (see the class for subsets)."""
        if self.subset is None:
            ops = list(ops_of(arch))
            e = rng.randrange(self.num_edges)
            ops[e] = rng.choice([op for op in OPS if op != ops[e]])
            return arch_from_ops(ops)
        assert self._codes is not None and self.subset is not None and self._members is not None
        codes = list(self.encode(arch))
        e = rng.randrange(self.num_edges)
        codes[e] = rng.choice([o for o in range(self.num_ops) if o != codes[e]])
        child = arch_from_ops([OPS[o] for o in codes])
        if child in self._members or len(self.subset) == 1:
            return child if child in self._members else self.subset[0]
        self.restarts += 1
        dist = (self._codes != np.asarray(codes, dtype=np.int8)).sum(axis=1)
        if arch in self._pos:
            dist[self._pos[arch]] = self.num_edges + 1  # never the parent itself
        ties = np.flatnonzero(dist == dist.min())
        return self.subset[int(ties[rng.randrange(len(ties))])]

    def encode(self, arch: str) -> tuple[int, ...]:
        """Operation index (into :data:`OPS`) of each of the 6 edges, in arch-string order."""
        return tuple(OPS.index(op) for op in ops_of(arch))

    def decode(self, ops: Sequence[int]) -> str:
        """Inverse of :meth:`encode` (with a subset: the nearest subset arch, see the class docstring)."""
        if len(ops) != self.num_edges or any(not 0 <= int(o) < self.num_ops for o in ops):
            raise ValueError(f"an NB-201 encoding is {self.num_edges} op indices in [0, {self.num_ops}), got {ops!r}")
        arch = arch_from_ops([OPS[int(o)] for o in ops])
        if self._members is None or arch in self._members:
            return arch
        assert self._codes is not None and self.subset is not None
        code = np.asarray([int(o) for o in ops], dtype=np.int8)
        dist = (self._codes != code).sum(axis=1)
        ties = np.flatnonzero(dist == dist.min())
        self.projections += 1
        return self.subset[int(ties[zlib.crc32(code.tobytes()) % len(ties)])]


# -------------------------------------------------------------------------------------------- evaluator

NB201_EPOCH_SECONDS = 9.14
"""Mean seconds per training epoch of an NB-201 arch on ``cifar10-valid`` (25k training images, batch 256, the
benchmark's GPUs), as read from NATS-Bench's ``train-per-time`` averaged over 15000 archs with
``get_more_info(idx, 'cifar10-valid')`` (whose default is ``hp='12'``). Source: a third-party measurement,
Mirofil/SOTL_NAS ``nasbench.py`` ("The avg is 9.14s per epoch"); we could not check it against the benchmark file,
which is not available here. The NB-201 baselines charge ``train-all-time + valid-per-time`` of the ``hp='12'``
run per evaluation (D-X-Y/AutoDL-Projects ``R_EA.py``, ``train_and_eval``)."""

NB201_EPOCHS = 12
"""Epochs of the NB-201 runs the search reward comes from (``hp='12'``), and that :class:`ParamsCostModel` costs."""

NB201_FULL_EPOCHS = 200
"""Epochs of NB-201's full training (``hp='200'``), whose accuracies the tables report."""


@dataclasses.dataclass(frozen=True)
class ParamsCostModel:
    """Simulated seconds to train an arch for 12 epochs (our table has no per-arch training times).

    ``cost = mean_seconds * (fixed_fraction + (1 - fixed_fraction) * params / mean(params))``, so that the mean
    over all archs of the table is exactly ``mean_seconds`` (default ``12 * 9.14 s = 109.7 s``, see
    :data:`NB201_EPOCH_SECONDS`). ``fixed_fraction`` is the part of the time that does not scale with the
    parameters (data loading, the stem/reduction blocks, parameter-free pooling and skip ops, evaluation);
    0.5 is an assumption, not a measurement. With a 12000 s budget a search makes about 110 evaluations.
    """

    mean_seconds: float = NB201_EPOCHS * NB201_EPOCH_SECONDS
    fixed_fraction: float = 0.5
    params_column: str = "params_m_cifar10"

    def costs(self, table: NB201Table) -> np.ndarray:
        if self.mean_seconds <= 0 or not 0.0 <= self.fixed_fraction <= 1.0:
            raise ValueError(f"need mean_seconds > 0 and 0 <= fixed_fraction <= 1, got {self}")
        params = table.column(self.params_column).copy()
        bad = ~np.isfinite(params)
        params[bad] = np.nanmean(params)
        rel = params / params.mean()
        return self.mean_seconds * (self.fixed_fraction + (1.0 - self.fixed_fraction) * rel)


REPORT_COLUMNS = (
    "cifar10_valid",
    "cifar10_test",
    "cifar100_valid",
    "cifar100_test",
    "imagenet16_valid",
    "imagenet16_test",
)
"""The 200-epoch accuracies Tables 5.4 / 5.5 report, in their column order."""


class TabularEvaluator:
    """``evaluate(arch) -> (reward %, simulated seconds)`` from the NB-201 table, at one or several fidelities.

    A :class:`~gradsign_pl.search.strategies.MultiFidelityEvaluator`: ``fidelities`` are the training epochs the
    table has results for, ascending -- by default 12 (``{dataset}_{reward}``, NB-201's ``hp='12'`` validation
    accuracy) and 200 (``{dataset}_valid``, the full training's validation accuracy; present when the table has
    that column). ``evaluate(arch)`` is the lowest fidelity. Training to ``e`` epochs costs the cost model's
    seconds times ``e / cost_epochs``: the cost model gives seconds for ``cost_epochs`` (12) epochs, so a
    200-epoch evaluation costs ``200 / 12`` times a 12-epoch one (the table has no per-arch training times, see
    :class:`ParamsCostModel`; time proportional to epochs is an assumption).

    Args:
        table: an :class:`NB201Table`, or a path for :func:`load_table` (``None``: the data directory).
        dataset: ``cifar10``, ``cifar100`` or ``imagenet16`` - the search dataset.
        reward: column suffix of the 12-epoch reward, default ``valid_12ep`` (used when ``fidelities`` is not
            given).
        cost_model: anything with ``costs(table) -> array`` of seconds per arch for ``cost_epochs`` epochs
            (default :class:`ParamsCostModel`).
        fidelities: epochs -> column suffix of the validation accuracy after training that long (default
            ``{12: reward, 200: "valid"}``, without 200 when the table lacks the column).
        cost_epochs: the epochs the cost model's seconds are for (> 0).
    """

    def __init__(
        self,
        table: NB201Table | str | os.PathLike | None = None,
        dataset: str = "cifar10",
        reward: str = "valid_12ep",
        cost_model: Any = None,
        *,
        fidelities: Mapping[float, str] | None = None,
        cost_epochs: float = NB201_EPOCHS,
    ) -> None:
        self.table = table if isinstance(table, NB201Table) else load_table(table)
        self.dataset = dataset
        if fidelities is None:
            fidelities = {NB201_EPOCHS: reward}
            if f"{dataset}_valid" in self.table.columns and reward != "valid":
                fidelities[NB201_FULL_EPOCHS] = "valid"
        if not fidelities or any(not (isinstance(e, (int, float)) and 0 < e < math.inf) for e in fidelities):
            raise ValueError(f"fidelities must map epochs > 0 to column suffixes, got {fidelities!r}")
        if not (isinstance(cost_epochs, (int, float)) and 0 < cost_epochs < math.inf):
            raise ValueError(f"cost_epochs must be a positive number, got {cost_epochs!r}")
        self.fidelities: tuple[float, ...] = tuple(sorted(fidelities))
        self.fidelity_columns = {e: f"{dataset}_{fidelities[e]}" for e in self.fidelities}
        self._rewards = {e: self.table.column(c) for e, c in self.fidelity_columns.items()}
        self.reward_column = self.fidelity_columns[self.fidelities[0]]
        self.rewards = self._rewards[self.fidelities[0]]
        self.cost_epochs = cost_epochs
        self.cost_model = cost_model if cost_model is not None else ParamsCostModel()
        self.costs = np.asarray(self.cost_model.costs(self.table), dtype=np.float64)

    @property
    def settings(self) -> dict[str, Any]:
        """What the rewards and costs depend on (for resume checks)."""
        model = (
            dataclasses.asdict(self.cost_model)
            if dataclasses.is_dataclass(self.cost_model) and not isinstance(self.cost_model, type)
            else repr(self.cost_model)
        )
        return {
            "reward": self.reward_column,
            "cost_model": model,
            "table_rows": len(self.table),
            "fidelities": {f"{e:g}": c for e, c in self.fidelity_columns.items()},
            "cost_epochs": self.cost_epochs,
        }

    def evaluate(self, arch: str) -> tuple[float, float]:
        """``(reward %, seconds)`` at the lowest fidelity (12 epochs by default)."""
        return self.evaluate_at(arch, self.fidelities[0])

    def evaluate_at(self, arch: str, fidelity: float) -> tuple[float, float]:
        """``(validation accuracy %, simulated seconds)`` of training ``arch`` for ``fidelity`` epochs (one of
        :attr:`fidelities`): the cost model's seconds scaled by ``fidelity / cost_epochs``."""
        if fidelity not in self._rewards:
            raise ValueError(f"no results after {fidelity!r} epochs in the table; fidelities: {self.fidelities}")
        i = self.table.index_of(arch)
        return float(self._rewards[fidelity][i]), float(self.costs[i] * fidelity / self.cost_epochs)

    def report(self, arch: str) -> dict[str, float]:
        """The 200-epoch validation/test accuracies of ``arch`` on the three datasets (:data:`REPORT_COLUMNS`)."""
        i = self.table.index_of(arch)
        return {c: float(self.table.column(c)[i]) for c in REPORT_COLUMNS if c in self.table.columns}


# ---------------------------------------------------------------------------------------------- scorer

DEFAULT_SCORING_SECONDS = 1.0
"""Scoring time charged per arch when a cache record has no ``seconds`` field."""

CORRELATE_HINT = "run gradsign-bench correlate --dataset cifar10 --n_archs 1000 first"


class CachedScorer:
    """``scorer(arch) -> (score, seconds)`` for one proxy, read from a ``gradsign-bench correlate`` cache.

    The cache (``scores.jsonl`` + ``meta.json``, :class:`~gradsign_pl.scoring.cache.ScoreCache`) keys candidates
    by their **NB-201 benchmark index** as a string (``"9090"``); the table maps indices to arch strings. A key
    that is not an integer is taken to be an arch string. ``seconds`` is the scoring time recorded in the cache
    (measured on the machine that ran ``correlate``) unless ``seconds`` is given; records without one are
    charged :data:`DEFAULT_SCORING_SECONDS`. A failed score (``null`` in the cache) becomes ``failed_score``
    (default ``-inf``: ranked last by a maximising search).

    A rank ensemble of cached proxies (``[log_rank|mean_rank:]a+b[+...]`` or a named one such as ``az_nas``) is
    combined over the archs all its parts have a record for (each part's failed scores ranked last), in the first
    part's order, and charged the sum of its parts' seconds.

    Args:
        cache_dir: the correlate output directory.
        proxy: proxy name as cached (``gradsign``, ``synflow``, ``naswot``, ...), or a rank ensemble of them.
        table: NB-201 table or its path (to map indices to archs); ``None``: the data directory.
        seconds: constant scoring time per arch instead of the recorded ones.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        proxy: str,
        table: NB201Table | str | os.PathLike | None = None,
        *,
        seconds: float | None = None,
        failed_score: float = -math.inf,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.proxy = proxy
        self.calls = 0
        if is_ensemble_spec(proxy) or proxy == "ensemble":
            self._combine(proxy, table, seconds)
            return
        records, self.meta = read_cache(self.cache_dir)
        mine = [r for r in records if r["proxy"] == proxy]
        if not mine:
            proxies = sorted({r["proxy"] for r in records})
            raise KeyError(f"proxy {proxy!r} has no scores in {self.cache_dir}; cached proxies: {', '.join(proxies)}")
        needs_table = any(str(r["candidate"]).isdigit() for r in mine)
        if needs_table and not isinstance(table, NB201Table):
            table = load_table(table)
        self._scores: dict[str, float] = {}
        self._seconds: dict[str, float] = {}
        for r in mine:
            key = str(r["candidate"])
            if key.isdigit():
                idx = int(key)
                if idx >= len(table):  # type: ignore[arg-type]
                    raise ValueError(f"{self.cache_dir}: candidate index {idx} is outside the NB-201 table")
                arch = table.archs[idx]  # type: ignore[union-attr]
            else:
                parse_arch(key)
                arch = key
            score = r.get("score")
            self._scores[arch] = float(score) if score is not None else failed_score
            rec_seconds = r.get("seconds")
            self._seconds[arch] = float(
                seconds if seconds is not None else rec_seconds if rec_seconds is not None else DEFAULT_SCORING_SECONDS
            )

    def _combine(self, spec: str, table: NB201Table | str | os.PathLike | None, seconds: float | None) -> None:
        method, parts = parse_ensemble(spec)
        if not isinstance(table, NB201Table):
            table = load_table(table)
        scorers = [CachedScorer(self.cache_dir, p, table, seconds=seconds, failed_score=math.nan) for p in parts]
        self.meta = scorers[0].meta
        common = set.intersection(*(set(s.archs) for s in scorers))
        archs = [a for a in scorers[0].archs if a in common]
        combined = rank_ensemble({p: [s._scores[a] for a in archs] for p, s in zip(parts, scorers)}, method)
        self._scores = dict(zip(archs, (float(c) for c in combined)))
        self._seconds = {a: math.fsum(s._seconds[a] for s in scorers) for a in archs}

    @property
    def archs(self) -> list[str]:
        """The archs this proxy has a cached record for (failed ones included), in cache order."""
        return list(self._scores)

    def scores(self) -> dict[str, float]:
        """arch -> score (failed scores as ``failed_score``)."""
        return dict(self._scores)

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "cache_dir": str(self.cache_dir),
            "proxy": self.proxy,
            "cache_meta": self.meta,
            "n_archs": len(self._scores),
        }

    def __contains__(self, arch: object) -> bool:
        return arch in self._scores

    def __call__(self, arch: str) -> tuple[float, float]:
        try:
            score = self._scores[arch]
        except KeyError:
            raise KeyError(
                f"arch {arch!r} has no cached {self.proxy} score in {self.cache_dir} ({len(self._scores)} archs "
                "cached); restrict the search space to scorer.archs, or score more archs with gradsign-bench correlate"
            ) from None
        self.calls += 1
        return score, self._seconds[arch]


def read_cache(cache_dir: str | os.PathLike) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The records of a score cache directory under its latest settings, and those settings (read-only).

    A thin wrapper of :meth:`~gradsign_pl.scoring.cache.ScoreCache.read` that names the command building the cache
    when there is none, or when it holds no record under its latest settings. Records written under earlier
    settings of the same directory are not returned.
    """
    from gradsign_pl.scoring.cache import ScoreCache

    try:
        cache = ScoreCache.read(cache_dir)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no proxy score cache at {cache_dir} (no readable meta.json); {CORRELATE_HINT}"
        ) from None
    records = cache.records()
    if not records:
        raise FileNotFoundError(
            f"the proxy score cache {cache_dir} holds no scores under its latest settings; {CORRELATE_HINT}"
        )
    return records, cache.meta
