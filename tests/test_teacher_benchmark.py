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
