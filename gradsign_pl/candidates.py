"""Candidates: turn a model spec into a freshly initialised ``nn.Module`` that fits the data.

A zero-cost proxy scores a network *at initialisation*, so a candidate is not a model but a recipe for one:
:func:`candidate` validates a spec eagerly (unknown names, pretrained requests and malformed mappings fail
there, before anything is built) and :meth:`Candidate.build` makes a new network with the number of classes
and input channels of the data, every time it is called. Accepted spec forms:

- ``"timm:<name>"``: ``timm.create_model(name, pretrained=False, num_classes=..., in_chans=...)``; any name
  :func:`timm.list_models` knows (a ``name.tag`` such as ``resnet18.a1_in1k`` selects that default config,
  never weights).
- ``"torchvision:<name>"``: ``torchvision.models.get_model(name, weights=None, num_classes=...)``; any name
  :func:`torchvision.models.list_models` knows. torchvision models have no ``in_chans`` argument: when
  ``in_chans != 3`` the first ``nn.Conv2d`` with 3 input channels (in ``named_modules`` order) is replaced by
  a ``Conv2d`` with the same configuration and ``in_chans`` inputs, initialised by torch's ``Conv2d``
  default (not the model's own init scheme).
- ``"nb201:<arch string>"`` or ``"nb201:<index>"``: the NAS-Bench-201 network
  (:class:`gradsign_pl.spaces.nb201.NB201Network`); an index is looked up in the benchmark table, which
  must be in the data directory (see :mod:`gradsign_pl.data.paths`).
- ``"zen:<structure>"``: a ZenNAS MasterNet (:class:`gradsign_pl.spaces.zen.MasterNet`) from its structure
  string, e.g. ``"zen:SuperConvK3BNRELU(3,8,1,1)SuperResK3K3(8,16,2,8,1)SuperConvK1BNRELU(16,32,1,1)"``; the
  first block's input channels must equal ``in_chans``.
- ``{"model": "<one of the strings above>", "kwargs": {...}, "name": "display name"}``: ``kwargs`` go to the
  timm / torchvision factory (e.g. ``{"drop_rate": 0.1}``) or to ``NB201Network`` (``channels``,
  ``cells_per_stage``); ``kwargs`` and ``name`` are optional.
- ``{"class_path": "package.module.Class", "init_args": {...}, "name": "display name"}`` (jsonargparse
  style): the class (an ``nn.Module`` subclass) or function (returning one) is imported and called with
  ``init_args``, plus ``num_classes``, ``in_chans`` / ``in_channels`` and ``input_size`` where its signature
  names those parameters.
- a callable ``factory(num_classes=..., in_chans=..., input_size=...)`` returning an ``nn.Module``; it gets
  only the keyword arguments its signature names (``in_channels`` is accepted for ``in_chans``).

Pretrained weights are refused in every form (``pretrained=True``, ``weights=...``, ``weights_backbone=...``,
``pretrained_cfg=...``, ``checkpoint_path=...``): scoring at initialisation is the point, and nothing is ever
downloaded. Building never seeds: networks get their library's default initialisation from the global RNG,
so callers seed (``torch.manual_seed``) for reproducible weights.

Example::

    from gradsign_pl.candidates import candidate, build_model

    c = candidate({"model": "timm:resnet18", "kwargs": {"drop_rate": 0.1}})
    model = c.build(num_classes=10)                 # fresh random init, train mode
    model = build_model("torchvision:mobilenet_v3_small", num_classes=100, in_chans=1)
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import pkgutil
import re
from collections.abc import Callable, Mapping
from typing import Any, cast

import torch
from torch import nn

__all__ = ["Candidate", "CandidateSpec", "build_model", "candidate", "list_candidates"]

CandidateSpec = str | Mapping[str, Any] | Callable[..., nn.Module]
"""What :func:`candidate` accepts: a prefixed model string, a ``model``/``class_path`` mapping, or a factory."""

ACCEPTED_FORMS = (
    "'timm:<name>', 'torchvision:<name>', 'nb201:<arch|index>', 'zen:<structure>', "
    "a {'model': '<one of those>', 'kwargs': {...}} mapping, "
    "a {'class_path': 'package.module.Class', 'init_args': {...}} mapping, "
    "or a callable returning an nn.Module"
)
PREFIXES = ("timm", "torchvision", "nb201", "zen")
MODEL_KEYS = ("model", "kwargs", "name")
CLASS_PATH_KEYS = ("class_path", "init_args", "name")
NB201_KWARGS = ("channels", "cells_per_stage")
ZEN_KWARGS = ("use_se", "dropout")
# keys that ask for trained weights; a value other than None / False / "" is refused
PRETRAINED_KEYS = (
    "pretrained",
    "pretrained_backbone",
    "weights",
    "weights_backbone",
    "pretrained_cfg",
    "pretrained_cfg_overlay",
    "checkpoint_path",
)
_DATA_KEYS = ("num_classes", "in_chans", "in_channels")
_OOM = (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))


# ------------------------------------------------------------------------------------------------ plan


@dataclasses.dataclass(frozen=True)
class _Plan:
    """A validated spec: what to call (``kind`` + ``target``) with which extra keyword arguments."""

    kind: str  # "timm" | "torchvision" | "nb201" | "zen" | "class_path" | "callable"
    target: Any  # model name, arch string, imported class/function, or the callable
    kwargs: Mapping[str, Any]
    default_name: str


def _pretrained_message(where: str, request: str, fix: str) -> str:
    return (
        f"{where} asks for pretrained weights ({request}); candidates are scored at initialisation, so pretrained "
        f"weights would defeat the proxy, and gradsign_pl never downloads weights. {fix}; to train from saved "
        f"weights afterwards, point the training recipe at a local checkpoint file (e.g. its ckpt_path)"
    )


def _is_unset(value: Any) -> bool:
    return value is None or value is False or (isinstance(value, str) and value == "")


def _check_kwargs(kwargs: Any, where: str, field: str) -> dict[str, Any]:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping):
        raise TypeError(f"{where}: {field!r} must be a mapping of keyword arguments, got {type(kwargs).__name__}")
    bad = [k for k in kwargs if not isinstance(k, str)]
    if bad:
        raise ValueError(f"{where}: the keys of {field!r} must be argument names (strings), got {bad!r}")
    for key in PRETRAINED_KEYS:
        if key in kwargs and not _is_unset(kwargs[key]):
            fine = "False" if key in ("pretrained", "pretrained_backbone") else "None"
            raise ValueError(
                _pretrained_message(where, f"{key}={kwargs[key]!r}", f"Remove {key!r} ({key}={fine} is fine)")
            )
    return dict(kwargs)


def _reject_data_args(kwargs: Mapping[str, Any], names: Any, where: str, field: str) -> None:
    """``num_classes`` / ``in_chans`` come from :meth:`Candidate.build`, never from the spec."""
    clash = [k for k in kwargs if k in _DATA_KEYS and k in names]
    if clash:
        raise ValueError(
            f"{where}: {', '.join(map(repr, clash))} in {field!r} would override the data's value; "
            f"num_classes and in_chans come from build(num_classes=..., in_chans=...): remove them from {field!r}"
        )


def _suggest(name: str, names: list[str], n: int = 5) -> list[str]:
    return difflib.get_close_matches(name.lower(), names, n=n, cutoff=0.6)


@functools.lru_cache(maxsize=1)
def _timm_names() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models())


def _check_name_syntax(prefix: str, name: str, spec: str) -> None:
    lowered = name.lower()
    if "pretrained" in lowered or "weights=" in lowered:
        raise ValueError(
            _pretrained_message(
                f"candidate {spec!r}", "in the spec string", f"Write '{prefix}:<name>' alone (it builds random weights)"
            )
        )
    if any(c in name for c in "?=&"):
        raise ValueError(
            f"candidate {spec!r}: a spec string names a model only, it takes no options; pass options as "
            f"{{'model': '{prefix}:<name>', 'kwargs': {{...}}}}"
        )


def _parse_timm(name: str, spec: str) -> None:
    import timm

    _check_name_syntax("timm", name, spec)
    if timm.is_model(name):
        return
    if ":" in name:
        raise ValueError(
            f"candidate {spec!r}: timm hub / local-dir model names (hf-hub:, local-dir:) load a config or weights "
            "from outside and are not supported; use a registered name (timm.list_models()), a class_path "
            "or a callable"
        )
    close = _suggest(name, list(_timm_names()))
    hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
    raise ValueError(
        f"unknown timm model {name!r} in candidate {spec!r}; {hint}"
        f"timm.list_models('*pattern*') lists the names timm knows"
    )


def _parse_torchvision(name: str, spec: str) -> None:
    import torchvision

    _check_name_syntax("torchvision", name, spec)
    names = torchvision.models.list_models()
    if name in names:
        return
    close = _suggest(name, names)
    hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
    raise ValueError(
        f"unknown torchvision model {name!r} in candidate {spec!r}; {hint}"
        f"torchvision.models.list_models() lists the names torchvision knows"
    )


@functools.lru_cache(maxsize=4)
def _nb201_space(data_env: str | None) -> Any:
    """The NB-201 space, one per ``$GRADSIGN_DATA`` value, so its lazily read table is read once."""
    from gradsign_pl.spaces import create_space

    return create_space("nb201")


def _nb201_arch(target: str, spec: str) -> str:
    """The arch string of an ``nb201:`` target: the string itself (validated) or the table's row ``index``."""
    from gradsign_pl.data.paths import DATA_ENV
    from gradsign_pl.spaces.nb201 import N_EDGES, parse_arch

    if re.fullmatch(r"[+-]?\d+", target):
        index = int(target)
        size = 5**N_EDGES
        if not 0 <= index < size:
            raise ValueError(f"candidate {spec!r}: an NB-201 index must be in [0, {size}), got {index}")
        return _nb201_space(os.environ.get(DATA_ENV)).arch(index)  # FileNotFoundError names the data directory
    try:
        parse_arch(target)
    except ValueError as exc:
        raise ValueError(f"candidate {spec!r}: {exc}") from None
    return target


def _parse_string(spec: str, kwargs: Mapping[str, Any] | None = None, where: str | None = None) -> _Plan:
    text = spec.strip()
    prefix, sep, target = text.partition(":")
    prefix, target = prefix.strip().lower(), target.strip()
    where = where or f"candidate {spec!r}"
    if not sep or prefix not in PREFIXES:
        hint = ""
        if not sep and text:
            matches = [f"timm:{text}"] if text in _timm_names() else []
            matches += [f"torchvision:{text}"] if text in _torchvision_names() else []
            if matches:
                hint = f" (did you mean {' or '.join(map(repr, matches))}?)"
        elif sep:
            close = difflib.get_close_matches(prefix, PREFIXES, n=1, cutoff=0.5)
            if close:
                hint = f" (did you mean '{close[0]}:{target}'?)"
        raise ValueError(f"cannot read candidate {spec!r}{hint}; a candidate is one of {ACCEPTED_FORMS}")
    if not target:
        raise ValueError(f"candidate {spec!r} names no model; write '{prefix}:<name>'")
    kw = dict(kwargs or {})
    if prefix == "timm":
        _parse_timm(target, spec)
        _reject_data_args(kw, _DATA_KEYS, where, "kwargs")
    elif prefix == "torchvision":
        _parse_torchvision(target, spec)
        _reject_data_args(kw, _DATA_KEYS, where, "kwargs")
    elif prefix == "zen":
        unknown = [k for k in kw if k not in ZEN_KWARGS]
        if unknown:
            raise ValueError(
                f"{where}: MasterNet takes no {', '.join(map(repr, unknown))}; its extra arguments are "
                f"{', '.join(ZEN_KWARGS)} (num_classes and in_chans come from build())"
            )
        from gradsign_pl.spaces.zen import validate_structure

        try:
            validate_structure(target, in_chans=None)
        except ValueError as exc:
            raise ValueError(f"candidate {spec!r}: {exc}") from None
    else:
        unknown = [k for k in kw if k not in NB201_KWARGS]
        if unknown:
            raise ValueError(
                f"{where}: NB201Network takes no {', '.join(map(repr, unknown))}; its extra arguments are "
                f"{', '.join(NB201_KWARGS)} (num_classes and in_chans come from build())"
            )
        _nb201_arch(target, spec)
    return _Plan(prefix, target, kw, f"{prefix}:{target}")


def _torchvision_names() -> list[str]:
    import torchvision

    return torchvision.models.list_models()


def _call_name(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def _import_path(path: str, where: str) -> Any:
    """The object the dotted path ``package.module.Attr`` names (attributes may nest: ``package.module.Outer.Inner``).

    Resolved by the standard library's :func:`pkgutil.resolve_name`: the longest prefix that imports as a module,
    then attribute look-ups for the rest. Only the dotted form is accepted (as jsonargparse's ``class_path``), not
    resolve_name's ``package.module:Attr`` form.

    Raises:
        ValueError: naming the problem: a malformed path; a first module that is not installed; a module that
            fails to import (with its own error, also for a submodule whose import error resolve_name passes over);
            a missing attribute (with up to 3 close public names: "did you mean").
    """
    parts = path.split(".")
    if len(parts) < 2 or not all(p.isidentifier() for p in parts):
        hint = ""
        if ":" in path:
            hint = f"; a class_path has no ':' (a model spec such as 'timm:resnet18' goes in {{'model': {path!r}}})"
        raise ValueError(f"{where}: class_path must be a dotted path like 'package.module.Class', got {path!r}{hint}")
    try:
        return pkgutil.resolve_name(path)
    except ModuleNotFoundError as exc:  # the first part, which resolve_name requires to be a module
        if exc.name == parts[0]:
            raise ValueError(f"{where}: cannot import {path!r}: no module {parts[0]!r} is installed") from None
        raise ValueError(f"{where}: importing {parts[0]!r} failed: {exc}") from exc
    except AttributeError as exc:
        raise _unresolved_attribute(parts, where, exc) from None
    except Exception as exc:
        raise ValueError(
            f"{where}: importing {_failing_module(parts, exc)!r} failed: {type(exc).__name__}: {exc}"
        ) from exc


def _failing_module(parts: list[str], exc: BaseException) -> str:
    """The longest prefix of ``parts`` whose module code appears in ``exc``'s traceback (the module whose import
    raised it), else the whole dotted path."""
    prefixes = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    tb = exc.__traceback__
    found = ""
    while tb is not None:
        name = tb.tb_frame.f_globals.get("__name__", "")
        if name in prefixes and len(name) > len(found):
            found = name
        tb = tb.tb_next
    return found or ".".join(parts)


def _unresolved_attribute(parts: list[str], where: str, exc: AttributeError) -> ValueError:
    """Why :func:`pkgutil.resolve_name` ended in ``exc`` for ``".".join(parts)``: the first name that is neither an
    attribute nor an importable submodule (with close public names), or the import error of a submodule that exists
    (resolve_name treats any ImportError of a submodule as "not a module" and goes on with ``getattr``)."""
    obj: Any = importlib.import_module(parts[0])
    module_name = parts[0]
    for attr in parts[1:]:
        if inspect.ismodule(obj):
            sub = f"{module_name}.{attr}"
            try:
                found = importlib.util.find_spec(sub) is not None
            except (ImportError, ValueError):  # obj is not a package
                found = False
            if found:
                try:
                    obj = importlib.import_module(sub)
                except Exception as err:
                    return ValueError(f"{where}: importing {sub!r} failed: {type(err).__name__}: {err}")
                module_name = sub
                continue
        if not hasattr(obj, attr):
            public = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(attr, public, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            return ValueError(f"{where}: {getattr(obj, '__name__', obj)!r} has no attribute {attr!r}{hint}")
        obj = getattr(obj, attr)
    # every name resolves now: the AttributeError came from code run while importing
    return ValueError(f"{where}: importing {'.'.join(parts)!r} failed: AttributeError: {exc}")


def _signature(obj: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return None


def _named_params(sig: inspect.Signature | None) -> set[str]:
    """Parameter names that can be passed by keyword (``**kwargs`` does not count)."""
    if sig is None:
        return set()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {n for n, p in sig.parameters.items() if p.kind in kinds}


def _takes_var_kwargs(sig: inspect.Signature | None) -> bool:
    return sig is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())


def _parse_class_path(spec: Mapping[str, Any], where: str) -> _Plan:
    path = spec["class_path"]
    if not isinstance(path, str):
        raise TypeError(f"{where}: class_path must be a string like 'package.module.Class', got {type(path).__name__}")
    target = _import_path(path.strip(), where)
    if inspect.isclass(target):
        if not issubclass(target, nn.Module):
            raise ValueError(
                f"{where}: {path!r} is a class but not an nn.Module subclass; point class_path at a network class "
                f"or at a function that returns one"
            )
    elif not callable(target):
        raise ValueError(f"{where}: {path!r} is a {type(target).__name__}, not a class or function")
    init_args = _check_kwargs(spec.get("init_args"), where, "init_args")
    sig = _signature(target)
    params = _named_params(sig)
    _reject_data_args(init_args, params, where, "init_args")
    if not _takes_var_kwargs(sig):
        unknown = [k for k in init_args if k not in params]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, sorted(params), n=1, cutoff=0.6)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(
                f"{where}: {path} takes no argument {', '.join(hints)}; it takes: {', '.join(sorted(params))}"
            )
    name = f"{path}({_call_name(init_args)})" if init_args else path
    return _Plan("class_path", target, init_args, name)


def _parse_mapping(spec: Mapping[str, Any]) -> _Plan:
    keys = list(spec)
    if "class_path" in spec and "model" in spec:
        raise ValueError(f"candidate mapping {dict(spec)!r} has both 'class_path' and 'model'; give one of them")
    if "class_path" in spec:
        allowed, where = CLASS_PATH_KEYS, f"candidate {{'class_path': {spec['class_path']!r}, ...}}"
    elif "model" in spec:
        allowed, where = MODEL_KEYS, f"candidate {{'model': {spec['model']!r}, ...}}"
    else:
        raise ValueError(
            f"a candidate mapping needs a 'model' key ({', '.join(MODEL_KEYS)}) or a 'class_path' key "
            f"({', '.join(CLASS_PATH_KEYS)}); got keys {keys!r}"
        )
    unknown = [k for k in keys if k not in allowed]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), allowed, n=1, cutoff=0.6)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"{where}: unknown key(s) {', '.join(hints)}; allowed keys: {', '.join(allowed)}")
    name = spec.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"{where}: 'name' must be a non-empty string, got {name!r}")
    if "class_path" in spec:
        plan = _parse_class_path(spec, where)
    else:
        model = spec["model"]
        if not isinstance(model, str):
            raise ValueError(
                f"{where}: 'model' must be a spec string ('timm:<name>', 'torchvision:<name>', 'nb201:<arch|index>', "
                f"'zen:<structure>'), "
                f"got {type(model).__name__}"
            )
        kwargs = _check_kwargs(spec.get("kwargs"), where, "kwargs")
        plan = _parse_string(model, kwargs, where)
        if kwargs:
            plan = dataclasses.replace(plan, default_name=f"{plan.default_name}({_call_name(kwargs)})")
    return dataclasses.replace(plan, default_name=name.strip()) if name is not None else plan


def _callable_name(fn: Any) -> str:
    if isinstance(fn, functools.partial):
        return f"partial({_callable_name(fn.func)})"
    return getattr(fn, "__qualname__", None) or type(fn).__qualname__


def _parse(spec: Any) -> _Plan:
    if isinstance(spec, str):
        return _parse_string(spec)
    if isinstance(spec, Mapping):
        return _parse_mapping(spec)
    if callable(spec):
        if inspect.isclass(spec) and not issubclass(spec, nn.Module):
            raise ValueError(
                f"candidate {spec!r} is a class but not an nn.Module subclass; pass a network class or a function "
                f"that returns one"
            )
        return _Plan("callable", spec, {}, _callable_name(spec))
    raise TypeError(f"cannot read candidate {spec!r} ({type(spec).__name__}); a candidate is one of {ACCEPTED_FORMS}")


# ----------------------------------------------------------------------------------------------- build


def _check_build_args(num_classes: Any, in_chans: Any, input_size: Any) -> tuple[int, int] | None:
    for arg, value in (("num_classes", num_classes), ("in_chans", in_chans)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a positive int, got {value!r}")
    if input_size is None:
        return None
    if (
        isinstance(input_size, (str, bytes))
        or not hasattr(input_size, "__len__")
        or len(input_size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in input_size)
    ):
        raise ValueError(f"input_size must be (height, width) in pixels, two positive ints, got {input_size!r}")
    return (int(input_size[0]), int(input_size[1]))


def _torchvision_params(builder: Callable[..., Any]) -> tuple[set[str], set[str]]:
    """Keyword names of a torchvision builder and of the model class it returns (through ``**kwargs``)."""
    sig = _signature(builder)
    own = _named_params(sig)
    model_params: set[str] = set()
    cls = sig.return_annotation if sig is not None else None
    if inspect.isclass(cls):
        for klass in cls.__mro__:
            if klass is nn.Module or "__init__" not in vars(klass):
                continue
            init_sig = _signature(vars(klass)["__init__"])
            model_params |= _named_params(init_sig)
            if init_sig is not None and not _takes_var_kwargs(init_sig):
                break
    return own, model_params


_Pair = tuple[int, int]


def _replace_first_conv(model: nn.Module, in_chans: int, name: str) -> nn.Module:
    """Swap the first ``Conv2d`` with 3 input channels for one with ``in_chans`` (torch's default init)."""
    for path, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d) and conv.in_channels == 3:
            if in_chans % conv.groups:
                raise ValueError(
                    f"candidate {name!r}: its first convolution {path!r} has groups={conv.groups}, which does not "
                    f"divide in_chans={in_chans}; use a class_path or callable candidate that builds the stem itself"
                )
            # torch types these as tuple[int, ...] on every _ConvNd; a Conv2d's are pairs
            new = nn.Conv2d(
                in_chans,
                conv.out_channels,
                cast(_Pair, conv.kernel_size),
                stride=cast(_Pair, conv.stride),
                padding=cast("str | _Pair", conv.padding),
                dilation=cast(_Pair, conv.dilation),
                groups=conv.groups,
                bias=conv.bias is not None,
                padding_mode=conv.padding_mode,
                device=conv.weight.device,
                dtype=conv.weight.dtype,
            )
            if not path:
                return new
            parent_path, _, attr = path.rpartition(".")
            setattr(model.get_submodule(parent_path) if parent_path else model, attr, new)
            return model
    raise ValueError(
        f"candidate {name!r} has no Conv2d with 3 input channels to adapt to in_chans={in_chans}; use a class_path "
        f"or callable candidate that takes the number of input channels"
    )


def _data_kwargs(
    params: set[str], num_classes: int, in_chans: int, input_size: tuple[int, int] | None
) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if "num_classes" in params:
        kw["num_classes"] = num_classes
    for alias in ("in_chans", "in_channels"):
        if alias in params:
            kw[alias] = in_chans
    if input_size is not None and "input_size" in params:
        kw["input_size"] = input_size
    return kw


def _construct(
    plan: _Plan, name: str, num_classes: int, in_chans: int, input_size: tuple[int, int] | None
) -> tuple[Callable[[], Any], Callable[[nn.Module], nn.Module]]:
    """``(make, adapt)``: ``make()`` calls the third-party factory, ``adapt`` fixes its result up afterwards."""

    def keep(model: nn.Module) -> nn.Module:
        return model

    if plan.kind == "timm":
        import timm

        kw: dict[str, Any] = {}
        if input_size is not None:
            try:
                cfg = timm.models.get_pretrained_cfg(plan.target)
            except (KeyError, RuntimeError, ValueError):  # no default config: nothing to adapt
                cfg = None
            if cfg is not None and getattr(cfg, "fixed_input_size", False):
                kw["img_size"] = input_size
        kw.update(plan.kwargs)
        kw.update(pretrained=False, num_classes=num_classes, in_chans=in_chans)
        return (lambda: timm.create_model(plan.target, **kw)), keep

    if plan.kind == "torchvision":
        import torchvision

        builder = torchvision.models.get_model_builder(plan.target)
        own, model_params = _torchvision_params(builder)
        kw = {"weights": None}
        if "weights_backbone" in own:  # detection / segmentation builders default to ImageNet backbones
            kw["weights_backbone"] = None
        accepted = own | model_params
        if "aux_logits" in accepted:  # googlenet, inception_v3: plain logits, not a tuple
            kw["aux_logits"] = False
        if "init_weights" in accepted:  # the current default init, without the FutureWarning
            kw["init_weights"] = True
        if input_size is not None:
            if "image_size" in accepted:  # ViT: square positional-embedding grid
                if input_size[0] != input_size[1]:
                    raise ValueError(
                        f"candidate {name!r} needs square inputs (image_size), got input_size={input_size}"
                    )
                kw["image_size"] = input_size[0]
            elif "input_size" in accepted:  # MaxViT
                kw["input_size"] = input_size
        kw.update(plan.kwargs)
        kw["num_classes"] = num_classes

        def adapt(model: nn.Module) -> nn.Module:
            return _replace_first_conv(model, in_chans, name) if in_chans != 3 else model

        return (lambda: builder(**kw)), adapt

    if plan.kind == "nb201":
        from gradsign_pl.spaces.nb201 import NB201Network

        arch = _nb201_arch(plan.target, name)
        return (lambda: NB201Network(arch, num_classes, in_chans=in_chans, **plan.kwargs)), keep

    if plan.kind == "zen":
        from gradsign_pl.spaces.zen import MasterNet

        return (lambda: MasterNet(plan.target, num_classes, in_chans=in_chans, **plan.kwargs)), keep

    # class_path and callable: pass what the signature names
    kw = dict(plan.kwargs)
    kw.update(_data_kwargs(_named_params(_signature(plan.target)), num_classes, in_chans, input_size))
    return (lambda: plan.target(**kw)), keep


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A validated candidate: a display name and the spec it builds from (see the module docstring).

    Make one with :func:`candidate`, which validates the spec; equality compares name and spec, hashing uses the
    name only (specs may be unhashable mappings).

    Attributes:
        name: display name, e.g. ``"timm:resnet18"``.
        spec: the spec as given.
    """

    name: str
    spec: CandidateSpec = dataclasses.field(hash=False)

    @property
    def kind(self) -> str:
        """Where the candidate comes from: ``timm``, ``torchvision``, ``nb201``, ``zen``, ``class_path`` or
        ``callable``."""
        return _parse(self.spec).kind

    @property
    def fingerprint(self) -> str:
        """A short hash of what the network is built from: the spec with every kwarg / init arg (JSON), or for a
        factory its qualified name and source code. Caches key results on it, so a changed spec never reuses one."""
        return spec_fingerprint(self.spec)

    @property
    def is_cell_space(self) -> bool:
        """Whether it is a NAS cell-space network (``nb201:``, ``zen:``), where the authors' semantics are validated."""
        return self.kind in ("nb201", "zen")

    def build(self, num_classes: int, in_chans: int = 3, input_size: tuple[int, int] | None = None) -> nn.Module:
        """A freshly initialised network with ``num_classes`` outputs for ``in_chans``-channel images.

        Every call builds a new network with its library's default initialisation, drawn from the global RNG
        (seed it first for reproducible weights), on the default device, in train mode; no weights are loaded.

        Args:
            num_classes: classifier outputs (the data's number of classes).
            in_chans: input image channels.
            input_size: ``(height, width)`` the network will see; used only by models that fix their input size
                at construction (timm models with ``fixed_input_size``, as ``img_size``; torchvision ViT
                ``image_size``, square only; MaxViT and class_path/callable ``input_size``). ``None``: the
                model's default. Other models accept any size they can downsample (e.g. inception_v3 needs at
                least 75 px), which is checked by the first forward, not here.

        Raises:
            ValueError: a bad argument, or the factory failed (the message names the candidate and the error).
            TypeError: a class_path function or callable returned something that is not an ``nn.Module``.
            FileNotFoundError: an ``nb201:<index>`` candidate without the benchmark table.
        """
        size = _check_build_args(num_classes, in_chans, input_size)
        plan = _parse(self.spec)
        make, adapt = _construct(plan, self.name, num_classes, in_chans, size)
        try:
            model = make()
        except _OOM:
            raise
        except Exception as exc:
            raise ValueError(
                f"could not build candidate {self.name!r} (num_classes={num_classes}, in_chans={in_chans}, "
                f"input_size={size}): {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(model, nn.Module):
            what = "the factory" if plan.kind == "callable" else f"class_path {self.spec['class_path']!r}"  # type: ignore[index]
            raise TypeError(
                f"candidate {self.name!r}: {what} returned {type(model).__qualname__} ({model!r:.80}), not an "
                f"nn.Module; it must return the network"
            )
        return adapt(model)


def spec_fingerprint(spec: CandidateSpec) -> str:
    """See :attr:`Candidate.fingerprint`."""
    if callable(spec) and not isinstance(spec, (str, Mapping)):
        target = spec.func if isinstance(spec, functools.partial) else spec
        try:
            source = inspect.getsource(target)
        except (OSError, TypeError):
            source = ""
        extra = repr((spec.args, sorted(spec.keywords.items()))) if isinstance(spec, functools.partial) else ""
        text = f"{getattr(target, '__module__', '')}.{_callable_name(target)}|{source}|{extra}"
    else:
        text = json.dumps(spec, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def candidate(spec: CandidateSpec | Candidate, name: str | None = None) -> Candidate:
    """Validate ``spec`` and wrap it as a :class:`Candidate` named ``name`` (default: derived from the spec).

    Validation is eager and builds nothing: unknown model names (with the closest known names), pretrained
    requests, malformed mappings, unimportable class paths and malformed NB-201 arch strings fail here. An
    ``nb201:<index>`` reads the benchmark table now (``FileNotFoundError`` when the data directory lacks it).
    A :class:`Candidate` is returned as is (renamed when ``name`` is given).
    """
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"a candidate name must be a non-empty string, got {name!r}")
    if isinstance(spec, Candidate):
        return spec if name is None else dataclasses.replace(spec, name=name)
    plan = _parse(spec)
    return Candidate(name if name is not None else plan.default_name, spec)


def build_model(
    spec: CandidateSpec | Candidate, num_classes: int, in_chans: int = 3, input_size: tuple[int, int] | None = None
) -> nn.Module:
    """``candidate(spec).build(num_classes, in_chans, input_size)``: validate, then build a fresh network."""
    return candidate(spec).build(num_classes, in_chans, input_size)


def list_candidates(pattern: str = "*") -> list[str]:
    """Spec strings of the timm and torchvision models whose names match the shell-style ``pattern``.

    ``list_candidates("*resnet18*")`` gives ``["timm:resnet18", ..., "torchvision:resnet18"]``: timm's names
    first (``timm.list_models(pattern)``), then torchvision's. NB-201 archs are not listed (see
    :func:`gradsign_pl.spaces.nb201.all_archs`).
    """
    import timm

    return [f"timm:{n}" for n in timm.list_models(pattern)] + [
        f"torchvision:{n}" for n in _torchvision_names() if fnmatch.fnmatch(n, pattern)
    ]
