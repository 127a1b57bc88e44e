"""GradSignCallback in real (tiny, CPU) Lightning fits: scores, logging, stopping, checkpoints, isolation."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule, LightningModule, Trainer, seed_everything
from lightning.pytorch.loggers import Logger
from lightning.pytorch.strategies import SingleDeviceStrategy
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import gradsign_pl
from gradsign_pl.callbacks import GradSignCallback
from gradsign_pl.proxies._registry import _PROXIES
from gradsign_pl.proxies._result import ProxyResult

BATCH = 8


# --------------------------------------------------------------------------- helpers


class RecordingLogger(Logger):
    """Records every log_metrics call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[dict, int | None]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.calls.append((dict(metrics), step))

    def zero_cost(self) -> list[tuple[dict, int | None]]:
        return [(m, s) for m, s in self.calls if any(k.startswith("zero_cost/") for k in m)]


class Net(LightningModule):
    """Small CNN with BatchNorm and dropout; counts its steps and remembers what it trained on."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten()
        )
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(24, classes)
        self.train_steps = 0
        self.val_steps = 0
        self.seen: list[torch.Tensor] = []
        self.rand_in_step: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(x)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.train_steps += 1
        self.seen.append(x.detach().clone())
        self.rand_in_step.append(torch.rand(1))
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        self.val_steps += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def dataset(n: int = 24, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g))


def loader(ds=None, **kwargs) -> DataLoader:
    return DataLoader(
        ds if ds is not None else dataset(), batch_size=BATCH, shuffle=kwargs.pop("shuffle", False), **kwargs
    )


def trainer(tmp_path, callbacks=(), logger=None, **kwargs) -> Trainer:
    options = {
        "max_epochs": 1,
        "accelerator": "cpu",
        "logger": logger if logger is not None else RecordingLogger(),
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "limit_train_batches": 2,
        "limit_val_batches": 0,
        "default_root_dir": tmp_path,
    }
    options.update(kwargs)
    return Trainer(callbacks=list(callbacks), **options)


def fresh_net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net()


@pytest.fixture
def test_proxies():
    """Registers test_counting (fixed score, counts calls, checks the trainer is detached) and test_failing."""
    seen: dict = {"calls": 0, "attached": [], "copy_attached": []}

    def counting(model, inputs, targets, **options):
        """Fixed score 3.5; counts calls."""
        seen["calls"] += 1
        seen["attached"].append(model.module._trainer is not None)
        seen["copy_attached"].append(copy.deepcopy(model).module._trainer is not None)
        return ProxyResult(
            "test_counting", 3.5, len(inputs), 1, 0.0, None, "cpu", "float32", "", {}, {"module.head.weight": 3.5}
        )

    def failing(model, inputs, targets, **options):
        """Always raises."""
        raise RuntimeError("deliberate failure in test_failing")

    gradsign_pl.register_proxy("test_counting")(counting)
    gradsign_pl.register_proxy("test_failing")(failing)
    yield seen
    for name in ("test_counting", "test_failing"):
        _PROXIES.pop(name, None)


# --------------------------------------------------------------------------- scores and logging


class DoublingDataModule(LightningDataModule):
    """Training data through a DataModule whose batch hook doubles the inputs on the device."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def train_dataloader(self):
        self.requests += 1
        return loader()

    def on_after_batch_transfer(self, batch, dataloader_idx):
        x, y = batch
        return 2 * x, y


@pytest.mark.parametrize("source", ["dataloaders", "datamodule"])
def test_logged_score_is_the_score_of_the_initial_model_on_the_first_batch(tmp_path, source):
    net = fresh_net()
    x, y = dataset().tensors
    if source == "dataloaders":
        expected = gradsign_pl.score("gradsign", net, x[:BATCH], y[:BATCH])
        fit_kwargs, cb = {"train_dataloaders": loader()}, GradSignCallback()
    else:  # the batch goes through the DataModule's hook, then max_samples keeps 6 of 8
        expected = gradsign_pl.score("gradsign", net, 2 * x[:6], y[:6])
        fit_kwargs, cb = {"datamodule": DoublingDataModule()}, GradSignCallback(max_samples=6)
    logger = RecordingLogger()
    t = trainer(tmp_path, [cb], logger)
    t.fit(net, **fit_kwargs)

    assert math.isfinite(expected.score)
    assert logger.zero_cost() == [({"zero_cost/gradsign": expected.score}, 0)]
    assert cb.scores == {"gradsign": expected.score}
    result = cb.results["gradsign"]
    assert result["score"] == expected.score and result["n_samples"] == expected.n_samples
    assert result["batch_fingerprint"] == expected.batch_fingerprint
    assert result["per_layer"] == expected.per_layer  # the module's own parameter names, no wrapper prefix
    assert not cb.stopped and cb.stop_reason is None
    assert net.train_steps == 2 and t.global_step == 2
    if source == "datamodule":
        assert fit_kwargs["datamodule"].requests == 1  # the callback reuses the loader the fit loop set up


def test_several_proxies_custom_prefix_and_options(tmp_path):
    net = fresh_net()
    x, y = dataset().tensors
    expected = {
        "gradsign": gradsign_pl.score("gradsign", net, x[:BATCH], y[:BATCH], reduction="mean").score,
        "params": gradsign_pl.score("params", net, x[:BATCH], y[:BATCH]).score,
    }
    logger = RecordingLogger()
    cb = GradSignCallback(("gradsign", "params"), prefix="zc/", options={"gradsign": {"reduction": "mean"}})
    trainer(tmp_path, [cb], logger).fit(net, loader())
    assert cb.scores == expected
    assert [c for c in logger.calls if any(k.startswith("zc/") for k in c[0])] == [
        ({"zc/gradsign": expected["gradsign"], "zc/params": expected["params"]}, 0)
    ]


class DictOutputNet(Net):
    def forward(self, x):
        return {"logits": super().forward(x)}

    def training_step(self, batch, batch_idx):
        self.train_steps += 1
        return F.cross_entropy(self(batch["image"])["logits"], batch["label"])


class DictDataset(Dataset):
    def __init__(self) -> None:
        self.x, self.y = dataset().tensors

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return {"image": self.x[i], "label": self.y[i], "index": i}


class Logits(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)["logits"]


def test_dict_batches_and_a_custom_forward(tmp_path):
    torch.manual_seed(0)
    net = DictOutputNet()
    x, y = dataset().tensors
    expected = gradsign_pl.score("gradsign", Logits(net), x[:BATCH], y[:BATCH])
    cb = GradSignCallback(forward=lambda module, inputs: module(inputs)["logits"])
    trainer(tmp_path, [cb]).fit(net, loader(DictDataset()))
    assert cb.scores["gradsign"] == expected.score
    assert set(cb.results["gradsign"]["per_layer"]) == {k.removeprefix("net.") for k in expected.per_layer}
    assert net.train_steps == 2


def test_unknown_batch_structure_asks_for_batch_transform(tmp_path):
    x, y = dataset().tensors
    triples = loader(TensorDataset(x, y, torch.arange(len(y))))
    net = fresh_net()
    with pytest.raises(ValueError, match="batch_transform") as info:
        trainer(tmp_path, [GradSignCallback()]).fit(net, triples)
    assert "a list of 3 items" in str(info.value)
    assert net.train_steps == 0

    class TripleNet(Net):
        def training_step(self, batch, batch_idx):
            return super().training_step(batch[:2], batch_idx)

    torch.manual_seed(0)
    net = TripleNet()
    expected = gradsign_pl.score("gradsign", net, x[:BATCH], y[:BATCH]).score
    cb = GradSignCallback(batch_transform=lambda b: (b[0], b[1]))
    trainer(tmp_path, [cb]).fit(net, triples)
    assert cb.scores == {"gradsign": expected} and net.train_steps == 2


def test_scores_even_when_no_training_batch_runs(tmp_path):
    net = fresh_net()
    x, y = dataset().tensors
    cb = GradSignCallback()
    trainer(tmp_path, [cb], limit_train_batches=0).fit(net, loader())
    assert cb.scores == {"gradsign": gradsign_pl.score("gradsign", fresh_net(), x[:BATCH], y[:BATCH]).score}
    assert net.train_steps == 0


# --------------------------------------------------------------------------- the model and the run are untouched


class SnapshotNet(Net):
    """Snapshots its state in setup() (before the callback) and in on_fit_start() (after the callback's hook)."""

    def __init__(self) -> None:
        super().__init__()
        self.features[1].eval()  # mixed modes must survive as they are
        self.head.bias.requires_grad_(False)
        self.snapshots: list[dict] = []

    def snapshot(self) -> dict:
        return {
            "state": {k: v.detach().clone() for k, v in self.state_dict().items()},
            "modes": {n: m.training for n, m in self.named_modules()},
            "requires_grad": {n: p.requires_grad for n, p in self.named_parameters()},
            "grads": {n: p.grad for n, p in self.named_parameters()},
            "trainer": self._trainer,
        }

    def setup(self, stage):
        self.snapshots.append(self.snapshot())

    def on_fit_start(self):
        self.snapshots.append(self.snapshot())


def test_scoring_leaves_the_module_exactly_as_it_was(tmp_path, test_proxies):
    torch.manual_seed(0)
    net = SnapshotNet()
    cb = GradSignCallback(("gradsign", "synflow", "test_counting"))
    t = trainer(tmp_path, [cb])
    t.fit(net, loader())
    before, after = net.snapshots
    assert before["state"].keys() == after["state"].keys()
    assert all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"])
    assert before["modes"] == after["modes"] and not after["modes"]["features.1"] and after["modes"]["head"]
    assert before["requires_grad"] == after["requires_grad"] and not after["requires_grad"]["head.bias"]
    assert all(g is None for g in after["grads"].values())
    assert after["trainer"] is t and net._trainer is t
    # while scoring, neither the module nor the copies the proxies make hold the trainer
    assert test_proxies["attached"] == [False] and test_proxies["copy_attached"] == [False]
    assert all(math.isfinite(v) for v in cb.scores.values()) and net.train_steps == 2


def test_training_is_the_same_as_without_the_callback(tmp_path):
    """Shuffling, dropout and the weights after two steps do not change: the callback draws no global RNG."""

    def run(callbacks):
        seed_everything(7, verbose=False)
        net = Net()
        trainer(tmp_path, callbacks).fit(net, loader(shuffle=True))
        return net

    plain, scored = run([]), run([GradSignCallback()])
    assert all(torch.equal(a, b) for a, b in zip(plain.seen, scored.seen, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(plain.rand_in_step, scored.rand_in_step, strict=True))
    sa, sb = plain.state_dict(), scored.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_persistent_workers_still_start_the_epoch_at_the_first_batch(tmp_path):
    net = fresh_net()
    x, _ = dataset().tensors
    cb = GradSignCallback()
    dl = loader(num_workers=1, persistent_workers=True)
    trainer(tmp_path, [cb]).fit(net, dl)
    assert net.train_steps == 2
    assert torch.equal(net.seen[0], x[:BATCH]) and torch.equal(net.seen[1], x[BATCH : 2 * BATCH])
    assert math.isfinite(cb.scores["gradsign"])


# --------------------------------------------------------------------------- failures and stopping


def test_a_failing_proxy_is_nan_with_its_reason_and_training_goes_on(tmp_path, test_proxies):
    net = fresh_net()
    logger = RecordingLogger()
    cb = GradSignCallback(("test_failing", "gradsign"))
    with pytest.warns(UserWarning, match="proxy 'test_failing' failed"):
        trainer(tmp_path, [cb], logger).fit(net, loader())
    failed = cb.results["test_failing"]
    assert failed["score"] is None and math.isnan(cb.scores["test_failing"])
    assert failed["reason"] == "RuntimeError: deliberate failure in test_failing"
    assert failed["n_samples"] == BATCH and failed["proxy"] == "test_failing"
    assert ProxyResult.from_dict(failed).reason == failed["reason"]  # a well-formed serialised result
    assert math.isfinite(cb.scores["gradsign"])
    ((metrics, step),) = logger.zero_cost()
    assert step == 0 and math.isnan(metrics["zero_cost/test_failing"])
    assert metrics["zero_cost/gradsign"] == cb.scores["gradsign"]
    assert not cb.stopped and net.train_steps == 2


def gradsign_of_fresh_net() -> float:
    x, y = dataset().tensors
    return gradsign_pl.score("gradsign", fresh_net(), x[:BATCH], y[:BATCH]).score


@pytest.mark.parametrize("form", ["float", "mapping"])
def test_a_score_below_the_threshold_stops_before_any_training_step(tmp_path, form):
    value = gradsign_of_fresh_net()
    threshold = value + 1.0
    stop_below = threshold if form == "float" else {"gradsign": threshold}
    net = fresh_net()
    cb = GradSignCallback(("gradsign", "params"), stop_below=stop_below)
    # min_epochs would make Lightning ignore should_stop; validation would run a sanity check first
    t = trainer(tmp_path, [cb], min_epochs=1, limit_val_batches=1)
    with pytest.warns(UserWarning, match="stopped the fit before the first training step") as record:
        t.fit(net, loader(), loader())
    assert net.train_steps == 0 and net.val_steps == 0 and t.global_step == 0
    assert cb.stopped and t.should_stop
    message = cb.stop_reason
    assert f"proxy 'gradsign' scored {value:.6g}" in message and f"stop_below={threshold:.6g}" in message
    assert "stop_below=None" in message and "'params'" not in message
    assert any(str(w.message) == message for w in record)


def test_a_score_above_the_threshold_trains(tmp_path):
    net = fresh_net()
    cb = GradSignCallback(stop_below=gradsign_of_fresh_net() - 1.0)
    t = trainer(tmp_path, [cb])
    t.fit(net, loader())
    assert not cb.stopped and cb.stop_reason is None and net.train_steps == 2 and t.global_step == 2


def test_a_nan_score_stops_when_it_has_a_threshold(tmp_path, test_proxies):
    net = fresh_net()
    cb = GradSignCallback(("gradsign", "test_failing"), stop_below={"test_failing": 0.0})
    with pytest.warns(UserWarning):
        trainer(tmp_path, [cb]).fit(net, loader())
    assert cb.stopped and net.train_steps == 0
    assert "proxy 'test_failing' scored nan (RuntimeError: deliberate failure" in cb.stop_reason


# --------------------------------------------------------------------------- checkpoints


class LateRestoreStrategy(SingleDeviceStrategy):
    """Restores checkpoints after on_fit_start, like FSDP and DeepSpeed."""

    @property
    def restore_checkpoint_after_setup(self) -> bool:
        return True


@pytest.mark.parametrize("late_restore", [False, True], ids=["default", "restore_after_setup"])
def test_a_resumed_fit_restores_the_scores_without_recomputing(tmp_path, test_proxies, late_restore):
    def strategy():
        return {"strategy": LateRestoreStrategy(device=torch.device("cpu"))} if late_restore else {}

    cb = GradSignCallback(("test_counting", "gradsign"))
    first = trainer(tmp_path, [cb], **strategy())
    first.fit(fresh_net(), loader())
    assert test_proxies["calls"] == 1 and first.global_step == 2
    path = tmp_path / "run.ckpt"
    first.save_checkpoint(path)

    resumed_cb, logger = GradSignCallback(("test_counting", "gradsign")), RecordingLogger()
    resumed = trainer(tmp_path, [resumed_cb], logger, max_epochs=2, **strategy())
    net = fresh_net(seed=1)
    resumed.fit(net, loader(), ckpt_path=path)
    assert test_proxies["calls"] == 1  # not scored again
    assert resumed_cb.results == cb.results and resumed_cb.scores == cb.scores
    assert resumed_cb.state_dict() == cb.state_dict()
    assert logger.zero_cost() == [] and net.train_steps == 2 and resumed.global_step == 4


def test_the_stop_decision_is_saved_in_the_state(tmp_path):
    cb = GradSignCallback(stop_below=math.inf)
    t = trainer(tmp_path, [cb])
    with pytest.warns(UserWarning, match="stopped"):
        t.fit(fresh_net(), loader())
    state = cb.state_dict()
    assert state["stopped"] is True and state["stop_reason"] == cb.stop_reason
    restored = GradSignCallback(stop_below=math.inf)
    restored.load_state_dict(copy.deepcopy(state))
    assert restored.stopped and restored.stop_reason == cb.stop_reason and restored.scores == cb.scores


def test_resuming_a_checkpoint_without_scores_does_not_score_trained_weights(tmp_path, test_proxies):
    first = trainer(tmp_path)
    first.fit(fresh_net(), loader())
    path = tmp_path / "plain.ckpt"
    first.save_checkpoint(path)
    cb = GradSignCallback(("test_counting",))
    with pytest.warns(UserWarning, match="did not score the model"):
        trainer(tmp_path, [cb], max_epochs=2).fit(fresh_net(), loader(), ckpt_path=path)
    assert test_proxies["calls"] == 0 and cb.results == {} and not cb.stopped


def test_a_reused_instance_scores_a_new_module_but_not_the_same_one_twice(tmp_path, test_proxies):
    cb = GradSignCallback(("test_counting",))
    net = fresh_net()
    trainer(tmp_path, [cb]).fit(net, loader())
    trainer(tmp_path, [cb], max_epochs=2).fit(net, loader())  # same module trained on: keeps its initial scores
    assert test_proxies["calls"] == 1
    trainer(tmp_path, [cb]).fit(fresh_net(), loader())
    assert test_proxies["calls"] == 2


# --------------------------------------------------------------------------- arguments


def test_arguments_are_checked_when_the_callback_is_built():
    with pytest.raises(KeyError, match="did you mean 'gradsign'"):
        GradSignCallback(("gradsing",))
    with pytest.raises(ValueError, match="'ensemble' ranks a set"):
        GradSignCallback(("ensemble",))
    with pytest.raises(ValueError, match="'az_nas' ranks a set"):
        GradSignCallback(("gradsign", "az_nas"))
    with pytest.raises(ValueError, match="empty"):
        GradSignCallback(())
    with pytest.raises(ValueError, match="stop_below names proxies that are not scored"):
        GradSignCallback(stop_below={"snip": 1.0})
    with pytest.raises(ValueError, match="options names proxies that are not scored"):
        GradSignCallback(options={"snip": {}})
    with pytest.raises(ValueError, match="max_samples"):
        GradSignCallback(max_samples=0)
    assert GradSignCallback("gradsign").proxies == ("gradsign",)
    assert GradSignCallback(("gradsign", "snip"), stop_below=2.0).thresholds == {"gradsign": 2.0}
    assert GradSignCallback(("snip",)).state_key != GradSignCallback(("gradsign",)).state_key
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert GradSignCallback().state_dict() == {"results": {}, "stopped": False, "stop_reason": None}
