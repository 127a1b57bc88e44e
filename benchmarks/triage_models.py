"""The real-model triage benchmark's models and its one fixed training schedule (CIFAR-10, 32 px).

``MODELS`` maps a display name to ``(family, candidate spec)``; the family is the unit of leave-one-family-out
cross-validation in ``benchmarks/triage_cifar10.py``. ``train_one`` trains one model from scratch with the
benchmark's schedule and returns its test accuracy; ``trained_accuracies`` runs it for every missing
``(model, seed)`` and appends each result to a JSON-lines log as soon as it exists, so an interrupted run resumes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

MODELS: dict[str, tuple[str, Any]] = {
    "resnet18": ("resnet", "timm:resnet18"),
    "resnet10t": ("resnet", "timm:resnet10t"),
    "resnet18d": ("resnet", "timm:resnet18d"),
    "resnet18_tv": ("resnet", "torchvision:resnet18"),
    "regnetx_002": ("regnet", "timm:regnetx_002"),
    "regnety_002": ("regnet", "timm:regnety_002"),
    "mobilenetv3_small": ("mobilenet", "timm:mobilenetv3_small_100"),
    "mobilenetv2_050": ("mobilenet", "timm:mobilenetv2_050"),
    "mobilenet_v2_tv": ("mobilenet", "torchvision:mobilenet_v2"),
    "efficientnet_b0": ("efficientnet", "timm:efficientnet_b0"),
    "tinynet_e": ("efficientnet", "timm:tinynet_e"),
    "mnasnet0_5": ("mnasnet", "torchvision:mnasnet0_5"),
    "mnasnet1_0": ("mnasnet", "torchvision:mnasnet1_0"),
    "ghostnet_050": ("ghostnet", "timm:ghostnet_050"),
    "shufflenet_v2_x0_5": ("shufflenet", "torchvision:shufflenet_v2_x0_5"),
    "shufflenet_v2_x1_0": ("shufflenet", "torchvision:shufflenet_v2_x1_0"),
    "squeezenet1_1": ("squeezenet", "torchvision:squeezenet1_1"),
    "squeezenet1_0": ("squeezenet", "torchvision:squeezenet1_0"),
    "densenet121": ("densenet", "torchvision:densenet121"),
    "convnext_atto": ("convnext", "timm:convnext_atto"),
    "vit_tiny_p4": ("vit", {"model": "timm:vit_tiny_patch16_224", "kwargs": {"img_size": 32, "patch_size": 4}}),
    "mixer_tiny_p4": (
        "mixer",
        {
            "class_path": "timm.models.mlp_mixer.MlpMixer",
            "init_args": {"img_size": 32, "patch_size": 4, "num_blocks": 8, "embed_dim": 192},
        },
    ),
    "poolformer_s12": ("metaformer", "timm:poolformer_s12"),
    "lcnet_050": ("lcnet", "timm:lcnet_050"),
    "repvgg_a0": ("repvgg", "timm:repvgg_a0"),
    "dla46x_c": ("dla", "timm:dla46x_c"),
    "rexnet_100": ("rexnet", "timm:rexnet_100"),
}
QUICK_MODELS = ("resnet10t", "shufflenet_v2_x0_5", "squeezenet1_1", "lcnet_050")

#: the schedule every model gets (``--quick`` shrinks epochs and train_size)
SCHEDULE = {
    "epochs": 2,
    "train_size": 8000,
    "test_size": 2000,
    "val_size": 1000,
    "batch_size": 64,
    "lr": 2e-3,
    "weight_decay": 5e-4,
}


#: what the training order and augmentation follow (gradsign_pl.data.sampling): results of another never mix
DATA_ORDER = "seeded-sampler-v1"


def trained_log(schedule: dict[str, Any], quick: bool = False) -> Path:
    """Where the trainings of ``schedule`` are kept: committed under ``benchmarks/results/triage`` (so a study
    spread over sessions keeps what it trained), keyed by a hash of the schedule and :data:`DATA_ORDER`."""
    import hashlib
    import json

    key = hashlib.sha256(json.dumps({**schedule, "data_order": DATA_ORDER}, sort_keys=True).encode()).hexdigest()[:12]
    root = Path(__file__).resolve().parents[1] / ("runs/triage_cifar10_quick" if quick else "benchmarks/results/triage")
    return root / f"trained_e{schedule['epochs']}_n{schedule['train_size']}_{key}.jsonl"


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
    """Train ``spec`` from scratch (init and data order seeded by ``seed``); test accuracy as a fraction."""
    import lightning.pytorch as pl

    from gradsign_pl.candidates import candidate
    from gradsign_pl.modules import ClassificationModule

    pl.seed_everything(seed, verbose=False)
    t0 = time.perf_counter()
    net = candidate(spec, name=name).build(num_classes=10, in_chans=3, input_size=(32, 32))
    module = ClassificationModule(net, 10, lr=schedule["lr"], weight_decay=schedule["weight_decay"])
    trainer = pl.Trainer(
        max_epochs=schedule["epochs"],
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(workdir),
    )
    trainer.fit(module, datamodule=dm)
    test = trainer.test(module, datamodule=dm, verbose=False)[0]
    return {"name": name, "seed": seed, "test_acc": float(test["test/acc"]), "seconds": time.perf_counter() - t0}


def read_trained(log: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """``{(name, seed): record}``; records written before seeds were recorded are seed 0."""
    from gradsign_pl.scoring.cache import iter_jsonl

    return {(r["name"], int(r.get("seed", 0))): r for r in iter_jsonl(log, ("name",))}


def trained_accuracies(
    models: dict[str, tuple[str, Any]], seeds: list[int], dm: Any, schedule: dict[str, Any], log: Path, workdir: Path
) -> dict[tuple[str, int], dict[str, Any]]:
    """Train every missing ``(model, seed)`` (seed-major order), appending each record to ``log``."""
    from gradsign_pl.scoring.cache import append_jsonl

    done = read_trained(log)
    for seed in seeds:
        for name, (_, spec) in models.items():
            if (name, seed) in done:
                continue
            print(
                f"training {name} seed {seed} ({schedule['epochs']} epochs, {schedule['train_size']} images)",
                flush=True,
            )
            try:
                rec = train_one(name, spec, dm, schedule, seed, workdir)
            except Exception as exc:
                rec = {"name": name, "seed": seed, "test_acc": None, "error": f"{type(exc).__name__}: {exc}"}
            print(f"  -> {rec.get('test_acc')} in {rec.get('seconds', 0):.0f} s", flush=True)
            done[(name, seed)] = rec
            log.parent.mkdir(parents=True, exist_ok=True)
            append_jsonl(log, rec)
    return done


if __name__ == "__main__":  # python benchmarks/triage_models.py SEED [SEED ...]: train only (background use)
    import sys

    root = Path(__file__).resolve().parents[1] / "runs" / "triage_cifar10"
    root.mkdir(parents=True, exist_ok=True)
    dm = datamodule(None, SCHEDULE)
    trained_accuracies(
        MODELS,
        [int(s) for s in sys.argv[1:]] or [0],
        dm,
        SCHEDULE,
        trained_log(SCHEDULE),
        root / "train",
    )
