"""NB-201 arch strings and the benchmark network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradsign_pl.spaces.nb201 import OPS, NB201Network, all_archs, arch_from_ops, ops_of, parse_arch

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def test_parse_and_print_round_trip():
    assert arch_from_ops(ops_of(BEST)) == BEST
    assert parse_arch(BEST)[2] == (("skip_connect", 0), ("nor_conv_3x3", 1), ("skip_connect", 2))


def test_all_archs_are_distinct_and_valid():
    archs = all_archs()
    assert len(archs) == len(set(archs)) == 5**6
    assert archs[0] == arch_from_ops(["none"] * 6) and BEST in archs
    assert all(len(ops_of(a)) == 6 for a in archs[:50])


@pytest.mark.parametrize(
    "arch, message",
    [
        ("|nor_conv_3x3~0|+|none~0|none~1|", "3 '\\+'-separated node groups"),
        ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown NB-201 operation 'conv'"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 of an NB-201 arch needs 2 incoming edges"),
        ("|none~0|+|none~1|none~0|+|none~0|none~1|none~2|", "must come from node 0"),
    ],
)
def test_bad_arch_strings_are_named(arch, message):
    with pytest.raises(ValueError, match=message):
        parse_arch(arch)


def test_bad_ops():
    with pytest.raises(ValueError, match="has 6 edges"):
        arch_from_ops(["none"] * 5)
    with pytest.raises(TypeError, match="must be a string"):
        parse_arch(3)


# Parameter counts (millions) published by NAS-Bench-Suite-Zero (NASLib) for these CIFAR-10 archs.
NASLIB_PARAMS = {
    "|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|avg_pool_3x3~0|nor_conv_3x3~1|avg_pool_3x3~2|": 0.830426,
    "|nor_conv_3x3~0|+|avg_pool_3x3~0|nor_conv_3x3~1|+|nor_conv_1x1~0|nor_conv_3x3~1|none~2|": 0.830426,
}


@pytest.mark.parametrize("arch", list(NASLIB_PARAMS))
def test_parameter_count_matches_the_benchmark(arch):
    params = sum(p.numel() for p in NB201Network(arch).parameters())
    assert params / 1e6 == pytest.approx(NASLIB_PARAMS[arch], abs=5e-7)


@pytest.mark.parametrize("classes", [10, 100, 120])
def test_forward_shapes(classes):
    net = NB201Network(BEST, num_classes=classes)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, classes)
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, classes)


def test_ops_are_the_five_benchmark_operations():
    assert OPS == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


# ------------------------------------------------------------------------------------- benchmark table

from gradsign_pl.spaces.nb201 import load_table  # noqa: E402

HEADER = "index,arch_str,cifar10_test,cifar100_test,imagenet16_test"


def write(tmp_path, text):
    f = tmp_path / "table.csv"
    f.write_text(text)
    return f


def test_user_table_is_read(tmp_path):
    f = write(tmp_path, f"{HEADER}\n0,{BEST},94.37,73.5,\n1,{arch_from_ops(['none'] * 6)},10,1,0.83\n")
    table = load_table(f)
    assert len(table) == 2 and table.index_of(BEST) == 0
    assert table.column("cifar10_test").tolist() == [94.37, 10.0]
    assert np.isnan(table.column("imagenet16_test")[0])
    with pytest.raises(KeyError, match=r"no column 'flops'.*available: cifar10_test"):
        table.column("flops")
    with pytest.raises(KeyError, match="is not in"):
        table.index_of(arch_from_ops(["skip_connect"] * 6))


@pytest.mark.parametrize(
    "text, message",
    [
        ("index,arch_str,cifar10_test\n", r"missing column\(s\) \['cifar100_test', 'imagenet16_test'\]"),
        (f"{HEADER}\n", "no rows"),
        (f"{HEADER}\n1,{BEST},1,2,3\n", "line 2: index '1', expected 0"),
        (f"{HEADER}\n0,|bad~0|,1,2,3\n", "line 2: an NB-201 arch string has 3"),
        (f"{HEADER}\n0,{BEST},high,2,3\n", "line 2: could not convert"),
    ],
)
def test_malformed_tables_are_named(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_table(write(tmp_path, text))


def test_missing_table(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nb201_accuracies.csv is not in the data directory"):
        load_table(tmp_path)


def test_real_table_matches_the_published_summary(shared_data):
    table = load_table()
    assert len(table) == 15625 and set(table.archs) == set(all_archs())
    for column, best, index in [
        ("cifar10_test", 94.373, 6111),
        ("cifar100_test", 73.513, 9930),
        ("imagenet16_test", 47.311, 857),
    ]:
        acc = table.column(column)
        assert int(np.nanargmax(acc)) == index and acc[index] == pytest.approx(best, abs=1e-3)
