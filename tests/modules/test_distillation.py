"""DistillationModule and load_teacher: loading rules and errors, the loss formula, a frozen eval-mode teacher,
real (tiny, CPU) Lightning fits with logit and feature distillation, bf16-mixed, checkpoints."""

from __future__ import annotations

import itertools
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, Trainer, seed_everything
from torch import Tensor, nn

from gradsign_pl.candidates import build_model
from gradsign_pl.data.datamodules import ImageFolderDataModule
from gradsign_pl.modules.classification import ClassificationModule
from gradsign_pl.modules.distillation import DistillationModule, soft_cross_entropy
from gradsign_pl.modules.teacher import load_teacher, save_teacher

TEACHER = "timm:test_efficientnet"  # ~0.1 M parameters, builds in milliseconds, has timm feature_info


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers|log_every_n_steps).*")
        warnings.filterwarnings("ignore", category=UserWarning, module="lightning")
        yield


# --------------------------------------------------------------------------- helpers


class TinyStudent(nn.Module):
    """Two conv stages (reductions 2 and 4) and a linear head; exposes stage_features / feature_channels."""

    feature_channels = (8, 16)

    def __init__(self, num_classes: int = 2, features: bool = True) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))
        if not features:
            self.feature_channels = None  # type: ignore[assignment]

    def stage_features(self, x: Tensor) -> list[Tensor]:
        a = self.stage1(x)
        return [a, self.stage2(a)]

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stage2(self.stage1(x)))


def plain_student(num_classes: int = 2) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, num_classes),
    )


def teacher(num_classes: int = 2) -> nn.Module:
    torch.manual_seed(1)
    t = build_model(TEACHER, num_classes=num_classes)
    t.eval().requires_grad_(False)
    return t


class FixedLogits(nn.Module):
    """Returns the given logits whatever the input; records the input shape."""

    def __init__(self, logits: Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits.clone())
        self.bn = nn.BatchNorm1d(1)  # to see train/eval flips
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(tuple(x.shape))
        return self.logits + 0 * x.mean()


class LearnedLogits(nn.Module):
    """A student whose logits are a parameter (its input is ignored)."""

    def __init__(self, logits: Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, x: Tensor) -> Tensor:
        return self.logits + 0 * x.mean()


class LossRecorder(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.teacher_modes: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.teacher_modes += [m.training for m in pl_module.teacher.modules()] if pl_module.teacher is not None else []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def trainer(**kw) -> Trainer:
    args = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    args.update(kw)
    return Trainer(**args)


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    """root/{train,val}/{red,blue}/*.png, 8 + 4 noisy 32x32 images per class, colour gives the class."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 4)):
        for label, colour in (("blue", (30, 60, 220)), ("red", (220, 40, 30))):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                img = np.clip(np.array(colour) + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{i}.png")
    return root


def datamodule(root: Path) -> ImageFolderDataModule:
    return ImageFolderDataModule(str(root), image_size=32, batch_size=8, num_workers=0)


# --------------------------------------------------------------------------- load_teacher


def test_load_teacher_round_trip_default_architecture(tmp_path):
    torch.manual_seed(0)
    net = build_model("timm:efficientnet_b3", num_classes=10).eval()
    path = save_teacher(net, tmp_path / "sub" / "b3.pt")
    t = load_teacher(checkpoint=path, num_classes=10)
    assert not t.training and not any(m.training for m in t.modules())
    assert not any(p.requires_grad for p in t.parameters())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(t(x), net(x))


@pytest.mark.parametrize("form", ["wrapped_state_dict", "model_key", "ddp_prefix", "lightning", "safetensors"])
def test_load_teacher_accepts_common_checkpoint_forms(tmp_path, form):
    torch.manual_seed(0)
    net = build_model(TEACHER, num_classes=3).eval()
    sd = net.state_dict()
    path = tmp_path / "teacher.pth"
    if form == "wrapped_state_dict":
        torch.save({"state_dict": sd, "epoch": 3}, path)
    elif form == "model_key":
        torch.save({"model": sd, "optimizer": {}}, path)
    elif form == "ddp_prefix":
        torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    elif form == "lightning":
        module = ClassificationModule(net, 3)
        t = trainer(max_steps=0)
        t.strategy.connect(module)
        t.save_checkpoint(path)
        assert all(k.startswith("backbone.") for k in torch.load(path, weights_only=True)["state_dict"])
    else:
        pytest.importorskip("safetensors")
        from safetensors.torch import save_file

        path = tmp_path / "teacher.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    loaded = load_teacher(TEACHER, path, num_classes=3)
    for k, v in sd.items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_load_teacher_missing_file_says_never_downloaded(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist; the teacher is never downloaded: train one .*local"):
        load_teacher(TEACHER, tmp_path / "nope.pt", num_classes=2)
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        load_teacher(TEACHER, None)


def test_load_teacher_wrong_num_classes_names_parameter_shapes_and_fix(tmp_path):
    path = save_teacher(build_model(TEACHER, num_classes=10), tmp_path / "t.pt")
    with pytest.raises(ValueError, match=r"'classifier\.weight'.*\(10, \d+\).*\(1000, \d+\).*pass num_classes=10"):
        load_teacher(TEACHER, path)  # default num_classes=1000


def test_load_teacher_wrong_in_chans_suggests_in_chans(tmp_path):
    path = save_teacher(build_model(TEACHER, num_classes=2, in_chans=1), tmp_path / "t.pt")
    with pytest.raises(ValueError, match=r"pass in_chans=1"):
        load_teacher(TEACHER, path, num_classes=2)


def test_load_teacher_unrelated_state_dict_lists_missing_and_unexpected(tmp_path):
    path = save_teacher(plain_student(), tmp_path / "other.pt")
    with pytest.raises(ValueError) as info:
        load_teacher(TEACHER, path, num_classes=2)
    msg = str(info.value)
    assert "are missing" in msg and "unexpected" in msg and "'conv_stem.weight'" in msg and "'0.weight'" in msg
    assert "more)" in msg  # long lists are cut at 5 with the rest counted


def test_load_teacher_unreadable_file(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="cannot read teacher checkpoint"):
        load_teacher(TEACHER, path, num_classes=2)
    torch.save({"epoch": 1, "note": "no weights"}, tmp_path / "empty.pt")
    with pytest.raises(ValueError, match="holds no weights"):
        load_teacher(TEACHER, tmp_path / "empty.pt", num_classes=2)


# --------------------------------------------------------------------------- loss formula


def test_loss_matches_hand_computation_with_teacher_resolution():
    s = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]])
    t = torch.tensor([[1.0, 0.0, 3.0], [-1.0, 2.0, 0.0]])
    y = torch.tensor([0, 1])
    T, w, ls = 2.0, 0.7, 0.1
    module = DistillationModule(
        LearnedLogits(s),
        3,
        teacher=FixedLogits(t),
        teacher_resolution=20,
        temperature=T,
        kd_weight=w,
        label_smoothing=ls,
    )
    out = module.distillation_losses(torch.randn(2, 3, 12, 12), y)

    def log_softmax(z):
        z = z.double()
        return z - torch.log(torch.exp(z).sum(1, keepdim=True))

    onehot = F.one_hot(y, 3).double() * (1 - ls) + ls / 3
    ce = -(onehot * log_softmax(s)).sum(1).mean()
    p_t = torch.exp(log_softmax(t / T))
    kd = -(p_t * log_softmax(s / T)).sum(1).mean() * T * T
    assert out["ce_loss"].item() == pytest.approx(ce.item(), rel=1e-5)
    assert out["kd_loss"].item() == pytest.approx(kd.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx((ce + w * kd).item(), rel=1e-5)
    assert module.teacher.seen == [(2, 3, 20, 20)]  # resized for the teacher
    # KL form: same thing minus the teacher's entropy
    kl = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean") * T * T
    entropy = -(p_t * torch.log(p_t)).sum(1).mean() * T * T
    assert kd.item() == pytest.approx((kl + entropy).item(), rel=1e-5)


def test_zennas_defaults_are_ce_plus_teacher_cross_entropy():
    s, t, y = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    module = DistillationModule(LearnedLogits(s), 5, teacher=FixedLogits(t))
    out = module.distillation_losses(torch.zeros(4, 3, 8, 8), y)
    expected = F.cross_entropy(s, y, label_smoothing=0.1) - (F.softmax(t, 1) * F.log_softmax(s, 1)).sum(1).mean()
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert module.teacher.seen == [(4, 3, 8, 8)]  # teacher_resolution=None: the student's input as is
    kd = expected - F.cross_entropy(s, y, label_smoothing=0.1)
    assert soft_cross_entropy(s, t).item() == pytest.approx(kd.item(), rel=1e-5)


def test_without_teacher_loss_is_cross_entropy():
    s, y = torch.randn(6, 4), torch.randint(0, 4, (6,))
    module = DistillationModule(LearnedLogits(s), 4, label_smoothing=0.2)
    out = module.distillation_losses(torch.zeros(6, 3, 8, 8), y)
    assert set(out) == {"loss", "ce_loss", "logits"}
    assert torch.allclose(out["loss"], F.cross_entropy(s, y, label_smoothing=0.2))
    loss = module.training_step((torch.zeros(6, 3, 8, 8), y), 0)
    assert torch.allclose(loss, F.cross_entropy(s, y, label_smoothing=0.2))


def test_mixup_mixes_inputs_and_targets_with_torch_rng():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 0])
    x = torch.randn(4, 3, 8, 8)
    module = DistillationModule(LearnedLogits(s), 3, teacher=FixedLogits(t), mixup_alpha=0.4, label_smoothing=0.0)
    torch.manual_seed(5)
    loss = module.training_step((x, y), 0)
    torch.manual_seed(5)
    lam = float(torch.distributions.Beta(0.4, 0.4).sample())
    perm = torch.randperm(4)
    assert 0.0 < lam < 1.0
    ce = lam * F.cross_entropy(s, y) + (1 - lam) * F.cross_entropy(s, y[perm])
    assert loss.item() == pytest.approx((ce + soft_cross_entropy(s, t)).item(), rel=1e-5)


# --------------------------------------------------------------------------- the teacher stays frozen


def test_teacher_is_frozen_eval_and_outside_the_optimizer_and_hparams():
    t = build_model(TEACHER, num_classes=2)  # handed over in train mode with gradients on
    module = DistillationModule(TinyStudent(), 2, teacher=t, feature_weight=1.0)
    assert not t.training and not any(p.requires_grad for p in t.parameters())
    module.train()
    assert module.training and module.backbone.training and module.feature_projections.training
    assert not any(m.training for m in module.teacher.modules())
    module.eval()
    module.train(True)
    assert not any(m.training for m in module.teacher.modules())
    opt = module.configure_optimizers()["optimizer"]
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not in_opt & {id(p) for p in t.parameters()}
    student = [*module.backbone.parameters(), *module.feature_projections.parameters()]
    assert {id(p) for p in student} == in_opt
    assert "teacher" not in module.hparams
    hp = module.training_hyperparameters()
    assert "teacher" not in hp and hp["feature_weight"] == 1.0 and hp["temperature"] == 1.0
    DistillationModule(TinyStudent(), 2, **hp)  # the hyperparameters build a module again


def test_lr_schedule_linear_warmup_then_cosine_to_zero():
    from types import SimpleNamespace

    module = DistillationModule(plain_student(), 2, lr=0.2, warmup_fraction=0.1)
    module._trainer = SimpleNamespace(estimated_stepping_batches=100)
    cfg = module.configure_optimizers()
    opt, sched = cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0]  # no decay on biases / BN
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.02) and lrs[9] == pytest.approx(0.2)
    assert lrs[10] == pytest.approx(0.2) and lrs[55] == pytest.approx(0.1, rel=0.05)
    assert lrs[99] == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))


def _documented_lr(step: int, total: int, warmup: int, lr: float) -> float:
    """The schedule the docstring states (and the former hand-written LambdaLR computed), at optimiser step ``step``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _lrs(module: DistillationModule, steps: int) -> list[list[float]]:
    cfg = module.configure_optimizers()
    opt, sched = cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]
    out = []
    for _ in range(steps):
        out.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize(
    "total,warmup_fraction,warmup",
    [
        (100, 0.1, 10),
        (1000, 0.05, 50),
        (7, 0.0, 0),
        (1, 0.0, 0),
        (10, 0.05, 0),  # round(0.5) = 0: no warm-up
        (10, 0.15, 2),
        (3, 0.4, 1),
        (2, 0.99, 2),
        (5, 0.5, 2),
    ],
)
def test_lr_schedule_is_torch_schedulers_matching_the_documented_formula(total, warmup_fraction, warmup):
    from types import SimpleNamespace

    lr = 0.3
    module = DistillationModule(plain_student(), 2, lr=lr, warmup_fraction=warmup_fraction)
    module._trainer = SimpleNamespace(estimated_stepping_batches=total)
    sched = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    schedulers = torch.optim.lr_scheduler
    assert type(sched) is (schedulers.SequentialLR if warmup else schedulers.CosineAnnealingLR)
    got = _lrs(module, total + 1)  # steps 0 .. total (the last one is where the cosine reaches 0)
    for step, per_group in enumerate(got):
        want = _documented_lr(step, total, warmup, lr)
        assert per_group == pytest.approx([want] * len(per_group), rel=0, abs=1e-12), (step, per_group, want)
    if warmup:
        assert got[0][0] == pytest.approx(lr / warmup, abs=1e-15) and got[warmup - 1][0] == pytest.approx(lr)
    if total > warmup:
        assert got[total][0] == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("saved_after", [1, 3, 6])  # W = 4: inside the warm-up, at the milestone, in the cosine
def test_lr_schedule_resumes_from_its_state_dict(saved_after):
    from types import SimpleNamespace

    def configured():
        module = DistillationModule(plain_student(), 2, lr=0.1, warmup_fraction=0.2)
        module._trainer = SimpleNamespace(estimated_stepping_batches=20)
        cfg = module.configure_optimizers()
        return cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]

    opt, sched = configured()
    whole = []
    for step in range(20):
        whole.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        if step == saved_after:
            saved = (opt.state_dict(), sched.state_dict())
    opt, sched = configured()  # a fresh run, as Lightning builds it on resume, then the saved states
    opt.load_state_dict(saved[0])
    sched.load_state_dict(saved[1])
    resumed = []
    for _ in range(saved_after + 1, 20):
        resumed.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert resumed == pytest.approx(whole[saved_after + 1 :], rel=0, abs=1e-15)


# --------------------------------------------------------------------------- real fits


def test_distillation_fit_lowers_the_loss_and_leaves_the_teacher_untouched(image_root, tmp_path):
    seed_everything(0)
    t = teacher(2)
    before = {k: v.clone() for k, v in t.state_dict().items()}
    module = DistillationModule(
        plain_student(2), 2, teacher=t, teacher_resolution=48, lr=0.05, warmup_fraction=0.0, optimizer="sgd"
    )
    rec = LossRecorder()
    tr = trainer(max_epochs=8, callbacks=[rec])
    tr.fit(module, datamodule=datamodule(image_root))
    assert len(rec.losses) == 16
    assert all(math.isfinite(v) for v in rec.losses)
    assert np.mean(rec.losses[-4:]) < rec.losses[0] - 0.05, rec.losses
    assert rec.teacher_modes and not any(rec.teacher_modes)  # eval at every training step
    for k, v in t.state_dict().items():  # BN running statistics (and weights) unchanged
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in t.parameters())
    metrics = tr.callback_metrics
    for key in ("train/loss", "train/ce_loss", "train/kd_loss", "val/acc", "val/acc5"):
        assert key in metrics, key
    assert "train/feature_loss" not in metrics
    assert float(metrics["val/acc5"]) == 1.0  # top-min(5, 2) of 2 classes

    # checkpoint without teacher weights; strict round trip
    ckpt = tmp_path / "student.ckpt"
    tr.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=True)
    assert saved["state_dict"] and not any(k.startswith("teacher.") for k in saved["state_dict"])
    assert "teacher" not in saved["hyper_parameters"]
    restored = DistillationModule.load_from_checkpoint(ckpt, backbone=plain_student(2), teacher=teacher(2))
    for k, v in module.backbone.state_dict().items():
        assert torch.equal(restored.backbone.state_dict()[k], v), k
    assert restored.hparams.teacher_resolution == 48
    # the student's checkpoint also serves as a teacher checkpoint (backbone.* keys)
    again = load_teacher(lambda num_classes: plain_student(num_classes), ckpt, num_classes=2)
    assert torch.equal(again[-1].weight, module.backbone[-1].weight)


def test_feature_distillation_fit_bf16(image_root):
    seed_everything(0)
    t = teacher(2)
    before = {k: v.clone() for k, v in t.state_dict().items()}
    module = DistillationModule(
        TinyStudent(2), 2, teacher=t, feature_weight=1.0, lr=0.05, warmup_fraction=0.0, mixup_alpha=0.2
    )
    # stages paired with the teacher's last two (reductions 16 and 32): channels 48 and 64
    assert module._teacher_modules == ["blocks.3", "blocks.4"]
    assert [p.out_channels for p in module.feature_projections] == [48, 64]
    assert [p.in_channels for p in module.feature_projections] == [8, 16]
    rec = LossRecorder()
    dtypes: list[torch.dtype] = []
    module.backbone.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    tr = trainer(max_steps=3, precision="bf16-mixed", callbacks=[rec], limit_val_batches=1)
    tr.fit(module, datamodule=datamodule(image_root))
    assert dtypes and set(dtypes) == {torch.bfloat16}  # really ran under bf16 autocast
    assert len(rec.losses) == 3 and all(math.isfinite(v) for v in rec.losses)
    feat = tr.callback_metrics["train/feature_loss"]
    assert math.isfinite(float(feat)) and float(feat) > 0
    opt_params = {id(p) for g in tr.optimizers[0].param_groups for p in g["params"]}
    assert {id(p) for p in module.feature_projections.parameters()} <= opt_params
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.feature_projections.parameters())
    assert not any(m.training for m in t.modules())
    for k, v in t.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_feature_stages_pair_by_reduction_when_given():
    class WithReductions(TinyStudent):
        feature_reductions = (2, 4)

    module = DistillationModule(WithReductions(2), 2, teacher=teacher(2), feature_weight=0.5, teacher_resolution=32)
    assert module._teacher_modules == ["blocks.0", "blocks.1"]
    out = module.distillation_losses(torch.randn(2, 3, 16, 16), torch.tensor([0, 1]))
    assert torch.isfinite(out["feature_loss"]) and out["feature_loss"] > 0
    out["loss"].backward()
    assert all(p.grad is not None for p in module.feature_projections.parameters())
    assert all(p.grad is None for p in module.teacher.parameters())


def test_feature_stages_select_the_distilled_student_stages_by_reduction():
    class WithReductions(TinyStudent):
        feature_reductions = (2, 4)

    module = DistillationModule(WithReductions(2), 2, teacher=teacher(2), feature_weight=1.0, feature_stages=[4])
    assert module._teacher_modules == ["blocks.1"] and len(module.feature_projections) == 1
    assert module.feature_projections[0].in_channels == 16
    out = module.distillation_losses(torch.randn(2, 3, 16, 16), torch.tensor([0, 1]))
    assert torch.isfinite(out["feature_loss"])
    with pytest.raises(
        ValueError, match=r"feature_stages=\[16\] matches none of the student's stage reductions \[2, 4\]"
    ):
        DistillationModule(WithReductions(2), 2, teacher=teacher(2), feature_weight=1.0, feature_stages=[16])
    with pytest.raises(ValueError, match="has no feature_reductions"):
        DistillationModule(TinyStudent(2), 2, teacher=teacher(2), feature_weight=1.0, feature_stages=[4])


def test_a_teacher_converted_by_sync_batchnorm_is_refused():
    from lightning.pytorch.plugins import TorchSyncBatchNorm

    module = DistillationModule(plain_student(2), 2, teacher=teacher(2))
    module = TorchSyncBatchNorm().apply(module)
    with pytest.raises(ValueError, match="set sync_batchnorm to false"):
        module.on_fit_start()


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"temperature": 0.0}, "temperature must be a finite number > 0"),
        ({"temperature": -1.0}, "temperature must be a finite number > 0"),
        ({"kd_weight": -0.1}, "kd_weight must be a finite number >= 0"),
        ({"feature_weight": -1.0}, "feature_weight must be a finite number >= 0"),
        ({"mixup_alpha": -1.0}, "mixup_alpha must be"),
        ({"optimizer": "adam"}, "optimizer must be 'sgd' or 'adamw'"),
        ({"feature_loss": "l1"}, "feature_loss must be one of"),
        ({"teacher_resolution": 0}, "teacher_resolution must be a positive int"),
        ({"warmup_fraction": 1.0}, r"warmup_fraction must be in \[0, 1\)"),
        ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\)"),
    ],
)
def test_bad_hyperparameters(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        DistillationModule(plain_student(), 2, **kwargs)


def test_feature_weight_needs_stage_features_and_a_teacher_with_feature_info():
    with pytest.raises(ValueError, match=r"stage_features\(x\).*lacks stage_features.*or set feature_weight=0"):
        DistillationModule(plain_student(), 2, teacher=teacher(2), feature_weight=1.0)
    with pytest.raises(ValueError, match="lacks feature_channels"):
        DistillationModule(TinyStudent(features=False), 2, teacher=teacher(2), feature_weight=1.0)
    with pytest.raises(ValueError, match=r"feature_info.*or set feature_weight=0"):
        DistillationModule(TinyStudent(), 2, teacher=FixedLogits(torch.zeros(1, 2)), feature_weight=1.0)


def test_teacher_with_other_class_count_is_refused_at_the_first_step():
    module = DistillationModule(LearnedLogits(torch.zeros(2, 3)), 3, teacher=FixedLogits(torch.zeros(2, 5)))
    with pytest.raises(ValueError, match=r"same 3 classes \(load_teacher\(\.\.\., num_classes=3\)\)"):
        module.distillation_losses(torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]))


# --------------------------------------------------------------------------- DDP

DDP_SCRIPT = """
import json, sys, torch, lightning.pytorch as pl
from torch.utils.data import DataLoader, TensorDataset
from gradsign_pl.candidates import build_model
from gradsign_pl.modules.distillation import DistillationModule
from tests.modules.test_distillation import TinyStudent

class Report(pl.Callback):
    def on_train_end(self, trainer, pl_module):
        out = {"student": [float(p.detach().double().sum()) for p in pl_module.backbone.parameters()],
               "proj": [float(p.detach().double().sum()) for p in pl_module.feature_projections.parameters()],
               "teacher": [float(v.double().sum()) for v in pl_module.teacher.state_dict().values()],
               "teacher_training": any(m.training for m in pl_module.teacher.modules())}
        with open(f"{sys.argv[1]}/rank{trainer.global_rank}.json", "w") as f:
            json.dump(out, f)

if __name__ == "__main__":
    torch.manual_seed(0)
    teacher = build_model("timm:test_efficientnet", num_classes=3).eval()
    with open(f"{sys.argv[1]}/teacher_before.json", "w") as f:
        json.dump([float(v.double().sum()) for v in teacher.state_dict().values()], f)
    module = DistillationModule(TinyStudent(3), 3, teacher=teacher, feature_weight=1.0, teacher_resolution=24, lr=0.05)
    ds = TensorDataset(torch.randn(32, 3, 16, 16), torch.randint(0, 3, (32,)))
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[Report()], default_root_dir=sys.argv[1])
    trainer.fit(module, DataLoader(ds, batch_size=4))
"""


def test_ddp_two_cpu_processes_keep_ranks_in_sync_and_the_teacher_frozen(tmp_path):
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    script = tmp_path / "ddp_distill.py"
    script.write_text(DDP_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reports = {rank: json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)}
    before = json.loads((tmp_path / "teacher_before.json").read_text())
    assert reports[0]["student"] == pytest.approx(reports[1]["student"], rel=1e-6)
    assert reports[0]["proj"] == pytest.approx(reports[1]["proj"], rel=1e-6)
    for rank in (0, 1):
        assert reports[rank]["teacher"] == before and not reports[rank]["teacher_training"]
