"""The ``ray`` executor: every item a Ray task, on whatever cluster ``ray.init`` connects to.

Connecting: ``address`` (``"auto"``, ``"ray://head:10001"``, ``"10.0.0.1:6379"``) or, when it is ``None``, the
usual ``RAY_ADDRESS`` environment variable; with neither, ``ray.init`` starts a private local instance with this
machine's CPUs and GPUs. A cluster is started with ``ray start --head`` on one machine and
``ray start --address=<head>:6379`` on each worker (docs/distributed.md). Ray is imported only when an item is
mapped, so the package imports without it.

Each task asks for ``num_cpus`` CPUs and ``num_gpus`` GPUs (default: one GPU when the cluster has any, so every
task scores on its own device). Torch in a task uses ``threads`` CPU threads, by default as many as torch uses in
the calling process: CPU kernels reduce in an order that depends on the thread count, so only equal counts give
bit-identical scores to the ``local`` executor (measured: GradSign of mobilenet_v3_small 4151945 with 1 thread,
4151943 with 2; snip differs in the 7th digit). ``num_cpus`` defaults to ``threads``; for throughput on a
many-core node set ``threads=1, num_cpus=1`` (and compare with a local run under ``torch.set_num_threads(1)``).

A task whose worker process dies (killed, out of host memory, node lost) is run again up
to ``max_retries`` times; an exception raised by the function itself is not retried (the functions this package
maps catch their own failures), it is raised here as its own type. Results come back as they complete; the
caller writes each one down before asking for the next, so a driver killed mid-run loses only the work in flight.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from gradsign_pl.executors import register_executor

R = TypeVar("R")

INSTALL_HINT = 'the ray executor needs Ray: pip install "gradsign-pl[ray]" (or pip install "ray[default]>=2.9")'


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return ray


def _run_one(fn: Callable[..., Any], item: Any, shared: Mapping[str, Any], threads: int) -> Any:
    """The body of every task: ``fn(item, **shared)`` with torch on ``threads`` threads (on the worker)."""
    import torch

    torch.set_num_threads(threads)
    return fn(item, **shared)


@register_executor("ray")
class RayExecutor:
    """Maps work over Ray tasks (see the module docstring).

    Args:
        address: the cluster to join (``None``: ``RAY_ADDRESS``, else a private local instance).
        num_cpus: CPUs each task reserves (> 0; ``None``: the thread count).
        num_gpus: GPUs each task reserves (``None``: 1 when the cluster has GPUs, else 0).
        max_retries: times a task is rerun after its worker process died (>= 0).
        max_calls: tasks one worker process runs before Ray replaces it with a fresh one (Ray's ``max_calls``;
            0: never). Bounds memory that a model or proxy leaves behind in a long-lived worker (docs/distributed.md:
            a leak of ~6 MB per network once grew one worker past 12 GB); a fresh process costs a few seconds of
            imports, and results do not depend on it.
        max_in_flight: most tasks submitted at once (``None``: twice the cluster's CPUs / ``num_cpus``).
        threads: torch threads inside each task (``None``: ``torch.get_num_threads()`` of the caller, so the scores
            are bit-identical to the local executor's).
        init_options: more keyword arguments for ``ray.init`` (e.g. ``{"num_cpus": 2}`` for a local instance).
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        max_retries: int = 3,
        max_calls: int = 100,
        max_in_flight: int | None = None,
        threads: int | None = None,
        init_options: Mapping[str, Any] | None = None,
    ) -> None:
        if importlib.util.find_spec("ray") is None:  # before any work, not when the first item is mapped
            raise ImportError(INSTALL_HINT)
        if num_cpus is not None and not num_cpus > 0:
            raise ValueError(f"num_cpus must be > 0, got {num_cpus}")
        if num_gpus is not None and num_gpus < 0:
            raise ValueError(f"num_gpus must be >= 0 or None, got {num_gpus}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        if isinstance(max_calls, bool) or not isinstance(max_calls, int) or max_calls < 0:
            raise ValueError(f"max_calls must be an integer >= 0 (0: a worker is never replaced), got {max_calls!r}")
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1 or None, got {max_in_flight}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        self.address = address
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.max_retries = max_retries
        self.max_calls = max_calls
        self.max_in_flight = max_in_flight
        self.threads = threads
        self.init_options = dict(init_options or {})

    def __repr__(self) -> str:
        where = self.address or os.environ.get("RAY_ADDRESS") or "local instance"
        return f"RayExecutor({where!r}, num_cpus={self.num_cpus}, num_gpus={self.num_gpus})"

    def connect(self) -> Any:
        """Join (or start) the cluster once per process and return the ``ray`` module."""
        ray = _import_ray()
        if not ray.is_initialized():
            ray.init(address=self.address, **self.init_options)
        return ray

    def _gpus(self, ray: Any) -> float:
        if self.num_gpus is not None:
            return self.num_gpus
        return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0

    def device_type(self, requested: str) -> str:
        if requested != "auto":
            return requested.split(":")[0]
        return "cuda" if self._gpus(self.connect()) > 0 else "cpu"

    def map(
        self, fn: Callable[..., R], items: Sequence[Any], *, shared: Mapping[str, Any] | None = None
    ) -> Iterator[tuple[int, R]]:
        if not len(items):
            return
        import torch

        ray = self.connect()
        threads = self.threads or torch.get_num_threads()
        cpus = self.num_cpus or threads
        task = ray.remote(max_calls=self.max_calls)(_run_one).options(  # max_calls: only at decoration
            num_cpus=cpus, num_gpus=self._gpus(ray), max_retries=self.max_retries, retry_exceptions=False
        )
        fn_ref, shared_ref = ray.put(fn), ray.put(dict(shared or {}))  # shipped once, read by every task
        window = self.max_in_flight or max(1, int(2 * ray.cluster_resources().get("CPU", 1) / cpus))
        pending: dict[Any, int] = {}
        next_item = 0
        try:
            while next_item < len(items) or pending:
                while next_item < len(items) and len(pending) < window:
                    pending[task.remote(fn_ref, items[next_item], shared_ref, threads)] = next_item
                    next_item += 1
                done, _ = ray.wait(list(pending), num_returns=1)
                index = pending.pop(done[0])
                yield index, self._get(ray, done[0], index)
        finally:
            for ref in pending:
                ray.cancel(ref)

    def _get(self, ray: Any, ref: Any, index: int) -> Any:
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as err:
            raise err.as_instanceof_cause() from None
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as err:
            raise RuntimeError(
                f"item {index}: its Ray worker died {self.max_retries + 1} times ({type(err).__name__}); "
                "every result before it is kept -- rerun to resume, or raise max_retries"
            ) from err
