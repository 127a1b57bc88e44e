"""The seeded, resumable training order: the seed drives the order and the augmentation; a fit stopped mid-epoch and
resumed from its checkpoint is bit for bit the fit that never stopped."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradsign_pl.candidates import candidate
from gradsign_pl.data.datamodules import DigitsDataModule
from gradsign_pl.data.sampling import ResumableLoader, ResumableSampler, SeededView, mix_seed
from gradsign_pl.fidelity import FidelityRecorder
from gradsign_pl.modules import ClassificationModule


@given(n=st.integers(1, 200), seed=st.integers(0, 2**40), epoch=st.integers(0, 50))
@settings(max_examples=40, deadline=None)
def test_each_epoch_is_a_permutation_fixed_by_seed_and_epoch(n, seed, epoch):
    sampler = ResumableSampler(n, seed, batch_size=7)
    sampler.set_epoch(epoch)
    keys = list(sampler)
    assert sorted(i for _, i in keys) == list(range(n))
    again = ResumableSampler(n, seed, batch_size=7)
    again.set_epoch(epoch)
    assert list(again) == keys
    assert all(k == mix_seed(seed, epoch, i) for k, i in keys)


def test_the_seed_and_the_epoch_change_the_order():
    orders = {}
    for seed in (0, 1):
        for epoch in (0, 1):
            s = ResumableSampler(50, seed, batch_size=5)
            s.set_epoch(epoch)
            orders[(seed, epoch)] = [i for _, i in s]
    assert len({tuple(o) for o in orders.values()}) == 4


def test_augmentation_follows_the_sample_seed_not_the_global_rng():
    from torchvision.transforms import v2

    class Noise(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return v2.RandomCrop(4, padding=2)(torch.arange(16.0).view(1, 4, 4)) + torch.rand(())

    view = SeededView(Noise())
    torch.manual_seed(0)
    a = view[(123, 2)]
    torch.manual_seed(99)
    state = torch.get_rng_state()
    b = view[(123, 2)]
    assert torch.equal(a, b) and torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(view[(124, 2)], a)


def test_a_loader_with_another_seed_refuses_the_checkpoint_state():
    loader = ResumableLoader(list(range(10)), ResumableSampler(10, 3, batch_size=2))
    loader.load_state_dict(loader.state_dict())
    with pytest.raises(ValueError, match="drawn with seed 3, this run's is 4"):
        ResumableLoader(list(range(10)), ResumableSampler(10, 4, batch_size=2)).load_state_dict(loader.state_dict())


def _fit(seed: int, stops: list[int | None], tmp_path):
    """Train resnet10t on digits for 2 epochs, stopping (with a checkpoint) and resuming at each of ``stops``."""
    ckpt, recorder, module = None, None, None
    for i, stop in enumerate(stops):
        pl.seed_everything(seed, verbose=False)
        module = ClassificationModule(candidate("timm:resnet10t").build(10, 1, (16, 16)), 10, warmup_fraction=0.1)
        path = tmp_path / f"rung{i}.ckpt"
        recorder = FidelityRecorder([3, 17, 40], stop_at=stop, checkpoint=path if stop else None)
        trainer = pl.Trainer(
            max_epochs=2,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            enable_model_summary=False,
            callbacks=[recorder],
        )
        trainer.fit(
            module, datamodule=DigitsDataModule(batch_size=32, image_size=16), ckpt_path=ckpt, weights_only=True
        )
        ckpt = path
    return recorder.curve, module


def test_stopping_mid_epoch_and_resuming_is_the_same_fit_as_never_stopping(tmp_path):
    straight, a = _fit(3, [None], tmp_path / "a")
    resumed, b = _fit(3, [13, 29, None], tmp_path / "b")  # 40 batches per epoch: both stops are mid-epoch
    assert len(straight.train_loss) == len(resumed.train_loss) == 80
    assert straight.train_loss == resumed.train_loss and straight.evals == resumed.evals
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    other, _ = _fit(4, [None], tmp_path / "c")
    assert other.train_loss != straight.train_loss  # the seed drives the weights and the data order


@given(n=st.integers(1, 60), world=st.integers(2, 4), seed=st.integers(0, 100))
@settings(max_examples=30, deadline=None)
def test_under_ddp_each_rank_takes_its_shard_and_together_they_cover_the_epoch(n, world, seed):
    from types import SimpleNamespace

    shards = []
    for rank in range(world):
        trainer = SimpleNamespace(world_size=world, global_rank=rank, training=False)
        shards.append([i for _, i in ResumableSampler(n, seed, batch_size=3, trainer=trainer)])
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == len(
        ResumableSampler(n, seed, 3, trainer=SimpleNamespace(world_size=world, global_rank=0))
    )
    assert set().union(*shards) == set(range(n))
    assert sum(len(s) for s in shards) - n < world  # padding: fewer than one extra sample per rank
