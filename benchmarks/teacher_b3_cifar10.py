"""An EfficientNet-B3 teacher for CIFAR-10 trained on this CPU, at a resolution chosen by measurement.

B3's stride-32 stem leaves a 1x1 map at 32 px, so the zen recipe's teacher saw almost nothing. This script:

1. **probes** each ``--resolutions`` side: ``timm:efficientnet_b3`` trained from scratch for ``--probe-steps`` steps
   on upsampled CIFAR-10 (bilinear, inside the model, so the data pipeline and its torchvision augmentation --
   random crop and flip at 32 px -- stay the ones every other run uses), then validated; the CPU seconds per step
   and the validation accuracy are recorded, and the side with the highest validation accuracy after the same
   number of steps is kept (ties to the smaller, cheaper side; the CPU cost of each is recorded beside it);
2. **trains** B3 at that side for ``--epochs`` on ``--train-size`` images (AdamW, warmup + cosine, label smoothing
   0.1), resumable: Lightning's ``last.ckpt`` in a directory named by every setting (side, epochs, images, batch)
   is resumed with ``ckpt_path``, so a changed setting starts its own run instead of resuming another; every
   epoch's validation accuracy and cumulative CPU seconds are appended to ``curve.jsonl`` (so a user can see what a
   longer run buys);
3. tests it on the official test images and writes the weights as a plain ``state_dict``
   (:func:`gradsign_pl.modules.teacher.save_teacher`, read back with ``torch.load(weights_only=True)``) to
   ``<run>/efficientnet_b3_cifar10_r<side>_e<epochs>_n<images>_b<batch>.pth``, for ``distill.checkpoint`` with
   ``distill.teacher_resolution: <side>``.

Results (probe, curve, test accuracy, the command) go to ``benchmarks/results/teacher_b3/`` (committed); weights and
Lightning checkpoints stay under ``--run`` (default ``runs/teacher_b3``). ``--quick``: sides 32 and 64, 5 probe
steps, 1 epoch on 256 images, under ``runs/teacher_b3_quick``.

    python benchmarks/teacher_b3_cifar10.py [--quick] [--resolutions 32 64 96 128] [--epochs 6] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn

from gradsign_pl.candidates import build_model
from gradsign_pl.data.datamodules import CIFAR10DataModule
from gradsign_pl.modules.classification import ClassificationModule
from gradsign_pl.modules.teacher import save_teacher
from gradsign_pl.scoring.cache import append_jsonl, iter_jsonl

ROOT = Path(__file__).resolve().parents[1]
MODEL = "timm:efficientnet_b3"


class Resized(nn.Module):
    """``model`` seeing its input resized to ``side`` x ``side`` (bilinear); saved without the wrapper."""

    def __init__(self, model: nn.Module, side: int) -> None:
        super().__init__()
        self.model, self.side = model, side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.side:
            x = F.interpolate(x, size=(self.side, self.side), mode="bilinear", align_corners=False)
        return self.model(x)


class CpuClock(Callback):
    """Appends ``{epoch, val_acc, cpu_seconds}`` per validation epoch; CPU seconds accumulate across resumes."""

    def __init__(self, path: Path, side: int, offset: float) -> None:
        self.path, self.side, self.offset, self.t0 = path, side, offset, time.process_time()

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        acc = trainer.callback_metrics.get("val/acc")
        append_jsonl(
            self.path,
            {
                "side": self.side,
                "epoch": trainer.current_epoch + 1,
                "val_acc": None if acc is None else float(acc),
                "cpu_seconds": self.offset + time.process_time() - self.t0,
            },
        )


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


def module_for(side: int) -> ClassificationModule:
    torch.manual_seed(0)
    net = Resized(build_model(MODEL, num_classes=10, input_size=(side, side)), side)
    return ClassificationModule(net, 10, lr=2e-3, weight_decay=5e-2, label_smoothing=0.1)


def probe(sides: list[int], steps: int, dm: CIFAR10DataModule, run: Path, log: Path) -> dict[int, dict]:
    key = {"probe_steps": steps, "batch_size": dm.batch_size, "train_size": dm.train_size}  # what a probe depends on
    done = {int(r["side"]): r for r in iter_jsonl(log, ("side",)) if all(r.get(k) == v for k, v in key.items())}
    for side in sides:
        if side in done:
            continue
        module = module_for(side)
        trainer = trainer_for(run / f"probe_r{side}", max_steps=steps)
        t0 = time.process_time()
        trainer.fit(module, datamodule=dm)
        seconds = time.process_time() - t0
        val = trainer.validate(module, datamodule=dm, verbose=False)[0]
        rec = {"side": side, **key, "val_acc": float(val["val/acc"]), "cpu_s_per_step": seconds / steps}
        append_jsonl(log, rec)
        done[side] = rec
        print(f"probe {side} px: val acc {rec['val_acc']:.4f}, {rec['cpu_s_per_step']:.2f} CPU s/step", flush=True)
    return {s: done[s] for s in sides}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sides 32, 64; 5 probe steps; 1 epoch on 256 images")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64, 96, 128])
    parser.add_argument("--probe-steps", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train-size", type=int, default=16000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 location (default $GRADSIGN_DATA, ../shared/data)")
    parser.add_argument("--run", default=None, help="weights and checkpoints (default runs/teacher_b3)")
    args = parser.parse_args(argv)
    if args.quick:
        args.resolutions, args.probe_steps, args.epochs, args.train_size = [32, 64], 5, 1, 256
    for name in ("probe_steps", "epochs", "train_size", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if any(s < 32 for s in args.resolutions):
        parser.error("--resolutions: every side must be >= 32 (the CIFAR-10 images' own size)")
    run = Path(args.run or ROOT / "runs" / ("teacher_b3_quick" if args.quick else "teacher_b3"))
    results = run / "results" if args.quick else ROOT / "benchmarks" / "results" / "teacher_b3"
    results.mkdir(parents=True, exist_ok=True)
    settings = {"train_size": args.train_size, "batch_size": args.batch_size, "epochs": args.epochs}
    dm = CIFAR10DataModule(
        args.data_dir,
        batch_size=args.batch_size,
        val_size=1000,
        train_size=args.train_size,
        test_size=2000 if args.quick else None,
    )

    probes = probe(args.resolutions, args.probe_steps, dm, run, results / "probe.jsonl")
    side = max(probes, key=lambda s: (probes[s]["val_acc"], -s))
    print(f"training at {side} px ({settings})", flush=True)
    # everything a training depends on names its directory and curve: a changed setting never resumes another run
    tag = f"r{side}_e{args.epochs}_n{args.train_size}_b{args.batch_size}"
    curve = results / f"curve_{tag}.jsonl"
    past = list(iter_jsonl(curve, ("side",)))
    module = module_for(side)
    ckpt_dir = run / f"train_{tag}"
    last = ckpt_dir / "last.ckpt"
    trainer = trainer_for(
        ckpt_dir,
        max_epochs=args.epochs,
        checkpoint=True,
        callbacks=[
            ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0),
            CpuClock(curve, side, past[-1]["cpu_seconds"] if past and last.exists() else 0.0),
        ],
    )
    trainer.fit(module, datamodule=dm, ckpt_path=str(last) if last.exists() else None)
    test = trainer.test(module, datamodule=dm, verbose=False)[0]
    weights = save_teacher(module.backbone.model, run / f"efficientnet_b3_cifar10_{tag}.pth")
    summary = {
        "tag": tag,
        "command": "python benchmarks/teacher_b3_cifar10.py" + (" --quick" if args.quick else ""),
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
