"""``score_model``: one model, one batch, one policy and one seed -> every proxy's result; failures become reasons.

This is the only place where a candidate meets the proxies. The Trainer callback, :func:`gradsign_pl.rank`, the
evolutionary search's fitness and the NAS-Bench-201 study all call it, so a score means the same thing everywhere:

1. **The model.** A builder (``make()`` returning a fresh network) is called under the seed; a module the caller
   owns is never touched -- it is scored through a private copy (:func:`gradsign_pl.proxies.private_copy`).
2. **The policy.** Its initialisation (:func:`~gradsign_pl.scoring.policy.apply_init_policy`) is applied to a private
   copy under the same seed, on the CPU, before the model moves to ``device``.
3. **The proxies.** Each gets ``loss_fn`` and its options (the policy's, then ``options``), under
   :func:`gradsign_pl.rng.seeded` (every proxy also seeds its own work), so the caller's random state is unchanged.
4. **Failures.** A model that cannot be built, copied or re-initialised gives every proxy a ``nan`` result with that
   reason; a proxy that raises or returns a non-finite score gives its own ``nan`` result with the reason. An
   out-of-memory failure of a proxy that takes ``chunk_size`` is retried with half the chunk (down to 1); one that
   still runs out of memory is marked *transient* (:attr:`ModelScores.transient`): callers do not cache it as final.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradsign_pl.proxies import ProxyResult, batch_fingerprint, get_proxy, is_out_of_memory, private_copy, proxy_options
from gradsign_pl.proxies.size import count_flops
from gradsign_pl.rng import seeded
from gradsign_pl.scoring.policy import CELL_SPACE_POLICY, ScoringPolicy, apply_init_policy

__all__ = ["ModelScores", "describe_error", "score_model"]

ModelSource = nn.Module | Callable[[], nn.Module]

#: chunk sizes tried, in order, after an out-of-memory failure of a proxy that takes ``chunk_size``
OOM_CHUNKS = (8, 4, 2, 1)


@dataclasses.dataclass
class ModelScores:
    """Every requested proxy's result for one model on one batch.

    Attributes:
        results: proxy -> :class:`~gradsign_pl.proxies.ProxyResult` (``score`` is ``nan`` where it failed and
            ``reason`` says why); every requested proxy has an entry.
        params: parameters of the scored model (``None`` when it could not be built).
        flops: operations per sample (NB-201 convention) when ``size=True`` was asked, else ``None``.
        error: why the model itself could not be scored (build, copy or re-initialisation), else ``None``.
        transient: names of the proxies that failed for lack of memory even at the smallest chunk: a retry later,
            or with less at once, may succeed, so such a failure is not a result to keep.
        seconds: wall-clock seconds for the whole call.
    """

    results: dict[str, ProxyResult]
    params: int | None = None
    flops: int | None = None
    error: str | None = None
    transient: set[str] = dataclasses.field(default_factory=set)
    seconds: float = 0.0

    @property
    def scores(self) -> dict[str, float]:
        """proxy -> score (``nan`` where it failed)."""
        return {p: r.score for p, r in self.results.items()}

    @property
    def reasons(self) -> dict[str, str]:
        """proxy -> why it is ``nan`` (only the failed ones)."""
        return {p: r.reason or f"non-finite score {r.score}" for p, r in self.results.items() if not r.is_finite}

    @property
    def signal(self) -> float | None:
        """Fraction of the weights GradSign selected that had a non-zero gradient (``None`` without GradSign)."""
        r = self.results.get("gradsign")
        n, active = getattr(r, "n_params", 0), getattr(r, "n_active_params", None)
        return active / n if r is not None and r.is_finite and n and active is not None else None


def describe_error(exc: BaseException) -> str:
    """One line for a failure: the exception's type and first line; out of memory says what to try."""
    if is_out_of_memory(exc):
        return f"out of memory ({type(exc).__name__}); try a smaller batch (max_samples) or chunk_size"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def score_model(
    model: ModelSource,
    inputs: Tensor,
    targets: Tensor,
    proxies: Sequence[str],
    *,
    policy: ScoringPolicy = CELL_SPACE_POLICY,
    seed: int = 0,
    loss_fn: Callable[..., Tensor] = F.cross_entropy,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    device: str | torch.device | None = None,
    size: bool = False,
    admit: Callable[[int, int | None], str | None] | None = None,
) -> ModelScores:
    """Score one model on ``(inputs, targets)`` with every proxy in ``proxies`` (see the module docstring).

    Args:
        model: an ``nn.Module`` (scored through a private copy) or a builder ``make() -> nn.Module`` (called under
            ``seed``; the result is the builder's to give away, but a builder that returns a module someone else
            holds is safe too: the policy's re-initialisation always works on a copy).
        inputs, targets: the batch (moved to ``device``).
        proxies: registered proxy names (not ``ensemble``, which ranks a set).
        policy: initialisation and proxy options (its ordering terms do not apply to one model).
        seed: seeds the build, the re-initialisation and every proxy's own randomness.
        loss_fn: per-sample loss given to every proxy (proxies that use none ignore it).
        options: per-proxy options that override the policy's.
        device: where to score (default: the model's device, or the inputs' for a builder).
        size: also count FLOPs (params are always counted).
        admit: ``admit(params, flops) -> reason or None``: a reason skips the proxies (e.g. over a budget); each
            result is then ``nan`` with that reason and :attr:`ModelScores.error` holds it.
    """
    t0 = time.perf_counter()
    proxies = list(proxies)
    for p in proxies:
        if get_proxy(p).set_level:
            raise ValueError(f"{p!r} ranks a set of models and cannot score one; list its component proxies")
    options = {p: {**policy.options_for(p), **dict((options or {}).get(p, {}))} for p in proxies}
    try:
        net = _prepare(model, policy, seed)
        dev = torch.device(device) if device is not None else _device_of(net, inputs)
        if _device_of(net, inputs) != dev:
            net = (private_copy(net, train=net.training) if net is model else net).to(dev)
        n_params = sum(p.numel() for p in net.parameters())
        n_flops = None
        if size or admit is not None:
            with seeded(seed):
                n_flops = (
                    int(count_flops(private_copy(net, train=False, requires_grad=False), inputs[:2].to(dev))[0])
                    if size
                    else None
                )
    except Exception as exc:
        if isinstance(model, nn.Module) and policy.init != "as_built":
            reason = (
                f"init policy {policy.init!r} could not be applied to a copy of the module "
                f"({describe_error(exc)}); pass policy='cell-space' to score it as built"
            )
        else:
            reason = f"build/forward failed: {describe_error(exc)}"
        return ModelScores(
            {p: _failed(p, reason, inputs, targets) for p in proxies}, error=reason, seconds=time.perf_counter() - t0
        )
    skip = admit(n_params, n_flops) if admit is not None else None
    if skip is not None:
        return ModelScores(
            {p: _failed(p, skip, inputs, targets) for p in proxies},
            n_params,
            n_flops,
            error=skip,
            seconds=time.perf_counter() - t0,
        )
    x, y = inputs.to(dev), targets.to(dev)
    results: dict[str, ProxyResult] = {}
    transient: set[str] = set()
    for p in proxies:
        results[p], oom = _run_proxy(p, net, x, y, loss_fn, options[p], seed)
        if oom:
            transient.add(p)
    return ModelScores(results, n_params, n_flops, transient=transient, seconds=time.perf_counter() - t0)


def _prepare(model: ModelSource, policy: ScoringPolicy, seed: int) -> nn.Module:
    """The network to score: built under ``seed`` (or privately copied) and re-initialised by the policy."""
    with seeded(seed):
        if isinstance(model, nn.Module):
            if policy.init == "as_built":
                return model  # the proxies score private copies of it; nothing here writes to it
            net = private_copy(model, train=model.training)
        else:
            net = model()
            if not isinstance(net, nn.Module):
                raise TypeError(f"the model builder returned {type(net).__name__}, not an nn.Module")
        if policy.init != "as_built":
            if not isinstance(model, nn.Module):
                net = private_copy(net, train=net.training)  # a builder may hand back a module someone holds
            device = next((p.device for p in net.parameters()), torch.device("cpu"))
            net = apply_init_policy(net.cpu(), policy.init).to(device)  # drawn on the CPU, as validated
    return net


def _device_of(net: nn.Module, inputs: Tensor) -> torch.device:
    p = next(net.parameters(), None)
    return p.device if p is not None else inputs.device


def _run_proxy(
    name: str,
    net: nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: Callable[..., Tensor],
    options: Mapping[str, Any],
    seed: int,
) -> tuple[ProxyResult, bool]:
    """``(result, ran out of memory)``; retries with smaller chunks after an out-of-memory failure."""
    fn = get_proxy(name).fn
    chunks: list[int | None] = [options.get("chunk_size")]
    if "chunk_size" in proxy_options(name):
        start = options.get("chunk_size") or OOM_CHUNKS[0] * 2
        chunks += [c for c in OOM_CHUNKS if c < start]
    reason = ""
    for i, chunk in enumerate(chunks):
        kwargs = {**options, **({"chunk_size": chunk} if i else {})}
        try:
            with seeded(seed):
                result = fn(net, x, y, loss_fn=loss_fn, **kwargs)
        except Exception as exc:
            if is_out_of_memory(exc):
                reason = describe_error(exc)
                _free(x)
                continue
            return _failed(name, describe_error(exc), x, y), False
        if not isinstance(result, ProxyResult):
            return _failed(name, f"the proxy returned {type(result).__name__}, not a ProxyResult", x, y), False
        if not math.isfinite(result.score) and not result.reason:
            result.reason = f"non-finite score {result.score}"
        if i and result.is_finite:
            result.options = {**result.options, "oom_retry": f"ran out of memory at larger chunks; chunk {chunk}"}
        return result, False
    return _failed(name, f"{reason} (also at chunk_size {chunks[-1]})" if len(chunks) > 1 else reason, x, y), True


def _free(x: Tensor) -> None:
    if x.is_cuda:
        torch.cuda.empty_cache()


def _failed(proxy: str, reason: str, inputs: Tensor, targets: Tensor) -> ProxyResult:
    """A ``nan`` result for ``proxy`` carrying ``reason``."""
    try:
        fingerprint = batch_fingerprint(inputs, targets)
    except Exception:
        fingerprint = ""
    return ProxyResult(
        proxy=proxy,
        score=math.nan,
        n_samples=int(inputs.shape[0]) if inputs.ndim else 0,
        n_params=0,
        elapsed_s=0.0,
        peak_memory_bytes=None,
        device=str(inputs.device),
        dtype=str(inputs.dtype).removeprefix("torch."),
        batch_fingerprint=fingerprint,
        reason=reason,
    )
