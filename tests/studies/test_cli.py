"""``gradsign-bench correlate`` end to end, in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROXIES = "[params,flops,synflow,naswot]"


def bench(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "gradsign_pl.cli.bench", "correlate", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        check=False,
    )


def test_bad_arguments_exit_non_zero_with_the_fix(tmp_path):
    result = bench("--dataset", "cifar-10", "--out", str(tmp_path / "a"), cwd=tmp_path)
    assert result.returncode == 2
    assert "no ground truth for dataset 'cifar-10' (did you mean 'cifar10'?)" in result.stderr
    result = bench("--proxies", "[synflw]", "--out", str(tmp_path / "b"), cwd=tmp_path)
    assert result.returncode == 2 and "unknown proxy 'synflw'; did you mean 'synflow'" in result.stderr
    result = bench("--n_archs", "-3", cwd=tmp_path)
    assert result.returncode == 2 and "between 1 and 15625" in result.stderr


@pytest.mark.shared_data
def test_correlate_on_real_data_writes_everything_and_resumes(tmp_path, shared_data):
    out = tmp_path / "run"
    args = (
        "--n_archs",
        "4",
        "--batch_size",
        "8",
        "--proxies",
        PROXIES,
        "--ensembles",
        "[params+naswot]",
        "--out",
        str(out),
        "--data_dir",
        str(shared_data),
    )
    first = bench(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "nb201 / CIFAR-10: 4 archs, batch 8, seed 42" in first.stdout
    assert {"scores.csv", "summary.json", "summary.md", "scores.jsonl", "meta.json", "scatter_naswot.png"} <= {
        p.name for p in out.iterdir()
    }
    lines = (out / "scores.jsonl").read_text().splitlines()
    assert len(lines) == 16
    second = bench(*args, cwd=tmp_path)
    assert second.returncode == 0 and (out / "scores.jsonl").read_text().splitlines() == lines  # nothing recomputed
    summary = json.loads((out / "summary.json").read_text())
    names = [c["name"] for c in summary["correlations"]]
    assert names == ["params", "flops", "synflow", "naswot", "ensemble:log_rank:params+naswot"]
    # the four archs are the first four of the seed-42 sample; a changed batch size is refused
    refused = bench(
        "--n_archs",
        "4",
        "--batch_size",
        "16",
        "--proxies",
        PROXIES,
        "--out",
        str(out),
        "--data_dir",
        str(shared_data),
        cwd=tmp_path,
    )
    assert refused.returncode == 2 and "batch_size: cached 8 vs now 16" in refused.stderr
