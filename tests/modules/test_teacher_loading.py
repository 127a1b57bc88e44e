"""load_teacher reads checkpoints without running code from them: pickled payloads never execute by default, the
full unpickler needs trust_checkpoint=True (and warns), and the forms a timm / Lightning B3 is saved in load safely."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gradsign_pl.candidates import build_model
from gradsign_pl.cli.stages import DistillOptions, prepare_teacher
from gradsign_pl.modules.classification import ClassificationModule
from gradsign_pl.modules.teacher import load_teacher

TEACHER = "timm:test_efficientnet"  # ~0.1 M parameters, builds in milliseconds


class OpenPayload:
    """Unpickling it calls ``open(marker, "w")``: the marker file appears iff the payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class ShellPayload:
    """Unpickling it runs ``touch marker`` through ``os.system`` (a module torch's safe unpickler blocks)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.fixture(scope="module")
def net() -> nn.Module:
    torch.manual_seed(0)
    return build_model(TEACHER, num_classes=3).eval()


def assert_same_weights(loaded: nn.Module, net: nn.Module) -> None:
    own = net.state_dict()
    assert loaded.state_dict().keys() == own.keys()
    for k, v in own.items():
        assert torch.equal(loaded.state_dict()[k], v), k


# --------------------------------------------------------------------------- payloads


def test_payload_only_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth"
    torch.save(OpenPayload(marker), path)
    with pytest.raises(ValueError) as info:
        load_teacher(TEACHER, path, num_classes=3)
    assert not marker.exists()
    msg = str(info.value)
    assert str(path) in msg
    assert "io.open" in msg  # what the safe unpickler refused
    assert "torch.save(model.state_dict(), path)" in msg and "safetensors" in msg  # the fix ...
    assert "trust_checkpoint=True" in msg and "distill.trust_checkpoint: true" in msg  # ... or the option
    assert "\n" not in msg and "Please use `torch.serialization" not in msg  # torch's advice is not repeated


def test_payload_beside_the_weights_never_runs_and_the_weights_load(tmp_path, net):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "weights_and_payload.pth"
    torch.save({"state_dict": net.state_dict(), "extra": OpenPayload(marker)}, path)
    with pytest.raises(pickle.UnpicklingError):  # the case is real: a plain safe load refuses the file
        torch.load(path, weights_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: the full unpickler is not involved
        loaded = load_teacher(TEACHER, path, num_classes=3)
    assert not marker.exists()
    assert_same_weights(loaded, net)


def test_payload_from_a_blocked_module_is_refused_and_never_runs(tmp_path, net):
    marker = tmp_path / "shell_ran"
    path = tmp_path / "shell.pth"
    torch.save({"state_dict": net.state_dict(), "extra": ShellPayload(marker)}, path)
    with pytest.raises(ValueError, match=r"refused it: .*posix\.system.*trust_checkpoint=True"):
        load_teacher(TEACHER, path, num_classes=3)
    assert not marker.exists()


def test_legacy_format_payload_is_refused_without_running_it(tmp_path, net):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "legacy_evil.pth"
    torch.save(OpenPayload(marker), path, _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match=r"refused it: .*io\.open.*trust_checkpoint"):
        load_teacher(TEACHER, path, num_classes=3)
    assert not marker.exists()
    legacy = tmp_path / "legacy_state_dict.pth"  # a legacy-format state_dict is still fine
    torch.save(net.state_dict(), legacy, _use_new_zipfile_serialization=False)
    assert_same_weights(load_teacher(TEACHER, legacy, num_classes=3), net)


def test_full_module_pickle_needs_trust_checkpoint_and_warns(tmp_path, net):
    path = tmp_path / "whole_model.pth"
    torch.save(net, path)  # a pickled nn.Module: its weights live inside pickled classes
    with pytest.raises(ValueError, match=r"EfficientNet.*trust_checkpoint=True") as info:
        load_teacher(TEACHER, path, num_classes=3)
    assert str(path) in str(info.value)
    with pytest.warns(UserWarning, match=rf"{path.name}.*arbitrary code") as record:
        loaded = load_teacher(TEACHER, path, num_classes=3, trust_checkpoint=True)
    assert any(str(path) in str(w.message) for w in record)
    assert_same_weights(loaded, net)


def test_trust_checkpoint_runs_a_payload_only_when_asked(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth"
    torch.save(OpenPayload(marker), path)
    with pytest.warns(UserWarning, match="arbitrary code"), pytest.raises(ValueError, match="holds no weights"):
        load_teacher(TEACHER, path, num_classes=3, trust_checkpoint=True)
    assert marker.exists()  # the documented risk of the option


def test_trust_checkpoint_does_not_unpickle_files_the_safe_path_reads(tmp_path, net):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "weights_and_payload.pth"
    torch.save({"state_dict": net.state_dict(), "extra": OpenPayload(marker)}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_teacher(TEACHER, path, num_classes=3, trust_checkpoint=True)
    assert not marker.exists()
    assert_same_weights(loaded, net)


def test_recipe_option_reaches_load_teacher(tmp_path, net):
    path = tmp_path / "whole_model.pth"
    torch.save(net, path)
    data = SimpleNamespace(image_size=32, num_classes=3, in_chans=3)
    assert DistillOptions().trust_checkpoint is False

    def no_training(*_):
        raise AssertionError("the teacher exists and must not be trained")

    with pytest.raises(ValueError, match=r"distill.trust_checkpoint: true"):
        prepare_teacher(DistillOptions(teacher=TEACHER, checkpoint=str(path)), data, no_training)
    with pytest.warns(UserWarning, match="arbitrary code"):
        teacher, _ = prepare_teacher(
            DistillOptions(teacher=TEACHER, checkpoint=str(path), trust_checkpoint=True), data, no_training
        )
    assert_same_weights(teacher, net)


# --------------------------------------------------------------------------- forms a timm / Lightning B3 comes in


def _lightning_fit_checkpoint(net: nn.Module, folder: Path) -> Path:
    """A checkpoint written by a real (2-step) fit: optimizer, scheduler, callback and loop states included."""
    module = ClassificationModule(net, 3)
    data = TensorDataset(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]))
    checkpoint = ModelCheckpoint(dirpath=folder, save_last=True)
    trainer = Trainer(
        max_steps=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[checkpoint],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, DataLoader(data, batch_size=2))
    return Path(checkpoint.last_model_path)


@pytest.mark.parametrize(
    "form",
    [
        "timm_train_checkpoint",
        "module_prefix",
        "model_prefix",
        "safetensors",
        "safetensors_module_prefix",
        "lightning_fit",
        "lightning_with_unsafe_hparams",
    ],
)
def test_timm_and_lightning_forms_load_safely(tmp_path, form):
    torch.manual_seed(0)
    net = build_model(TEACHER, num_classes=3).eval()
    sd = net.state_dict()
    path = tmp_path / "teacher.pth"
    refused_by_plain_safe_load = False
    if form == "timm_train_checkpoint":  # timm's CheckpointSaver: argparse args, DDP keys, EMA weights
        torch.save(
            {
                "epoch": 3,
                "arch": "test_efficientnet",
                "state_dict": {f"module.{k}": v for k, v in sd.items()},
                "optimizer": torch.optim.SGD(net.parameters(), lr=0.1).state_dict(),
                "version": 2,
                "args": argparse.Namespace(model="test_efficientnet", lr=0.1, data_dir=Path("/data")),
                "metric": 12.5,
                "state_dict_ema": {k: v.clone() for k, v in sd.items()},
            },
            path,
        )
        path = path.rename(tmp_path / "last.pth.tar")
        refused_by_plain_safe_load = True
    elif form in ("module_prefix", "model_prefix"):
        prefix = form.split("_")[0] + "."
        torch.save({prefix + k: v for k, v in sd.items()}, path)
    elif form.startswith("safetensors"):
        pytest.importorskip("safetensors")
        from safetensors.torch import save_file

        prefix = "module." if form.endswith("prefix") else ""
        path = tmp_path / "teacher.safetensors"
        save_file({prefix + k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        path = _lightning_fit_checkpoint(net, tmp_path / "ckpt")
        saved = torch.load(path, weights_only=True)  # our own Lightning checkpoints need nothing else
        assert {"state_dict", "optimizer_states", "callbacks", "hyper_parameters"} <= saved.keys()
        sd = {k[len("backbone.") :]: v for k, v in saved["state_dict"].items()}
        if form == "lightning_with_unsafe_hparams":  # e.g. a user's module that saved a Path / Namespace
            saved["hyper_parameters"]["data_root"] = Path("/data")
            saved["hyper_parameters"]["cli_args"] = argparse.Namespace(seed=1)
            torch.save(saved, path)
            refused_by_plain_safe_load = True
    if refused_by_plain_safe_load:
        with pytest.raises(pickle.UnpicklingError):
            torch.load(path, weights_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_teacher(TEACHER, path, num_classes=3)
    assert loaded.state_dict().keys() == sd.keys()
    for k, v in sd.items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_a_payload_pickled_with_a_newer_protocol_is_refused_saying_why(tmp_path):
    import pickle

    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"state_dict": OpenPayload(marker)}, protocol=4))  # not torch.save's format
    with pytest.raises(ValueError, match=r"refused it: Unsupported operand \d+; no weights"):
        load_teacher(TEACHER, path, num_classes=3)
    assert not marker.exists()


# ------------------------------------------------- an ImageNet B3 from disk, through the ImageNet recipe's options


@pytest.fixture(scope="module")
def b3() -> nn.Module:
    torch.manual_seed(0)
    return build_model("timm:tf_efficientnet_b3", num_classes=3).eval()


@pytest.mark.parametrize(
    "form", ["state_dict", "module_prefix", "model_prefix", "safetensors", "safetensors_model_prefix", "lightning"]
)
def test_the_imagenet_recipes_b3_teacher_loads_from_every_form_and_predicts_as_saved(tmp_path, b3, form):
    """``recipes/zen_imagenet.yaml``'s ``distill`` section, pointed at a B3 saved the ways timm / Lightning users
    save one, gives a teacher whose logits at the recipe's teacher resolution equal the saved model's."""
    import yaml

    recipe = yaml.safe_load((Path(__file__).resolve().parents[2] / "recipes" / "zen_imagenet.yaml").read_text())
    sd = b3.state_dict()
    path = tmp_path / "b3.pth"
    if form in ("state_dict", "module_prefix", "model_prefix"):
        prefix = "" if form == "state_dict" else form.split("_")[0] + "."
        torch.save({prefix + k: v for k, v in sd.items()}, path)
    elif form.startswith("safetensors"):
        pytest.importorskip("safetensors")
        from safetensors.torch import save_file

        path = tmp_path / "b3.safetensors"
        prefix = "model." if form.endswith("prefix") else ""
        save_file({prefix + k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        path = _lightning_fit_checkpoint(build_model("timm:tf_efficientnet_b3", num_classes=3), tmp_path / "ckpt")
        saved = torch.load(path, weights_only=True)
        sd = {k[len("backbone.") :]: v for k, v in saved["state_dict"].items()}
    options = DistillOptions(**{**recipe["distill"], "checkpoint": str(path)})
    assert options.teacher == "timm:tf_efficientnet_b3" and options.teacher_resolution == 320

    def no_training(*_):
        raise AssertionError("the checkpoint exists: the teacher must be loaded, not trained")

    data = SimpleNamespace(image_size=224, num_classes=3, in_chans=3)
    teacher, _ = prepare_teacher(options, data, no_training)
    reference = build_model("timm:tf_efficientnet_b3", num_classes=3)
    reference.load_state_dict(sd)
    x = torch.randn(2, 3, 320, 320, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(teacher.eval()(x), reference.eval()(x))


# --------------------------------------------------------------------------- a teacher trained by the recipe


def test_resized_input_feeds_the_model_its_side_and_saves_without_a_prefix():
    from gradsign_pl.modules.teacher import ResizedInput

    seen = []
    inner = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    inner.register_forward_hook(lambda _m, inp, _o: seen.append(tuple(inp[0].shape)))
    wrapped = ResizedInput(inner, 48)
    x = torch.randn(2, 3, 32, 32)
    out = wrapped(x)
    expected = inner(torch.nn.functional.interpolate(x, size=(48, 48), mode="bilinear", align_corners=False))
    assert seen[0] == (2, 3, 48, 48) and torch.equal(out, expected)
    assert set(wrapped.model.state_dict()) == {"0.weight", "0.bias"}
    with pytest.raises(ValueError, match="side must be a positive int"):
        ResizedInput(inner, 0)


def test_teacher_stage_trains_at_teacher_resolution_and_retrains_when_its_settings_change(tmp_path, capsys):
    data = SimpleNamespace(image_size=32, num_classes=3, in_chans=3)
    path = tmp_path / "teacher.pth"
    options = DistillOptions(teacher=TEACHER, checkpoint=str(path), train_teacher_epochs=1, teacher_resolution=64)
    calls = []

    def train(backbone, name):  # what gradsign-fit's trainer sees: 32 px batches in, the teacher gets 64 px
        seen = []
        handle = backbone.model.register_forward_pre_hook(lambda _m, inp: seen.append(tuple(inp[0].shape)))
        backbone(torch.randn(2, 3, 32, 32))
        handle.remove()
        calls.append((name, seen[0]))
        return {"status": "trained", "test_acc": 0.5}

    teacher, info = prepare_teacher(options, data, train, identity="a" * 64)
    assert calls == [(f"teacher {TEACHER}", (2, 3, 64, 64))]
    assert info["resolution"] == 64 and info["test_acc"] == 0.5 and info["trained_here"]
    record = json.loads(path.with_name("teacher.pth.json").read_text())
    assert record["identity"] == "a" * 64 and record["resolution"] == 64
    loaded = load_teacher(TEACHER, path, num_classes=3)  # saved without the resizing wrapper
    assert_same_weights(loaded, teacher)

    prepare_teacher(options, data, train, identity="a" * 64)  # same settings: loaded, not trained
    assert len(calls) == 1
    prepare_teacher(options, data, train, identity="b" * 64)  # e.g. more teacher epochs: trained again, and said
    assert len(calls) == 2 and "under other settings (identity aaaaaaaaaa, now bbbbbbbbbb)" in capsys.readouterr().out

    path.with_name("teacher.pth.json").unlink()  # the user's own weights (no record): always loaded as they are
    prepare_teacher(options, data, train, identity="c" * 64)
    assert len(calls) == 2
