"""Candidates: every spec form builds a fresh network that fits the data; bad specs fail early and say why."""

from __future__ import annotations

import fnmatch
import functools
import re
import sys
import warnings

import pytest
import timm
import torch
import torchvision
from torch import nn

from gradsign_pl.candidates import Candidate, build_model, candidate, list_candidates
from gradsign_pl.spaces import create_space
from gradsign_pl.spaces.nb201 import NB201Network

ARCH = "|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|avg_pool_3x3~0|nor_conv_3x3~1|avg_pool_3x3~2|"


class TinyNet(nn.Module):
    """A class_path target naming ``num_classes`` and ``in_chans``."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width: int = 8) -> None:
        super().__init__()
        self.width = width
        self.conv = nn.Conv2d(in_chans, width, 3, padding=1)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean((2, 3)))


class TinyNetInChannels(TinyNet):
    """Takes ``in_channels`` (torch style) rather than ``in_chans``."""

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__(num_classes, in_channels)


def tiny_factory(num_classes: int, in_chans: int = 3, pretrained: bool = False) -> nn.Module:
    return TinyNet(num_classes, in_chans)


def classes_only_factory(num_classes: int) -> nn.Module:
    return TinyNet(num_classes)


def not_a_module(num_classes: int) -> int:
    return num_classes


def out(model: nn.Module, in_chans: int, size: int = 32) -> torch.Tensor:
    return model(torch.randn(2, in_chans, size, size))


# --------------------------------------------------------------------------------------- every form builds

SPECS = {
    "timm": "timm:test_resnet",
    "torchvision": "torchvision:resnet18",
    "torchvision_mobilenet": "torchvision:mobilenet_v3_small",
    "nb201": f"nb201:{ARCH}",
    "model_mapping": {"model": "timm:test_efficientnet", "kwargs": {"drop_rate": 0.1}},
    "nb201_mapping": {"model": f"nb201:{ARCH}", "kwargs": {"channels": 8, "cells_per_stage": 1}},
    "class_path": {"class_path": f"{__name__}.TinyNet", "init_args": {"width": 4}},
    "class_path_in_channels": {"class_path": f"{__name__}.TinyNetInChannels"},
    "class_path_function": {"class_path": f"{__name__}.tiny_factory"},
    "callable": tiny_factory,
    "callable_partial": functools.partial(tiny_factory, pretrained=False),
    "callable_class": TinyNet,
}


@pytest.mark.parametrize("in_chans", [3, 1])
@pytest.mark.parametrize("form", list(SPECS))
def test_every_form_builds_a_network_that_fits_the_data(form, in_chans):
    model = build_model(SPECS[form], num_classes=7, in_chans=in_chans)
    assert isinstance(model, nn.Module) and model.training
    assert out(model, in_chans).shape == (2, 7)


def test_torchvision_in_chans_replaces_only_the_first_conv():
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(num_classes=5)
    torch.manual_seed(0)
    model = build_model("torchvision:resnet18", num_classes=5, in_chans=1)
    conv, old = model.conv1, reference.conv1
    assert type(conv) is nn.Conv2d and conv.weight.shape == (64, 1, 7, 7)
    assert (conv.stride, conv.padding, conv.bias) == (old.stride, old.padding, None)
    # every other weight is the library's own initialisation, untouched
    ref_state = reference.state_dict()
    for key, value in model.state_dict().items():
        if key != "conv1.weight":
            assert torch.equal(value, ref_state[key]), key


def test_class_path_linear_is_built_as_given():
    c = candidate({"class_path": "torch.nn.Linear", "init_args": {"in_features": 4, "out_features": 3}})
    assert c.name == "torch.nn.Linear(in_features=4, out_features=3)"
    model = c.build(num_classes=3)
    assert type(model) is nn.Linear and model(torch.randn(2, 4)).shape == (2, 3)


def test_callable_gets_only_the_arguments_it_names():
    model = build_model(classes_only_factory, num_classes=4, in_chans=1)
    assert model.conv.in_channels == 3  # it does not take in_chans, so it was not passed
    assert out(model, 3).shape == (2, 4)


def test_torchvision_aux_models_give_plain_logits_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # googlenet warns about its init unless init_weights is given
        model = build_model("torchvision:googlenet", num_classes=6)
    assert model.aux1 is None and model.training
    y = out(model, 3, size=64)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 6)


def test_fixed_input_size_models_follow_input_size():
    model = build_model("timm:test_vit_relpos", num_classes=5, input_size=(64, 64))
    assert out(model, 3, size=64).shape == (2, 5)
    default = build_model("timm:test_vit_relpos", num_classes=5)  # built for its default 160 px
    with pytest.raises(Exception, match="160"):
        out(default, 3, size=64)


# ------------------------------------------------------------------------------------------- init and RNG


def test_library_default_init_and_no_seeding():
    torch.manual_seed(3)
    direct = timm.create_model("test_resnet", num_classes=5, in_chans=1)
    after_direct = torch.rand(3)
    torch.manual_seed(3)
    built = build_model("timm:test_resnet", num_classes=5, in_chans=1)
    after_built = torch.rand(3)
    for (k, a), b in zip(direct.state_dict().items(), built.state_dict().values()):
        assert torch.equal(a, b), k
    assert torch.equal(after_direct, after_built)  # consumed exactly the library's draws, reseeded nothing

    c = candidate("timm:test_resnet")
    first, second = c.build(5), c.build(5)
    assert first is not second
    assert not torch.equal(next(first.parameters()), next(second.parameters()))  # fresh draws each time


def test_nb201_arch_string_builds_the_benchmark_network():
    torch.manual_seed(1)
    built = build_model(f"nb201:{ARCH}", num_classes=10, in_chans=1)
    torch.manual_seed(1)
    direct = NB201Network(ARCH, 10, in_chans=1)
    assert built.arch == ARCH
    for (k, a), b in zip(direct.state_dict().items(), built.state_dict().values()):
        assert torch.equal(a, b), k


# ------------------------------------------------------------------------------------------------- nb201


def test_nb201_index_uses_the_benchmark_table(shared_data):
    arch = create_space("nb201").arch(0)
    c = candidate("nb201:0")
    assert c.name == "nb201:0"
    model = c.build(num_classes=10)
    assert isinstance(model, NB201Network) and model.arch == arch
    assert out(model, 3).shape == (2, 10)


def test_nb201_index_without_the_table_names_the_data_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADSIGN_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"nb201_accuracies.csv is not in the data directory"):
        candidate("nb201:3")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nb201:15625", r"index must be in \[0, 15625\)"),
        ("nb201:-1", r"index must be in \[0, 15625\)"),
        ("nb201:|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown NB-201 operation 'conv'"),
        ({"model": f"nb201:{ARCH}", "kwargs": {"width": 8}}, "NB201Network takes no 'width'.*channels, cells_per"),
    ],
)
def test_bad_nb201_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        candidate(spec)


# --------------------------------------------------------------------------------------- unknown names


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("timm:resnet181", ["'resnet18'", r"timm.list_models\('\*pattern\*'\)"]),
        ("torchvision:resnet", ["'resnet18'", "'resnet34'", r"torchvision.models.list_models\(\)"]),
        ("torchvision:mobilenetv3_small", ["'mobilenet_v3_small'"]),
        ("resnet18", ["did you mean 'timm:resnet18' or 'torchvision:resnet18'", "nb201:<arch|index>", "class_path"]),
        ("tim:resnet18", ["did you mean 'timm:resnet18'", "torchvision:<name>"]),
        ("keras:resnet50", ["timm:<name>", "torchvision:<name>", "nb201:<arch|index>", "callable"]),
        ("timm:", ["names no model"]),
        ("timm:hf-hub:timm/resnet18", ["not supported"]),
        ("timm:resnet18?drop_rate=0.1", ["takes no options", "'kwargs'"]),
    ],
)
def test_unknown_names_suggest_close_ones(spec, expected):
    with pytest.raises(ValueError) as info:
        candidate(spec)
    for pattern in expected:
        assert re.search(pattern, str(info.value)), (pattern, str(info.value))


def test_a_spec_of_the_wrong_type_lists_the_forms():
    with pytest.raises(TypeError, match="a candidate is one of 'timm:<name>'"):
        candidate(3)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- pretrained

PRETRAINED = [
    "timm:resnet18?pretrained=true",
    "torchvision:resnet18?weights=DEFAULT",
    {"model": "timm:test_resnet", "kwargs": {"pretrained": True}},
    {"model": "timm:test_resnet", "kwargs": {"pretrained_cfg": {"file": "w.pth"}}},
    {"model": "timm:test_resnet", "kwargs": {"checkpoint_path": "w.pth"}},
    {"model": "torchvision:resnet18", "kwargs": {"weights": "DEFAULT"}},
    {"model": "torchvision:fasterrcnn_resnet50_fpn", "kwargs": {"weights_backbone": "DEFAULT"}},
    {"class_path": f"{__name__}.tiny_factory", "init_args": {"pretrained": True}},
]


@pytest.mark.parametrize("spec", PRETRAINED, ids=range(len(PRETRAINED)))
def test_pretrained_is_refused_in_every_form(spec):
    with pytest.raises(ValueError, match="pretrained weights") as info:
        candidate(spec)
    message = str(info.value)
    assert "scored at initialisation" in message and "never downloads" in message and "ckpt_path" in message


def test_explicitly_random_weights_are_fine():
    for spec in (
        {"model": "timm:test_resnet", "kwargs": {"pretrained": False}},
        {"model": "torchvision:mobilenet_v3_small", "kwargs": {"weights": None}},
        {"class_path": f"{__name__}.tiny_factory", "init_args": {"pretrained": False}},
    ):
        assert out(build_model(spec, num_classes=3), 3).shape == (2, 3)


# ------------------------------------------------------------------------------------------ bad mappings


@pytest.mark.parametrize(
    "spec, error, message",
    [
        (
            {"model": "timm:test_resnet", "kwarg": {}},
            ValueError,
            r"unknown key\(s\) 'kwarg' \(did you mean 'kwargs'\?\)",
        ),
        ({"model": "timm:test_resnet", "extra": 1}, ValueError, "allowed keys: model, kwargs, name"),
        (
            {"class_path": "torch.nn.Linear", "init_arg": {}},
            ValueError,
            "did you mean 'init_args'.*class_path, init_args",
        ),
        ({"kwargs": {}}, ValueError, "needs a 'model' key"),
        ({"model": "timm:test_resnet", "class_path": "torch.nn.Linear"}, ValueError, "both 'class_path' and 'model'"),
        ({"model": "timm:test_resnet", "kwargs": [1]}, TypeError, "'kwargs' must be a mapping"),
        ({"model": "timm:test_resnet", "kwargs": {"num_classes": 10}}, ValueError, "come from build"),
        ({"model": "timm:test_resnet", "name": ""}, ValueError, "'name' must be a non-empty string"),
        ({"class_path": "torch.nn.Linaer"}, ValueError, "no attribute 'Linaer'; did you mean 'Linear'"),
        ({"class_path": "nonexistent_pkg_xyz.Net"}, ValueError, "no module 'nonexistent_pkg_xyz'"),
        ({"class_path": "Linear"}, ValueError, "dotted path like 'package.module.Class'"),
        ({"class_path": "collections.OrderedDict"}, ValueError, "not an nn.Module subclass"),
        (
            {"class_path": "torch.nn.Linear", "init_args": {"in_feature": 4}},
            ValueError,
            "no argument 'in_feature' \\(did you mean 'in_features'\\?\\)",
        ),
        ({"class_path": f"{__name__}.TinyNet", "init_args": {"num_classes": 3}}, ValueError, "come from build"),
    ],
)
def test_bad_mappings_name_the_problem(spec, error, message):
    with pytest.raises(error, match=message):
        candidate(spec)


class Outer:
    """Holds a nested network class, for class paths through a class attribute."""

    class Inner(TinyNet):
        pass


@pytest.mark.parametrize(
    "path, message",
    [
        ("torch.nn.modulez.Linear", r"'torch\.nn' has no attribute 'modulez'; did you mean 'modules'"),
        ("torch.nn.Linear.Nope", r"'Linear' has no attribute 'Nope'"),
        ("torch.nn.", "dotted path like 'package.module.Class', got 'torch.nn.'"),
        ("torch..nn.Linear", "dotted path like"),
        ("torch.nn.1Linear", "dotted path like"),
        ("timm:resnet18", r"got 'timm:resnet18'; a class_path has no ':' .*\{'model': 'timm:resnet18'\}"),
        ("torch.nn:Linear", "dotted path like"),  # resolve_name's colon form is not a class_path
    ],
)
def test_bad_class_paths_name_the_problem(path, message):
    with pytest.raises(ValueError, match=message):
        candidate({"class_path": path})


def test_class_path_through_a_class_attribute_and_a_submodule():
    assert candidate({"class_path": f"{__name__}.Outer.Inner"}).build(num_classes=3).__class__ is Outer.Inner
    assert candidate({"class_path": "torch.nn.modules.linear.Identity"}).build(num_classes=3).__class__ is nn.Identity


@pytest.fixture
def broken_package(tmp_path, monkeypatch):
    """``gsp_broken_pkg`` (imports) with submodules that fail to import: a missing dependency, a RuntimeError,
    an AttributeError; and ``gsp_broken_top`` whose own import needs a missing dependency."""
    pkg = tmp_path / "gsp_broken_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "needs_dep.py").write_text("import gsp_missing_dependency_xyz\nclass Net: pass\n")
    (pkg / "raises.py").write_text("raise RuntimeError('boom at import')\n")
    (pkg / "bad_attr.py").write_text("import os\nos.no_such_function_xyz\n")
    (tmp_path / "gsp_broken_top.py").write_text("import gsp_missing_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in [m for m in sys.modules if m.startswith(("gsp_broken_pkg", "gsp_broken_top"))]:
        del sys.modules[name]


@pytest.mark.parametrize(
    "path, message",
    [  # the import error of the module itself, not "has no attribute" (resolve_name skips submodule ImportErrors)
        (
            "gsp_broken_pkg.needs_dep.Net",
            r"importing 'gsp_broken_pkg\.needs_dep' failed: ModuleNotFoundError: No module named "
            r"'gsp_missing_dependency_xyz'",
        ),
        ("gsp_broken_pkg.raises.Net", r"importing 'gsp_broken_pkg\.raises' failed: RuntimeError: boom at import"),
        (
            "gsp_broken_pkg.bad_attr.Net",
            r"importing 'gsp_broken_pkg\.bad_attr' failed: AttributeError: .*"
            r"no_such_function_xyz",
        ),
        ("gsp_broken_top.Net", r"importing 'gsp_broken_top' failed: No module named 'gsp_missing_dependency_xyz'"),
        ("gsp_broken_pkg.Nett", r"'gsp_broken_pkg' has no attribute 'Nett'"),
    ],
)
def test_class_path_import_errors_name_the_module_and_its_error(broken_package, path, message):
    with pytest.raises(ValueError, match=message):
        candidate({"class_path": path})


def test_a_factory_returning_something_else_is_a_type_error():
    with pytest.raises(TypeError, match=r"returned int .* not an nn.Module"):
        build_model(not_a_module, num_classes=3)
    with pytest.raises(TypeError, match=r"class_path .*not_a_module.* returned int"):
        build_model({"class_path": f"{__name__}.not_a_module"}, num_classes=3)
    with pytest.raises(ValueError, match=r"not an nn.Module subclass"):
        candidate(dict)  # type: ignore[arg-type]


def test_a_failing_build_names_the_candidate_and_the_error():
    c = candidate("torchvision:raft_small")  # an optical-flow model: no classifier, no num_classes
    with pytest.raises(ValueError, match=r"could not build candidate 'torchvision:raft_small'.*num_classes") as info:
        c.build(num_classes=10)
    assert isinstance(info.value.__cause__, TypeError)
    with pytest.raises(ValueError, match="no Conv2d with 3 input channels"):
        build_model("torchvision:r3d_18", num_classes=4, in_chans=1)  # a video model: Conv3d stem
    with pytest.raises(ValueError, match="needs square inputs"):
        build_model("torchvision:vit_b_32", num_classes=4, input_size=(64, 32))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_classes": 0}, "num_classes must be a positive int"),
        ({"num_classes": True}, "num_classes must be a positive int"),
        ({"num_classes": 3, "in_chans": 0}, "in_chans must be a positive int"),
        ({"num_classes": 3, "input_size": (32,)}, r"input_size must be \(height, width\)"),
        ({"num_classes": 3, "input_size": 32}, r"input_size must be \(height, width\)"),
    ],
)
def test_bad_build_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        candidate("timm:test_resnet").build(**kwargs)


# ------------------------------------------------------------------------------------- names and listing


def test_names_and_candidate_objects():
    assert candidate("timm:test_resnet").name == "timm:test_resnet"
    assert candidate(" timm : test_resnet ").name == "timm:test_resnet"
    assert candidate({"model": "timm:test_resnet", "kwargs": {"drop_rate": 0.1}}).name == (
        "timm:test_resnet(drop_rate=0.1)"
    )
    assert candidate({"model": "timm:test_resnet", "name": "tiny"}).name == "tiny"
    assert candidate("timm:test_resnet", name="mine").name == "mine"
    assert candidate(tiny_factory).name == "tiny_factory"
    assert candidate(functools.partial(tiny_factory)).name == "partial(tiny_factory)"

    spec = {"model": "timm:test_resnet", "kwargs": {"drop_rate": 0.1}}
    c = candidate(spec)
    assert c.spec is spec and c == candidate(dict(spec)) and len({c, candidate(dict(spec))}) == 1
    assert candidate(c) is c and candidate(c, name="renamed") == Candidate("renamed", spec)
    with pytest.raises(ValueError, match="non-empty string"):
        candidate("timm:test_resnet", name=" ")


def test_list_candidates():
    names = list_candidates("*resnet18")
    assert "timm:resnet18" in names and "torchvision:resnet18" in names
    assert all(fnmatch.fnmatch(n.partition(":")[2], "*resnet18") for n in names)
    assert names.index("timm:resnet18") < names.index("torchvision:resnet18")
    assert all(candidate(n).name == n for n in names)
    assert list_candidates("no_such_model_*") == []


# --------------------------------------------------------------------------------------------------- zen

ZEN = "SuperConvK3BNRELU(3,8,1,1)SuperResK3K3(8,16,2,8,1)SuperConvK1BNRELU(16,32,1,1)"


def test_zen_structure_builds_the_masternet_with_its_options():
    from gradsign_pl.spaces.zen import MasterNet, count_params

    torch.manual_seed(1)
    built = build_model({"model": f"zen:{ZEN}", "kwargs": {"dropout": 0.2}}, num_classes=7)
    torch.manual_seed(1)
    direct = MasterNet(ZEN, 7, dropout=0.2)
    assert isinstance(built, MasterNet) and built.structure == ZEN
    for (k, a), b in zip(direct.state_dict().items(), built.state_dict().values()):
        assert torch.equal(a, b), k
    assert sum(p.numel() for p in built.parameters()) == count_params(ZEN, 7)
    assert out(built, 3).shape == (2, 7)


def test_zen_first_block_must_match_in_chans_at_build_time():
    c = candidate(f"zen:{ZEN}")  # the spec alone does not know the data's channels
    with pytest.raises(ValueError, match="in_chans=1 input channels, got 3"):
        c.build(num_classes=10, in_chans=1)


@pytest.mark.parametrize(
    "spec, message",
    [
        (f"zen:{ZEN[:-1]}", "zen:"),
        ("zen:SuperConvK3BNRELU(3,8,1,1)SuperResK3K3(16,16,2,8,1)", "channel chaining broken"),
        (
            {"model": f"zen:{ZEN}", "kwargs": {"width": 2}},
            "MasterNet takes no 'width'; its extra arguments are use_se, dropout",
        ),
    ],
)
def test_bad_zen_specs_are_refused_with_the_reason(spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        candidate(spec)
