"""``gradsign-fit`` end to end in a subprocess: rank, train, report, resume, and config errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def recipe(tmp_path: Path, **overrides) -> Path:
    config = {
        "seed_everything": 0,
        "run_dir": str(tmp_path / "run"),
        "candidates": [
            {"class_path": "tests.models.TinyCNN", "init_args": {"width": 4}, "name": "tiny4"},
            {"class_path": "tests.models.TinyCNN", "init_args": {"width": 12}, "name": "tiny12"},
            {"class_path": "tests.models.TinyCNN", "init_args": {"width": 8}, "name": "tiny8"},
            {"class_path": "tests.models.BrokenCNN", "name": "broken"},
        ],
        "triage": {"proxies": ["gradsign", "params"], "top_k": 3, "max_samples": 32},
        "data": {"class_path": "gradsign_pl.data.datamodules.DigitsDataModule",
                 "init_args": {"batch_size": 64, "image_size": 8}},
        "trainer": {"max_epochs": 1, "limit_train_batches": 3, "limit_val_batches": 2, "limit_test_batches": 2,
                    "enable_progress_bar": False, "accelerator": "cpu"},
    }
    config.update(overrides)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fit(*args):
    return subprocess.run([sys.executable, "-m", "gradsign_pl.cli.fit", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600, check=False)


def test_rank_train_report_and_resume(tmp_path):
    first = fit("--config", str(recipe(tmp_path)))
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "run"
    assert {"config.yaml", "ranking.csv", "ranking.json", "report.md", "report.csv", "report.json",
            "predicted_vs_achieved.png", "trained.jsonl"} <= {p.name for p in run.iterdir()}
    report = json.loads((run / "report.json").read_text())
    by_name = {c["name"]: c for c in report["candidates"]}
    assert by_name["broken"]["status"] == "failed" and "broken on purpose" in by_name["broken"]["reason"]
    trained = [c for c in report["candidates"] if c["train_status"] == "trained"]
    assert len(trained) == 3 and all(0 <= c["test_acc"] <= 1 for c in trained)
    assert all(Path(c["checkpoint"]).is_file() for c in trained)
    assert report["agreement"]["gradsign"]["n"] == 3
    assert "Did the prediction hold?" in (run / "report.md").read_text()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["triage"]["top_k"] == 3 and saved["trainer"]["max_epochs"] == 1
    lines = (run / "trained.jsonl").read_text().splitlines()

    again = fit("--config", str(recipe(tmp_path)), "--triage.top_k", "3")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already trained") == 3
    assert (run / "trained.jsonl").read_text().splitlines() == lines


def test_score_only_with_a_command_line_override(tmp_path):
    result = fit("--config", str(recipe(tmp_path)), "--score_only", "true", "--triage.top_k", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    assert not (run / "trained.jsonl").exists() and not (run / "train").exists()
    kept = [c["name"] for c in json.loads((run / "ranking.json").read_text())["candidates"] if c["kept"]]
    assert len(kept) == 1
    assert "Score-only run" in (run / "report.md").read_text()


@pytest.mark.parametrize(
    ("overrides", "args", "message"),
    [
        ({}, ["--triage.topk", "2"], "triage.topk"),
        ({}, ["--triage.policy", "norm_ones"], "'auto', 'cell-space', 'real-model'"),
        ({"candidates": ["timm:resnet181"]}, [], "did you mean"),
        ({"candidates": [{"model": "timm:resnet18", "kwargs": {"pretrained": True}}]}, [], "pretrained"),
        ({"data": {"class_path": "gradsign_pl.data.datamodules.CIFAR10DataModule",
                   "init_args": {"data_dir": "/nonexistent/cifar"}}}, [], "no CIFAR-10 in /nonexistent/cifar"),
    ],
)
def test_config_errors_exit_non_zero_with_a_clear_message(tmp_path, overrides, args, message):
    result = fit("--config", str(recipe(tmp_path, **overrides)), *args)
    assert result.returncode != 0
    assert message in result.stderr
