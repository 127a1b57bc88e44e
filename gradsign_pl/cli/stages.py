"""The optional stages of ``gradsign-fit``: an evolutionary search before ranking, a teacher before training.

``search`` (a :class:`SearchOptions` section) runs a ZenNAS-style evolutionary search over a registered generative
space (``zen``: MasterNet structures) with a zero-cost proxy as fitness, scored on the recipe's first training batch;
the ``top_k`` structures it finds join the recipe's candidates as ``zen:<structure>`` specs. The search checkpoints
its population after every candidate (``run_dir/search/checkpoint.json``) and resumes when run again.

``distill`` (a :class:`DistillOptions` section) trains every kept candidate as the student of a frozen teacher
(:class:`~gradsign_pl.modules.distillation.DistillationModule`). The teacher comes from a local checkpoint; when the
file is missing and ``train_teacher_epochs > 0`` the teacher is first trained on the recipe's data and saved there
(the small CPU recipe does this), otherwise the run stops with an error that says so. ``baseline: true`` also trains
the best kept candidate without a teacher, so the report shows what distillation bought.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradsign_pl.scoring.batch import first_batch


@dataclasses.dataclass
class SearchOptions:
    """Evolutionary search before ranking (ZenNAS's loop; see :mod:`gradsign_pl.search.evolution`).

    Args:
        space: registered generative search space (``zen``: ZenNAS MasterNet structures).
        proxy: registered zero-cost proxy used as fitness (``gradsign``; ``zen`` for ZenNAS's own score).
        iterations: mutation attempts (rejected ones count, as in ZenNAS).
        population_size: structures kept; the lowest-scoring one is dropped when the population is full.
        max_params: parameter budget of a structure (with the data's classifier head).
        max_flops: FLOPs budget per image at ``resolution``, in the space's convention (``zen``: ZenNAS's published
            one, multiply-accumulates of conv/linear plus bias and BatchNorm terms; see ``count_flops``).
        max_layers: depth budget (the space's layer count).
        resolution: input side in pixels for the FLOPs budget; ``None``: the data's ``image_size``.
        init_structure: structure the search starts from; ``None``: the space's default.
        top_k: best structures that join the candidates.
        seed: seed of the mutation choices and of every candidate's initialisation.
        use_se: squeeze-and-excitation in the ``SuperResIDWE`` blocks (ZenNAS's ImageNet models use it).
        max_samples: images of the first training batch used for scoring.
        batch: structures drawn per step and scored together (the recipe's ``executor`` spreads them); 1 is the
            ZenNAS loop exactly. The search depends on it, not on the executor.
    """

    space: str = "zen"
    proxy: str = "gradsign"
    iterations: int = 200
    population_size: int = 32
    max_params: float | None = None
    max_flops: float | None = None
    max_layers: int | None = None
    resolution: int | None = None
    init_structure: str | None = None
    top_k: int = 3
    seed: int = 0
    use_se: bool = False
    max_samples: int = 64
    batch: int = 1

    def check(self, datamodule: Any | None = None) -> None:
        """Fail before any work on a search that cannot run: unknown space or proxy, bad sizes, and (given the
        datamodule) settings the space refuses or an initial structure over the budgets."""
        from gradsign_pl.proxies import get_proxy
        from gradsign_pl.search.evolution import check_settings
        from gradsign_pl.spaces import list_spaces

        if self.space not in list_spaces():
            raise ValueError(f"search.space {self.space!r} is not a registered space; registered: {list_spaces()}")
        if get_proxy(self.proxy).set_level:
            raise ValueError(
                f"search.proxy: {self.proxy!r} ranks a set of models; pick a single proxy such as 'gradsign'"
            )
        for name in ("iterations", "population_size", "top_k", "max_samples", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"search.{name} must be a positive int, got {value!r}")
        if datamodule is not None:
            try:
                check_settings(self.space_instance(), self.settings(datamodule))
            except ValueError as exc:
                raise ValueError(f"search: {exc}") from None

    def space_instance(self) -> Any:
        """The search space these options name (with ``use_se``)."""
        from gradsign_pl.spaces import create_space

        return create_space(self.space, **({"use_se": True} if self.use_se else {}))

    def settings(self, datamodule: Any) -> Any:
        """The :class:`~gradsign_pl.search.evolution.EvolutionSettings` for ``datamodule``'s classes and size."""
        from gradsign_pl.search.evolution import EvolutionSettings

        return EvolutionSettings(
            iterations=self.iterations,
            population_size=self.population_size,
            max_params=self.max_params,
            max_flops=self.max_flops,
            max_layers=self.max_layers,
            resolution=self.resolution or int(datamodule.image_size),
            num_classes=int(datamodule.num_classes),
            seed=self.seed,
            init_structure=self.init_structure,
            batch=self.batch,
        )


@dataclasses.dataclass
class DistillOptions:
    """Train the kept candidates as students of a frozen teacher (see ``DistillationModule`` for the loss).

    Args:
        teacher: candidate spec of the teacher's architecture (``timm:efficientnet_b3``, ``timm:tf_efficientnet_b3``,
            or any spec gradsign-fit accepts); its weights come from ``checkpoint``, never from a download.
        checkpoint: local weights of the teacher (a state_dict file or a Lightning checkpoint).
        train_teacher_epochs: when ``checkpoint`` does not exist, train the teacher on the recipe's data for this
            many epochs first and save it there; 0: a missing checkpoint is an error.
        teacher_hparams: training hyperparameters of that teacher stage (``lr``, ``optimizer``, ``weight_decay``,
            ``label_smoothing`` of ``ClassificationModule``) overriding the recipe's ``model`` section.
        teacher_resolution: side in pixels the teacher sees (the batch is resized); ``None``: the student's.
        temperature: softmax temperature of the distillation term (ZenNAS: 1).
        kd_weight: weight of the distillation term (see ``DistillationModule``).
        feature_weight: weight of feature distillation through 1x1 projections (0: logits only).
        feature_loss: distance of the feature term, ``"mse"`` or ``"smooth_l1"`` (ZenNAS).
        feature_stages: reductions (input side / map side) of the student stages to distil, e.g. ``[16]`` as ZenNAS;
            ``None``: every stage the student exposes.
        mixup_alpha: Beta(alpha, alpha) mixup of inputs (0: off).
        baseline: also train the best kept candidate without a teacher, for comparison in the report.
        trust_checkpoint: let ``load_teacher`` fully unpickle a ``checkpoint`` whose weights the safe loader cannot
            read (e.g. a pickled ``nn.Module``); that can run code stored in the file: only for files you trust.
    """

    teacher: str = "timm:efficientnet_b3"
    checkpoint: str | None = None
    train_teacher_epochs: int = 0
    teacher_hparams: dict[str, Any] | None = None
    teacher_resolution: int | None = None
    temperature: float = 1.0
    kd_weight: float = 1.0
    feature_weight: float = 0.0
    feature_loss: str = "mse"
    feature_stages: list[int] | None = None
    mixup_alpha: float = 0.0
    baseline: bool = True
    trust_checkpoint: bool = False

    def check(self) -> None:
        """Fail before any search or training when the teacher cannot be had (bad spec, no local weights, bad
        options)."""
        from gradsign_pl.candidates import candidate

        try:
            candidate(self.teacher)
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"distill.teacher {self.teacher!r} is not a model spec gradsign-fit can build: {exc}"
            ) from None
        if not self.checkpoint:
            raise ValueError(
                "distill.checkpoint is not set: give the local path of the teacher's weights (they are never "
                "downloaded), or a path to create together with distill.train_teacher_epochs > 0 to train one first"
            )
        epochs = self.train_teacher_epochs
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(
                f"distill.train_teacher_epochs must be an int >= 0, got {epochs!r} (0: use the checkpoint as it is)"
            )
        from gradsign_pl.modules import ClassificationModule, DistillationModule

        allowed = {"lr", "optimizer", "weight_decay", "label_smoothing"}
        unknown = sorted(set(self.teacher_hparams or {}) - allowed)
        if unknown:
            raise ValueError(f"distill.teacher_hparams has unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        try:  # bad values fail now, not after the search
            ClassificationModule(None, **(self.teacher_hparams or {}))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"distill.teacher_hparams: {exc}") from None
        try:
            DistillationModule(None, **self.module_kwargs())
        except (ValueError, TypeError) as exc:
            raise ValueError(f"distill: {exc}") from None
        if not Path(self.checkpoint).exists() and self.train_teacher_epochs <= 0:
            raise FileNotFoundError(
                f"teacher checkpoint {self.checkpoint} does not exist; the teacher is never downloaded: point "
                "distill.checkpoint to a local file, or set distill.train_teacher_epochs > 0 to train the teacher "
                "on this recipe's data first"
            )

    def teacher_stage_settings(self) -> dict[str, Any]:
        """What a teacher trained by the recipe depends on, beyond the recipe's data, trainer and seed."""
        return {
            "teacher": self.teacher,
            "train_teacher_epochs": self.train_teacher_epochs,
            "teacher_hparams": dict(self.teacher_hparams or {}),
            "teacher_resolution": self.teacher_resolution,
        }

    def module_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``DistillationModule`` that come from this section."""
        return {
            "teacher_resolution": self.teacher_resolution,
            "temperature": self.temperature,
            "kd_weight": self.kd_weight,
            "feature_weight": self.feature_weight,
            "feature_loss": self.feature_loss,
            "feature_stages": self.feature_stages,
            "mixup_alpha": self.mixup_alpha,
        }


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_search(
    options: SearchOptions,
    datamodule: Any,
    out_dir: Path,
    *,
    progress: bool = True,
    write: bool = True,
    executor: Any = None,
) -> tuple[list[dict], dict[str, Any]]:
    """Run (or resume) the evolutionary search; write its outputs to ``out_dir``; return the top candidates.

    Returns ``([{"model": "zen:<structure>", "name": "zen#1-<hash>", ...}, ...], search_summary)``, best first,
    ready to join the recipe's candidates; the name carries a hash of the structure, so a re-run search never
    inherits the cached scores or trainings of a different structure. ``write=False`` (DDP ranks other than 0)
    only reads a finished search (an unfinished one is an error) and writes nothing.

    The checkpoint (``checkpoint-<settings>.json``) is keyed on everything the search depends on: the space and its
    options, the fitness proxy, the scoring batch (``max_samples`` images, fingerprinted), the budgets, iterations
    and seed. A search with other settings starts afresh beside the old one, and says what changed.
    """
    from gradsign_pl.proxies import batch_fingerprint
    from gradsign_pl.scoring.cache import settings_hash
    from gradsign_pl.search.evolution import evolution_search, proxy_fitness
    from gradsign_pl.training import describe_settings_change

    options.check()
    space = options.space_instance()
    num_classes = int(datamodule.num_classes)
    settings = options.settings(datamodule)
    x, y = first_batch(datamodule, max_samples=options.max_samples)
    identity = {
        "space": options.space,
        "use_se": options.use_se,
        "proxy": options.proxy,
        "max_samples": options.max_samples,
        "batch": batch_fingerprint(x, y),
        "settings": dataclasses.asdict(settings),
    }
    key = settings_hash(identity)
    checkpoint = out_dir / f"checkpoint-{key[:10]}.json"
    latest = out_dir / "settings.json"
    if write and latest.is_file():
        before = json.loads(latest.read_text())
        if before != json.loads(json.dumps(identity)):
            print(
                f"search: settings changed since the last search in {out_dir} "
                f"({'; '.join(describe_settings_change(before, identity)[:6])}); searching again"
            )
    fitness: Any = None
    if write:
        fitness = proxy_fitness(
            options.proxy,
            x,
            y,
            space,
            num_classes=num_classes,
            in_chans=int(datamodule.in_chans),
            device=_device(),
            init_seed=options.seed,
        )
    else:
        state = json.loads(checkpoint.read_text()) if checkpoint.exists() else {}
        if state.get("next_iteration") != options.iterations or not (out_dir / "search.json").exists():
            raise RuntimeError(
                f"{checkpoint} holds no finished search; with several processes, the search must finish on rank 0 "
                "before training starts (launch with Lightning's own DDP launcher, or run the search first with "
                "--trainer.devices 1 --score_only true)"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    if write:
        latest.write_text(json.dumps(identity, indent=2) + "\n")
    t0 = time.perf_counter()
    try:
        result = evolution_search(
            space,
            fitness or (lambda structure: math.nan),
            settings,
            checkpoint=checkpoint,
            progress=progress and write,
            executor=executor if write else None,
        )
    except ValueError as exc:
        raise ValueError(f"search: {exc}") from None
    if write:
        result.write(
            out_dir,
            k=options.top_k,
            extra={
                "proxy": options.proxy,
                "use_se": options.use_se,
                "max_samples": options.max_samples,
                "seconds_this_session": round(time.perf_counter() - t0, 1),
            },
        )
    summary = json.loads((out_dir / "search.json").read_text())
    kwargs = {"kwargs": {"use_se": True}} if options.use_se else {}
    found = [
        {
            "model": f"{options.space}:{structure}",
            "name": f"{options.space}#{i + 1}-{hashlib.sha1(structure.encode()).hexdigest()[:6]}",
            **kwargs,
        }
        for i, (structure, _) in enumerate(result.top(options.top_k))
    ]
    return found, summary


def prepare_teacher(
    options: DistillOptions, datamodule: Any, train: Any, *, identity: str | None = None, write: bool = True
) -> tuple[nn.Module, dict[str, Any]]:
    """The frozen teacher: loaded from ``options.checkpoint``, or trained first when missing and allowed.

    ``train(backbone, name) -> record`` trains a network with the recipe's trainer (gradsign-fit passes its
    candidate trainer) and returns its record. The teacher stage trains at ``options.teacher_resolution`` (the
    recipe's batches resized by :class:`~gradsign_pl.modules.teacher.ResizedInput`; the data's own size when unset).
    ``identity`` names everything that trained teacher depends on (gradsign-fit: the recipe's settings and
    :meth:`DistillOptions.teacher_stage_settings`); it is stored in the checkpoint's ``.json`` record, and a
    checkpoint this recipe trained under another identity is trained again (and says so) instead of reused. A
    checkpoint without that record (the user's own weights) is always loaded as it is. Under DDP every rank trains
    the teacher in step and keeps its (identical) weights in memory; only the writer (rank 0) saves the checkpoint:
    first its ``.json`` record, then the weights, renamed into place, so an interrupted save leaves no file that
    looks finished.
    """
    from gradsign_pl.candidates import candidate
    from gradsign_pl.modules.teacher import ResizedInput, load_teacher, save_teacher

    options.check()
    size = int(datamodule.image_size)
    side = options.teacher_resolution or size
    path = Path(str(options.checkpoint))
    info_path = path.with_name(path.name + ".json")
    num_classes, in_chans = int(datamodule.num_classes), int(datamodule.in_chans)
    stale = ""
    if path.exists() and info_path.exists() and identity is not None and options.train_teacher_epochs > 0:
        before = json.loads(info_path.read_text()).get("identity")
        if before != identity:
            stale = (
                f"{path} was trained by this recipe under other settings "
                f"(identity {str(before)[:10]}, now {identity[:10]})"
            )
    if path.exists() and not stale:
        teacher = load_teacher(
            options.teacher,
            path,
            num_classes=num_classes,
            in_chans=in_chans,
            input_size=(side, side),
            trust_checkpoint=options.trust_checkpoint,
        )
    else:
        teacher = candidate(options.teacher).build(num_classes=num_classes, in_chans=in_chans, input_size=(side, side))
        print(
            (f"teacher: {stale}; training it again. " if stale else "")
            + f"training the teacher {options.teacher} for {options.train_teacher_epochs} epoch(s) at {side} px; "
            f"it is saved to {path}"
        )
        record = train(teacher if side == size else ResizedInput(teacher, side), f"teacher {options.teacher}")
        if record.get("status") != "trained":
            raise RuntimeError(f"training the teacher failed: {record.get('error')}")
        if write:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = info_path.with_name(f".{info_path.name}.tmp")
            info = {
                **record,
                "model": options.teacher,
                "checkpoint": str(path),
                "resolution": side,
                "identity": identity,
            }
            tmp.write_text(json.dumps(info, indent=2))
            os.replace(tmp, info_path)
            save_teacher(teacher, path)
        teacher.eval().requires_grad_(False)
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    return teacher, {
        "model": options.teacher,
        "checkpoint": str(path),
        "test_acc": info.get("test_acc"),
        "resolution": side,
        "trained_here": bool(info),
    }
