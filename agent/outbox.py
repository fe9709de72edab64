"""The SQLite outbox: every reading is written here before anything else happens to it.

Three tables, all owned by this module (the command side keeps its own tables in the same file):

- `outbox_readings`: readings not yet in a batch, appended one transaction per `append` call.
  Rows are only ever removed from the oldest end (batch formation, trimming), so the rowids stay
  contiguous and `max(id) - min(id) + 1` counts them without a scan.
- `outbox_batches`: formed batches, each with its seq and the exact sealed (signed) bytes. A batch
  is immutable: it is re-sent byte for byte after any crash, and deleted only when a receipt from
  the aggregator names its seq.
- `outbox_meta`: counters that must survive restarts: the last seq handed out, readings ever
  appended, readings dropped, the data loss not yet reported, last publish and last receipt.

Forming a batch is one transaction: take the oldest readings, delete them, seal them (the sealing
callable encodes and signs; the outbox treats its output as opaque bytes) and store the batch with
the next seq. A `kill -9` at any moment therefore leaves each reading either pending or in exactly
one batch. With WAL and `synchronous=NORMAL`, a committed transaction survives the process being
killed; only a power cut can lose the last commits (set `synchronous_full` to close that too).

When the configured bounds are exceeded the oldest readings go first; what was dropped is counted
and becomes the next batch formed, a data-loss record that takes a seq like any batch — so the
loss report itself is signed, receipted and re-sent like telemetry, and never silent.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.errors import OutboxError
from protocols.types import Quality, Reading, Value

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox_readings (
    id INTEGER PRIMARY KEY,
    t INTEGER NOT NULL,
    device TEXT NOT NULL,
    point TEXT NOT NULL,
    value,
    quality INTEGER NOT NULL,
    is_bool INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_batches (
    seq INTEGER PRIMARY KEY,
    formed_ms INTEGER NOT NULL,
    readings INTEGER NOT NULL,
    first_t INTEGER,
    last_t INTEGER,
    historical INTEGER NOT NULL,
    dropped INTEGER NOT NULL,
    loss_first_t INTEGER,
    loss_last_t INTEGER,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_meta (
    key TEXT PRIMARY KEY,
    value INTEGER
);
"""

# Two scalar subqueries, not `SELECT min(id), max(id)`: SQLite answers a lone min() or max() of
# the rowid from the b-tree's ends, but both in one SELECT make it scan every row (a full-table
# scan per call on a day's backlog).
_ID_RANGE = "SELECT (SELECT min(id) FROM outbox_readings), (SELECT max(id) FROM outbox_readings)"

_INSERT_READING = (
    "INSERT INTO outbox_readings (t, device, point, value, quality, is_bool) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)

# Meta keys.
LAST_SEQ = "last_seq"
APPENDED = "appended_total"
DROPPED = "dropped_total"
LOSS_COUNT = "loss_pending"
LOSS_FIRST = "loss_first_t"
LOSS_LAST = "loss_last_t"
LAST_PUBLISH = "last_publish_ms"
LAST_RECEIPT = "last_receipt_ms"
RECEIPTED = "receipted_total"

# Dropping for the byte bound aims this far below the bound, so it does not run on every append.
_TRIM_TARGET = 0.9


@dataclass(frozen=True)
class OutboxLimits:
    """Bounds on what the outbox keeps; `None` means unbounded.

    `max_bytes` is measured as the pages SQLite uses for the whole database file (free pages
    excluded); `max_readings` counts readings pending or in batches. `max_age_s` is applied by
    `trim(now_ms)`, which the delivery loop calls periodically.
    """

    max_readings: int | None = None
    max_bytes: int | None = 200 * 1024 * 1024
    max_age_s: float | None = 7 * 24 * 3600.0
    synchronous_full: bool = False


@dataclass(frozen=True)
class DataLoss:
    """Readings dropped by the bounds and not yet reported: how many, and their time span."""

    dropped: int
    first_t: int | None
    last_t: int | None


@dataclass(frozen=True)
class BatchDraft:
    """What a sealing callable turns into bytes: the batch's content, fixed before signing.

    Either readings, or (with no readings) a data-loss report in `loss`.
    """

    seq: int
    sent_ms: int
    readings: Sequence[Reading]
    historical: bool
    loss: DataLoss | None


Seal = Callable[[BatchDraft], bytes]
"""Encodes and signs a batch; its output is stored and re-sent unchanged."""


@dataclass(frozen=True)
class StoredBatch:
    """A formed batch as stored: its seq, sealed bytes, and what it holds."""

    seq: int
    body: bytes
    readings: int
    historical: bool
    formed_ms: int
    dropped: int


@dataclass(frozen=True)
class OutboxStats:
    """The outbox's state for `status`, metrics and tests."""

    pending_readings: int
    batches: int
    batch_readings: int
    oldest_t: int | None
    appended_total: int
    receipted_total: int
    dropped_total: int
    loss_pending: int
    last_seq: int
    last_publish_ms: int | None
    last_receipt_ms: int | None
    db_bytes: int

    @property
    def depth(self) -> int:
        """Readings held, whether pending or in unreceipted batches."""
        return self.pending_readings + self.batch_readings


def _connect(path: Path | str, *, readonly: bool = False) -> sqlite3.Connection:
    try:
        if readonly:
            conn = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
        else:
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
    except sqlite3.Error as exc:
        raise OutboxError(f"{path}: cannot open outbox: {exc}") from exc
    return conn


class Outbox:
    """The agent's durable store of readings and batches. One instance per database file.

    Not thread-safe: use an instance from one thread (the agent's event loop). Every method is a
    short transaction, fast enough to call from the loop directly.
    """

    def __init__(self, path: Path | str, *, limits: OutboxLimits | None = None) -> None:
        self.path = Path(path)
        self.limits = limits or OutboxLimits()
        self._conn = _connect(self.path)
        try:
            self._conn.execute("PRAGMA journal_mode = WAL")
            sync = "FULL" if self.limits.synchronous_full else "NORMAL"
            self._conn.execute(f"PRAGMA synchronous = {sync}")
            self._conn.executescript(_SCHEMA)
            self._page_size = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
        except sqlite3.Error as exc:
            self._conn.close()
            raise OutboxError(f"{self.path}: cannot initialise outbox: {exc}") from exc

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the hot path -----------------------------------------------------------------------

    def append(self, readings: Sequence[Reading]) -> None:
        """Store `readings` durably, in one transaction. Once this returns, they are taken.

        A NaN or infinite value is stored as None with quality BAD_VALUE: SQLite cannot keep a
        NaN, and the wire refuses one (it would make its whole batch undeliverable).
        """
        if not readings:
            return
        rows = [(r[0], r[1], r[2], r[3], int(r[4]), r[3].__class__ is bool) for r in readings]
        if any(r[3].__class__ is float and not math.isfinite(r[3]) for r in rows):
            rows = [_finite(row) for row in rows]
        try:
            with self._tx():
                self._conn.executemany(_INSERT_READING, rows)
                self._add_meta(APPENDED, len(rows))
        except sqlite3.Error as exc:
            raise OutboxError(f"{self.path}: append failed: {exc}") from exc
        if self.limits.max_readings is not None or self.limits.max_bytes is not None:
            self._enforce_size()

    # -- batches ----------------------------------------------------------------------------

    def form_batch(
        self,
        seal: Seal,
        *,
        now_ms: int,
        max_readings: int,
        historical_before_ms: int | None = None,
    ) -> StoredBatch | None:
        """Form, seal and store one batch: the unreported data loss if there is one (a batch of
        no readings whose draft carries `loss`), else the oldest pending readings (at most
        `max_readings`). None if there is nothing to send.

        The seq is `max(last seq + 1, now_ms)`: increasing for ever in this database, and seeded
        from the time so that a re-install with a fresh database does not reuse old seqs. The
        batch is historical when its newest reading is older than `historical_before_ms`.
        """
        if max_readings < 1:
            raise ValueError("max_readings must be >= 1")
        try:
            with self._tx():
                # A loss report goes first, alone, so it is never held back behind a backlog.
                loss = self._pending_loss()
                rows = []
                if loss is None:
                    rows = self._conn.execute(
                        "SELECT id, t, device, point, value, quality, is_bool "
                        "FROM outbox_readings ORDER BY id LIMIT ?",
                        (max_readings,),
                    ).fetchall()
                    if not rows:
                        return None
                readings = [
                    Reading(t, d, p, bool(v) if b else v, Quality(q))
                    for _, t, d, p, v, q, b in rows
                ]
                if rows:
                    self._conn.execute("DELETE FROM outbox_readings WHERE id <= ?", (rows[-1][0],))
                seq = max(self._meta(LAST_SEQ) + 1, now_ms)
                first_t = min((r.t for r in readings), default=None)
                last_t = max((r.t for r in readings), default=None)
                historical = (
                    historical_before_ms is not None
                    and last_t is not None
                    and last_t < historical_before_ms
                )
                draft = BatchDraft(seq, now_ms, readings, historical, loss)
                body = seal(draft)
                dropped = loss.dropped if loss else 0
                self._conn.execute(
                    "INSERT INTO outbox_batches "
                    "(seq, formed_ms, readings, first_t, last_t, historical, dropped, "
                    "loss_first_t, loss_last_t, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        seq,
                        now_ms,
                        len(readings),
                        first_t,
                        last_t,
                        historical,
                        dropped,
                        loss.first_t if loss else None,
                        loss.last_t if loss else None,
                        body,
                    ),
                )
                self._set_meta(LAST_SEQ, seq)
                if loss is not None:
                    self._set_meta(LOSS_COUNT, 0)
                    self._set_meta(LOSS_FIRST, None)
                    self._set_meta(LOSS_LAST, None)
        except sqlite3.Error as exc:
            raise OutboxError(f"{self.path}: forming a batch failed: {exc}") from exc
        return StoredBatch(seq, body, len(readings), historical, now_ms, dropped)

    def batches(
        self, *, after_seq: int | None = None, limit: int | None = None
    ) -> list[StoredBatch]:
        """Unreceipted batches in seq order (optionally only seqs above `after_seq`)."""
        sql = (
            "SELECT seq, body, readings, historical, formed_ms, dropped FROM outbox_batches "
            "WHERE seq > ? ORDER BY seq LIMIT ?"
        )
        try:
            rows = self._conn.execute(
                sql, (-1 if after_seq is None else after_seq, -1 if limit is None else limit)
            ).fetchall()
        except sqlite3.Error as exc:
            raise OutboxError(f"{self.path}: reading batches failed: {exc}") from exc
        return [StoredBatch(s, bytes(b), n, bool(h), f, d) for s, b, n, h, f, d in rows]

    def batch(self, seq: int) -> StoredBatch | None:
        """The stored batch `seq`, or None once receipted (or never formed)."""
        found = self.batches(after_seq=seq - 1, limit=1)
        return found[0] if found and found[0].seq == seq else None

    def receipt(self, seqs: Iterable[int], *, now_ms: int | None = None) -> int:
        """Delete the batches a verified receipt names; return how many were still held."""
        wanted = [(int(s),) for s in seqs]
        if not wanted:
            return 0
        try:
            with self._tx():
                before = self._conn.total_changes
                self._conn.executemany("DELETE FROM outbox_batches WHERE seq = ?", wanted)
                deleted = self._conn.total_changes - before
                if deleted:
                    self._add_meta(RECEIPTED, deleted)
                if now_ms is not None:
                    self._set_meta(LAST_RECEIPT, now_ms)
        except sqlite3.Error as exc:
            raise OutboxError(f"{self.path}: applying a receipt failed: {exc}") from exc
        return deleted

    def mark_published(self, now_ms: int) -> None:
        """Record when a batch was last published (for `status`); cheap, call it sparingly."""
        try:
            with self._tx():
                self._set_meta(LAST_PUBLISH, now_ms)
        except sqlite3.Error as exc:
            raise OutboxError(f"{self.path}: {exc}") from exc

    # -- bounds -----------------------------------------------------------------------------

    def trim(self, now_ms: int) -> int:
        """Apply every bound (age included); return the readings dropped."""
        dropped = 0
        if self.limits.max_age_s is not None:
            cutoff = now_ms - int(self.limits.max_age_s * 1000)
            dropped += self._drop_older_than(cutoff)
        return dropped + self._enforce_size()

    def _enforce_size(self) -> int:
        dropped = 0
        lim = self.limits
        try:
            if lim.max_readings is not None:
                over = self._depth() - lim.max_readings
                if over > 0:
                    dropped += self._drop_oldest(over)
            if lim.max_bytes is not None:
                used = self._used_bytes()
                if used > lim.max_bytes:
                    depth = self._depth()
                    if depth:
                        per_reading = max(1.0, used / depth)
                        excess = used - lim.max_bytes * _TRIM_TARGET
                        dropped += self._drop_oldest(max(1, int(excess / per_reading)))
        except sqlite3.Error as exc:
            raise OutboxError(f"{self.path}: enforcing limits failed: {exc}") from exc
        return dropped

    def _drop_older_than(self, cutoff_ms: int) -> int:
        """Drop pending readings older than `cutoff_ms` from the oldest end, then old batches."""
        total = 0
        try:
            while True:
                rows = self._conn.execute(
                    "SELECT id, t FROM outbox_readings ORDER BY id LIMIT 5000"
                ).fetchall()
                n = 0
                for _, t in rows:
                    if t >= cutoff_ms:
                        break
                    n += 1
                if n:
                    total += self._drop_oldest_readings(n)
                if n < len(rows) or not rows:
                    break
            old = self._conn.execute(
                "SELECT count(*) FROM outbox_batches WHERE last_t < ?", (cutoff_ms,)
            ).fetchone()[0]
            if old:
                total += self._drop_oldest_batches(int(old))
        except sqlite3.Error as exc:
            raise OutboxError(f"{self.path}: trimming by age failed: {exc}") from exc
        return total

    def _drop_oldest(self, count: int) -> int:
        """Drop at least `count` readings, oldest first: formed batches (whole), then pending.

        A dropped batch may already be stored at the aggregator with its receipt in flight; the
        loss report then over-counts, which is the safe direction (never under-counts).
        """
        dropped = 0
        while dropped < count and self._has_batches():
            dropped += self._drop_oldest_batches(1)
        if dropped < count:
            dropped += self._drop_oldest_readings(count - dropped)
        return dropped

    def _drop_oldest_readings(self, count: int) -> int:
        with self._tx():
            row = self._conn.execute(
                "SELECT count(*), min(t), max(t), max(id) FROM "
                "(SELECT id, t FROM outbox_readings ORDER BY id LIMIT ?)",
                (count,),
            ).fetchone()
            n, first_t, last_t, max_id = row
            if not n:
                return 0
            self._conn.execute("DELETE FROM outbox_readings WHERE id <= ?", (max_id,))
            self._record_loss(int(n), first_t, last_t)
        return int(n)

    def _drop_oldest_batches(self, count: int) -> int:
        with self._tx():
            rows = self._conn.execute(
                "SELECT seq, readings, first_t, last_t, dropped, loss_first_t, loss_last_t "
                "FROM outbox_batches ORDER BY seq LIMIT ?",
                (count,),
            ).fetchall()
            n = 0
            for seq, readings, first_t, last_t, carried, lf, ll in rows:
                self._conn.execute("DELETE FROM outbox_batches WHERE seq = ?", (seq,))
                # A dropped batch's own loss report would vanish with it: carry it forward.
                if carried:
                    self._record_loss(int(carried), lf, ll, counted=True)
                if readings:
                    self._record_loss(int(readings), first_t, last_t)
                n += int(readings)
        return n

    def _record_loss(
        self, n: int, first_t: int | None, last_t: int | None, *, counted: bool = False
    ) -> None:
        """Add `n` dropped readings to the report pending (and, unless `counted`, the total)."""
        self._add_meta(LOSS_COUNT, n)
        if not counted:
            self._add_meta(DROPPED, n)
        if first_t is not None:
            cur = self._meta_or_none(LOSS_FIRST)
            self._set_meta(LOSS_FIRST, first_t if cur is None else min(cur, first_t))
        if last_t is not None:
            cur = self._meta_or_none(LOSS_LAST)
            self._set_meta(LOSS_LAST, last_t if cur is None else max(cur, last_t))

    def _pending_loss(self) -> DataLoss | None:
        n = self._meta(LOSS_COUNT)
        if n <= 0:
            return None
        return DataLoss(n, self._meta_or_none(LOSS_FIRST), self._meta_or_none(LOSS_LAST))

    def _has_batches(self) -> bool:
        return self._conn.execute("SELECT 1 FROM outbox_batches LIMIT 1").fetchone() is not None

    # -- state ------------------------------------------------------------------------------

    def pending_readings(self) -> int:
        """Readings appended but not yet in a batch."""
        lo, hi = self._conn.execute(_ID_RANGE).fetchone()
        return 0 if lo is None else int(hi) - int(lo) + 1

    def oldest_pending_t(self) -> int | None:
        """Time (ms) of the oldest reading not yet in a batch (insertion order)."""
        row = self._conn.execute("SELECT t FROM outbox_readings ORDER BY id LIMIT 1").fetchone()
        return None if row is None else int(row[0])

    def has_loss_pending(self) -> bool:
        return self._meta(LOSS_COUNT) > 0

    def stats(self) -> OutboxStats:
        try:
            return _stats(self._conn, self._page_size)
        except sqlite3.Error as exc:
            raise OutboxError(f"{self.path}: reading stats failed: {exc}") from exc

    def _depth(self) -> int:
        in_batches = self._conn.execute(
            "SELECT coalesce(sum(readings), 0) FROM outbox_batches"
        ).fetchone()[0]
        return self.pending_readings() + int(in_batches)

    def _used_bytes(self) -> int:
        pages = int(self._conn.execute("PRAGMA page_count").fetchone()[0])
        free = int(self._conn.execute("PRAGMA freelist_count").fetchone()[0])
        return (pages - free) * self._page_size

    # -- plumbing ---------------------------------------------------------------------------

    def _tx(self) -> _Transaction:
        return _Transaction(self._conn)

    def _meta(self, key: str) -> int:
        v = self._meta_or_none(key)
        return 0 if v is None else v

    def _meta_or_none(self, key: str) -> int | None:
        row = self._conn.execute("SELECT value FROM outbox_meta WHERE key = ?", (key,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def _set_meta(self, key: str, value: int | None) -> None:
        self._conn.execute(
            "INSERT INTO outbox_meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def _add_meta(self, key: str, delta: int) -> None:
        self._conn.execute(
            "INSERT INTO outbox_meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = coalesce(value, 0) + excluded.value",
            (key, delta),
        )


_BAD_VALUE = int(Quality.BAD_VALUE)


_Row = tuple[int, str, str, Value, int, bool]


def _finite(row: _Row) -> _Row:
    v = row[3]
    if isinstance(v, float) and not math.isfinite(v):
        return (row[0], row[1], row[2], None, _BAD_VALUE, False)
    return row


class _Transaction:
    """`BEGIN IMMEDIATE … COMMIT`, rolled back on error; nests by joining the outer one."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._outer = False

    def __enter__(self) -> None:
        if self._conn.in_transaction:
            return
        self._outer = True
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if not self._outer:
            return
        if exc_type is None:
            self._conn.execute("COMMIT")
        else:
            self._conn.execute("ROLLBACK")


def _stats(conn: sqlite3.Connection, page_size: int) -> OutboxStats:
    meta = dict(conn.execute("SELECT key, value FROM outbox_meta").fetchall())
    lo, hi = conn.execute(_ID_RANGE).fetchone()
    pending = 0 if lo is None else int(hi) - int(lo) + 1
    nb, nr = conn.execute(
        "SELECT count(*), coalesce(sum(readings), 0) FROM outbox_batches"
    ).fetchone()
    oldest_r = conn.execute("SELECT t FROM outbox_readings ORDER BY id LIMIT 1").fetchone()
    oldest_b = conn.execute("SELECT min(first_t) FROM outbox_batches").fetchone()
    candidates = [int(x[0]) for x in (oldest_r, oldest_b) if x is not None and x[0] is not None]
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])

    def opt(key: str) -> int | None:
        v = meta.get(key)
        return None if v is None else int(v)

    return OutboxStats(
        pending_readings=pending,
        batches=int(nb),
        batch_readings=int(nr),
        oldest_t=min(candidates) if candidates else None,
        appended_total=int(meta.get(APPENDED) or 0),
        receipted_total=int(meta.get(RECEIPTED) or 0),
        dropped_total=int(meta.get(DROPPED) or 0),
        loss_pending=int(meta.get(LOSS_COUNT) or 0),
        last_seq=int(meta.get(LAST_SEQ) or 0),
        last_publish_ms=opt(LAST_PUBLISH),
        last_receipt_ms=opt(LAST_RECEIPT),
        db_bytes=(pages - free) * page_size,
    )


def read_stats(path: Path | str) -> OutboxStats:
    """The outbox's stats through a read-only connection: for `status` while the agent runs."""
    conn = _connect(path, readonly=True)
    try:
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        return _stats(conn, page_size)
    except sqlite3.Error as exc:
        raise OutboxError(f"{path}: reading stats failed: {exc}") from exc
    finally:
        conn.close()


__all__ = [
    "BatchDraft",
    "DataLoss",
    "Outbox",
    "OutboxLimits",
    "OutboxStats",
    "Seal",
    "StoredBatch",
    "read_stats",
]
