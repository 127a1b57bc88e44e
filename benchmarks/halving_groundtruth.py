"""Ground truth for budgeted triage: the triage benchmark's 27 models trained 4x longer, with their whole curves.

Every model of ``triage_models.MODELS`` is trained from scratch on CIFAR-10 with one schedule -- 4 epochs on 16000
training images (4x the compute of the 2-epoch, 8000-image triage schedule), AdamW, lr 2e-3 with a 3% warm-up and
cosine decay (``ClassificationModule(warmup_fraction=0.03)``), batch 64, crop + flip -- and tested on all 10000
CIFAR-10 test images. A :class:`~gradsign_pl.fidelity.FidelityRecorder` keeps the training loss of every step and
the validation loss / accuracy (1000 held-out training images) at a geometric grid of steps, so every low-fidelity
signal and every successive-halving rung that stops at a grid step can be read off these runs: a rung is a prefix
of the very run the candidate would continue (``gradsign_pl.halving`` resumes it from the rung's checkpoint).

One JSON line per (model, seed) in ``benchmarks/results/halving/runs.jsonl``, written when the run ends; a run
killed part-way resumes from its last checkpoint (every 50 steps, under ``runs/halving_groundtruth``).

    python benchmarks/halving_groundtruth.py --seeds 0            # all 27 models, seed 0 (about 3 CPU hours)
    python benchmarks/halving_groundtruth.py --seeds 1 --subset   # the noise-ceiling subset, seed 1
    python benchmarks/halving_groundtruth.py --quick              # 3 models, 60 steps, into runs/ (a minute)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from triage_models import MODELS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "halving"

SCHEDULE: dict[str, Any] = {
    "epochs": 4,
    "train_size": 16000,
    "val_size": 1000,
    "test_size": None,
    "batch_size": 64,
    "lr": 2e-3,
    "weight_decay": 5e-4,
    "warmup_fraction": 0.03,
}
QUICK_SCHEDULE: dict[str, Any] = {**SCHEDULE, "epochs": 1, "train_size": 3840, "val_size": 200, "test_size": 500}
QUICK_MODELS = ("resnet10t", "shufflenet_v2_x0_5", "lcnet_050")
#: the second training seed runs on these (one or two per family, across the size range; ViT left out for cost)
NOISE_SUBSET = (
    "resnet18",
    "regnetx_002",
    "mobilenetv3_small",
    "efficientnet_b0",
    "shufflenet_v2_x1_0",
    "squeezenet1_1",
    "convnext_atto",
    "mixer_tiny_p4",
    "lcnet_050",
    "densenet121",
)
CHECKPOINT_EVERY = 50


def steps_per_run(schedule: dict[str, Any]) -> int:
    return schedule["epochs"] * math.ceil(schedule["train_size"] / schedule["batch_size"])


def eval_grid(total: int, start: float = 0.005, per_octave: int = 3) -> list[int]:
    """Optimiser steps at which validation is recorded: ``total * start * 2**(k / per_octave)``, up to ``total``."""
    steps, k = [], 0
    while True:
        s = round(total * start * 2 ** (k / per_octave))
        if s >= total:
            break
        if s >= 1 and (not steps or s > steps[-1]):
            steps.append(s)
        k += 1
    return steps + [total]


def schedule_id(schedule: dict[str, Any]) -> str:
    """A short hash of everything a result depends on (the schedule and the grid): results of another never mix."""
    text = json.dumps({**schedule, "grid": eval_grid(steps_per_run(schedule))}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def datamodule(data_dir: str | None, schedule: dict[str, Any]):
    from gradsign_pl.data.datamodules import CIFAR10DataModule

    return CIFAR10DataModule(
        data_dir,
        batch_size=schedule["batch_size"],
        val_size=schedule["val_size"],
        train_size=schedule["train_size"],
        test_size=schedule["test_size"],
    )


def train_one(name: str, spec: Any, dm: Any, schedule: dict[str, Any], seed: int, workdir: Path) -> dict[str, Any]:
    """Train ``spec`` under ``seed`` (init and data order), resuming from ``workdir/last.ckpt``; the record."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from gradsign_pl.candidates import candidate
    from gradsign_pl.fidelity import FidelityRecorder
    from gradsign_pl.modules import ClassificationModule

    total = steps_per_run(schedule)
    pl.seed_everything(seed, verbose=False)
    net = candidate(spec, name=name).build(num_classes=10, in_chans=3, input_size=(32, 32))
    params = sum(p.numel() for p in net.parameters())
    module = ClassificationModule(
        net, 10, lr=schedule["lr"], weight_decay=schedule["weight_decay"], warmup_fraction=schedule["warmup_fraction"]
    )
    recorder = FidelityRecorder(eval_grid(total))
    last = ModelCheckpoint(dirpath=str(workdir), save_top_k=0, save_last=True, every_n_train_steps=CHECKPOINT_EVERY)
    trainer = pl.Trainer(
        max_epochs=schedule["epochs"],
        accelerator="auto",
        devices=1,
        logger=False,
        callbacks=[recorder, last],
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(workdir),
    )
    resume = workdir / "last.ckpt"
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume.exists() else None, weights_only=True)
    if trainer.global_step != total:
        raise RuntimeError(f"{name}: trained {trainer.global_step} steps, expected {total}")
    test = trainer.test(module, datamodule=dm, verbose=False)[0]
    return {
        "name": name,
        "seed": seed,
        "spec": spec,
        "schedule_id": schedule_id(schedule),
        "schedule": schedule,
        "params": params,
        "steps": total,
        "test_acc": float(test["test/acc"]),
        "test_loss": float(test["test/loss"]),
        "train_seconds": round(recorder.seconds, 2),
        "eval_seconds": round(recorder.eval_seconds, 2),
        "wall_seconds_this_process": round(time.perf_counter() - t0, 2),
        "curve": recorder.curve.to_dict(),
    }


def read_runs(path: Path, schedule: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    """Finished runs of ``schedule`` in ``path``: ``{(name, seed): record}`` (other schedules are ignored)."""
    from gradsign_pl.scoring.cache import iter_jsonl

    sid = schedule_id(schedule)
    return {
        (r["name"], int(r["seed"])): r
        for r in iter_jsonl(path, ("name", "seed", "schedule_id"))
        if r["schedule_id"] == sid
    }


def train_all(
    models: dict[str, tuple[str, Any]],
    seeds: list[int],
    schedule: dict[str, Any],
    log: Path,
    workroot: Path,
    data_dir: str | None = None,
) -> dict[tuple[str, int], dict[str, Any]]:
    """Train every missing ``(model, seed)`` (seed-major), appending each finished record to ``log``."""
    from gradsign_pl.scoring.cache import append_jsonl

    done = read_runs(log, schedule)
    todo = [(s, n) for s in seeds for n in models if (n, s) not in done]
    if not todo:
        return done
    dm = datamodule(data_dir, schedule)
    for i, (seed, name) in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {name} seed {seed}: {steps_per_run(schedule)} steps", flush=True)
        workdir = workroot / schedule_id(schedule) / f"{name}_s{seed}"
        try:
            rec = train_one(name, models[name][1], dm, schedule, seed, workdir)
        except Exception as exc:
            print(f"  failed: {type(exc).__name__}: {exc}", flush=True)
            continue
        print(
            f"  test acc {100 * rec['test_acc']:.2f}% in {rec['train_seconds']:.0f} s training "
            f"+ {rec['eval_seconds']:.0f} s validation",
            flush=True,
        )
        done[(name, seed)] = rec
        log.parent.mkdir(parents=True, exist_ok=True)
        append_jsonl(log, rec)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--subset", action="store_true", help=f"only the noise-ceiling subset {NOISE_SUBSET}")
    parser.add_argument("--models", nargs="+", default=None, help="only these models")
    parser.add_argument("--quick", action="store_true", help="3 models, 1 epoch on 3840 images (60 steps), into runs/")
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 location (default $GRADSIGN_DATA, ../shared/data)")
    args = parser.parse_args(argv)
    schedule = QUICK_SCHEDULE if args.quick else SCHEDULE
    names = list(QUICK_MODELS if args.quick else args.models or (NOISE_SUBSET if args.subset else MODELS))
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; the benchmark's models: {', '.join(MODELS)}")
    log = (ROOT / "runs" / "halving_groundtruth_quick" / "runs.jsonl") if args.quick else RESULTS / "runs.jsonl"
    train_all(
        {n: MODELS[n] for n in names}, args.seeds, schedule, log, ROOT / "runs" / "halving_groundtruth", args.data_dir
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
