"""Scoring policies: how a candidate is prepared and its scores combined before it is ranked.

A zero-cost score depends on more than the proxy: the weights it is computed at, how BatchNorm normalises one
sample, how the per-parameter values are reduced, and whether the score is combined with the model's size. A
:class:`ScoringPolicy` names all of these, is applied identically to every candidate of a ranking, and is recorded
with every result.

Initialisation policies (``init``), applied to the model that is scored -- never to the caller's model:

* ``"as_built"``: the weights the builder produced (timm / torchvision initialisation, including timm's
  ``zero_init_last``, which sets the last BatchNorm weight of every residual block to zero).
* ``"norm_ones"``: as built, then every normalisation layer's weight (BatchNorm, GroupNorm, LayerNorm, ...) set to
  1. Undoes zero-initialised residual branches, whose convolutions otherwise get exactly zero gradient.
* ``"uniform"``: every layer that has ``reset_parameters()`` (Conv, Linear, normalisation, embeddings) re-drawn
  with PyTorch's default initialisation, so candidates from different libraries start from the same scheme.
  Parameters outside such layers (position embeddings, class tokens, layer-scale factors) keep their values.

Two policies are defined here:

* :data:`CELL_SPACE_POLICY` -- the authors' semantics (as built, per-sample BatchNorm, sum over Conv/Linear
  weights, no size term), used for NAS cell spaces (``nb201:``, ``zen:``) where they were validated.
* :data:`REAL_MODEL_POLICY` -- the default for everything else (timm / torchvision / custom models), chosen by
  leave-one-family-out cross-validation in ``benchmarks/triage_cifar10.py``; see ``docs/results/triage.md``. On
  that benchmark nothing beat #params, so it orders by #params and shows GradSign beside it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

InitPolicy = Literal["as_built", "norm_ones", "uniform"]
INIT_POLICIES: tuple[str, ...] = ("as_built", "norm_ones", "uniform")
ORDER_TERMS: tuple[str, ...] = ("proxy", "params", "flops")

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def apply_init_policy(model: nn.Module, init: str) -> nn.Module:
    """Re-initialise ``model`` in place according to ``init`` (see the module docstring) and return it.

    Only call this on a model you own (a fresh build or a private copy). ``"uniform"`` draws from the global
    torch RNG; seed it (or wrap the call in :func:`gradsign_pl.rng.seeded`) for a
    reproducible draw.
    """
    if init not in INIT_POLICIES:
        raise ValueError(f"init must be one of {INIT_POLICIES}, got {init!r}")
    if init == "as_built":
        return model
    with torch.no_grad():
        for module in model.modules():
            if init == "uniform" and callable(reset := getattr(module, "reset_parameters", None)):
                reset()
            elif isinstance(module, _NORMS) and getattr(module, "weight", None) is not None:
                module.weight.fill_(1.0)
    return model


@dataclasses.dataclass(frozen=True)
class ScoringPolicy:
    """One named way to score and order candidates.

    Attributes:
        name: short label recorded with results (``"cell-space"``, ``"real-model"``, or your own).
        init: initialisation policy, one of :data:`INIT_POLICIES`.
        proxy_options: extra keyword options per proxy, e.g. ``{"gradsign": {"bn_policy": "batch"}}``.
        order_terms: what the order follows: ``"proxy"`` (the ranking's ordering proxy), ``"params"``,
            ``"flops"``; two or more are combined by the log-rank sum (AZ-NAS). ``("proxy",)`` orders by the
            proxy alone; ``("params",)`` orders by size, with the proxies still scored and shown.
        seeds: initialisation seeds averaged per candidate unless the caller asks for another number.
    """

    name: str
    init: str = "as_built"
    proxy_options: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    order_terms: Sequence[str] = ("proxy",)
    seeds: int = 1

    def __post_init__(self) -> None:
        if self.init not in INIT_POLICIES:
            raise ValueError(f"ScoringPolicy.init must be one of {INIT_POLICIES}, got {self.init!r}")
        if isinstance(self.order_terms, str):
            object.__setattr__(self, "order_terms", (self.order_terms,))
        bad = [t for t in self.order_terms if t not in ORDER_TERMS]
        if bad or not self.order_terms or len(set(self.order_terms)) != len(self.order_terms):
            raise ValueError(
                f"ScoringPolicy.order_terms must name distinct terms among {ORDER_TERMS}, got {list(self.order_terms)}"
            )
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"ScoringPolicy.seeds must be >= 1, got {self.seeds}")
        object.__setattr__(self, "order_terms", tuple(self.order_terms))
        from gradsign_pl.proxies import check_options

        for proxy, options in self.proxy_options.items():
            check_options(proxy, options, where=f"ScoringPolicy {self.name!r}")  # misspelt names fail here
            try:
                json.dumps(dict(options))
            except TypeError as exc:
                raise ValueError(
                    f"ScoringPolicy.proxy_options[{proxy!r}] must hold plain values (it is recorded with every "
                    f"result and cache): {exc}; for GradSign's params use 'weights' or 'all', or call the proxy "
                    "directly with a predicate"
                ) from None
        object.__setattr__(self, "proxy_options", {k: dict(v) for k, v in self.proxy_options.items()})

    def __hash__(self) -> int:
        return hash(json.dumps(self.describe(), sort_keys=True, default=str))

    def options_for(self, proxy: str) -> dict[str, Any]:
        """The keyword options this policy passes to ``proxy``."""
        return dict(self.proxy_options.get(proxy, {}))

    def describe(self) -> dict[str, Any]:
        """A JSON-ready record of the policy (stored with rankings, caches and callback results)."""
        return {
            "name": self.name,
            "init": self.init,
            "proxy_options": copy.deepcopy(dict(self.proxy_options)),
            "order_terms": list(self.order_terms),
            "seeds": self.seeds,
        }

    def summary(self) -> str:
        """One line for people: ``real-model: init=norm_ones, gradsign(bn_policy=batch), ordered by proxy + params``."""
        opts = "; ".join(f"{p}({', '.join(f'{k}={v}' for k, v in o.items())})" for p, o in self.proxy_options.items())
        order = "" if self.order_terms == ("proxy",) else f", ordered by {' + '.join(self.order_terms)}"
        seeds = f", mean of {self.seeds} seeds" if self.seeds > 1 else ""
        return f"{self.name}: init={self.init}" + (f", {opts}" if opts else "") + order + seeds


CELL_SPACE_POLICY = ScoringPolicy("cell-space")
"""The authors' semantics: as built, per-sample BatchNorm where defined, sum over Conv/Linear weights, order by
the proxy. Validated on NAS-Bench-201 (docs/results/nb201.md)."""

REAL_MODEL_POLICY = ScoringPolicy(
    "real-model",
    init="uniform",
    proxy_options={"gradsign": {"bn_policy": "auto", "reduction": "sum"}},
    order_terms=("params",),
    seeds=3,
)
"""Order real models by #params; score GradSign after a uniform re-initialisation (mean of 3 seeds) and show it.

Chosen by leave-one-family-out cross-validation on 27 timm / torchvision models trained on CIFAR-10
(``benchmarks/triage_cifar10.py``, docs/results/triage.md). Among the options rank() can run, no GradSign
option, alone or combined with #params / FLOPs, ranked held-out families better than #params alone, so the order
follows #params. The GradSign shown is the option chosen the same way among GradSign options alone; as the authors
ran it, GradSign was near chance on these models (zero-initialised residual branches, 1x1 BatchNorm at 32 px)."""


def resolve_policy(policy: ScoringPolicy | str | None, cell_space_only: bool) -> ScoringPolicy:
    """``policy`` as a :class:`ScoringPolicy`: ``None``/``"auto"`` picks by the candidates' kind.

    ``"auto"`` gives :data:`CELL_SPACE_POLICY` when every candidate comes from a NAS cell space (``nb201:``,
    ``zen:``) and :data:`REAL_MODEL_POLICY` otherwise, so one ranking never mixes policies.
    """
    if isinstance(policy, ScoringPolicy):
        return policy
    if policy in (None, "auto"):
        return CELL_SPACE_POLICY if cell_space_only else REAL_MODEL_POLICY
    named = {"cell-space": CELL_SPACE_POLICY, "real-model": REAL_MODEL_POLICY}
    if policy in named:
        return named[policy]
    raise ValueError(f"policy must be 'auto', 'cell-space', 'real-model' or a ScoringPolicy, got {policy!r}")


def is_cell_space_model(module: nn.Module) -> bool:
    """Whether ``module`` contains a NAS cell-space network (NB-201 or MasterNet), scored with the authors'
    semantics."""
    from gradsign_pl.spaces.nb201 import NB201Network
    from gradsign_pl.spaces.zen import MasterNet

    return any(isinstance(m, (NB201Network, MasterNet)) for m in module.modules())
