"""Training one candidate with a recipe's LightningModule and Trainer: keyed on everything it depends on, resumable.

A :class:`TrainingRecipe` says how every candidate is trained -- a ``module(backbone) -> LightningModule`` factory,
a ``trainer(**overrides) -> Trainer`` factory (fresh callbacks and loggers each call), the datamodule, the seed -- and
carries ``settings``: a JSON record of everything a trained result depends on (trainer / model / data sections,
seed, teacher). :func:`run_identity` hashes the settings with the candidate's spec fingerprint; that identity names
the candidate's directory, so a changed setting never resumes from, or reuses, an older training:

    <root>/<candidate>/<identity>/checkpoints/last.ckpt    # every ``checkpoint_every`` steps and at every stop
    <root>/<candidate>/<identity>/checkpoints/best.ckpt    # best ``monitor`` so far (when the module validates)

:func:`train_candidate` fits a candidate until the trainer's own end (``max_epochs`` / ``max_steps``) or until
``stop_at`` optimiser steps (a rung of successive halving), continuing from ``last.ckpt`` when one exists -- a
killed run, or the previous rung -- with ``ckpt_path`` (checkpoints are loaded with ``weights_only=True``). It
returns a record (plain JSON) of what happened; failures are returned as ``status="failed"`` with the reason,
never raised, except under DDP, where the other ranks would wait forever.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from gradsign_pl.candidates import Candidate
from gradsign_pl.fidelity import FidelityRecorder
from gradsign_pl.scoring.cache import settings_hash

__all__ = ["TrainingRecipe", "run_directory", "run_identity", "safe_name", "train_candidate"]


@dataclasses.dataclass
class TrainingRecipe:
    """How every candidate is trained.

    Attributes:
        module: ``module(backbone) -> LightningModule`` around a freshly built candidate network.
        trainer: ``trainer(*, default_root_dir, callbacks, log_name, **overrides) -> Trainer`` with fresh callbacks
            and loggers each call: ``callbacks`` join the recipe's, ``log_name`` names this candidate's run in the
            recipe's loggers, ``overrides`` replace trainer arguments (e.g. ``max_epochs``).
        datamodule: the data every candidate trains on; it exposes ``num_classes``, ``in_chans``, ``image_size``.
        seed: ``seed_everything`` before each candidate is built (weights and, for gradsign_pl's datamodules, the
            data order).
        settings: everything a result depends on, as plain JSON (see the module docstring).
        monitor: metric the best checkpoint follows (``mode`` max); ``None``: keep no best checkpoint.
        checkpoint_every: optimiser steps between ``last.ckpt`` saves (so a killed fit loses at most this many).
    """

    module: Callable[[nn.Module], pl.LightningModule]
    trainer: Callable[..., pl.Trainer]
    datamodule: pl.LightningDataModule
    seed: int
    settings: dict[str, Any]
    monitor: str | None = "val/acc"
    checkpoint_every: int = 100


def safe_name(name: str) -> str:
    """``name`` as a file-system-safe folder name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "candidate"


def run_identity(candidate: Candidate | None, recipe: TrainingRecipe, extra: Mapping[str, Any] | None = None) -> str:
    """A short hash of the spec (kwargs and all), the recipe's settings and ``extra`` (e.g. a teacher)."""
    return settings_hash(
        {
            "spec": candidate.fingerprint if candidate is not None else None,
            "settings": recipe.settings,
            **dict(extra or {}),
        }
    )


def run_directory(root: str | os.PathLike, name: str, identity: str) -> Path:
    """``root/<safe name>/<identity[:10]>``: where one candidate's training under one identity lives."""
    return Path(root) / safe_name(name) / identity[:10]


def train_candidate(
    candidate: Candidate | None,
    recipe: TrainingRecipe,
    root: str | os.PathLike,
    *,
    name: str | None = None,
    backbone: nn.Module | None = None,
    identity: str | None = None,
    stop_at: int | None = None,
    recorder: FidelityRecorder | None = None,
    test: bool = True,
    module_factory: Callable[[nn.Module], pl.LightningModule] | None = None,
    trainer_overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit one candidate (or a given ``backbone``) with ``recipe``, continuing from its ``last.ckpt``.

    Args:
        candidate: the candidate to build (``None`` when ``backbone`` is given).
        recipe: how to train it. root: the folder of all candidates' runs.
        name: display name (default ``candidate.name``). identity: default :func:`run_identity`.
        stop_at: stop after this many optimiser steps (saving ``last.ckpt`` there); ``None``: the trainer's end.
        recorder: a :class:`FidelityRecorder` to attach (it is told ``stop_at`` and the checkpoint); default one
            that records the training loss only.
        test: after a fit that ran to its end, test the best checkpoint (else the last weights).
        module_factory: overrides ``recipe.module`` (e.g. a teacher's module). trainer_overrides: e.g. max_epochs.

    Returns:
        ``{"name", "identity", "status": "trained" | "stopped" | "failed", "steps", "epochs", "val_acc",
        "test_acc", "checkpoint", "last_checkpoint", "resumed_from_step", "seconds", "curve", "error"}``.
    """
    name = name or (candidate.name if candidate is not None else "model")
    identity = identity or run_identity(candidate, recipe)
    out = run_directory(root, name, identity)
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    record: dict[str, Any] = {"name": name, "identity": identity, "directory": str(out)}
    t0 = time.perf_counter()
    try:
        pl.seed_everything(recipe.seed, workers=True, verbose=False)
        dm: Any = recipe.datamodule  # duck-typed: the recipes' datamodules expose num_classes, in_chans, image_size
        if backbone is None:
            if candidate is None:
                raise ValueError("train_candidate needs a candidate or a backbone")
            backbone = candidate.build(
                num_classes=dm.num_classes, in_chans=dm.in_chans, input_size=(dm.image_size, dm.image_size)
            )
        module = (module_factory or recipe.module)(backbone)
        # a rung's stop is saved apart and moved over last.ckpt once the fit has returned: ModelCheckpoint saves
        # last.ckpt again when the fit ends (with the epoch marked done), which would skip the rest of that epoch
        at_stop = ckpt_dir / "stop.ckpt"
        if at_stop.is_file():  # killed between the save at a stop and the move: the stop is the latest state
            os.replace(at_stop, last)
        recorder = recorder or FidelityRecorder()
        recorder.stop_at, recorder.checkpoint = stop_at, str(at_stop) if stop_at is not None else None
        callbacks: list[Any] = [
            recorder,
            ModelCheckpoint(
                dirpath=str(ckpt_dir),
                save_top_k=0,
                save_last=True,
                every_n_train_steps=recipe.checkpoint_every,
                enable_version_counter=False,
            ),
        ]
        best = None
        if recipe.monitor is not None and stop_at is None:  # a rung stops early: only its last.ckpt matters
            best = ModelCheckpoint(
                dirpath=str(ckpt_dir),
                monitor=recipe.monitor,
                mode="max",
                save_top_k=1,
                filename="best",
                enable_version_counter=False,
            )
            callbacks.append(best)
        trainer = recipe.trainer(
            default_root_dir=str(out), callbacks=callbacks, log_name=safe_name(name), **dict(trainer_overrides or {})
        )
        resume = str(last) if last.is_file() else None
        if resume is not None:
            record["resumed_from_step"] = _checkpoint_step(last)
        trainer.fit(module, datamodule=dm, ckpt_path=resume, weights_only=True)
        finished = recorder.stopped_at is None
        if not finished and at_stop.is_file():
            os.replace(at_stop, last)
        metrics = trainer.callback_metrics
        record.update(
            status="trained" if finished else "stopped",
            steps=trainer.global_step,
            epochs=trainer.current_epoch,
            val_acc=_metric(metrics, "val/acc"),
            last_checkpoint=str(last) if last.is_file() else None,
            curve=recorder.curve.to_dict(),
            train_seconds=round(recorder.seconds, 2),
        )
        if finished:  # the end of the fit: last.ckpt holds the final state (periodic saves may be older)
            trainer.save_checkpoint(str(last), weights_only=False)
            record["last_checkpoint"] = str(last)
        if finished and test:
            best_path = best.best_model_path if best is not None and best.best_model_path else None
            tested = trainer.test(module, datamodule=dm, ckpt_path=best_path, verbose=False, weights_only=True)
            record.update(test_acc=_metric(tested[0], "test/acc") if tested else None, checkpoint=best_path)
    except Exception as exc:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise
        text = str(exc).strip().splitlines()
        record.update(status="failed", error=f"{type(exc).__name__}: {text[0] if text else ''}")
    record["seconds"] = round(time.perf_counter() - t0, 2)
    return record


def _metric(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else float(value)


def _checkpoint_step(path: Path) -> int | None:
    """The ``global_step`` a Lightning checkpoint was saved at (read safely), or ``None``."""
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=True).get("global_step"))
    except Exception:
        return None


def describe_settings_change(before: Mapping[str, Any], now: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``["trainer.max_epochs: 3 -> 1", ...]``: the leaves that differ between two settings records."""
    out: list[str] = []
    for key in sorted(set(before) | set(now)):
        a, b = before.get(key), now.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += describe_settings_change(a, b, f"{prefix}{key}.")
        elif json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out
