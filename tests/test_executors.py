"""Executors: the local default, the Ray engine on a private 2-CPU instance, and every face that maps over them
(rank(), the NB-201-style correlation study, the evolutionary search) giving the local results bit for bit."""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gradsign_pl import rank
from gradsign_pl.executors import create_executor, list_executors
from gradsign_pl.executors.ray_tasks import RayExecutor
from gradsign_pl.search import EvolutionSettings, evolution_search, proxy_fitness
from gradsign_pl.spaces import create_space
from gradsign_pl.studies.correlation import run_correlation
from tests.studies.test_correlation import ToySpace

ROOT = Path(__file__).resolve().parents[1]
HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason='Ray is not installed (pip install -e ".[ray]")')


def _add(item, base):
    return base + item


def test_local_executor_maps_in_order_with_shared_arguments():
    assert list(create_executor().map(_add, [3, 1, 2], shared={"base": 10})) == [(0, 13), (1, 11), (2, 12)]
    assert list(create_executor("local").map(_add, [], shared={"base": 0})) == []
    assert {"local", "ray"} <= set(list_executors())


def test_bad_executors_are_refused_with_the_fix():
    with pytest.raises(KeyError, match="did you mean 'ray'"):
        create_executor("rey")
    with pytest.raises(TypeError, match="workers"):
        create_executor("local", workers=2)
    with pytest.raises(TypeError, match="executor must be a name"):
        create_executor(42)  # type: ignore[arg-type]
    for bad, match in [
        ({"num_cpus": 0}, "num_cpus must be > 0"),
        ({"num_gpus": -1}, "num_gpus must be >= 0"),
        ({"max_retries": -1}, "max_retries must be an integer >= 0"),
        ({"max_calls": -1}, "max_calls must be an integer >= 0"),
        ({"max_calls": 1.5}, "max_calls must be an integer >= 0"),
        ({"max_in_flight": 0}, "max_in_flight must be >= 1"),
        ({"threads": 0}, "threads must be >= 1"),
    ]:
        with pytest.raises(ValueError, match=match):
            RayExecutor(**bad)


def test_ray_executor_without_ray_names_the_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ImportError, match=r'pip install "gradsign-pl\[ray\]"'):
        create_executor("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    if not HAS_RAY:
        pytest.skip('Ray is not installed (pip install -e ".[ray]")')
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},  # workers import the test modules
    )
    yield ray
    ray.shutdown()


def _die_once(item, marker_dir):
    marker = Path(marker_dir) / f"{item}"
    if item == 1 and not marker.exists():
        marker.touch()
        os._exit(1)  # the worker process dies mid-task, as a killed or OOM-killed worker does
    return item * item


def _raise(item):
    raise ValueError(f"bad item {item}")


@needs_ray
def test_ray_retries_a_killed_worker_and_keeps_exception_types(ray_cluster, tmp_path):
    results = dict(RayExecutor(max_retries=2).map(_die_once, [0, 1, 2, 3], shared={"marker_dir": str(tmp_path)}))
    assert results == {0: 0, 1: 1, 2: 4, 3: 9}
    assert (tmp_path / "1").exists()  # it did die once
    (tmp_path / "1").unlink()
    with pytest.raises(RuntimeError, match="worker died 1 times"):
        list(RayExecutor(max_retries=0).map(_die_once, [1], shared={"marker_dir": str(tmp_path)}))
    with pytest.raises(ValueError, match="bad item 7"):
        list(RayExecutor().map(_raise, [7]))


def _pid(item):
    return os.getpid()


@needs_ray
def test_ray_replaces_a_worker_process_after_max_calls_tasks(ray_cluster):
    pids = [pid for _, pid in RayExecutor(max_calls=1, max_in_flight=1).map(_pid, list(range(4)))]
    assert len(set(pids)) == 4  # a fresh process for every task: memory grown in one never reaches the next
    pids = [pid for _, pid in RayExecutor(max_calls=0, max_in_flight=1).map(_pid, list(range(4)))]
    assert len(set(pids)) <= 2  # never replaced: the instance's (at most 2) idle workers run them all


CANDIDATES = {
    "lcnet": "timm:lcnet_050",
    "mobilenet": "torchvision:mobilenet_v3_small",
    "broken": {"class_path": "torch.nn.Identity"},  # its output is no logits: a failed candidate, never a crash
}


@needs_ray
def test_rank_on_ray_matches_local_bit_for_bit_and_resumes_across_executors(ray_cluster, tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g))
    kwargs = {"num_classes": 10, "progress": False, "policy": "cell-space", "seeds": 2}
    proxies = ["gradsign", "synflow", "snip", "params"]
    local = rank(CANDIDATES, batch, proxies, **kwargs)
    remote = rank(CANDIDATES, batch, proxies, executor=RayExecutor(), cache=tmp_path, **kwargs)

    def table(ranking):
        return [(r.name, r.status, r.rank, r.per_seed, r.params, r.flops, r.reason) for r in ranking]

    assert table(remote) == table(local)  # per-seed scores compared with ==: bit for bit
    assert [r.name for r in local if r.status == "ok"] and [r.name for r in local.failures] == ["broken"]

    # the cache the Ray run wrote serves a local run: nothing is scored again (a build failure is not cached)
    from gradsign_pl import triage

    monkeypatch.setattr(triage, "score_model", lambda *a, **k: pytest.fail("rescored a cached candidate"))
    scored = {k: v for k, v in CANDIDATES.items() if k != "broken"}
    resumed = rank(scored, batch, proxies, cache=tmp_path, **kwargs)
    assert table(resumed) == [row for row in table(local) if row[0] != "broken"]


@needs_ray
def test_correlation_study_on_ray_matches_local(ray_cluster, tmp_path):
    batch = (torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1]))
    kwargs = {"proxies": ["params", "synflow", "grad_norm"], "n_archs": 8, "seed": 1, "batch": batch}
    local = run_correlation(ToySpace(), "d", out=tmp_path / "local", progress=False, **kwargs)
    remote = run_correlation(ToySpace(), "d", out=tmp_path / "ray", progress=False, executor="ray", **kwargs)
    for p in kwargs["proxies"]:
        np.testing.assert_array_equal(remote.scores[p], local.scores[p])
    assert sorted(remote.failures) == sorted(local.failures) and any(i == 3 for i, _, _ in local.failures)


@needs_ray
def test_evolution_batch_on_ray_matches_local(ray_cluster):
    space = create_space("zen")
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g)
    fitness = proxy_fitness("gradsign", x, y, space, num_classes=10, in_chans=3)
    settings = EvolutionSettings(iterations=8, population_size=4, batch=4, max_params=3e5, seed=3)
    local = evolution_search(space, fitness, settings, progress=False)
    remote = evolution_search(space, fitness, settings, progress=False, executor="ray")
    assert remote.population == local.population and remote.history == local.history
    assert local.evaluated >= 2 and all(math.isfinite(v) for _, v in local.population)


@needs_ray
def test_halving_rungs_on_ray_give_the_local_eliminations_and_signals(ray_cluster, tmp_path):
    from gradsign_pl import halving
    from tests.test_halving import CANDIDATES as TINY
    from tests.test_halving import QUIET, _recipe

    kwargs = {"eta": 2, "budget": 0.3, "final": 1, "signal": "sotl", "train_survivors": False, **QUIET}
    local = halving(TINY, _recipe(tmp_path), tmp_path / "local", **kwargs)
    remote = halving(TINY, _recipe(tmp_path), tmp_path / "ray", executor="ray", **kwargs)
    assert remote.order == local.order and remote.survivors == local.survivors
    assert [(r.name, r.rung, r.steps, r.signal, r.kept) for r in remote.rungs] == [
        (r.name, r.rung, r.steps, r.signal, r.kept) for r in local.rungs
    ]  # signals compared with ==: the rung trainings are bit-identical
    # a local rerun of the Ray run's folder trains nothing again
    rows = (tmp_path / "ray" / "rungs.jsonl").read_text().splitlines()
    again = halving(TINY, _recipe(tmp_path), tmp_path / "ray", **kwargs)
    assert again.order == local.order and (tmp_path / "ray" / "rungs.jsonl").read_text().splitlines() == rows
