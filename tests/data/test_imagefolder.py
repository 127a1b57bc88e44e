"""ImageFolderDataModule on a generated ImageNet-layout tree: classes, shapes, augmentation options, errors."""

from __future__ import annotations

import pytest
import torch

from gradsign_pl.data.datamodules import ImageFolderDataModule
from tests.images import tiny_imagefolder


@pytest.mark.parametrize("auto_augment, random_erasing", [(False, 0.0), (True, 1.0)])
def test_batches_have_the_image_size_and_labels_of_the_folders(tmp_path, auto_augment, random_erasing):
    root = tiny_imagefolder(tmp_path, 40)
    dm = ImageFolderDataModule(
        str(root), image_size=32, batch_size=8, num_workers=0, auto_augment=auto_augment, random_erasing=random_erasing
    )
    assert dm.num_classes == 2 and dm.in_chans == 3
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32) and sorted(y.tolist()) == [0] * 4 + [1] * 4
    xv, _ = next(iter(dm.val_dataloader()))
    assert xv.shape == (8, 3, 32, 32)
    if random_erasing == 1.0:  # every training image has an erased (random-valued) patch; eval images never do
        names = [type(t).__name__ for t in dm.train_set.dataset.transform.transforms]
        assert names[-1] == "RandomErasing" and "AutoAugment" in names
    # evaluation is deterministic: the same images twice
    assert torch.equal(next(iter(dm.val_dataloader()))[0], xv)


def test_missing_split_and_bad_probability_are_clear_errors(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="val does not exist; ImageFolderDataModule expects"):
        ImageFolderDataModule(str(tmp_path))
    (tmp_path / "val" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"random_erasing is a probability in \[0, 1\], got 1.5"):
        ImageFolderDataModule(str(tmp_path), random_erasing=1.5)
