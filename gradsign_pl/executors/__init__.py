"""Executors: where independent pieces of work (one candidate's scores, one arch, one rung training) run.

An executor maps a function over items and yields ``(index, result)`` pairs as the results arrive, so the caller
writes each result to its cache the moment it exists and an interrupted run loses nothing. The caller owns every
decision that must be deterministic (what to compute, in which order to fold the results in), so the results do
not depend on which executor computed them or in which order they arrived.

- ``local`` (the default, no extra dependency): one item after the other, in order, in this process.
- ``ray``: every item a Ray task on the cluster ``ray.init`` finds (``RAY_ADDRESS``, or ``address=``; a private
  local instance when neither is set). Install it with ``pip install "gradsign-pl[ray]"``.

Executors register themselves by name (timm's registry shape), so a new engine is one module and one decorator::

    @register_executor("mine")
    class MyExecutor: ...
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from gradsign_pl.registry import Registry

__all__ = ["Executor", "create_executor", "list_executors", "register_executor"]

T = TypeVar("T")
R = TypeVar("R")

_EXECUTORS: Registry[type] = Registry("executor")


@runtime_checkable
class Executor(Protocol):
    """Runs ``fn(item, **shared)`` for every item; see the module docstring."""

    name: str

    def map(
        self, fn: Callable[..., R], items: Sequence[Any], *, shared: Mapping[str, Any] | None = None
    ) -> Iterator[tuple[int, R]]:
        """Yield ``(index, fn(items[index], **shared))`` once per item, in completion order.

        ``shared`` holds the large objects every call reads (a batch of images): an executor that ships work to
        other processes sends them once, not once per item. An exception raised by ``fn`` propagates to the caller
        (the results already yielded are the caller's); the functions this package maps catch their own failures.
        """
        ...

    def device_type(self, requested: str) -> str:
        """The device type the work will run on for a requested ``"auto"``, ``"cpu"`` or ``"cuda"``."""
        ...


def register_executor(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: register an executor class under ``name`` (a taken name is a ``ValueError``)."""

    def deco(cls: type[T]) -> type[T]:
        _EXECUTORS.add(name, cls)
        return cls

    return deco


def list_executors() -> list[str]:
    """Registered executor names."""
    return _EXECUTORS.names()


def create_executor(executor: str | Executor | None = None, **options: Any) -> Executor:
    """The executor named ``executor`` (``None`` = ``"local"``) built with ``options``, or ``executor`` itself.

    An unknown name is a ``KeyError`` listing the registered ones; options the executor does not take are a
    ``TypeError`` naming them.
    """
    if executor is None:
        executor = "local"
    if not isinstance(executor, str):
        if options:
            raise TypeError(f"options {sorted(options)} apply to an executor name, not to an executor instance")
        if not isinstance(executor, Executor):
            raise TypeError(f"executor must be a name ({', '.join(list_executors())}) or an Executor, got {executor!r}")
        return executor
    cls = _EXECUTORS.lookup(executor)
    accepted = [n for n in inspect.signature(cls).parameters if n not in ("self", "args", "kwargs")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"the {executor!r} executor takes no option(s) {unknown}; it takes {accepted or 'no options'}")
    return cls(**options)


from gradsign_pl.executors import local as _local  # noqa: E402,F401  (each engine registers itself)
from gradsign_pl.executors import ray_tasks as _ray_tasks  # noqa: E402,F401
