"""Real mini-batches and the data-directory lookup."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradsign_pl.data import DATA_ENV, DATASETS, data_dir, load_batch


def test_explicit_missing_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nope'}.*set {DATA_ENV}"):
        data_dir(tmp_path / "nope")


def test_environment_variable_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert data_dir() == tmp_path


def test_missing_file_in_a_data_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar10_exact_subset.npz is not in the data directory"):
        load_batch("cifar10", root=tmp_path)


def test_wrong_file_contents(tmp_path):
    np.savez(tmp_path / "cifar10_exact_subset.npz", images=np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="lacks 'x_train'"):
        load_batch("cifar10", root=tmp_path)


def test_tiny_user_file_is_read_and_normalised(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "imagenet16_120_approx.npz", x=x, y=np.arange(10, dtype=np.int64))
    inputs, labels = load_batch("imagenet16", 4, seed=3, root=tmp_path)
    spec = DATASETS["imagenet16"]
    order = labels.numpy()
    expected = (
        torch.from_numpy(x[order]).permute(0, 3, 1, 2) / 255 - torch.tensor(spec.mean).view(1, 3, 1, 1)
    ) / torch.tensor(spec.std).view(1, 3, 1, 1)
    torch.testing.assert_close(inputs, expected)
    assert inputs.dtype == torch.float32 and labels.dtype == torch.int64 and len(set(order)) == 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dataset="svhn"), "unknown dataset 'svhn'"),
        (dict(dataset="imagenet16", split="test"), "no split 'test'"),
        (dict(dataset="imagenet16", n=121), "n must be between 1 and 120"),
        (dict(dataset="cifar10", n=0), "n must be between 1 and"),
    ],
)
def test_bad_requests(shared_data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_batch(**kwargs)


@pytest.mark.parametrize("name, shape, classes", [("cifar10", 32, 10), ("cifar100", 32, 100), ("imagenet16", 16, 120)])
def test_real_batches_are_seeded_and_normalised(shared_data, name, shape, classes):
    x, y = load_batch(name, 64, seed=42)
    assert x.shape == (64, 3, shape, shape) and y.shape == (64,)
    assert 0 <= int(y.min()) and int(y.max()) < classes
    assert torch.equal(x, load_batch(name, 64, seed=42)[0])
    assert not torch.equal(x, load_batch(name, 64, seed=7)[0])
    assert abs(float(x.mean())) < 0.4 and 0.7 < float(x.std()) < 1.3  # roughly standardised
