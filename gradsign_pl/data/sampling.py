"""A training order that is a pure function of (seed, epoch) and resumes mid-epoch from a Lightning checkpoint.

:class:`ResumableSampler` shuffles with a generator seeded by ``(seed, epoch)`` -- the epoch comes from
``set_epoch``, which Lightning calls at every epoch start -- and yields ``(sample_seed, index)`` keys, so a dataset
can draw its random augmentation for that sample from a generator of its own (:func:`augmentation_rng`), whatever
ran before and in whichever worker process. Training is then a function of the seed alone, and a run that is
stopped and resumed sees exactly the batches of a run that never stopped.

Resuming: when the sampler is given the :class:`~lightning.pytorch.Trainer` that iterates it (``trainer=``, a
callable returning it, as a datamodule's ``lambda: self.trainer``), it skips the batches the fit loop reports as
already completed in the current epoch (``trainer.fit_loop.epoch_loop.batch_progress.current.completed``, which a
checkpoint saved mid-epoch restores). Lightning's own support for stateful loaders drops their state when
``configure_optimizers`` asks for ``trainer.estimated_stepping_batches`` (Lightning-AI/pytorch-lightning#20550) and
counts prefetched batches as consumed; reading the loop's progress has neither problem.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

SampleKey = tuple[int, int]
"""``(sample_seed, index)``: what :class:`ResumableSampler` yields for each training sample."""

_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant (golden ratio) for mixing seeds
_MASK = (1 << 63) - 1


def mix_seed(*parts: int) -> int:
    """A non-negative 63-bit seed that depends on every one of ``parts`` (order matters)."""
    h = 0
    for p in parts:
        h = ((h ^ (int(p) & _MASK)) * _MIX + 0x632BE59BD9B4E019) & _MASK
        h ^= h >> 29
    return h


class ResumableSampler(DistributedSampler):
    """Shuffle ``n`` samples per epoch from ``(seed, epoch)``; skip what a resumed fit already trained on.

    Under several processes (DDP) each rank takes its shard of the epoch's order -- padded, as
    ``DistributedSampler`` does, to a multiple of the world size -- reading the world size and rank from the trainer
    when iteration starts; being a ``DistributedSampler``, Lightning keeps it instead of replacing it.

    Args:
        n: dataset length.
        seed: the order's seed (a datamodule passes the run's seed, see :func:`run_seed`).
        batch_size: samples per batch, to turn the completed batches of a resumed epoch into samples to skip.
        trainer: ``None``, a Trainer, or a callable returning one (or ``None``); read when iteration starts.
        shuffle: ``False`` keeps the dataset order (the keys still carry per-sample seeds).
    """

    def __init__(self, n: int, seed: int, batch_size: int, *, trainer: Any = None, shuffle: bool = True) -> None:
        # DistributedSampler.__init__ is not called: it needs a process group; everything it sets is set here
        if n < 0 or batch_size < 1:
            raise ValueError(f"need n >= 0 and batch_size >= 1, got n={n}, batch_size={batch_size}")
        self.n, self.seed, self.batch_size, self.shuffle = int(n), int(seed), int(batch_size), shuffle
        self._trainer = trainer
        self.epoch = 0
        self.drop_last = False

    def _get_trainer(self) -> Any:
        return self._trainer() if callable(self._trainer) else self._trainer

    @property
    def num_replicas(self) -> int:  # type: ignore[override]
        """Processes sharing the epoch (the trainer's world size; 1 without a trainer)."""
        return int(getattr(self._get_trainer(), "world_size", 1) or 1)

    @property
    def rank(self) -> int:  # type: ignore[override]
        """This process's shard (the trainer's global rank; 0 without a trainer)."""
        return int(getattr(self._get_trainer(), "global_rank", 0) or 0)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(self.n / self.num_replicas) if self.n else 0

    def order(self, epoch: int) -> list[int]:
        """The sample indices of ``epoch`` in training order (all ranks; this rank takes every
        ``num_replicas``-th from position ``rank`` after padding)."""
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        return torch.randperm(self.n, generator=g).tolist()

    def completed_batches(self) -> int:
        """Batches of the current epoch the fit loop has already completed (0 unless resuming mid-epoch)."""
        trainer = self._get_trainer()
        loop = getattr(trainer, "fit_loop", None)
        if loop is None or not getattr(trainer, "training", False):
            return 0
        return int(loop.epoch_loop.batch_progress.current.completed)

    def __iter__(self) -> Iterator[SampleKey]:
        epoch, world = self.epoch, self.num_replicas
        order = self.order(epoch)
        if world > 1 and order:
            total = len(self) * world
            order = (order * math.ceil(total / len(order)))[:total][self.rank :: world]
        skip = self.completed_batches() * self.batch_size
        for i in order[skip:]:
            yield mix_seed(self.seed, epoch, i), i


def run_seed(default: int = 0) -> int:
    """The seed of the current run: the one ``lightning.seed_everything`` set (``PL_GLOBAL_SEED``), else ``default``."""
    import os

    value = os.environ.get("PL_GLOBAL_SEED")
    return int(value) if value not in (None, "") else default


@contextmanager
def augmentation_rng(sample_seed: int | None) -> Iterator[None]:
    """Run random transforms under torch's CPU RNG seeded with ``sample_seed``; the global state is restored after.

    ``None`` (a plain integer index, e.g. from a loader that is not a :class:`ResumableSampler`) uses the global
    RNG as it is.
    """
    if sample_seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(sample_seed)  # the CPU generator only: torch.manual_seed costs ~0.3 ms
        yield


def split_key(key: SampleKey | int) -> tuple[int | None, int]:
    """``(sample_seed or None, index)`` from a sampler key or a plain index."""
    if isinstance(key, tuple):
        return int(key[0]), int(key[1])
    return None, int(key)


class SeededView(Dataset):
    """Any map-style dataset read through :class:`ResumableSampler` keys: item ``i`` is built (its random
    transforms drawn) under the sample's own seed. Plain integer indices read the dataset as it is."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: SampleKey | int) -> Any:
        sample_seed, i = split_key(key)
        with augmentation_rng(sample_seed):
            return self.dataset[i]


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over a :class:`ResumableSampler` that tells Lightning it resumes mid-epoch.

    Its ``state_dict`` (saved in Lightning checkpoints) records the order's seed; loading a state with another seed
    is an error, because the resumed fit would not continue the order it started with. The position itself is not
    stored: the sampler reads it from the trainer's restored progress.
    """

    sampler: ResumableSampler

    def __init__(self, dataset: Dataset, sampler: ResumableSampler, **kwargs: Any) -> None:
        super().__init__(dataset, sampler=sampler, batch_size=sampler.batch_size, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.sampler.seed, "epoch": self.sampler.epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        seed = state_dict.get("seed")
        if seed is not None and int(seed) != self.sampler.seed:
            raise ValueError(
                f"the checkpoint's training data order was drawn with seed {seed}, this run's is {self.sampler.seed}; "
                "resume with the same seed (seed_everything) or start a new run"
            )
