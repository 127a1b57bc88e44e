"""The proxy registry: register by decorator, list, look up, score by name."""

from __future__ import annotations

import pytest
import torch

import gradsign_pl
from gradsign_pl import get_proxy, list_proxies, register_proxy, score
from tests import models


def test_listing_and_filtering():
    names = list_proxies()
    assert names == sorted(names) and {"gradsign", "params"} <= set(names)
    assert "gradsign" in list_proxies("grad*") and all(n.startswith("grad") for n in list_proxies("grad*"))
    assert list_proxies("no_such_*") == []
    info = get_proxy("gradsign")
    assert info.per_sample and info.fn is gradsign_pl.gradsign and "GradSign" in info.doc


def test_unknown_name_suggests_the_closest():
    with pytest.raises(KeyError, match="unknown proxy 'gradsing'; did you mean 'gradsign'"):
        get_proxy("gradsing")


def test_a_name_registers_once():
    with pytest.raises(ValueError, match="already registered"):
        register_proxy("gradsign")(lambda *a, **k: None)


def test_score_by_name_equals_the_direct_call():
    torch.manual_seed(0)
    model = models.bn_cnn().double()
    x, y = torch.randn(5, 3, 8, 8, dtype=torch.float64), torch.randint(0, 10, (5,))
    by_name = score("gradsign", model, x, y, reduction="mean")
    direct = gradsign_pl.gradsign(model, x, y, reduction="mean")
    assert by_name.score == direct.score and by_name.options == direct.options
