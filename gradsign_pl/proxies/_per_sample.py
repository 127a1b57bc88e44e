"""The per-sample-gradient engine shared by the proxies that need one gradient per sample.

For a batch of n samples it yields, chunk by chunk, the gradient of ``loss_fn(model(x_i[None]), y_i[None])``
with respect to a selection of parameters, for every sample i. Two engines produce the same numbers:

* ``"vmap"`` (default): ``torch.func.vmap`` over ``torch.func.grad`` of a ``functional_call`` -- one vectorised
  forward/backward per chunk of ``chunk_size`` samples;
* ``"loop"``: one forward and one ``torch.autograd.grad`` per sample -- for models ``vmap`` cannot trace
  (data-dependent Python control flow, ``.item()``, custom autograd functions without a vmap rule).

With ``engine="auto"`` the vmap engine is tried on the first chunk and the loop engine takes over if it
raises; :attr:`PerSampleGradients.engine_reason` records why. Consumers reduce each chunk as it arrives, so
the memory held is the chunk's gradients (``chunk_size`` x parameters) plus whatever the reducer keeps --
never ``n`` x parameters.

The model is never touched: scoring runs on a private copy (see :func:`prepare_model`), in eval mode except
for BatchNorm, under an isolated, seeded RNG (:func:`gradsign_pl.rng.seeded`).

BatchNorm policy (``bn_policy``):

* ``"per_sample"``: each sample is normalised with its own statistics, exactly what a train-mode forward of
  ``x_i[None]`` does (the GradSign authors' semantics). Undefined where a BatchNorm layer sees one value per
  channel for one sample (BatchNorm after global pooling, BatchNorm1d on vectors, 1x1 feature maps).
* ``"batch"``: every BatchNorm layer normalises with the statistics an ordinary train-mode forward of the
  *whole* mini-batch computes (biased variance), held fixed -- so each sample's forward is exactly its row in
  the batched forward, and no gradient flows through the statistics.
* ``"auto"`` (default): ``"per_sample"`` when every BatchNorm layer can normalise a single sample, otherwise
  ``"batch"`` for the whole model (the reason is recorded).

Models without BatchNorm report ``"none"``. Dropout, DropPath and every other module that behaves
differently in training are in eval mode: scoring is a deterministic function of weights and batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from gradsign_pl.proxies._common import LossFn, check_output_and_loss, private_copy
from gradsign_pl.proxies._conv import use_unfold_weight_grad

ParamSelection = Literal["weights", "all"] | Callable[[str, nn.Parameter], bool]
BNPolicy = Literal["auto", "per_sample", "batch"]
Engine = Literal["auto", "vmap", "loop"]

WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
"""Layer types whose ``weight`` the default ``params="weights"`` selection scores (as the GradSign authors)."""

BN_POLICIES = ("auto", "per_sample", "batch")
ENGINES = ("auto", "vmap", "loop")

#: bytes of per-sample gradients one chunk may hold when ``chunk_size`` is not given.
CHUNK_GRADIENT_BUDGET = 256 * 2**20
#: bytes of activations (tensors saved for backward) one chunk may hold when ``chunk_size`` is not given: a vmap
#: chunk keeps about 1.7x one sample's saved activations per sample (EfficientNet-B0 at 224 px, n = 32, 1 thread:
#: 84 MB saved per sample; chunk 16 peaked at 5.4 GB in 28.7 s, chunk 4 at 1.5 GB in 9.3-10.0 s, one batched
#: forward+backward at 3.0 GB; benchmarks/results/gradsign_speed_effnet.md).
CHUNK_ACTIVATION_BUDGET = 384 * 2**20
#: upper bound for the automatic chunk size: larger chunks were not measurably faster on CPU, and their
#: activations would make peak memory grow with the batch (see docs/performance.md for the memory figures).
MAX_AUTO_CHUNK = 16


def select_parameters(model: nn.Module, params: ParamSelection) -> list[str]:
    """Names (as in ``model.named_parameters()``) of the trainable parameters a proxy looks at.

    ``"weights"``: the ``weight`` of every Conv1d/2d/3d and Linear layer (subclasses included), as the GradSign
    authors did; ``"all"``: every parameter; a callable ``(name, parameter) -> bool``: those it accepts.
    Parameters with ``requires_grad=False`` (frozen) are never selected.
    """
    named = dict(model.named_parameters())
    if not named:
        raise ValueError(
            f"the model ({type(model).__name__}) has no parameters, so there is no gradient to score; "
            "pass a model with trainable layers"
        )
    if params == "weights":
        names = []
        for mod_name, mod in model.named_modules():
            w = getattr(mod, "weight", None)
            if isinstance(mod, WEIGHT_LAYERS) and isinstance(w, nn.Parameter):
                name = f"{mod_name}.weight" if mod_name else "weight"
                if name in named:  # shared modules appear once in named_parameters
                    names.append(name)
        names = list(dict.fromkeys(names))
    elif params == "all":
        names = list(named)
    elif callable(params):
        names = [n for n, p in named.items() if params(n, p)]
    else:
        raise ValueError(f"params must be 'weights', 'all' or a callable (name, parameter) -> bool, got {params!r}")
    names = [n for n in names if named[n].requires_grad]
    if not names:
        what = {"weights": "no trainable Conv/Linear weight", "all": "no trainable parameter"}.get(
            params if isinstance(params, str) else "", "the predicate accepted no trainable parameter"
        )
        raise ValueError(
            f"no parameter selected: {what} in {type(model).__name__}; "
            "use params='all' or a predicate that selects some trainable parameters"
        )
    return names


def describe_params(params: ParamSelection) -> str:
    """JSON-friendly description of a parameter selection."""
    return params if isinstance(params, str) else f"predicate:{getattr(params, '__qualname__', repr(params))}"


# ---------------------------------------------------------------------------------------------- model


class _SingleValueBatchNorm(Exception):
    def __init__(self, layer: str, shape: tuple[int, ...]) -> None:
        super().__init__(layer, shape)
        self.layer, self.shape = layer, shape


def _batchnorms(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _set_per_sample_statistics(bn: nn.modules.batchnorm._BatchNorm) -> None:
    bn.train()
    bn.track_running_stats = False
    bn.running_mean = None
    bn.running_var = None
    bn.num_batches_tracked = None


class PreparedModel:
    """A private, scoring-ready copy of a model.

    Attributes:
        module: the copy: eval mode, ``requires_grad=False`` everywhere, BatchNorm set up per ``bn_policy``.
        bn_policy: the policy in force: ``"per_sample"``, ``"batch"`` or ``"none"`` (no BatchNorm layer).
        bn_reason: why ``"auto"`` fell back to ``"batch"``, else ``None``.
        probe_output: the copy's output for the first sample (used to validate targets and loss).
    """

    def __init__(self, module: nn.Module, bn_policy: str, bn_reason: str | None, probe_output: Any) -> None:
        self.module = module
        self.bn_policy = bn_policy
        self.bn_reason = bn_reason
        self.probe_output = probe_output


def prepare_model(model: nn.Module, inputs: Tensor, bn_policy: BNPolicy = "auto") -> PreparedModel:
    """Copy ``model`` and set the copy up for per-sample scoring under ``bn_policy`` (see module docstring)."""
    if bn_policy not in BN_POLICIES:
        raise ValueError(f"bn_policy must be one of {BN_POLICIES}, got {bn_policy!r}")
    module = private_copy(model, train=False, requires_grad=False)
    use_unfold_weight_grad(module)

    bns = _batchnorms(module)
    if not bns:
        with torch.no_grad():
            out = module(inputs[:1])
        return PreparedModel(module, "none", None, out)

    reason = None
    if bn_policy in ("auto", "per_sample"):
        for _, bn in bns:
            _set_per_sample_statistics(bn)
        try:
            out = _probe_single_sample(module, bns, inputs[:1])
            return PreparedModel(module, "per_sample", None, out)
        except _SingleValueBatchNorm as exc:
            reason = (
                f"BatchNorm layer '{exc.layer}' sees one value per channel for a single sample "
                f"(input shape {list(exc.shape)}), so per-sample statistics are undefined"
            )
            if bn_policy == "per_sample":
                raise ValueError(
                    f"bn_policy='per_sample' is impossible for this model and input size: {reason}; "
                    "use bn_policy='batch' (or 'auto'), or a larger input resolution"
                ) from None
    out = _fix_batch_statistics(module, bns, inputs)
    return PreparedModel(module, "batch", reason, out[:1] if isinstance(out, Tensor) else out)


def _probe_single_sample(module: nn.Module, bns: list, x1: Tensor) -> Any:
    def check(name: str) -> Callable:
        def hook(_mod: nn.Module, args: tuple) -> None:
            x = args[0]
            if x.shape[0] * math.prod(x.shape[2:]) == 1:
                raise _SingleValueBatchNorm(name, tuple(x.shape))

        return hook

    handles = [bn.register_forward_pre_hook(check(name)) for name, bn in bns]
    try:
        with torch.no_grad():
            return module(x1)
    finally:
        for h in handles:
            h.remove()


def _fix_batch_statistics(module: nn.Module, bns: list, inputs: Tensor) -> Any:
    """Record every BatchNorm layer's whole-batch statistics in a train-mode forward; freeze them as running stats."""
    stats: dict[str, tuple[Tensor, Tensor]] = {}

    def capture(name: str) -> Callable:
        def hook(_mod: nn.Module, args: tuple) -> None:
            x = args[0]
            dims = [0, *range(2, x.ndim)]
            acc = torch.float64 if x.dtype == torch.float64 else torch.float32
            xf = x.to(acc)
            stats[name] = (xf.mean(dims).to(x.dtype), xf.var(dims, unbiased=False).to(x.dtype))

        return hook

    for _, bn in bns:
        _set_per_sample_statistics(bn)  # train mode, no running stats: normalise with batch statistics
    handles = [bn.register_forward_pre_hook(capture(name)) for name, bn in bns]
    try:
        with torch.no_grad():
            out = module(inputs)
    finally:
        for h in handles:
            h.remove()
    for name, bn in bns:
        if name not in stats:  # layer not on the forward path: give it neutral statistics
            continue
        mean, var = stats[name]
        bn.eval()
        bn.track_running_stats = True
        bn.register_buffer("running_mean", mean)
        bn.register_buffer("running_var", var)
    return out


# ---------------------------------------------------------------------------------------------- engine


def auto_chunk_size(model: nn.Module, names: list[str], n: int, activation_bytes: int = 0) -> int:
    """Samples per vmap chunk so that one chunk's per-sample gradients stay within ``CHUNK_GRADIENT_BUDGET`` and
    its activations (``activation_bytes`` per sample, see :func:`saved_activation_bytes`) within
    ``CHUNK_ACTIVATION_BUDGET``; at most ``MAX_AUTO_CHUNK`` and ``n``, at least 1."""
    named = dict(model.named_parameters())
    nbytes = sum(named[k].numel() * named[k].element_size() for k in names)
    by_activations = CHUNK_ACTIVATION_BUDGET // activation_bytes if activation_bytes > 0 else n
    return max(1, min(n, MAX_AUTO_CHUNK, CHUNK_GRADIENT_BUDGET // max(nbytes, 1), by_activations))


def saved_activation_bytes(prepared: PreparedModel, x1: Tensor) -> int:
    """Bytes of the tensors one sample's forward saves for backward (parameters excluded), in the prepared model.

    One forward of ``x1`` (one sample, made to require grad so every op saves what its backward needs) under
    ``torch.autograd.graph.saved_tensors_hooks``; the prepared model is a private copy, so nothing of the caller's
    changes. Tensors saved twice (same storage) count once.
    """
    params = {p.data_ptr() for p in prepared.module.parameters()} | {b.data_ptr() for b in prepared.module.buffers()}
    seen: dict[tuple[int, int], int] = {}
    alive: list[Tensor] = []  # every saved tensor stays alive until the count is done, so no address is reused

    def pack(t: Tensor) -> None:
        if t.device.type != "meta" and t.data_ptr() not in params:
            seen[(t.data_ptr(), t.numel())] = t.numel() * t.element_size()
        alive.append(t)
        # nothing goes into the graph: a pack hook that returns an op's own output makes output -> grad_fn ->
        # output a cycle through C++ that Python's gc cannot free (measured: ~6 MB per scored NB-201 network)

    def unpack(_: None) -> Tensor:
        raise RuntimeError("saved_activation_bytes: this forward is only measured, never differentiated")

    x = x1.detach().clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        out = prepared.module(x)
    del out, x
    alive.clear()
    return sum(seen.values())


class PerSampleGradients:
    """Iterate over per-sample gradients of a prepared model, one chunk at a time.

    Each item is ``(start, grads)``: ``grads[name]`` has shape ``(c, *param.shape)`` and holds the gradients of
    samples ``start .. start + c - 1``. Parameters that get no gradient from a sample are zeros.
    """

    def __init__(
        self,
        prepared: PreparedModel,
        names: list[str],
        inputs: Tensor,
        targets: Tensor,
        loss_fn: LossFn,
        *,
        chunk_size: int,
        engine: Engine = "auto",
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        self.module = prepared.module
        self.names = names
        self.inputs, self.targets, self.loss_fn = inputs, targets, loss_fn
        self.chunk_size = chunk_size
        self.requested_engine = engine
        named = dict(self.module.named_parameters())
        #: the selected parameters (detached), by name
        self.params = {k: named[k].detach() for k in names}
        self.engine_used: str | None = None
        self.engine_reason: str | None = None

    # -- engines
    def _loss_one(self, params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        out = functional_call(self.module, params, (x.unsqueeze(0),))
        return self.loss_fn(out, y.unsqueeze(0)).reshape(())

    def _vmap_chunk(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        fn = vmap(grad(self._loss_one), in_dims=(None, 0, 0), randomness="different")
        # the fused attention kernels have no vmap rule (vmap would loop over samples); the math one does
        with sdpa_kernel(SDPBackend.MATH):
            return fn(self.params, x, y)

    def _loop_chunk(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        params = {k: v.clone().requires_grad_(True) for k, v in self.params.items()}
        leaves = [params[k] for k in self.names]
        with torch.enable_grad():
            loss = self._loss_one(params, x[0], y[0])
            gs = torch.autograd.grad(loss, leaves, allow_unused=True, materialize_grads=True)
        return {k: g.unsqueeze(0) for k, g in zip(self.names, gs)}

    def __iter__(self) -> Iterator[tuple[int, dict[str, Tensor]]]:
        n = self.inputs.shape[0]
        engine, chunk, start = self.requested_engine, self.chunk_size, 0
        if engine in ("auto", "vmap"):
            while start < n:
                stop = min(n, start + chunk)
                try:
                    grads = self._vmap_chunk(self.inputs[start:stop], self.targets[start:stop])
                except torch.OutOfMemoryError:
                    if chunk == 1:
                        raise
                    chunk = max(1, chunk // 2)
                    self.engine_reason = f"out of memory; chunk_size reduced to {chunk}"
                    continue
                except Exception as exc:
                    if engine == "vmap" or start > 0:
                        raise
                    self.engine_reason = (
                        f"vmap failed ({type(exc).__name__}: {_first_line(exc)}); one backward per sample"
                    )
                    engine = "loop"
                    break
                self.engine_used, self.chunk_size = "vmap", chunk
                yield start, grads
                start = stop
            if engine != "loop":
                return
        self.engine_used = "loop"
        for i in range(n):
            yield i, self._loop_chunk(self.inputs[i : i + 1], self.targets[i : i + 1])


def per_sample_gradients(
    model: nn.Module,
    names: list[str],
    inputs: Tensor,
    targets: Tensor,
    loss_fn: LossFn,
    *,
    bn_policy: BNPolicy = "auto",
    chunk_size: int | None = None,
    engine: Engine = "auto",
) -> tuple[PreparedModel, PerSampleGradients]:
    """The set-up every per-sample proxy shares: a prepared private copy (:func:`prepare_model`), the chunk size
    (:func:`auto_chunk_size` on the measured activations when ``None``), targets and loss checked on the probe
    output, and the iterator over the chunks of per-sample gradients of ``names``."""
    prepared = prepare_model(model, inputs, bn_policy)
    if chunk_size is None:
        chunk_size = auto_chunk_size(model, names, inputs.shape[0], saved_activation_bytes(prepared, inputs[:1]))
    check_output_and_loss(prepared.probe_output, targets, loss_fn)
    grads = PerSampleGradients(prepared, names, inputs, targets, loss_fn, chunk_size=chunk_size, engine=engine)
    return prepared, grads


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text[:limit]
