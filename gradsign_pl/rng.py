"""The one randomness rule of gradsign_pl: seeded work runs inside Lightning's ``isolate_rng``.

Everything that draws random numbers on the user's behalf -- building and re-initialising a candidate, a proxy's
forward passes, drawing a scoring batch -- runs in :func:`seeded`: torch (CPU and every CUDA device), NumPy and
Python's ``random`` are seeded for the body, and every one of their states is restored afterwards, so scoring never
moves the caller's random streams and the same seed always gives the same weights.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from lightning.pytorch.utilities.seed import isolate_rng

__all__ = ["seeded"]


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run the body with torch (CPU and CUDA), NumPy and ``random`` seeded to ``seed``; restore all states after.

    ``seed=None`` seeds nothing: the body draws from the current states, which are restored afterwards (so what it
    drew will be drawn again by whatever runs next, e.g. the training loop's first shuffle).
    """
    with isolate_rng():
        if seed is not None:
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)
        yield
