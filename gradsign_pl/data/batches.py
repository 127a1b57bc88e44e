"""Seeded real mini-batches (for proxies) from the CIFAR-10 / CIFAR-100 / ImageNet16-120 image files.

Images are uint8 NHWC in the files; a batch is float32 NCHW in [0, 1], normalised per channel with the
statistics NAS-Bench-201 trained with, and int64 labels.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch
from torch import Tensor

from gradsign_pl.data.paths import data_file


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One image file and how to read a split of it.

    Attributes:
        file: file name in the data directory.
        splits: split name -> (images key, labels key).
        num_classes: number of classes.
        mean, std: per-channel normalisation on [0, 1] pixels.
        note: what a reader of a result must know about the images.
    """

    file: str
    splits: dict[str, tuple[str, str]]
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    note: str = ""


def _per255(r: float, g: float, b: float) -> tuple[float, float, float]:
    return r / 255, g / 255, b / 255


DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec(
        "cifar10_exact_subset.npz",
        {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")},
        10,
        _per255(125.3, 123.0, 113.9),
        _per255(63.0, 62.1, 66.7),
        "bit-exact CIFAR-10 images (a subset of the official splits)",
    ),
    "cifar100": DatasetSpec(
        "cifar100_exact_subset.npz",
        {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")},
        100,
        _per255(129.3, 124.1, 112.4),
        _per255(68.2, 65.4, 70.4),
        "bit-exact CIFAR-100 images (a subset of the official splits), fine labels",
    ),
    "imagenet16": DatasetSpec(
        "imagenet16_120_approx.npz",
        {"train": ("x", "y")},
        120,
        _per255(122.68, 116.66, 104.01),
        _per255(63.22, 61.26, 65.09),
        "APPROXIMATION of ImageNet16-120: 120 real ImageNet photos (one per class) box-resized to 16x16; "
        "the official ImageNet16-120 files were not available",
    ),
}


def load_batch(
    dataset: str,
    n: int | None = 64,
    *,
    seed: int = 42,
    split: str = "train",
    root: str | os.PathLike | None = None,
) -> tuple[Tensor, Tensor]:
    """``n`` distinct images of ``dataset`` drawn with ``seed`` (same seed -> same batch), normalised.

    ``n=None`` returns every image of the split, in the seeded order.

    Returns ``(inputs, labels)``: float32 ``(n, 3, H, W)`` and int64 ``(n,)``.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    spec = DATASETS[dataset]
    if split not in spec.splits:
        raise ValueError(f"{dataset} has no split {split!r}; available: {', '.join(spec.splits)}")
    x_key, y_key = spec.splits[split]
    with np.load(data_file(spec.file, root), allow_pickle=False) as data:
        if x_key not in data.files or y_key not in data.files:
            raise ValueError(f"{spec.file} lacks {x_key!r}/{y_key!r} (has {data.files}); is it the right file?")
        images, labels = data[x_key], data[y_key]
    available = len(labels)
    n = available if n is None else n
    if not 1 <= n <= available:
        raise ValueError(f"n must be between 1 and {available} for {dataset}/{split}, got {n}")
    order = torch.randperm(available, generator=torch.Generator().manual_seed(seed))[:n].numpy()
    x = torch.from_numpy(images[order]).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return (x - mean) / std, torch.from_numpy(labels[order]).long()
