"""``gradsign-fit`` with the search and distillation stages: the ImageNet recipe's dry run on a tiny ImageFolder,
resume, and the stage errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.images import tiny_imagefolder

ROOT = Path(__file__).resolve().parents[1]


def fit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gradsign_pl.cli.fit", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
        check=False,
    )


def save_random_teacher(path: Path, model: str, num_classes: int) -> Path:
    import torch

    from gradsign_pl.candidates import build_model

    torch.manual_seed(0)
    torch.save(build_model(model, num_classes=num_classes).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def imagenet_dry_run(tmp_path_factory):
    """The ImageNet recipe as shipped, shrunk only where a CPU needs it (iterations, epochs, devices)."""
    tmp = tmp_path_factory.mktemp("zen_imagenet")
    data = tiny_imagefolder(tmp / "imagenet", 224)
    teacher = save_random_teacher(tmp / "teacher.pth", "timm:tf_efficientnet_b3", 2)
    args = [
        "--config",
        str(ROOT / "recipes" / "zen_imagenet.yaml"),
        "--run_dir",
        str(tmp / "run"),
        "--data.init_args.root",
        str(data),
        "--data.init_args.batch_size",
        "4",
        "--data.init_args.num_workers",
        "0",
        "--distill.checkpoint",
        str(teacher),
        "--search.iterations",
        "4",
        "--search.population_size",
        "3",
        "--search.max_samples",
        "4",
        "--trainer.max_epochs",
        "1",
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--trainer.strategy",
        "auto",
        "--trainer.enable_progress_bar",
        "false",
    ]
    result = fit(*args)
    return tmp, args, result


def test_imagenet_recipe_dry_run_searches_distils_and_reports(imagenet_dry_run):
    tmp, _, result = imagenet_dry_run
    assert result.returncode == 0, result.stderr[-4000:]
    run = tmp / "run"
    best = (run / "search" / "best_structure.txt").read_text().strip()
    assert best.startswith("SuperConvK3BNRELU(3,")
    report = json.loads((run / "report.json").read_text())
    assert report["search"]["top"][0]["structure"] == best
    assert report["search"]["top"][0]["flops"] <= 400e6 and report["search"]["top"][0]["layers"] <= 14
    assert report["distillation"]["model"] == "timm:tf_efficientnet_b3"
    student = [c for c in report["candidates"] if c["train_status"] == "trained"]
    assert [c["name"][:6] for c in student] == ["zen#1-"] and 0 <= student[0]["test_acc"] <= 1
    trained = [json.loads(line) for line in (run / "trained.jsonl").read_text().splitlines()]
    assert trained[0]["teacher"] == "timm:tf_efficientnet_b3"
    markdown = (run / "report.md").read_text()
    assert "## Evolutionary search" in markdown and "## Distillation" in markdown and best in markdown


def test_a_second_run_resumes_everything(imagenet_dry_run):
    tmp, args, first = imagenet_dry_run
    assert first.returncode == 0
    again = fit(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already trained" in again.stdout
    assert len((tmp / "run" / "trained.jsonl").read_text().splitlines()) == 1


SMALL = "SuperConvK3BNRELU(3,8,1,1)SuperResK3K3(8,16,2,8,1)SuperConvK1BNRELU(16,32,1,1)"


def small_recipe(tmp_path: Path, **overrides) -> Path:
    data = tiny_imagefolder(tmp_path / "folder", 32)
    config = {
        "seed_everything": 0,
        "run_dir": str(tmp_path / "run"),
        "candidates": [],
        "search": {
            "iterations": 6,
            "population_size": 3,
            "max_params": 60000,
            "resolution": 32,
            "max_samples": 8,
            "top_k": 2,
            "init_structure": SMALL,
        },
        "triage": {"proxies": ["gradsign", "params"], "top_k": 1},
        "data": {
            "class_path": "gradsign_pl.data.datamodules.ImageFolderDataModule",
            "init_args": {"root": str(data), "image_size": 32, "batch_size": 4, "num_workers": 0},
        },
        "model": {
            "class_path": "gradsign_pl.modules.DistillationModule",
            "init_args": {"optimizer": "sgd", "lr": 0.05},
        },
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "enable_progress_bar": False},
    }
    config.update(overrides)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_teacher_is_trained_first_when_the_checkpoint_is_missing_and_a_baseline_runs(tmp_path):
    teacher = tmp_path / "teachers" / "t.pt"
    result = fit(
        "--config",
        str(
            small_recipe(
                tmp_path,
                distill={"teacher": "tests.models.TinyCNN", "checkpoint": str(teacher), "train_teacher_epochs": 1},
            )
        ),
    )
    # tests.models.TinyCNN is not a spec string: the teacher must be a spec gradsign-fit accepts
    assert result.returncode == 2 and "teacher" in result.stderr
    result = fit(
        "--config",
        str(
            small_recipe(
                tmp_path, distill={"teacher": "timm:resnet10t", "checkpoint": str(teacher), "train_teacher_epochs": 1}
            )
        ),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert teacher.is_file() and teacher.with_name("t.pt.json").is_file()
    names = [json.loads(line)["name"] for line in (tmp_path / "run" / "trained.jsonl").read_text().splitlines()]
    assert [n.split("-")[0] for n in names] == ["zen#1", "zen#1"] and names[1].endswith(" (no teacher)")
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "trained by this recipe" in markdown and names[1] in markdown and "at 32 px" in markdown
    student, alone = (
        json.loads(line)["test_acc"] for line in (tmp_path / "run" / "trained.jsonl").read_text().splitlines()
    )
    assert f"Lift: **{100 * (student - alone):+.2f} points** of test accuracy for `{names[0]}`" in markdown
    # the baseline is the same DistillationModule without a teacher (same optimiser, schedule and loss otherwise)
    baseline_hparams = yaml.safe_load(
        next((tmp_path / "run" / "train").glob("*no_teacher*/*/lightning_logs/*/hparams.yaml")).read_text()
    )
    assert "kd_weight" in baseline_hparams and "warmup_fraction" in baseline_hparams


def test_ddp_two_cpu_processes_search_once_train_in_step_and_write_once(tmp_path):
    teacher = tmp_path / "t.pt"
    result = fit(
        "--config",
        str(
            small_recipe(
                tmp_path, distill={"teacher": "timm:resnet10t", "checkpoint": str(teacher), "train_teacher_epochs": 1}
            )
        ),
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lines = (tmp_path / "run" / "trained.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["status"] == "trained" for line in lines)
    assert teacher.is_file() and json.loads(teacher.with_name("t.pt.json").read_text())["status"] == "trained"
    assert result.stdout.count("report: ") == 1


def test_missing_teacher_checkpoint_is_a_clear_error(tmp_path):
    result = fit("--config", str(small_recipe(tmp_path, distill={"checkpoint": str(tmp_path / "nope.pth")})))
    assert result.returncode == 2
    assert "nope.pth does not exist" in result.stderr and "never downloaded" in result.stderr
    assert "train_teacher_epochs" in result.stderr


def test_search_budget_below_the_initial_structure_is_a_clear_error(tmp_path):
    result = fit("--config", str(small_recipe(tmp_path)), "--search.max_params", "10", "--score_only", "true")
    assert result.returncode == 2
    assert "search: the initial structure already exceeds max_params" in result.stderr
    assert "smaller init_structure" in result.stderr


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"teacher": "timm:efficientnet_b9"}, ValueError, "distill.teacher 'timm:efficientnet_b9' is not a model spec"),
        ({"checkpoint": None}, ValueError, "distill.checkpoint is not set"),
        ({"teacher_hparams": {"lr": 0.1, "momentum": 0.9}}, ValueError, "unknown key(s) ['momentum']"),
        ({}, FileNotFoundError, "does not exist; the teacher is never downloaded"),
        ({"train_teacher_epochs": -1}, ValueError, "train_teacher_epochs must be an int >= 0, got -1"),
        ({"train_teacher_epochs": True}, ValueError, "train_teacher_epochs must be an int >= 0"),
    ],
)
def test_distill_options_are_checked_before_any_work(tmp_path, options, error, message):
    from gradsign_pl.cli.stages import DistillOptions

    opts = DistillOptions(**{"checkpoint": str(tmp_path / "missing.pth"), **options})
    with pytest.raises(error, match=re.escape(message)):
        opts.check()
    DistillOptions(checkpoint=str(tmp_path / "later.pth"), train_teacher_epochs=1).check()  # will be trained: fine
