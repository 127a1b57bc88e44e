"""grad_norm, snip, grasp and fisher against plain references written differently (float64, tiny models)."""

from __future__ import annotations

import copy
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from gradsign_pl.proxies._registry import get_proxy
from gradsign_pl.proxies.fisher import fisher
from gradsign_pl.proxies.grad_norm import grad_norm
from gradsign_pl.proxies.grasp import grasp
from gradsign_pl.proxies.snip import snip

PROXIES = {"grad_norm": grad_norm, "snip": snip, "grasp": grasp, "fisher": fisher}
TIGHT = {"rtol": 1e-10, "atol": 1e-12}


def cnn(inplace: bool = False, bn: bool = True) -> nn.Module:
    torch.manual_seed(1)
    layers = [nn.Conv2d(3, 4, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(inplace=inplace), nn.Conv2d(4, 5, 3, groups=1), nn.BatchNorm2d(5) if bn else nn.Identity()]
    layers += [nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)]
    return nn.Sequential(*layers).double()


def mlp() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.Softplus(), nn.Linear(5, 3)).double()


def cnn_batch(n: int = 6):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 3, 6, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def mlp_batch(n: int = 5):
    g = torch.Generator().manual_seed(4)
    return torch.randn(n, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def weight_names(model: nn.Module) -> list[str]:
    return [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


# ---------------------------------------------------------------- plain references


def ref_grads(model, x, y):
    """Per-layer weight gradients with .backward() on a train-mode copy, read off layer by layer."""
    net = copy.deepcopy(model).train()
    net.zero_grad()
    F.cross_entropy(net(x), y).backward()
    return {
        f"{n}.weight": (m.weight.detach(), m.weight.grad.detach())
        for n, m in net.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    }


def ref_grad_norm(model, x, y):
    return {k: torch.sqrt((g * g).sum()) for k, (_, g) in ref_grads(model, x, y).items()}


def ref_snip(model, x, y):
    """|dL/dc| for a mask c = 1 multiplying each weight (SNIP's own definition)."""
    net = copy.deepcopy(model).train()
    names = weight_names(net)
    params = dict(net.named_parameters())
    masks = {k: torch.ones_like(params[k], requires_grad=True) for k in names}
    loss = F.cross_entropy(functional_call(net, {**params, **{k: params[k] * masks[k] for k in names}}, (x,)), y)
    gm = torch.autograd.grad(loss, [masks[k] for k in names])
    return {k: g.abs().sum() for k, g in zip(names, gm)}


def ref_grasp_fd(model, x, y, eps=1e-5):
    """-theta * Hg with Hg from central finite differences of the gradient along g."""
    names = weight_names(model)

    def grads_at(shift):
        net = copy.deepcopy(model).train()
        params = {k: v.detach().clone() for k, v in net.named_parameters()}
        for k in names:
            params[k] = (params[k] + shift[k]).requires_grad_()
        loss = F.cross_entropy(functional_call(net, params, (x,)), y)
        return dict(zip(names, torch.autograd.grad(loss, [params[k] for k in names]))), params

    g0, p0 = grads_at({k: 0.0 for k in names})
    gp, _ = grads_at({k: eps * g0[k] for k in names})
    gm, _ = grads_at({k: -eps * g0[k] for k in names})
    return {k: -(p0[k].detach() * (gp[k] - gm[k]) / (2 * eps)).sum() for k in names}


def ref_grasp_hvp(model, x, y):
    """-theta * Hg with torch.autograd.functional.hvp over the weights (BatchNorm in batch mode)."""
    net = copy.deepcopy(model).train()
    names = weight_names(net)
    params = {k: v.detach() for k, v in net.named_parameters()}

    def loss_of(*ws):
        return F.cross_entropy(functional_call(net, {**params, **dict(zip(names, ws))}, (x,)), y)

    ws = tuple(params[k] for k in names)
    wr = [w.clone().requires_grad_() for w in ws]
    g = torch.autograd.grad(loss_of(*wr), wr)
    _, hg = torch.autograd.functional.hvp(loss_of, ws, tuple(gi.detach() for gi in g))
    return {k: -(w * h).sum() for k, w, h in zip(names, ws, hg)}


def ref_fisher(model, x, y, per_weight=True):
    """g_nk as d loss / d s_nk for a per-sample, per-channel scale s = 1 on each Conv/Linear output."""
    net = copy.deepcopy(model).train()
    layers = {f"{n}.weight": m for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    scales = {}

    def hook_for(k):
        def hook(mod, inp, out):
            s = torch.ones(out.shape[:2] + (1,) * (out.ndim - 2), dtype=out.dtype, requires_grad=True)
            scales[k] = s
            return out * s

        return hook

    hs = [m.register_forward_hook(hook_for(k)) for k, m in layers.items()]
    loss = F.cross_entropy(net(x), y)
    for h in hs:
        h.remove()
    gs = torch.autograd.grad(loss, [scales[k] for k in layers])
    out = {}
    for (k, m), g in zip(layers.items(), gs):
        g = g.reshape(g.shape[0], g.shape[1])
        per_channel = 0.5 * (g**2).mean(0)
        fan_in = m.weight[0].numel() if per_weight else 1
        out[k] = per_channel.sum() * fan_in
    return out


def check(result, reference):
    assert set(result.per_layer) == set(reference)
    for k, v in reference.items():
        torch.testing.assert_close(torch.tensor(result.per_layer[k], dtype=torch.float64), v.detach(), **TIGHT)
    torch.testing.assert_close(result.score, float(sum(reference.values())), **TIGHT)
    assert result.reason is None


# ---------------------------------------------------------------- agreement


@pytest.mark.parametrize("factory,batch", [(cnn, cnn_batch), (mlp, mlp_batch)])
def test_grad_norm_matches_backward_loop(factory, batch):
    model, (x, y) = factory(), batch()
    check(grad_norm(model, x, y), ref_grad_norm(model, x, y))


@pytest.mark.parametrize("factory,batch", [(cnn, cnn_batch), (mlp, mlp_batch)])
def test_snip_matches_mask_gradient(factory, batch):
    model, (x, y) = factory(), batch()
    r = snip(model, x, y)
    check(r, ref_snip(model, x, y))
    grads = ref_grads(model, x, y)  # and the |theta * dL/dtheta| form
    torch.testing.assert_close(r.score, float(sum((w * g).abs().sum() for w, g in grads.values())), **TIGHT)


def test_grasp_matches_finite_differences_on_mlp():
    model, (x, y) = mlp(), mlp_batch()
    r = grasp(model, x, y)
    ref = ref_grasp_fd(model, x, y)
    for k, v in ref.items():
        torch.testing.assert_close(torch.tensor(r.per_layer[k], dtype=torch.float64), v, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(r.score, float(sum(ref.values())), rtol=1e-6, atol=1e-9)


def test_grasp_matches_hvp_with_batchnorm():
    model, (x, y) = cnn(), cnn_batch()
    check(grasp(model, x, y), ref_grasp_hvp(model, x, y))


@pytest.mark.parametrize("per_weight", [True, False])
@pytest.mark.parametrize("factory,batch", [(cnn, cnn_batch), (mlp, mlp_batch)])
def test_fisher_matches_channel_scale_gradient(factory, batch, per_weight):
    model, (x, y) = factory(), batch()
    r = fisher(model, x, y, per_weight=per_weight)
    check(r, ref_fisher(model, x, y, per_weight=per_weight))
    assert r.options["per_weight"] is per_weight


def test_fisher_takes_the_activation_before_an_inplace_relu():
    x, y = cnn_batch()
    inplace, plain = cnn(inplace=True, bn=False), cnn(inplace=False, bn=False)
    plain.load_state_dict(inplace.state_dict())
    torch.testing.assert_close(fisher(inplace, x, y).score, float(sum(ref_fisher(plain, x, y).values())), **TIGHT)


# ---------------------------------------------------------------- registry, isolation, errors


@pytest.mark.parametrize("name", list(PROXIES))
def test_registry_lookup(name):
    info = get_proxy(name)
    assert info.fn is PROXIES[name] and info.name == name and info.doc


def snapshot(model):
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grad": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "torch_rng": torch.get_rng_state(),
        "py_rng": random.getstate(),
    }


@pytest.mark.parametrize("name", list(PROXIES))
def test_caller_model_and_rng_untouched(name):
    model, (x, y) = cnn(), cnn_batch()
    model.eval()
    model[0].train()
    model[0].weight.requires_grad_(False)
    model[-1].weight.grad = torch.full_like(model[-1].weight, 7.0)
    with torch.no_grad():  # non-default running stats, to see them change if they were touched
        model[1].running_mean.add_(0.5)
    before = snapshot(model)
    r = PROXIES[name](model, x, y)
    after = snapshot(model)
    assert r.proxy == name and r.n_params == sum(model.get_submodule(k[:-7]).weight.numel() for k in r.per_layer)
    assert before["state"].keys() == after["state"].keys()
    for k in before["state"]:
        assert torch.equal(before["state"][k], after["state"][k]), k
    assert before["training"] == after["training"]
    assert before["requires_grad"] == after["requires_grad"]
    assert before["grad"][0] is None and after["grad"][0] is None
    for a, b in zip(before["grad"], after["grad"]):
        assert (a is None and b is None) or torch.equal(a, b)
    assert torch.equal(before["torch_rng"], after["torch_rng"]) and before["py_rng"] == after["py_rng"]


@pytest.mark.parametrize("name", list(PROXIES))
def test_deterministic_and_frozen_weights_still_scored(name):
    model, (x, y) = cnn(), cnn_batch()
    a = PROXIES[name](model, x, y)
    model.requires_grad_(False)
    b = PROXIES[name](model, x, y)
    assert a.score == b.score and a.per_layer == b.per_layer


@pytest.mark.parametrize("name", list(PROXIES))
def test_bad_input(name):
    model, (x, y) = cnn(), cnn_batch()
    with pytest.raises(ValueError, match="at least 2 samples"):
        PROXIES[name](model, x[:1], y[:1])
    with pytest.raises(ValueError, match="disagree on the number of samples"):
        PROXIES[name](model, x, y[:-1])
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\)"):
        PROXIES[name](model, x, y + 5)


@pytest.mark.parametrize("name", list(PROXIES))
def test_model_without_conv_or_linear(name):
    model = nn.Sequential(nn.BatchNorm1d(4)).double()
    with pytest.raises(ValueError, match="no Conv1d/2d/3d or Linear layer"):
        PROXIES[name](model, *mlp_batch())


@pytest.mark.parametrize("name", ["grad_norm", "snip", "fisher"])
def test_orientation_nonnegative_and_dead_network_scores_lower(name):
    model, (x, y) = cnn(bn=False), cnn_batch()  # without BatchNorm, which would re-amplify a dead signal
    alive = PROXIES[name](model, x, y)
    dead = copy.deepcopy(model)
    with torch.no_grad():
        dead[0].weight.zero_()  # no signal reaches the rest of the network
        dead[0].bias.zero_()
    killed = PROXIES[name](dead, x, y)
    assert alive.score > 0 and all(v >= 0 for v in alive.per_layer.values())
    assert killed.score < alive.score


def test_grasp_sign_convention():
    """score = -sum theta * Hg (NASLib's sign, ranked higher = better), not +sum."""
    model, (x, y) = mlp(), mlp_batch()
    ref = ref_grasp_hvp(model, x, y)
    r = grasp(model, x, y)
    assert r.score != 0 and r.score == pytest.approx(float(sum(ref.values())), rel=1e-9)


def test_float32_agrees_with_float64():
    model, (x, y) = cnn(), cnn_batch()
    for name, fn in PROXIES.items():
        hi = fn(model, x, y).score
        lo = fn(copy.deepcopy(model).float(), x.float(), y)
        assert lo.dtype == "float32"
        assert lo.score == pytest.approx(hi, rel=1e-3, abs=1e-6), name
