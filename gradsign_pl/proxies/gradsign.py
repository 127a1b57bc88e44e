"""GradSign (Zhang & Jia, ICLR 2022): agreement of per-sample gradient signs at initialisation.

For a mini-batch of n samples and the selected parameters k = 1..m::

    score = sum_k | sum_i sign(g_ik) |,     g_ik = d loss(f(x_i), y_i) / d theta_k   at the current weights

Each parameter contributes between 0 (its per-sample gradients disagree in sign, or are all zero) and n (all
samples push it the same way), so ``0 <= score <= n * m``; higher predicts better trained accuracy.
``reduction="mean"`` divides by m (a value in [0, n]); ``reduction="active"`` divides by the number of
parameters with a non-zero gradient for at least one sample (a value in [0, n]), so that parameters the batch
cannot reach at this initialisation (zero-initialised branches, dead units) do not dilute the score.

Defaults follow the authors' code (``grad_conflict.py`` in cmu-catalyst/GradSign): one forward per sample with
BatchNorm normalising that sample alone, Conv/Linear weights, sum over parameters. See
:mod:`gradsign_pl.proxies._per_sample` for the engine and the BatchNorm policy.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradsign_pl.proxies import _per_sample as ps
from gradsign_pl.proxies._common import LossFn, ScoringContext, loss_name
from gradsign_pl.proxies._registry import register_proxy
from gradsign_pl.proxies._result import ProxyResult

Reduction = Literal["sum", "mean", "active"]
REDUCTIONS = ("sum", "mean", "active")


@dataclasses.dataclass
class GradSignResult(ProxyResult):
    """A GradSign score with how it was computed.

    Beyond :class:`ProxyResult`:
        n_active_params: parameters whose gradient was non-zero for at least one sample.
        engine: ``"vmap"`` or ``"loop"`` -- which per-sample engine ran.
        engine_reason: why the requested engine was not the one that ran (or why the chunk shrank), else ``None``.
        bn_policy: BatchNorm statistics used: ``"per_sample"``, ``"batch"`` or ``"none"`` (no BatchNorm).
        bn_reason: why ``bn_policy="auto"`` used ``"batch"``, else ``None``.
        chunk_size: samples per vmap chunk (1 for the loop engine).
    """

    n_active_params: int = 0
    engine: str = ""
    engine_reason: str | None = None
    bn_policy: str = ""
    bn_reason: str | None = None
    chunk_size: int = 0

    _kind = "GradSignResult"


class SignCounter:
    """Streaming reducer: per parameter, the running sum of per-sample gradient signs (int32, O(parameters))."""

    def __init__(self, params: dict[str, Tensor]) -> None:
        self.counts = {k: torch.zeros(p.shape, dtype=torch.int32, device=p.device) for k, p in params.items()}
        self.active = {k: torch.zeros(p.shape, dtype=torch.bool, device=p.device) for k, p in params.items()}
        self.nonfinite_samples: set[int] = set()
        self.nonfinite_params: dict[str, int] = {}

    def update(self, start: int, grads: dict[str, Tensor]) -> None:
        """Fold one chunk of per-sample gradients (``grads[k]``: chunk x param shape) into the counters.

        The chunk's tensors are consumed (signs are taken in place).
        """
        for k, g in grads.items():
            # one contiguous pass detects nan/inf (they propagate into the sum; a finite overflow only costs the
            # exact check below, which then finds nothing to mask)
            if not bool(torch.isfinite(g.sum())):
                bad = ~torch.isfinite(g)
                if bool(bad.any()):
                    self.nonfinite_samples.update((start + bad.flatten(1).any(1).nonzero().flatten()).tolist())
                    self.nonfinite_params[k] = self.nonfinite_params.get(k, 0) + int(bad.any(0).sum())
                    g = torch.where(bad, torch.zeros_like(g), g)
            # a chunk sum of +-1/0 is exact in float32 (and in bf16/fp16 up to 256 samples, widened below)
            acc = None if g.dtype in (torch.float32, torch.float64) else torch.float32
            signs = g.sign_() if g.is_contiguous() else g.sign()  # vmap may return expanded zeros
            self.counts[k] += signs.sum(0, dtype=acc).to(torch.int32)
            self.active[k] |= signs.abs_().amax(0) > 0  # some sample's gradient is non-zero

    def nonfinite_reason(self) -> str | None:
        if not self.nonfinite_samples:
            return None
        layers = ", ".join(f"{k} ({v})" for k, v in list(self.nonfinite_params.items())[:5])
        return (
            f"non-finite gradients for {len(self.nonfinite_samples)} sample(s) "
            f"(first: {sorted(self.nonfinite_samples)[:5]}) in {len(self.nonfinite_params)} "
            f"parameter tensor(s): {layers}"
        )


@register_proxy("gradsign", per_sample=True)
def gradsign(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    *,
    loss_fn: LossFn = F.cross_entropy,
    reduction: Reduction = "sum",
    params: ps.ParamSelection = "weights",
    bn_policy: ps.BNPolicy = "auto",
    chunk_size: int | None = None,
    engine: ps.Engine = "auto",
    strict: bool = False,
) -> GradSignResult:
    """Score ``model`` at its current weights with GradSign on one mini-batch.

    Args:
        model: any ``nn.Module``; it is not modified (weights, buffers, modes, ``requires_grad``, ``.grad`` and
            the global RNG state are as before).
        inputs: mini-batch of n >= 2 samples along dim 0; cast to the model's dtype and moved to its device.
        targets: n targets (class indices for the default loss).
        loss_fn: ``loss_fn(model(x_i[None]), y_i[None])`` -> the scalar loss of one sample.
        reduction: ``"sum"`` over parameters (the paper's metric), ``"mean"`` (divided by the number of
            selected parameters) or ``"active"`` (divided by the number of those with a non-zero gradient; 0 when
            none has one).
        params: ``"weights"`` (Conv1d/2d/3d and Linear weights), ``"all"`` trainable parameters, or a predicate
            ``(name, parameter) -> bool``.
        bn_policy: ``"auto"``, ``"per_sample"`` or ``"batch"`` -- see :mod:`gradsign_pl.proxies._per_sample`.
        chunk_size: samples per vectorised chunk; default: as many as fit a 256 MiB gradient budget and a 384 MiB
            activation budget (one sample's saved activations, measured), at most 16.
        engine: ``"auto"`` (vmap, loop if vmap cannot trace the model), ``"vmap"`` or ``"loop"``.
        strict: raise ``FloatingPointError`` on non-finite gradients instead of returning ``score=nan``.

    Returns:
        :class:`GradSignResult`; ``result.score`` is a float, higher = better predicted performance.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    with ScoringContext(model, inputs, targets) as ctx:
        names = ps.select_parameters(model, params)
        prepared, grads = ps.per_sample_gradients(
            model, names, ctx.inputs, ctx.targets, loss_fn, bn_policy=bn_policy, chunk_size=chunk_size, engine=engine
        )
        chunk_size = grads.chunk_size  # the requested or automatic size (an out-of-memory retry may lower it later)
        counter = SignCounter(grads.params)
        for start, chunk in grads:
            counter.update(start, chunk)

    per_layer_int = {k: int(c.abs().sum()) for k, c in counter.counts.items()}
    m = sum(c.numel() for c in counter.counts.values())
    n_active = int(sum(int(a.sum()) for a in counter.active.values()))
    scale = {"sum": 1.0, "mean": 1.0 / m, "active": 1.0 / max(n_active, 1)}[reduction]
    reason = counter.nonfinite_reason()
    if reason is not None and strict:
        raise FloatingPointError(
            f"GradSign: {reason}; check the model's initialisation and inputs, or pass strict=False"
        )
    score = float("nan") if reason else sum(per_layer_int.values()) * scale
    result = ctx.result(
        "gradsign",
        score,
        cls=GradSignResult,
        n_params=m,
        options={
            "reduction": reduction,
            "params": ps.describe_params(params),
            "bn_policy": bn_policy,
            "chunk_size": chunk_size,
            "engine": engine,
            "loss_fn": loss_name(loss_fn),
        },
        per_layer={k: v * scale for k, v in per_layer_int.items()},
        reason=reason,
        n_active_params=n_active,
        engine=grads.engine_used or "",
        engine_reason=grads.engine_reason,
        bn_policy=prepared.bn_policy,
        bn_reason=prepared.bn_reason,
        chunk_size=grads.chunk_size if grads.engine_used == "vmap" else 1,
    )
    return cast(GradSignResult, result)  # ctx.result builds cls=GradSignResult
