"""Shared fixtures: the real data directory, skipped with a reason when it is absent."""

from __future__ import annotations

import pytest

from gradsign_pl.data.paths import DATA_ENV, data_dir


@pytest.fixture(scope="session")
def shared_data():
    """The real data directory (``$GRADSIGN_DATA`` or ``../shared/data``); skips the test when absent."""
    try:
        return data_dir()
    except FileNotFoundError:
        pytest.skip(f"real data not found: set {DATA_ENV} or place it in ../shared/data")
