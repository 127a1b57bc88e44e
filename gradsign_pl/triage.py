"""Triage: score many candidate models on one real batch, filter by budget, rank, keep the top ones.

``rank(candidates, batch_or_datamodule, ...)`` builds every candidate for the data (classes, input channels),
scores it with each proxy under one or more initialisation seeds, and returns a :class:`Ranking`: candidates
ordered by the mean score of the ordering proxy (higher first), with the spread over seeds, size (params, FLOPs),
whether each is kept, and the reason for every failure. One failing candidate (build error, forward error, out
of memory, non-finite score) never sinks the run. With ``cache=<dir>`` every score is written to disk as soon as
it exists and an interrupted run resumes without recomputing.

Every ranking follows one :class:`~gradsign_pl.scoring.policy.ScoringPolicy` (initialisation at scoring time, proxy
options, size terms in the ordering), recorded with the result. ``policy="auto"`` keeps the authors' semantics for
NAS cell-space candidates and uses the validated real-model policy otherwise. Where an order cannot be trusted the
table says so: adjacent candidates whose order flips between initialisation seeds are marked as tied, and a
candidate whose GradSign comes from a small fraction of its weights gets a warning.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import itertools
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gradsign_pl.candidates import Candidate, candidate
from gradsign_pl.executors import Executor, create_executor
from gradsign_pl.proxies import GradSignResult, batch_fingerprint, get_proxy
from gradsign_pl.proxies.ensemble import rank_ensemble
from gradsign_pl.scoring.batch import first_batch, num_classes_of
from gradsign_pl.scoring.cache import ScoreCache
from gradsign_pl.scoring.core import ModelScores, score_model
from gradsign_pl.scoring.policy import ScoringPolicy, resolve_policy

SIZE_KEYS = ("params", "flops")
#: below this fraction of selected weights with any gradient, a GradSign score gets a warning
LOW_SIGNAL = 0.05
#: ordered by #params, adjacent candidates closer in size than this ratio are marked as tied: on the CIFAR-10
#: triage benchmark #params ordered such pairs with Kendall tau 0.15 (docs/results/triage.md)
SIZE_TIE_RATIO = 2.0


@dataclasses.dataclass
class RankedCandidate:
    """One candidate's outcome.

    Attributes:
        name: display name (``"timm:resnet18"``).
        status: ``"ok"``, ``"over budget"`` or ``"failed"``.
        scores: proxy -> mean score over seeds (``nan`` where every seed failed).
        spread: proxy -> standard deviation over seeds (0 for one seed).
        params: parameters of the model built for the data; flops: operations per sample (NB-201 convention).
        rank: 1-based position among the ranked candidates (``None`` when not ranked).
        kept: whether it survived ``top_k`` and the budgets.
        reason: why it failed or was filtered, else ``None``.
        seconds: total scoring time.
        per_seed: proxy -> score under each seed.
        signal: fraction of the weights GradSign selects that had a non-zero gradient (``None`` without GradSign).
        tied: its order against an adjacent ranked candidate is not the same under every seed (or their scores
            are equal), or -- ordered by #params -- the two are within ``SIZE_TIE_RATIO`` in size, so the two
            should be read as a tie.
        warnings: what makes this candidate's score less trustworthy (e.g. low gradient signal, a proxy the order
            does not use that could not score).
        failed_proxies: proxy -> why it scored ``nan`` (under any seed).
    """

    name: str
    status: str
    scores: dict[str, float]
    spread: dict[str, float]
    params: int | None
    flops: int | None
    rank: int | None = None
    kept: bool = False
    reason: str | None = None
    seconds: float = 0.0
    per_seed: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    signal: float | None = None
    tied: bool = False
    warnings: list[str] = dataclasses.field(default_factory=list)
    failed_proxies: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Ranking:
    """Candidates ordered best first by ``order_by``; failures and filtered ones last.

    Attributes:
        rows: every candidate, ranked ones first (rank 1 = best).
        proxies: proxies scored; order_by: the proxy (or ``"ensemble"``) the order follows.
        seeds: initialisation seeds per candidate; batch: fingerprint and shape of the scoring batch.
        policy: the scoring policy, as :meth:`ScoringPolicy.describe` records it.
    """

    rows: list[RankedCandidate]
    proxies: list[str]
    order_by: str
    seeds: int
    batch: dict[str, Any]
    policy: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def order_description(self) -> str:
        """What the order follows, e.g. ``"gradsign"``, ``"params"`` or ``"gradsign + params"`` (log-rank sum)."""
        terms = self.policy.get("order_terms") or ["proxy"]
        return " + ".join(self.order_by if t == "proxy" else t for t in terms)

    @property
    def tie_rule(self) -> str:
        """What makes two adjacent ranked candidates a tie in this ranking (one sentence for people)."""
        if self.order_description == "params":
            return (
                f"adjacent sizes within {SIZE_TIE_RATIO:g}x, whose order #params predicted little better than "
                "chance on the CIFAR-10 triage benchmark"
            )
        if self.seeds > 1:
            return "equal scores, or an order that flips between seeds"
        return "equal scores (score several seeds to see which orders are stable)"

    @property
    def kept(self) -> list[RankedCandidate]:
        """The candidates kept (best first)."""
        return [r for r in self.rows if r.kept]

    @property
    def failures(self) -> list[RankedCandidate]:
        """Candidates that could not be scored, with their reasons."""
        return [r for r in self.rows if r.status == "failed"]

    def __iter__(self) -> Iterator[RankedCandidate]:
        """The candidates best first (ranked ones, then failed and filtered ones)."""
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, name: str) -> RankedCandidate:
        """The candidate named ``name`` (a ``KeyError`` lists the names); iterate for the order."""
        if not isinstance(name, str):
            raise TypeError(
                f"index a Ranking by candidate name, got {type(name).__name__}; iterate over it (best "
                "first) or use ranking.rows[i] for a position"
            )
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no candidate named {name!r}; candidates: {', '.join(r.name for r in self.rows)}")

    def columns(self) -> list[str]:
        cols = ["rank", "name", "status", "kept"]
        for p in self.proxies:
            if p in SIZE_KEYS:
                continue  # params / flops have their own columns
            cols += [p] + ([f"{p}_std"] if self.seeds > 1 else [])
        return cols + ["params", "flops", "tied", "signal", "warnings", "seconds", "reason"]

    def records(self) -> list[dict[str, Any]]:
        """One plain dict per candidate (``nan`` as ``None``), in ranking order."""
        out = []
        for r in self.rows:
            rec: dict[str, Any] = {"rank": r.rank, "name": r.name, "status": r.status, "kept": r.kept}
            for p in self.proxies:
                if p in SIZE_KEYS:
                    continue
                rec[p] = _none_if_nan(r.scores.get(p, math.nan))
                if self.seeds > 1:
                    rec[f"{p}_std"] = _none_if_nan(r.spread.get(p, math.nan))
            rec.update(
                params=r.params,
                flops=r.flops,
                tied=r.tied,
                signal=r.signal,
                warnings="; ".join(r.warnings) or None,
                seconds=round(r.seconds, 3),
                reason=r.reason,
            )
            out.append(rec)
        return out

    def to_csv(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns())
            writer.writeheader()
            writer.writerows(self.records())
        return path

    def to_json(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        payload = {
            "proxies": self.proxies,
            "order_by": self.order_by,
            "order": self.order_description,
            "seeds": self.seeds,
            "batch": self.batch,
            "policy": self.policy,
            "candidates": self.records(),
        }
        path.write_text(json.dumps(payload, indent=2) + "\n")
        return path

    def __rich__(self) -> Any:
        from rich.table import Table

        table = Table(
            title=f"Ranking by {self.order_description} ({self.seeds} seed{'s' if self.seeds > 1 else ''}, "
            f"batch {self.batch['shape']})",
            caption=f"policy {self.policy.get('summary', '')}; '=' marks a tie: " + self.tie_rule
            if self.policy
            else None,
        )
        shown = [p for p in self.proxies if p not in SIZE_KEYS]  # params / flops have their own columns
        table.add_column("#", justify="right")
        table.add_column("candidate", no_wrap=True)
        for p in shown:
            table.add_column(p, justify="right", no_wrap=True)
        table.add_column("params", justify="right")
        table.add_column("MFLOPs", justify="right")
        table.add_column("kept")
        table.add_column("note")
        for r in self.rows:
            cells = []
            for p in shown:
                v, s = r.scores.get(p, math.nan), r.spread.get(p, math.nan)
                cells.append(_fmt(v) + (f" ± {_fmt(s)}" if self.seeds > 1 and math.isfinite(s) else ""))
            note = "; ".join([*([r.reason] if r.reason else []), *r.warnings])
            table.add_row(
                f"{r.rank}{'=' if r.tied else ''}" if r.rank else "-",
                r.name,
                *cells,
                f"{r.params / 1e6:.2f}M" if r.params is not None else "-",
                f"{r.flops / 1e6:.1f}" if r.flops is not None else "-",
                "yes" if r.kept else "",
                note,
                style=None if r.status == "ok" else "dim",
            )
        return table

    def print(self) -> None:
        """Render the ranking as a table on the console."""
        from rich.console import Console

        console = Console()
        if not console.is_terminal:
            console.width = max(console.width, 140)
        console.print(self)


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "nan"
    return f"{x:.4g}" if abs(x) < 1e5 else f"{x:.3e}"


def _none_if_nan(x: float) -> float | None:
    return None if isinstance(x, float) and math.isnan(x) else x


def rank(
    candidates: Sequence[Any] | Mapping[str, Any],
    batch_or_datamodule: Any,
    proxies: Sequence[str] = ("gradsign",),
    *,
    policy: ScoringPolicy | str | None = "auto",
    options: Mapping[str, Mapping[str, Any]] | None = None,
    seeds: int | None = None,
    max_params: float | None = None,
    max_flops: float | None = None,
    top_k: int | None = None,
    cache: str | os.PathLike | None = None,
    num_classes: int | None = None,
    order_by: str | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    max_samples: int | None = 64,
    device: str | torch.device = "auto",
    progress: bool = True,
    executor: str | Executor | None = None,
) -> Ranking:
    """Score every candidate on one real batch and rank them (see the module docstring).

    Args:
        candidates: specs (``"timm:resnet18"``, ``"torchvision:mobilenet_v3_small"``, ``"nb201:<arch|index>"``,
            ``{"class_path": ..., "init_args": ...}``, a factory) or a mapping display name -> spec.
        batch_or_datamodule: ``(inputs, targets)``, a DataLoader or a LightningDataModule.
        proxies: registered proxies to score with (not ``ensemble``; use ``order_by="ensemble"``).
        policy: the :class:`~gradsign_pl.scoring.policy.ScoringPolicy` (or ``"cell-space"`` / ``"real-model"``);
            ``"auto"``: the authors' semantics when every candidate is from a NAS cell space, the validated
            real-model policy otherwise (see :mod:`gradsign_pl.scoring.policy`).
        options: per-proxy options over the policy's, e.g. ``{"gradsign": {"bn_policy": "batch"}}``; checked
            against each proxy's signature now (a misspelt option is an error here, not a failed score later).
        seeds: initialisation seeds per candidate (0..seeds-1); scores are averaged, the spread reported, and
            adjacent candidates whose order flips between seeds are marked as tied (default: the policy's).
        max_params, max_flops: budgets; larger candidates are listed as ``over budget`` and not scored.
        top_k: keep the best ``top_k`` ranked candidates (default: keep every ranked one).
        cache: directory for the resumable score cache.
        num_classes: classes of the task (default: ``batch_or_datamodule.num_classes``).
        order_by: proxy to order by (default: the first), or ``"ensemble"`` for the AZ-NAS log-rank sum of all;
            the policy's ``order_terms`` say whether it is used and which size terms (params, FLOPs) join it
            in a log-rank sum.
        loss_fn: loss for the gradient proxies; max_samples: truncate the batch.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``; under Ray, where each task runs.
        executor: where the candidates are scored: ``"local"`` (default, one after the other here), ``"ray"``
            (one Ray task per candidate, see :mod:`gradsign_pl.executors`) or an executor instance. The ranking
            does not depend on it: each result is written to ``cache`` as it arrives and the rows are folded in
            candidate order.
    """
    proxies = list(dict.fromkeys(proxies))
    if not proxies:
        raise ValueError("proxies must name at least one registered proxy, e.g. ('gradsign',)")
    if not len(candidates):
        raise ValueError("no candidates to rank: pass at least one model spec, e.g. ['timm:resnet18']")
    for p in proxies:
        if get_proxy(p).set_level:
            raise ValueError(f"{p!r} combines other proxies: list them and pass order_by='ensemble'")
    order_by_given = order_by is not None
    order_by = order_by or proxies[0]
    if order_by not in (*proxies, "ensemble"):
        raise ValueError(f"order_by={order_by!r} must be one of the scored proxies {proxies} or 'ensemble'")
    if seeds is not None and seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    items = list(candidates.items()) if isinstance(candidates, Mapping) else [(None, c) for c in candidates]
    cands: list[Candidate] = [
        c if isinstance(c, Candidate) and name is None else candidate(c, name=name) for name, c in items
    ]
    names = [c.name for c in cands]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"candidate names must be unique, repeated: {duplicates}; give them names with a mapping")
    scoring = resolve_policy(policy, cell_space_only=bool(cands) and all(c.is_cell_space for c in cands))
    if order_by_given and "proxy" not in scoring.order_terms:
        warnings.warn(
            f"order_by={order_by!r} is not used: the {scoring.name!r} policy orders by "
            f"{' + '.join(scoring.order_terms)} (docs/results/triage.md); to order by the proxy pass "
            "policy='cell-space' or a ScoringPolicy with order_terms=('proxy',)",
            stacklevel=2,
        )
    if seeds is not None:
        scoring = dataclasses.replace(scoring, seeds=seeds)
    if options:
        unknown = sorted(set(options) - set(proxies))
        if unknown:
            raise ValueError(f"options names proxies that are not scored: {unknown}; scored: {proxies}")
        merged = {p: dict(o) for p, o in scoring.proxy_options.items()}
        for p, o in options.items():
            merged[p] = {**merged.get(p, {}), **dict(o)}
        scoring = dataclasses.replace(scoring, proxy_options=merged)  # __post_init__ checks every option
    seeds = scoring.seeds

    engine = create_executor(executor)
    x, y = first_batch(batch_or_datamodule, max_samples=max_samples)
    classes = num_classes_of(batch_or_datamodule, y, num_classes)
    dev = torch.device(engine.device_type(str(device)))
    fingerprint = batch_fingerprint(x, y)
    store = None
    if cache is not None:
        meta = {
            "batch": fingerprint,
            "num_classes": classes,
            "loss_fn": getattr(loss_fn, "__qualname__", str(loss_fn)),
            "device_type": dev.type,
            "init": scoring.init,
            "proxy_options": scoring.describe()["proxy_options"],
        }
        store = ScoreCache(cache, meta, on_change="recompute")
        if store.changed:
            warnings.warn(
                f"{cache}: the scoring settings changed since it was last used ({store.describe_change()}); "
                "its earlier scores are kept but not reused, every candidate is scored again",
                stacklevel=2,
            )

    works = [_cached_work(i, cand, proxies, seeds, store) for i, cand in enumerate(cands)]
    todo = [w for w in works if w.needed]
    slots: list[RankedCandidate | None] = [None] * len(cands)
    bar = _progress(progress, len(cands))
    for w in works:
        if not w.needed:
            over = _over_budget(w.params, w.flops, max_params, max_flops)  # budgets are not part of the cache key
            slots[w.index] = (
                RankedCandidate(
                    w.cand.name, "over budget", dict.fromkeys(proxies, math.nan), {}, w.params, w.flops, reason=over
                )
                if over
                else _fold(w, None, proxies, seeds, store)
            )
            bar.advance()
    shared = {
        "x": x,
        "y": y,
        "classes": classes,
        "budget": (max_params, max_flops),
        "loss_fn": loss_fn,
        "device": dev,
        "policy": scoring,
    }
    for i, computed in engine.map(_compute_missing, todo, shared=shared):
        slots[todo[i].index] = _fold(todo[i], computed, proxies, seeds, store)  # written the moment it arrives
        bar.advance()
    bar.close()
    rows = [r for r in slots if r is not None]
    assert len(rows) == len(cands)  # every candidate folded once
    _order(rows, proxies, order_by, top_k, scoring.order_terms)
    return Ranking(
        rows,
        proxies,
        order_by,
        seeds,
        {"fingerprint": fingerprint, "shape": list(x.shape), "num_classes": classes},
        {**scoring.describe(), "summary": scoring.summary()},
    )


_HW = tuple[int, int]


@dataclasses.dataclass
class _Work:
    """One candidate's scores read back from the cache, and what is still to compute (picklable: Ray ships it).

    Attributes:
        index: position among the candidates; key: the cache key (name and spec fingerprint).
        missing: seed -> proxies without a cached result under that seed.
        cached: ``(seed, proxy)`` -> the cached record.
        params, flops: the cached size, else ``None`` (then the first scoring counts it).
    """

    index: int
    cand: Candidate
    key: str
    missing: dict[int, list[str]]
    cached: dict[tuple[int, str], dict[str, Any]]
    params: int | None
    flops: int | None

    @property
    def needed(self) -> bool:
        return self.params is None or any(self.missing.values())


@dataclasses.dataclass
class _Computed:
    """What a worker computed for one :class:`_Work`: each scored seed's results, or why it stopped early."""

    params: int | None
    flops: int | None
    per_seed: dict[int, ModelScores]
    stop: tuple[str, str] | None = None  # (status, reason): over budget or failed
    seconds: float = 0.0


def _active_fraction(r: Any) -> float | None:
    """Fraction of GradSign's selected weights with a non-zero gradient (``None`` for other proxies or a failure)."""
    if isinstance(r, GradSignResult) and r.is_finite and r.n_params:
        return r.n_active_params / r.n_params
    return None


def _record_score(record: Mapping[str, Any]) -> float:
    return math.nan if record["score"] is None else float(record["score"])


def _cached_work(index: int, cand: Candidate, proxies: list[str], seeds: int, store: ScoreCache | None) -> _Work:
    key = f"{cand.name}#{cand.fingerprint}"  # a changed spec (kwargs, class path, factory code) is a new key
    params = flops = None
    if store is not None and (key, "params") in store and (key, "flops") in store:
        params, flops = int(store.score(key, "params")), int(store.score(key, "flops"))
    missing: dict[int, list[str]] = {}
    cached: dict[tuple[int, str], dict[str, Any]] = {}
    for seed in range(seeds):
        missing[seed] = []
        for p in proxies:
            record = store.get(key, f"{p}@seed{seed}") if store is not None else None
            if record is None:
                missing[seed].append(p)
            else:
                cached[(seed, p)] = record
    return _Work(index, cand, key, missing, cached, params, flops)


def _compute_missing(
    work: _Work,
    *,
    x: Tensor,
    y: Tensor,
    classes: int,
    budget: tuple[float | None, float | None],
    loss_fn: Callable[..., Tensor],
    device: torch.device,
    policy: ScoringPolicy,
) -> _Computed:
    """Score one candidate's missing ``(seed, proxy)`` pairs (runs on the executor's worker; writes nothing)."""
    t0 = time.perf_counter()
    out = _Computed(work.params, work.flops, {})
    for seed, missing in work.missing.items():
        if not missing and out.params is not None:
            continue
        over = _over_budget(out.params, out.flops, *budget) if out.params is not None else None
        if over:
            out.stop = ("over budget", over)
            break
        result = score_model(
            # build checks that the size is (height, width)
            functools.partial(
                work.cand.build, num_classes=classes, in_chans=x.shape[1], input_size=cast(_HW, tuple(x.shape[2:]))
            ),
            x,
            y,
            missing,
            policy=policy,
            seed=seed,
            loss_fn=loss_fn,
            device=device,
            size=out.params is None,
            admit=lambda n, f: _over_budget(n, f, *budget),
        )
        if out.params is None and result.params is not None:
            out.params, out.flops = result.params, result.flops
        if result.error is not None:
            out.stop = ("over budget" if result.params is not None else "failed", result.error)
            break
        out.per_seed[seed] = result
    out.seconds = time.perf_counter() - t0
    return out


def _fold(
    work: _Work, computed: _Computed | None, proxies: list[str], seeds: int, store: ScoreCache | None
) -> RankedCandidate:
    """Write what ``computed`` holds to ``store`` and fold it with the cached scores into the ranking row."""
    name = work.cand.name
    params, flops = (computed.params, computed.flops) if computed is not None else (work.params, work.flops)
    seconds = computed.seconds if computed is not None else 0.0
    if computed is not None and store is not None:
        if work.params is None and computed.params is not None:
            assert computed.flops is not None  # counted with the params
            store.add(work.key, "params", float(computed.params))
            store.add(work.key, "flops", float(computed.flops))
        for seed, result in computed.per_seed.items():
            for p in work.missing[seed]:
                r = result.results[p]
                if p in result.transient:  # out of memory is not a final result
                    continue
                active = _active_fraction(r)
                extra = {"signal": active} if active is not None else {}
                store.add(work.key, f"{p}@seed{seed}", r.score, reason=result.reasons.get(p), **extra)
    if computed is not None and computed.stop is not None:
        status, why = computed.stop
        return RankedCandidate(
            name, status, dict.fromkeys(proxies, math.nan), {}, params, flops, reason=why, seconds=seconds
        )
    per_seed: dict[str, list[float]] = {p: [] for p in proxies}
    reasons: dict[str, str] = {}
    signals: list[float] = []
    for seed in range(seeds):
        fresh = computed.per_seed.get(seed) if computed is not None else None
        for p in proxies:
            reason: str | None
            if fresh is not None and p in work.missing[seed]:
                r = fresh.results[p]
                score, reason = r.score, fresh.reasons.get(p)
                active = _active_fraction(r)
            else:
                record = work.cached[(seed, p)]
                score, reason, active = _record_score(record), record.get("reason"), record.get("signal")
            per_seed[p].append(score)
            if reason:
                reasons[p] = reason
            if active is not None:
                signals.append(active)
    scores = {p: float(np.mean(v)) if all(math.isfinite(s) for s in v) else math.nan for p, v in per_seed.items()}
    spread = {p: float(np.std(v)) if all(math.isfinite(s) for s in v) else math.nan for p, v in per_seed.items()}
    signal = float(np.mean(signals)) if signals else None
    notes = []
    if signal is not None and signal < LOW_SIGNAL:
        notes.append(
            f"low gradient signal: {100 * signal:.1f}% of the weights get any gradient at this "
            "initialisation, so GradSign sees little of the network"
        )
    return RankedCandidate(
        name,
        "ok",
        scores,
        spread,
        params,
        flops,
        seconds=seconds,
        per_seed=per_seed,
        signal=signal,
        warnings=notes,
        failed_proxies=reasons,
    )


def _over_budget(params, flops, max_params, max_flops) -> str | None:
    if max_params is not None and params is not None and params > max_params:
        return f"{params / 1e6:.2f}M params > max_params {max_params / 1e6:.2f}M"
    if max_flops is not None and flops is not None and flops > max_flops:
        return f"{flops / 1e6:.1f} MFLOPs > max_flops {max_flops / 1e6:.1f}M"
    return None


def _order_keys(
    ok: list[RankedCandidate], proxies: list[str], order_by: str, order_terms: Sequence[str], seed: int | None
) -> list[float]:
    """The ordering value of each candidate (mean over seeds, or under one ``seed``); higher ranks first."""

    def values(p: str) -> list[float]:
        # an "ok" row was sized (params and flops are counted before any proxy runs)
        if p == "params":
            return [float(cast(int, r.params)) for r in ok]
        if p == "flops":
            return [float(cast(int, r.flops)) for r in ok]
        return [r.scores[p] if seed is None else r.per_seed[p][seed] for r in ok]

    terms = _used_terms(proxies, order_by, order_terms)
    if len(terms) == 1:
        return values(terms[0])
    return list(rank_ensemble({t: values(t) for t in terms}, "log_rank")) if ok else []


def _used_terms(proxies: list[str], order_by: str, order_terms: Sequence[str]) -> list[str]:
    """The scores the order reads: the ordering proxy (or every proxy for ``ensemble``) and the size terms."""
    terms = (list(proxies) if order_by == "ensemble" else [order_by]) if "proxy" in order_terms else []
    return terms + [t for t in order_terms if t != "proxy" and t not in terms]


def _order(
    rows: list[RankedCandidate],
    proxies: list[str],
    order_by: str,
    top_k: int | None,
    order_terms: Sequence[str] = ("proxy",),
) -> None:
    used = _used_terms(proxies, order_by, order_terms)
    for r in rows:  # a nan in a score the order reads fails the candidate; in any other score it is a warning
        if r.status != "ok":
            continue
        blocking = {p: why for p, why in r.failed_proxies.items() if p in used}
        if blocking:
            r.status = "failed"
            r.reason = "; ".join(f"{p}: {why}" for p, why in blocking.items())
        r.warnings += [f"{p} could not be scored ({why})" for p, why in r.failed_proxies.items() if p not in used]
    ok = [r for r in rows if r.status == "ok"]
    keys = dict(zip((r.name for r in ok), _order_keys(ok, proxies, order_by, order_terms, None)))
    ok.sort(key=lambda r: -keys[r.name])
    seeds = min((len(v) for r in ok for v in r.per_seed.values()), default=0)
    per_seed = (
        [dict(zip((r.name for r in ok), _order_keys(ok, proxies, order_by, order_terms, s))) for s in range(seeds)]
        if seeds > 1
        else []
    )
    by_size = tuple(order_terms) == ("params",)
    for a, b in itertools.pairwise(ok):  # adjacent pair: tied when equal, or when some seed orders it the other way
        unstable = keys[a.name] == keys[b.name] or any(k[a.name] <= k[b.name] for k in per_seed)
        if unstable or (by_size and cast(int, a.params) < SIZE_TIE_RATIO * cast(int, b.params)):  # "ok" rows are sized
            a.tied = b.tied = True
    for i, r in enumerate(ok, start=1):
        r.rank = i
        r.kept = top_k is None or i <= top_k
        if not r.kept:
            r.reason = f"not in the top {top_k}"
    rest = [r for r in rows if r.status != "ok"]
    rows[:] = ok + rest


class _progress:
    """A rich progress bar (or nothing)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.bar = None
        if enabled and total > 1:
            from rich.progress import Progress

            self.bar = Progress(transient=True)
            self.bar.start()
            self.task = self.bar.add_task("scoring candidates", total=total)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
