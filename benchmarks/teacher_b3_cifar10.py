"""An EfficientNet-B3 teacher for CIFAR-10 trained on this CPU, at a resolution chosen by measurement.

B3's stride-32 stem leaves a 1x1 map at 32 px, so the zen recipe's teacher saw almost nothing. This script:

1. **probes** each ``--resolutions`` side under an equal CPU budget (``--probe-cpu-seconds`` of optimiser steps,
   the step count set from a 4-step timing so the warmup + cosine schedule runs to its end): ``timm:efficientnet_b3``
   trained from scratch on upsampled CIFAR-10 (bilinear, inside the model by
   :class:`gradsign_pl.modules.teacher.ResizedInput`, so the data pipeline and its torchvision augmentation --
   random crop and flip at 32 px -- stay the ones every other run uses), then validated. The smallest side whose
   validation accuracy is within one binomial standard error of the best side's is kept (:func:`choose_side`: a
   difference the validation set cannot resolve does not buy the larger side's CPU cost); each side's steps, CPU
   seconds per step and accuracy are recorded;
2. **trains** B3 at that side for ``--epochs`` on ``--train-size`` images (AdamW, warmup + cosine, label smoothing
   0.1), resumable: Lightning's ``last.ckpt`` (saved every 50 steps and at each epoch's end) in a directory named by
   every setting (side, epochs, images, batch) is resumed with ``ckpt_path``, so a changed setting starts its own
   run instead of resuming another; after every epoch the weights are saved (``..._ep<k>.pth``) and the validation
   accuracy and cumulative CPU seconds appended to ``curve_<settings>.jsonl`` (so a user can see what a longer run
   buys, and the distillation study can use the teacher at several accuracies);
3. tests it on the official test images and writes the weights as a plain ``state_dict``
   (:func:`gradsign_pl.modules.teacher.save_teacher`, read back with ``torch.load(weights_only=True)``) to
   ``<run>/efficientnet_b3_cifar10_r<side>_e<epochs>_n<images>_b<batch>.pth``, for ``distill.checkpoint`` with
   ``distill.teacher_resolution: <side>``.

Results (probe, curve, test accuracy, the command) go to ``benchmarks/results/teacher_b3/`` (committed); weights and
Lightning checkpoints stay under ``--run`` (default ``runs/teacher_b3``). ``--quick``: sides 32 and 64, 20 CPU
seconds of probing each, 1 epoch on 256 images, under ``runs/teacher_b3_quick``.

    python benchmarks/teacher_b3_cifar10.py [--quick] [--resolutions 32 64 96] [--epochs 6] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from gradsign_pl.candidates import build_model
from gradsign_pl.data.datamodules import CIFAR10DataModule
from gradsign_pl.modules.classification import ClassificationModule
from gradsign_pl.modules.teacher import ResizedInput, save_teacher
from gradsign_pl.scoring.cache import append_jsonl, iter_jsonl

ROOT = Path(__file__).resolve().parents[1]
MODEL = "timm:efficientnet_b3"
VAL_SIZE = 1000  # validation images of the probe and the curve


class CpuClock(Callback):
    """Per validation epoch: saves the teacher's weights (``<weights>_ep<k>.pth``, a plain state_dict) and appends
    ``{side, epoch, val_acc, cpu_seconds, weights}`` to ``path``; CPU seconds accumulate across resumes."""

    def __init__(self, path: Path, side: int, offset: float, weights: Path) -> None:
        self.path, self.side, self.offset, self.weights = path, side, offset, weights
        self.t0 = time.process_time()

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        acc = trainer.callback_metrics.get("val/acc")
        epoch = trainer.current_epoch + 1
        weights = save_teacher(module.backbone.model, self.weights.with_name(f"{self.weights.stem}_ep{epoch}.pth"))
        append_jsonl(
            self.path,
            {
                "side": self.side,
                "epoch": epoch,
                "val_acc": None if acc is None else float(acc),
                "cpu_seconds": self.offset + time.process_time() - self.t0,
                "weights": str(weights),
            },
        )


class StepClock(Callback):
    """CPU seconds of the optimiser steps after the first ``skip`` (which pay for one-off set-up)."""

    def __init__(self, skip: int = 1) -> None:
        self.skip, self.seconds, self.steps, self.t0 = skip, 0.0, 0, 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, *_: object) -> None:
        self.t0 = time.process_time()

    def on_train_batch_end(self, trainer: pl.Trainer, *_: object) -> None:
        if trainer.global_step > self.skip:
            self.seconds += time.process_time() - self.t0
            self.steps += 1


def trainer_for(run: Path, *, max_epochs: int = -1, max_steps: int = -1, callbacks=(), checkpoint: bool = False):
    return pl.Trainer(
        max_epochs=max_epochs,
        max_steps=max_steps,
        accelerator="auto",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=checkpoint,
        callbacks=list(callbacks),
        default_root_dir=str(run),
        num_sanity_val_steps=0,
    )


def choose_side(probes: dict[int, dict], val_size: int) -> int:
    """The smallest probed side whose validation accuracy is within one standard error, ``sqrt(p (1 - p) / n)`` of the
    best accuracy ``p`` on ``n = val_size`` images, of the best side's: the cheapest side the probe cannot tell from
    the best."""
    best = max(r["val_acc"] for r in probes.values())
    se = math.sqrt(best * (1 - best) / val_size)
    return min(s for s, r in probes.items() if r["val_acc"] >= best - se)


def module_for(side: int) -> ClassificationModule:
    torch.manual_seed(0)
    net = ResizedInput(build_model(MODEL, num_classes=10, input_size=(side, side)), side)
    return ClassificationModule(net, 10, lr=2e-3, weight_decay=5e-2, label_smoothing=0.1)


def probe(sides: list[int], budget: float, dm: CIFAR10DataModule, run: Path, log: Path) -> dict[int, dict]:
    """Train B3 from scratch at each side for the same CPU budget (``budget`` seconds of optimiser steps, the step
    count set from a 4-step timing so the warmup + cosine schedule runs to its end), then validate; returns
    ``{side: {val_acc, steps, cpu_s_per_step, ...}}``. Results are appended to ``log`` keyed by what they depend on."""
    key = {"probe_cpu_seconds": budget, "batch_size": dm.batch_size, "train_size": dm.train_size}
    done = {int(r["side"]): r for r in iter_jsonl(log, ("side",)) if all(r.get(k) == v for k, v in key.items())}
    for side in sides:
        if side in done:
            continue
        clock = StepClock(skip=1)
        trainer_for(run / f"probe_r{side}_timing", max_steps=4, callbacks=[clock]).fit(module_for(side), datamodule=dm)
        per_step = clock.seconds / max(clock.steps, 1)
        steps = max(10, int(budget / per_step))
        module = module_for(side)
        clock = StepClock(skip=0)
        trainer = trainer_for(run / f"probe_r{side}", max_steps=steps, callbacks=[clock])
        trainer.fit(module, datamodule=dm)
        val = trainer.validate(module, datamodule=dm, verbose=False)[0]
        rec = {
            "side": side,
            **key,
            "steps": steps,
            "val_acc": float(val["val/acc"]),
            "cpu_s_per_step": clock.seconds / max(clock.steps, 1),
        }
        append_jsonl(log, rec)
        done[side] = rec
        print(
            f"probe {side} px: {steps} steps, val acc {rec['val_acc']:.4f}, {rec['cpu_s_per_step']:.2f} CPU s/step",
            flush=True,
        )
    return {s: done[s] for s in sides}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sides 32, 64; 5 probe steps; 1 epoch on 256 images")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64, 96])
    parser.add_argument(
        "--probe-cpu-seconds", type=float, default=600.0, help="CPU seconds of training per probed side (equal budget)"
    )
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train-size", type=int, default=16000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 location (default $GRADSIGN_DATA, ../shared/data)")
    parser.add_argument("--run", default=None, help="weights and checkpoints (default runs/teacher_b3)")
    args = parser.parse_args(argv)
    if args.quick:
        args.resolutions, args.probe_cpu_seconds, args.epochs, args.train_size = [32, 64], 20.0, 1, 256
    if args.probe_cpu_seconds <= 0:
        parser.error("--probe-cpu-seconds must be > 0")
    for name in ("epochs", "train_size", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.train_size > 50000 - VAL_SIZE:
        parser.error(
            f"--train-size {args.train_size}: CIFAR-10 has {50000 - VAL_SIZE} training images beside the "
            f"{VAL_SIZE} held out for validation"
        )
    if args.train_size < args.batch_size:
        parser.error(f"--train-size {args.train_size} is less than one batch (--batch-size {args.batch_size})")
    if any(s < 32 for s in args.resolutions):
        parser.error("--resolutions: every side must be >= 32 (the CIFAR-10 images' own size)")
    run = Path(args.run or ROOT / "runs" / ("teacher_b3_quick" if args.quick else "teacher_b3"))
    results = run / "results" if args.quick else ROOT / "benchmarks" / "results" / "teacher_b3"
    results.mkdir(parents=True, exist_ok=True)
    settings = {"train_size": args.train_size, "batch_size": args.batch_size, "epochs": args.epochs}
    dm = CIFAR10DataModule(
        args.data_dir,
        batch_size=args.batch_size,
        val_size=VAL_SIZE,
        train_size=args.train_size,
        test_size=2000 if args.quick else None,
    )

    probes = probe(args.resolutions, args.probe_cpu_seconds, dm, run, results / "probe.jsonl")
    side = choose_side(probes, VAL_SIZE)
    print(f"training at {side} px ({settings})", flush=True)
    # everything a training depends on names its directory and curve: a changed setting never resumes another run
    tag = f"r{side}_e{args.epochs}_n{args.train_size}_b{args.batch_size}"
    curve = results / f"curve_{tag}.jsonl"
    past = list(iter_jsonl(curve, ("side",)))
    module = module_for(side)
    ckpt_dir = run / f"train_{tag}"
    weights_path = run / f"efficientnet_b3_cifar10_{tag}.pth"
    last = ckpt_dir / "last.ckpt"
    trainer = trainer_for(
        ckpt_dir,
        max_epochs=args.epochs,
        checkpoint=True,
        callbacks=[
            ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0, every_n_train_steps=50),
            CpuClock(curve, side, past[-1]["cpu_seconds"] if past and last.exists() else 0.0, weights_path),
        ],
    )
    trainer.fit(module, datamodule=dm, ckpt_path=str(last) if last.exists() else None)
    test = trainer.test(module, datamodule=dm, verbose=False)[0]
    weights = save_teacher(module.backbone.model, weights_path)
    summary = {
        "tag": tag,
        "command": shlex.join(
            ["python", "benchmarks/teacher_b3_cifar10.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "model": MODEL,
        "side": side,
        "probes": list(probes.values()),
        **settings,
        "test_acc": float(test["test/acc"]),
        "curve": list(iter_jsonl(curve, ("side",))),
        "weights": str(weights),
    }
    (results / f"summary_{tag}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in ("side", "test_acc", "weights")}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
