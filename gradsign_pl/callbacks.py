"""Lightning callback: score the model with zero-cost proxies at initialisation, before the first training step.

Example::

    from lightning.pytorch import Trainer
    from gradsign_pl.callbacks import GradSignCallback

    trainer = Trainer(callbacks=[GradSignCallback(("gradsign", "synflow"), stop_below={"gradsign": 1e4})])
    trainer.fit(model, datamodule=dm)        # logs zero_cost/gradsign, zero_cost/synflow at step 0

The scores are computed once, on one training batch, at the weights the fit starts from; they are saved in
checkpoints and restored (not recomputed) when a fit resumes.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.utilities import CombinedLoader, rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor, nn
from torch.utils.data import DataLoader

from gradsign_pl.proxies import check_options, get_proxy
from gradsign_pl.rng import seeded
from gradsign_pl.scoring.batch import BatchTransform, unpack_batch
from gradsign_pl.scoring.core import score_model
from gradsign_pl.scoring.policy import ScoringPolicy, is_cell_space_model, resolve_policy

__all__ = ["GradSignCallback"]

ForwardFn = Callable[[LightningModule, Tensor], Tensor]

_WRAPPER_PREFIX = "module."


class GradSignCallback(Callback):
    """Score the model with zero-cost proxies on one training batch before training, log it, optionally stop.

    When the fit starts (``on_fit_start``), the callback takes the first batch of the trainer's training
    dataloader, passes it through the LightningModule's batch-transfer hooks exactly as the training loop would,
    unpacks it into ``(inputs, targets)``, keeps the first ``max_samples`` samples and scores the module with
    every proxy in ``proxies`` (``gradsign_pl.score(name, model, inputs, targets, loss_fn=loss_fn, **options)``).
    The proxies work on private copies: the module's weights, buffers, train/eval modes, ``requires_grad``,
    ``.grad``, its trainer reference and the global RNG state (torch, CUDA, NumPy, ``random``) are as before,
    and the training that follows is the same as without the callback.

    Results:
        * :attr:`results` -- ``{proxy: ProxyResult.to_dict()}``; ``per_layer`` names are the module's own.
        * :attr:`scores` -- ``{proxy: score}`` (``nan`` when a proxy could not score; ``results[p]["reason"]``
          says why).
        * every logger in ``trainer.loggers`` gets ``{prefix + proxy: score}`` at ``step=trainer.global_step``
          (0), and one line per proxy (score, seconds) is printed with ``rank_zero_info``.

    A proxy that raises does not stop the fit: its score is ``nan``, the reason is recorded and a warning is
    issued. A batch the callback cannot unpack is a ``ValueError`` (pass ``batch_transform``).

    Stopping: when a score is below its ``stop_below`` threshold, or ``nan``, the callback sets
    ``trainer.should_stop = True`` before the training loop starts, so no training step runs
    (``trainer.global_step == 0``). It also skips the sanity-check validation and lifts ``min_epochs`` /
    ``min_steps``, which would otherwise force training to continue. :attr:`stopped` and
    :attr:`stop_reason` record the decision; a warning says which proxy, its score and its threshold.

    Checkpoints: :meth:`state_dict` holds the results and the stop decision. A fit resumed with
    ``ckpt_path`` restores them and does not score again (nor stop again). Resuming from a checkpoint that has no
    state of this callback (or continuing a fit whose ``global_step`` is past 0) scores nothing: the weights
    are trained, not the initial ones; a warning says so.

    Distributed: the batch is taken and scored on global rank 0 only, and the results are broadcast with
    ``trainer.strategy.broadcast``, so all ranks log, report and stop alike. Scoring needs the whole model
    on rank 0 (it deep-copies the module), so sharded strategies (FSDP, DeepSpeed stage 3) are not supported;
    with them the callback scores in ``on_train_start``, after the strategy restores checkpoints.

    Args:
        proxies: registered proxy names (``gradsign_pl.list_proxies()``), scored in this order.
        loss_fn: per-sample loss ``loss_fn(output, target)`` passed to every proxy (proxies that use no loss
            ignore it); ``options[proxy]["loss_fn"]`` overrides it for one proxy.
        forward: ``forward(module, inputs) -> output`` used instead of ``module(inputs)``, for modules whose
            ``forward`` does not map a batch of inputs to the outputs the loss expects. It receives the
            (copied) module, so it must not capture the original one; it is never deep-copied.
        batch_transform: ``batch_transform(batch) -> (inputs, targets)``, given the batch as ``training_step``
            receives it. Default: a ``(x, y)`` tuple/list, or a dict with an input key (``x``, ``image``,
            ``images``, ``input``, ``inputs``) and a target key (``y``, ``label``, ``labels``, ``target``,
            ``targets``).
        max_samples: keep the first ``max_samples`` samples of the batch (``None``: the whole batch). The
            GradSign paper uses 64.
        stop_below: a float is the threshold of the first proxy; a mapping gives thresholds per proxy name;
            ``None`` never stops.
        prefix: prefix of the logged metric names.
        options: extra keyword options per proxy, ``{"gradsign": {"reduction": "mean"}}``; they override the
            policy's options for that proxy.
        policy: the :class:`~gradsign_pl.scoring.policy.ScoringPolicy` whose initialisation policy and proxy options the
            scoring uses, or ``"cell-space"`` / ``"real-model"``. ``"auto"``: the authors' semantics when the
            module contains a NAS cell-space network (NB-201, MasterNet), the validated real-model policy
            otherwise. The real-model policy scores the *architecture*: a private copy re-initialised uniformly
            (seed 0), so a custom or pretrained initialisation of the module is not what is scored; to score the
            module's own weights (e.g. to catch a broken initialisation), pass ``policy="cell-space"`` or a
            ScoringPolicy with ``init="as_built"``. The policy is recorded in every result
            (``results[p]["options"]["policy"]``). A policy's order terms and seeds do not apply: one model,
            scored once.
    """

    def __init__(
        self,
        proxies: Sequence[str] = ("gradsign",),
        *,
        loss_fn: Callable[..., Tensor] = F.cross_entropy,
        forward: ForwardFn | None = None,
        batch_transform: BatchTransform | None = None,
        max_samples: int | None = 64,
        stop_below: float | Mapping[str, float] | None = None,
        prefix: str = "zero_cost/",
        options: Mapping[str, Mapping[str, Any]] | None = None,
        policy: ScoringPolicy | str | None = "auto",
    ) -> None:
        if isinstance(proxies, str):
            proxies = (proxies,)
        self.proxies: tuple[str, ...] = tuple(proxies)
        if not self.proxies:
            raise ValueError("proxies is empty; name at least one proxy, e.g. proxies=('gradsign',)")
        if len(set(self.proxies)) != len(self.proxies):
            raise ValueError(f"proxies lists a name twice: {list(self.proxies)}")
        for name in self.proxies:
            if get_proxy(name).set_level:  # (an unknown name: KeyError naming the closest registered proxies)
                raise ValueError(
                    f"{name!r} ranks a set of candidate models and cannot score one model; list its components "
                    "instead (e.g. proxies=('gradsign', 'synflow'))"
                )
        if max_samples is not None and (
            isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1
        ):
            raise ValueError(f"max_samples must be a positive int or None, got {max_samples!r}")
        self.options: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (options or {}).items()}
        unknown = sorted(set(self.options) - set(self.proxies))
        if unknown:
            raise ValueError(f"options names proxies that are not scored: {unknown}; scored: {list(self.proxies)}")
        for name, opts in self.options.items():
            check_options(name, {k: v for k, v in opts.items() if k != "loss_fn"}, where="GradSignCallback options")
        self.thresholds: dict[str, float] = self._parse_thresholds(stop_below)
        if not (policy is None or isinstance(policy, (str, ScoringPolicy))):
            raise TypeError(f"policy must be 'auto', 'cell-space', 'real-model' or a ScoringPolicy, got {policy!r}")
        if isinstance(policy, str):
            resolve_policy(policy, cell_space_only=False)  # an unknown name fails here, not at fit start
        self.policy = policy
        self.loss_fn = loss_fn
        self.forward = forward
        self.batch_transform = batch_transform
        self.max_samples = max_samples
        self.stop_below = stop_below
        self.prefix = prefix

        self.results: dict[str, dict[str, Any]] = {}
        self.stopped: bool = False
        self.stop_reason: str | None = None
        self._module_ref: weakref.ReferenceType[LightningModule] | None = None

    # ------------------------------------------------------------------ public state

    @property
    def scores(self) -> dict[str, float]:
        """``{proxy: score}`` of the last scoring (``nan`` where a proxy could not score); empty before."""
        return {k: math.nan if d.get("score") is None else float(d["score"]) for k, d in self.results.items()}

    @property
    def state_key(self) -> str:
        """Distinguishes several instances of this callback in one checkpoint."""
        return self._generate_state_key(proxies=self.proxies, prefix=self.prefix)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps: the results (plain JSON types) and the stop decision."""
        return {
            "results": {k: dict(v) for k, v in self.results.items()},
            "stopped": self.stopped,
            "stop_reason": self.stop_reason,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the next fit start then keeps these results instead of scoring again."""
        self.results = {k: dict(v) for k, v in state_dict.get("results", {}).items()}
        self.stopped = bool(state_dict.get("stopped", False))
        self.stop_reason = state_dict.get("stop_reason")
        self._module_ref = None  # restored: bound to whichever module the resumed fit runs

    # ------------------------------------------------------------------ hooks

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Score the module on one training batch, log and report it, and decide whether to stop."""
        if trainer.strategy.restore_checkpoint_after_setup:
            return  # this strategy restores checkpoints (and our state) after this hook: see on_train_start
        self._score_once(trainer, pl_module)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Score here instead for strategies that restore checkpoints after ``on_fit_start``."""
        if trainer.strategy.restore_checkpoint_after_setup:
            self._score_once(trainer, pl_module)

    # ------------------------------------------------------------------ internals

    def _parse_thresholds(self, stop_below: float | Mapping[str, float] | None) -> dict[str, float]:
        if stop_below is None:
            return {}
        if isinstance(stop_below, Mapping):
            unknown = sorted(set(stop_below) - set(self.proxies))
            if unknown:
                raise ValueError(
                    f"stop_below names proxies that are not scored: {unknown}; scored: {list(self.proxies)}"
                )
            items = dict(stop_below)
        else:
            items = {self.proxies[0]: stop_below}
        out = {}
        for name, value in items.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise ValueError(f"stop_below[{name!r}] must be a number, got {value!r}")
            out[name] = float(value)
        return out

    def _score_once(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.results:
            bound = self._module_ref() if self._module_ref is not None else None
            if self._module_ref is None or bound is pl_module:
                # restored from a checkpoint, or this module was scored in an earlier fit: keep the results
                self._module_ref = weakref.ref(pl_module)
                return
            rank_zero_info(f"{type(self).__name__}: a different module is being fitted; scoring it")
            self.results, self.stopped, self.stop_reason = {}, False, None
        if trainer.ckpt_path is not None or trainer.global_step > 0:
            where = (
                f"checkpoint {trainer.ckpt_path}"
                if trainer.ckpt_path is not None
                else f"global step {trainer.global_step}"
            )
            rank_zero_warn(
                f"{type(self).__name__} did not score the model: the fit resumes from {where}, whose weights are "
                "trained, not initial, and the checkpoint holds no scores of this callback. Score a freshly built "
                "model instead."
            )
            return

        # every rank sets up the training data: it runs collectives (barrier, length checks) under DDP
        trainer.fit_loop.setup_data()
        error: BaseException | None = None
        payload: dict[str, Any] | None = None
        if trainer.is_global_zero:
            try:
                payload = {"results": self._compute(trainer, pl_module)}
            except Exception as exc:
                error = exc
                payload = {"error": f"{type(exc).__name__}: {exc}"}
        payload = trainer.strategy.broadcast(payload, src=0)
        assert payload is not None  # every rank receives global rank 0's dict
        if "error" in payload:
            if error is not None:
                raise error
            raise RuntimeError(f"{type(self).__name__} failed on global rank 0: {payload['error']}")

        self.results = payload["results"]
        self._module_ref = weakref.ref(pl_module)
        self._report(trainer)
        self._apply_stop(trainer)

    def _compute(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, dict[str, Any]]:
        inputs, targets = self._scoring_batch(trainer, pl_module)
        policy = resolve_policy(self.policy, cell_space_only=is_cell_space_model(pl_module))
        with torch.enable_grad(), _detached_from_trainer(pl_module):
            scored = score_model(
                _ScoredModel(pl_module, self.forward),
                inputs,
                targets,
                self.proxies,
                policy=policy,
                seed=0,
                loss_fn=self.loss_fn,
                options=self.options,
            )
        if scored.error is not None:
            rank_zero_warn(f"{type(self).__name__}: {scored.error}; every score is nan and the fit goes on")
        results: dict[str, dict[str, Any]] = {}
        for name, result in scored.results.items():
            data = result.to_dict()
            if not result.is_finite and scored.error is None:
                rank_zero_warn(f"{type(self).__name__}: proxy {name!r} failed, its score is nan ({result.reason})")
            data["per_layer"] = {_unwrap_name(k): v for k, v in data.get("per_layer", {}).items()}
            data["options"] = {**(data.get("options") or {}), "policy": policy.describe()}
            results[name] = data
        return results

    def _scoring_batch(self, trainer: Trainer, pl_module: LightningModule) -> tuple[Tensor, Tensor]:
        """The first training batch as ``training_step`` sees it, unpacked, truncated, on the module's device."""
        # Lightning sets Trainer.datamodule at runtime (in its DataConnector) but does not declare it on the class
        datamodule: LightningDataModule | None = trainer.datamodule  # type: ignore[attr-defined]
        iterables = trainer.train_dataloader
        if iterables is None:  # setup_data does nothing when limit_train_batches == 0: ask the data source directly
            # loaders passed to fit() are only reachable through the fit loop's data source (not public API; the
            # Lightning range in pyproject.toml is the tested one)
            source = getattr(trainer.fit_loop, "_data_source", None)
            if source is not None and source.is_defined():
                iterables = source.dataloader()
            elif datamodule is not None:
                iterables = datamodule.train_dataloader()
            elif is_overridden("train_dataloader", pl_module):
                iterables = pl_module.train_dataloader()
        if iterables is None:
            raise ValueError(
                f"{type(self).__name__} needs a training dataloader to take a batch from; pass "
                "train_dataloaders or a datamodule to trainer.fit, or define train_dataloader()"
            )
        batch = _first_batch(iterables)
        hooks = (
            datamodule
            if datamodule is not None and is_overridden("on_before_batch_transfer", datamodule)
            else pl_module
        )
        batch = hooks.on_before_batch_transfer(batch, dataloader_idx=0)
        batch = trainer.strategy.batch_to_device(batch, dataloader_idx=0)
        inputs, targets = unpack_batch(batch, self.batch_transform)
        if self.max_samples is not None:
            inputs, targets = inputs[: self.max_samples], targets[: self.max_samples]
        if isinstance(inputs, Tensor):
            inputs = inputs.to(pl_module.device)
        if isinstance(targets, Tensor):
            targets = targets.to(pl_module.device)
        return inputs, targets

    def _report(self, trainer: Trainer) -> None:
        scores = self.scores
        metrics = {self.prefix + name: value for name, value in scores.items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        for name, data in self.results.items():
            line = f"{self.prefix}{name} = {scores[name]:.6g}  ({data.get('elapsed_s', math.nan):.2f} s"
            line += f", {data.get('n_samples')} samples)"
            if data.get("reason"):
                line += f"  nan because: {data['reason']}"
            rank_zero_info(line)

    def _apply_stop(self, trainer: Trainer) -> None:
        scores = self.scores
        failing = []
        for name, threshold in self.thresholds.items():
            value = scores[name]
            if math.isnan(value):
                why = self.results[name].get("reason") or "no reason recorded"
                failing.append(f"proxy {name!r} scored nan ({why}), stop_below={threshold:.6g}")
            elif value < threshold:
                failing.append(f"proxy {name!r} scored {value:.6g}, below stop_below={threshold:.6g}")
        if not failing:
            return
        self.stopped = True
        self.stop_reason = (
            f"{type(self).__name__} stopped the fit before the first training step: "
            + "; ".join(failing)
            + ". Pass stop_below=None to train anyway."
        )
        trainer.should_stop = True
        fit_loop = trainer.fit_loop
        # min_epochs/min_steps make the loop ignore should_stop; the score decided: no training at all
        if fit_loop.min_epochs:
            fit_loop.min_epochs = 0
        if fit_loop.epoch_loop.min_steps:
            fit_loop.epoch_loop.min_steps = None
        trainer.num_sanity_val_steps = 0  # no point validating a model that will not be trained
        rank_zero_warn(self.stop_reason)


class _Shared:
    """Holds a callable that deep copies share instead of duplicating (it may capture large objects)."""

    __slots__ = ("fn",)

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __deepcopy__(self, memo: dict[int, Any]) -> _Shared:
        return self


class _ScoredModel(nn.Module):
    """What the proxies score: ``forward(module, x)`` if given, else ``module(x)``.

    Holding the module as a child adds no state to it; ``training`` mirrors the module's without ``train()``,
    which would overwrite the modes of its submodules.
    """

    def __init__(self, module: LightningModule, forward: ForwardFn | None) -> None:
        super().__init__()
        self.module = module
        self._forward = _Shared(forward)
        self.training = module.training

    def forward(self, x: Tensor) -> Any:
        fn = self._forward.fn
        return self.module(x) if fn is None else fn(self.module, x)


@contextlib.contextmanager
def _detached_from_trainer(pl_module: LightningModule) -> Iterator[None]:
    """Drop the trainer references of the module (and nested LightningModules) while the proxies copy it.

    ``LightningModule.__getstate__`` already leaves the trainer out of copies; detaching makes the original
    behave like its copies (a forward that needs ``self.trainer`` fails the same way for every proxy) and
    keeps subclasses that customise ``__getstate__`` from copying the whole trainer. Restored in ``finally``.
    """
    saved = [(m, _trainer_of(m)) for m in pl_module.modules() if isinstance(m, LightningModule)]
    try:
        for m, _ in saved:
            m.trainer = None
        yield
    finally:
        for m, trainer in saved:
            m.trainer = trainer


def _trainer_of(module: LightningModule) -> Trainer | None:
    try:
        return module.trainer
    except RuntimeError:  # not attached to a Trainer
        return None


def _first_batch(iterables: Any) -> Any:
    """The first batch the training loop would get from ``iterables`` (a dataloader or a collection of them).

    The global RNG is left as it was (creating an iterator draws seeds), so training shuffles as it would
    without the callback. A DataLoader with persistent workers shares one iterator with the training loop: it
    is reset afterwards so the first epoch still starts at its beginning.
    """
    combined = CombinedLoader(iterables, "max_size_cycle")
    with seeded(None):
        iterator = iter(combined)
        try:
            batch, _, _ = next(iterator)
        except StopIteration:
            raise ValueError("the training dataloader is empty; there is no batch to score") from None
        finally:
            del iterator
        for loader in combined.flattened:
            if isinstance(loader, DataLoader) and loader.persistent_workers and loader.num_workers > 0:
                iter(loader)  # resets the shared iterator to the start of the epoch
    return batch


def _unwrap_name(name: str) -> str:
    return name.removeprefix(_WRAPPER_PREFIX)
