"""The on-disk score cache: resume, interrupted lines, settings mismatch."""

from __future__ import annotations

import json
import math

import pytest

from gradsign_pl.scoring.cache import ScoreCache

META = {"space": "toy", "dataset": "d", "seed": 42, "batch_size": 8}


def test_scores_survive_a_restart(tmp_path):
    cache = ScoreCache(tmp_path, META)
    cache.add(3, "gradsign", 12.5, seconds=0.1)
    cache.add(3, "synflow", math.nan, reason="overflow")
    again = ScoreCache(tmp_path, META)
    assert len(again) == 2 and (3, "gradsign") in again and (4, "gradsign") not in again
    assert again.score(3, "gradsign") == 12.5
    assert math.isnan(again.score(3, "synflow")) and again.get(3, "synflow")["reason"] == "overflow"
    assert math.isnan(again.score(99, "gradsign"))


def test_a_line_cut_short_is_skipped_and_the_next_write_is_clean(tmp_path):
    cache = ScoreCache(tmp_path, META)
    cache.add(1, "p", 1.0)
    with open(cache.path, "a") as fh:
        fh.write('{"candidate": "2", "proxy": "p", "sco')  # killed mid-write
    again = ScoreCache(tmp_path, META)
    assert len(again) == 1 and again.skipped_lines == 1
    again.add(2, "p", 2.0)
    third = ScoreCache(tmp_path, META)
    assert third.score(2, "p") == 2.0 and third.skipped_lines == 1
    assert all(json.loads(line) for line in cache.path.read_text().splitlines()[-1:])


def test_other_settings_are_refused(tmp_path):
    ScoreCache(tmp_path, META)
    with pytest.raises(ValueError, match=r"batch_size: cached 8 vs now 64.*another output directory"):
        ScoreCache(tmp_path, dict(META, batch_size=64))
