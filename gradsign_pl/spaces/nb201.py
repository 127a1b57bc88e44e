"""The NAS-Bench-201 cell search space: arch strings and the exact benchmark network.

An NB-201 cell is a DAG of 4 nodes; each of its 6 edges (j -> i, j < i) carries one of five operations. An arch
string lists them node by node, e.g. ``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|...|``
(``op~j`` is the edge from node j into the node of that group). The network (``TinyNetwork`` of the benchmark):
a 3x3 conv stem with 16 channels and BatchNorm, three stages of 5 cells with C = 16, 32, 64 separated by
residual reduction blocks, then BatchNorm-ReLU, global average pooling and a linear classifier.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from gradsign_pl.data.paths import data_file
from gradsign_pl.spaces._registry import (
    check_dataset,
    permutation_sample,
    register_space,
)

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
"""The five NB-201 operations, in the benchmark's operation-index order."""

N_EDGES = 6
Genotype = tuple[tuple[tuple[str, int], ...], ...]


def parse_arch(arch: str) -> Genotype:
    """Parse an NB-201 arch string into ``((op, j),), ((op, j), (op, j)), ((op, j), (op, j), (op, j))``."""
    if not isinstance(arch, str):
        raise TypeError(f"an NB-201 arch must be a string like '|nor_conv_3x3~0|+|...|', got {type(arch).__name__}")
    nodes = []
    groups = arch.split("+")
    if len(groups) != 3:
        raise ValueError(f"an NB-201 arch string has 3 '+'-separated node groups, got {len(groups)} in {arch!r}")
    for i, group in enumerate(groups, start=1):
        items = [s for s in group.split("|") if s]
        if len(items) != i:
            raise ValueError(f"node {i} of an NB-201 arch needs {i} incoming edges, got {len(items)} in {arch!r}")
        edges = []
        for j_expected, item in enumerate(items):
            op, _, j = item.partition("~")
            if op not in OPS:
                raise ValueError(f"unknown NB-201 operation {op!r} in {arch!r}; valid: {', '.join(OPS)}")
            if not j.isdigit() or int(j) != j_expected:
                raise ValueError(f"edge {item!r} of node {i} must come from node {j_expected} in {arch!r}")
            edges.append((op, int(j)))
        nodes.append(tuple(edges))
    return tuple(nodes)


def arch_from_ops(ops: Sequence[str]) -> str:
    """Arch string of the 6 edge operations in string order (1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2)."""
    if len(ops) != N_EDGES:
        raise ValueError(f"an NB-201 cell has {N_EDGES} edges, got {len(ops)} operations")
    for op in ops:
        if op not in OPS:
            raise ValueError(f"unknown NB-201 operation {op!r}; valid: {', '.join(OPS)}")
    a, b, c, d, e, f = ops
    return f"|{a}~0|+|{b}~0|{c}~1|+|{d}~0|{e}~1|{f}~2|"


def ops_of(arch: str) -> tuple[str, ...]:
    """The 6 edge operations of an arch string, in string order."""
    return tuple(op for node in parse_arch(arch) for op, _ in node)


def all_archs() -> list[str]:
    """All 5^6 = 15625 arch strings, in product order over :data:`OPS` (edge 1<-0 slowest).

    This is *not* the benchmark's index order, which is only defined by the benchmark's own table.
    """
    return [arch_from_ops(ops) for ops in itertools.product(OPS, repeat=N_EDGES)]


# --------------------------------------------------------------------------------------------- network


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv2d (no bias) -> BatchNorm2d, the NB-201 convolution unit."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out),
        )


class Zero(nn.Module):
    """The ``none`` operation: multiplies by zero (keeps the graph and the shape)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mul(0.0)


def _op(name: str, channels: int) -> nn.Module:
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1, 0)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NB-201 operation {name!r}")


class Cell(nn.Module):
    """One NB-201 cell (``InferCell``): node i = sum over j < i of op_ji(node j); output = node 3."""

    def __init__(self, genotype: Genotype, channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList()
        self.sources: list[list[int]] = []
        for node in genotype:
            self.sources.append([j for _, j in node])
            for op, _ in node:
                self.edges.append(_op(op, channels))

    def forward(self, x: Tensor) -> Tensor:
        nodes = [x]
        k = 0
        for sources in self.sources:
            total = None
            for j in sources:
                y = self.edges[k](nodes[j])
                total = y if total is None else total + y
                k += 1
            assert total is not None  # every node of a genotype has at least one input edge
            nodes.append(total)
        return nodes[-1]


class ResidualReduction(nn.Module):
    """NB-201's reduction block (``ResNetBasicblock`` with stride 2): two ReLUConvBN 3x3 + avgpool/1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0), nn.Conv2d(c_in, c_out, 1, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    """The NAS-Bench-201 network for one arch string; ``forward`` returns logits.

    Args:
        arch: NB-201 arch string.
        num_classes: classifier outputs (10 for CIFAR-10, 100 for CIFAR-100, 120 for ImageNet16-120).
        channels: stem / first-stage width C (16 in the benchmark).
        cells_per_stage: cells per stage N (5 in the benchmark).
        in_chans: input image channels.
    """

    def __init__(
        self, arch: str, num_classes: int = 10, *, channels: int = 16, cells_per_stage: int = 5, in_chans: int = 3
    ) -> None:
        super().__init__()
        self.arch = arch
        genotype = parse_arch(arch)
        self.stem = nn.Sequential(nn.Conv2d(in_chans, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        layers: list[nn.Module] = []
        c = channels
        for stage in range(3):
            if stage > 0:
                layers.append(ResidualReduction(c, c * 2))
                c *= 2
            layers.extend(Cell(genotype, c) for _ in range(cells_per_stage))
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.lastact(self.cells(self.stem(x)))
        return self.classifier(torch.flatten(self.global_pooling(x), 1))


# ------------------------------------------------------------------------------------- benchmark table

TABLE_FILE = "nb201_accuracies.csv"
REQUIRED_COLUMNS = ("index", "arch_str", "cifar10_test", "cifar100_test", "imagenet16_test")


@dataclasses.dataclass
class NB201Table:
    """NAS-Bench-201 ground truth: one row per architecture, in benchmark index order.

    Attributes:
        archs: arch strings; ``archs[i]`` is benchmark index ``i``.
        columns: every numeric column (accuracies in percent, ``params_m_*`` in millions) as float64 arrays.
        source: the file it was read from.
    """

    archs: list[str]
    columns: dict[str, np.ndarray]
    source: str

    def __len__(self) -> int:
        return len(self.archs)

    def column(self, name: str) -> np.ndarray:
        """The numeric column ``name``; a ``KeyError`` lists the available ones."""
        try:
            return self.columns[name]
        except KeyError:
            raise KeyError(f"no column {name!r} in {self.source}; available: {', '.join(self.columns)}") from None

    def index_of(self, arch: str) -> int:
        """Benchmark index of an arch string."""
        if not hasattr(self, "_index"):
            self._index = {a: i for i, a in enumerate(self.archs)}
        try:
            return self._index[arch]
        except KeyError:
            parse_arch(arch)  # a malformed string gets the parser's message
            raise KeyError(f"arch {arch!r} is not in {self.source}") from None


def load_table(path: str | os.PathLike | None = None) -> NB201Table:
    """Read a table with the schema of ``nb201_accuracies.csv``.

    ``path``: the CSV file or a directory holding :data:`TABLE_FILE`; default: the data directory
    (``$GRADSIGN_DATA`` or ``../shared/data``). Missing files and malformed rows are errors that say which.
    """
    if path is not None and Path(path).is_file():
        file = Path(path)
    else:
        file = data_file(TABLE_FILE, path)
    with open(file, newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{file} is not an NB-201 table: missing column(s) {missing}; it has {header}")
        numeric = [c for c in header if c not in ("index", "arch_str")]
        archs: list[str] = []
        values: dict[str, list[float]] = {c: [] for c in numeric}
        for row_no, row in enumerate(reader, start=2):
            if row["index"] != str(len(archs)):
                raise ValueError(
                    f"{file} line {row_no}: index {row['index']!r}, expected {len(archs)} (rows must be in index order)"
                )
            try:
                parse_arch(row["arch_str"])
                for c in numeric:
                    values[c].append(float(row[c]) if row[c] not in ("", None) else math.nan)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{file} line {row_no}: {exc}") from None
            archs.append(row["arch_str"])
    if not archs:
        raise ValueError(f"{file} has a header but no rows")
    return NB201Table(archs, {c: np.asarray(v, dtype=np.float64) for c, v in values.items()}, str(file))


# ------------------------------------------------------------------------------------- registered space

DATASET_COLUMNS = {"cifar10": "cifar10_test", "cifar100": "cifar100_test", "imagenet16": "imagenet16_test"}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet16": 120}


class NB201Space:
    """NAS-Bench-201 as a search space: 15625 archs in benchmark index order, networks and ground truth.

    Args:
        table: the ground-truth CSV or its directory (default: the data directory); read on first use,
            since benchmark index order exists only through that table.
    """

    name = "nb201"
    datasets = tuple(DATASET_COLUMNS)

    def __init__(self, table: str | os.PathLike | None = None) -> None:
        self._table_path = table
        self._table: NB201Table | None = None

    @property
    def table(self) -> NB201Table:
        if self._table is None:
            self._table = load_table(self._table_path)
        return self._table

    def __len__(self) -> int:
        return 5**N_EDGES

    def arch(self, index: int) -> str:
        if not 0 <= index < len(self):
            raise IndexError(f"NB-201 index must be in [0, {len(self)}), got {index}")
        return self.table.archs[index]

    def build(self, arch: str | int, dataset: str = "cifar10") -> NB201Network:
        check_dataset(dataset, self.datasets, self.name)
        return NB201Network(self.arch(arch) if isinstance(arch, int) else arch, NUM_CLASSES[dataset])

    def accuracy(self, dataset: str) -> np.ndarray:
        check_dataset(dataset, self.datasets, self.name)
        return self.table.column(DATASET_COLUMNS[dataset])

    def sample(self, n: int, seed: int) -> list[int]:
        return permutation_sample(len(self), n, seed)


@register_space("nb201")
def nb201(table: str | os.PathLike | None = None) -> NB201Space:
    """NAS-Bench-201 (Dong & Yang, ICLR 2020): 5 ops on 6 edges; CIFAR-10, CIFAR-100, ImageNet16-120."""
    return NB201Space(table)
