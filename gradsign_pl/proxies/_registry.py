"""Registry of zero-cost proxies, shaped like timm's model registry: register by decorator, build by name."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import Tensor, nn

from gradsign_pl.proxies._result import ProxyResult
from gradsign_pl.registry import Registry

ProxyFn = Callable[..., ProxyResult]
# what register_proxy decorates: a proxy function, returned unchanged (``ensemble`` returns a list of results)
_F = TypeVar("_F", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True)
class ProxyInfo:
    """A registered proxy: its name, function and what it needs.

    Attributes:
        name: registry name.
        fn: ``fn(model, inputs, targets, **options) -> ProxyResult``.
        per_sample: whether it needs per-sample gradients (uses the shared engine).
        doc: first line of the function's docstring.
        set_level: whether it ranks a *set* of models (``fn(models, inputs, targets, ...)`` returns one result per
            model, e.g. ``ensemble``, ``az_nas``) rather than scoring one.
    """

    name: str
    fn: ProxyFn
    per_sample: bool = False
    doc: str = ""
    set_level: bool = False


_PROXIES: Registry[ProxyInfo] = Registry("proxy")


def register_proxy(name: str, *, per_sample: bool = False, set_level: bool = False) -> Callable[[_F], _F]:
    """Decorator: register ``fn`` under ``name`` (a name can be registered once); see :class:`ProxyInfo`."""

    def decorate(fn: _F) -> _F:
        origin = f" ({_PROXIES[name].fn.__module__})" if name in _PROXIES else ""
        doc = (fn.__doc__ or "").strip().splitlines()
        _PROXIES.add(name, ProxyInfo(name, fn, per_sample, doc[0] if doc else "", set_level), origin=origin)
        return fn

    return decorate


def list_proxies(filter: str = "*") -> list[str]:
    """Sorted names of the registered proxies matching the shell-style pattern ``filter``."""
    return _PROXIES.names(filter)


def get_proxy(name: str) -> ProxyInfo:
    """The registered proxy ``name``; an unknown name is a ``KeyError`` listing the closest names."""
    return _PROXIES.lookup(name)


def proxy_options(name: str) -> dict[str, inspect.Parameter]:
    """The keyword options proxy ``name`` takes (every parameter after ``model, inputs, targets``)."""
    sig = inspect.signature(get_proxy(name).fn)
    return {k: p for k, p in list(sig.parameters.items())[3:] if p.kind is not inspect.Parameter.VAR_KEYWORD}


def check_options(name: str, options: Mapping[str, Any], *, where: str = "") -> dict[str, Any]:
    """Refuse options proxy ``name`` does not take, or values outside an option's ``Literal`` choices.

    Called wherever options are read (a :class:`~gradsign_pl.scoring.policy.ScoringPolicy`, the callback's
    ``options``, a recipe's ``triage.options``), so a misspelt option is an error there, not a failed score later.
    Returns the options as a plain dict.
    """
    where = f"{where}: " if where else ""
    if not isinstance(options, Mapping):
        raise TypeError(
            f"{where}options of proxy {name!r} must be a mapping of option -> value, got {type(options).__name__}"
        )
    known = proxy_options(name)
    takes_any = any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(get_proxy(name).fn).parameters.values()
    )
    hints = typing.get_type_hints(get_proxy(name).fn)
    for key, value in options.items():
        if key not in known and not takes_any:
            close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(
                f"{where}proxy {name!r} has no option {key!r}; {hint}its options: {', '.join(known) or 'none'}"
            )
        choices = _literal_choices(hints.get(key))
        if choices and not callable(value) and value not in choices:
            raise ValueError(f"{where}{name}.{key} must be one of {list(choices)}, got {value!r}")
    return dict(options)


def _literal_choices(hint: Any) -> tuple[Any, ...]:
    """The values a ``Literal[...]`` hint (possibly inside a ``Union``) allows; empty when it is not one."""
    if typing.get_origin(hint) is typing.Literal:
        return typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if typing.get_origin(a) is typing.Literal]
        others = [a for a in typing.get_args(hint) if typing.get_origin(a) is not typing.Literal]
        return () if others else tuple(v for a in args for v in typing.get_args(a))
    return ()


def set_level_proxies() -> list[str]:
    """Names of the registered proxies that rank a set of models (``ensemble``, ``az_nas``), not one."""
    return [n for n in _PROXIES.names("*") if _PROXIES.lookup(n).set_level]


def score(name: str, model: nn.Module, inputs: Tensor, targets: Tensor, **options: Any) -> ProxyResult:
    """Score ``model`` on one mini-batch with the proxy registered as ``name``.

    Set-level proxies (:func:`set_level_proxies`: ``ensemble``, ``az_nas``) are the exception: they rank a set, so
    they take a list of models and return a list of results.
    """
    return get_proxy(name).fn(model, inputs, targets, **options)
