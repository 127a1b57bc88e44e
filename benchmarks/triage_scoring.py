"""Scores of the triage benchmark's models under every scoring option the policy study compares.

Each value is one proxy on one built model, keyed ``proxy|init|bn|seed|batch|resolution`` (``bn`` is ``-`` for
proxies without a per-sample BatchNorm choice). The grid, in passes so that an interrupted run already holds
complete passes:

1. seed 0, batch 0, 32 px: GradSign with ``bn_policy`` auto (the authors' per-sample statistics, whole batch where
   a layer sees 1 value per channel) and batch, under the three init policies; the other proxies under the three
   init policies; params and FLOPs.
2. init seeds 1 and 2 for GradSign.
3. batches 1 and 2 (seed 0) for GradSign.
4. 64 px inputs (the 32 px batch upsampled bilinearly, models built for 64 px) for GradSign.

GradSign records store the summed score with ``n_params`` and ``n_active_params``, from which the ``mean`` and
``active`` reductions follow exactly. Everything is appended to a :class:`~gradsign_pl.scoring.cache.ScoreCache`
as soon as it exists; the run resumes.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from gradsign_pl.candidates import candidate
from gradsign_pl.proxies import batch_fingerprint
from gradsign_pl.rng import seeded
from gradsign_pl.scoring.cache import ScoreCache
from gradsign_pl.scoring.core import score_model
from gradsign_pl.scoring.policy import INIT_POLICIES, ScoringPolicy

OTHER_PROXIES = ("synflow", "snip", "grad_norm", "naswot", "jacov", "zen", "fisher", "grasp")
BN_OPTIONS = ("auto", "batch")


def key(proxy: str, init: str, bn: str = "-", seed: int = 0, batch: int = 0, res: int = 32) -> str:
    return f"{proxy}|{init}|{bn}|s{seed}|b{batch}|r{res}"


def scoring_batches(dm: Any, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``k`` training batches, drawn as :func:`gradsign_pl.triage.first_batch` draws the first."""
    dm.prepare_data()
    dm.setup("fit")
    out = []
    with seeded(0):
        for i, batch in enumerate(dm.train_dataloader()):
            out.append((batch[0], batch[1]))
            if i + 1 == k:
                break
    return out


def _with_resolution(spec: Any, res: int) -> Any:
    """The spec rebuilt for ``res`` px where it pins ``img_size`` (ViT, MLP-Mixer)."""
    if res == 32 or not isinstance(spec, dict):
        return spec
    spec = copy.deepcopy(spec)
    for field in ("kwargs", "init_args"):
        if "img_size" in spec.get(field, {}):
            spec[field]["img_size"] = res
    return spec


def builder(name: str, spec: Any, res: int):
    """A builder of the candidate at ``res`` px (score_model calls it under the seed and applies the init policy)."""
    cand = candidate(_with_resolution(spec, res), name=name)
    return lambda: cand.build(num_classes=10, in_chans=3, input_size=(res, res))


def _jobs(models: dict[str, tuple[str, Any]]) -> Iterator[tuple[int, str, str, int, int, int, tuple[str, ...]]]:
    """(pass, model, init, seed, batch, res, proxies-with-bn) in pass order."""
    for name in models:
        for init in INIT_POLICIES:
            yield 1, name, init, 0, 0, 32, ("gradsign",) + OTHER_PROXIES
    for name in models:
        for init in INIT_POLICIES:
            for seed in (1, 2):
                yield 2, name, init, seed, 0, 32, ("gradsign",)
    for name in models:
        for init in INIT_POLICIES:
            for b in (1, 2):
                yield 3, name, init, 0, b, 32, ("gradsign",)
    for name in models:
        for init in INIT_POLICIES:
            yield 4, name, init, 0, 0, 64, ("gradsign",)


def score_grid(
    models: dict[str, tuple[str, Any]],
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    cache_dir: Path,
    passes: tuple[int, ...] = (1, 2, 3, 4),
) -> ScoreCache:
    """Fill the cache with every missing score of ``passes`` (see the module docstring); returns the cache."""
    meta = {"batches": [batch_fingerprint(x, y) for x, y in batches], "num_classes": 10, "loss_fn": "cross_entropy"}
    store = ScoreCache(cache_dir, meta)
    for name, (_, spec) in models.items():
        if (name, "params") not in store:
            sizes = score_model(builder(name, spec, 32), *batches[0], ["params", "flops"])
            for size in ("params", "flops"):
                store.add(name, size, sizes.scores[size])
    todo = [j for j in _jobs(models) if j[0] in passes]
    for i, (_, name, init, seed, b, res, proxies) in enumerate(todo):
        spec = models[name][1]
        wanted = [
            (p, bn)
            for p in proxies
            for bn in (BN_OPTIONS if p == "gradsign" else ("-",))
            if (name, key(p, init, bn, seed, b, res)) not in store
        ]
        if not wanted:
            continue
        t0 = time.perf_counter()
        x, y = batches[b]
        if res != 32:
            x = F.interpolate(x, size=(res, res), mode="bilinear", align_corners=False)
        for p, bn in wanted:
            options = {"bn_policy": bn} if p == "gradsign" else {}
            auto = store.get(name, key(p, init, "auto", seed, b, res)) if bn == "batch" else None
            if auto is not None and auto.get("bn_used") in ("batch", "none"):  # auto already ran this policy
                store.add(
                    name,
                    key(p, init, bn, seed, b, res),
                    math.nan if auto["score"] is None else auto["score"],
                    **{k: v for k, v in auto.items() if k not in ("candidate", "proxy", "score")},
                )
                continue
            t1 = time.perf_counter()
            policy = ScoringPolicy("grid", init=init, proxy_options={p: options} if options else {})
            scored = score_model(builder(name, spec, res), x, y, [p], policy=policy, seed=seed)
            r = scored.results[p]
            extra = {"reason": scored.reasons.get(p), "seconds": time.perf_counter() - t1}
            if p == "gradsign" and r.is_finite:
                extra.update(n_params=r.n_params, n_active_params=r.n_active_params, bn_used=r.bn_policy)
            store.add(name, key(p, init, bn, seed, b, res), r.score, **extra)
        print(
            f"[{i + 1}/{len(todo)}] {name} {init} s{seed} b{b} r{res}: {len(wanted)} scores in "
            f"{time.perf_counter() - t0:.1f} s",
            flush=True,
        )
    return store


if __name__ == "__main__":  # python benchmarks/triage_scoring.py [PASS ...]: scoring only (background use)
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from triage_models import MODELS, SCHEDULE, datamodule

    torch.set_num_threads(1)
    root = Path(__file__).resolve().parents[1] / "runs" / "triage_cifar10"
    dm = datamodule(None, SCHEDULE)
    score_grid(
        MODELS, scoring_batches(dm, 3), root / "policy_scores", tuple(int(p) for p in sys.argv[1:]) or (1, 2, 3, 4)
    )
