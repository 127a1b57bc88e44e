"""Where the real data files are: an explicit path, else ``$GRADSIGN_DATA``, else ``../shared/data``."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "GRADSIGN_DATA"
"""Environment variable naming the data directory."""

_REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = _REPO_ROOT.parent / "shared" / "data"
"""``../shared/data`` next to a source checkout (the project's data directory during development)."""


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The data directory: ``path`` if given, else ``$GRADSIGN_DATA``, else :data:`DEFAULT_DATA_DIR`.

    Raises ``FileNotFoundError`` naming every place it looked and how to point at the data.
    """
    candidates = [Path(path)] if path is not None else []
    if path is None and os.environ.get(DATA_ENV):
        candidates.append(Path(os.environ[DATA_ENV]))
    if path is None:
        candidates.append(DEFAULT_DATA_DIR)
    for c in candidates:
        if c.is_dir():
            return c
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"no data directory found (looked in: {looked}); pass the directory explicitly or set {DATA_ENV}=/path/to/data"
    )


def data_file(name: str, root: str | os.PathLike | None = None) -> Path:
    """Path of the file ``name`` inside :func:`data_dir`; ``FileNotFoundError`` says what is missing."""
    directory = data_dir(root)
    f = directory / name
    if not f.is_file():
        raise FileNotFoundError(
            f"{name} is not in the data directory {directory}; copy or link it there, or pass root="
        )
    return f
