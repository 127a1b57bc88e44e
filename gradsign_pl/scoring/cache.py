"""Append-only on-disk results keyed on everything they depend on, so long runs resume and never mix settings.

A :class:`ScoreCache` directory holds ``scores.jsonl`` (one JSON object per line, written and flushed as soon as a
score exists; a line cut short by an interruption is ignored on the next read) and ``meta.json``, which records
every set of *settings* (batch fingerprint, loss, policy, proxy options, space, dataset, ...) scores were computed
under. Each record carries the hash of its settings, and a cache opened with some settings sees only the records
computed under exactly those settings:

* ``on_change="refuse"`` (the studies): a directory that already holds scores of other settings is an error that
  names every setting that differs;
* ``on_change="recompute"`` (``rank()``, ``gradsign-fit``): the other records stay on disk but are never used, new
  scores are computed into the same directory, and :attr:`ScoreCache.changed` says what changed, for the caller to
  report.

The record key itself names the candidate (``rank()`` includes a fingerprint of its spec, kwargs and all) and the
proxy (with the seed), so no two different computations ever share a key.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

SCORES_FILE = "scores.jsonl"
META_FILE = "meta.json"
FORMAT = 2

__all__ = ["META_FILE", "SCORES_FILE", "ScoreCache", "append_jsonl", "iter_jsonl", "settings_hash"]


def settings_hash(meta: Mapping[str, Any]) -> str:
    """A short hash of a settings mapping (JSON, sorted keys)."""
    return hashlib.sha256(json.dumps(_plain(meta), sort_keys=True).encode()).hexdigest()[:16]


def _plain(meta: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(meta), default=str))  # tuples -> lists etc., as JSON gives them back


class ScoreCache:
    """Scores keyed by ``(candidate, proxy)`` under one set of settings, in ``directory``.

    Args:
        directory: where the cache lives (created if needed).
        meta: the settings the scores depend on.
        on_change: what to do when the directory holds scores of other settings (see the module docstring).

    Attributes:
        meta: the settings (as JSON gives them back).
        changed: ``{setting: (before, now)}`` against the settings the directory was last used with, when they
            differ (``on_change="recompute"``); ``None`` otherwise.
        other_records: records on disk under other settings (kept, never used).
        skipped_lines: lines that could not be read (cut short by an interruption).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        meta: Mapping[str, Any],
        *,
        on_change: Literal["refuse", "recompute"] = "refuse",
        _read_only: bool = False,
    ) -> None:
        if on_change not in ("refuse", "recompute"):
            raise ValueError(f"on_change must be 'refuse' or 'recompute', got {on_change!r}")
        self.directory = Path(directory)
        self.path = self.directory / SCORES_FILE
        self.meta = _plain(meta)
        self.key = settings_hash(self.meta)
        self.read_only = _read_only
        known, latest = _read_meta(self.directory / META_FILE)
        self.changed: dict[str, tuple[Any, Any]] | None = None
        if latest is not None and latest != self.key and not _read_only:
            diff = _diff(known[latest], self.meta)
            if on_change == "refuse":
                detail = ", ".join(f"{k}: cached {a!r} vs now {b!r}" for k, (a, b) in sorted(diff.items()))
                raise ValueError(
                    f"{self.directory} holds scores computed with other settings ({detail}); "
                    "use the same settings to resume, or another output directory"
                )
            self.changed = diff
        if not _read_only:
            self.directory.mkdir(parents=True, exist_ok=True)
            known[self.key] = self.meta
            _write_meta(self.directory / META_FILE, known, self.key)
        self._records: dict[tuple[str, str], dict[str, Any]] = {}
        self.other_records = 0
        self.skipped_lines = 0
        legacy = known.get("__legacy__")  # records written before settings hashes: they belong to this one
        if self.path.exists():
            for record in self._read():
                if record.get("settings", legacy) != self.key:
                    self.other_records += 1
                    continue
                self._records[(str(record["candidate"]), record["proxy"])] = record

    @classmethod
    def read(cls, directory: str | os.PathLike) -> ScoreCache:
        """Open an existing cache read-only, under the settings it was last written with (nothing is created)."""
        directory = Path(directory)
        known, latest = _read_meta(directory / META_FILE)
        if latest is None:
            raise FileNotFoundError(f"no score cache at {directory} (no readable {META_FILE})")
        return cls(directory, known[latest], _read_only=True)

    def _read(self) -> Iterator[dict[str, Any]]:
        with open(self.path) as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                    if not isinstance(record, dict) or "candidate" not in record or "proxy" not in record:
                        raise ValueError
                except ValueError:
                    self.skipped_lines += 1  # a line cut short by an interruption
                    continue
                yield record

    def __contains__(self, key: tuple[Any, str]) -> bool:
        return (str(key[0]), key[1]) in self._records

    def __len__(self) -> int:
        return len(self._records)

    def records(self) -> list[dict[str, Any]]:
        """Every record under the current settings (the latest per key), in first-written order."""
        return list(self._records.values())

    def get(self, candidate: Any, proxy: str) -> dict[str, Any] | None:
        """The cached record, or ``None``."""
        return self._records.get((str(candidate), proxy))

    def score(self, candidate: Any, proxy: str) -> float:
        """The cached score (``nan`` when missing or when the proxy failed)."""
        record = self.get(candidate, proxy)
        return math.nan if record is None or record["score"] is None else float(record["score"])

    def add(self, candidate: Any, proxy: str, score: float, **fields: Any) -> None:
        """Record one score and write it to disk at once (``nan`` is stored as ``null``)."""
        if self.read_only:
            raise RuntimeError(f"{self.directory} was opened read-only (ScoreCache.read)")
        record = {
            "candidate": str(candidate),
            "proxy": proxy,
            "score": score if math.isfinite(score) else None,
            "settings": self.key,
        }
        record.update(fields)
        append_jsonl(self.path, record, allow_nan=False)
        self._records[(str(candidate), proxy)] = record

    def describe_change(self) -> str | None:
        """One line naming the settings that changed since the directory was last used, or ``None``."""
        if not self.changed:
            return None
        return ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(self.changed.items()))


def _diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def _read_meta(path: Path) -> tuple[dict[str, Any], str | None]:
    """``(settings by hash, latest hash)``; a pre-format-2 ``meta.json`` (one flat settings dict) is one entry."""
    if not path.is_file():
        return {}, None
    data = json.loads(path.read_text())
    if isinstance(data, dict) and data.get("format") == FORMAT:
        known = dict(data["settings"])
        if data.get("legacy"):
            known["__legacy__"] = data["legacy"]
        return known, data.get("latest")
    key = settings_hash(data)  # format 1: the records carry no settings hash; they belong to these settings
    return {key: data, "__legacy__": key}, key


def _write_meta(path: Path, known: dict[str, Any], latest: str) -> None:
    settings = {k: v for k, v in known.items() if k != "__legacy__"}
    payload = {"format": FORMAT, "latest": latest, "settings": settings}
    if known.get("__legacy__"):
        payload["legacy"] = known["__legacy__"]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def iter_jsonl(path: str | os.PathLike, required: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    """The records of a JSON-lines file that are objects holding the ``required`` keys, in file order.

    A line cut short by an interruption (or any other malformed line) is skipped; a missing file yields nothing.
    """
    path = Path(path)
    if not path.exists():
        return
    with open(path) as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and all(k in record for k in required):
                yield record


def append_jsonl(path: str | os.PathLike, record: dict[str, Any], *, allow_nan: bool = True) -> None:
    """Append ``record`` as one flushed line; if the file ends mid-line (an interrupted write), start a new one."""
    path = Path(path)
    line = json.dumps(record, allow_nan=allow_nan, default=str)
    needs_newline = path.exists() and path.stat().st_size > 0 and not _ends_with_newline(path)
    with open(path, "a") as fh:
        fh.write(("\n" if needs_newline else "") + line + "\n")
        fh.flush()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"
