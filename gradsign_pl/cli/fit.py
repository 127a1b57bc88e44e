"""``gradsign-fit``: score candidates at initialisation, keep the best, train them, and report.

A ``LightningCLI``: the recipe's ``data`` is any LightningDataModule, ``model`` holds the training hyperparameters of
:class:`~gradsign_pl.modules.ClassificationModule`, ``trainer`` is Lightning's Trainer; on top of those,
``candidates`` lists the models and ``triage`` how to score and filter them. Every option can be overridden on the
command line (``--triage.top_k 2``); the resolved config is saved as ``config.yaml`` in ``run_dir``.

    gradsign-fit                                   # the quickstart: digits shipped with scikit-learn, offline
    gradsign-fit --config recipes/cifar10.yaml
    gradsign-fit --config recipe.yaml --score_only true
    gradsign-fit --config recipes/zen_cifar10.yaml  # search MasterNets, distil the winner from EfficientNet-B3

Steps: [search: evolutionary search whose top structures join the candidates (``run_dir/search``, resumes)] ->
rank (cached in ``run_dir/scores``, resumes) -> [distill: load or first train the teacher] -> train every kept
candidate, as a student of the teacher when ``distill`` is set (``run_dir/train/<name>``; finished ones are recorded
in ``run_dir/trained.jsonl`` and skipped when the command is run again) -> test the best checkpoint ->
``report.md`` / ``report.csv`` / ``report.json`` / ``predicted_vs_achieved.png``. See :mod:`gradsign_pl.cli.stages`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

from gradsign_pl.candidates import candidate
from gradsign_pl.cli.stages import DistillOptions, SearchOptions, prepare_teacher, run_search
from gradsign_pl.modules.classification import ClassificationModule
from gradsign_pl.report import write_report
from gradsign_pl.studies.cache import append_jsonl, iter_jsonl
from gradsign_pl.triage import rank

QUICKSTART_CANDIDATES: list[str | dict] = [
    "timm:resnet18",
    "timm:mobilenetv3_small_100",
    "timm:efficientnet_b0",
    "timm:regnetx_002",
    "torchvision:shufflenet_v2_x0_5",
    "torchvision:squeezenet1_1",
    {"model": "timm:vit_tiny_patch16_224", "name": "timm:vit_tiny_patch8_32", "kwargs": {"img_size": 32, "patch_size": 8}},
]
"""The quickstart's candidates (also in ``recipes/quickstart.yaml``): CNNs of four families, two torchvision
models and a small ViT, all fitted to 32x32 single-channel digits."""


@dataclasses.dataclass
class TriageOptions:
    """How candidates are scored and filtered before training.

    Args:
        proxies: registered zero-cost proxies to score with.
        order_by: proxy to rank by (default the first), or 'ensemble' (AZ-NAS log-rank sum of all proxies); used
            when the policy orders by the proxy (the real-model policy orders by params and says so).
        seeds: initialisation seeds per candidate (mean and spread reported; default: the policy's).
        policy: scoring policy: 'auto' (the authors' semantics for nb201:/zen: candidates, the validated
            real-model policy otherwise), 'cell-space' or 'real-model' (see gradsign_pl.policy).
        top_k: train the best k ranked candidates (None: all ranked).
        max_params: skip candidates with more parameters than this.
        max_flops: skip candidates with more operations per sample than this (NB-201 convention).
        max_samples: images of the first training batch used for scoring.
    """

    proxies: list[str] = dataclasses.field(default_factory=lambda: ["gradsign", "params", "flops"])
    order_by: str | None = None
    seeds: int | None = None
    policy: Literal["auto", "cell-space", "real-model"] = "auto"
    top_k: int | None = 3
    max_params: float | None = None
    max_flops: float | None = None
    max_samples: int = 64


class GradSignFitCLI(LightningCLI):
    """The parser of ``gradsign-fit`` (see the module docstring); ``run=False``: :func:`run_fit` does the work."""

    def __init__(self, args: list[str] | None = None) -> None:
        super().__init__(
            ClassificationModule,
            pl.LightningDataModule,
            subclass_mode_data=True,
            run=False,
            args=args,
            save_config_callback=None,
            auto_configure_optimizers=False,
            seed_everything_default=0,
            parser_kwargs={"description": __doc__.splitlines()[0], "exit_on_error": True},
        )

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_argument("--candidates", type=list[str | dict], default=QUICKSTART_CANDIDATES,
                            help="candidate models: timm:<name>, torchvision:<name>, nb201:<arch|index>, or "
                                 "{class_path, init_args} / {model, kwargs, name} mappings")
        parser.add_dataclass_arguments(TriageOptions, "triage")
        parser.add_argument("--search", type=SearchOptions | None, default=None,
                            help="evolutionary search before ranking; its top structures join the candidates")
        parser.add_argument("--distill", type=DistillOptions | None, default=None,
                            help="train the kept candidates as students of a frozen teacher")
        parser.add_argument("--run_dir", type=str, default="runs/quickstart", help="where everything is written")
        parser.add_argument("--score_only", type=bool, default=False, help="rank only, train nothing")
        parser.set_defaults({
            "data": {"class_path": "gradsign_pl.data.datamodules.DigitsDataModule"},
            "trainer.max_epochs": 3,
            "trainer.accelerator": "auto",
            "trainer.devices": 1,
            "trainer.enable_model_summary": False,
            "trainer.log_every_n_steps": 10,
        })

    def instantiate_classes(self) -> None:
        self.config_init = self.parser.instantiate_classes(self.config)
        self.datamodule = self._get(self.config_init, "data")
        self.model = self._get(self.config_init, "model")

    def fresh_trainer(self, **kwargs: Any) -> pl.Trainer:
        """A new Trainer from the recipe with freshly instantiated callbacks (never shared between runs)."""
        config_init = self.parser.instantiate_classes(self.config)
        recipe = dict(self._get(config_init, "trainer", default={}))
        callbacks = list(recipe.pop("callbacks", None) or []) + list(kwargs.pop("callbacks", []))
        return self.trainer_class(**{**recipe, **kwargs, "callbacks": callbacks})


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def read_jsonl_records(path: Path) -> dict[str, dict[str, Any]]:
    """``{record["name"]: record}`` from a JSON-lines log, skipping a line cut short by an interruption."""
    return {rec["name"]: rec for rec in iter_jsonl(path, ("name",))}


def _metric(metrics: dict[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else float(value)


def _run_identity(spec: Any, distill: DistillOptions | None, teacher: nn.Module | None) -> dict[str, Any]:
    """What a finished training record must match to be reused: the spec and the teacher's name (or None)."""
    return {"spec": spec if isinstance(spec, (str, dict)) else None,
            "teacher": distill.teacher if distill is not None and teacher is not None else None}


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def train_candidate(cli: GradSignFitCLI, spec: Any, name: str, run_dir: Path, *, distill: DistillOptions | None = None,
                    teacher: nn.Module | None = None, backbone: nn.Module | None = None,
                    max_epochs: int | None = None, hparams: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one kept candidate with the recipe's trainer; test its best checkpoint. Failures are returned.

    With ``distill`` the candidate trains in a ``DistillationModule`` with those options, as the student of
    ``teacher`` (``None``: the same module, optimiser and schedule without a teacher, the controlled baseline);
    otherwise in a ``ClassificationModule``. A given ``backbone`` is trained in place instead of building ``spec``;
    ``max_epochs`` overrides the recipe's and ``hparams`` override the recipe's training hyperparameters (the
    ``model`` section). Under DDP (several processes) a failure is raised, not returned: the other ranks would
    otherwise wait for this one forever.
    """
    dm = cli.datamodule
    t0 = time.perf_counter()
    record: dict[str, Any] = {"name": name, **_run_identity(spec, distill, teacher)}
    try:
        pl.seed_everything(cli.config.seed_everything, workers=True, verbose=False)
        if backbone is None:
            backbone = candidate(spec, name=name).build(num_classes=dm.num_classes, in_chans=dm.in_chans,
                                                        input_size=(dm.image_size, dm.image_size))
        hparams = {**cli.model.training_hyperparameters(), **(hparams or {})}
        if distill is not None:
            from gradsign_pl.modules.distillation import DistillationModule

            module: ClassificationModule = DistillationModule(backbone, dm.num_classes, teacher=teacher,
                                                              **distill.module_kwargs(), **hparams)
        else:
            module = ClassificationModule(backbone, dm.num_classes, **hparams)
        out = run_dir / "train" / _safe(name)
        checkpoint = ModelCheckpoint(dirpath=out / "checkpoints", monitor="val/acc", mode="max", save_top_k=1,
                                     filename="best")
        trainer = cli.fresh_trainer(default_root_dir=str(out), logger=CSVLogger(str(out), name="logs"),
                                    callbacks=[checkpoint], **({"max_epochs": max_epochs} if max_epochs else {}))
        trainer.fit(module, datamodule=dm)
        val = _metric(trainer.callback_metrics, "val/acc")
        tested = trainer.test(module, datamodule=dm, ckpt_path="best" if checkpoint.best_model_path else None,
                              verbose=False)
        record.update(status="trained", val_acc=val, test_acc=_metric(tested[0], "test/acc") if tested else None,
                      checkpoint=checkpoint.best_model_path or None, epochs=trainer.current_epoch)
    except Exception as exc:  # noqa: BLE001 - one failing survivor does not sink the others
        if _world_size() > 1:
            raise
        record.update(status="failed", error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    record["seconds"] = round(time.perf_counter() - t0, 2)
    return record


def run_fit(cli: GradSignFitCLI, command: str) -> dict[str, Path]:
    """Rank, train the kept candidates, and write the report (see the module docstring)."""
    cfg = cli.config
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # Under DDP, Lightning re-runs this command on every other rank once training starts: those ranks read the
    # finished search and the ranking cache, train in step with rank 0, and write nothing.
    writer = rank_zero_only.rank == 0
    if writer:
        cli.parser.save(cfg, str(run_dir / "config.yaml"), overwrite=True, skip_none=False)
    dm = cli.datamodule
    for attr in ("num_classes", "in_chans", "image_size"):
        if not hasattr(dm, attr):
            raise ValueError(
                f"the datamodule {type(dm).__name__} has no {attr!r} attribute; gradsign-fit needs num_classes, "
                "in_chans and image_size to build candidates that fit the data"
            )
    triage = cfg.triage
    search: SearchOptions | None = cli.config_init.get("search")
    distill: DistillOptions | None = cli.config_init.get("distill")
    if distill is not None and not cfg.score_only:
        distill.check(image_size=int(dm.image_size))  # before hours of search: a buildable teacher, local weights
    specs = list(cfg.candidates)
    sections: dict[str, Any] = {}
    if search is not None:
        found, sections["search"] = run_search(search, dm, run_dir / "search", write=writer)
        specs += found
        print(f"search: {len(found)} structure(s) join the candidates; best: {found[0]['name']} {found[0]['model']}")
    names = [candidate(s).name for s in specs]
    ranking = rank(dict(zip(names, specs)), dm, triage.proxies, policy=triage.policy, seeds=triage.seeds,
                   max_params=triage.max_params,
                   max_flops=triage.max_flops, top_k=triage.top_k, cache=run_dir / "scores",
                   num_classes=dm.num_classes, order_by=triage.order_by, max_samples=triage.max_samples)
    if writer:
        ranking.print()
        ranking.to_csv(run_dir / "ranking.csv")
        ranking.to_json(run_dir / "ranking.json")
    trained_log = run_dir / "trained.jsonl"
    done = read_jsonl_records(trained_log)
    if not cfg.score_only:
        spec_of = dict(zip(names, specs))
        teacher = None
        if distill is not None:
            teacher, sections["distillation"] = prepare_teacher(
                distill, dm, lambda net, name: train_candidate(cli, None, name, run_dir, backbone=net,
                                                               max_epochs=distill.train_teacher_epochs,
                                                               hparams=distill.teacher_hparams), write=writer)
        jobs = [(row.name, spec_of[row.name], teacher) for row in ranking.kept]
        if teacher is not None and distill is not None and distill.baseline and ranking.kept:
            best = ranking.kept[0].name
            jobs.append((f"{best} (no teacher)", spec_of[best], None))
        for name, spec, teach in jobs:
            previous = done.get(name, {})
            expected = _run_identity(spec, distill, teach)
            if previous.get("status") == "trained" and all(previous.get(k) == v for k, v in expected.items()):
                print(f"{name}: already trained ({100 * (previous.get('test_acc') or math.nan):.2f}% test), skipped")
                continue
            print(f"training {name}" + (f" as a student of {distill.teacher}" if distill and teach is not None else ""))
            record = train_candidate(cli, spec, name, run_dir, distill=distill, teacher=teach)
            done[name] = record
            if writer:
                append_jsonl(trained_log, record)
    if not writer:
        return {}
    paths = write_report(run_dir, ranking, list(done.values()), command=command, score_only=cfg.score_only,
                         sections=sections)
    print(f"report: {paths['markdown']}")
    return paths


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``gradsign-fit`` console script."""
    argv = sys.argv[1:] if args is None else args
    command = "gradsign-fit " + " ".join(shlex.quote(a) for a in argv)
    torch.set_float32_matmul_precision("high")
    try:
        cli = GradSignFitCLI(args=args)  # None: LightningCLI reads sys.argv itself
        run_fit(cli, command)
    except (ValueError, KeyError, FileNotFoundError, TypeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"gradsign-fit: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
