"""The triage page's rows for the newer proxies (benchmarks/triage_cifar10.py renders them from triage_newer.json;
benchmarks/triage_newer_proxies.py rewrites them between the markers): the scopes, and the verdict against #params."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # triage_cifar10 imports its siblings
spec = importlib.util.spec_from_file_location("triage_cifar10", BENCHMARKS / "triage_cifar10.py")
assert spec is not None and spec.loader is not None
triage = importlib.util.module_from_spec(spec)
spec.loader.exec_module(triage)


def report(newer_tau: float) -> dict:
    row = {"rho_cv": 0.5, "n_policies": 21}
    return {
        "command": "python benchmarks/triage_newer_proxies.py",
        "cross_validation": {
            "params only (baseline)": {"tau_cv": 0.534, "rho_cv": 0.74, "chosen_all": "params", "n_policies": 1},
            "the newer proxies alone": {**row, "tau_cv": 0.271, "chosen_all": "az_complexity init=as_built"},
            "the newer proxies, with or without params/FLOPs": {**row, "tau_cv": newer_tau, "chosen_all": "zico"},
        },
    }


def test_the_block_has_the_newer_scopes_only_and_says_none_beats_params():
    block = triage.newer_proxies_block(report(0.523))
    lines = block.splitlines()
    assert lines[0] == triage.NEWER_BEGIN and lines[-1] == triage.NEWER_END
    rows = [line for line in lines if line.startswith("| the newer")]
    assert rows == [
        "| the newer proxies alone | 21 | +0.271 | +0.500 | `az_complexity init=as_built` |",
        "| the newer proxies, with or without params/FLOPs | 21 | +0.523 | +0.500 | `zico` |",
    ]
    assert "params only" not in block
    assert "None of them beats #params on real models" in block and "CV tau +0.523, against +0.534" in block


def test_the_block_says_so_when_one_beats_params():
    block = triage.newer_proxies_block(report(0.600))
    assert "One of them beats #params on real models: the newer proxies, with or without params/FLOPs" in block
    assert "None of them" not in block
