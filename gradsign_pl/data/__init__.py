"""Real data: where it lives, and seeded mini-batches for scoring."""

from gradsign_pl.data.batches import DATASETS, DatasetSpec, load_batch
from gradsign_pl.data.paths import DATA_ENV, data_dir

__all__ = ["DATASETS", "DATA_ENV", "DatasetSpec", "data_dir", "load_batch"]
