"""The PostgreSQL storage backend (scale-out): the only module that talks to PostgreSQL.

Several aggregator processes (ingest workers sharing an MQTT subscription) write one database at
once, so nothing here relies on being the only writer:

- Dedupe is the `batches` primary key: `INSERT … ON CONFLICT DO NOTHING RETURNING` tells which
  (site, seq) this transaction stored; a concurrent copy of the same batch waits on the index
  entry and then finds it there. Readings of the stored batches go in by binary COPY; a reading
  already held (same point, same millisecond) makes the COPY fail, and that group is inserted
  again with `ON CONFLICT DO NOTHING` instead (rare, so the fast path stays COPY).
- Every transaction takes its row locks in one order (batches, series, readings, site state,
  each sorted), and one that still deadlocks with another worker is retried.
- Rollups are accumulated in memory and flushed every `rollup_flush_s` by additive upserts, as
  in SQLite. So that a crash loses none of them, each store also records (writer, epoch, site,
  bucket) in `rollup_marks`, and a flush deletes its writer's marks. A writer proves it is
  alive by holding an advisory lock for its lifetime; any process that finds marks of a writer
  whose lock is gone rebuilds those buckets from the raw readings (under an exclusive advisory
  lock that every store and flush takes shared, so no one's memory holds part of them).
- `latest()` is read from the database each time (another worker may have written since).

A commit is durable before `store_batches` returns: connections force `synchronous_commit=on`,
whatever the server's default. The queries both SQL backends run alike (sites, keys, alarms,
tokens, commands, reads of stored readings) live in `sql_common`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from aggregator.errors import SchemaError, StorageError
from aggregator.storage import rows as R
from aggregator.storage.postgres_schema import LATEST_VERSION, MIGRATIONS
from aggregator.storage.rollup import (
    BUCKET_MS,
    DAY_MS,
    ROLLED_QUALITIES,
    Acc,
    AccKey,
    Rolled,
    bucket_of,
    fold,
    merge,
    merge_into,
)
from aggregator.storage.sql_common import Conn as SqlConn
from aggregator.storage.sql_common import SqlStorage
from aggregator.storage.types import (
    RollupRow,
    SeriesKey,
    StoreResult,
    VerifiedBatch,
)
from protocols.types import Reading, ReadingColumns

log = logging.getLogger("sitewatt.aggregator.storage")

Conn = psycopg.Connection[tuple[Any, ...]]

# Advisory locks, two-int form (classid, objid): ours are in classes 0x5357 ("SW") and up.
_LOCKS = 0x5357
_LOCK_MIGRATE = 1
_LOCK_ROLLUP = 2  # shared by stores and flushes, exclusive for a repair
WRITER_LOCKS = 0x5358  # advisory lock class; objid = a writer id, held while that writer lives
_RETRIES = 5  # a transaction that deadlocks with another worker's is run again
_CHUNK = 500  # series per retention transaction
_ROLLED = [int(q) for q in ROLLED_QUALITIES]
_READING_TYPES = ("int4", "int8", "float8", "int2")
_NO_SERIES: dict[SeriesKey, int] = {}

_INSERT_BATCHES = """
INSERT INTO batches (site, seq, boot, sent_ms, received_ms, n, hist, t_min, t_max)
SELECT * FROM unnest(%b::text[], %b::bigint[], %b::text[], %b::bigint[], %b::bigint[],
                     %b::integer[], %b::boolean[], %b::bigint[], %b::bigint[])
ON CONFLICT DO NOTHING
RETURNING site, seq
"""

_UPSERT_ROLLUPS = """
INSERT INTO rollups (series_id, bucket_ms, n, "min", "max", mean, "first", "last",
                     first_ms, last_ms)
SELECT * FROM unnest(%b::integer[], %b::bigint[], %b::integer[], %b::float8[], %b::float8[],
                     %b::float8[], %b::float8[], %b::float8[], %b::bigint[], %b::bigint[])
ON CONFLICT (series_id, bucket_ms) DO UPDATE SET
    n = rollups.n + excluded.n,
    "min" = least(rollups."min", excluded."min"),
    "max" = greatest(rollups."max", excluded."max"),
    mean = (rollups.mean * rollups.n + excluded.mean * excluded.n) / (rollups.n + excluded.n),
    "first" = CASE WHEN excluded.first_ms < rollups.first_ms
                   THEN excluded."first" ELSE rollups."first" END,
    first_ms = least(rollups.first_ms, excluded.first_ms),
    "last" = CASE WHEN excluded.last_ms >= rollups.last_ms
                  THEN excluded."last" ELSE rollups."last" END,
    last_ms = greatest(rollups.last_ms, excluded.last_ms)
"""

# The buckets (site, bucket) recomputed from raw readings; each listed row replaced whole.
_REBUILD_ROLLUPS = f"""
INSERT INTO rollups (series_id, bucket_ms, n, "min", "max", mean, "first", "last",
                     first_ms, last_ms)
SELECT r.series_id, k.bucket_ms, count(*), min(r.value), max(r.value), avg(r.value),
       (array_agg(r.value ORDER BY r.t_ms))[1], (array_agg(r.value ORDER BY r.t_ms DESC))[1],
       min(r.t_ms), max(r.t_ms)
FROM unnest(%b::text[], %b::bigint[]) AS k(site, bucket_ms)
JOIN series s ON s.site = k.site
JOIN readings r ON r.series_id = s.id
    AND r.t_ms >= k.bucket_ms AND r.t_ms < k.bucket_ms + {BUCKET_MS}
WHERE r.value IS NOT NULL AND (r.quality & {R.QUALITY_MASK}) = ANY(%s)
GROUP BY r.series_id, k.bucket_ms
ORDER BY 1, 2
ON CONFLICT (series_id, bucket_ms) DO UPDATE SET
    n = excluded.n, "min" = excluded."min", "max" = excluded."max", mean = excluded.mean,
    "first" = excluded."first", "last" = excluded."last",
    first_ms = excluded.first_ms, last_ms = excluded.last_ms
"""


class _WriterLost(Exception):
    """Our liveness lock is gone (its connection dropped): our unflushed rollups are someone
    else's to rebuild now."""


class PostgresStorage(SqlStorage):
    """Aggregator storage in a PostgreSQL database; several processes may share it.

    Thread-safe: connections come from a pool (`pool_size` at most), one per call.
    """

    _GREATEST = "greatest"

    def __init__(
        self,
        url: str,
        *,
        raw_retention_ms: int = 30 * DAY_MS,
        rollup_retention_ms: int | None = None,
        rollup_flush_s: float = 5.0,
        pool_size: int = 8,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self.raw_retention_ms = raw_retention_ms
        self.rollup_retention_ms = rollup_retention_ms
        self.rollup_flush_s = rollup_flush_s
        self.connect_timeout_s = connect_timeout_s
        self._closed = False
        # site -> (device, point) -> series id; only ids of committed rows enter it.
        self._series: dict[str, dict[SeriesKey, int]] = {}
        self._series_lock = threading.Lock()
        # Rollups not yet flushed. `_epoch_lock` is held by a store from its marks to its fold
        # and by a flush while it takes the accumulators, so marks and memory agree.
        self._pending: dict[AccKey, Acc] = {}
        self._flushing: dict[AccKey, Acc] = {}
        self._pending_lock = threading.Lock()
        self._epoch_lock = threading.Lock()
        self._epoch = 1
        self._marked = 0  # the last epoch this writer wrote marks in
        self._last_flush = time.monotonic()
        self._last_repair = 0.0
        self._writer = 0
        self._lock_conn: Conn | None = None
        self._pool: ConnectionPool[Conn] = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={
                "autocommit": False,
                "options": "-c synchronous_commit=on",
                "application_name": "sitewatt-aggregator",
                "connect_timeout": max(1, int(connect_timeout_s)),
            },
            check=ConnectionPool.check_connection,
            open=False,
            name="sitewatt",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout_s)
        except (PoolTimeout, psycopg.Error) as exc:
            self._pool.close()
            raise StorageError(f"{_safe(url)}: cannot connect: {exc}") from exc
        try:
            self._migrate()
            self._register()
            self.repair_rollups()
        except BaseException:
            self.close()
            raise

    # ---- connections and transactions -------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[Conn]:
        """A transaction on a pooled connection: committed on leaving, rolled back on error."""
        if self._closed:
            raise StorageError("storage is closed")
        try:
            with self._pool.connection(timeout=self.connect_timeout_s) as conn:
                yield conn
        except PoolTimeout as exc:
            raise StorageError(f"no database connection: {exc}") from exc
        except psycopg.Error as exc:
            raise StorageError(f"database: {exc}") from exc

    _write = _tx  # every pooled transaction may write

    def _read(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._tx() as conn:
            return conn.execute(query, params).fetchall()

    def _q(self, sql: str) -> str:
        return _pg_style(sql)

    @staticmethod
    def _duplicate(exc: StorageError) -> bool:
        return isinstance(exc.__cause__, errors.UniqueViolation)

    @staticmethod
    def _orphan(exc: StorageError) -> bool:
        return isinstance(exc.__cause__, errors.ForeignKeyViolation)

    def close(self) -> None:
        """Flush rollups, release the writer lock and close every connection."""
        if self._closed:
            return
        if self._pending or self._marked:
            try:
                self.flush_rollups()
            except StorageError as exc:  # the marks stay: whoever opens next rebuilds them
                log.warning("rollup flush at close failed: %s", exc)
        self._closed = True
        self._pool.close()
        if self._lock_conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._lock_conn.close()
            self._lock_conn = None

    # ---- schema ------------------------------------------------------------------------------

    def _migrate(self) -> None:
        """Create or upgrade the schema, one process at a time (an advisory lock)."""
        try:
            with self._tx() as conn:
                conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCKS, _LOCK_MIGRATE))
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, "
                    "description text NOT NULL, applied_ms bigint)"
                )
                row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")
                current = int(cast(tuple[int], row.fetchone())[0])
                if current > LATEST_VERSION:
                    raise SchemaError(
                        f"{_safe(self.url)}: schema version {current} is newer than this "
                        f"aggregator understands ({LATEST_VERSION}); upgrade sitewatt"
                    )
                for migration in MIGRATIONS:
                    if migration.version <= current:
                        continue
                    for statement in migration.statements:
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO schema_version VALUES "
                        "(%s, %s, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)",
                        (migration.version, migration.description),
                    )
        except StorageError as exc:
            raise SchemaError(f"{_safe(self.url)}: migration failed: {exc}") from exc

    def _register(self) -> None:
        """Become a writer: a new id, and its lock held on a connection of our own."""
        try:
            conn = psycopg.connect(
                self.url, autocommit=True, connect_timeout=max(1, int(self.connect_timeout_s))
            )
            try:
                row = conn.execute("SELECT nextval('rollup_writers')").fetchone()
                writer = int(cast(tuple[int], row)[0])
                conn.execute("SELECT pg_advisory_lock(%s, %s)", (WRITER_LOCKS, writer))
            except BaseException:
                conn.close()
                raise
        except psycopg.Error as exc:
            raise StorageError(f"cannot register as a writer: {exc}") from exc
        old, self._lock_conn, self._writer = self._lock_conn, conn, writer
        if old is not None:
            with contextlib.suppress(psycopg.Error):
                old.close()

    def _alive(self, conn: Conn) -> bool:
        lock_conn = self._lock_conn
        if lock_conn is None or lock_conn.closed:
            return False
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 2 AND pid = %s)",
            (WRITER_LOCKS, self._writer, lock_conn.info.backend_pid),
        ).fetchone()
        return bool(row and row[0])

    @staticmethod
    def _live_writers(conn: Conn) -> list[int]:
        return [
            int(r[0])
            for r in conn.execute(
                "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND classid::bigint = %s AND objsubid = 2",
                (WRITER_LOCKS,),
            )
        ]

    # ---- ingest ------------------------------------------------------------------------------

    def store_batches(self, batches: Sequence[VerifiedBatch]) -> StoreResult:
        """Store verified batches in ONE transaction; a (site, seq) already held — by this or
        any other writer — is a duplicate.

        Returns once the transaction is committed: the caller may then acknowledge and receipt
        every seq in `stored` and `duplicates`. Raises StorageError (nothing stored) otherwise.
        """
        if not batches:
            return StoreResult()
        firsts: dict[tuple[str, int], VerifiedBatch] = {}
        again: list[tuple[str, int]] = []
        for b in batches:
            key = (b.site, b.seq)
            if key in firsts:
                again.append(key)
            else:
                firsts[key] = b
        candidates = [firsts[k] for k in sorted(firsts)]
        seen: dict[str, int] = {}
        for b in batches:
            seen[b.site] = max(seen.get(b.site, 0), b.received_ms)
        for attempt in range(_RETRIES):
            try:
                with self._epoch_lock:
                    with self._tx() as conn:
                        fresh, n_readings, new_series, rolled = self._store(conn, candidates, seen)
                    # committed: the series ids are real, and the rollups are ours to flush
                    with self._pending_lock:
                        fold(self._pending, rolled)
                    if new_series:
                        with self._series_lock:
                            for site, ids in new_series.items():
                                self._series.setdefault(site, {}).update(ids)
                break
            except StorageError as exc:
                retry = isinstance(
                    exc.__cause__, errors.DeadlockDetected | errors.SerializationFailure
                )
                if not retry or attempt == _RETRIES - 1:
                    raise
                log.info("store deadlocked with another writer; retrying (%s)", exc.__cause__)
        stored = [(b.site, b.seq) for b in fresh]
        fresh_keys = set(stored)
        duplicates = [k for k in sorted(firsts) if k not in fresh_keys] + again
        if time.monotonic() - self._last_flush >= self.rollup_flush_s:
            try:
                self.flush_rollups()
            except StorageError as exc:  # stored all the same; the next flush tries again
                log.warning("rollup flush failed: %s", exc)
        return StoreResult(stored, duplicates, n_readings)

    def _store(
        self, conn: Conn, candidates: list[VerifiedBatch], seen: dict[str, int]
    ) -> tuple[list[VerifiedBatch], int, dict[str, dict[SeriesKey, int]], list[Rolled]]:
        """One store transaction's statements; (fresh batches, readings stored, series created,
        rollup columns)."""
        conn.execute("SELECT pg_advisory_xact_lock_shared(%s, %s)", (_LOCKS, _LOCK_ROLLUP))
        columns: list[tuple[Sequence[Any], ...] | None] = []
        spans: list[tuple[int | None, int | None]] = []
        for b in candidates:
            if b.readings:
                c = ReadingColumns.of(b.readings)  # decoded batches already are
                cols = (c.t, c.device, c.point, c.value, c.quality)
                columns.append(cols)
                spans.append((min(cols[0]), max(cols[0])))
            else:
                columns.append(None)
                spans.append((None, None))
        returned = conn.execute(
            _INSERT_BATCHES,
            (
                [b.site for b in candidates],
                [b.seq for b in candidates],
                [b.boot for b in candidates],
                [b.sent_ms for b in candidates],
                [b.received_ms for b in candidates],
                [len(b.readings) for b in candidates],
                [bool(b.hist) for b in candidates],
                [s[0] for s in spans],
                [s[1] for s in spans],
            ),
        ).fetchall()
        stored = {(site, seq) for site, seq in returned}
        fresh = [i for i, b in enumerate(candidates) if (b.site, b.seq) in stored]
        new_series: dict[str, dict[SeriesKey, int]] = {}
        rolled: list[Rolled] = []
        n_readings = 0
        with_readings = [i for i in fresh if columns[i] is not None]
        if with_readings:
            sids = self._series_ids(conn, candidates, columns, with_readings, new_series)
            rows: list[tuple[int, int, float | None, int]] = []
            for i, ids in zip(with_readings, sids, strict=True):
                ts, _, _, values, qualities = cast(tuple[Sequence[Any], ...], columns[i])
                vals, quals, roll = R.encode(ids, ts, values, qualities)
                rows += zip(ids, ts, vals, quals, strict=True)
                rolled.append(roll)
            n_readings = self._insert_readings(conn, rows)
            marks: set[tuple[str, int]] = set()
            for i in with_readings:
                site, (t_min, t_max) = candidates[i].site, spans[i]
                b0 = bucket_of(cast(int, t_min))
                if b0 == bucket_of(cast(int, t_max)):
                    marks.add((site, b0))
                else:  # a batch across buckets (a backlog): the buckets it really touches
                    ts = cast(tuple[Sequence[int], ...], columns[i])[0]
                    marks.update((site, t - t % BUCKET_MS) for t in ts)
            marks_sorted = sorted(marks)
            conn.execute(
                "INSERT INTO rollup_marks SELECT %s, %s, * FROM unnest(%b::text[], %b::bigint[]) "
                "ON CONFLICT DO NOTHING",
                (
                    self._writer,
                    self._epoch,
                    [m[0] for m in marks_sorted],
                    [m[1] for m in marks_sorted],
                ),
            )
            self._marked = self._epoch
        losses = [
            (candidates[i].site, candidates[i].seq, loss)
            for i in fresh
            for loss in candidates[i].losses
        ]
        if losses:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO losses (site, seq, t_ms, count, oldest_ms, newest_ms) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    [(s, q, x.t_ms, x.count, x.oldest_ms, x.newest_ms) for s, q, x in losses],
                )
        sites = sorted(seen)
        conn.execute(
            "INSERT INTO site_state (site, last_seen_ms) "
            "SELECT * FROM unnest(%b::text[], %b::bigint[]) ON CONFLICT (site) DO UPDATE "
            "SET last_seen_ms = greatest(coalesce(site_state.last_seen_ms, 0), "
            "excluded.last_seen_ms)",
            (sites, [seen[s] for s in sites]),
        )
        return [candidates[i] for i in fresh], n_readings, new_series, rolled

    def _series_ids(
        self,
        conn: Conn,
        candidates: list[VerifiedBatch],
        columns: list[tuple[Sequence[Any], ...] | None],
        which: list[int],
        new_series: dict[str, dict[SeriesKey, int]],
    ) -> list[list[int]]:
        """The series id of every reading of the batches `which`, creating missing series
        (committed ones of sites seen the first time are loaded into the cache at once)."""
        unseen = sorted({candidates[i].site for i in which} - self._series.keys())
        if unseen:
            loaded: dict[str, dict[SeriesKey, int]] = {s: {} for s in unseen}
            for sid, site, device, point in conn.execute(
                "SELECT id, site, device, point FROM series WHERE site = ANY(%s)", (unseen,)
            ):
                loaded[site][(device, point)] = sid
            with self._series_lock:
                for site, ids in loaded.items():
                    self._series.setdefault(site, {}).update(ids)
        out: list[list[int | None]] = []
        missing: set[tuple[str, str, str]] = set()
        for i in which:
            site = candidates[i].site
            _, devices, points, _, _ = cast(tuple[Sequence[str], ...], columns[i])
            keys = list(zip(devices, points, strict=True))
            found = list(map(self._series.get(site, _NO_SERIES).get, keys))
            if None in found:
                missing.update(
                    (site, d, p) for (d, p), f in zip(keys, found, strict=True) if f is None
                )
            out.append(found)
        if missing:
            keys3 = sorted(missing)
            cols3 = ([k[0] for k in keys3], [k[1] for k in keys3], [k[2] for k in keys3])
            conn.execute(
                "INSERT INTO series (site, device, point) "
                "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[]) "
                "ON CONFLICT DO NOTHING",
                cols3,
            )
            for sid, site, device, point in conn.execute(
                "SELECT s.id, s.site, s.device, s.point FROM series s "
                "JOIN unnest(%b::text[], %b::text[], %b::text[]) AS k(site, device, point) "
                "USING (site, device, point)",
                cols3,
            ):
                new_series.setdefault(site, {})[(device, point)] = sid
            for i, found in zip(which, out, strict=True):
                if None in found:
                    site = candidates[i].site
                    _, devices, points, _, _ = cast(tuple[Sequence[str], ...], columns[i])
                    made = new_series[site]
                    for j, f in enumerate(found):
                        if f is None:
                            found[j] = made[(devices[j], points[j])]
        return cast(list[list[int]], out)

    @staticmethod
    def _insert_readings(conn: Conn, rows: list[tuple[int, int, float | None, int]]) -> int:
        """Binary COPY; if a reading is already held, the same rows with ON CONFLICT instead."""
        try:
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(
                    "COPY readings (series_id, t_ms, value, quality) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(_READING_TYPES)
                    write = copy.write_row
                    for row in rows:
                        write(row)
                return max(0, cur.rowcount)
        except errors.UniqueViolation:
            pass
        cols = list(zip(*rows, strict=True))
        cur = conn.execute(
            "INSERT INTO readings (series_id, t_ms, value, quality) "
            "SELECT * FROM unnest(%b::integer[], %b::bigint[], %b::float8[], %b::smallint[]) "
            "ORDER BY 1, 2 ON CONFLICT DO NOTHING",
            [list(c) for c in cols],
        )
        return max(0, cur.rowcount)

    # ---- rollups -----------------------------------------------------------------------------

    def flush_rollups(self) -> None:
        """Write the rollups accumulated in memory and drop their marks (every
        `rollup_flush_s` from `store_batches`, when ingest is idle, and on close); then rebuild
        the rollups of writers that died, if any."""
        with self._epoch_lock:
            with self._pending_lock:
                accs, self._pending = self._pending, {}
                self._flushing = accs
            epoch, marked = self._epoch, self._marked
            self._epoch += 1
        if accs or marked:
            try:
                with self._tx() as conn:
                    conn.execute(
                        "SELECT pg_advisory_xact_lock_shared(%s, %s)", (_LOCKS, _LOCK_ROLLUP)
                    )
                    if not self._alive(conn):
                        raise _WriterLost
                    if accs:
                        self._upsert(conn, accs)
                    conn.execute(
                        "DELETE FROM rollup_marks WHERE writer = %s AND epoch <= %s",
                        (self._writer, epoch),
                    )
                with self._epoch_lock:
                    if self._marked <= epoch:
                        self._marked = 0
            except _WriterLost:
                log.warning("writer %d lost its lock; its rollups will be rebuilt", self._writer)
                with self._epoch_lock:
                    self._marked = 0
                    self._register()
            except BaseException:
                with self._pending_lock:
                    merge_into(self._pending, accs)  # their marks stay until a flush succeeds
                raise
            finally:
                with self._pending_lock:
                    self._flushing = {}
        self._last_flush = time.monotonic()
        if time.monotonic() - self._last_repair >= self.rollup_flush_s:
            self.repair_rollups()

    @staticmethod
    def _upsert(conn: Conn, accs: dict[AccKey, Acc]) -> None:
        keys = sorted(accs)  # one lock order for every writer
        items = [accs[k] for k in keys]
        conn.execute(
            _UPSERT_ROLLUPS,
            (
                [k[0] for k in keys],
                [k[1] for k in keys],
                [a.n for a in items],
                [a.min for a in items],
                [a.max for a in items],
                [a.total / a.n for a in items],
                [a.first for a in items],
                [a.last for a in items],
                [a.first_ms for a in items],
                [a.last_ms for a in items],
            ),
        )

    def repair_rollups(self) -> int:
        """Rebuild from raw readings the buckets marked by writers that died before flushing;
        the number of (site, bucket) rebuilt. A bucket that a live writer also holds in memory
        is left for a later call (its marks stay)."""
        self._last_repair = time.monotonic()
        with self._tx() as conn:
            writers = {int(r[0]) for r in conn.execute("SELECT DISTINCT writer FROM rollup_marks")}
            if not writers - set(self._live_writers(conn)):
                return 0
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCKS, _LOCK_ROLLUP))
            live = self._live_writers(conn)  # again, now that no store or flush runs
            dead = set(
                conn.execute(
                    "SELECT DISTINCT site, bucket_ms FROM rollup_marks "
                    "WHERE NOT (writer = ANY(%s))",
                    (live,),
                ).fetchall()
            )
            busy = set(
                conn.execute(
                    "SELECT DISTINCT site, bucket_ms FROM rollup_marks WHERE writer = ANY(%s)",
                    (live,),
                ).fetchall()
            )
            todo = sorted(dead - busy)
            if not todo:
                return 0
            sites, buckets = [t[0] for t in todo], [t[1] for t in todo]
            conn.execute(_REBUILD_ROLLUPS, (sites, buckets, _ROLLED))
            conn.execute(
                "DELETE FROM rollup_marks m USING unnest(%b::text[], %b::bigint[]) "
                "AS k(site, bucket_ms) WHERE m.site = k.site AND m.bucket_ms = k.bucket_ms "
                "AND NOT (m.writer = ANY(%s))",
                (sites, buckets, live),
            )
        log.info("rebuilt the rollups of %d (site, bucket) left by stopped writers", len(todo))
        return len(todo)

    # ---- queries over readings ---------------------------------------------------------------

    def latest(self, site: str) -> dict[SeriesKey, Reading]:
        """The newest reading of every point of `site` (read from the database: another worker
        may have stored newer ones)."""
        return self._latest_of(
            "SELECT s.device, s.point, r.t_ms, r.value, r.quality FROM series s "
            "CROSS JOIN LATERAL (SELECT t_ms, value, quality FROM readings "
            "WHERE series_id = s.id ORDER BY t_ms DESC LIMIT 1) r WHERE s.site = ?",
            site,
        )

    def _unflushed(self, sid: int, start: int, end: int) -> dict[int, RollupRow]:
        pending: dict[int, RollupRow] = {}
        with self._pending_lock:
            for accs in (self._pending, self._flushing):
                for (s, bucket), acc in accs.items():
                    if s == sid and start <= bucket < end:
                        cur = pending.get(bucket)
                        row = acc.row(bucket)
                        pending[bucket] = row if cur is None else merge(cur, row)
        return pending

    # ---- retention ---------------------------------------------------------------------------

    def apply_retention(self, now_ms: int) -> dict[str, int]:
        """Delete raw readings (and batch records) older than the raw retention, and rollups
        older than the rollup retention if one is set; rows deleted per table.

        Raw readings go by whole 15-minute buckets (the cut is rounded down to one), so a
        bucket's rollup can always be rebuilt from what is left of it. Short transactions, one
        per few hundred series, so ingest is never held up for long.
        """
        self.flush_rollups()
        cutoff = now_ms - self.raw_retention_ms
        ids = [int(r[0]) for r in self._read("SELECT id FROM series ORDER BY id")]
        deleted = {"readings": 0, "batches": 0, "rollups": 0}
        for i in range(0, len(ids), _CHUNK):
            with self._tx() as conn:
                cur = conn.execute(
                    "DELETE FROM readings WHERE series_id = ANY(%s) AND t_ms < %s",
                    (ids[i : i + _CHUNK], bucket_of(cutoff)),
                )
                deleted["readings"] += max(0, cur.rowcount)
        with self._tx() as conn:
            # Batch records go with their readings; ingest refuses batches this old as stale,
            # so a replay of one cannot be stored again.
            cur = conn.execute("DELETE FROM batches WHERE sent_ms < %s", (cutoff,))
            deleted["batches"] = max(0, cur.rowcount)
        if self.rollup_retention_ms:
            rcut = now_ms - self.rollup_retention_ms
            for i in range(0, len(ids), _CHUNK):
                with self._tx() as conn:
                    cur = conn.execute(
                        "DELETE FROM rollups WHERE series_id = ANY(%s) AND bucket_ms < %s",
                        (ids[i : i + _CHUNK], rcut),
                    )
                    deleted["rollups"] += max(0, cur.rowcount)
        return deleted

    # ---- commands ----------------------------------------------------------------------------

    def _next_command_seq(self, c: SqlConn, site: str) -> int:
        # The `command_seqs` row lock orders concurrent issuers.
        rows = self._exec(
            c,
            "INSERT INTO command_seqs AS c VALUES "
            "(?, coalesce((SELECT max(seq) FROM commands WHERE site = ?), 0) + 1) "
            "ON CONFLICT (site) DO UPDATE SET seq = greatest(c.seq, "
            "coalesce((SELECT max(seq) FROM commands WHERE site = excluded.site), 0)) + 1 "
            "RETURNING seq",
            (site, site),
        ).fetchall()
        return int(rows[0][0])


@functools.cache
def _pg_style(sql: str) -> str:
    """A shared statement (`?` placeholders) in psycopg's style, converted once per text."""
    return sql.replace("?", "%s")


def _safe(url: str) -> str:
    """`url` without its password, for messages."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the database"
    host, port, db = info.get("host", ""), info.get("port", ""), info.get("dbname", "")
    return f"postgresql://{host}{':' + str(port) if port else ''}/{db}"


def open_postgres(
    url: str,
    *,
    raw_retention_ms: int = 30 * DAY_MS,
    rollup_retention_ms: int | None = None,
    rollup_flush_s: float = 5.0,
) -> PostgresStorage:
    """Open (creating and migrating as needed) the PostgreSQL storage at `url`."""
    return PostgresStorage(
        url,
        raw_retention_ms=raw_retention_ms,
        rollup_retention_ms=rollup_retention_ms,
        rollup_flush_s=rollup_flush_s,
    )


__all__ = ["WRITER_LOCKS", "PostgresStorage", "open_postgres"]
