"""A slice of the peer-conformance benchmark (benchmarks/nb201_conformance.py): NASLib's published NB-201 values."""

from __future__ import annotations

import csv

import pytest
import torch

from gradsign_pl import score
from gradsign_pl.data.batches import load_batch
from gradsign_pl.data.paths import data_file
from gradsign_pl.scoring.agreement import rank_agreement
from gradsign_pl.spaces.nb201 import NB201Network


@pytest.fixture(scope="module")
def naslib_rows(shared_data):
    with open(data_file("nb201_zc_naslib_subset.csv", shared_data), newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["dataset"] == "cifar10"]


@pytest.mark.shared_data
def test_params_exact_and_flops_within_a_hundredth_of_a_percent(naslib_rows):
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    for row in naslib_rows[::60]:  # 13 archs spread over the file
        net = NB201Network(row["arch_str"])
        assert score("params", net, x, y).score == round(float(row["params"]) * 1e6), row["index"]
        flops = score("flops", net, x, y).score / 1e6
        assert abs(flops / float(row["flops"]) - 1) < 1e-4, row["index"]


@pytest.mark.shared_data
def test_synflow_and_naswot_rank_archs_like_the_peer(naslib_rows):
    rows = naslib_rows[:8]
    x, y = load_batch("cifar10", 64, seed=42)
    ours = {"synflow": [], "naswot": []}
    for row in rows:
        torch.manual_seed(42)
        net = NB201Network(row["arch_str"])
        for proxy in ours:
            ours[proxy].append(score(proxy, net, x, y).score)
    for proxy, column in (("synflow", "synflow"), ("naswot", "nwot")):
        rho, _, n = rank_agreement(ours[proxy], [float(r[column]) for r in rows])
        assert n == 8 and rho > 0.9, (proxy, rho)
