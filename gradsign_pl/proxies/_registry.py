"""Registry of zero-cost proxies, shaped like timm's model registry: register by decorator, build by name."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from gradsign_pl._registry import Registry
from gradsign_pl.proxies._result import ProxyResult

ProxyFn = Callable[..., ProxyResult]


@dataclasses.dataclass(frozen=True)
class ProxyInfo:
    """A registered proxy: its name, function and what it needs.

    Attributes:
        name: registry name.
        fn: ``fn(model, inputs, targets, **options) -> ProxyResult``.
        per_sample: whether it needs per-sample gradients (uses the shared engine).
        doc: first line of the function's docstring.
    """

    name: str
    fn: ProxyFn
    per_sample: bool = False
    doc: str = ""


_PROXIES: Registry[ProxyInfo] = Registry("proxy")


def register_proxy(name: str, *, per_sample: bool = False) -> Callable[[ProxyFn], ProxyFn]:
    """Decorator: register ``fn`` under ``name`` (a name can be registered once)."""

    def decorate(fn: ProxyFn) -> ProxyFn:
        origin = f" ({_PROXIES[name].fn.__module__})" if name in _PROXIES else ""
        doc = (fn.__doc__ or "").strip().splitlines()
        _PROXIES.add(name, ProxyInfo(name, fn, per_sample, doc[0] if doc else ""), origin=origin)
        return fn

    return decorate


def list_proxies(filter: str = "*") -> list[str]:
    """Sorted names of the registered proxies matching the shell-style pattern ``filter``."""
    return _PROXIES.names(filter)


def get_proxy(name: str) -> ProxyInfo:
    """The registered proxy ``name``; an unknown name is a ``KeyError`` listing the closest names."""
    return _PROXIES.lookup(name)


def score(name: str, model: nn.Module, inputs: Tensor, targets: Tensor, **options: Any) -> ProxyResult:
    """Score ``model`` on one mini-batch with the proxy registered as ``name``.

    ``ensemble`` is the exception: it ranks a set, so it takes a list of models and returns a list of results.
    """
    return get_proxy(name).fn(model, inputs, targets, **options)
