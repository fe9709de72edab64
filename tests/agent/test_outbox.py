"""The SQLite outbox: append, batch formation, seq persistence, immutability, receipts, bounds."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.outbox import BatchDraft, DataLoss, Outbox, OutboxLimits, read_stats
from protocols.types import Quality, Reading

UNBOUNDED = OutboxLimits(max_readings=None, max_bytes=None, max_age_s=None)


def readings(start: int, n: int, *, t0: int = 1_000_000) -> list[Reading]:
    return [
        Reading(t0 + i, f"dev{i % 3}", "p", float(i), Quality.GOOD) for i in range(start, start + n)
    ]


class Sealer:
    """A seal callable that records every draft it saw and returns deterministic bytes."""

    def __init__(self) -> None:
        self.drafts: list[BatchDraft] = []

    def __call__(self, draft: BatchDraft) -> bytes:
        self.drafts.append(draft)
        vals = ",".join(repr(r.value) for r in draft.readings)
        return f"{draft.seq}|{draft.sent_ms}|{draft.historical}|{draft.loss}|{vals}".encode()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "agent.db"


def test_opens_in_wal_mode(db: Path) -> None:
    with Outbox(db, limits=UNBOUNDED):
        pass
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_append_then_form_keeps_order_and_values(db: Path) -> None:
    seal = Sealer()
    mixed = [
        Reading(10, "bat", "soc", 81.5),
        Reading(11, "brk", "closed", True),
        Reading(12, "brk", "tripped", False),
        Reading(13, "rect", "modules", 7),
        Reading(14, "ac", "room_t", None, Quality.COMM_ERROR),
    ]
    with Outbox(db, limits=UNBOUNDED) as ob:
        ob.append(mixed)
        assert ob.pending_readings() == 5
        batch = ob.form_batch(seal, now_ms=1000, max_readings=100)
        assert batch is not None and batch.readings == 5
        assert ob.pending_readings() == 0
    got = list(seal.drafts[0].readings)
    assert got == mixed
    assert type(got[1].value) is bool and type(got[3].value) is int
    assert got[4].quality is Quality.COMM_ERROR


def test_form_respects_max_readings_and_takes_oldest_first(db: Path) -> None:
    seal = Sealer()
    with Outbox(db, limits=UNBOUNDED) as ob:
        ob.append(readings(0, 250))
        sizes = []
        while (b := ob.form_batch(seal, now_ms=5, max_readings=100)) is not None:
            sizes.append(b.readings)
        assert sizes == [100, 100, 50]
    values = [r.value for d in seal.drafts for r in d.readings]
    assert values == [float(i) for i in range(250)]


def test_nothing_to_form_returns_none(db: Path) -> None:
    with Outbox(db, limits=UNBOUNDED) as ob:
        assert ob.form_batch(Sealer(), now_ms=1, max_readings=10) is None
        assert ob.stats().last_seq == 0


def test_seq_increases_and_persists_across_reopen(db: Path) -> None:
    seal = Sealer()
    with Outbox(db, limits=UNBOUNDED) as ob:
        ob.append(readings(0, 30))
        seqs = [ob.form_batch(seal, now_ms=0, max_readings=10) for _ in range(3)]
        assert [b.seq for b in seqs if b] == [1, 2, 3]
        assert ob.receipt([1, 2, 3]) == 3
    with Outbox(db, limits=UNBOUNDED) as ob:
        ob.append(readings(30, 5))
        b = ob.form_batch(seal, now_ms=0, max_readings=10)
        assert b is not None and b.seq == 4


def test_seq_is_seeded_from_time_so_a_fresh_db_never_reuses(tmp_path: Path) -> None:
    seal = Sealer()
    with Outbox(tmp_path / "old.db", limits=UNBOUNDED) as ob:
        ob.append(readings(0, 2))
        first = ob.form_batch(seal, now_ms=1_700_000_000_000, max_readings=1)
        second = ob.form_batch(seal, now_ms=1_700_000_000_000, max_readings=1)
    assert first is not None and second is not None
    assert (first.seq, second.seq) == (1_700_000_000_000, 1_700_000_000_001)
    # A re-install later: fresh database, same key; the time floor keeps seqs above the old ones.
    with Outbox(tmp_path / "new.db", limits=UNBOUNDED) as ob:
        ob.append(readings(0, 1))
        third = ob.form_batch(seal, now_ms=1_700_000_060_000, max_readings=1)
    assert third is not None and third.seq > second.seq


def test_batches_are_immutable_across_reopen(db: Path) -> None:
    seal = Sealer()
    with Outbox(db, limits=UNBOUNDED) as ob:
        ob.append(readings(0, 40))
        formed = [ob.form_batch(seal, now_ms=7, max_readings=10) for _ in range(4)]
    with Outbox(db, limits=UNBOUNDED) as ob:
        stored = ob.batches()
        # Forming again takes nothing: the readings live only in their batches now.
        assert ob.form_batch(seal, now_ms=8, max_readings=10) is None
    assert [(b.seq, b.body) for b in stored] == [(b.seq, b.body) for b in formed if b]
    assert len(seal.drafts) == 4


def test_receipt_deletes_only_named_seqs(db: Path) -> None:
    with Outbox(db, limits=UNBOUNDED) as ob:
        ob.append(readings(0, 50))
        for _ in range(5):
            ob.form_batch(Sealer(), now_ms=0, max_readings=10)
        assert ob.receipt([2, 4, 99], now_ms=1234) == 2
        assert [b.seq for b in ob.batches()] == [1, 3, 5]
        assert ob.batch(3) is not None and ob.batch(2) is None
        assert ob.receipt([2]) == 0  # a second receipt for the same seq is harmless
        assert [b.seq for b in ob.batches(after_seq=1, limit=1)] == [3]
        s = ob.stats()
        assert (s.batches, s.batch_readings, s.receipted_total) == (3, 30, 2)
        assert s.last_receipt_ms == 1234


def test_limit_drops_oldest_counts_and_reports_loss(db: Path) -> None:
    seal = Sealer()
    lim = OutboxLimits(max_readings=100, max_bytes=None, max_age_s=None)
    with Outbox(db, limits=lim) as ob:
        for k in range(15):
            ob.append(readings(10 * k, 10))
        s = ob.stats()
        assert s.depth == 100 and s.dropped_total == 50 and s.loss_pending == 50
        assert s.appended_total == 150
        b = ob.form_batch(seal, now_ms=0, max_readings=1000)
        assert b is not None and b.dropped == 50 and b.readings == 0
        b2 = ob.form_batch(seal, now_ms=0, max_readings=1000)
        assert b2 is not None and b2.seq == b.seq + 1 and b2.dropped == 0
    loss, batch = seal.drafts
    assert loss.loss == DataLoss(50, 1_000_000, 1_000_049) and not loss.readings
    # The oldest 50 went; the newest 100 are kept, in order.
    assert batch.loss is None
    assert [r.value for r in batch.readings] == [float(i) for i in range(50, 150)]
    with Outbox(db, limits=lim) as ob:
        assert ob.stats().loss_pending == 0  # reported exactly once, in that batch
        assert ob.stats().dropped_total == 50


def test_loss_alone_forms_a_batch(db: Path) -> None:
    """A loss report goes out even when every reading it could ride with was dropped."""
    seal = Sealer()
    with Outbox(db, limits=OutboxLimits(max_readings=None, max_bytes=None, max_age_s=60)) as ob:
        ob.append(readings(0, 20, t0=0))
        assert ob.trim(now_ms=61_000 + 20) == 20
        b = ob.form_batch(seal, now_ms=61_100, max_readings=10)
    assert b is not None and b.readings == 0 and b.dropped == 20
    assert seal.drafts[0].loss == DataLoss(20, 0, 19)


def test_trim_by_age_keeps_recent(db: Path) -> None:
    with Outbox(db, limits=OutboxLimits(max_readings=None, max_bytes=None, max_age_s=10)) as ob:
        ob.append([Reading(t, "d", "p", 1.0) for t in range(0, 20_000, 1000)])
        assert ob.trim(now_ms=25_000) == 15  # t < 15 000 dropped
        assert ob.oldest_pending_t() == 15_000


def test_dropping_a_batch_carries_its_loss_report_forward(db: Path) -> None:
    seal = Sealer()
    lim = OutboxLimits(max_readings=10, max_bytes=None, max_age_s=None)
    with Outbox(db, limits=lim) as ob:
        ob.append(readings(0, 15))  # 5 dropped
        report = ob.form_batch(seal, now_ms=0, max_readings=10)
        assert report is not None and report.dropped == 5
        first = ob.form_batch(seal, now_ms=0, max_readings=10)
        assert first is not None and first.readings == 10
        ob.append(readings(15, 1))  # the oldest readings are in batches: both go, whole
        s = ob.stats()
        assert s.dropped_total == 15 and s.loss_pending == 15
        assert ob.batches() == [] and s.pending_readings == 1
        second = ob.form_batch(seal, now_ms=0, max_readings=10)
    assert second is not None and second.dropped == 15 and second.readings == 0
    assert seal.drafts[2].loss == DataLoss(15, 1_000_000, 1_000_014)


def test_byte_bound_drops_oldest(db: Path) -> None:
    lim = OutboxLimits(max_readings=None, max_bytes=400_000, max_age_s=None)
    with Outbox(db, limits=lim) as ob:
        for k in range(40):
            ob.append(readings(1000 * k, 1000))
        s = ob.stats()
        assert s.dropped_total > 0
        assert s.db_bytes <= 400_000 * 1.05
        assert s.dropped_total + s.depth == 40_000
        # What is left is the newest, contiguous up to the last appended.
        assert ob.oldest_pending_t() == 1_000_000 + s.dropped_total


def test_historical_flag_by_newest_reading(db: Path) -> None:
    with Outbox(db, limits=UNBOUNDED) as ob:
        ob.append([Reading(100, "d", "p", 1.0), Reading(200, "d", "p", 2.0)])
        ob.append([Reading(900, "d", "p", 1.0)])
        old = ob.form_batch(Sealer(), now_ms=1000, max_readings=2, historical_before_ms=500)
        live = ob.form_batch(Sealer(), now_ms=1000, max_readings=2, historical_before_ms=500)
    assert old is not None and old.historical
    assert live is not None and not live.historical


def test_read_stats_readonly_while_open(db: Path) -> None:
    with Outbox(db, limits=UNBOUNDED) as ob:
        ob.append(readings(0, 12))
        ob.form_batch(Sealer(), now_ms=3, max_readings=5)
        ob.mark_published(42)
        s = read_stats(db)
    assert (s.pending_readings, s.batches, s.batch_readings, s.appended_total) == (7, 1, 5, 12)
    assert s.last_publish_ms == 42 and s.last_seq == 3


def test_seal_failure_leaves_readings_pending(db: Path) -> None:
    def broken(draft: BatchDraft) -> bytes:
        raise RuntimeError("no key")

    with Outbox(db, limits=UNBOUNDED) as ob:
        ob.append(readings(0, 5))
        with pytest.raises(RuntimeError):
            ob.form_batch(broken, now_ms=1, max_readings=10)
        assert ob.pending_readings() == 5 and ob.stats().last_seq == 0


def test_non_finite_values_are_stored_as_bad_value(db: Path) -> None:
    seal = Sealer()
    with Outbox(db, limits=UNBOUNDED) as ob:
        ob.append([Reading(1, "d", "p", float("nan")), Reading(2, "d", "p", float("-inf"))])
        ob.append([Reading(3, "d", "p", 1.5)])
        ob.form_batch(seal, now_ms=0, max_readings=10)
    got = [(r.value, r.quality) for r in seal.drafts[0].readings]
    assert got == [(None, Quality.BAD_VALUE), (None, Quality.BAD_VALUE), (1.5, Quality.GOOD)]
