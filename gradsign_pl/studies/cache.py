"""An append-only on-disk cache of proxy scores, so that long studies resume where they stopped.

One JSON object per line (``scores.jsonl``), written and flushed as soon as a score exists. A line cut short by an
interruption is ignored on the next read, and the next write starts on a fresh line. Next to it, ``meta.json``
records what the scores depend on (space, dataset, batch, seed, ...); resuming with different settings is an error
rather than a silent mix.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

SCORES_FILE = "scores.jsonl"
META_FILE = "meta.json"


class ScoreCache:
    """Scores keyed by ``(candidate, proxy)`` in ``directory/scores.jsonl``.

    Args:
        directory: where the cache lives (created if needed).
        meta: the settings the scores depend on; must equal those of an existing cache in ``directory``.
    """

    def __init__(self, directory: str | os.PathLike, meta: Mapping[str, Any]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / SCORES_FILE
        meta = json.loads(json.dumps(dict(meta)))  # normalise tuples etc. to what JSON gives back
        meta_path = self.directory / META_FILE
        if meta_path.exists():
            old = json.loads(meta_path.read_text())
            diff = {k: (old.get(k), meta.get(k)) for k in set(old) | set(meta) if old.get(k) != meta.get(k)}
            if diff:
                detail = ", ".join(f"{k}: cached {a!r} vs now {b!r}" for k, (a, b) in sorted(diff.items()))
                raise ValueError(
                    f"{self.directory} holds scores computed with other settings ({detail}); "
                    "use the same settings to resume, or another output directory"
                )
        else:
            meta_path.write_text(json.dumps(meta, indent=2) + "\n")
        self.meta = meta
        self._records: dict[tuple[str, str], dict[str, Any]] = {}
        self.skipped_lines = 0
        if self.path.exists():
            for record in self._read():
                self._records[(str(record["candidate"]), record["proxy"])] = record

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

    def get(self, candidate: Any, proxy: str) -> dict[str, Any] | None:
        """The cached record, or ``None``."""
        return self._records.get((str(candidate), proxy))

    def score(self, candidate: Any, proxy: str) -> float:
        """The cached score (``nan`` when missing or when the proxy failed)."""
        record = self.get(candidate, proxy)
        return math.nan if record is None or record["score"] is None else float(record["score"])

    def add(self, candidate: Any, proxy: str, score: float, **fields: Any) -> None:
        """Record one score and write it to disk at once (``nan`` is stored as ``null``)."""
        record = {"candidate": str(candidate), "proxy": proxy, "score": score if math.isfinite(score) else None}
        record.update(fields)
        append_jsonl(self.path, record, allow_nan=False)
        self._records[(str(candidate), proxy)] = record


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
