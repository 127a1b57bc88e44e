"""ZenNAS-style evolutionary search over any mutable search space, scored by a zero-cost proxy.

The loop follows ``evolution_search.py`` of ZenNAS (Lin et al., ICCV 2021), generic over a :class:`MutableSpace`:

* The population is a list of ``(structure, score)`` pairs in insertion order; it starts **empty** (the initial
  structure is a mutation seed, never a member, and is never scored).
* Every iteration is one mutation attempt, so ``iterations`` counts attempts, rejected ones included
  (ZenNAS ``evolution_max_iter``):

  1. parent: while the population holds at most 10 members, the initial structure mutated with 1 replaced block;
     otherwise a uniformly drawn member mutated with 2 replaced blocks;
  2. the candidate is rejected (the iteration is spent, nothing is added) if it exceeds ``max_layers``, then
     ``max_params``, then ``max_flops`` -- checked in that order, each only when its budget is set; a budget is
     inclusive (``value <= budget`` passes);
  3. otherwise it is scored by ``fitness`` and appended (duplicates are allowed, as in ZenNAS);
  4. while the population holds more than ``population_size`` members, the lowest-scoring one is dropped (the
     first such in insertion order when scores tie).

Deviations from ZenNAS, all deliberate:

* ZenNAS trims at the *start* of the next iteration, so its final population can hold ``population_size + 1``
  members; here the trim happens right after the append. Every parent selection sees the same population, only
  the final population differs (it never exceeds ``population_size``).
* ZenNAS appends a failed score as ``-9999``; here a candidate whose fitness raises or is not finite is rejected
  (reason ``"nan"``) and a candidate whose mutation or size computation raises is rejected (reason
  ``"invalid"``). If the first :data:`MAX_INITIAL_FAILURES` such failures happen before any candidate was scored,
  the search stops with a ``RuntimeError`` naming the last error (a typo would otherwise burn hours).
* The latency budget and the "skip if best_structure.txt exists" shortcut of ZenNAS are left out.
* Randomness comes from one ``random.Random(settings.seed)`` (mutations and parent draws), so a search is
  reproducible and can be checkpointed and resumed exactly.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from gradsign_pl.executors import Executor, create_executor

#: While the population holds at most this many members, candidates mutate the initial structure (ZenNAS: 10).
SEED_POPULATION = 10
#: Blocks replaced when mutating the initial structure (ZenNAS: 1).
INIT_REPLACES = 1
#: Blocks replaced when mutating a population member (ZenNAS: 2).
MEMBER_REPLACES = 2
#: Failures (``"invalid"`` or ``"nan"``) tolerated before the first successfully scored candidate.
MAX_INITIAL_FAILURES = 20
#: At most this many seconds between checkpoint writes while candidates are being rejected (every scored
#: candidate is checkpointed at once; a rejected iteration is cheap to redo).
CHECKPOINT_INTERVAL_S = 2.0
#: Version of the checkpoint file format.
CHECKPOINT_VERSION = 1

REJECTION_REASONS = ("params", "flops", "layers", "invalid", "nan")


@runtime_checkable
class MutableSpace(Protocol):
    """A search space whose architectures are strings that can be mutated, sized and built.

    Attributes:
        name: name of the space (stored in checkpoints and reports).
        initial_structure: the structure mutations start from while the population is small.
    """

    name: str
    initial_structure: str

    def mutate(self, structure: str, rng: random.Random, num_replaces: int = 1) -> str:
        """A new structure: ``structure`` with ``num_replaces`` blocks replaced, drawing only from ``rng``."""

    def params(self, structure: str, num_classes: int) -> int:
        """Number of scalar parameters of the network with a ``num_classes``-way head."""

    def flops(self, structure: str, resolution: int, num_classes: int) -> int:
        """FLOPs of one forward pass of one ``resolution`` x ``resolution`` image (the space's convention)."""

    def layers(self, structure: str) -> int:
        """Number of layers, as the space counts them (compared with ``max_layers``)."""

    def build(self, structure: str, num_classes: int, in_chans: int = 3) -> nn.Module:
        """A freshly initialised network (draws its initial weights from the global torch RNG)."""


@dataclasses.dataclass
class EvolutionSettings:
    """Settings of :func:`evolution_search`; a checkpoint can only be resumed with identical settings.

    Attributes:
        iterations: mutation attempts, rejected ones included (ZenNAS ``evolution_max_iter``); >= 1.
        population_size: most members kept (ZenNAS ``population_size``); >= 1.
        max_params: largest allowed number of scalar parameters (inclusive), or ``None`` for no limit.
        max_flops: largest allowed FLOPs per image at ``resolution`` (inclusive), in the space's FLOPs
            convention (see ``MutableSpace.flops``), or ``None`` for no limit.
        max_layers: largest allowed layer count (inclusive), as ``MutableSpace.layers`` counts, or ``None``.
        resolution: input image side in pixels, used for the FLOPs budget; >= 1.
        num_classes: width of the classifier head, used for the params/FLOPs budgets; >= 1.
        seed: seed of the ``random.Random`` that draws mutations and parents.
        init_structure: the structure to mutate from; ``None`` means ``space.initial_structure``.
        batch: candidates drawn per step from the same population and scored together, so an executor can score
            them at once (``evolution_search(executor="ray")``); 1 (the default) is the ZenNAS loop exactly. The
            result depends on ``batch``, never on the executor; >= 1.
    """

    iterations: int = 1000
    population_size: int = 64
    max_params: float | None = None
    max_flops: float | None = None
    max_layers: int | None = None
    resolution: int = 32
    num_classes: int = 10
    seed: int = 0
    init_structure: str | None = None
    batch: int = 1

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        for name in ("iterations", "population_size", "resolution", "num_classes", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"EvolutionSettings.{name} must be an integer >= 1, got {value!r}")
        for name in ("max_params", "max_flops", "max_layers"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"EvolutionSettings.{name} must be a positive number or None, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"EvolutionSettings.seed must be an integer, got {self.seed!r}")
        if self.init_structure is not None and (not isinstance(self.init_structure, str) or not self.init_structure):
            raise ValueError(
                f"EvolutionSettings.init_structure must be a non-empty string or None, got {self.init_structure!r}"
            )


@dataclasses.dataclass
class SearchResult:
    """Outcome of :func:`evolution_search`.

    Attributes:
        population: final ``(structure, score)`` members, best first (ties keep insertion order).
        history: one dict per iteration: ``iteration`` (0-based), ``best_score`` (best score seen so far, ``None``
            before the first), ``candidate_score`` (``None`` when rejected), ``status`` (``"ok"`` or the rejection
            reason) and ``population_size`` (after the iteration).
        evaluated: candidates scored and added (``evaluated + sum(rejected.values()) == len(history)``).
        rejected: rejected candidates per reason: ``"params"``, ``"flops"``, ``"layers"`` (over budget),
            ``"invalid"`` (mutation or size computation raised), ``"nan"`` (fitness raised or was not finite).
        settings: the settings of the search.
        space_name: ``space.name``.
        last_error: the last exception met (``"Type: message"``), or ``None``.
        space: the space searched, used by :meth:`write` to report sizes (not compared, not serialised).
    """

    population: list[tuple[str, float]]
    history: list[dict[str, Any]]
    evaluated: int
    rejected: dict[str, int]
    settings: EvolutionSettings | None = None
    space_name: str | None = None
    last_error: str | None = None
    space: MutableSpace | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def best(self) -> tuple[str, float]:
        """The best ``(structure, score)``; ``ValueError`` when nothing was scored."""
        if not self.population:
            raise ValueError(self._empty_message())
        return self.population[0]

    def top(self, k: int) -> list[tuple[str, float]]:
        """The ``k`` best ``(structure, score)`` members (fewer if the population is smaller)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return list(self.population[:k])

    def _empty_message(self) -> str:
        counts = ", ".join(f"{r}: {n}" for r, n in self.rejected.items() if n)
        return (
            f"no candidate was scored in {len(self.history)} iterations (rejected: {counts or 'none'}); "
            "loosen the budgets or run more iterations"
        )

    def _sizes(self, structure: str) -> dict[str, int | None]:
        out: dict[str, int | None] = {"params": None, "flops": None, "layers": None}
        if self.space is None or self.settings is None:
            return out
        s = self.settings
        for key, fn in (
            ("params", lambda: self.space.params(structure, s.num_classes)),
            ("flops", lambda: self.space.flops(structure, s.resolution, s.num_classes)),
            ("layers", lambda: self.space.layers(structure)),
        ):
            with contextlib.suppress(Exception):
                out[key] = int(fn())
        return out

    def write(self, out_dir: str | Path, k: int = 5, *, extra: dict[str, Any] | None = None) -> dict[str, Path]:
        """Write the search outcome to ``out_dir`` (created if needed); returns the paths by kind.

        Files:
            ``best_structure.txt``: the best structure, one line.
            ``top_structures.txt``: the ``k`` best, one ``"score<TAB>structure"`` line each.
            ``search.json``: space name, settings, the ``k`` best with their params/FLOPs/layers (from
            ``extra["sizes"][structure]`` when given there, else recomputed with the space when known, else
            ``null``), counts and a history summary; ``extra`` (JSON-safe) is stored under ``"extra"``.
            ``history.csv``: ``iteration,best_score,candidate_score,status``, one row per iteration.
            ``best_score.png``: best score so far vs iteration.
        """
        if not self.population:
            raise ValueError(self._empty_message())
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "best_structure": out / "best_structure.txt",
            "top_structures": out / "top_structures.txt",
            "search_json": out / "search.json",
            "history_csv": out / "history.csv",
            "plot": out / "best_score.png",
        }
        top = self.top(k)
        paths["best_structure"].write_text(top[0][0] + "\n")
        paths["top_structures"].write_text("".join(f"{score!r}\t{s}\n" for s, score in top))

        given = (extra or {}).get("sizes", {}) or {}
        entries = []
        for rank, (s, score) in enumerate(top, 1):
            entry: dict[str, Any] = {"rank": rank, "structure": s, "score": score}
            entry.update(self._sizes(s) if s not in given else {})
            entry.update(given.get(s, {}))
            entries.append(entry)
        bests = [h["best_score"] for h in self.history if h["best_score"] is not None]
        final_best = top[0][1]
        reached = next((h["iteration"] for h in self.history if h["best_score"] == final_best), None)
        summary = {
            "iterations": len(self.history),
            "evaluated": self.evaluated,
            "rejected": dict(self.rejected),
            "first_best_score": bests[0] if bests else None,
            "final_best_score": final_best,
            "iteration_best_reached": reached,
            "population_size": len(self.population),
        }
        doc = {
            "space": self.space_name,
            "settings": dataclasses.asdict(self.settings) if self.settings is not None else None,
            "top": entries,
            "history_summary": summary,
            "last_error": self.last_error,
            "extra": extra,
        }
        paths["search_json"].write_text(json.dumps(doc, indent=2, default=str) + "\n")

        with paths["history_csv"].open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["iteration", "best_score", "candidate_score", "status"])
            for h in self.history:
                writer.writerow(
                    [h["iteration"], _csv_float(h["best_score"]), _csv_float(h["candidate_score"]), h["status"]]
                )

        _plot_best(self.history, paths["plot"], title=f"evolution search: {self.space_name or 'space'}")
        return paths


def _csv_float(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _plot_best(history: list[dict[str, Any]], path: Path, *, title: str) -> None:
    """Best score so far vs iteration, drawn with the Agg canvas (pyplot's global backend is not touched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = [(h["iteration"], h["best_score"]) for h in history if h["best_score"] is not None]
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if points:
        xs, ys = zip(*points)
        ax.step(xs, ys, where="post")
    ax.set_xlabel("iteration")
    ax.set_ylabel("best score so far")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


# ----------------------------------------------------------------------------------------------------- fitness


def proxy_fitness(
    proxy: str,
    x: Tensor,
    y: Tensor,
    space: MutableSpace,
    *,
    num_classes: int,
    in_chans: int,
    device: str | torch.device | None = None,
    init_seed: int = 0,
    **options: Any,
) -> Callable[[str], float]:
    """A fitness function: the zero-cost proxy ``proxy`` of a freshly built network on the batch ``(x, y)``.

    Each call scores ``space.build(structure, num_classes, in_chans)`` with
    :func:`gradsign_pl.scoring.core.score_model` under the authors' semantics (the cell-space policy), built under
    ``init_seed`` (so the same structure always gets the same initial weights and the caller's RNG state is left
    untouched), on ``device`` (default: ``x.device``), and returns the score -- ``nan`` when the structure could not
    be built or the proxy could not compute a value (:func:`evolution_search` counts those as rejected, reason
    ``"nan"``). ``options`` go to the proxy and are checked now.

    Scoring is sequential on the one ``device``; run one search per device to use several.
    """
    from gradsign_pl.proxies import check_options, get_proxy
    from gradsign_pl.scoring.core import score_model

    get_proxy(proxy)  # an unknown name fails now, listing the registered ones
    if get_proxy(proxy).set_level:
        raise ValueError(f"the {proxy!r} proxy ranks a set of models; pick a single proxy such as 'gradsign'")
    check_options(proxy, options, where="fitness")
    dev = torch.device(device) if device is not None else x.device
    x = x.to(dev)
    y = y.to(dev)

    def fitness(structure: str) -> float:
        scored = score_model(
            lambda: space.build(structure, num_classes=num_classes, in_chans=in_chans),
            x,
            y,
            [proxy],
            seed=init_seed,
            options={proxy: options},
            device=dev,
        )
        return float(scored.results[proxy].score)

    fitness.__doc__ = f"{proxy} score of a {space.name} structure (init seed {init_seed}, device {dev})."
    return fitness


# ------------------------------------------------------------------------------------------------------ search


def check_settings(space: MutableSpace, settings: EvolutionSettings) -> str:
    """Validate ``settings`` against ``space`` before any work (a ``ValueError`` names the bad field, or the
    budget the initial structure already exceeds); return the initial structure."""
    settings.validate()
    init = settings.init_structure if settings.init_structure is not None else space.initial_structure
    _check_initial(space, settings, init)
    return init


def _rng_state_to_json(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_state_from_json(data: list) -> tuple:
    version, internal, gauss = data
    return (version, tuple(internal), gauss)


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        json.dump(data, f, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclasses.dataclass
class _State:
    """Everything the loop carries between iterations (what a checkpoint stores)."""

    next_iteration: int
    population: list[tuple[str, float]]
    history: list[dict[str, Any]]
    evaluated: int
    rejected: dict[str, int]
    best: float | None
    last_error: str | None


def _checkpoint_doc(space: MutableSpace, settings: EvolutionSettings, state: _State, rng: random.Random) -> dict:
    return {
        "version": CHECKPOINT_VERSION,
        "space": space.name,
        "settings": dataclasses.asdict(settings),
        "next_iteration": state.next_iteration,
        "population": [[s, v] for s, v in state.population],
        "history": state.history,
        "evaluated": state.evaluated,
        "rejected": state.rejected,
        "best": state.best,
        "last_error": state.last_error,
        "rng_state": _rng_state_to_json(rng.getstate()),
    }


def _load_checkpoint(path: Path, space: MutableSpace, settings: EvolutionSettings, rng: random.Random) -> _State:
    doc = json.loads(path.read_text())
    if doc.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint {path} has format version {doc.get('version')!r}, expected "
            f"{CHECKPOINT_VERSION}; use a new checkpoint path"
        )
    expected = {"space": space.name, **dataclasses.asdict(settings)}
    stored = {"space": doc.get("space"), "batch": 1, **doc.get("settings", {})}  # batch: 1 before it existed
    differing = sorted(k for k in set(expected) | set(stored) if expected.get(k) != stored.get(k))
    if differing:
        details = ", ".join(f"{k} (checkpoint {stored.get(k)!r}, now {expected.get(k)!r})" for k in differing)
        raise ValueError(
            f"checkpoint {path} was written with different settings: {details}; use a new checkpoint "
            "path or matching settings"
        )
    rng.setstate(_rng_state_from_json(doc["rng_state"]))
    return _State(
        next_iteration=int(doc["next_iteration"]),
        population=[(s, float(v)) for s, v in doc["population"]],
        history=list(doc["history"]),
        evaluated=int(doc["evaluated"]),
        rejected={r: int(doc["rejected"].get(r, 0)) for r in REJECTION_REASONS},
        best=doc["best"],
        last_error=doc["last_error"],
    )


def _check_initial(space: MutableSpace, settings: EvolutionSettings, init: str) -> None:
    """``ValueError`` when the initial structure itself exceeds a budget (every early candidate derives from it)."""
    checks = (
        ("max_layers", settings.max_layers, lambda: space.layers(init), "layers"),
        ("max_params", settings.max_params, lambda: space.params(init, settings.num_classes), "parameters"),
        (
            "max_flops",
            settings.max_flops,
            lambda: space.flops(init, settings.resolution, settings.num_classes),
            f"FLOPs at resolution {settings.resolution}",
        ),
    )
    for field, budget, measure, unit in checks:
        if budget is None:
            continue
        value = measure()
        if value > budget:
            raise ValueError(
                f"the initial structure already exceeds {field}: it has {value:,} {unit} > {budget:,}; "
                f"pass a smaller init_structure or a larger {field}"
            )


def _draw(
    space: MutableSpace, settings: EvolutionSettings, init: str, state: _State, rng: random.Random
) -> tuple[str, str | None]:
    """One mutation from the current population: ``(candidate, None)`` to score, or ``(text, reason)`` rejected
    (counted in ``state``; ``text`` is the candidate or the error)."""
    population = state.population
    candidate = ""
    try:
        if len(population) <= SEED_POPULATION:
            candidate = space.mutate(init, rng, num_replaces=INIT_REPLACES)
        else:
            parent = population[rng.randrange(len(population))][0]
            candidate = space.mutate(parent, rng, num_replaces=MEMBER_REPLACES)
        if not isinstance(candidate, str) or not candidate:
            raise TypeError(f"{type(space).__name__}.mutate returned {candidate!r}, not a non-empty string")
        reason = None
        if settings.max_layers is not None and space.layers(candidate) > settings.max_layers:
            reason = "layers"
        elif settings.max_params is not None and space.params(candidate, settings.num_classes) > settings.max_params:
            reason = "params"
        elif (
            settings.max_flops is not None
            and space.flops(candidate, settings.resolution, settings.num_classes) > settings.max_flops
        ):
            reason = "flops"
    except Exception as err:
        state.last_error = _error_text(err)
        reason = "invalid"
    if reason is not None:
        state.rejected[reason] += 1
    return str(candidate), reason


def _fitness_of(structure: str, fitness: Callable[[str], float]) -> tuple[float | None, str | None]:
    """``(score, None)``, or ``(None, error)`` when ``fitness`` raised or was not finite (runs on the executor)."""
    try:
        value = float(fitness(structure))
        if not math.isfinite(value):
            raise ValueError(f"fitness returned {value} for {structure!r}")
    except Exception as err:
        return None, _error_text(err)
    return value, None


def _admit(
    settings: EvolutionSettings, state: _State, candidate: str, scored: tuple[float | None, str | None]
) -> tuple[str, float | None]:
    """Add a scored candidate (trimming the worst) or count its failure: ``("ok", score)`` or ``("nan", None)``."""
    value, error = scored
    if value is None:
        state.last_error = error
        state.rejected["nan"] += 1
        return "nan", None
    population = state.population
    population.append((candidate, value))
    state.evaluated += 1
    if state.best is None or value > state.best:
        state.best = value
    while len(population) > settings.population_size:
        scores = [v for _, v in population]
        population.pop(scores.index(min(scores)))
    return "ok", value


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int, completed: int, name: str) -> Iterator[Callable[..., None]]:
    """A rich progress bar (iteration, best score, population size); a no-op updater when disabled."""
    if not enabled:
        yield lambda **_: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[bold]evolution[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("best={task.fields[best]} pop={task.fields[pop]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as bar:
        task = bar.add_task(name, total=total, completed=completed, best="-", pop=0)

        def update(*, completed: int, best: float | None, pop: int) -> None:
            bar.update(task, completed=completed, best="-" if best is None else f"{best:.6g}", pop=pop)

        yield update


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def evolution_search(
    space: MutableSpace,
    fitness: Callable[[str], float],
    settings: EvolutionSettings,
    *,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    on_iteration: Callable[[int, float], None] | None = None,
    executor: str | Executor | None = None,
) -> SearchResult:
    """Run the ZenNAS evolutionary search (see the module docstring for the exact loop); higher fitness is better.

    Args:
        space: the space to search (mutations, sizes for the budgets).
        fitness: ``structure -> score`` (e.g. :func:`proxy_fitness`); should be deterministic for the search to
            be reproducible. Called once per candidate within budget, by ``executor``.
        settings: budgets, iterations, population size and seed (validated; ``ValueError`` names a bad field or
            an initial structure that already exceeds a budget).
        checkpoint: JSON file holding the search state; if it exists the search resumes from it (its settings
            must match, else ``ValueError``), and it is rewritten atomically after every scored candidate, at
            least every :data:`CHECKPOINT_INTERVAL_S` seconds otherwise, and at the end. A resumed search ends
            exactly as an uninterrupted one with the same seed and fitness.
        progress: show a rich progress bar (iteration, best score, population size); nothing is printed if False.
        on_iteration: called after every iteration with ``(iteration, best score so far)`` (``nan`` before the
            first scored candidate).
        executor: scores each step's ``settings.batch`` candidates (``"local"``, ``"ray"``: one Ray task each, see
            :mod:`gradsign_pl.executors`; ``fitness`` is shipped to the workers once). The search is the same
            under every executor; a step is checkpointed once all its candidates are folded in, so a kill mid-step
            redoes only that step.

    Returns:
        the :class:`SearchResult` (population best first, per-iteration history, counts).

    Raises:
        RuntimeError: the first :data:`MAX_INITIAL_FAILURES` failing candidates came before any success.
    """
    init = check_settings(space, settings)
    engine = create_executor(executor)

    rng = random.Random(settings.seed)
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.exists():
        state = _load_checkpoint(path, space, settings, rng)
    else:
        state = _State(0, [], [], 0, {r: 0 for r in REJECTION_REASONS}, None, None)

    def save() -> None:
        if path is not None:
            _write_json_atomic(path, _checkpoint_doc(space, settings, state, rng))

    last_save = time.monotonic()
    with _progress_bar(progress, settings.iterations, state.next_iteration, space.name) as update:
        update(completed=state.next_iteration, best=state.best, pop=len(state.population))
        it = state.next_iteration
        while it < settings.iterations:
            drawn = [
                _draw(space, settings, init, state, rng) for _ in range(min(settings.batch, settings.iterations - it))
            ]
            to_score = [c for c, reason in drawn if reason is None]
            scored = dict(engine.map(_fitness_of, to_score, shared={"fitness": fitness}))
            k = 0
            for candidate, reason in drawn:
                if reason is None:
                    status, value = _admit(settings, state, candidate, scored[k])
                    k += 1
                else:
                    status, value = reason, None
                state.history.append(
                    {
                        "iteration": it,
                        "best_score": state.best,
                        "candidate_score": value if status == "ok" else None,
                        "status": status,
                        "population_size": len(state.population),
                    }
                )
                it += 1
                if (
                    status in ("invalid", "nan")
                    and state.evaluated == 0
                    and state.rejected["invalid"] + state.rejected["nan"] >= MAX_INITIAL_FAILURES
                ):
                    state.next_iteration = it
                    save()
                    raise RuntimeError(
                        f"the first {MAX_INITIAL_FAILURES} candidates all failed (mutation, size or "
                        f"fitness raised or returned nan); last error: {state.last_error}"
                    )
                update(completed=it, best=state.best, pop=len(state.population))
                if on_iteration is not None:
                    on_iteration(it - 1, math.nan if state.best is None else state.best)
            state.next_iteration = it
            now = time.monotonic()
            if k or now - last_save >= CHECKPOINT_INTERVAL_S or it == settings.iterations:
                save()
                last_save = now

    order = sorted(range(len(state.population)), key=lambda i: -state.population[i][1])
    return SearchResult(
        population=[state.population[i] for i in order],
        history=state.history,
        evaluated=state.evaluated,
        rejected=dict(state.rejected),
        settings=dataclasses.replace(settings),
        space_name=space.name,
        last_error=state.last_error,
        space=space,
    )
