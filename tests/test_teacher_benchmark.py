"""The teacher benchmark's resolution rule (benchmarks/teacher_b3_cifar10.py): the cheapest side the probe cannot
tell from the best."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "teacher_b3_cifar10.py"
spec = importlib.util.spec_from_file_location("teacher_b3_cifar10", PATH)
assert spec is not None and spec.loader is not None
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


@pytest.mark.parametrize(
    ("accs", "val_size", "side"),
    [
        ({32: 0.185, 64: 0.233, 96: 0.240}, 1000, 64),  # the measured probe: 0.7 points < 1 SE (1.35 points)
        ({32: 0.185, 64: 0.233, 96: 0.240}, 100_000, 96),  # the same gap on a big validation set is real
        ({32: 0.50, 64: 0.40}, 1000, 32),
        ({32: 0.30, 64: 0.30}, 1000, 32),  # an exact tie goes to the smaller side
    ],
)
def test_smallest_side_within_one_standard_error_of_the_best(accs, val_size, side):
    assert bench.choose_side({s: {"val_acc": a} for s, a in accs.items()}, val_size) == side


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--train-size", "60000"], "CIFAR-10 has 49000 training images beside the 1000 held out"),
        (["--train-size", "10"], "less than one batch (--batch-size 64)"),
        (["--resolutions", "16"], "every side must be >= 32"),
        (["--epochs", "0"], "--epochs must be >= 1"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as err:
        bench.main([*argv, "--run", str(tmp_path)])
    assert err.value.code == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing probed, nothing written
