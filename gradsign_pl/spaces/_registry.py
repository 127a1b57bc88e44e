"""Registry of search spaces, shaped like timm's model registry: register by decorator, build by name."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from torch import nn

from gradsign_pl.registry import Registry


@runtime_checkable
class SearchSpace(Protocol):
    """What a registered search space provides.

    Attributes:
        name: registry name.
        datasets: dataset names the space has ground truth for (keys of :meth:`accuracy`).
    """

    name: str
    datasets: tuple[str, ...]

    def __len__(self) -> int:
        """Number of architectures."""

    def arch(self, index: int) -> str:
        """The architecture string with benchmark index ``index``."""

    def build(self, arch: str | int, dataset: str) -> nn.Module:
        """A freshly initialised network for ``arch`` (string or index) with the head for ``dataset``."""

    def accuracy(self, dataset: str) -> np.ndarray:
        """Ground-truth test accuracy (percent) of every architecture on ``dataset``, by index."""

    def sample(self, n: int, seed: int) -> list[int]:
        """``n`` distinct indices drawn with ``seed``; a larger ``n`` extends a smaller one."""


# a factory returns a SearchSpace, or a generative space (zen: build/mutate/validate, no index or accuracy table)
SpaceFactory = Callable[..., Any]
_SPACES: Registry[SpaceFactory] = Registry("search space")


def register_space(name: str) -> Callable[[SpaceFactory], SpaceFactory]:
    """Decorator: register a search-space factory under ``name``."""

    def decorate(factory: SpaceFactory) -> SpaceFactory:
        _SPACES.add(name, factory)
        return factory

    return decorate


def list_spaces(filter: str = "*") -> list[str]:
    """Sorted names of the registered search spaces matching the shell-style pattern ``filter``."""
    return _SPACES.names(filter)


def create_space(name: str, **kwargs: Any) -> SearchSpace:
    """Build the search space registered as ``name`` (``kwargs`` go to its factory, e.g. ``table=path``)."""
    return _SPACES.lookup(name)(**kwargs)


def permutation_sample(size: int, n: int, seed: int) -> list[int]:
    """The first ``n`` indices of a seeded permutation of ``range(size)`` (so samples nest as ``n`` grows)."""
    if not 1 <= n <= size:
        raise ValueError(f"n must be between 1 and {size} (the size of the space), got {n}")
    return [int(i) for i in np.random.default_rng(seed).permutation(size)[:n]]


def check_dataset(dataset: str, known: Sequence[str], space: str) -> None:
    if dataset not in known:
        close = difflib.get_close_matches(dataset, list(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{space} has no ground truth for dataset {dataset!r}{hint}; choose one of {', '.join(known)}")
