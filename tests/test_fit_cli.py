"""``gradsign-fit`` end to end in a subprocess: rank, train, report, resume, and config errors."""

from __future__ import annotations

import json
import os
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
        "data": {
            "class_path": "gradsign_pl.data.datamodules.DigitsDataModule",
            "init_args": {"batch_size": 64, "image_size": 8},
        },
        "trainer": {
            "max_epochs": 1,
            "limit_train_batches": 3,
            "limit_val_batches": 2,
            "limit_test_batches": 2,
            "enable_progress_bar": False,
            "accelerator": "cpu",
        },
    }
    config.update(overrides)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fit(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "gradsign_pl.cli.fit", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )


def test_rank_train_report_and_resume(tmp_path):
    first = fit("--config", str(recipe(tmp_path)))
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "run"
    assert {
        "config.yaml",
        "ranking.csv",
        "ranking.json",
        "report.md",
        "report.csv",
        "report.json",
        "predicted_vs_achieved.png",
        "trained.jsonl",
    } <= {p.name for p in run.iterdir()}
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
        (
            {
                "data": {
                    "class_path": "gradsign_pl.data.datamodules.CIFAR10DataModule",
                    "init_args": {"data_dir": "/nonexistent/cifar"},
                }
            },
            [],
            "no CIFAR-10 in /nonexistent/cifar",
        ),
    ],
)
def test_config_errors_exit_non_zero_with_a_clear_message(tmp_path, overrides, args, message):
    result = fit("--config", str(recipe(tmp_path, **overrides)), *args)
    assert result.returncode != 0
    assert message in result.stderr


def test_changed_settings_train_again_and_the_config_describes_the_results(tmp_path):
    first = fit("--config", str(recipe(tmp_path)))
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "run"
    before = json.loads((run / "report.json").read_text())
    again = fit("--config", str(recipe(tmp_path)), "--trainer.max_epochs", "2", "--model.lr", "0.05")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already trained" not in again.stdout
    assert again.stdout.count("trained before under other settings") == 3
    assert "model.init_args.lr: 0.002 -> 0.05" in again.stdout and "trainer.max_epochs: 1 -> 2" in again.stdout
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["trainer"]["max_epochs"] == 2 and saved["model"]["init_args"]["lr"] == 0.05
    after = json.loads((run / "report.json").read_text())
    epochs = {c["name"]: c["train_epochs"] for c in after["candidates"] if c["train_status"] == "trained"}
    assert set(epochs.values()) == {2}  # the report shows the results of this configuration only
    assert [c["test_acc"] for c in after["candidates"]] != [c["test_acc"] for c in before["candidates"]]
    # the scores did not depend on the training settings: reused, not recomputed
    assert "scoring settings changed" not in again.stderr


def test_keys_that_do_nothing_are_refused(tmp_path):
    result = fit("--config", str(recipe(tmp_path, model={"lr": 0.01, "backbone": None})))
    assert result.returncode == 2 and "backbone" in result.stderr
    result = fit("--config", str(recipe(tmp_path)), "--model.num_classes", "3")
    assert result.returncode == 2 and "num_classes" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--model.lr", "-1"), "lr must be a finite number > 0"),
        (("--model.optimizer", "adam"), "optimizer must be 'adamw' or 'sgd'"),
        (("--trainer.max_epochs", "0"), "the trainer trains nothing"),
        (("--triage.strategy", "halving", "--halving.keep_after_rung0", "0"), "keep_after_rung0 must be a positive"),
        (("--triage.strategy", "halving", "--halving.budget_steps", "0"), "budget_steps must be a positive"),
        (("--triage.strategy", "halving", "--halving.signal", "sotl_emaa"), "did you mean 'sotl_ema'"),
        (("--halving.eta", "2"), "halving.eta is set but triage.strategy is 'top_k'"),  # would do nothing
    ],
)
def test_bad_values_are_usage_errors_before_any_work(tmp_path, args, message):
    result = fit("--config", str(recipe(tmp_path)), *args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "ranking.csv").exists()  # refused before the scoring


def test_run_dir_defaults_from_the_recipe_name_or_default_root_dir_and_the_recipe_logger_is_used(tmp_path):
    config = recipe(
        tmp_path,
        run_dir=None,
        trainer={
            "max_epochs": 1,
            "limit_train_batches": 2,
            "limit_val_batches": 1,
            "limit_test_batches": 1,
            "enable_progress_bar": False,
            "accelerator": "cpu",
            "default_root_dir": str(tmp_path / "root"),
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(tmp_path / "logs"), "name": "mine"},
            },
        },
    )
    result = fit("--config", str(config), "--triage.top_k", "2", "--score_only", "false")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "root" / "report.md").is_file()  # the run directory is the recipe's default_root_dir
    versions = sorted(p.name for p in (tmp_path / "logs" / "mine").iterdir())
    assert versions == ["tiny12", "tiny8"]  # one run per candidate in the recipe's own logger
    assert (tmp_path / "logs" / "mine" / "tiny12" / "metrics.csv").is_file()

    named = tmp_path / "my_recipe.yaml"
    named.write_text(yaml.safe_dump({**yaml.safe_load(recipe(tmp_path).read_text()), "run_dir": None}))
    result = subprocess.run(
        [sys.executable, "-m", "gradsign_pl.cli.fit", "--config", str(named), "--score_only", "true"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "runs" / "my_recipe" / "ranking.json").is_file()


def test_every_kept_candidate_failing_exits_non_zero(tmp_path):
    result = fit("--config", str(recipe(tmp_path, model={"class_path": "tests.models.FailingModule"})))
    assert result.returncode == 1
    assert "every kept candidate failed to train" in result.stderr and "training is broken" in result.stderr


def test_an_unexpected_error_shows_its_traceback(tmp_path):
    result = fit("--config", str(recipe(tmp_path, data={"class_path": "tests.models.ExplodingDataModule"})))
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "RuntimeError: the data exploded" in result.stderr


def test_a_killed_training_resumes_from_its_last_checkpoint(tmp_path):
    """Kill the fit mid-epoch (after a last.ckpt), run again: it resumes and ends as an uninterrupted run does."""
    base = {
        "trainer": {
            "max_epochs": 1,
            "limit_train_batches": 12,
            "limit_val_batches": 1,
            "limit_test_batches": 1,
            "enable_progress_bar": False,
            "accelerator": "cpu",
            "callbacks": [{"class_path": "tests.models.KillAtStep"}],
        },
        "candidates": [{"class_path": "tests.models.TinyCNN", "init_args": {"width": 4}, "name": "tiny4"}],
        "triage": {"proxies": ["params"], "top_k": 1, "max_samples": 32},
        "data": {
            "class_path": "gradsign_pl.data.datamodules.DigitsDataModule",
            "init_args": {"batch_size": 16, "image_size": 8},
        },
    }
    straight = fit("--config", str(recipe(tmp_path / "a", **base)), "--checkpoint_every_n_steps", "4")
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = fit(
        "--config",
        str(recipe(tmp_path / "b", **base)),
        "--checkpoint_every_n_steps",
        "4",
        env={"GRADSIGN_TEST_KILL_AT_STEP": "6"},
    )
    assert killed.returncode != 0 and "killed at step 6" in killed.stderr
    resumed = fit("--config", str(recipe(tmp_path / "b", **base)), "--checkpoint_every_n_steps", "4")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rec_a = [json.loads(x) for x in (tmp_path / "a" / "run" / "trained.jsonl").read_text().splitlines()][-1]
    rec_b = [json.loads(x) for x in (tmp_path / "b" / "run" / "trained.jsonl").read_text().splitlines()][-1]
    assert rec_b["resumed_from_step"] == 4 and rec_b["steps"] == rec_a["steps"] == 12
    assert rec_b["test_acc"] == rec_a["test_acc"] and rec_b["val_acc"] == rec_a["val_acc"]


def _halving_recipe(path: Path, *, callbacks=()) -> Path:
    return recipe(
        path,
        candidates=[
            {"class_path": "tests.models.TinyCNN", "init_args": {"width": w}, "name": f"tiny{w}"} for w in (2, 4, 8, 16)
        ],
        triage={"proxies": ["params"], "top_k": 1, "max_samples": 32, "strategy": "halving"},
        halving={"eta": 2, "budget": 0.4, "signal": "last_loss"},
        data={
            "class_path": "gradsign_pl.data.datamodules.DigitsDataModule",
            "init_args": {"batch_size": 16, "image_size": 8},
        },
        trainer={
            "max_epochs": 1,
            "limit_train_batches": 12,
            "limit_val_batches": 1,
            "limit_test_batches": 1,
            "enable_progress_bar": False,
            "accelerator": "cpu",
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(path / "logs")},
            },
            "callbacks": [{"class_path": c} for c in callbacks],
        },
    )


def test_halving_recipe_reports_its_rungs_logs_them_and_resumes_after_a_kill_mid_rung(tmp_path):
    straight = fit("--config", str(_halving_recipe(tmp_path / "a")), "--checkpoint_every_n_steps", "4")
    assert straight.returncode == 0, straight.stderr[-3000:]
    report = json.loads((tmp_path / "a" / "run" / "report.json").read_text())
    plan = report["halving"]["plan"]
    assert plan["counts"] == [4, 2] and plan["steps"] == [3, 6] and plan["full_steps"] == 12
    (survivor,) = report["halving"]["survivors"]
    rows = {c["name"]: c for c in report["candidates"]}
    assert [n for n, c in rows.items() if c["kept"]] == [survivor]
    assert rows[survivor]["train_steps"] == 12  # the full schedule, continued from its last rung
    eliminated = [n for n, c in rows.items() if n != survivor]
    assert all(rows[n]["reason"].startswith("eliminated after rung") for n in eliminated)
    md = (tmp_path / "a" / "run" / "report.md").read_text()
    assert "## Successive halving" in md and "eliminated after" in md and "halving_signal.png" in md
    assert (tmp_path / "a" / "run" / "halving_signal.png").stat().st_size > 0
    logged = "".join(p.read_text() for p in (tmp_path / "a" / "logs").rglob("metrics.csv"))
    assert "halving/last_loss" in logged  # each rung's signal went to the recipe's logger

    killed = fit(
        "--config",
        str(_halving_recipe(tmp_path / "b", callbacks=["tests.models.KillAtStep"])),
        "--checkpoint_every_n_steps",
        "4",
        env={"GRADSIGN_TEST_KILL_AT_STEP": "5"},  # inside rung 2 (steps 3 -> 6), after the save at step 4
    )
    assert killed.returncode != 0 and "killed at step 5" in killed.stderr
    resumed = fit(
        "--config",
        str(_halving_recipe(tmp_path / "b", callbacks=["tests.models.KillAtStep"])),
        "--checkpoint_every_n_steps",
        "4",
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = json.loads((tmp_path / "b" / "run" / "report.json").read_text())
    assert again["halving"]["survivors"] == report["halving"]["survivors"]
    assert [r["signal"] for r in again["halving"]["rungs"]] == [r["signal"] for r in report["halving"]["rungs"]]
    by_name = {c["name"]: c for c in again["candidates"]}
    assert by_name[survivor]["test_acc"] == rows[survivor]["test_acc"]


def test_one_trained_candidate_leaves_out_the_agreement_section_and_states_run_time(tmp_path):
    result = fit("--config", str(recipe(tmp_path)), "--triage.top_k", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    text = (run / "report.md").read_text()
    assert "Did the prediction hold?" not in text and not (run / "predicted_vs_achieved.png").exists()
    assert "1 ranked candidate(s) trained: rank agreement needs 3 or more" in text
    seconds = json.loads((run / "report.json").read_text())["seconds"]
    assert seconds > 0 and f"({seconds:.0f} s)" in text.splitlines()[2]
