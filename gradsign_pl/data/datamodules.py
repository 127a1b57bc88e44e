"""LightningDataModules for the recipes: embedded digits (offline default), CIFAR-10 from local files, ImageFolder.

Every datamodule exposes ``num_classes``, ``in_chans`` and ``image_size`` so that candidates can be built to fit,
and never downloads anything: a missing local file is an error that says where it looked and how to point to it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sized
from pathlib import Path
from typing import cast

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from gradsign_pl.data.paths import data_dir as find_data_dir
from gradsign_pl.data.sampling import (
    ResumableLoader,
    ResumableSampler,
    SampleKey,
    SeededView,
    augmentation_rng,
    run_seed,
    split_key,
)

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def _split(n: int, fractions: tuple[float, float], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = round(n * fractions[0]), round(n * fractions[1])
    return order[n_val + n_test :], order[:n_val], order[n_val : n_val + n_test]


class _TensorDataModule(pl.LightningDataModule):
    """Shared loader plumbing: a seeded, resumable training order (:class:`ResumableSampler`), plain eval loaders.

    The training order and every sample's augmentation follow the run's seed (``seed_everything``, else 0), so
    two runs with the same seed see the same batches, and a fit resumed from a mid-epoch checkpoint continues
    with exactly the batches an uninterrupted fit would have seen.
    """

    train_set: Dataset
    val_set: Dataset
    test_set: Dataset

    def __init__(self, batch_size: int, num_workers: int) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.num_workers = num_workers

    def train_dataloader(self) -> DataLoader:
        n = len(cast(Sized, self.train_set))  # map-style datasets (torch's Dataset does not declare __len__)
        sampler = ResumableSampler(n, run_seed(), self.batch_size, trainer=lambda: self.trainer)
        return ResumableLoader(self.train_set, sampler, num_workers=self.num_workers)

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)


class _Tensors(Dataset):
    """In-memory ``(inputs, labels)``; accepts the ``(sample_seed, index)`` keys of :class:`ResumableSampler`."""

    def __init__(self, inputs: Tensor, labels: Tensor) -> None:
        self.inputs, self.labels = inputs, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: SampleKey | int) -> tuple[Tensor, Tensor]:
        _, i = split_key(key)
        return self.inputs[i], self.labels[i]


class DigitsDataModule(_TensorDataModule):
    """scikit-learn's handwritten digits (1797 real 8x8 grey scans, 10 classes), shipped inside the package.

    Images are scaled to [0, 1], resized (bilinear) to ``image_size`` and standardised; one channel. Split
    70 / 15 / 15 % train / val / test with ``seed``. The offline default of the quickstart recipe.
    """

    num_classes = 10
    in_chans = 1

    def __init__(self, batch_size: int = 64, image_size: int = 32, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__(batch_size, num_workers)
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8 (the scans are 8x8), got {image_size}")
        self.image_size = image_size
        self.seed = seed

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        x = (x - x.mean()) / x.std()
        y = torch.tensor(digits.target, dtype=torch.long)
        train, val, test = _split(len(y), (0.15, 0.15), self.seed)
        self.train_set = _Tensors(x[train], y[train])
        self.val_set = _Tensors(x[val], y[val])
        self.test_set = _Tensors(x[test], y[test])


class _AugmentedImages(Dataset):
    """uint8 NHWC images -> normalised float CHW; when training, torchvision's random crop (reflect-padded by 4)
    and horizontal flip, drawn from the sample's own seed when the key carries one (:class:`ResumableSampler`)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, train: bool) -> None:
        from torchvision.transforms import v2

        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.augment = (
            v2.Compose([v2.RandomCrop(32, padding=4, padding_mode="reflect"), v2.RandomHorizontalFlip()])
            if train
            else None
        )
        self.normalize = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(CIFAR10_MEAN, CIFAR10_STD)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: SampleKey | int) -> tuple[Tensor, Tensor]:
        sample_seed, i = split_key(key)
        x = self.images[i]
        if self.augment is not None:
            with augmentation_rng(sample_seed):
                x = self.augment(x)
        return self.normalize(x), self.labels[i]


def decode_jpeg_npz(path: Path, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode the ``cifar10_full_jpegbytes.npz`` layout: ``jpeg_<split>`` bytes cut at ``offsets_<split>``."""
    from PIL import Image

    with np.load(path) as data:
        blob, offsets, labels = data[f"jpeg_{split}"], data[f"offsets_{split}"], data[f"y_{split}"]
    n = len(labels) if limit is None else min(limit, len(labels))
    images = np.empty((n, 32, 32, 3), dtype=np.uint8)
    for i in range(n):
        images[i] = np.asarray(Image.open(io.BytesIO(blob[offsets[i] : offsets[i + 1]].tobytes())).convert("RGB"))
    return images, np.asarray(labels[:n])


class CIFAR10DataModule(_TensorDataModule):
    """CIFAR-10 from local files, never downloaded.

    ``data_dir`` may hold torchvision's layout (``cifar-10-batches-py/``) or this project's
    ``cifar10_full_jpegbytes.npz`` (default: ``$GRADSIGN_DATA``, then ``../shared/data``). The last
    ``val_size`` training images (after a seeded shuffle) are the validation set; the official test set is the
    test set. ``train_size`` / ``test_size`` subsample for short runs. Training images get random crop and flip.
    """

    num_classes = 10
    in_chans = 3
    image_size = 32

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 128,
        val_size: int = 5000,
        train_size: int | None = None,
        test_size: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        self.data_dir = data_dir
        self.val_size, self.train_size, self.test_size, self.seed = val_size, train_size, test_size, seed

    def _load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        root = Path(self.data_dir) if self.data_dir is not None else None
        if root is None:
            try:
                root = find_data_dir()
            except FileNotFoundError as exc:
                raise FileNotFoundError(
                    f"{exc}. CIFAR-10 is never downloaded: pass data_dir=<folder with cifar-10-batches-py/ or "
                    "cifar10_full_jpegbytes.npz>"
                ) from None
        if (root / "cifar-10-batches-py").is_dir():
            from torchvision.datasets import CIFAR10

            train = CIFAR10(str(root), train=True, download=False)
            test = CIFAR10(str(root), train=False, download=False)
            return train.data, np.asarray(train.targets), test.data, np.asarray(test.targets)
        npz = root / "cifar10_full_jpegbytes.npz"
        if npz.is_file():
            xtr, ytr = decode_jpeg_npz(npz, "train")
            xte, yte = decode_jpeg_npz(npz, "test", self.test_size)
            return xtr, ytr, xte, yte
        raise FileNotFoundError(
            f"no CIFAR-10 in {root}: expected torchvision's cifar-10-batches-py/ or cifar10_full_jpegbytes.npz; "
            "CIFAR-10 is never downloaded, so copy it there or pass data_dir=<that folder>"
        )

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        xtr, ytr, xte, yte = self._load()
        order = np.random.default_rng(self.seed).permutation(len(ytr))
        val, train = order[: self.val_size], order[self.val_size :]
        if self.train_size is not None:
            train = train[: self.train_size]
        if self.test_size is not None:
            xte, yte = xte[: self.test_size], yte[: self.test_size]
        self.train_set = _AugmentedImages(xtr[train], ytr[train], train=True)
        self.val_set = _AugmentedImages(xtr[val], ytr[val], train=False)
        self.test_set = _AugmentedImages(xte, yte, train=False)


class ImageFolderDataModule(_TensorDataModule):
    """Any ``ImageFolder`` tree: ``root/train/<class>/*.jpg`` and ``root/val/<class>/*.jpg`` (val also tests).

    Training images: random resized crop to ``image_size`` and flip, then optionally torchvision's ImageNet
    AutoAugment policy (``auto_augment=True``) and random erasing with probability ``random_erasing`` (ZenNAS trains
    with both); evaluation: resize to ``image_size * 8/7`` (256 for 224) and centre crop. ImageNet normalisation.
    """

    in_chans = 3

    def __init__(
        self,
        root: str,
        image_size: int = 224,
        batch_size: int = 64,
        num_workers: int = 2,
        auto_augment: bool = False,
        random_erasing: float = 0.0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        if not 0.0 <= random_erasing <= 1.0:
            raise ValueError(f"random_erasing is a probability in [0, 1], got {random_erasing}")
        self.auto_augment, self.random_erasing = auto_augment, random_erasing
        self.root = Path(root)
        self.image_size = image_size
        for split in ("train", "val"):
            if not (self.root / split).is_dir():
                raise FileNotFoundError(
                    f"{self.root / split} does not exist; ImageFolderDataModule expects {self.root}/train/<class>/ "
                    f"and {self.root}/val/<class>/ (set root to the folder that holds both)"
                )
        self.num_classes = len([d for d in os.scandir(self.root / "train") if d.is_dir()])

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        from torchvision import datasets, transforms

        norm = transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        train = [transforms.RandomResizedCrop(self.image_size), transforms.RandomHorizontalFlip()]
        if self.auto_augment:
            train.append(transforms.AutoAugment(transforms.AutoAugmentPolicy.IMAGENET))
        train += [transforms.ToTensor(), norm]
        if self.random_erasing > 0:
            train.append(transforms.RandomErasing(p=self.random_erasing))
        train_tf = transforms.Compose(train)
        eval_tf = transforms.Compose(
            [
                transforms.Resize(int(self.image_size * 8 / 7)),
                transforms.CenterCrop(self.image_size),
                transforms.ToTensor(),
                norm,
            ]
        )
        self.train_set = SeededView(datasets.ImageFolder(str(self.root / "train"), train_tf))
        self.val_set = datasets.ImageFolder(str(self.root / "val"), eval_tf)
        self.test_set = self.val_set
