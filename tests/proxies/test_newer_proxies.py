"""ZiCo, MeCo and the AZ-NAS proxies: each against a plain reference written the way its authors' code computes it,
plus the properties every proxy keeps (model and RNG untouched, deterministic, clear errors)."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from gradsign_pl import get_proxy, list_proxies, score
from gradsign_pl.proxies import set_level_proxies
from gradsign_pl.proxies.az_nas import COMPONENTS, DEAD_BLOCK_SCORE, feature_blocks
from gradsign_pl.proxies.ensemble import rank_ensemble
from gradsign_pl.spaces.nb201 import NB201Network
from tests import models

ARCH = "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"
NEW = ("zico", "meco", "az_expressivity", "az_progressivity", "az_trainability", "az_complexity")


def small_nb201(arch: str = ARCH, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return NB201Network(arch, num_classes=10, channels=4, cells_per_stage=1).double()


def batch(n: int = 8, px: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, px, px, generator=g, dtype=torch.float64), torch.randint(0, 10, (n,), generator=g)


def weights_of(net: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(f"{n}.weight", m.weight) for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def zico_reference(gradients: dict[str, np.ndarray]) -> float:
    """The authors' ``caculate_zico``: per layer std (ddof 0) of the signed gradient, mean of |g|, log of the sum."""
    total = 0.0
    for g in gradients.values():
        sd, mu = g.std(axis=0), np.abs(g).mean(axis=0)
        keep = sd != 0
        s = (mu[keep] / sd[keep]).sum()
        if s != 0:
            total += np.log(s)
    return float(total)


# ------------------------------------------------------------------------------------------------------ ZiCo


def test_zico_per_sample_matches_a_plain_loop():
    model, (x, y) = small_nb201(), batch()
    rows: dict[str, list[np.ndarray]] = {}
    for i in range(len(x)):  # each sample alone in a train-mode copy: BatchNorm uses its own statistics
        net = copy.deepcopy(model).train()
        loss = F.cross_entropy(net(x[i : i + 1]), y[i : i + 1])
        named = weights_of(net)
        grads = torch.autograd.grad(loss, [w for _, w in named], allow_unused=True, materialize_grads=True)
        for (name, _), g in zip(named, grads):
            rows.setdefault(name, []).append(g.flatten().numpy())
    expected = zico_reference({k: np.stack(v) for k, v in rows.items()})
    result = get_proxy("zico").fn(model, x, y)
    assert result.score == pytest.approx(expected, rel=1e-9)
    assert sum(result.per_layer.values()) == pytest.approx(result.score, rel=1e-12)
    assert result.options["engine"] == "vmap" and result.options["groups"] is None


def test_zico_groups_reproduce_the_authors_two_batches():
    model, (x, y) = small_nb201(), batch(n=8)
    net = copy.deepcopy(model).train()
    rows: dict[str, list[np.ndarray]] = {}
    for xs, ys in ((x[:4], y[:4]), (x[4:], y[4:])):  # their loop: zero_grad, forward, loss, backward, read .grad
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(xs), ys).backward()
        for name, w in weights_of(net):
            if w.grad is not None:
                rows.setdefault(name, []).append(w.grad.flatten().numpy().copy())
    expected = zico_reference({k: np.stack(v) for k, v in rows.items()})
    assert score("zico", model, x, y, groups=2).score == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("groups", "message"),
    [(1, "groups must be None"), (True, "groups must be None"), (2.0, "groups must be None"), (5, "at least 10")],
)
def test_zico_bad_groups(groups, message):
    model, (x, y) = small_nb201(), batch(n=8)
    with pytest.raises(ValueError, match=message):
        score("zico", model, x, y, groups=groups)


def test_zico_of_identical_samples_drops_every_weight():
    model, (x, y) = small_nb201(), batch(n=4)
    x, y = x[:1].repeat(4, 1, 1, 1), y[:1].repeat(4)
    assert score("zico", model, x, y).score == 0.0  # every std is 0: no layer has a term


# ------------------------------------------------------------------------------------------------------ MeCo


def meco_reference(model: nn.Module, x: torch.Tensor) -> float:
    """The authors' ``get_score``: hook every module, first sample, corrcoef, nan -> 0, real part of eig, sum."""
    net = copy.deepcopy(model).train()
    values: list[float] = []

    def hook(_m, _a, out):
        if out.ndim >= 3:
            f = out[0].detach().reshape(out.shape[1], -1).numpy()
            with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)  # one position: undefined, as the authors see it
                corr = np.nan_to_num(np.corrcoef(f), nan=0.0, posinf=0.0, neginf=0.0)
            values.append(float(np.linalg.eigvals(corr).real.min()))

    for m in net.modules():
        m.register_forward_hook(hook)
    with torch.no_grad():
        net(x[:1])
    return float(np.nansum(values))


def test_meco_matches_the_authors_hooks():
    model, (x, y) = small_nb201(), batch()
    result = score("meco", model, x, y)
    assert result.score == pytest.approx(meco_reference(model, x), rel=1e-8, abs=1e-9)
    assert result.score == score("meco", model, x[:1], y[:1]).score  # one sample is all it reads


def test_meco_reasons():
    torch.manual_seed(0)
    mlp = models.mlp()
    r = score("meco", mlp, torch.randn(3, 12), torch.randint(0, 5, (3,)))
    assert r.score != r.score and "channel" in r.reason
    net, x, y = models.bn_head_cnn(), torch.randn(3, 3, 8, 8), torch.randint(0, 10, (3,))
    r = score("meco", net, x, y, bn_policy="per_sample")
    assert r.score != r.score and "one value per channel" in r.reason and "bn_policy='auto'" in r.reason
    auto, batch = score("meco", net, x, y), score("meco", net, x, y, bn_policy="batch")
    assert auto.options["bn_used"] == "batch" and "one value per channel" in auto.options["bn_reason"]
    assert auto.score == batch.score and np.isfinite(auto.score)
    with pytest.raises(ValueError, match="bn_policy must be"):
        score("meco", net, x, y, bn_policy="train")


# ---------------------------------------------------------------------------------------------------- AZ-NAS


def test_feature_blocks_of_nb201_timm_and_a_plain_sequential():
    assert feature_blocks(small_nb201()) == [f"cells.{i}" for i in range(5)]  # 3 cells + 2 reductions
    timm = pytest.importorskip("timm")
    resnet = timm.create_model("resnet18", pretrained=False, num_classes=10)
    assert feature_blocks(resnet) == [f"layer{s}.{i}" for s in range(1, 5) for i in range(2)]
    effnet = timm.create_model("efficientnet_b0", pretrained=False, num_classes=10)
    blocks = feature_blocks(effnet)
    assert blocks[0] == "blocks.0.0" and len(blocks) == 16
    assert feature_blocks(models.bn_cnn()) == []  # only primitive layers: no blocks
    regnet = timm.create_model("regnetx_002", pretrained=False, num_classes=10)  # stages hold b1, b2, ...: no chain
    assert feature_blocks(regnet)[:3] == ["stem", "s1", "s2"]


def az_reference(model: nn.Module, x: torch.Tensor, seed: int = 0) -> tuple[float, float, float]:
    """The authors' NB-201 recipe: stem output and every cell output, entropies, min step, probed Jacobians."""
    net = copy.deepcopy(model).train()
    feats = [net.stem(x)]
    for cell in net.cells:
        feats.append(cell(feats[-1]))

    def rows(t):
        return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])

    def entropy(t):
        a = rows(t.detach()).numpy()
        a = a - a.mean(0)
        s = np.linalg.eigvalsh(a.T @ a / a.shape[0])
        p = s / s.sum()
        return float(-(p * np.log(p + 1e-8)).sum())

    e = [entropy(f) for f in feats]
    torch.manual_seed(seed)
    pairs = []
    for i in range(len(feats) - 1, 0, -1):
        probe = torch.randint(0, 2, feats[i].shape).double() * 2 - 1  # Rademacher, drawn as ours are
        (g,) = torch.autograd.grad(feats[i], feats[i - 1], probe, retain_graph=True)
        if g.shape[-1] != probe.shape[-1]:
            g = F.pixel_unshuffle(g, g.shape[-1] // probe.shape[-1])
        m = rows(g).T @ rows(probe) / rows(g).shape[0]
        sigma = float(torch.linalg.svdvals(m).max())
        pairs.append(2 - sigma - 1 / (sigma + 1e-6))
    return sum(e), min(b - a for a, b in zip(e, e[1:])), float(np.mean(pairs))


def test_az_components_match_the_authors_recipe():
    model, (x, y) = small_nb201(), batch()
    expressivity, progressivity, trainability = az_reference(model, x)
    assert score("az_expressivity", model, x, y).score == pytest.approx(expressivity, rel=1e-9)
    assert score("az_progressivity", model, x, y).score == pytest.approx(progressivity, rel=1e-9, abs=1e-12)
    assert score("az_trainability", model, x, y).score == pytest.approx(trainability, rel=1e-9)
    assert score("az_complexity", model, x, y).score == score("flops", model, x, y).score


def test_az_dead_cells_rank_last_but_stay_finite():
    dead = small_nb201("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    alive = small_nb201()
    x, y = batch()
    for name in ("az_expressivity", "az_progressivity", "az_trainability"):
        d, a = score(name, dead, x, y).score, score(name, alive, x, y).score
        assert np.isfinite(d) and d < a, name
    per_block = score("az_trainability", dead, x, y).per_layer
    assert per_block["cells.0"] == per_block["cells.2"] == DEAD_BLOCK_SCORE  # cells whose every edge is none


def test_az_nas_is_the_log_rank_of_its_four_proxies():
    x, y = batch()
    archs = [ARCH, ARCH.replace("none", "nor_conv_3x3"), ARCH.replace("nor_conv_3x3", "skip_connect")]
    nets = [small_nb201(a, seed=i) for i, a in enumerate(archs)]
    results = score("az_nas", nets, x, y)
    parts = {p: [score(p, n, x, y).score for n in nets] for p in COMPONENTS}
    np.testing.assert_allclose([r.score for r in results], rank_ensemble(parts, "log_rank"))
    assert all(r.proxy == "az_nas" and set(r.per_layer) == set(COMPONENTS) for r in results)
    with pytest.raises(TypeError, match="list of models"):
        score("az_nas", nets[0], x, y)
    with pytest.raises(ValueError, match="always combines"):
        score("az_nas", nets, x, y, proxies=["gradsign"])


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, pool: bool = False) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2, ceil_mode=True) if pool else nn.Identity()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(self.pool(x)))


def test_az_trainability_leaves_out_blocks_it_cannot_pair():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), _Block(4, 4), _Block(4, 8, pool=True), _Block(8, 8)).double()
    x, y = torch.randn(4, 3, 7, 7, dtype=torch.float64), torch.randint(0, 8, (4,))
    r = score("az_trainability", net, x, y)
    assert r.options["skipped_blocks"] == ["2"] and set(r.per_layer) == {"1", "3"}  # 7x7 -> 4x4 left out
    assert r.score == pytest.approx(sum(r.per_layer.values()) / 2)


def test_az_bad_blocks_name_the_fix():
    model, (x, y) = small_nb201(), batch()
    with pytest.raises(ValueError, match="not modules of NB201Network"):
        score("az_expressivity", model, x, y, blocks=["cells.99"])
    r = score("az_expressivity", models.bn_cnn(), x.float(), y)
    assert r.score != r.score and "blocks=" in r.reason


# ---------------------------------------------------------------------------------------------- properties


def test_registered_with_the_right_kind():
    assert set(NEW) | {"az_nas"} <= set(list_proxies())
    assert set_level_proxies() == ["az_nas", "ensemble"]
    assert get_proxy("zico").per_sample and not get_proxy("meco").per_sample


@pytest.mark.parametrize("name", NEW)
def test_model_rng_and_mode_untouched_and_deterministic(name):
    model, (x, y) = small_nb201(), batch()
    model.eval()
    before = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    first = score(name, model, x, y)
    assert torch.equal(torch.get_rng_state(), rng) and not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert score(name, model, x, y).score == first.score and np.isfinite(first.score)
    assert type(first).from_json(first.to_json()).score == first.score


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(4, 9))
def test_zico_is_invariant_to_the_sample_order(seed, n):
    model, (x, y) = small_nb201(seed=seed % 7), batch(n=n, seed=seed)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    a, b = score("zico", model, x, y).score, score("zico", model, x[perm], y[perm]).score
    assert a == pytest.approx(b, rel=1e-9)
