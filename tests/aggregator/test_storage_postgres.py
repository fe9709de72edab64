"""PostgreSQL with several writers at once (ingest workers sharing a subscription): dedupe and
rollups hold across writers, a dead writer's unflushed rollups are rebuilt without counting a
live writer's twice, and the configuration picks the backend."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator.config import config_from_dict
from aggregator.storage import (
    BUCKET_MS,
    SqliteStorage,
    Storage,
    StoreResult,
    VerifiedBatch,
    open_configured,
)
from aggregator.storage.postgres import PostgresStorage
from protocols.types import Reading
from tests.support.storage_fixtures import PostgresBackend

T0 = 1_700_000_100_000 - 1_700_000_100_000 % BUCKET_MS
SITES = ("S1", "S2", "S3")
SEQS = range(1, 121)
POINTS = 8

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)


def make_batch(site: str, seq: int) -> VerifiedBatch:
    """Eight points, two readings each, times unique per (site, seq): no reading is shared by
    two batches, so every stored reading belongs to exactly one stored batch."""
    t = T0 + seq * 10_000
    rs = [Reading(t + k, "dev", f"p{j}", float(seq + j)) for k in (0, 5000) for j in range(POINTS)]
    return VerifiedBatch(site, seq, "boot", t, t + 10, False, rs)


@pytest.fixture
def two(backend: PostgresBackend) -> Iterator[tuple[Storage, Storage]]:
    """Two writers on one database, as two ingest processes would be (own pools, own ids)."""
    a = backend.open(rollup_flush_s=0.05)
    b = backend.open(rollup_flush_s=0.05)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_two_writers_storing_the_same_batches_store_each_once(
    backend: PostgresBackend, two: tuple[Storage, Storage]
) -> None:
    everything = [make_batch(s, q) for s in SITES for q in SEQS]
    # each writer gets every batch (so every one is raced), in its own order and grouping
    orders = [list(everything), random.Random(7).sample(everything, len(everything))]
    start = threading.Barrier(2)
    results: list[list[StoreResult]] = [[], []]
    errors: list[BaseException] = []

    def write(k: int) -> None:
        try:
            start.wait(10)
            for i in range(0, len(orders[k]), 24):
                results[k].append(two[k].store_batches(orders[k][i : i + 24]))
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in (0, 1)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors
    stored = [{key for r in res for key in r.stored} for res in results]
    # every batch stored by exactly one writer; the other was told it is a duplicate
    assert stored[0].isdisjoint(stored[1])
    assert stored[0] | stored[1] == {(b.site, b.seq) for b in everything}
    for res in results:
        assert sorted(k for r in res for k in (*r.stored, *r.duplicates)) == sorted(
            (b.site, b.seq) for b in everything
        )
    n = len(everything) * 2 * POINTS
    assert sum(r.n_readings for res in results for r in res) == n
    a, b = two
    assert a.reading_count() == n and a.batch_count() == len(everything)
    assert sorted(b.batch_seqs("S2")) == list(SEQS)
    # the rollups count every reading once too, whichever writer folded it
    a.flush_rollups()
    b.flush_rollups()
    for site in SITES:
        for j in range(POINTS):
            rows = a.rollups(site, "dev", f"p{j}", T0, T0 + 4 * BUCKET_MS, step_s=3600)
            assert sum(r.n for r in rows) == 2 * len(SEQS)
            total = sum(r.mean * r.n for r in rows)
            assert total == pytest.approx(2 * sum(q + j for q in SEQS))
            assert rows[0].first == 1.0 + j and rows[-1].last == SEQS[-1] + j


def test_a_dead_writers_rollups_are_rebuilt_without_counting_a_live_ones_twice(
    backend: PostgresBackend,
) -> None:
    live = backend.open(rollup_flush_s=3600)
    try:
        one = [Reading(T0 + 1000, "d", "v", 1.0)]
        live.store_batches([VerifiedBatch("S1", 1, "b", T0, T0, False, one)])
        # another writer stores into the same bucket and dies before its flush
        script = f"""
import os
from aggregator.storage import VerifiedBatch
from protocols.types import Reading
{backend.open_source(rollup_flush_s=3600)}
three = [Reading({T0 + 2000}, "d", "v", 3.0)]
s.store_batches([VerifiedBatch("S1", 2, "b", {T0}, {T0}, False, three)])
os._exit(0)
"""
        subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
        backend.wait_writers_gone(live=1)
        assert isinstance(live, PostgresStorage)
        # the live writer still holds bucket T0 in memory: rebuilding it now would count its
        # reading twice (once from raw, once at its flush), so it waits
        assert live.repair_rollups() == 0
        live.flush_rollups()  # writes the live writer's share, then rebuilds the dead one's
        live.repair_rollups()
        (row,) = live.rollups("S1", "d", "v", T0, T0 + BUCKET_MS)
        assert (row.n, row.min, row.max, row.mean) == (2, 1.0, 3.0, 2.0)
        assert live.repair_rollups() == 0  # done once
        live.flush_rollups()
        (row,) = live.rollups("S1", "d", "v", T0, T0 + BUCKET_MS)
        assert row.n == 2
    finally:
        live.close()


def test_the_config_url_picks_postgresql(backend: PostgresBackend, tmp_path: Path) -> None:
    cfg = config_from_dict({"database": {"path": str(tmp_path / "x.db"), "url": backend.url}})
    store = open_configured(cfg.database, cfg.retention)
    try:
        assert type(store).__name__ == "PostgresStorage"
        assert not (tmp_path / "x.db").exists()
        assert "***" not in cfg.database.describe()  # no password in this URL to hide
    finally:
        store.close()
    # a CLI's --db names an SQLite file instead
    local = open_configured(cfg.database, path=tmp_path / "y.db")
    try:
        assert isinstance(local, SqliteStorage)
    finally:
        local.close()
