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
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradsign_pl.triage import first_batch


@dataclasses.dataclass
class SearchOptions:
    """Evolutionary search before ranking (ZenNAS's loop; see :mod:`gradsign_pl.search.evolution`).

    Args:
        space: registered generative search space (``zen``: ZenNAS MasterNet structures).
        proxy: registered zero-cost proxy used as fitness (``gradsign``; ``zen`` for ZenNAS's own score).
        iterations: mutation attempts (rejected ones count, as in ZenNAS).
        population_size: structures kept; the lowest-scoring one is dropped when the population is full.
        max_params: parameter budget of a structure (with the data's classifier head).
        max_flops: FLOPs budget per image at ``resolution`` (the space's convention: multiply-accumulates).
        max_layers: depth budget (the space's layer count).
        resolution: input side in pixels for the FLOPs budget; ``None``: the data's ``image_size``.
        init_structure: structure the search starts from; ``None``: the space's default.
        top_k: best structures that join the candidates.
        seed: seed of the mutation choices and of every candidate's initialisation.
        use_se: squeeze-and-excitation in the ``SuperResIDWE`` blocks (ZenNAS's ImageNet models use it).
        max_samples: images of the first training batch used for scoring.
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


@dataclasses.dataclass
class DistillOptions:
    """Train the kept candidates as students of a frozen teacher (see ``DistillationModule`` for the loss).

    Args:
        teacher: candidate spec of the teacher's architecture (``timm:efficientnet_b3``, ``timm:tf_efficientnet_b3``,
            or any spec gradsign-fit accepts); its weights come from ``checkpoint``, never from a download.
        checkpoint: local weights of the teacher (a state_dict file or a Lightning checkpoint).
        train_teacher_epochs: when ``checkpoint`` does not exist, train the teacher on the recipe's data for this
            many epochs first and save it there; 0: a missing checkpoint is an error.
        teacher_resolution: side in pixels the teacher sees (the batch is resized); ``None``: the student's.
        temperature: softmax temperature of the distillation term (ZenNAS: 1).
        kd_weight: weight of the distillation term (see ``DistillationModule``).
        feature_weight: weight of feature distillation through 1x1 projections (0: logits only).
        mixup_alpha: Beta(alpha, alpha) mixup of inputs (0: off).
        baseline: also train the best kept candidate without a teacher, for comparison in the report.
    """

    teacher: str = "timm:efficientnet_b3"
    checkpoint: str | None = None
    train_teacher_epochs: int = 0
    teacher_resolution: int | None = None
    temperature: float = 1.0
    kd_weight: float = 1.0
    feature_weight: float = 0.0
    mixup_alpha: float = 0.0
    baseline: bool = True

    def check(self) -> None:
        """Fail before any search or training when the teacher cannot be had (bad spec, no local weights)."""
        from gradsign_pl.candidates import candidate

        try:
            candidate(self.teacher)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"distill.teacher {self.teacher!r} is not a model spec gradsign-fit can build: {exc}") from None
        if not self.checkpoint:
            raise ValueError(
                "distill.checkpoint is not set: give the local path of the teacher's weights (they are never "
                "downloaded), or a path to create together with distill.train_teacher_epochs > 0 to train one first"
            )
        if not Path(self.checkpoint).exists() and self.train_teacher_epochs <= 0:
            raise FileNotFoundError(
                f"teacher checkpoint {self.checkpoint} does not exist; the teacher is never downloaded: point "
                "distill.checkpoint to a local file, or set distill.train_teacher_epochs > 0 to train the teacher "
                "on this recipe's data first"
            )

    def module_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``DistillationModule`` that come from this section."""
        return {"teacher_resolution": self.teacher_resolution, "temperature": self.temperature,
                "kd_weight": self.kd_weight, "feature_weight": self.feature_weight, "mixup_alpha": self.mixup_alpha}


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_search(options: SearchOptions, datamodule: Any, out_dir: Path, *, progress: bool = True) -> list[dict]:
    """Run (or resume) the evolutionary search; write its outputs to ``out_dir``; return the top candidates.

    Returns ``[{"model": "zen:<structure>", "name": "zen#1", "kwargs": {...}}, ...]`` best first, ready to join the
    recipe's candidates.
    """
    from gradsign_pl.search.evolution import EvolutionSettings, evolution_search, proxy_fitness
    from gradsign_pl.spaces import create_space

    if options.top_k < 1:
        raise ValueError(f"search.top_k must be >= 1, got {options.top_k}")
    space = create_space(options.space, **({"use_se": True} if options.use_se else {}))
    resolution = options.resolution or int(datamodule.image_size)
    settings = EvolutionSettings(
        iterations=options.iterations, population_size=options.population_size, max_params=options.max_params,
        max_flops=options.max_flops, max_layers=options.max_layers, resolution=resolution,
        num_classes=int(datamodule.num_classes), seed=options.seed, init_structure=options.init_structure)
    x, y = first_batch(datamodule, max_samples=options.max_samples)
    fitness = proxy_fitness(options.proxy, x, y, space, num_classes=int(datamodule.num_classes),
                            in_chans=int(datamodule.in_chans), device=_device(), init_seed=options.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        result = evolution_search(space, fitness, settings, checkpoint=out_dir / "checkpoint.json",
                                  progress=progress)
    except ValueError as exc:
        raise ValueError(f"search: {exc}") from None
    seconds = time.perf_counter() - t0
    top = result.top(options.top_k)
    num_classes = int(datamodule.num_classes)
    details = [{"rank": i + 1, "score": score, "structure": s, "params": space.params(s, num_classes),
                "flops": space.flops(s, resolution, num_classes), "layers": space.layers(s)}
               for i, (s, score) in enumerate(top)]
    result.write(out_dir, k=options.top_k, extra={"proxy": options.proxy, "space": options.space, "top": details,
                                                  "seconds_this_session": round(seconds, 1)})
    kwargs = {"use_se": True} if options.use_se else {}
    return [{"model": f"{options.space}:{d['structure']}", "name": f"{options.space}#{d['rank']}",
             **({"kwargs": kwargs} if kwargs else {})} for d in details]


def teacher_input_size(options: DistillOptions, datamodule: Any) -> tuple[int, int]:
    side = options.teacher_resolution or int(datamodule.image_size)
    return side, side


def prepare_teacher(options: DistillOptions, datamodule: Any, train: Any) -> tuple[nn.Module, dict[str, Any]]:
    """The frozen teacher: loaded from ``options.checkpoint``, trained first when missing and allowed.

    ``train(backbone, name) -> record`` trains a network with the recipe's trainer (gradsign-fit passes its
    candidate trainer) and returns its record; the teacher stage trains at the data's resolution.
    """
    from gradsign_pl.candidates import candidate
    from gradsign_pl.modules.teacher import load_teacher, save_teacher

    options.check()
    path = Path(str(options.checkpoint))
    info_path = path.with_name(path.name + ".json")
    num_classes, in_chans = int(datamodule.num_classes), int(datamodule.in_chans)
    if not path.exists():
        if options.teacher_resolution not in (None, int(datamodule.image_size)):
            raise ValueError(
                f"distill.train_teacher_epochs trains the teacher at the data's resolution ({datamodule.image_size} "
                f"px) but distill.teacher_resolution is {options.teacher_resolution}; set teacher_resolution: null "
                "or supply a teacher checkpoint trained at that resolution"
            )
        size = int(datamodule.image_size)
        backbone = candidate(options.teacher).build(num_classes=num_classes, in_chans=in_chans, input_size=(size, size))
        print(f"training the teacher {options.teacher} for {options.train_teacher_epochs} epoch(s); it is saved "
              f"to {path}")
        record = train(backbone, f"teacher {options.teacher}")
        if record.get("status") != "trained":
            raise RuntimeError(f"training the teacher failed: {record.get('error')}")
        path.parent.mkdir(parents=True, exist_ok=True)
        save_teacher(backbone, path)
        info_path.write_text(json.dumps({**record, "model": options.teacher, "checkpoint": str(path)}, indent=2))
    teacher = load_teacher(options.teacher, path, num_classes=num_classes, in_chans=in_chans)
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    return teacher, {"model": options.teacher, "checkpoint": str(path), "test_acc": info.get("test_acc"),
                     "trained_here": bool(info)}
