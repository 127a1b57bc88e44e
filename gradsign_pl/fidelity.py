"""Low-fidelity signals: what the first few percent of a real training run say about where it will end.

:class:`FidelityRecorder` is a Lightning callback that keeps the training loss of every training batch and, at
chosen optimiser steps, the validation loss and accuracy; it can stop the fit at a step after saving a checkpoint
there (one rung of successive halving, see :mod:`gradsign_pl.halving`), and its curve is part of the checkpoint
(:meth:`~FidelityRecorder.state_dict`), so a fit resumed from that checkpoint continues the same curve.

A *signal* turns a curve, cut at step ``t``, into one number where higher predicts a better trained model. Signals
are registered by name (:func:`list_signals`, :func:`get_signal`, :func:`register_signal`):

* ``sotl`` -- minus the mean training loss over every batch so far (the sum of training losses, SoTL, of Ru et
  al., NeurIPS 2021, divided by the number of batches: candidates compared at equal steps order exactly as by
  the sum);
* ``sotl_ema`` -- minus an exponential moving average of the training loss (decay ``0.95`` per batch), which
  weights the latest batches most (Ru et al.'s SoTL-E in spirit);
* ``last_loss`` -- minus the mean training loss over the last 10% of the batches so far (at least 5);
* ``val_loss`` -- minus the validation loss at the latest evaluation at or before ``t``;
* ``val_acc`` -- the validation accuracy there (a fraction).

A non-finite loss (a diverged run) gives ``-inf``: such a run never outranks one that trains.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from torch import Tensor

from gradsign_pl.registry import Registry

__all__ = ["Curve", "FidelityRecorder", "evaluate_classifier", "get_signal", "list_signals", "register_signal"]

EvaluateFn = Callable[[LightningModule, Iterable[Any]], dict[str, float]]


@dataclasses.dataclass
class Curve:
    """One training run as the signals see it.

    Attributes:
        train_loss: the training loss of every training batch, in order (``nan`` where it was not finite).
        evals: ``{"step", "val_loss", "val_acc"}`` records at the evaluated optimiser steps, in step order.
    """

    train_loss: list[float] = dataclasses.field(default_factory=list)
    evals: list[dict[str, float]] = dataclasses.field(default_factory=list)

    def cut(self, step: int) -> Curve:
        """The curve as it was after ``step`` training batches (evaluations at or before ``step``)."""
        return Curve(self.train_loss[:step], [e for e in self.evals if e["step"] <= step])

    @property
    def steps(self) -> int:
        return len(self.train_loss)

    def to_dict(self, digits: int = 6) -> dict[str, Any]:
        """Plain JSON (losses rounded to ``digits`` significant digits; ``nan`` as ``None``)."""
        return {
            "train_loss": [_round(v, digits) for v in self.train_loss],
            "evals": [{k: _round(v, digits) if k != "step" else int(v) for k, v in e.items()} for e in self.evals],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Curve:
        return cls(
            [math.nan if v is None else float(v) for v in data.get("train_loss", [])],
            [{k: (math.nan if v is None else v) for k, v in e.items()} for e in data.get("evals", [])],
        )


def _round(v: float, digits: int) -> float | None:
    return None if not math.isfinite(v) else float(f"{v:.{digits}g}")


# ------------------------------------------------------------------------------------------------ signals

SignalFn = Callable[[Curve], float]
_SIGNALS: Registry[SignalFn] = Registry("signal")
#: what each signal needs: evaluations (val_*) or only the training losses
NEEDS_EVAL: set[str] = set()


def register_signal(name: str, *, needs_eval: bool = False) -> Callable[[SignalFn], SignalFn]:
    """Decorator: register ``fn(curve) -> float`` (higher = better) as the signal ``name``."""

    def decorate(fn: SignalFn) -> SignalFn:
        _SIGNALS.add(name, fn)
        if needs_eval:
            NEEDS_EVAL.add(name)
        return fn

    return decorate


def list_signals() -> list[str]:
    """Names of the registered low-fidelity signals."""
    return _SIGNALS.names()


def get_signal(name: str) -> SignalFn:
    """The signal registered as ``name`` (a ``KeyError`` lists the closest names)."""
    return _SIGNALS.lookup(name)


def _neg(value: float) -> float:
    return -value if math.isfinite(value) else -math.inf


def _finite_mean(values: Sequence[float]) -> float:
    if not values:
        return math.nan
    total = math.fsum(values)
    return total / len(values) if math.isfinite(total) else math.nan


@register_signal("sotl")
def sotl(curve: Curve) -> float:
    """Minus the mean training loss over every batch so far (sum of training losses / batches)."""
    return _neg(_finite_mean(curve.train_loss))


EMA_DECAY = 0.95


@register_signal("sotl_ema")
def sotl_ema(curve: Curve) -> float:
    """Minus the exponential moving average (decay 0.95 per batch, bias-corrected) of the training loss."""
    if not curve.train_loss:
        return -math.inf
    ema, weight = 0.0, 0.0
    for v in curve.train_loss:
        ema, weight = EMA_DECAY * ema + (1 - EMA_DECAY) * v, EMA_DECAY * weight + (1 - EMA_DECAY)
    return _neg(ema / weight)


LAST_FRACTION, LAST_MIN = 0.1, 5


@register_signal("last_loss")
def last_loss(curve: Curve) -> float:
    """Minus the mean training loss over the last 10% of the batches so far (at least the last 5)."""
    n = curve.steps
    k = min(n, max(LAST_MIN, round(LAST_FRACTION * n)))
    return _neg(_finite_mean(curve.train_loss[n - k :])) if n else -math.inf


def _latest_eval(curve: Curve, key: str) -> float:
    if not curve.evals:
        raise ValueError(
            f"signal needs a validation evaluation but the curve has none; evaluate at the rung's "
            f"last step (FidelityRecorder(eval_steps=...)) to use {key}"
        )
    value = float(curve.evals[-1][key])
    return value if math.isfinite(value) else math.nan


@register_signal("val_loss", needs_eval=True)
def val_loss(curve: Curve) -> float:
    """Minus the validation loss at the latest evaluation."""
    return _neg(_latest_eval(curve, "val_loss"))


@register_signal("val_acc", needs_eval=True)
def val_acc(curve: Curve) -> float:
    """The validation accuracy (fraction) at the latest evaluation."""
    value = _latest_eval(curve, "val_acc")
    return value if math.isfinite(value) else -math.inf


# ------------------------------------------------------------------------------------------------ recorder


@torch.no_grad()
def evaluate_classifier(module: LightningModule, batches: Iterable[Any]) -> dict[str, float]:
    """Mean cross-entropy and top-1 accuracy of ``module(x)`` logits over ``(x, y)`` batches, in eval mode.

    The module's train/eval modes are restored afterwards; nothing random runs (dropout is off in eval mode).
    """
    modes = {m: m.training for m in module.modules()}
    module.eval()
    total_loss, correct, count = 0.0, 0, 0
    try:
        for batch in batches:
            x, y = batch[0].to(module.device), batch[1].to(module.device)
            logits = module(x)
            total_loss += float(F.cross_entropy(logits.float(), y, reduction="sum"))
            correct += int((logits.argmax(-1) == y).sum())
            count += int(y.numel())
    finally:
        for m, mode in modes.items():
            m.training = mode
    if count == 0:
        raise ValueError("the validation loader yielded no samples; the val_* signals need a validation set")
    return {"val_loss": total_loss / count, "val_acc": correct / count}


class FidelityRecorder(Callback):
    """Record a fit's training loss per batch and its validation at chosen steps; optionally stop at a step.

    Args:
        eval_steps: optimiser steps (``trainer.global_step`` after the step) at which to evaluate on the validation
            data (the datamodule's ``val_dataloader()``, else ``trainer.val_dataloaders``).
        stop_at: stop the fit after this optimiser step; ``None`` lets the fit run its course.
        checkpoint: where to save a checkpoint at ``stop_at`` (before stopping), so the run can be continued with
            ``trainer.fit(..., ckpt_path=checkpoint)``; ``None`` saves nothing.
        evaluate: ``evaluate(module, batches) -> {"val_loss", "val_acc"}``; default :func:`evaluate_classifier`
            (the module's forward returns logits).
        signal: a registered signal to compute when the fit stops at ``stop_at``; it is logged to every logger
            of the trainer as ``halving/<signal>`` at that step and kept in :attr:`signal_value`.

    Attributes:
        curve: the :class:`Curve` so far (restored from a checkpoint when the fit resumes).
        seconds: training wall-clock seconds recorded (batches only, evaluations excluded); eval_seconds: evaluations.
    """

    def __init__(
        self,
        eval_steps: Iterable[int] = (),
        *,
        stop_at: int | None = None,
        checkpoint: str | Path | None = None,
        evaluate: EvaluateFn | None = None,
        signal: str | None = None,
    ) -> None:
        steps = sorted({int(s) for s in eval_steps})
        if any(s < 1 for s in steps):
            raise ValueError(f"eval_steps are optimiser steps >= 1, got {steps[:5]}")
        if stop_at is not None and (isinstance(stop_at, bool) or not isinstance(stop_at, int) or stop_at < 1):
            raise ValueError(f"stop_at must be a step >= 1 or None, got {stop_at!r}")
        self.eval_steps = steps
        self.stop_at = stop_at
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.evaluate = evaluate or evaluate_classifier
        self.signal = signal
        if signal is not None:
            get_signal(signal)  # an unknown name fails here
        self.signal_value: float | None = None
        self.curve = Curve()
        self.seconds = 0.0
        self.eval_seconds = 0.0
        self.stopped_at: int | None = None
        self._t0: float | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key()

    def state_dict(self) -> dict[str, Any]:
        return {"curve": self.curve.to_dict(digits=17), "seconds": self.seconds, "eval_seconds": self.eval_seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.curve = Curve.from_dict(state_dict.get("curve", {}))
        self.seconds = float(state_dict.get("seconds", 0.0))
        self.eval_seconds = float(state_dict.get("eval_seconds", 0.0))

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._t0 is not None:
            self.seconds += time.perf_counter() - self._t0
        self.curve.train_loss.append(_loss_value(outputs))
        step = trainer.global_step
        if self._wants_eval(step):
            t0 = time.perf_counter()
            self.curve.evals.append({"step": step, **self.evaluate(pl_module, _val_batches(trainer))})
            self.eval_seconds += time.perf_counter() - t0
        if self.stop_at is not None and step >= self.stop_at and not trainer.should_stop:
            self.stopped_at = step
            if self.signal is not None:
                self.signal_value = get_signal(self.signal)(self.curve)
                for logger in trainer.loggers:
                    logger.log_metrics({f"halving/{self.signal}": self.signal_value}, step=step)
            if self.checkpoint is not None:
                trainer.save_checkpoint(self.checkpoint, weights_only=False)
            trainer.should_stop = True

    def _wants_eval(self, step: int) -> bool:
        i = bisect.bisect_left(self.eval_steps, step)
        due = i < len(self.eval_steps) and self.eval_steps[i] == step
        return due and not any(e["step"] == step for e in self.curve.evals[-1:])


def _loss_value(outputs: Any) -> float:
    loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
    if not isinstance(loss, Tensor):
        raise TypeError(
            "FidelityRecorder needs training_step to return the loss (a tensor, or a dict with 'loss'); "
            f"got {type(loss).__name__}"
        )
    value = float(loss.detach())
    return value if math.isfinite(value) else math.nan


def _val_batches(trainer: Trainer) -> Iterable[Any]:
    # Lightning sets Trainer.datamodule at runtime (in its DataConnector) but does not declare it on the class
    dm: LightningDataModule | None = trainer.datamodule  # type: ignore[attr-defined]
    if dm is not None and hasattr(dm, "val_dataloader"):
        return dm.val_dataloader()
    loaders = trainer.val_dataloaders
    if loaders is None:
        raise ValueError(
            "FidelityRecorder evaluates on the validation data: pass a datamodule with "
            "val_dataloader() or val_dataloaders to trainer.fit"
        )
    return loaders
