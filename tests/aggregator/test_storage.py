"""The Storage behaviour, run against each backend (SQLite, PostgreSQL): migrations, batched
inserts, dedupe, rollups, latest, retention, and the registry, alarm, token and command tables."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from aggregator.errors import SchemaError, SiteExistsError, SiteKeyError, UnknownSiteError
from aggregator.storage import (
    BUCKET_MS,
    DAY_MS,
    LossRecord,
    SiteInfo,
    SiteState,
    Storage,
    VerifiedBatch,
    postgres_schema,
    schema,
)
from protocols.types import Quality, Reading
from tests.support.storage_fixtures import Backend

T0 = 1_700_000_100_000 - 1_700_000_100_000 % BUCKET_MS  # a bucket boundary


def batch(
    seq: int,
    readings: list[Reading],
    *,
    site: str = "S1",
    hist: bool = False,
    losses: tuple[LossRecord, ...] = (),
) -> VerifiedBatch:
    sent = max((r.t for r in readings), default=T0)
    return VerifiedBatch(site, seq, "boot-1", sent, sent + 5, hist, readings, losses)


def latest_version(backend: Backend) -> int:
    return (postgres_schema if backend.name == "postgres" else schema).LATEST_VERSION


@pytest.fixture
def store(backend: Backend) -> Iterator[Storage]:
    s = backend.open()
    try:
        yield s
    finally:
        s.close()


def test_migrates_from_empty_and_reopens(backend: Backend) -> None:
    s = backend.open()
    assert isinstance(s, Storage)
    assert s.schema_version() == latest_version(backend)
    s.store_batches([batch(1, [Reading(T0, "rect", "v", 53.5)])])
    s.close()
    again = backend.open()
    try:
        assert again.schema_version() == latest_version(backend)
        assert again.readings("S1", "rect", "v", 0, 2**62) == [Reading(T0, "rect", "v", 53.5)]
        # the series cache is rebuilt from the file: a new batch reuses the series
        again.store_batches([batch(2, [Reading(T0 + 1, "rect", "v", 53.6)])])
        assert again.series("S1") == [("rect", "v")]
    finally:
        again.close()


def test_refuses_a_newer_schema(backend: Backend) -> None:
    backend.open().close()
    backend.bump_schema(latest_version(backend) + 1)
    with pytest.raises(SchemaError, match="newer"):
        backend.open()


def test_stores_values_of_every_kind(store: Storage) -> None:
    rs = [
        Reading(T0, "bat", "soc", 87.5),
        Reading(T0, "meter", "mains", True),
        Reading(T0, "ac", "on", False),
        Reading(T0, "bat", "temp", None, Quality.COMM_ERROR),
        Reading(T0, "bat", "cnt", 12345),
        Reading(T0 + 1000, "bat", "soc", 87.0, Quality.STALE),
    ]
    result = store.store_batches([batch(1, rs)])
    assert result.stored == [("S1", 1)] and result.duplicates == [] and result.n_readings == 6
    got = store.readings("S1", "meter", "mains", T0, T0 + 1)
    assert got == [Reading(T0, "meter", "mains", True)] and got[0].value is True
    assert store.readings("S1", "ac", "on", T0, T0 + 1)[0].value is False
    assert store.readings("S1", "bat", "temp", T0, T0 + 1) == [
        Reading(T0, "bat", "temp", None, Quality.COMM_ERROR)
    ]
    soc = store.readings("S1", "bat", "soc", T0, T0 + 2000)
    assert [(r.t, r.value, r.quality) for r in soc] == [
        (T0, 87.5, Quality.GOOD),
        (T0 + 1000, 87.0, Quality.STALE),
    ]
    # half-open range, limit and offset
    assert store.readings("S1", "bat", "soc", T0, T0 + 1000) == soc[:1]
    assert store.readings("S1", "bat", "soc", T0, T0 + 2000, limit=1, offset=1) == soc[1:]
    assert store.readings("S1", "nope", "soc", T0, T0 + 2000) == []


def test_duplicate_seq_is_reported_and_not_stored_twice(store: Storage) -> None:
    rs = [Reading(T0 + i, "rect", "i", float(i)) for i in range(10)]
    first = store.store_batches([batch(7, rs)])
    assert first.stored == [("S1", 7)]
    # the same seq again, alone and in a group with a new one (and twice within one group)
    again = store.store_batches(
        [batch(7, rs), batch(8, [Reading(T0 + 100, "rect", "i", 1.0)]), batch(8, [])]
    )
    assert again.stored == [("S1", 8)]
    assert sorted(again.duplicates) == [("S1", 7), ("S1", 8)]
    assert again.n_readings == 1
    assert store.reading_count("S1") == 11
    assert store.batch_count("S1") == 2
    # the same seq number from another site is another batch
    other = store.store_batches([batch(7, rs, site="S2")])
    assert other.stored == [("S2", 7)]
    assert store.reading_count() == 21


def test_many_sites_in_one_group(store: Storage) -> None:
    group = [
        batch(seq, [Reading(T0 + seq, "rect", f"p{j}", float(j)) for j in range(5)], site=f"S{k}")
        for k in range(20)
        for seq in range(1, 4)
    ]
    result = store.store_batches(group)
    assert len(result.stored) == 60 and result.n_readings == 300
    assert store.reading_count("S13") == 15
    assert len(store.series("S13")) == 5


@pytest.mark.parametrize("flush_s", [0.0, 3600.0], ids=["flushed", "in-memory"])
def test_rollups_match_hand_computed_values(backend: Backend, flush_s: float) -> None:
    store = backend.open(rollup_flush_s=flush_s)
    try:
        _check_rollups(store)
    finally:
        store.close()
    # whatever was in memory was flushed on close: the file alone gives the same answer
    again = backend.open(rollup_flush_s=flush_s)
    try:
        (hour,) = again.rollups("S1", "bat", "v", T0, T0 + 2 * BUCKET_MS, step_s=3600)
        assert (hour.n, hour.first, hour.last) == (7, 2.0, 9.0)
    finally:
        again.close()


def _check_rollups(store: Storage) -> None:
    # bucket 0: 10, 30, 20 (t order 10 s, 60 s, 120 s) + a comm-error (ignored) + 5 in a later
    # group at t = 30 s (not first nor last by time); bucket 1: 7 then 9.
    g1 = [
        Reading(T0 + 60_000, "bat", "v", 30.0),
        Reading(T0 + 10_000, "bat", "v", 10.0),
        Reading(T0 + 120_000, "bat", "v", 20.0),
        Reading(T0 + 90_000, "bat", "v", None, Quality.COMM_ERROR),
        Reading(T0 + 100_000, "bat", "v", 999.0, Quality.OUT_OF_RANGE),
        Reading(T0 + BUCKET_MS, "bat", "v", 7.0),
    ]
    store.store_batches([batch(1, g1)])
    store.store_batches(
        [
            batch(2, [Reading(T0 + 30_000, "bat", "v", 5.0)], hist=True),
            batch(3, [Reading(T0 + BUCKET_MS + 5_000, "bat", "v", 9.0)]),
        ]
    )
    rows = store.readings("S1", "bat", "v", T0, T0 + 2 * BUCKET_MS, step_s=900)
    assert len(rows) == 2
    b0, b1 = rows
    assert b0.bucket_ms == T0
    assert (b0.n, b0.min, b0.max) == (4, 5.0, 30.0)
    assert b0.mean == pytest.approx((10 + 30 + 20 + 5) / 4)
    assert (b0.first, b0.first_ms, b0.last, b0.last_ms) == (10.0, T0 + 10_000, 20.0, T0 + 120_000)
    assert (b1.n, b1.min, b1.max, b1.mean, b1.first, b1.last) == (2, 7.0, 9.0, 8.0, 7.0, 9.0)
    # a coarser step merges them; an earlier first arriving later replaces the first
    store.store_batches([batch(4, [Reading(T0 + 1, "bat", "v", 2.0)], hist=True)])
    (hour,) = store.rollups("S1", "bat", "v", T0, T0 + 2 * BUCKET_MS, step_s=3600)
    assert hour.bucket_ms == T0 - T0 % 3_600_000
    assert (hour.n, hour.min, hour.max) == (7, 2.0, 30.0)
    assert hour.mean == pytest.approx((10 + 30 + 20 + 5 + 7 + 9 + 2) / 7)
    assert (hour.first, hour.first_ms) == (2.0, T0 + 1)
    assert (hour.last, hour.last_ms) == (9.0, T0 + BUCKET_MS + 5_000)
    with pytest.raises(ValueError):
        store.rollups("S1", "bat", "v", T0, T0 + BUCKET_MS, step_s=60)


def test_rollups_in_memory_at_a_crash_are_rebuilt_from_raw(backend: Backend) -> None:
    # a process stores two groups, then dies without flushing its in-memory rollups
    script = f"""
import os
from aggregator.storage import VerifiedBatch
from protocols.types import Reading
{backend.open_source(rollup_flush_s=0)}
s.store_batches([VerifiedBatch("S1", 1, "b", {T0}, {T0}, False, [Reading({T0}, "b", "v", 4.0)])])
s.rollup_flush_s = 3600
rs = [Reading({T0 + 1000}, "b", "v", 6.0), Reading({T0 + BUCKET_MS}, "b", "v", 1.0)]
s.store_batches([VerifiedBatch("S1", 2, "b", {T0}, {T0}, True, rs)])
os._exit(0)
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    backend.wait_writers_gone()
    store = backend.open()
    try:
        b0, b1 = store.rollups("S1", "b", "v", T0, T0 + 2 * BUCKET_MS)
        assert (b0.n, b0.min, b0.max, b0.mean, b0.first, b0.last) == (2, 4.0, 6.0, 5.0, 4.0, 6.0)
        assert (b1.n, b1.first) == (1, 1.0)
    finally:
        store.close()
    # repaired once: a further reopen changes nothing
    store = backend.open()
    try:
        assert [r.n for r in store.rollups("S1", "b", "v", T0, T0 + 2 * BUCKET_MS)] == [2, 1]
    finally:
        store.close()


def test_energy_delta_from_counter_rollups(store: Storage) -> None:
    # an energy counter read every 5 min over one hour: 100.0 kWh + 0.5 kWh per reading
    rs = [Reading(T0 + i * 300_000, "meter", "energy", 100.0 + 0.5 * i) for i in range(13)]
    store.store_batches([batch(1, rs)])
    rows = store.rollups("S1", "meter", "energy", T0, T0 + 3_600_001)
    assert rows[-1].last - rows[0].first == pytest.approx(6.0)


def test_latest_keeps_newest_and_ignores_older_history(backend: Backend) -> None:
    store = backend.open()
    try:
        store.store_batches([batch(1, [Reading(T0 + 5000, "bat", "soc", 80.0)])])
        assert store.latest("S1")[("bat", "soc")].value == 80.0
        # a historical batch with older readings fills history, not the live state
        store.store_batches([batch(2, [Reading(T0 + 1000, "bat", "soc", 95.0)] * 1, hist=True)])
        assert store.latest("S1")[("bat", "soc")] == Reading(T0 + 5000, "bat", "soc", 80.0)
        assert len(store.readings("S1", "bat", "soc", 0, 2**62)) == 2
        store.store_batches([batch(3, [Reading(T0 + 9000, "bat", "soc", 79.0)])])
        assert store.latest("S1")[("bat", "soc")].value == 79.0
        # loaded from the database when not in memory (e.g. after a restart)
        store.store_batches([batch(1, [Reading(T0, "ac", "on", True)], site="S2")])
    finally:
        store.close()
    again = backend.open()
    try:
        assert again.latest("S1") == {("bat", "soc"): Reading(T0 + 9000, "bat", "soc", 79.0)}
        assert again.latest("S2")[("ac", "on")].value is True
        assert again.latest("nobody") == {}
    finally:
        again.close()


def test_retention_deletes_old_raw_and_keeps_rollups(backend: Backend) -> None:
    store = backend.open(raw_retention_ms=DAY_MS)
    try:
        old = [Reading(T0, "bat", "v", 1.0), Reading(T0 + 1, "bat", "w", 2.0)]
        new = [Reading(T0 + 2 * DAY_MS, "bat", "v", 3.0)]
        store.store_batches([batch(1, old), batch(2, new)])
        deleted = store.apply_retention(T0 + 2 * DAY_MS + 1000)
        assert deleted["readings"] == 2 and deleted["batches"] == 1
        assert store.readings("S1", "bat", "v", 0, 2**62) == new
        assert store.batch_count("S1") == 1
        assert [r.n for r in store.rollups("S1", "bat", "v", 0, 2**62)] == [1, 1]
        assert store.latest("S1") == {("bat", "v"): new[0]}
    finally:
        store.close()
    store = backend.open(raw_retention_ms=DAY_MS, rollup_retention_ms=DAY_MS)
    try:
        assert store.apply_retention(T0 + 2 * DAY_MS + 1000)["rollups"] == 2
        assert [r.n for r in store.rollups("S1", "bat", "v", 0, 2**62)] == [1]
    finally:
        store.close()


def test_losses_and_last_seen(store: Storage) -> None:
    loss = LossRecord(T0 + 10, 500, T0 - DAY_MS, T0 - DAY_MS + 60_000)
    store.store_batches([batch(1, [Reading(T0, "bat", "v", 1.0)], losses=(loss,))])
    assert store.losses("S1") == [loss]
    assert store.site_state("S1").last_seen_ms == T0 + 5
    store.put_site_state(SiteState("S1", True, "b2", "0.1", {"bat": "lf48"}, birth_ms=T0))
    st = store.site_state("S1")
    assert (st.online, st.boot, st.devices, st.last_seen_ms) == (
        True,
        "b2",
        {"bat": "lf48"},
        T0 + 5,
    )
    assert [s.site for s in store.site_states()] == ["S1"]


def test_reads_from_another_thread_while_writing(store: Storage) -> None:
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                store.readings("S1", "p", "v", 0, 2**62, limit=10)
                store.latest("S1")
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)

    th = threading.Thread(target=reader)
    th.start()
    try:
        for seq in range(1, 51):
            store.store_batches([batch(seq, [Reading(T0 + seq, "p", "v", float(seq))])])
    finally:
        stop.set()
        th.join(10)
    assert not errors
    assert store.latest("S1")[("p", "v")].value == 50.0


def test_sites_keys_tokens_alarms_commands(store: Storage) -> None:
    store.add_site(SiteInfo("S1", name="Hill", region="CQ", created_ms=1))
    with pytest.raises(SiteExistsError):
        store.add_site(SiteInfo("S1", created_ms=2))
    with pytest.raises(UnknownSiteError):
        store.get_site("S9")
    assert store.update_site("S1", tariff="cq-2024").tariff == "cq-2024"
    store.add_key("S1", "aa" * 32, "11" * 8, 5)
    with pytest.raises(SiteKeyError):
        store.add_key("S1", "aa" * 32, "11" * 8, 6)
    with pytest.raises(UnknownSiteError):
        store.add_key("S9", "bb" * 32, "22" * 8, 6)
    assert store.revoke_key("11" * 8, 9).revoked_ms == 9
    assert store.revoke_key("11" * 8, 10).revoked_ms == 9
    assert not store.site_keys("S1")[0].active

    tok = store.add_token("ci", "viewer", "h1", 1)
    assert store.token_by_hash("h1") == tok and store.token_by_hash("h2") is None
    assert store.revoke_token(tok.id, 3) and not store.revoke_token(tok.id, 4)

    a = store.add_alarm("S1", "mains_failure", "critical", "mains lost", 100, device="meter")
    assert store.active_alarms("S1") == [a]
    cleared = store.clear_alarm(a.id, 200)
    assert cleared is not None and cleared.cleared_ms == 200
    assert store.clear_alarm(a.id, 300) is None
    assert store.active_alarms() == [] and store.alarm_history("S1") == [cleared]

    c1 = store.new_command(
        command_id="c1", site="S1", action="site.wake", params={}, issued_ms=1,
        expires_ms=60_001, lease_s=600, issued_by="op",
    )  # fmt: skip
    c2 = store.new_command(
        command_id="c2", site="S1", action="ac.setpoint", params={"c": 27}, issued_ms=2,
        expires_ms=60_002, lease_s=600, issued_by="op",
    )  # fmt: skip
    assert (c1.seq, c2.seq) == (1, 2)
    store.mark_command_sent("c2", 3)
    done = store.record_ack(
        "c2", status="applied", ack_ms=40, reason=None, readback={"c": 27}, rtt_ms=37.0
    )
    assert done is not None and (done.status, done.readback, done.rtt_ms) == (
        "applied",
        {"c": 27},
        37.0,
    )
    # a redelivered ack does not rewrite the outcome
    again = store.record_ack("c2", status="failed", ack_ms=50)
    assert again is not None and again.status == "applied"
    assert store.record_ack("nope", status="applied", ack_ms=1) is None
    assert [c.id for c in store.command_history("S1")] == ["c2", "c1"]
