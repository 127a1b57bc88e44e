"""The one batch unpacker: ``(inputs, targets)`` from whatever a user's data gives, and the number of classes.

:func:`unpack_batch` reads one batch as a training step receives it -- an ``(inputs, targets)`` tuple or list
(exactly two items: a longer one is ambiguous and needs a ``batch_transform``), or a mapping with one input key
(``x``, ``image``, ``images``, ``input``, ``inputs``) and one target key
(``y``, ``label``, ``labels``, ``target``, ``targets``). :func:`first_batch` draws the first training batch of a
tensor pair, a DataLoader or a LightningDataModule under a fixed seed (:func:`gradsign_pl.rng.seeded`), so random
augmentation gives the same batch every time and the caller's random state is unchanged. The Trainer callback,
``rank()`` and the searches all read their scoring batch through these two functions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import Tensor

from gradsign_pl.rng import seeded

__all__ = ["INPUT_KEYS", "TARGET_KEYS", "BatchTransform", "first_batch", "num_classes_of", "unpack_batch"]

INPUT_KEYS = ("x", "image", "images", "input", "inputs")
"""Mapping keys read as the inputs, in order of preference."""
TARGET_KEYS = ("y", "label", "labels", "target", "targets")
"""Mapping keys read as the targets, in order of preference."""

BatchTransform = Callable[[Any], tuple[Tensor, Tensor]]


def describe(obj: Any) -> str:
    """A short description of a batch-like object for error messages."""
    if isinstance(obj, Tensor):
        return f"a Tensor of shape {list(obj.shape)}"
    if isinstance(obj, Mapping):
        return f"a {type(obj).__name__} with keys {list(obj)[:10]}"
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of {len(obj)} items"
    return f"a {type(obj).__name__}"


def unpack_batch(batch: Any, transform: BatchTransform | None = None) -> tuple[Tensor, Tensor]:
    """``(inputs, targets)`` of one batch (see the module docstring); ``transform(batch)`` overrides the rules.

    Raises ``ValueError`` naming what the batch holds and how to pass a ``batch_transform``.
    """
    if transform is not None:
        out = transform(batch)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise ValueError(f"batch_transform must return (inputs, targets), got {describe(out)}")
        return out[0], out[1]
    if isinstance(batch, (tuple, list)) and len(batch) == 2:  # a longer tuple is ambiguous: ask for a transform
        return batch[0], batch[1]
    if isinstance(batch, Mapping):
        x_key = next((k for k in INPUT_KEYS if k in batch), None)
        y_key = next((k for k in TARGET_KEYS if k in batch), None)
        if x_key is not None and y_key is not None:
            return batch[x_key], batch[y_key]
    raise ValueError(
        f"cannot tell inputs from targets in the batch ({describe(batch)}); expected an (inputs, targets) pair or a "
        f"dict with one of the keys {list(INPUT_KEYS)} and one of {list(TARGET_KEYS)}; pass "
        "batch_transform=lambda batch: (inputs, targets)"
    )


def first_batch(
    source: Any, *, batch_transform: BatchTransform | None = None, max_samples: int | None = None, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """The first ``(inputs, targets)`` of one batch (a tensor pair or a dict, see :func:`unpack_batch`), a DataLoader
    or a LightningDataModule's training data.

    Drawn under ``seed`` in an isolated RNG; truncated to ``max_samples``. A datamodule is set up for ``"fit"``.
    """
    if isinstance(source, Mapping) or (
        isinstance(source, (tuple, list)) and source and all(isinstance(t, Tensor) for t in source)
    ):  # one batch as a training step receives it (unpack_batch says what a batch may look like)
        batch: Any = source
    elif hasattr(source, "train_dataloader") and hasattr(source, "setup"):
        if hasattr(source, "prepare_data"):
            source.prepare_data()
        source.setup("fit")
        with seeded(seed):
            batch = _first(source.train_dataloader())
    elif isinstance(source, Iterable) and not isinstance(source, (str, bytes, Mapping)):
        with seeded(seed):
            batch = _first(source)
    else:
        raise TypeError(
            "expected one batch ((inputs, targets) tensors or a dict of them), a DataLoader or a LightningDataModule, "
            f"got {type(source).__name__}"
        )
    x, y = unpack_batch(batch, batch_transform)
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise ValueError(f"the batch's inputs and targets must be tensors, got {describe(x)} and {describe(y)}")
    if max_samples is not None:
        x, y = x[:max_samples], y[:max_samples]
    return x, y


def _first(loader: Iterable[Any]) -> Any:
    iterator = iter(loader)
    try:
        return next(iterator)
    except StopIteration:
        raise ValueError("the training data is empty; there is no batch to score") from None
    finally:
        del iterator


def num_classes_of(source: Any, targets: Tensor, num_classes: int | None = None) -> int:
    """``num_classes`` if given, else ``source.num_classes``; a ``ValueError`` that says how to give it."""
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        return num_classes
    found = getattr(source, "num_classes", None)
    if isinstance(found, int) and not isinstance(found, bool):
        return found
    raise ValueError(
        "the number of classes is unknown: pass num_classes=... (a mini-batch need not contain every class, "
        f"this one has labels up to {int(targets.max())}), or give the datamodule a num_classes attribute"
    )
