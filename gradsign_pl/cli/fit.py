"""``gradsign-fit``: score candidates at initialisation, keep the best, train them, and report.

A ``LightningCLI``: the recipe's ``data`` is any LightningDataModule, ``model`` is the LightningModule every candidate
trains in (``class_path`` + ``init_args``; default :class:`~gradsign_pl.modules.ClassificationModule`; the candidate
network and the number of classes are passed by gradsign-fit, so they are not recipe keys), ``trainer`` is
Lightning's Trainer -- its ``logger``, ``callbacks`` and ``default_root_dir`` are honoured; on top of those,
``candidates`` lists the models and ``triage`` how to score and filter them. Every option can be overridden on the
command line (``--triage.top_k 2``).

    gradsign-fit                                   # the quickstart: digits shipped with scikit-learn, offline
    gradsign-fit --config recipes/cifar10.yaml
    gradsign-fit --config recipe.yaml --score_only true
    gradsign-fit --config recipes/zen_cifar10.yaml  # search MasterNets, distil the winner from EfficientNet-B3

The run directory is ``run_dir``, else the recipe's ``trainer.default_root_dir``, else ``runs/<recipe file name>``
(``runs/quickstart`` without a recipe). Steps: [search (``run_dir/search/<settings>``, resumes)] -> rank (cached in
``run_dir/scores``, keyed on the batch, loss, policy and each spec) -> [distill: load or first train the teacher] ->
train every kept candidate (``run_dir/train/<name>/<identity>``, resumable from ``last.ckpt``; a finished training is
reused only when its spec and every trainer / model / data setting, the seed and the teacher are the same) -> test
the best checkpoint -> ``report.md`` / ``report.csv`` / ``report.json`` / ``predicted_vs_achieved.png``; the
``config.yaml`` beside them is the configuration of exactly those results.

Errors in the recipe (a bad key, a misspelt model or proxy option, a missing data folder) are one line and exit 2
before any work; an unexpected error during the run shows its traceback. The exit status is 1 when every kept
candidate failed to train.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_only

from gradsign_pl.candidates import Candidate, candidate
from gradsign_pl.cli.stages import DistillOptions, SearchOptions, prepare_teacher, run_search
from gradsign_pl.executors import Executor, create_executor
from gradsign_pl.modules.classification import ClassificationModule
from gradsign_pl.proxies import check_options, get_proxy
from gradsign_pl.report import write_report
from gradsign_pl.scoring.cache import append_jsonl, iter_jsonl
from gradsign_pl.scoring.policy import resolve_policy
from gradsign_pl.training import TrainingRecipe, describe_settings_change, run_identity, train_candidate
from gradsign_pl.triage import rank

QUICKSTART_CANDIDATES: list[str | dict] = [
    "timm:resnet18",
    "timm:mobilenetv3_small_100",
    "timm:efficientnet_b0",
    "timm:regnetx_002",
    "torchvision:shufflenet_v2_x0_5",
    "torchvision:squeezenet1_1",
    {
        "model": "timm:vit_tiny_patch16_224",
        "name": "timm:vit_tiny_patch8_32",
        "kwargs": {"img_size": 32, "patch_size": 8},
    },
]
"""The quickstart's candidates (also in ``recipes/quickstart.yaml``): CNNs of four families, two torchvision
models and a small ViT, all fitted to 32x32 single-channel digits."""

#: init arguments of the model section that gradsign-fit supplies (the candidate network, the data's classes) or
#: that the ``distill`` section owns: they are not recipe keys under ``model``
SUPPLIED = {
    "backbone",
    "num_classes",
    "teacher",
    "teacher_resolution",
    "temperature",
    "kd_weight",
    "feature_weight",
    "feature_loss",
    "feature_stages",
    "mixup_alpha",
}
#: trainer settings that change how a run is shown or logged, not what it computes (left out of the identity)
COSMETIC_TRAINER_KEYS = {
    "logger",
    "enable_progress_bar",
    "enable_model_summary",
    "log_every_n_steps",
    "default_root_dir",
    "profiler",
    "barebones",
}
UsageError = (ValueError, KeyError, TypeError, FileNotFoundError)


@dataclasses.dataclass
class TriageOptions:
    """How candidates are scored and filtered before training.

    Args:
        proxies: registered zero-cost proxies to score with.
        order_by: proxy to rank by (default the first), or 'ensemble' (AZ-NAS log-rank sum of all proxies); used
            when the policy orders by the proxy (the real-model policy orders by params and says so).
        seeds: initialisation seeds per candidate (mean and spread reported; default: the policy's).
        policy: scoring policy: 'auto' (the authors' semantics for nb201:/zen: candidates, the validated
            real-model policy otherwise), 'cell-space' or 'real-model' (see gradsign_pl.scoring.policy).
        options: per-proxy options over the policy's, e.g. {gradsign: {bn_policy: batch}}; checked when read.
        strategy: 'top_k': train the best top_k of the zero-cost ranking fully; 'halving': successive halving -- the
            ranking is rung 0, short rungs of real training (the `halving` section) decide which top_k train fully.
        top_k: train the best k ranked candidates (None: all ranked); with 'halving', how many rungs leave.
        max_params: skip candidates with more parameters than this.
        max_flops: skip candidates with more operations per sample than this (NB-201 convention).
        max_samples: images of the first training batch used for scoring.
    """

    proxies: list[str] = dataclasses.field(default_factory=lambda: ["gradsign", "params", "flops"])
    order_by: str | None = None
    seeds: int | None = None
    policy: Literal["auto", "cell-space", "real-model"] = "auto"
    options: dict[str, dict[str, Any]] | None = None
    strategy: Literal["top_k", "halving"] = "top_k"
    top_k: int | None = 3
    max_params: float | None = None
    max_flops: float | None = None
    max_samples: int = 64


@dataclasses.dataclass
class HalvingOptions:
    """Successive halving after the zero-cost ranking (``triage.strategy: halving``; see gradsign_pl.halving).

    Args:
        eta: keep the top 1/eta of the candidates after each rung.
        budget: the rungs' compute as a fraction of training every ranked candidate for the full schedule.
        budget_steps: the budget in optimiser steps instead (set budget to null).
        signal: what ranks a rung: sotl, sotl_ema, last_loss (training losses), val_loss or val_acc.
        keep_after_rung0: only the best this many of the zero-cost ranking enter rung 1 (null: every ranked one).
    """

    eta: float = 3
    budget: float | None = 0.1
    budget_steps: int | None = None
    signal: str = "last_loss"
    keep_after_rung0: int | None = None


class GradSignFitCLI(LightningCLI):
    """The parser of ``gradsign-fit`` (see the module docstring); ``run=False``: :func:`run_fit` does the work."""

    def __init__(self, args: list[str] | None = None) -> None:
        super().__init__(
            pl.LightningModule,
            pl.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            run=False,
            args=args,
            save_config_callback=None,
            auto_configure_optimizers=False,
            seed_everything_default=0,
            parser_kwargs={"description": __doc__.splitlines()[0], "exit_on_error": True},
        )

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults({"trainer." + k: v for k, v in self.trainer_defaults.items() if k != "callbacks"})
        parser.add_subclass_arguments(
            pl.LightningModule,
            "model",
            skip=SUPPLIED,
            instantiate=False,
            required=False,
            default={"class_path": "gradsign_pl.modules.ClassificationModule"},
            help="the LightningModule every candidate trains in: it takes the candidate "
            "network as `backbone` and the data's `num_classes` (both supplied)",
        )
        parser.add_lightning_class_args(pl.LightningDataModule, "data", subclass_mode=True)

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_argument(
            "--candidates",
            type=list[str | dict],
            default=QUICKSTART_CANDIDATES,
            help="candidate models: timm:<name>, torchvision:<name>, nb201:<arch|index>, or "
            "{class_path, init_args} / {model, kwargs, name} mappings",
        )
        parser.add_class_arguments(TriageOptions, "triage")
        parser.add_argument(
            "--search",
            type=SearchOptions | None,
            default=None,
            help="evolutionary search before ranking; its top structures join the candidates",
        )
        parser.add_class_arguments(HalvingOptions, "halving")
        parser.add_argument(
            "--distill",
            type=DistillOptions | None,
            default=None,
            help="train the kept candidates as students of a frozen teacher",
        )
        parser.add_argument(
            "--run_dir",
            type=str | None,
            default=None,
            help="where everything is written (default: trainer.default_root_dir, else runs/<recipe file name>)",
        )
        parser.add_argument(
            "--checkpoint_every_n_steps",
            type=int,
            default=100,
            help="optimiser steps between the last.ckpt saves a killed training resumes from",
        )
        parser.add_argument("--score_only", type=bool, default=False, help="rank only, train nothing")
        parser.add_argument(
            "--executor",
            type=str,
            default="local",
            help="where candidates are scored, the search's batches and the halving rungs run: 'local' (this "
            "process) or 'ray' (Ray tasks on the cluster RAY_ADDRESS names, else a local Ray instance; pip install "
            "'gradsign-pl[ray]'; run_dir on storage every worker sees); the results are the same under both",
        )
        parser.set_defaults(
            {
                "data": {"class_path": "gradsign_pl.data.datamodules.DigitsDataModule"},
                "trainer.max_epochs": 3,
                "trainer.accelerator": "auto",
                "trainer.devices": 1,
                "trainer.enable_model_summary": False,
                "trainer.log_every_n_steps": 10,
            }
        )

    def instantiate_classes(self) -> None:
        self.config_init = self.parser.instantiate(self.config)
        self.datamodule = self._get(self.config_init, "data")
        self.model = None

    def fresh_trainer(
        self, *, default_root_dir: str, callbacks: list[Any], log_name: str, **overrides: Any
    ) -> pl.Trainer:
        """A new Trainer from the recipe, with freshly instantiated callbacks and loggers (never shared between runs).

        ``default_root_dir`` is the candidate's folder inside the run directory (which itself defaults to the
        recipe's ``default_root_dir``); each logger the recipe names whose ``version`` is unset gets ``log_name`` as
        its version, so every candidate's run is its own folder in the recipe's logger.
        """
        config = copy.deepcopy(self.config)
        _name_logger_runs(config.trainer, log_name)
        config_init = self.parser.instantiate(config)
        recipe = dict(self._get(config_init, "trainer", default={}))
        recipe_callbacks = list(recipe.pop("callbacks", None) or [])
        recipe.update(default_root_dir=default_root_dir, **overrides)
        return self.trainer_class(**recipe, callbacks=recipe_callbacks + list(callbacks))


def _name_logger_runs(trainer_cfg: Namespace, log_name: str) -> None:
    """Give every logger config of the recipe without a ``version`` this candidate's name as its version."""
    loggers = trainer_cfg.get("logger")
    for cfg in loggers if isinstance(loggers, list) else [loggers]:
        if isinstance(cfg, Namespace) and "init_args" in cfg and cfg.init_args is not None:
            if "version" in cfg.init_args and cfg.init_args.version in (None, ""):
                cfg.init_args.version = log_name


def resolve_run_dir(config: Namespace) -> Path:
    """``run_dir``, else the trainer's ``default_root_dir``, else ``runs/<recipe file stem>`` (``runs/quickstart``)."""
    if config.get("run_dir"):
        return Path(config.run_dir)
    if config.trainer.get("default_root_dir"):
        return Path(config.trainer.default_root_dir)
    configs = config.get("config") or []
    stem = Path(str(configs[-1])).stem if configs else "quickstart"
    return Path("runs") / stem


# ------------------------------------------------------------------------------------------------ validation


@dataclasses.dataclass
class Plan:
    """What a run will do, worked out (and checked) before any work starts."""

    run_dir: Path
    candidates: list[Candidate]
    module_class: type[pl.LightningModule]
    module_args: dict[str, Any]
    search: SearchOptions | None
    distill: DistillOptions | None
    settings: dict[str, Any]
    executor: Executor


def plan_run(cli: GradSignFitCLI) -> Plan:
    """Check everything a run needs (usage errors, one line each) and return the :class:`Plan`."""
    cfg = cli.config
    dm = cli.datamodule
    for attr in ("num_classes", "in_chans", "image_size"):
        if not hasattr(dm, attr):
            raise ValueError(
                f"the datamodule {type(dm).__name__} has no {attr!r} attribute; gradsign-fit needs num_classes, "
                "in_chans and image_size to build candidates that fit the data"
            )
    executor = create_executor(cfg.executor)  # an unknown name, or ray without Ray installed, fails now
    triage = cfg.triage
    for p in triage.proxies:
        get_proxy(p)
    for p, opts in (triage.options or {}).items():
        if p not in triage.proxies:
            raise ValueError(f"triage.options names {p!r}, which is not among triage.proxies {triage.proxies}")
        check_options(p, opts, where="triage.options")
    resolve_policy(triage.policy, cell_space_only=False)
    specs = list(cfg.candidates)
    cands = [candidate(s) for s in specs]
    names = [c.name for c in cands]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"candidate names must be unique, repeated: {repeated}; give them names")
    search: SearchOptions | None = cli.config_init.get("search")
    if search is not None:
        search.check(dm)
    distill: DistillOptions | None = cli.config_init.get("distill")
    module_class = _import_class(cfg.model.class_path)
    module_args = dict(cfg.model.init_args or {})
    _check_module_class(module_class, distill)
    _check_module_args(module_class, module_args, int(dm.num_classes))
    if distill is not None and not cfg.score_only:
        distill.check()  # before hours of search: a buildable teacher, local weights
    if triage.strategy == "halving":
        from gradsign_pl.fidelity import get_signal
        from gradsign_pl.halving import plan_rungs

        get_signal(cfg.halving.signal)
        if distill is not None:
            raise ValueError(
                "triage.strategy: halving does not combine with distill yet: train students with strategy top_k"
            )
        if triage.top_k is None:
            raise ValueError("triage.strategy: halving needs triage.top_k (how many candidates train fully)")
        budget = cfg.halving.budget if cfg.halving.budget_steps is None else None
        plan_rungs(
            max(len(cands), 2), 1000, eta=cfg.halving.eta, budget=budget if budget is not None else 0.5, final=1
        )  # eta / budget values are checked now, the full plan once the data is known
        if cfg.halving.budget_steps is None and cfg.halving.budget is None:
            raise ValueError("halving: set budget (a fraction) or budget_steps")
        if cfg.halving.budget_steps is not None and (
            isinstance(cfg.halving.budget_steps, bool) or cfg.halving.budget_steps < 1
        ):
            raise ValueError(f"halving.budget_steps must be a positive number of steps, got {cfg.halving.budget_steps}")
        keep = cfg.halving.keep_after_rung0
        if keep is not None and (isinstance(keep, bool) or keep < 1):
            raise ValueError(f"halving.keep_after_rung0 must be a positive int or null (every ranked one), got {keep}")
    else:
        defaults = dataclasses.asdict(HalvingOptions())
        changed = sorted(k for k, v in defaults.items() if getattr(cfg.halving, k) != v)
        if changed:  # a section that would do nothing: refuse it rather than run another strategy quietly
            raise ValueError(
                f"halving.{changed[0]} is set but triage.strategy is {triage.strategy!r}: the halving section only "
                "applies with triage.strategy: halving (set that, or drop the halving options)"
            )
    if not cfg.score_only and not _trains_at_all(cfg.trainer):
        raise ValueError(
            f"the trainer trains nothing (max_epochs {cfg.trainer.max_epochs}, max_steps {cfg.trainer.max_steps}); "
            "set trainer.max_epochs >= 1 or trainer.max_steps >= 1, or score_only: true to only rank"
        )
    if cfg.checkpoint_every_n_steps < 1:
        raise ValueError(f"checkpoint_every_n_steps must be >= 1, got {cfg.checkpoint_every_n_steps}")
    settings = {
        "seed": cfg.seed_everything,
        "trainer": {k: v for k, v in _plain(cfg.trainer).items() if k not in COSMETIC_TRAINER_KEYS},
        "model": _plain(cfg.model),
        "data": _plain(cfg.data),
    }
    return Plan(resolve_run_dir(cfg), cands, module_class, module_args, search, distill, settings, executor)


def _plain(ns: Any) -> Any:
    return ns.as_dict() if isinstance(ns, Namespace) else ns


def _import_class(path: str) -> type:
    import pkgutil

    return pkgutil.resolve_name(path)


def _trains_at_all(trainer: Any) -> bool:
    """Whether the recipe's trainer section takes at least one step (Lightning: max_steps -1 = unset)."""
    steps = trainer.get("max_steps", -1)
    if steps is not None and steps > 0:
        return True
    if steps == 0:
        return False
    epochs = trainer.get("max_epochs", None)
    return epochs is None or epochs != 0


def _check_module_args(module_class: type[Any], module_args: dict[str, Any], num_classes: int) -> None:
    """Build the recipe's training module once without a backbone (a template), so a bad value in the model section
    (a negative lr, an unknown optimiser) fails now, not after the scoring; modules that need a backbone to be built
    are checked when the first candidate trains."""
    from gradsign_pl.modules.classification import ClassificationModule

    if issubclass(module_class, ClassificationModule):  # these are built as templates (backbone=None) by design
        module_class(backbone=None, num_classes=num_classes, **module_args)


def _check_module_class(module_class: type[Any], distill: DistillOptions | None) -> None:
    from gradsign_pl.modules.distillation import DistillationModule

    params = inspect.signature(module_class.__init__).parameters
    missing = [p for p in ("backbone", "num_classes") if p not in params]
    if missing:
        raise ValueError(
            f"model.class_path {module_class.__qualname__} must take the candidate network as "
            f"`backbone` and the data's `num_classes`; it has no {', '.join(missing)}"
        )
    if distill is not None and not issubclass(module_class, DistillationModule):
        raise ValueError(
            "distill trains students in a DistillationModule: set model.class_path: "
            f"gradsign_pl.modules.DistillationModule (or a subclass), got {module_class.__qualname__}"
        )


# ------------------------------------------------------------------------------------------------ run


def training_recipe(cli: GradSignFitCLI, plan: Plan, teacher: Any = None) -> TrainingRecipe:
    """How gradsign-fit trains a candidate: the recipe's module class, trainer and data; ``teacher`` for students."""
    dm = cli.datamodule
    kwargs = dict(plan.module_args)
    if plan.distill is not None:
        kwargs.update(plan.distill.module_kwargs(), teacher=teacher)

    def module(backbone: Any) -> pl.LightningModule:
        return plan.module_class(backbone=backbone, num_classes=dm.num_classes, **kwargs)

    return TrainingRecipe(
        module=module,
        trainer=cli.fresh_trainer,
        datamodule=dm,
        seed=cli.config.seed_everything,
        settings=plan.settings,
        checkpoint_every=cli.config.checkpoint_every_n_steps,
    )


def teacher_module(plan: Plan, num_classes: int) -> Any:
    """The module a teacher trains in: a ClassificationModule with the recipe's optimiser settings and the
    distill section's ``teacher_hparams`` over them."""
    allowed = ("lr", "optimizer", "weight_decay", "label_smoothing")
    hparams = {k: v for k, v in plan.module_args.items() if k in allowed}
    hparams.update((plan.distill.teacher_hparams or {}) if plan.distill is not None else {})
    return lambda backbone: ClassificationModule(backbone, num_classes, **hparams)


def read_jsonl_records(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(name, identity): record}`` from a JSON-lines log, skipping a line cut short by an interruption."""
    return {(rec["name"], rec.get("identity", "")): rec for rec in iter_jsonl(path, ("name",))}


def run_fit(cli: GradSignFitCLI, plan: Plan, command: str) -> int:
    """Rank, train the kept candidates, and write the report (see the module docstring); the exit status."""
    cfg = cli.config
    run_dir = plan.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # Under DDP, Lightning re-runs this command on every other rank once training starts: those ranks read the
    # finished search and the ranking cache, train in step with rank 0, and write nothing.
    # Lightning sets rank_zero_only.rank at import, on the function object, which its typing does not declare
    writer = rank_zero_only.rank == 0  # type: ignore[attr-defined]
    if writer:
        cli.parser.save(cfg, str(run_dir / "config.yaml"), overwrite=True, skip_none=False)
    dm = cli.datamodule
    triage = cfg.triage
    specs = list(cfg.candidates)
    sections: dict[str, Any] = {}
    if plan.search is not None:
        found, sections["search"] = run_search(
            plan.search, dm, run_dir / "search", write=writer, executor=plan.executor
        )
        specs += found
        print(f"search: {len(found)} structure(s) join the candidates; best: {found[0]['name']} {found[0]['model']}")
    cands = [candidate(s) for s in specs]
    ranking = rank(
        {c.name: c for c in cands},
        dm,
        triage.proxies,
        policy=triage.policy,
        seeds=triage.seeds,
        options=triage.options,
        max_params=triage.max_params,
        max_flops=triage.max_flops,
        top_k=None if triage.strategy == "halving" else triage.top_k,  # halving keeps top_k after its rungs
        cache=run_dir / "scores",
        num_classes=dm.num_classes,
        order_by=triage.order_by,
        max_samples=triage.max_samples,
        executor=plan.executor,
    )
    if writer:
        ranking.print()
        ranking.to_csv(run_dir / "ranking.csv")
        ranking.to_json(run_dir / "ranking.json")
    trained_log = run_dir / "trained.jsonl"
    history = read_jsonl_records(trained_log)
    results: list[dict[str, Any]] = []
    status = 0
    if not cfg.score_only and triage.strategy == "halving":
        results, new, sections["halving"] = _run_halving(cli, plan, cands, ranking, history)
        if writer:
            for record in new:
                append_jsonl(trained_log, record)
    elif not cfg.score_only:
        by_name = {c.name: c for c in cands}
        teacher = None
        recipe = training_recipe(cli, plan)
        if plan.distill is not None:
            distill = plan.distill

            teacher_identity = run_identity(None, recipe, {"teacher_stage": distill.teacher_stage_settings()})

            def train_teacher(net: Any, name: str) -> dict[str, Any]:
                return train_candidate(
                    None,
                    recipe,
                    run_dir / "train",
                    name=name,
                    backbone=net,
                    identity=teacher_identity,
                    module_factory=teacher_module(plan, dm.num_classes),
                    trainer_overrides={"max_epochs": distill.train_teacher_epochs},
                )

            teacher, sections["distillation"] = prepare_teacher(
                distill, dm, train_teacher, identity=teacher_identity, write=writer
            )
        jobs = [(row.name, by_name[row.name], teacher) for row in ranking.kept]
        if teacher is not None and plan.distill is not None and plan.distill.baseline and ranking.kept:
            best = ranking.kept[0].name
            jobs.append((f"{best} (no teacher)", by_name[best], None))
        for name, cand, teach in jobs:
            job_recipe = training_recipe(cli, plan, teacher=teach)
            extra = {"teacher": _teacher_identity(plan.distill) if teach is not None else None}
            identity = run_identity(cand, job_recipe, extra)
            previous = history.get((name, identity), {})
            if previous.get("status") == "trained":
                print(
                    f"{name}: already trained under these settings "
                    f"({100 * (previous.get('test_acc') or math.nan):.2f}% test), reused"
                )
                results.append(previous)
                continue
            _say_what_changed(name, identity, history, {**plan.settings, **extra})
            as_student = (  # a teacher is only prepared for a distill section
                f" as a student of {plan.distill.teacher}" if teach is not None and plan.distill is not None else ""
            )
            print(f"training {name}" + as_student)
            record = train_candidate(cand, job_recipe, run_dir / "train", name=name, identity=identity)
            record.update(
                spec=cand.spec if isinstance(cand.spec, (str, dict)) else None,
                settings={**plan.settings, **extra},
                teacher=plan.distill.teacher if teach is not None and plan.distill is not None else None,
            )
            record.pop("curve", None)
            results.append(record)
            if writer:
                append_jsonl(trained_log, record)
    if not cfg.score_only:
        failed = [r for r in results if r.get("status") != "trained"]
        if results and len(failed) == len(results):
            print(
                "gradsign-fit: every kept candidate failed to train: "
                + "; ".join(f"{r['name']}: {r.get('error')}" for r in failed),
                file=sys.stderr,
            )
            status = 1
    if not writer:
        return status
    paths = write_report(
        run_dir,
        ranking,
        results,
        command=command,
        score_only=cfg.score_only,
        sections=sections,
        seconds=time.perf_counter() - t0,
    )
    print(f"report: {paths['markdown']}")
    return status


def _run_halving(
    cli: GradSignFitCLI,
    plan: Plan,
    cands: list[Candidate],
    ranking: Any,
    history: dict[tuple[str, str], dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Successive halving over the ranked candidates: ``(survivors' trainings, the new ones among them, summary)``."""
    from gradsign_pl.halving import halving, summary

    cfg = cli.config
    options = cfg.halving
    recipe = training_recipe(cli, plan)
    result = halving(
        {c.name: c for c in cands},
        recipe,
        plan.run_dir / "halving",
        eta=options.eta,
        budget=options.budget if options.budget_steps is None else None,
        budget_steps=options.budget_steps,
        signal=options.signal,
        final=cfg.triage.top_k,
        keep_after_rung0=options.keep_after_rung0,
        ranking=ranking,
        train_survivors=False,
        executor=plan.executor,
    )
    results, new = [], []
    for name in result.survivors:
        cand = next(c for c in cands if c.name == name)
        identity = run_identity(cand, recipe)
        previous = history.get((name, identity), {})
        if previous.get("status") == "trained":
            print(
                f"{name}: already trained under these settings "
                f"({100 * (previous.get('test_acc') or math.nan):.2f}% test), reused"
            )
            results.append(previous)
            continue
        print(f"training {name} for the full schedule, continuing from its last rung")
        record = train_candidate(cand, recipe, plan.run_dir / "halving" / "train", identity=identity)
        record.update(spec=cand.spec if isinstance(cand.spec, (str, dict)) else None, settings=plan.settings)
        record.pop("curve", None)
        results.append(record)
        new.append(record)
    section = summary(result, options.signal)
    section["survivor_steps"] = sum(int(r.get("steps") or 0) - int(r.get("resumed_from_step") or 0) for r in results)
    return results, new, section


def _teacher_identity(distill: DistillOptions | None) -> dict[str, Any] | None:
    if distill is None:
        return None
    path = Path(str(distill.checkpoint))
    stat = path.stat() if path.is_file() else None
    return {
        "model": distill.teacher,
        "checkpoint": str(path),
        "file": [stat.st_size, int(stat.st_mtime)] if stat else None,
        **distill.module_kwargs(),
    }


def _say_what_changed(
    name: str, identity: str, history: dict[tuple[str, str], dict[str, Any]], settings: dict[str, Any]
) -> None:
    """Print which settings differ from the latest earlier training of ``name``, when there is one."""
    earlier = [r for (n, i), r in history.items() if n == name and i != identity and r.get("settings")]
    if earlier:
        changes = describe_settings_change(earlier[-1]["settings"], settings) or ["the candidate's spec"]
        print(f"{name}: trained before under other settings ({'; '.join(changes[:6])}); training again")


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``gradsign-fit`` console script."""
    argv = sys.argv[1:] if args is None else args
    command = "gradsign-fit " + " ".join(shlex.quote(a) for a in argv)
    torch.set_float32_matmul_precision("high")
    try:
        cli = GradSignFitCLI(args=args)  # None: LightningCLI reads sys.argv itself
        plan = plan_run(cli)
    except UsageError as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"gradsign-fit: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(run_fit(cli, plan, command))


if __name__ == "__main__":
    main()
