"""Typed results of zero-cost proxies: one object per score, carrying what is needed to reproduce it."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, ClassVar, TypeVar

_R = TypeVar("_R", bound="ProxyResult")


@dataclasses.dataclass
class ProxyResult:
    """The score of one proxy on one model and one mini-batch.

    Attributes:
        proxy: registered name of the proxy (``"gradsign"``, ...).
        score: the proxy value; higher means better predicted performance. ``nan`` when it could not be
            computed (``reason`` says why).
        n_samples: number of samples in the mini-batch that was scored.
        n_params: number of scalar parameters the proxy looked at.
        elapsed_s: wall-clock seconds spent scoring (model copy, probes and the computation itself).
        peak_memory_bytes: peak accelerator memory allocated while scoring (CUDA only), else ``None``.
        device: device the score was computed on (``"cpu"``, ``"cuda:0"``).
        dtype: floating dtype of the model while scoring (``"float32"``, ...).
        batch_fingerprint: SHA-256 prefix of the inputs and targets, to tell batches apart in caches.
        options: every option that influenced the value, as plain JSON types.
        per_layer: contribution of each parameter tensor to ``score`` (same units; they add up to ``score``).
        reason: why ``score`` is ``nan``, else ``None``.
    """

    proxy: str
    score: float
    n_samples: int
    n_params: int
    elapsed_s: float
    peak_memory_bytes: int | None
    device: str
    dtype: str
    batch_fingerprint: str
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    per_layer: dict[str, float] = dataclasses.field(default_factory=dict)
    reason: str | None = None

    _kind: ClassVar[str] = "ProxyResult"

    @property
    def is_finite(self) -> bool:
        """Whether ``score`` is a finite number."""
        return math.isfinite(self.score)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary of every field (``nan`` is written as ``None``)."""
        data = dataclasses.asdict(self)
        data["score"] = None if math.isnan(self.score) else self.score
        data["kind"] = self._kind
        return data

    def to_json(self, **kwargs: Any) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), allow_nan=False, **kwargs)

    @classmethod
    def from_dict(cls: type[_R], data: dict[str, Any]) -> _R:
        """Rebuild a result from :meth:`to_dict` output (unknown keys are an error)."""
        data = dict(data)
        kind = data.pop("kind", cls._kind)
        if kind != cls._kind:
            raise ValueError(f"this is a serialised {kind}, not a {cls._kind}; use {kind}.from_dict")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown fields for {cls._kind}: {unknown}")
        if data.get("score") is None:
            data["score"] = math.nan
        return cls(**data)

    @classmethod
    def from_json(cls: type[_R], text: str) -> _R:
        """Rebuild a result from :meth:`to_json` text."""
        return cls.from_dict(json.loads(text))
