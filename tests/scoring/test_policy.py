"""Scoring policies: initialisation policies, ScoringPolicy validation and records, resolve_policy; GradSign's
"active" reduction."""

from __future__ import annotations

import dataclasses
import json

import pytest
import timm
import torch
from torch import nn

from gradsign_pl.proxies import gradsign
from gradsign_pl.scoring import policy as policy_module
from gradsign_pl.scoring.policy import INIT_POLICIES, ScoringPolicy, apply_init_policy, resolve_policy

NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet18", num_classes=10)  # random init, nothing downloaded


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))
    with torch.no_grad():  # move everything off PyTorch's defaults so a reset is visible
        bn = model[1]
        bn.weight.fill_(0.3)
        bn.bias.fill_(0.7)
        bn.running_mean.fill_(2.0)
        bn.running_var.fill_(5.0)
        bn.num_batches_tracked.fill_(9)
    return model


# ------------------------------------------------------------------------------------- apply_init_policy


def test_init_policies_are_the_documented_three():
    assert INIT_POLICIES == ("as_built", "norm_ones", "uniform")


def test_as_built_leaves_the_model_alone():
    model = resnet18()
    before = snapshot(model)
    assert apply_init_policy(model, "as_built") is model
    assert same_state(before, snapshot(model))


def test_norm_ones_undoes_timms_zero_init_last():
    model = resnet18()
    zeroed = [n for n, p in model.named_parameters() if n.endswith("bn2.weight") and n.startswith("layer")]
    assert len(zeroed) == 8
    assert all(torch.count_nonzero(model.get_parameter(n)) == 0 for n in zeroed)
    before = snapshot(model)
    assert apply_init_policy(model, "norm_ones") is model
    after = snapshot(model)

    bn_weights = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert len(bn_weights) == 20 and set(zeroed) <= bn_weights
    for key in bn_weights:
        assert torch.equal(after[key], torch.ones_like(after[key])), key
    # everything else -- convolutions, the head, BatchNorm biases and running statistics -- is untouched
    assert any(k.endswith("conv1.weight") for k in before)
    assert same_state(
        {k: v for k, v in before.items() if k not in bn_weights},
        {k: v for k, v in after.items() if k not in bn_weights},
    )


def test_norm_ones_covers_layer_group_and_instance_norm():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.GroupNorm(2, 4),
        nn.InstanceNorm2d(4, affine=True),
        nn.GroupNorm(2, 4, affine=False),
        nn.Flatten(),
        nn.LayerNorm(8),
        nn.LayerNorm(8, elementwise_affine=False),
        nn.Linear(8, 3),
    )
    torch.manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, NORMS) and m.weight is not None:
                m.weight.uniform_(-2, 2)
                m.bias.uniform_(-2, 2)
    before = snapshot(model)
    apply_init_policy(model, "norm_ones")
    after = snapshot(model)
    norm_weights = {"1.weight", "2.weight", "5.weight"}
    for key in norm_weights:
        assert torch.equal(after[key], torch.ones_like(after[key])), key
    assert same_state(
        {k: v for k, v in before.items() if k not in norm_weights},
        {k: v for k, v in after.items() if k not in norm_weights},
    )


def test_uniform_redraws_layers_and_resets_norms():
    model = small_cnn()
    before = snapshot(model)
    torch.manual_seed(123)
    assert apply_init_policy(model, "uniform") is model
    after = snapshot(model)
    for key in ("0.weight", "0.bias", "4.weight", "4.bias"):
        assert not torch.equal(before[key], after[key]), key
    assert torch.equal(after["1.weight"], torch.ones(4))
    assert torch.equal(after["1.bias"], torch.zeros(4))
    assert torch.equal(after["1.running_mean"], torch.zeros(4))
    assert torch.equal(after["1.running_var"], torch.ones(4))
    assert int(after["1.num_batches_tracked"]) == 0


def test_uniform_is_deterministic_under_the_global_seed():
    def draw(seed: int) -> dict[str, torch.Tensor]:
        model = small_cnn()
        torch.manual_seed(seed)
        return snapshot(apply_init_policy(model, "uniform"))

    assert same_state(draw(7), draw(7))
    assert not same_state(draw(7), draw(8))


class WithBareParameter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.randn(3, 4))
        self.scale = nn.Parameter(torch.zeros(()))
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)

    def forward(self, x):
        return self.norm(self.proj(x + self.pos)) * self.scale


def test_uniform_keeps_parameters_outside_layers():
    torch.manual_seed(0)
    model = WithBareParameter()
    with torch.no_grad():
        model.norm.weight.fill_(0.0)
    pos, scale, proj = model.pos.detach().clone(), model.scale.detach().clone(), model.proj.weight.detach().clone()
    torch.manual_seed(5)
    apply_init_policy(model, "uniform")
    assert torch.equal(model.pos, pos)
    assert torch.equal(model.scale, scale)
    assert not torch.equal(model.proj.weight, proj)
    assert torch.equal(model.norm.weight, torch.ones(4))


@pytest.mark.parametrize("init", ["", "random", "Uniform", None])
def test_unknown_init_names_the_choices(init):
    model = small_cnn()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"as_built.*norm_ones.*uniform"):
        apply_init_policy(model, init)
    assert same_state(before, snapshot(model))


# ------------------------------------------------------------------------------------- ScoringPolicy


def test_defaults():
    p = ScoringPolicy("mine")
    assert p.init == "as_built" and p.proxy_options == {} and p.order_terms == ("proxy",)
    assert p.options_for("gradsign") == {}


@pytest.mark.parametrize("init", ["random", "", "NORM_ONES"])
def test_bad_init(init):
    with pytest.raises(ValueError, match=r"init must be one of .*norm_ones"):
        ScoringPolicy("x", init=init)


@pytest.mark.parametrize("order_terms", [("params", "latency"), ["macs"], (), ("params", "params")])
def test_bad_order_terms(order_terms):
    with pytest.raises(ValueError, match=r"order_terms must name distinct terms among .*proxy.*params.*flops"):
        ScoringPolicy("x", order_terms=order_terms)


def test_order_terms_become_a_tuple_and_options_are_copied():
    options = {"gradsign": {"bn_policy": "batch"}}
    p = ScoringPolicy("x", init="norm_ones", proxy_options=options, order_terms=["params", "flops"])
    assert p.order_terms == ("params", "flops")
    options["gradsign"]["bn_policy"] = "per_sample"  # the caller's dict is not shared
    assert p.options_for("gradsign") == {"bn_policy": "batch"}
    got = p.options_for("gradsign")
    got["chunk_size"] = 4  # nor is the returned one
    assert p.options_for("gradsign") == {"bn_policy": "batch"}
    assert p.options_for("synflow") == {}


def test_describe_is_json_and_round_trips():
    p = ScoringPolicy(
        "real",
        init="uniform",
        proxy_options={"gradsign": {"bn_policy": "batch", "reduction": "active"}},
        order_terms=("proxy", "params"),
    )
    record = p.describe()
    assert set(record) == {f.name for f in dataclasses.fields(ScoringPolicy)}
    text = json.dumps(record)
    back = json.loads(text)
    assert back["name"] == "real" and back["init"] == "uniform"
    assert back["proxy_options"] == {"gradsign": {"bn_policy": "batch", "reduction": "active"}}
    assert back["order_terms"] == ["proxy", "params"]
    assert ScoringPolicy(**back) == p


def test_summary_is_one_line_with_the_init():
    plain = ScoringPolicy("plain").summary()
    assert plain == "plain: init=as_built"
    full = ScoringPolicy(
        "real",
        init="norm_ones",
        proxy_options={"gradsign": {"bn_policy": "batch"}},
        order_terms=("proxy", "params", "flops"),
    ).summary()
    assert "\n" not in full
    assert full.startswith("real: init=norm_ones")
    assert "gradsign(bn_policy=batch)" in full and "params" in full and "flops" in full


# ------------------------------------------------------------------------------------- resolve_policy


def test_resolve_auto_picks_by_candidate_kind():
    for auto in (None, "auto"):
        assert resolve_policy(auto, cell_space_only=True) is policy_module.CELL_SPACE_POLICY
        assert resolve_policy(auto, cell_space_only=False) is policy_module.REAL_MODEL_POLICY


def test_resolve_by_name_and_pass_through():
    for flag in (True, False):
        assert resolve_policy("cell-space", cell_space_only=flag) is policy_module.CELL_SPACE_POLICY
        assert resolve_policy("real-model", cell_space_only=flag) is policy_module.REAL_MODEL_POLICY
        mine = ScoringPolicy("mine", init="uniform")
        assert resolve_policy(mine, cell_space_only=flag) is mine


def test_cell_space_policy_is_the_authors_semantics():
    p = policy_module.CELL_SPACE_POLICY
    assert (p.init, p.proxy_options, p.order_terms) == ("as_built", {}, ("proxy",))


@pytest.mark.parametrize("name", ["real_model", "Auto", "", "best"])
def test_resolve_unknown_name(name):
    with pytest.raises(ValueError, match=r"'auto', 'cell-space', 'real-model'"):
        resolve_policy(name, cell_space_only=False)


# ------------------------------------------------------------------------------------- GradSign "active"


def batch(n: int = 6, shape=(3, 6, 6), classes: int = 5, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=torch.float64), torch.randint(0, classes, (n,), generator=g)


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).double()


class GatedBranch(nn.Module):
    """A trunk plus a branch multiplied by a zero-initialised scale: the branch's weight gets zero gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4 * 6 * 6, 5)
        self.branch = nn.Linear(4 * 6 * 6, 5)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        h = torch.relu(self.conv(x)).flatten(1)
        return self.head(h) + self.gate * self.branch(h)


def scores(model, x, y):
    return {r: gradsign(model, x, y, reduction=r) for r in ("sum", "mean", "active")}


def test_active_and_mean_reductions_divide_the_sum():
    model = tiny_cnn()
    x, y = batch()
    got = scores(model, x, y)
    total = got["sum"]
    assert total.n_params == 4 * 3 * 3 * 3 + 4 * 6 * 6 * 5
    assert 0 < total.n_active_params <= total.n_params
    assert total.score > 0
    assert got["mean"].score == pytest.approx(total.score / total.n_params, rel=1e-12)
    assert got["active"].score == pytest.approx(total.score / total.n_active_params, rel=1e-12)
    for r in ("mean", "active"):
        assert got[r].n_params == total.n_params and got[r].n_active_params == total.n_active_params
        assert got[r].options["reduction"] == r
        assert sum(got[r].per_layer.values()) == pytest.approx(got[r].score, rel=1e-12)
    assert 0 <= got["active"].score <= len(x)


def test_active_ignores_a_zero_gradient_branch():
    torch.manual_seed(0)
    model = GatedBranch().double()
    x, y = batch()
    got = scores(model, x, y)
    total = got["sum"]
    assert total.n_params == 4 * 3 * 3 * 3 + 2 * 4 * 6 * 6 * 5
    assert total.n_active_params <= total.n_params - model.branch.weight.numel()
    assert total.per_layer["branch.weight"] == 0
    assert got["active"].score == pytest.approx(total.score / total.n_active_params, rel=1e-12)
    assert got["mean"].score == pytest.approx(total.score / total.n_params, rel=1e-12)
    assert got["active"].score > got["mean"].score > 0


class AllGated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.fc(x) * self.gate


def test_active_is_zero_when_no_parameter_is_reached():
    torch.manual_seed(0)
    model = AllGated().double()
    x, y = batch(4, (4,), 3)
    result = gradsign(model, x, y, reduction="active")
    assert result.n_active_params == 0 and result.n_params == 12
    assert result.score == 0.0


def test_unknown_reduction_names_active():
    x, y = batch()
    with pytest.raises(ValueError, match="active"):
        gradsign(tiny_cnn(), x, y, reduction="median")


def test_policy_is_hashable_and_describe_is_a_copy():
    a = ScoringPolicy("x", proxy_options={"gradsign": {"bn_policy": "batch"}}, order_terms="params")
    b = ScoringPolicy("x", proxy_options={"gradsign": {"bn_policy": "batch"}}, order_terms=("params",))
    assert a == b and hash(a) == hash(b) and a.order_terms == ("params",)
    record = a.describe()
    record["proxy_options"]["gradsign"]["bn_policy"] = "per_sample"
    assert a.options_for("gradsign") == {"bn_policy": "batch"}
    with pytest.raises(ValueError, match="seeds must be >= 1"):
        ScoringPolicy("x", seeds=True)


def test_the_shipped_real_model_policy_is_the_one_the_triage_study_chose():
    # docs/results/triage.json is written by benchmarks/triage_cifar10.py; the default must follow its result
    from pathlib import Path

    study = json.loads((Path(__file__).resolve().parents[2] / "docs" / "results" / "triage.json").read_text())
    chosen = eval(study["chosen_default_code"], {"ScoringPolicy": ScoringPolicy})
    assert chosen == policy_module.REAL_MODEL_POLICY
    assert len(study["models"]) >= 20 and len({m["family"] for m in study["models"].values()}) >= 10
