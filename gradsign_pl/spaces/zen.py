"""The Zen-NAS / ZenNet search space: PlainNet structure strings, the exact MasterNet, analytic counts, mutation.

A structure is a chain of *super blocks* written back to back, e.g.
``SuperConvK3BNRELU(3,64,1,1)SuperResK1K5K1(64,168,1,16,3)...SuperConvK1BNRELU(32,512,1,1)``.
Four families of blocks exist (as in Zen-NAS's ``PlainNet`` package):

* ``SuperConvK{K}BNRELU(in,out,stride,sub_layers)``, K in {1,3,5,7}: ``sub_layers`` times Conv(KxK)-BN-ReLU; the
  first conv has the stride and takes ``in`` channels, the others ``out``.
* ``SuperResK{K}K{K}(in,out,stride,bottleneck,sub_layers)``, K in {3,5,7}: ``sub_layers`` residual units
  ``Conv(KxK, in->btl, stride)-BN-ReLU-[SE]-Conv(KxK, btl->out)-BN``, summed with the shortcut, then ReLU.
* ``SuperResK1K{K}K1(in,out,stride,bottleneck,sub_layers)``, K in {3,5,7}: each sub-layer is *two* bottleneck
  residual units ``Conv1x1(->btl)-BN-ReLU-ConvKxK(btl->btl)-BN-ReLU-[SE]-Conv1x1(btl->out)-BN`` + shortcut, ReLU;
  only the very first conv-KxK of the block carries the stride.
* ``SuperResIDWE{E}K{K}(in,out,stride,bottleneck,sub_layers)``, E in {1,2,4,6}, K in {3,5,7} (inverted
  depth-wise): each sub-layer is two units ``Conv1x1(->dw)-BN-ReLU-DWConvKxK(dw)-BN-ReLU-[SE]-Conv1x1(dw->o)-BN``
  + shortcut, ReLU. The first unit maps to ``o = bottleneck`` with ``dw = round8(E * bottleneck)`` (and the stride),
  the second maps ``bottleneck -> out`` with ``dw = round8(E * out)``; ``round8`` is Zen-NAS's ``smart_round(x, 8)``
  (nearest multiple of 8, at least 8, Python's round-half-even).

Shortcuts: the first unit of every residual block always has a projection shortcut (``Conv1x1(in->o, stride)`` *with
bias*, then BN); later units use the identity unless their input and output widths differ (only possible in IDW
blocks, whose second unit has a projection when ``bottleneck != out``). ``[SE]`` is present only with
``use_se=True``: squeeze-excitation ``GAP-Conv1x1(c->s)-BN-ReLU-Conv1x1(s->c)-BN-Sigmoid`` (no conv bias),
``s = max(1, round(c / 4))``, multiplying its input. The network ends with global average pooling and a
``Linear(last out, num_classes)`` (with bias). All BatchNorms use ``eps = 1e-3`` as in Zen-NAS.

Counting conventions, checked against the 12 published ZenNets in ``zennet_structures.csv``:

* :func:`count_params` is the exact number of parameters of :class:`MasterNet` (what Zen-NAS's ``analyze_model.py``
  reports through ``ptflops``): conv weights, projection conv biases, BN weight and bias, SE, classifier.
* :func:`count_flops` defaults to the same tool's FLOPs: conv and classifier multiply-accumulates plus biases,
  BatchNorm (2 per element) and the SE's pooling/ReLU modules; ``convention="macs"`` gives conv+linear MACs only.

With these, 8 of 12 published parameter/FLOPs pairs round to the published figures. The published figures of
ZenNet-400M-SE and -600M-SE are those of the networks *without* SE (5.698M/409.7M and 7.126M/611.3M; with SE they
would be 7.466M/412.8M and 11.312M/617.5M), while ZenNet-900M-SE's are with SE (19.352M/933.7M). The four remaining
figures (latency01ms FLOPs 1760.7M vs "1.7G", latency03ms 4882.8M vs "4.8G", cifar 1M 162.75M vs "162M", latency12ms
180.594M params vs "180M") match only when the published value is the truncation, not the rounding, of ours.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import random
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradsign_pl.data.paths import data_dir
from gradsign_pl.spaces._registry import register_space

# --------------------------------------------------------------------------------------------------------------------
# Block grammar
# --------------------------------------------------------------------------------------------------------------------

BLOCK_FAMILIES: tuple[str, ...] = ("SuperConv", "K1KXK1", "KXKX", "IDW")
"""Names of the block families: ``SuperConvK{K}BNRELU``, ``SuperResK1K{K}K1``, ``SuperResK{K}K{K}``,
``SuperResIDWE{E}K{K}``. Only the three residual families are choices of :func:`mutate_structure`'s ``families``."""

RESIDUAL_FAMILIES: tuple[str, ...] = ("K1KXK1", "KXKX", "IDW")
"""Families a mutation may draw replacement blocks from."""

CONV_KERNELS: tuple[int, ...] = (1, 3, 5, 7)
"""Kernel sizes Zen-NAS defines for ``SuperConvK{K}BNRELU``."""
RES_KERNELS: tuple[int, ...] = (3, 5, 7)
"""Kernel sizes Zen-NAS defines for the residual families."""
IDW_EXPANSIONS: tuple[int, ...] = (1, 2, 4, 6)
"""Expansion ratios Zen-NAS defines for ``SuperResIDWE{E}K{K}``."""

FAMILY_KINDS: dict[str, tuple[str, ...]] = {
    "SuperConv": tuple(f"SuperConvK{k}BNRELU" for k in CONV_KERNELS),
    "K1KXK1": tuple(f"SuperResK1K{k}K1" for k in RES_KERNELS),
    "KXKX": tuple(f"SuperResK{k}K{k}" for k in RES_KERNELS),
    # Zen-NAS's IDW search-space order: kernel-major, expansion-minor
    "IDW": tuple(f"SuperResIDWE{e}K{k}" for k in RES_KERNELS for e in IDW_EXPANSIONS),
}
"""The block kinds of each family, in the order Zen-NAS's search-space files list them."""

GRAMMAR = (
    "a structure is one or more blocks written back to back, each NAME(ints) with non-negative integers and no "
    "spaces: SuperConvK{K}BNRELU(in,out,stride,sub_layers) | SuperResK{K}K{K}(in,out,stride,bottleneck,sub_layers) | "
    "SuperResK1K{K}K1(in,out,stride,bottleneck,sub_layers) | SuperResIDWE{E}K{K}(in,out,stride,bottleneck,sub_layers)"
)
"""The accepted grammar, quoted in parse errors."""

_KIND_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("SuperConv", re.compile(r"SuperConvK(?P<k>\d+)BNRELU")),
    ("K1KXK1", re.compile(r"SuperResK1K(?P<k>\d+)K1")),
    ("KXKX", re.compile(r"SuperResK(?P<k>\d+)K(?P=k)")),
    ("IDW", re.compile(r"SuperResIDWE(?P<e>\d+)K(?P<k>\d+)")),
)
_TOKEN = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)\((?P<args>[^()]*)\)")

BN_EPS = 1e-3
"""BatchNorm epsilon Zen-NAS sets on every BN of a MasterNet."""
SE_RATIO = 0.25
"""Squeeze-excitation reduction ratio of Zen-NAS."""
SPLIT_LAYER_THRESHOLD = 6
"""Zen-NAS splits a residual block with this many sub-layers or more after a mutation."""
MAX_SEARCH_CHANNELS = 2048
"""Width cap of Zen-NAS's XXBL (K1KXK1/KXKX) search space; its IDW space has none."""


def _family_of(kind: str) -> tuple[str, int, int | None] | None:
    """(family, kernel, expansion) of a block name, or None if the name is no Zen-NAS block grammar."""
    for family, pattern in _KIND_PATTERNS:
        m = pattern.fullmatch(kind)
        if m:
            return family, int(m.group("k")), int(m.group("e")) if "e" in pattern.groupindex else None
    return None


@dataclasses.dataclass(frozen=True)
class ZenBlock:
    """One super block of a structure string.

    Attributes:
        kind: the block class name, e.g. ``"SuperConvK3BNRELU"``, ``"SuperResK1K5K1"``, ``"SuperResIDWE4K7"``.
        in_channels, out_channels: widths entering and leaving the block.
        stride: stride of the block's first strided conv (1 or 2 in valid structures).
        bottleneck: bottleneck width of residual blocks; ``None`` for ``SuperConv`` blocks.
        sub_layers: how many times the block's layer pattern repeats.
    """

    kind: str
    in_channels: int
    out_channels: int
    stride: int
    bottleneck: int | None
    sub_layers: int

    def __post_init__(self) -> None:
        parsed = _family_of(self.kind)
        if parsed is None:
            raise ValueError(f"unknown Zen-NAS block {self.kind!r}; {GRAMMAR}")
        if (parsed[0] == "SuperConv") != (self.bottleneck is None):
            raise ValueError(
                f"{self.kind} {'takes no' if parsed[0] == 'SuperConv' else 'needs a'} bottleneck width, "
                f"got bottleneck={self.bottleneck}"
            )

    @property
    def family(self) -> str:
        """The family name (one of :data:`BLOCK_FAMILIES`)."""
        return _family_of(self.kind)[0]  # type: ignore[index]

    @property
    def kernel_size(self) -> int:
        """Kernel size of the block's spatial convolutions."""
        return _family_of(self.kind)[1]  # type: ignore[index]

    @property
    def expansion(self) -> int | None:
        """IDW expansion ratio E, else None."""
        return _family_of(self.kind)[2]  # type: ignore[index]

    def __str__(self) -> str:
        if self.bottleneck is None:
            return f"{self.kind}({self.in_channels},{self.out_channels},{self.stride},{self.sub_layers})"
        return f"{self.kind}({self.in_channels},{self.out_channels},{self.stride},{self.bottleneck},{self.sub_layers})"


def parse_structure(text: str) -> list[ZenBlock]:
    """Parse a Zen-NAS structure string into its blocks (syntax only; see :func:`validate_structure`).

    Whitespace between blocks is ignored. Raises ``ValueError`` naming the character position and the offending
    token, and quoting the accepted grammar.
    """
    if not isinstance(text, str):
        raise TypeError(f"a Zen-NAS structure must be a string, got {type(text).__name__}")
    blocks: list[ZenBlock] = []
    pos, n = 0, len(text)
    while True:
        while pos < n and text[pos].isspace():
            pos += 1
        if pos >= n:
            break
        m = _TOKEN.match(text, pos)
        if m is None:
            snippet = text[pos : pos + 30]
            raise ValueError(f"cannot read a block at position {pos} ({snippet!r}) of the structure; {GRAMMAR}")
        name, args = m.group("name"), m.group("args")
        parsed = _family_of(name)
        if parsed is None:
            raise ValueError(f"unknown block {name!r} at position {pos} of the structure; {GRAMMAR}")
        expected = 4 if parsed[0] == "SuperConv" else 5
        fields = args.split(",")
        if len(fields) != expected or not all(f.isdigit() for f in fields):
            raise ValueError(
                f"block {m.group(0)!r} at position {pos} needs {expected} comma-separated non-negative integers, "
                f"got ({args}); {GRAMMAR}"
            )
        v = [int(f) for f in fields]
        if expected == 4:
            blocks.append(ZenBlock(name, v[0], v[1], v[2], None, v[3]))
        else:
            blocks.append(ZenBlock(name, v[0], v[1], v[2], v[3], v[4]))
        pos = m.end()
    if not blocks:
        raise ValueError(f"empty Zen-NAS structure; {GRAMMAR}")
    return blocks


def format_structure(blocks: Sequence[ZenBlock]) -> str:
    """The Zen-NAS text of ``blocks`` (inverse of :func:`parse_structure` on canonical strings)."""
    return "".join(str(b) for b in blocks)


def _as_blocks(structure: str | Sequence[ZenBlock]) -> list[ZenBlock]:
    return parse_structure(structure) if isinstance(structure, str) else list(structure)


def validate_structure(
    structure: str | Sequence[ZenBlock], in_chans: int | None = 3, resolution: int | None = None
) -> list[ZenBlock]:
    """Parse (if needed) and check a structure; returns its blocks (``in_chans=None``: any input width).

    Raises ``ValueError`` naming the block index for: a first block whose input width is not ``in_chans``, a block
    whose input width differs from the previous block's output width, a stride other than 1 or 2, non-positive
    widths / bottleneck / sub_layers, a kernel size or expansion Zen-NAS does not define, and (when ``resolution``
    is given) a stride-2 block meeting a 1-pixel map, i.e. strides that would reduce the resolution below 1
    (Zen-NAS computes ``resolution // stride``).
    """
    blocks = _as_blocks(structure)
    if not blocks:
        raise ValueError("empty Zen-NAS structure")
    res = resolution
    if res is not None and res < 1:
        raise ValueError(f"resolution must be a positive number of pixels, got {res}")
    for i, b in enumerate(blocks):
        where = f"block {i} ({b})"
        family, k, e = b.family, b.kernel_size, b.expansion
        allowed = CONV_KERNELS if family == "SuperConv" else RES_KERNELS
        if k not in allowed:
            raise ValueError(f"{where}: kernel size {k} not allowed for {family} blocks (allowed: {allowed})")
        if e is not None and e not in IDW_EXPANSIONS:
            raise ValueError(f"{where}: expansion {e} not allowed for IDW blocks (allowed: {IDW_EXPANSIONS})")
        if b.stride not in (1, 2):
            raise ValueError(f"{where}: stride must be 1 or 2, got {b.stride}")
        for field in ("in_channels", "out_channels", "bottleneck", "sub_layers"):
            value = getattr(b, field)
            if value is not None and value < 1:
                raise ValueError(f"{where}: {field} must be positive, got {value}")
        if i == 0 and in_chans is not None and b.in_channels != in_chans:
            raise ValueError(
                f"{where}: the first block must take in_chans={in_chans} input channels, got {b.in_channels}"
            )
        if i > 0 and b.in_channels != blocks[i - 1].out_channels:
            raise ValueError(
                f"{where}: channel chaining broken, in_channels={b.in_channels} but block {i - 1} outputs "
                f"{blocks[i - 1].out_channels} channels"
            )
        if res is not None:
            if res // b.stride < 1:
                raise ValueError(f"{where}: stride {b.stride} reduces the {res}-pixel feature map below 1 pixel")
            res = _out_res(res, b.stride)
    return blocks


# --------------------------------------------------------------------------------------------------------------------
# Layer plan shared by the network builder and the analytic counts
# --------------------------------------------------------------------------------------------------------------------


def smart_round8(x: float) -> int:
    """Zen-NAS's ``smart_round(x, base=8)``: nearest multiple of 8 (round-half-even), at least 8."""
    return max(8, round(x / 8.0) * 8)


def _out_res(res: int, stride: int) -> int:
    """Output side of a conv with odd kernel k, padding (k-1)//2 and ``stride`` (PyTorch arithmetic)."""
    return (res - 1) // stride + 1


@dataclasses.dataclass(frozen=True)
class _Conv:
    cin: int
    cout: int
    k: int
    stride: int = 1
    depthwise: bool = False
    bias: bool = False


@dataclasses.dataclass(frozen=True)
class _BN:
    c: int


@dataclasses.dataclass(frozen=True)
class _ReLU:
    pass


@dataclasses.dataclass(frozen=True)
class _SE:
    c: int

    @property
    def hidden(self) -> int:
        return max(1, round(self.c * SE_RATIO))


_Op = _Conv | _BN | _ReLU | _SE


@dataclasses.dataclass(frozen=True)
class _Unit:
    """``body`` alone (plain) or ``relu(body(x) + shortcut(x))`` (residual; ``proj`` None means identity)."""

    body: tuple[_Op, ...]
    residual: bool
    proj: _Conv | None = None


def _bottleneck_unit(cin: int, mid: int, cout: int, k: int, stride: int, use_se: bool, dw: bool) -> tuple[_Op, ...]:
    ops: list[_Op] = [
        _Conv(cin, mid, 1),
        _BN(mid),
        _ReLU(),
        _Conv(mid, mid, k, stride, depthwise=dw),
        _BN(mid),
        _ReLU(),
    ]
    if use_se:
        ops.append(_SE(mid))
    return (*ops, _Conv(mid, cout, 1), _BN(cout))


def _residual(body: tuple[_Op, ...], cin: int, cout: int, stride: int, first: bool) -> _Unit:
    # Zen-NAS: the first unit of a block is a ResBlockProj (always projects); later ones project only when needed.
    needs_proj = first or stride > 1 or cin != cout
    return _Unit(body, True, _Conv(cin, cout, 1, stride, bias=True) if needs_proj else None)


def _block_units(b: ZenBlock, use_se: bool) -> list[_Unit]:
    """The units a super block expands to (Zen-NAS's PlainNet super-block expansion)."""
    units: list[_Unit] = []
    family, k, cin, stride = b.family, b.kernel_size, b.in_channels, b.stride
    out, btl = b.out_channels, b.bottleneck
    for i in range(b.sub_layers):
        first = i == 0
        if family == "SuperConv":
            units.append(_Unit((_Conv(cin, out, k, stride), _BN(out), _ReLU()), False))
            cin, stride = out, 1
            continue
        assert btl is not None  # every residual family has a bottleneck width (ZenBlock.__post_init__)
        if family == "KXKX":
            ops: list[_Op] = [_Conv(cin, btl, k, stride), _BN(btl), _ReLU()]
            if use_se:
                ops.append(_SE(btl))
            units.append(_residual((*ops, _Conv(btl, out, k), _BN(out)), cin, out, stride, first))
        elif family == "K1KXK1":
            units.append(_residual(_bottleneck_unit(cin, btl, out, k, stride, use_se, False), cin, out, stride, first))
            units.append(_residual(_bottleneck_unit(out, btl, out, k, 1, use_se, False), out, out, 1, False))
        else:  # IDW
            e = b.expansion
            assert e is not None  # IDW blocks have an expansion ratio
            dw1, dw2 = smart_round8(btl * e), smart_round8(out * e)
            units.append(_residual(_bottleneck_unit(cin, dw1, btl, k, stride, use_se, True), cin, btl, stride, first))
            units.append(_residual(_bottleneck_unit(btl, dw2, out, k, 1, use_se, True), btl, out, 1, False))
        cin, stride = out, 1
    return units


def _conv_params(c: _Conv) -> int:
    per_out = c.k * c.k * (1 if c.depthwise else c.cin)
    return c.cout * per_out + (c.cout if c.bias else 0)


def _op_params(op: _Op) -> int:
    if isinstance(op, _Conv):
        return _conv_params(op)
    if isinstance(op, _BN):
        return 2 * op.c
    if isinstance(op, _SE):
        return 2 * op.c * op.hidden + 2 * op.hidden + 2 * op.c
    return 0


def _conv_macs(c: _Conv, res_in: int) -> tuple[int, int]:
    """(MACs, output side) of a conv on a ``res_in`` x ``res_in`` map."""
    res_out = _out_res(res_in, c.stride)
    per_out = c.k * c.k * (1 if c.depthwise else c.cin)
    return c.cout * per_out * res_out * res_out, res_out


# --------------------------------------------------------------------------------------------------------------------
# Analytic counts
# --------------------------------------------------------------------------------------------------------------------


def count_params(structure: str | Sequence[ZenBlock], num_classes: int, use_se: bool = False) -> int:
    """Exact number of parameters of ``MasterNet(structure, num_classes, use_se=use_se)``.

    Counts conv weights, the projection-shortcut conv biases, BN weight and bias (2 per channel), SE convs and BNs,
    and the classifier's weight and bias. (Zen-NAS's own ``get_model_size`` differs: it counts one parameter per BN
    channel, omits the projection BN and adds a single classifier bias; the published ZenNet sizes follow the exact
    count used here.)
    """
    blocks = _as_blocks(structure)
    total = 0
    for b in blocks:
        for u in _block_units(b, use_se):
            total += sum(_op_params(op) for op in u.body)
            if u.proj is not None:
                total += _conv_params(u.proj) + 2 * u.proj.cout
    return total + blocks[-1].out_channels * num_classes + num_classes


FLOPS_CONVENTIONS: tuple[str, ...] = ("zennas", "macs")
"""Conventions :func:`count_flops` knows (see there)."""


def count_flops(
    structure: str | Sequence[ZenBlock],
    resolution: int,
    num_classes: int,
    use_se: bool = False,
    *,
    convention: str = "zennas",
) -> int:
    """Analytic FLOPs of one ``resolution`` x ``resolution`` image through the MasterNet, in Zen-NAS's convention.

    ``convention="zennas"`` (default) is what Zen-NAS's ``analyze_model.py`` reports (``ptflops`` on its MasterNet),
    the figures of the published ZenNet table: multiply-accumulates (MACs) of every convolution and of the
    classifier, plus one per output element of a biased conv (the projection shortcuts), two per element entering a
    BatchNorm, one per element entering an ``nn.AdaptiveAvgPool2d`` or an ``nn.ReLU`` *module* (only SE uses those;
    Zen-NAS's main-path ReLUs and final pooling are functional and uncounted), and the classifier's ``num_classes``
    bias adds. Residual additions, Sigmoid and the SE scaling count zero.

    ``convention="macs"``: MACs of the convolutions (main path, depth-wise, projections, SE) and the classifier
    only -- what ``torch.utils.flop_counter.FlopCounterMode`` reports divided by 2.

    Feature-map sizes follow PyTorch (``(h - 1) // stride + 1`` for the 'same'-padded odd kernels).
    """
    if convention not in FLOPS_CONVENTIONS:
        raise ValueError(f"unknown FLOPs convention {convention!r}; choose one of {FLOPS_CONVENTIONS}")
    full = convention == "zennas"
    blocks = _as_blocks(structure)
    res, total = resolution, 0
    for b in blocks:
        for u in _block_units(b, use_se):
            res_in = res
            for op in u.body:
                if isinstance(op, _Conv):
                    macs, res = _conv_macs(op, res)
                    total += macs
                elif isinstance(op, _SE):
                    total += 2 * op.c * op.hidden  # the two 1x1 convs on the pooled map
                    if full:  # GAP input, BN(hidden), ReLU(hidden), BN(c)
                        total += op.c * res * res + 2 * op.hidden + op.hidden + 2 * op.c
                elif isinstance(op, _BN) and full:
                    total += 2 * op.c * res * res
            if u.proj is not None:
                macs, res_p = _conv_macs(u.proj, res_in)
                total += macs
                if full:  # conv bias + BN
                    total += 3 * u.proj.cout * res_p * res_p
    total += blocks[-1].out_channels * num_classes
    return total + (num_classes if full else 0)


def count_layers(structure: str | Sequence[ZenBlock]) -> int:
    """Zen-NAS's ``get_num_layers``: the sum of ``sub_layers`` over all blocks (its ``max_layers`` budget unit)."""
    return sum(b.sub_layers for b in _as_blocks(structure))


# --------------------------------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------------------------------


class _SEModule(nn.Module):
    """Squeeze-excitation as Zen-NAS builds it: x * sigmoid(BN(conv(relu(BN(conv(GAP(x))))))) without conv biases."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden, eps=BN_EPS),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1, bias=False),
            nn.BatchNorm2d(channels, eps=BN_EPS),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


class _ResidualUnit(nn.Module):
    """relu(body(x) + shortcut(x)); the shortcut is a 1x1 conv (with bias) + BN, or the identity."""

    def __init__(self, body: nn.Sequential, proj: nn.Sequential | None) -> None:
        super().__init__()
        self.body = body
        self.proj = proj

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.proj is None else self.proj(x)
        return F.relu(self.body(x) + shortcut)


def _make_conv(c: _Conv) -> nn.Conv2d:
    return nn.Conv2d(
        c.cin, c.cout, c.k, c.stride, padding=(c.k - 1) // 2, bias=c.bias, groups=c.cin if c.depthwise else 1
    )


def _make_op(op: _Op) -> nn.Module:
    if isinstance(op, _Conv):
        return _make_conv(op)
    if isinstance(op, _BN):
        return nn.BatchNorm2d(op.c, eps=BN_EPS)
    if isinstance(op, _SE):
        return _SEModule(op.c, op.hidden)
    return nn.ReLU()


def _make_unit(u: _Unit) -> nn.Module:
    body = nn.Sequential(*(_make_op(op) for op in u.body))
    if not u.residual:
        return body
    proj = None if u.proj is None else nn.Sequential(_make_conv(u.proj), nn.BatchNorm2d(u.proj.cout, eps=BN_EPS))
    return _ResidualUnit(body, proj)


ZEN_INIT_GAIN = 3.26033
"""Gain of Zen-NAS's custom (``--weight_init custom``) initialisation."""


class MasterNet(nn.Module):
    """A Zen-NAS MasterNet: the structure's super blocks, global average pooling and a linear classifier.

    Weight init follows Zen-NAS's ``init_parameters`` (the ``--weight_init custom`` init of all its published
    training scripts): convs ``xavier_normal_(gain=3.26033)`` with zero biases, the classifier weight
    ``N(0, 3.26033 * sqrt(2 / (fan_in + fan_out)))`` with zero bias, BN weight 1 and bias 0. Zen-NAS additionally
    zeroes the last BN weight of every residual branch; that makes the gradient of every residual-branch weight
    zero at initialisation (degenerate for gradient-based zero-cost proxies), so it is opt-in here through
    ``zero_init_residual=True``.

    Args:
        structure: a structure string or its blocks (validated against ``in_chans``).
        num_classes: classifier outputs.
        in_chans: input image channels.
        use_se: insert squeeze-excitation after the spatial conv of every residual unit (Zen-NAS ``--use_se``).
        dropout: Zen-NAS's dropout: after block i with ``p = i / n_blocks * dropout`` and before the classifier with
            ``p = dropout`` (training mode only); 0 disables it.
        zero_init_residual: also zero the last BN weight of every residual branch, as Zen-NAS does.

    Attributes:
        structure: the canonical structure string.
        blocks: the validated :class:`ZenBlock` list.
        feature_channels: channels of each :meth:`stage_features` output.
        feature_reductions: input side / map side of each :meth:`stage_features` output (the strides so far), which
            distillation uses to pair student and teacher stages.
    """

    def __init__(
        self,
        structure: str | Sequence[ZenBlock],
        num_classes: int = 1000,
        in_chans: int = 3,
        use_se: bool = False,
        dropout: float = 0.0,
        *,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.blocks_spec = validate_structure(structure, in_chans=in_chans)
        self.structure = format_structure(self.blocks_spec)
        self.num_classes, self.in_chans, self.use_se, self.dropout = num_classes, in_chans, use_se, dropout
        self.blocks = nn.ModuleList(
            nn.Sequential(*(_make_unit(u) for u in _block_units(b, use_se))) for b in self.blocks_spec
        )
        self.classifier = nn.Linear(self.blocks_spec[-1].out_channels, num_classes)
        # stage ends: the block just before each stride-2 block (other than the stem), and the last block
        self._stage_ends = [i - 1 for i in range(1, len(self.blocks_spec)) if self.blocks_spec[i].stride == 2]
        self._stage_ends.append(len(self.blocks_spec) - 1)
        self.feature_channels = [self.blocks_spec[i].out_channels for i in self._stage_ends]
        reduction, reductions = 1, []
        for b in self.blocks_spec:
            reduction *= b.stride
            reductions.append(reduction)
        self.feature_reductions = [reductions[i] for i in self._stage_ends]
        self.init_parameters(zero_init_residual=zero_init_residual)

    def init_parameters(self, zero_init_residual: bool = False) -> None:
        """(Re-)apply Zen-NAS's custom initialisation (see the class docstring)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight, gain=ZEN_INIT_GAIN)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                std = ZEN_INIT_GAIN * math.sqrt(2.0 / (m.weight.shape[0] + m.weight.shape[1]))
                nn.init.normal_(m.weight, 0.0, std)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, _ResidualUnit):
                    nn.init.zeros_(cast(Tensor, m.body[-1].weight))  # the body's last op is a BatchNorm2d

    def _run_blocks(self, x: Tensor) -> Iterator[Tensor]:
        n = len(self.blocks)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if self.dropout > 0:
                x = F.dropout(x, i / n * self.dropout, training=self.training)
            yield x

    def forward_features(self, x: Tensor) -> Tensor:
        """The last feature map, before global pooling: ``(n, feature_channels[-1], h, w)``."""
        y = x
        for y in self._run_blocks(x):  # noqa: B007 - the last block's output is the one wanted
            pass
        return y

    def stage_features(self, x: Tensor) -> list[Tensor]:
        """Feature maps at the end of each resolution stage: the output just before every stride-2 block (the stem
        excepted) and the final feature map; channels are :attr:`feature_channels`."""
        ends, out = set(self._stage_ends), []
        for i, y in enumerate(self._run_blocks(x)):
            if i in ends:
                out.append(y)
        return out

    def _head(self, features: Tensor) -> Tensor:
        x = torch.flatten(F.adaptive_avg_pool2d(features, 1), 1)
        if self.dropout > 0:
            x = F.dropout(x, self.dropout, training=self.training)
        return self.classifier(x)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(n, num_classes)``."""
        return self._head(self.forward_features(x))

    def extract_stage_features_and_logit(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """``(stage_features(x), forward(x))`` from one pass (ZenNAS's name), for feature distillation."""
        ends, maps, y = set(self._stage_ends), [], x
        for i, y in enumerate(self._run_blocks(x)):
            if i in ends:
                maps.append(y)
        return maps, self._head(y)


# --------------------------------------------------------------------------------------------------------------------
# Mutation (Zen-NAS evolution_search.get_new_random_structure_str)
# --------------------------------------------------------------------------------------------------------------------


def _width_choices(width: int, cap: int | None) -> list[int]:
    """Zen-NAS's ``get_select_student_channels_list``: width x {2.5, 2, 1.5, 1.25, 1, 1/1.25, 1/1.5, 1/2, 1/2.5},
    clamped to [8, cap], rounded to multiples of 8; distinct, descending."""
    xs = [width * 2.5, width * 2, width * 1.5, width * 1.25, width, width / 1.25, width / 1.5, width / 2, width / 2.5]
    xs = [max(8, x) if cap is None else min(cap, max(8, x)) for x in xs]
    return sorted({smart_round8(x) for x in xs}, reverse=True)


def _sub_layer_choices(sub_layers: int) -> list[int]:
    """sub_layers + {-2..2}, keeping only positive values; distinct, descending."""
    return sorted({s for s in range(sub_layers - 2, sub_layers + 3) if s > 0}, reverse=True)


def _replacement_pool(block: ZenBlock, families: Sequence[str], fix_fc: bool, cap: int | None) -> list[str]:
    """Candidate replacements of ``block`` in Zen-NAS's draw weighting (a flat list; duplicates weight the draw)."""
    if block.family == "SuperConv":
        if fix_fc and block.kernel_size == 1:  # IDW space: "last fc layer, never change fc"
            widths = [block.out_channels]
        else:
            widths = _width_choices(block.out_channels, cap)
        return sorted({f"{block.kind}({block.in_channels},{w},{block.stride},1)" for w in widths})
    outs, subs = _width_choices(block.out_channels, cap), _sub_layer_choices(block.sub_layers)
    btls = _width_choices(block.bottleneck, cap)  # type: ignore[arg-type]
    recorded: list[list[str]] = []
    for family in families:
        current: list[str] = []
        for kind in FAMILY_KINDS[family]:
            # Zen-NAS appends each kind's candidates to the list it recorded for the previous kind before recording
            # a deduplicated copy, so earlier kinds of a family are drawn somewhat more often; kept as is.
            current.extend(
                f"{kind}({block.in_channels},{o},{block.stride},{bt},{s})" for o in outs for s in subs for bt in btls
            )
            current = sorted(set(current))
            recorded.append(current)
    return [c for lst in recorded for c in lst]


def _split(block: ZenBlock) -> list[ZenBlock]:
    """Zen-NAS's ``split(split_layer_threshold=6)``: a residual block with >= 6 sub-layers becomes two blocks of
    3 and 3 sub-layers (Zen-NAS uses threshold//2 and threshold - threshold//2, not the block's own depth)."""
    if block.family == "SuperConv" or block.sub_layers < SPLIT_LAYER_THRESHOLD:
        return [block]
    first = SPLIT_LAYER_THRESHOLD // 2
    return [
        dataclasses.replace(block, sub_layers=first),
        dataclasses.replace(block, in_channels=block.out_channels, stride=1, sub_layers=SPLIT_LAYER_THRESHOLD - first),
    ]


def default_families(structure: str | Sequence[ZenBlock]) -> tuple[str, ...]:
    """The Zen-NAS search space a structure belongs to: ``("IDW",)`` if it has IDW blocks, else the XXBL space
    ``("K1KXK1", "KXKX")``."""
    return ("IDW",) if any(b.family == "IDW" for b in _as_blocks(structure)) else ("K1KXK1", "KXKX")


def mutate_structure(
    structure: str | Sequence[ZenBlock],
    rng: random.Random,
    *,
    num_replaces: int = 1,
    families: Sequence[str] | None = None,
) -> str:
    """Zen-NAS's mutation operator: replace up to ``num_replaces`` randomly chosen blocks, re-chain, split.

    ``num_replaces`` times, a block index is drawn uniformly (the stem and the final 1x1 conv included; an index
    drawn twice is skipped). A ``SuperConv`` block becomes the same kind with a new width (sub_layers 1); a residual
    block becomes any kind of ``families`` with new width, bottleneck and sub_layers, keeping its input width and
    stride. Widths and bottlenecks are the old value times one of {2.5, 2, 1.5, 1.25, 1, 1/1.25, 1/1.5, 1/2, 1/2.5}
    rounded to a multiple of 8 (at least 8), sub_layers the old value + {-2..2} (at least 1). With the IDW family
    (Zen-NAS's ``search_space_IDW_fixfc``) the final 1x1 conv keeps its width; otherwise (``search_space_XXBL``)
    widths are capped at 2048. Afterwards every block's input width is set to its predecessor's output width and
    residual blocks of 6+ sub-layers are split into two blocks of 3. Deterministic given ``rng``'s state.

    Args:
        families: residual families to draw replacements from (default: :func:`default_families`).

    Returns:
        the new structure string (valid whenever the input is).
    """
    blocks = validate_structure(structure, in_chans=None)
    fams = tuple(default_families(blocks) if families is None else families)
    unknown = [f for f in fams if f not in RESIDUAL_FAMILIES]
    if unknown or not fams:
        raise ValueError(f"families must be a non-empty subset of {RESIDUAL_FAMILIES}, got {list(fams)}")
    fix_fc = "IDW" in fams
    cap = None if fix_fc else MAX_SEARCH_CHANNELS
    chosen: set[int] = set()
    for _ in range(num_replaces):
        i = rng.randint(0, len(blocks) - 1)
        if i in chosen:
            continue
        chosen.add(i)
        pool = _replacement_pool(blocks[i], fams, fix_fc, cap)
        blocks[i] = parse_structure(rng.choice(pool))[0]
    for i in range(1, len(blocks)):
        blocks[i] = dataclasses.replace(blocks[i], in_channels=blocks[i - 1].out_channels)
    return format_structure([piece for b in blocks for piece in _split(b)])


# --------------------------------------------------------------------------------------------------------------------
# Published structures and the registered space
# --------------------------------------------------------------------------------------------------------------------

PUBLISHED_FILE = "zennet_structures.csv"
"""The published ZenNet table in the data directory."""


def published_structures(root: str | Path | None = None) -> list[dict[str, object]]:
    """Rows of ``zennet_structures.csv`` (from :func:`~gradsign_pl.data.paths.data_dir`), typed: name, resolution,
    num_classes, use_se, published_params, published_flops, published_top1, structure."""
    path = data_dir(root) / PUBLISHED_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{PUBLISHED_FILE} is not in the data directory {path.parent}")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [
        {
            "name": r["name"],
            "resolution": int(r["resolution"]),
            "num_classes": int(r["num_classes"]),
            "use_se": r["use_se"].strip().lower() == "true",
            "published_params": float(r["published_params"]),
            "published_flops": float(r["published_flops"]),
            "published_top1": float(r["published_top1"]),
            "structure": r["structure"],
        }
        for r in rows
    ]


CIFAR_INITIAL_STRUCTURE = (
    "SuperConvK3BNRELU(3,8,1,1)SuperResK3K3(8,16,1,8,1)SuperResK3K3(16,32,2,16,1)SuperResK3K3(32,64,2,32,1)"
    "SuperResK3K3(64,64,2,32,1)SuperConvK1BNRELU(64,128,1,1)"
)
"""The initial structure of Zen-NAS's CIFAR searches (XXBL space, 32 px)."""
IMAGENET_IDW_INITIAL_STRUCTURE = (
    "SuperConvK3BNRELU(3,8,2,1)SuperResIDWE6K3(8,32,2,8,1)SuperResIDWE6K3(32,48,2,32,1)"
    "SuperResIDWE6K3(48,96,2,48,1)SuperResIDWE6K3(96,128,2,96,1)SuperConvK1BNRELU(128,2048,1,1)"
)
"""The initial structure of Zen-NAS's ImageNet FLOPs-budget searches (IDW space, 224 px)."""


class ZenSpace:
    """The Zen-NAS space as a generative search space (no index, no ground-truth accuracy table).

    Args:
        use_se: build and count networks with squeeze-excitation (Zen-NAS's IDW ImageNet models use it).
        families: residual families mutations draw from; default: ``("IDW",)`` when ``use_se`` else the XXBL
            families ``("K1KXK1", "KXKX")``.
    """

    name = "zen"
    datasets: tuple[str, ...] = ()
    num_replaces = 1
    """Zen-NAS replaces one block while the population is small (<= 10) and two afterwards; 1 is the default here."""

    def __init__(self, use_se: bool = False, families: Sequence[str] | None = None) -> None:
        self.use_se = use_se
        self.families = tuple(families) if families is not None else (("IDW",) if use_se else ("K1KXK1", "KXKX"))
        bad = [f for f in self.families if f not in RESIDUAL_FAMILIES]
        if bad or not self.families:
            raise ValueError(f"families must be a non-empty subset of {RESIDUAL_FAMILIES}, got {list(self.families)}")
        # Zen-NAS starts its IDW (ImageNet FLOPs-budget) searches and its XXBL (CIFAR) searches from these
        self.initial_structure = IMAGENET_IDW_INITIAL_STRUCTURE if "IDW" in self.families else CIFAR_INITIAL_STRUCTURE

    def build(self, structure: str | Sequence[ZenBlock], num_classes: int, in_chans: int = 3) -> MasterNet:
        """A freshly initialised :class:`MasterNet` (with this space's ``use_se``)."""
        return MasterNet(structure, num_classes=num_classes, in_chans=in_chans, use_se=self.use_se)

    def params(self, structure: str | Sequence[ZenBlock], num_classes: int) -> int:
        """:func:`count_params` with this space's ``use_se``."""
        return count_params(structure, num_classes, use_se=self.use_se)

    def flops(self, structure: str | Sequence[ZenBlock], resolution: int, num_classes: int) -> int:
        """:func:`count_flops` (ZenNAS's published convention) with this space's ``use_se``."""
        return count_flops(structure, resolution, num_classes, use_se=self.use_se)

    def layers(self, structure: str | Sequence[ZenBlock]) -> int:
        """:func:`count_layers`."""
        return count_layers(structure)

    def mutate(self, structure: str | Sequence[ZenBlock], rng: random.Random, num_replaces: int | None = None) -> str:
        """:func:`mutate_structure` with this space's families; ``num_replaces`` blocks (default 1) are replaced.

        The evolutionary search passes 1 while its population is small and 2 afterwards, as Zen-NAS does.
        """
        n = self.num_replaces if num_replaces is None else num_replaces
        return mutate_structure(structure, rng, num_replaces=n, families=self.families)

    def validate(
        self, structure: str | Sequence[ZenBlock], in_chans: int = 3, resolution: int | None = None
    ) -> list[ZenBlock]:
        """:func:`validate_structure`."""
        return validate_structure(structure, in_chans=in_chans, resolution=resolution)


@register_space("zen")
def zen(use_se: bool = False, families: Sequence[str] | None = None) -> ZenSpace:
    """Zen-NAS / ZenNet (Lin et al., ICCV 2021): PlainNet super blocks; generative, mutated by Zen-NAS's operator."""
    return ZenSpace(use_se=use_se, families=families)
