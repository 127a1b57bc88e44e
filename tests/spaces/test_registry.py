"""The search-space registry and the registered NB-201 space."""

from __future__ import annotations

import pytest

from gradsign_pl.spaces import create_space, list_spaces
from gradsign_pl.spaces._registry import permutation_sample
from gradsign_pl.spaces.nb201 import NB201Network


def test_nb201_is_registered_and_listed():
    assert "nb201" in list_spaces()
    assert list_spaces("nb*") == ["nb201"] and list_spaces("zzz*") == []
    space = create_space("nb201")
    assert len(space) == 15625 and space.datasets == ("cifar10", "cifar100", "imagenet16")


def test_unknown_space_suggests_names():
    with pytest.raises(KeyError, match="did you mean 'nb201'"):
        create_space("nb_201")


def test_sample_nests_and_is_seeded():
    a = permutation_sample(15625, 50, 42)
    assert a == permutation_sample(15625, 50, 42)
    assert permutation_sample(15625, 200, 42)[:50] == a
    assert len(set(a)) == 50 and all(0 <= i < 15625 for i in a)
    assert a != permutation_sample(15625, 50, 43)
    with pytest.raises(ValueError, match="between 1 and 15625"):
        permutation_sample(15625, 0, 42)


def test_build_by_string_and_dataset_head():
    space = create_space("nb201")
    arch = "|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|avg_pool_3x3~0|nor_conv_3x3~1|avg_pool_3x3~2|"
    net = space.build(arch, "cifar100")
    assert isinstance(net, NB201Network) and net.classifier.out_features == 100
    assert space.build(arch, "imagenet16").classifier.out_features == 120
    with pytest.raises(ValueError, match="did you mean 'cifar10'"):
        space.build(arch, "cifar-10")


def test_missing_table_is_a_clear_error(tmp_path):
    space = create_space("nb201", table=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"nb201_accuracies.csv"):
        space.arch(0)


@pytest.mark.shared_data
def test_index_order_and_ground_truth(shared_data):
    space = create_space("nb201")
    assert (
        space.arch(6111)
        == "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
    )
    assert space.accuracy("cifar10")[6111] == pytest.approx(94.373333)
    assert space.accuracy("cifar100").argmax() == 9930 and space.accuracy("imagenet16").argmax() == 857
    assert space.build(6111, "cifar10").arch == space.arch(6111)
    with pytest.raises(IndexError, match=r"\[0, 15625\)"):
        space.arch(15625)
