"""Plumbing every proxy shares: a private copy of the model, the batch on the model's device, the timed result.

A proxy function looks like::

    @register_proxy("name")
    def name(model, inputs, targets, *, loss_fn=F.cross_entropy, ...) -> ProxyResult:
        with ScoringContext(model, inputs, targets) as ctx:       # validates, moves, isolates the RNG
            net = ctx.copy(train=True)                           # never the caller's model
            value = ...                                          # uses ctx.inputs / ctx.targets
        return ctx.result("name", value, n_params=..., options={...})
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.dropout import _DropoutNd

from gradsign_pl.proxies._result import ProxyResult
from gradsign_pl.rng import seeded

LossFn = Callable[[Any, Tensor], Tensor]


def validate_batch(inputs: Any, targets: Any, *, min_samples: int = 2) -> int:
    """Check that ``inputs``/``targets`` form a mini-batch of at least ``min_samples``; return its size."""
    if not isinstance(inputs, Tensor):
        raise TypeError(
            f"inputs must be a torch.Tensor with the samples along dim 0, got {type(inputs).__name__}; "
            "stack the mini-batch first (e.g. torch.stack(list_of_images))"
        )
    if not isinstance(targets, Tensor):
        raise TypeError(
            f"targets must be a torch.Tensor with one target per sample along dim 0, got {type(targets).__name__}; "
            "convert them with torch.as_tensor(targets)"
        )
    if inputs.ndim == 0 or targets.ndim == 0:
        raise ValueError("inputs and targets need a batch dimension (dim 0); got a 0-d tensor")
    n = inputs.shape[0]
    if targets.shape[0] != n:
        raise ValueError(
            f"inputs and targets disagree on the number of samples: {n} inputs vs {targets.shape[0]} targets; "
            "pass one target per input sample"
        )
    if n < min_samples:
        raise ValueError(
            f"need at least {min_samples} samples, got {n}; pass a real mini-batch (the GradSign paper uses 64)"
        )
    if not inputs.is_floating_point() and not inputs.is_complex():
        # integer images are a common slip: say how to fix it rather than failing inside a conv.
        raise TypeError(
            f"inputs must be floating point, got {inputs.dtype}; convert and normalise them first "
            "(e.g. inputs.float() / 255)"
        )
    return n


def batch_fingerprint(inputs: Tensor, targets: Tensor) -> str:
    """A short SHA-256 of the batch's shapes, dtypes and values, to tell batches apart in caches."""
    h = hashlib.sha256()
    for t in (inputs, targets):
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    """Floating dtype and device of the model's parameters."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype, p.device
    p = next(model.parameters())
    return torch.get_default_dtype(), p.device


def check_output_and_loss(output: Any, targets: Tensor, loss_fn: LossFn) -> None:
    """Validate targets against the model output and that ``loss_fn`` gives one scalar for one sample."""
    classification = loss_fn in (F.cross_entropy, F.nll_loss) or isinstance(loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss))
    if classification and isinstance(output, Tensor) and output.ndim == 2 and targets.ndim == 1:
        n_out = output.shape[1]
        labels = targets[targets != getattr(loss_fn, "ignore_index", -100)]
        lo, hi = (int(labels.min()), int(labels.max())) if labels.numel() else (0, 0)
        if not targets.is_floating_point() and (lo < 0 or hi >= n_out):
            raise ValueError(
                f"targets must be class indices in [0, {n_out}) for a model with {n_out} outputs, "
                f"got values from {lo} to {hi}; build the model with num_classes={max(hi + 1, n_out)} "
                "or remap the labels"
            )
    try:
        loss = loss_fn(output, targets[:1])
    except Exception as exc:
        raise ValueError(
            f"loss_fn failed on the model output for one sample ({type(exc).__name__}: {exc}); "
            "loss_fn(model(x[None]), y[None]) must return the loss of that sample"
        ) from exc
    if not isinstance(loss, Tensor) or loss.numel() != 1 or not loss.is_floating_point():
        what = (
            f"a {type(loss).__name__}" if not isinstance(loss, Tensor) else f"shape {list(loss.shape)} ({loss.dtype})"
        )
        raise ValueError(
            f"loss_fn must return one floating-point scalar per sample, got {what} for a batch of one sample; "
            "reduce it to a scalar (e.g. reduction='mean' or .sum())"
        )


def private_copy(model: nn.Module, *, train: bool, requires_grad: bool = True) -> nn.Module:
    """A deep copy of ``model`` in train or eval mode with cleared ``.grad``; the original is never touched.

    Dropout layers are always in eval mode: a score must not depend on a random mask.
    """
    try:
        net = copy.deepcopy(model)
    except Exception as exc:  # pragma: no cover - exotic modules
        raise TypeError(
            f"cannot copy {type(model).__name__} to score it without touching it ({exc}); "
            "make the model deep-copyable (copy.deepcopy) or pass a freshly built instance"
        ) from exc
    net.train(train)
    for m in net.modules():
        if isinstance(m, _DropoutNd):
            m.eval()
    net.requires_grad_(requires_grad)
    for p in net.parameters():
        p.grad = None
    return net


class ScoringContext(contextlib.AbstractContextManager):
    """Validate and place one mini-batch, isolate the RNG, time the work, and build the proxy's result.

    Attributes (inside the ``with`` block):
        inputs, targets: the batch on the model's device, floating tensors cast to the model's dtype.
        n: number of samples; dtype, device: the model's floating dtype and device.
    """

    def __init__(self, model: nn.Module, inputs: Any, targets: Any, *, min_samples: int = 2, seed: int = 0) -> None:
        self.t0 = time.perf_counter()
        self.model = model
        self.n = validate_batch(inputs, targets, min_samples=min_samples)
        if next(model.parameters(), None) is None:
            raise ValueError(
                f"the model ({type(model).__name__}) has no parameters, so there is nothing to score; "
                "pass a model with trainable layers"
            )
        self.dtype, self.device = model_dtype_device(model)
        self.inputs = inputs.to(device=self.device, dtype=self.dtype if inputs.is_floating_point() else None)
        self.targets = targets.to(device=self.device, dtype=self.dtype if targets.is_floating_point() else None)
        self.seed = seed
        self._rng = seeded(seed)
        self._base_mem = 0

    def __enter__(self) -> ScoringContext:
        if self.device.type == "cuda":
            # resets the CUDA peak counter (documented): the only way to measure this call's peak
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base_mem = torch.cuda.memory_allocated(self.device)
        self._rng.__enter__()
        return self

    def __exit__(self, *exc: Any) -> bool | None:
        return self._rng.__exit__(*exc)

    def copy(self, *, train: bool, requires_grad: bool = True) -> nn.Module:
        """A private copy of the model (see :func:`private_copy`)."""
        return private_copy(self.model, train=train, requires_grad=requires_grad)

    def result(
        self,
        proxy: str,
        score: float,
        *,
        n_params: int,
        options: dict[str, Any],
        per_layer: dict[str, float] | None = None,
        reason: str | None = None,
        cls: type[ProxyResult] = ProxyResult,
        **extra: Any,
    ) -> ProxyResult:
        """The proxy's result with time, memory, device, dtype and batch fingerprint filled in."""
        peak = None
        if self.device.type == "cuda":
            peak = int(torch.cuda.max_memory_allocated(self.device) - self._base_mem)
        return cls(
            proxy=proxy,
            score=float(score),
            n_samples=self.n,
            n_params=int(n_params),
            elapsed_s=time.perf_counter() - self.t0,
            peak_memory_bytes=peak,
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            batch_fingerprint=batch_fingerprint(self.inputs, self.targets),
            options=options,
            per_layer=per_layer or {},
            reason=reason,
            **extra,
        )


def loss_name(loss_fn: Any) -> str:
    """JSON-friendly name of a loss function."""
    return getattr(loss_fn, "__qualname__", type(loss_fn).__name__)


def finite_or_reason(value: Tensor | float, what: str) -> tuple[float, str | None]:
    """``(value, None)`` when finite, else ``(nan, reason)``."""
    v = float(value)
    if v == v and abs(v) != float("inf"):
        return v, None
    return float("nan"), f"{what} is not finite ({v}); check the model's initialisation and inputs"


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory failure (CUDA or host): transient, worth a retry with less at once."""
    if isinstance(exc, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
