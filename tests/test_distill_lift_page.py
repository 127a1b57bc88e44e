"""The lift study's bookkeeping (benchmarks/zen_distill_lift.py): which B3 teacher run a row distilled from, the
page's rows, lifts and targets, and the errors for a teacher run that does not exist."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "zen_distill_lift.py"
spec = importlib.util.spec_from_file_location("zen_distill_lift", PATH)
assert spec is not None and spec.loader is not None
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

PROBES = [{"side": 64, "steps": 10, "cpu_s_per_step": 1.5, "val_acc": 0.2}]


def _teacher_run(results: Path, epochs: int, cpu_hours: float, test_acc: float | None, mtime: float) -> str:
    tag = f"r64_e{epochs}_n45000_b64"
    curve = [
        {"side": 64, "epoch": e, "val_acc": 0.1 * e, "cpu_seconds": 3600 * cpu_hours * e / epochs, "weights": f"w{e}"}
        for e in range(1, epochs + 1)
    ]
    path = results / f"curve_{tag}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in curve))
    os.utime(path, (mtime, mtime))
    if test_acc is not None:
        summary = {
            "tag": tag,
            "command": f"python benchmarks/teacher_b3_cifar10.py --epochs {epochs}",
            "side": 64,
            "train_size": 45000,
            "batch_size": 64,
            "epochs": epochs,
            "test_acc": test_acc,
            "weights": f"{tag}.pth",
            "curve": curve,
            "probes": PROBES,
        }
        (results / f"summary_{tag}.json").write_text(json.dumps(summary))
    return tag


def _record(condition: str, seed: int, acc: float, teacher_run: str | None = None, teacher_acc=None, command="c1"):
    return {
        "condition": condition,
        "seed": seed,
        "status": "trained",
        "teacher": None if condition == "none" else "timm:efficientnet_b3",
        "teacher_resolution": None if condition == "none" else 64,
        "teacher_acc": teacher_acc,
        "test_acc": acc,
        "seconds": 100.0,
        "teacher_run": teacher_run,
        "command": command,
    }


def test_teacher_runs_oldest_first_and_a_run_in_training_has_only_its_curve(tmp_path):
    e3 = _teacher_run(tmp_path, 3, 0.95, 0.4185, mtime=1_000)
    e6 = _teacher_run(tmp_path, 6, 1.9, None, mtime=2_000)
    runs = bench.b3_teachers(tmp_path)
    assert list(runs) == [e3, e6]
    assert runs[e3]["test_acc"] == 0.4185 and runs[e3]["weights"] == f"{e3}.pth"
    assert runs[e6]["test_acc"] is None and runs[e6]["weights"] is None
    assert [r["epoch"] for r in runs[e6]["curve"]] == [1, 2, 3, 4, 5, 6]


def test_page_keeps_each_teacher_run_its_own_row_and_extrapolates_only_when_saying_so(tmp_path):
    results = tmp_path / "teacher"
    results.mkdir()
    e3 = _teacher_run(results, 3, 1.0, 0.40, mtime=1_000)
    e6 = _teacher_run(results, 6, 2.0, 0.50, mtime=2_000)
    teachers = bench.b3_teachers(results)
    records = [
        _record("none", 0, 0.43),
        _record("none", 1, 0.45),
        _record("b3", 0, 0.40, e3, 0.40),  # superseded by the next record of the same row and seed
        _record("b3", 0, 0.44, e3, 0.40, command="c2"),
        _record("b3", 1, 0.46, e3, 0.40, command="c2"),
        _record("b3", 0, 0.46, e6, 0.50, command="c3"),
        _record("b3", 1, 0.47, e6, 0.50, command="c3"),
    ]
    bench.write_page(records, tmp_path / "out", teachers)
    page = (tmp_path / "out" / "zen_distill.md").read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in page.splitlines() if line.startswith("| ")}
    assert "+1.00, +1.00 | +1.00" in rows["b3 (e3)"]  # 44 - 43, 46 - 45
    assert "+3.00, +2.00 | +2.50" in rows["b3 (e6)"]
    assert "`c1`; `c2`; `c3`" in page  # the winning records' commands; none lost, none repeated
    assert "best B3 (e6) is **+6.00 points** -- missed." in page  # 50 vs 44 (mean of 43, 45)
    assert "best `b3 (e6)` **+2.50** -- met." in page
    # 40% at 1 h, 50% at 2 h: 10 points per ln 2, so 59% needs 2 * exp(9 ln2 / 10) hours
    need = 2 * np.exp(9 * np.log(2) / 10)
    assert f"puts 59.0% at about {need:.1f} CPU hours" in page
    assert "an extrapolation from two runs, not a measurement" in page
    assert (tmp_path / "out" / "zen_distill_lift.png").is_file()


def test_unknown_teacher_run_is_refused_naming_the_recorded_runs(tmp_path, capsys):
    e3 = _teacher_run(tmp_path, 3, 0.95, 0.4185, mtime=1_000)
    with pytest.raises(SystemExit) as err:
        bench.main(["--structure", "x", "--teacher-results", str(tmp_path), "--b3-run", "r64_e9", "--page-only"])
    assert err.value.code == 2
    message = capsys.readouterr().err
    assert "--b3-run 'r64_e9': no such run" in message and e3 in message
