"""GradSign: exact agreement with a plain per-sample loop, properties, guarantees and errors."""

from __future__ import annotations

import math
import random

import pytest
import timm
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import gradsign_pl
from gradsign_pl import GradSignResult, gradsign
from gradsign_pl.spaces.nb201 import NB201Network
from tests import models
from tests.proxies.reference import per_sample_weight_gradients, reference_gradsign

BEST_NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def batch(n: int, shape: tuple[int, ...], classes: int, seed: int = 1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=dtype), torch.randint(0, classes, (n,), generator=g)


def built(factory, seed: int = 0, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    return factory().to(dtype)


# ------------------------------------------------------------------------------------- exactness

EXACT_CASES = {
    "mlp": (lambda: models.mlp(), (12,), 5, "none"),
    "bn_cnn": (lambda: models.bn_cnn(), (3, 12, 12), 10, "per_sample"),
    "nb201": (lambda: NB201Network(BEST_NB201), (3, 32, 32), 10, "per_sample"),
    "timm_test_resnet": (lambda: timm.create_model("test_resnet", num_classes=10), (3, 64, 64), 10, "per_sample"),
    "timm_test_efficientnet": (
        lambda: timm.create_model("test_efficientnet", num_classes=10),
        (3, 64, 64),
        10,
        "per_sample",
    ),
    "timm_test_vit": (lambda: timm.create_model("test_vit", num_classes=10, img_size=32), (3, 32, 32), 10, "none"),
    # 32 px leaves resnet18's last stage at 1x1: auto falls back to whole-batch statistics.
    "torchvision_resnet18": (lambda: torchvision.models.resnet18(num_classes=10), (3, 32, 32), 10, "batch"),
}


@pytest.mark.parametrize("name", list(EXACT_CASES))
def test_matches_plain_per_sample_loop_in_float64(name):
    factory, shape, classes, bn_policy = EXACT_CASES[name]
    model = built(factory)
    x, y = batch(6, shape, classes)
    result = gradsign(model, x, y)
    assert result.bn_policy == bn_policy
    assert result.engine == "vmap" and result.engine_reason is None
    ref_policy = "batch" if bn_policy == "batch" else "per_sample"
    assert result.score == reference_gradsign(model, x, y, bn_policy=ref_policy)
    g = per_sample_weight_gradients(model, x, y, bn_policy=ref_policy)
    assert result.n_params == g.shape[1]
    assert result.n_active_params == int((g != 0).any(0).sum())
    assert result.per_layer and math.isclose(sum(result.per_layer.values()), result.score)


def test_batch_policy_reason_names_the_layer():
    model = built(models.bn_head_cnn)
    x, y = batch(5, (3, 8, 8), 10)
    result = gradsign(model, x, y)
    assert result.bn_policy == "batch"
    assert "'5'" in result.bn_reason and "one value per channel" in result.bn_reason
    assert result.score == reference_gradsign(model, x, y, bn_policy="batch")


def test_explicit_batch_policy_on_a_model_that_allows_per_sample():
    model = built(models.bn_cnn)
    x, y = batch(6, (3, 12, 12), 10)
    result = gradsign(model, x, y, bn_policy="batch")
    assert result.bn_policy == "batch" and result.bn_reason is None
    assert result.score == reference_gradsign(model, x, y, bn_policy="batch")


def test_loop_engine_and_chunking_give_the_same_score():
    model = built(models.bn_cnn)
    x, y = batch(11, (3, 12, 12), 10)
    scores = {gradsign(model, x, y, chunk_size=c).score for c in (1, 3, 11)}
    scores.add(gradsign(model, x, y, engine="loop").score)
    assert scores == {reference_gradsign(model, x, y)}


def test_vmap_failure_falls_back_to_the_loop_and_says_why():
    model = built(models.DataDependent)
    x, y = batch(7, (6,), 3)
    result = gradsign(model, x, y)
    assert result.engine == "loop" and "vmap failed" in result.engine_reason
    assert result.chunk_size == 1
    assert result.score == reference_gradsign(model, x, y)
    with pytest.raises(RuntimeError, match="vmap"):
        gradsign(model, x, y, engine="vmap")


def test_params_all_and_predicate():
    model = built(models.bn_cnn)
    x, y = batch(4, (3, 12, 12), 10)
    every = gradsign(model, x, y, params="all")
    assert every.n_params == sum(p.numel() for p in model.parameters())
    assert set(every.per_layer) == {n for n, _ in model.named_parameters()}
    only_bn = gradsign(model, x, y, params=lambda name, p: name.startswith(("1.", "4.")))
    assert set(only_bn.per_layer) == {"1.weight", "1.bias", "4.weight", "4.bias"}
    assert only_bn.options["params"].startswith("predicate:")


def test_frozen_weights_are_not_scored():
    model = built(models.mlp)
    model[0].weight.requires_grad_(False)
    x, y = batch(4, (12,), 5)
    assert "0.weight" not in gradsign(model, x, y).per_layer


def test_mean_reduction_divides_by_the_number_of_parameters():
    model = built(models.bn_cnn)
    x, y = batch(6, (3, 12, 12), 10)
    total, mean = gradsign(model, x, y), gradsign(model, x, y, reduction="mean")
    assert mean.score == pytest.approx(total.score / total.n_params, rel=1e-12)
    assert sum(mean.per_layer.values()) == pytest.approx(mean.score, rel=1e-12)


def test_deterministic():
    model = built(lambda: NB201Network(BEST_NB201, channels=8, cells_per_stage=1), dtype=torch.float32)
    x, y = batch(8, (3, 16, 16), 10, dtype=torch.float32)
    a, b = gradsign(model, x, y), gradsign(model, x, y)
    assert a.score == b.score and a.per_layer == b.per_layer


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lower_precision_agrees_with_float64(dtype):
    model64 = built(models.bn_cnn)
    x, y = batch(8, (3, 12, 12), 10)
    exact = gradsign(model64, x, y)
    low = gradsign(model64.to(dtype), x, y)  # inputs are cast to the model's dtype
    assert low.dtype == str(dtype).removeprefix("torch.")
    tolerance = 1e-3 if dtype == torch.float32 else 0.05
    assert low.score == pytest.approx(exact.score, rel=tolerance)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    model = built(models.bn_cnn)
    x, y = batch(8, (3, 12, 12), 10)
    cpu = gradsign(model, x, y)
    gpu = gradsign(model.cuda(), x, y)
    assert gpu.device.startswith("cuda") and gpu.peak_memory_bytes > 0
    assert gpu.score == pytest.approx(cpu.score, rel=1e-6)


# ------------------------------------------------------------------------------------- properties

SMALL = dict(max_examples=12, deadline=None)


@settings(**SMALL)
@given(n=st.integers(2, 9), seed=st.integers(0, 10_000), data=st.data())
def test_permuting_samples_leaves_the_score_unchanged(n, seed, data):
    model = built(models.bn_cnn, seed)
    x, y = batch(n, (3, 8, 8), 10, seed)
    perm = torch.tensor(data.draw(st.permutations(list(range(n)))))
    assert gradsign(model, x[perm], y[perm]).score == gradsign(model, x, y).score


@settings(**SMALL)
@given(n=st.integers(2, 9), seed=st.integers(0, 10_000))
def test_identical_samples_score_n_times_the_active_parameters(n, seed):
    model = built(models.bn_cnn, seed)
    x, y = batch(1, (3, 8, 8), 10, seed)
    active = int((per_sample_weight_gradients(model, x.repeat(2, 1, 1, 1), y.repeat(2))[0] != 0).sum())
    result = gradsign(model, x.expand(n, -1, -1, -1).clone(), y.expand(n).clone())
    assert result.score == n * active
    assert result.n_active_params == active


@settings(**SMALL)
@given(n=st.integers(2, 12), seed=st.integers(0, 10_000), wide=st.booleans())
def test_score_is_between_zero_and_n_times_m(n, seed, wide):
    model = built(lambda: models.mlp(hidden=32 if wide else 4), seed)
    x, y = batch(n, (12,), 5, seed)
    result = gradsign(model, x, y)
    assert 0 <= result.score <= n * result.n_params
    assert 0 <= result.n_active_params <= result.n_params
    assert all(0 <= v <= n * model.get_parameter(k).numel() for k, v in result.per_layer.items())


# ----------------------------------------------------------------------------- leaves the model alone


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "modes": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "torch_rng": torch.get_rng_state(),
        "py_rng": random.getstate(),
    }


def assert_same(before: dict, after: dict) -> None:
    assert before["state"].keys() == after["state"].keys()
    for k in before["state"]:
        assert torch.equal(before["state"][k], after["state"][k]), k
    assert before["modes"] == after["modes"]
    assert before["requires_grad"] == after["requires_grad"]
    for a, b in zip(before["grads"], after["grads"]):
        assert (a is None and b is None) or torch.equal(a, b)
    assert torch.equal(before["torch_rng"], after["torch_rng"])
    assert before["py_rng"] == after["py_rng"]


@pytest.mark.parametrize("train_mode", [True, False])
@pytest.mark.parametrize(
    "factory",
    [
        models.bn_cnn,
        models.bn_head_cnn,  # takes the whole-batch fallback
        models.DataDependent,  # takes the loop engine
        lambda: timm.create_model("test_vit", num_classes=10, img_size=32, drop_rate=0.5, drop_path_rate=0.5),
    ],
    ids=["bn_cnn", "bn_head", "loop_engine", "vit_dropout"],
)
def test_model_buffers_modes_flags_grads_and_rng_are_untouched(factory, train_mode):
    model = built(factory, dtype=torch.float32).train(train_mode)
    first = next(model.parameters())
    first.requires_grad_(False)
    x, y = batch(6, (6,), 3) if factory is models.DataDependent else batch(6, (3, 32, 32), 10)
    x = x.float()
    list(model.parameters())[-1].grad = torch.ones_like(list(model.parameters())[-1])
    before = snapshot(model)
    gradsign(model, x, y, params="all")
    gradsign(model, x, y)
    assert_same(before, snapshot(model))


def test_dropout_is_off_while_scoring():
    torch.manual_seed(0)
    model = timm.create_model("test_vit", num_classes=10, img_size=32, drop_rate=0.5, drop_path_rate=0.5)
    x, y = batch(6, (3, 32, 32), 10, dtype=torch.float32)
    assert len({gradsign(model, x, y).score for _ in range(3)}) == 1
    torch.manual_seed(0)
    plain = timm.create_model("test_vit", num_classes=10, img_size=32)
    assert gradsign(plain, x, y).score == gradsign(model, x, y).score


# ------------------------------------------------------------------------------------- results


def test_result_json_round_trip():
    model = built(models.bn_head_cnn)
    x, y = batch(4, (3, 8, 8), 10)
    result = gradsign(model, x, y)
    again = GradSignResult.from_json(result.to_json())
    assert again == result
    assert again.options["bn_policy"] == "auto" and again.bn_policy == "batch"
    assert len(result.batch_fingerprint) == 16
    assert result.batch_fingerprint != gradsign(model, x.flip(0), y.flip(0)).batch_fingerprint


def test_nan_score_round_trips_and_unknown_fields_are_rejected():
    model = built(models.mlp)
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    x, y = batch(4, (12,), 5)
    result = gradsign(model, x, y)
    assert math.isnan(result.score) and "non-finite gradients" in result.reason
    again = GradSignResult.from_json(result.to_json())
    assert math.isnan(again.score) and again.reason == result.reason
    with pytest.raises(ValueError, match="unknown fields"):
        GradSignResult.from_dict({**result.to_dict(), "extra": 1})
    with pytest.raises(ValueError, match="not a ProxyResult"):
        gradsign_pl.ProxyResult.from_dict(result.to_dict())


def test_strict_raises_on_non_finite_gradients():
    model = built(models.mlp)
    with torch.no_grad():
        model[2].weight.fill_(float("nan"))
    x, y = batch(4, (12,), 5)
    with pytest.raises(FloatingPointError, match="non-finite gradients for 4 sample"):
        gradsign(model, x, y, strict=True)


# ------------------------------------------------------------------------------------- bad input


@pytest.fixture
def cnn_batch():
    return built(models.bn_cnn), *batch(4, (3, 8, 8), 10)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda m, x, y: gradsign(m, x[:1], y[:1]), ValueError, "at least 2 samples.*got 1"),
        (lambda m, x, y: gradsign(m, x, y[:3]), ValueError, "4 inputs vs 3 targets"),
        (lambda m, x, y: gradsign(m, x.tolist(), y), TypeError, "inputs must be a torch.Tensor"),
        (lambda m, x, y: gradsign(m, x, y.tolist()), TypeError, "targets must be a torch.Tensor"),
        (lambda m, x, y: gradsign(m, (x * 255).to(torch.uint8), y), TypeError, "floating point.*float"),
        (lambda m, x, y: gradsign(m, x, y + 10), ValueError, r"class indices in \[0, 10\).*from 1\d to 1\d"),
        (lambda m, x, y: gradsign(m, x, y - 20), ValueError, r"class indices in \[0, 10\)"),
        (
            lambda m, x, y: gradsign(m, x, torch.cat([y[:3], y[3:] + 10]), loss_fn=nn.CrossEntropyLoss()),
            ValueError,
            r"class indices in \[0, 10\)",
        ),
        (lambda m, x, y: gradsign(m, x, y, loss_fn=lambda o, t: o), ValueError, "one floating-point scalar per sample"),
        (lambda m, x, y: gradsign(m, x, y, loss_fn=lambda o, t: o.sum().item()), ValueError, "got a float"),
        (lambda m, x, y: gradsign(m, x, y[:, None, None]), ValueError, "loss_fn failed.*must return the loss"),
        (lambda m, x, y: gradsign(m, x, y, params=lambda n, p: False), ValueError, "no parameter selected"),
        (lambda m, x, y: gradsign(m, x, y, params="weight"), ValueError, "params must be 'weights', 'all'"),
        (lambda m, x, y: gradsign(m, x, y, reduction="max"), ValueError, "reduction must be one of"),
        (lambda m, x, y: gradsign(m, x, y, bn_policy="running"), ValueError, "bn_policy must be one of"),
        (lambda m, x, y: gradsign(m, x, y, engine="jit"), ValueError, "engine must be one of"),
        (lambda m, x, y: gradsign(m, x, y, chunk_size=0), ValueError, "chunk_size must be a positive integer"),
    ],
)
def test_bad_input_is_named_with_its_fix(cnn_batch, call, error, message):
    model, x, y = cnn_batch
    with pytest.raises(error, match=message):
        call(model, x, y)


def test_ignored_labels_are_not_out_of_range():
    model = built(models.bn_cnn)
    x, y = batch(4, (3, 8, 8), 10)
    y[0] = -100  # cross-entropy's default ignore_index
    result = gradsign(model, x, y)
    assert result.score > 0


def test_model_without_parameters():
    x, y = batch(4, (10,), 10)
    with pytest.raises(ValueError, match="has no parameters"):
        gradsign(nn.ReLU(), x, y)


def test_model_without_conv_or_linear_weights():
    x, y = batch(4, (10,), 10)
    with pytest.raises(ValueError, match=r"no trainable Conv/Linear weight.*params='all'"):
        gradsign(nn.BatchNorm1d(10), x, y)


def test_per_sample_policy_impossible_names_layer_and_fix():
    model = built(models.bn_head_cnn)
    x, y = batch(4, (3, 8, 8), 10)
    with pytest.raises(ValueError, match=r"'5'.*use bn_policy='batch'"):
        gradsign(model, x, y, bn_policy="per_sample")


def test_scoring_leaves_no_tensor_behind():
    """Scoring many networks in one process (the whole NB-201 space) must not accumulate memory: the activation
    measurement once kept every network's output alive through a saved-tensor cycle (~6 MB per network)."""
    import gc

    def live_tensors() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))

    x, y = batch(8, (3, 8, 8), 10)
    gradsign(built(models.bn_head_cnn), x, y)  # first call: one-off caches (e.g. torch's) settle
    before = live_tensors()
    for _ in range(3):
        gradsign(built(models.bn_head_cnn), x, y)
    assert live_tensors() == before


def test_the_automatic_chunk_size_budgets_activations_as_well_as_gradients():
    from gradsign_pl.proxies import _per_sample as ps

    def convnet():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)
        )

    saved = {}
    for hw in (16, 32):
        x = torch.randn(4, 3, hw, hw)
        saved[hw] = ps.saved_activation_bytes(ps.prepare_model(convnet(), x, "auto"), x[:1])
        assert saved[hw] >= 8 * hw * hw * 4  # at least the ReLU output, float32; parameters are not counted
    assert saved[32] == 4 * saved[16]  # activations scale with the pixels, the tiny parameters do not enter

    model = convnet()
    names = ps.select_parameters(model, "weights")
    assert ps.auto_chunk_size(model, names, 64) == ps.MAX_AUTO_CHUNK  # tiny gradients, no activation figure
    assert ps.auto_chunk_size(model, names, 64, ps.CHUNK_ACTIVATION_BUDGET // 3) == 3
    assert ps.auto_chunk_size(model, names, 64, 10 * ps.CHUNK_ACTIVATION_BUDGET) == 1
    x = torch.randn(6, 3, 8, 8)
    y = torch.randint(0, 10, (6,))
    assert gradsign(model, x, y).chunk_size == 6  # small activations: the batch fits in one chunk
