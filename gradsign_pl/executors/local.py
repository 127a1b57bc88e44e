"""The ``local`` executor: every item in order, in this process (the default; needs nothing beyond torch)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import torch

from gradsign_pl.executors import register_executor

R = TypeVar("R")


@register_executor("local")
class LocalExecutor:
    """Runs ``fn(item, **shared)`` for each item in turn; results come back in item order."""

    name = "local"

    def map(
        self, fn: Callable[..., R], items: Sequence[Any], *, shared: Mapping[str, Any] | None = None
    ) -> Iterator[tuple[int, R]]:
        kwargs = dict(shared or {})
        for i, item in enumerate(items):
            yield i, fn(item, **kwargs)

    def device_type(self, requested: str) -> str:
        if requested == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return torch.device(requested).type

    def __repr__(self) -> str:
        return "LocalExecutor()"
