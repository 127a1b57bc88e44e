"""SynFlow, jacov, NASWOT and Zen: agreement with plain references, isolation, determinism, bad input."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradsign_pl.proxies import get_proxy
from gradsign_pl.proxies.jacov import jacov
from gradsign_pl.proxies.naswot import naswot
from gradsign_pl.proxies.synflow import synflow
from gradsign_pl.proxies.zen import zen
from tests import models

PROXIES = {"synflow": synflow, "jacov": jacov, "naswot": naswot, "zen": zen}


def batch(n=6, shape=(3, 8, 8), classes=10, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, *shape), generator=g), torch.randint(0, classes, (n,), generator=g)


def mlp_batch(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, 12), generator=g), torch.randint(0, 5, (n,), generator=g)


def seeded_model(factory, seed=3):
    torch.manual_seed(seed)
    return factory()


# ---------------------------------------------------------------- synflow


def reference_synflow(model: nn.Sequential, input_shape) -> float:
    """Rebuild the network without BatchNorm, set |theta| by hand, one autograd call per weight."""
    layers = [copy.deepcopy(m) for m in model if not isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    net = nn.Sequential(*layers).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(p.abs())
    total = 0.0
    for layer in net:
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            r = net(torch.ones((1, *input_shape), dtype=torch.float64)).sum()
            (g,) = torch.autograd.grad(r, layer.weight)
            total += float((layer.weight.detach() * g).abs().sum())
    return total


@pytest.mark.parametrize(
    "factory,shape", [(models.mlp, (12,)), (models.bn_cnn, (3, 8, 8)), (models.bn_head_cnn, (3, 8, 8))]
)
def test_synflow_matches_reference_without_batchnorm(factory, shape):
    model = seeded_model(factory)
    x = torch.randn((4, *shape))
    y = torch.zeros(4, dtype=torch.long)
    result = synflow(model, x, y)
    assert result.score == pytest.approx(reference_synflow(model, shape), rel=1e-10)
    assert sum(result.per_layer.values()) == pytest.approx(result.score, rel=1e-12)
    assert result.options["batchnorm"] == "bypassed"


def test_synflow_ignores_signs_and_input_values():
    model = seeded_model(models.bn_cnn)
    flipped = copy.deepcopy(model)
    with torch.no_grad():
        for p in flipped.parameters():
            p.neg_()
    x, y = batch()
    assert synflow(model, x, y).score == synflow(flipped, x * 7 + 1, y).score


def test_synflow_is_computed_in_float64_beyond_float32_range():
    layers = [nn.Linear(64, 64) for _ in range(30)]
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    result = synflow(model, torch.randn(2, 64), torch.zeros(2, dtype=torch.long))
    assert result.is_finite and result.score > 1e50


# ---------------------------------------------------------------- jacov


def reference_jacov(model: nn.Module, x: torch.Tensor, k: float = 1e-5) -> float:
    """Per-sample autograd loop, numpy corrcoef and (general) eig as in the authors' code."""
    net = copy.deepcopy(model).train()
    rows = []
    for i in range(x.shape[0]):
        xi = x[i : i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(net(xi).sum(), xi)
        rows.append(g.flatten().double().numpy())
    v, _ = np.linalg.eig(np.corrcoef(np.stack(rows)))
    v = v.real
    return float(-np.sum(np.log(v + k) + 1.0 / (v + k)))


def tanh_cnn():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(4, 4, 3, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(36, 5),
    )


@pytest.mark.parametrize("factory,make", [(models.mlp, mlp_batch), (tanh_cnn, batch)])
def test_jacov_matches_per_sample_reference(factory, make):
    model = seeded_model(factory).double()
    x, y = make(n=5)
    x = x.double()
    y = y % 5
    assert jacov(model, x, y).score == pytest.approx(reference_jacov(model, x), rel=1e-8)


def test_jacov_with_batchnorm_uses_the_batch_jacobian_in_train_mode():
    model = seeded_model(models.bn_cnn).double()
    x, y = batch(n=5)
    x = x.double()
    net = copy.deepcopy(model).train()
    jac = torch.autograd.functional.jacobian(lambda inp: net(inp).sum(), x)
    corr = np.corrcoef(jac.reshape(5, -1).numpy())
    v = np.linalg.eigvalsh(corr)
    expected = -np.sum(np.log(v + 1e-5) + 1 / (v + 1e-5))
    assert jacov(model, x, y).score == pytest.approx(expected, rel=1e-8)


def test_jacov_constant_jacobian_is_nan_with_reason():
    model = nn.Sequential(nn.Linear(12, 5))
    with torch.no_grad():
        model[0].weight.zero_()
    x, y = mlp_batch()
    result = jacov(model, x, y)
    assert math.isnan(result.score) and "not finite" in result.reason


# ---------------------------------------------------------------- naswot


def reference_naswot(model: nn.Module, x: torch.Tensor) -> float:
    """Codes from ReLU *outputs* (forward hooks), K built entry by entry in Python, numpy slogdet."""
    net = copy.deepcopy(model).train()
    per_layer = []
    hooks = [
        m.register_forward_hook(lambda m, a, out: per_layer.append((out.reshape(out.shape[0], -1) > 0).tolist()))
        for m in net.modules()
        if isinstance(m, nn.ReLU)
    ]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    n = x.shape[0]
    codes = [[bit for layer in per_layer for bit in layer[i]] for i in range(n)]
    K = [[sum(a == b for a, b in zip(codes[i], codes[j])) for j in range(n)] for i in range(n)]
    return float(np.linalg.slogdet(np.array(K, dtype=np.float64))[1])


def inplace_relu_cnn():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(144, 5),
        nn.ReLU(inplace=True),
    )


@pytest.mark.parametrize(
    "factory,make",
    [(models.mlp, mlp_batch), (models.bn_cnn, batch), (models.bn_head_cnn, batch), (inplace_relu_cnn, batch)],
)
def test_naswot_matches_python_loop_reference(factory, make):
    model = seeded_model(factory)
    x, y = make(n=6)
    y = y % 5
    result = naswot(model, x, y)
    assert result.score == pytest.approx(reference_naswot(model, x), rel=1e-10)
    assert result.options["n_units"] > 0


def test_naswot_without_relu_is_nan_with_reason():
    model = nn.Sequential(nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 5))
    x, y = mlp_batch()
    result = naswot(model, x, y)
    assert math.isnan(result.score) and "ReLU" in result.reason


def test_naswot_identical_samples_give_singular_kernel():
    model = seeded_model(models.mlp)
    x, y = mlp_batch()
    x[1] = x[0]
    result = naswot(model, x, y)
    assert math.isnan(result.score) and "identical codes" in result.reason


# ---------------------------------------------------------------- zen


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.b1 = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False)
        self.b2 = nn.BatchNorm2d(6)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        h = self.act(self.b1(self.c1(x)))
        h = self.act(self.b2(self.c2(h)))
        return self.fc(self.pool(h).flatten(1))


def reference_zen(model: TinyNet, shape, gamma=1e-2, gaussian_init=True) -> float:
    """Explicit functional forward of TinyNet with batch-statistics BN; the RNG draws in ZenNAS's order; the BN term
    from the running variance after both forwards (momentum 0.1 from the model's running_var), as ZenNAS's code."""
    net = copy.deepcopy(model)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        if gaussian_init:
            with torch.no_grad():
                for conv in (net.c1, net.c2, net.fc):  # module order, as in the proxy
                    conv.weight.normal_()
                    if conv.bias is not None:
                        conv.bias.zero_()
                for bn in (net.b1, net.b2):
                    bn.weight.fill_(1.0)
                    bn.bias.zero_()
        x = torch.randn(shape)
        eps = torch.randn(shape)

    running = {bn: bn.running_var.double().clone() for bn in (net.b1, net.b2)}

    def pre_gap(inp):
        h = inp
        for conv, bn in ((net.c1, net.b1), (net.c2, net.b2)):
            h = conv(h)
            running[bn] = 0.9 * running[bn] + 0.1 * h.double().var(dim=(0, 2, 3), unbiased=True)
            mu = h.mean(dim=(0, 2, 3), keepdim=True)
            var = h.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
            h = (h - mu) / torch.sqrt(var + bn.eps) * bn.weight[:, None, None] + bn.bias[:, None, None]
            h = torch.relu(h)
        return h

    with torch.no_grad():
        f1 = pre_gap(x)
        f2 = pre_gap(x + gamma * eps)
    delta = (f1 - f2).abs().sum(dim=(1, 2, 3)).mean()
    return math.log(delta) + sum(0.5 * math.log(v.mean().item()) for v in running.values())


@pytest.mark.parametrize("gaussian_init", [True, False])
def test_zen_matches_explicit_computation(gaussian_init):
    model = seeded_model(TinyNet)
    x, y = batch(n=4)
    result = zen(model, x, y, gaussian_init=gaussian_init)
    assert result.score == pytest.approx(reference_zen(model, x.shape, gaussian_init=gaussian_init), rel=1e-4)
    assert result.options["features"] == "pool_input:pool"


def test_zen_feature_map_choices():
    class WithForwardFeatures(TinyNet):
        def forward_features(self, x):
            return F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))))

    x, y = batch(n=4)
    base = zen(seeded_model(TinyNet), x, y)
    ff = zen(seeded_model(WithForwardFeatures), x, y)
    custom = zen(seeded_model(TinyNet), x, y, features=lambda m, inp: F.relu(m.b2(m.c2(F.relu(m.b1(m.c1(inp)))))))
    assert ff.options["features"] == "forward_features" and custom.options["features"] == "custom"
    assert ff.score == pytest.approx(base.score, rel=1e-6) and custom.score == pytest.approx(base.score, rel=1e-6)
    # no pooling module: the input of the last Linear
    head = zen(seeded_model(models.mlp), *mlp_batch())
    assert head.options["features"] == "linear_input:4" and head.is_finite


def test_zen_ignores_batchnorm_after_the_feature_map():
    model = seeded_model(models.bn_head_cnn)  # ... -> pool -> flatten -> BatchNorm1d -> Linear
    without = copy.deepcopy(model)
    without[5] = nn.Identity()
    x, y = batch(n=4)
    assert zen(model, x, y).score == zen(without, x, y).score


def test_zen_repeat_averages_draws():
    model = seeded_model(TinyNet)
    x, y = batch(n=4)
    one, three = zen(model, x, y, repeat=1), zen(model, x, y, repeat=3)
    assert three.is_finite and three.score != one.score
    with pytest.raises(ValueError, match="repeat"):
        zen(model, x, y, repeat=0)


# ---------------------------------------------------------------- common contract


@pytest.mark.parametrize("name", list(PROXIES))
def test_registry_lookup(name):
    info = get_proxy(name)
    assert info.fn is PROXIES[name] and info.doc


def snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [p.grad for p in model.parameters()],
        torch.get_rng_state(),
    )


@pytest.mark.parametrize("name", list(PROXIES))
@pytest.mark.parametrize("factory", [models.bn_cnn, models.bn_head_cnn, TinyNet])
@pytest.mark.parametrize("train_mode", [True, False])
def test_model_and_rng_untouched(name, factory, train_mode):
    model = seeded_model(factory).train(train_mode)
    model[0].weight.requires_grad_(False) if isinstance(model, nn.Sequential) else model.c1.bias.requires_grad_(False)
    x, y = batch(n=4)
    state, modes, flags, grads, rng = snapshot(model)
    result = PROXIES[name](model, x, y)
    assert result.is_finite, result.reason
    after_state, after_modes, after_flags, after_grads, after_rng = snapshot(model)
    assert state.keys() == after_state.keys()
    for k in state:
        assert torch.equal(state[k], after_state[k]), k
    assert modes == after_modes and flags == after_flags
    assert all(g is None for g in after_grads) and grads == after_grads
    assert torch.equal(rng, after_rng)


@pytest.mark.parametrize("name", list(PROXIES))
def test_deterministic(name):
    model = seeded_model(models.bn_cnn)
    x, y = batch()
    first, second = PROXIES[name](model, x, y), PROXIES[name](model, x, y)
    assert first.score == second.score
    assert first.proxy == name and first.n_samples == 6


@pytest.mark.parametrize("name", list(PROXIES))
def test_loss_fn_is_accepted_and_ignored(name):
    model = seeded_model(models.bn_cnn)
    x, y = batch()
    assert PROXIES[name](model, x, y, loss_fn=F.nll_loss).score == PROXIES[name](model, x, y).score


@pytest.mark.parametrize("name", ["naswot", "jacov"])
def test_one_sample_is_rejected(name):
    x, y = batch(n=1)
    with pytest.raises(ValueError, match="at least 2 samples"):
        PROXIES[name](seeded_model(models.bn_cnn), x, y)


@pytest.mark.parametrize("name", list(PROXIES))
def test_result_json_round_trip(name):
    x, y = batch()
    result = PROXIES[name](seeded_model(models.bn_cnn), x, y)
    data = result.to_dict()
    assert data["proxy"] == name and data["score"] == result.score
    result.to_json()
