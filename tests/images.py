"""Generated image folders for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def tiny_imagefolder(root: Path, size: int, per_class: int = 4) -> Path:
    """``root/{train,val}/{red,blue}/*.png``: two colour classes, learnable."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, name in enumerate(("red", "blue")):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
                img[..., 0 if c == 0 else 2] += 160
                Image.fromarray(img).save(folder / f"{i}.png")
    return root
