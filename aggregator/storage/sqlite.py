"""The SQLite storage backend: the only module on the aggregator side that talks to SQLite.

One connection per thread (SQLite connections must not be shared across threads mid-statement);
WAL so the API reads while ingest writes; synchronous=NORMAL (a commit survives a crash of the
process — which is what the ingest contract needs — and loses at most the last commits on a power
cut); every write in a `BEGIN IMMEDIATE` transaction so writers queue on the busy timeout instead
of failing half-way. The ingest hot path (`store_batches`) touches each reading once in Python and
issues one `executemany` per table per group. The queries that read and write sites, keys,
alarms, tokens, commands and stored readings are shared with PostgreSQL (`sql_common`).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from aggregator.errors import SchemaError, StorageError
from aggregator.storage import rows as R
from aggregator.storage.rollup import (
    BUCKET_MS,
    DAY_MS,
    Acc,
    AccKey,
    Rolled,
    bucket_of,
    fold,
    merged,
)
from aggregator.storage.schema import LATEST_VERSION, MIGRATIONS
from aggregator.storage.sql_common import Conn, SqlStorage
from aggregator.storage.types import (
    RollupRow,
    SeriesKey,
    StoreResult,
    VerifiedBatch,
)
from protocols.types import Reading, ReadingColumns

BOOL_FLAG = R.BOOL_FLAG
_MAX_PARAMS = 900  # keep IN (...) lists well under SQLite's bound-parameter limit

_UPSERT_ROLLUP = """
INSERT INTO rollups (series_id, bucket_ms, n, "min", "max", mean, "first", "last",
                     first_ms, last_ms)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (series_id, bucket_ms) DO UPDATE SET
    n = n + excluded.n,
    "min" = min("min", excluded."min"),
    "max" = max("max", excluded."max"),
    mean = (mean * n + excluded.mean * excluded.n) / (n + excluded.n),
    "first" = CASE WHEN excluded.first_ms < first_ms THEN excluded."first" ELSE "first" END,
    first_ms = min(first_ms, excluded.first_ms),
    "last" = CASE WHEN excluded.last_ms >= last_ms THEN excluded."last" ELSE "last" END,
    last_ms = max(last_ms, excluded.last_ms)
"""


_NO_SERIES: dict[SeriesKey, int] = {}


def _chunks(items: Sequence[Any], size: int = _MAX_PARAMS) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class SqliteStorage(SqlStorage):
    """Aggregator storage in one SQLite file. Thread-safe: each thread gets its own connection."""

    _GREATEST = "max"

    def __init__(
        self,
        path: Path | str,
        *,
        raw_retention_ms: int = 30 * DAY_MS,
        rollup_retention_ms: int | None = None,
        rollup_flush_s: float = 5.0,
    ) -> None:
        self.path = Path(path)
        self.rollup_flush_s = rollup_flush_s
        if str(path) == ":memory:":
            raise StorageError("SqliteStorage needs a file (one connection per thread)")
        self.raw_retention_ms = raw_retention_ms
        self.rollup_retention_ms = rollup_retention_ms
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        # (site, device, point) -> series id; only ids of committed rows enter it.
        self._series: dict[str, dict[SeriesKey, int]] = {}
        self._series_lock = threading.Lock()
        # site -> (device, point) -> newest reading; a site enters on its first latest() call.
        self._latest: dict[str, dict[SeriesKey, Reading]] = {}
        self._latest_lock = threading.Lock()
        # Rollup accumulators not yet written; `_epoch` tags the batches they come from.
        self._pending: dict[AccKey, Acc] = {}
        self._rollup_lock = threading.Lock()
        self._epoch = 1
        self._last_flush = time.monotonic()
        self._repaired = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{self.path.parent}: cannot create: {exc}") from exc
        self._migrate()
        self._load_series()
        self._repair_rollups()

    # ---- connections and transactions -------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StorageError("storage is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False, timeout=30
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
                conn.execute("PRAGMA cache_size=-65536")
                conn.execute("PRAGMA temp_store=MEMORY")
                conn.execute("PRAGMA busy_timeout=30000")
            except sqlite3.Error as exc:
                raise StorageError(f"{self.path}: cannot open database: {exc}") from exc
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE … COMMIT, rolled back on any error."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot begin a write: {exc}") from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"database write failed: {exc}") from exc
            raise

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"database read failed: {exc}") from exc

    def _q(self, sql: str) -> str:
        return sql  # the shared statements are written in SQLite's style already

    @staticmethod
    def _duplicate(exc: StorageError) -> bool:
        return isinstance(exc.__cause__, sqlite3.IntegrityError)

    def close(self) -> None:
        """Flush rollups and close every thread's connection (call once, when no other thread
        uses the storage)."""
        if self._closed:
            return
        if self._pending:
            with contextlib.suppress(StorageError):
                self.flush_rollups()
        self._closed = True
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    # ---- schema ------------------------------------------------------------------------------

    def _migrate(self) -> None:
        conn = self._conn()
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_ms INTEGER)"
            )
        except sqlite3.Error as exc:
            raise SchemaError(f"{self.path}: not a usable SQLite database: {exc}") from exc
        current = self.schema_version()
        if current > LATEST_VERSION:
            raise SchemaError(
                f"{self.path}: schema version {current} is newer than this aggregator "
                f"understands ({LATEST_VERSION}); upgrade sitewatt"
            )
        for migration in MIGRATIONS:
            if migration.version <= current:
                continue
            try:
                with self._write() as c:
                    for statement in migration.statements:
                        c.execute(statement)
                    c.execute(
                        "INSERT INTO schema_version VALUES "
                        "(?, ?, CAST(unixepoch('subsec') * 1000 AS INTEGER))",
                        (migration.version, migration.description),
                    )
            except StorageError as exc:
                raise SchemaError(
                    f"{self.path}: migration {migration.version} failed: {exc}"
                ) from exc

    def _load_series(self) -> None:
        series: dict[str, dict[SeriesKey, int]] = {}
        for sid, site, device, point in self._read("SELECT id, site, device, point FROM series"):
            series.setdefault(site, {})[(device, point)] = sid
        with self._series_lock:
            self._series = series

    # ---- ingest ------------------------------------------------------------------------------

    def store_batches(self, batches: Sequence[VerifiedBatch]) -> StoreResult:
        """Store verified batches in ONE transaction; a (site, seq) already held is a duplicate.

        Returns once the transaction is committed: the caller may then acknowledge and receipt
        every seq in `stored` and `duplicates`. Raises StorageError (nothing stored) otherwise.
        """
        if not batches:
            return StoreResult()
        by_site: dict[str, list[VerifiedBatch]] = {}
        for b in batches:
            by_site.setdefault(b.site, []).append(b)
        stored: list[tuple[str, int]] = []
        duplicates: list[tuple[str, int]] = []
        fresh: list[VerifiedBatch] = []
        new_series: dict[str, dict[SeriesKey, int]] = {}
        rolled: list[Rolled] = []
        n_readings = 0
        flush = time.monotonic() - self._last_flush >= self.rollup_flush_s
        with self._write() as c:
            for site, group in by_site.items():
                seqs = sorted({b.seq for b in group})
                held: set[int] = set()
                for chunk in _chunks(seqs):
                    marks = ",".join("?" * len(chunk))
                    held.update(
                        row[0]
                        for row in c.execute(
                            f"SELECT seq FROM batches WHERE site = ? AND seq IN ({marks})",
                            (site, *chunk),
                        )
                    )
                for b in group:
                    if b.seq in held:
                        duplicates.append((site, b.seq))
                    else:
                        held.add(b.seq)
                        fresh.append(b)
                        stored.append((site, b.seq))
            if fresh:
                rows, spans = self._reading_rows(c, fresh, new_series, rolled)
                c.executemany(
                    "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (b.site, b.seq, b.boot, b.sent_ms, b.received_ms, len(b.readings),
                         b.hist, t_min, t_max, self._epoch)
                        for b, (t_min, t_max) in zip(fresh, spans, strict=True)
                    ],
                )  # fmt: skip
                n_readings = c.executemany(
                    "INSERT OR IGNORE INTO readings VALUES (?, ?, ?, ?)", rows
                ).rowcount
                losses = [
                    (b.site, b.seq, loss.t_ms, loss.count, loss.oldest_ms, loss.newest_ms)
                    for b in fresh
                    for loss in b.losses
                ]
                if losses:
                    c.executemany(
                        "INSERT INTO losses (site, seq, t_ms, count, oldest_ms, newest_ms) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        losses,
                    )
            seen: dict[str, int] = {}
            for b in batches:
                seen[b.site] = max(seen.get(b.site, 0), b.received_ms)
            c.executemany(
                "INSERT INTO site_state (site, last_seen_ms) VALUES (?, ?) ON CONFLICT(site) DO "
                "UPDATE SET last_seen_ms = max(coalesce(last_seen_ms, 0), excluded.last_seen_ms)",
                list(seen.items()),
            )
            if flush:
                accs: dict[AccKey, Acc] = {}
                fold(accs, rolled)
                with self._rollup_lock:
                    to_write = merged(self._pending, accs)
                self._write_rollups(c, to_write)
        with self._rollup_lock:
            if flush:
                self._pending = {}
                self._epoch += 1
                self._last_flush = time.monotonic()
            else:
                fold(self._pending, rolled)
        if new_series:
            with self._series_lock:
                for site, ids in new_series.items():
                    self._series.setdefault(site, {}).update(ids)
        self._update_latest(fresh)
        return StoreResult(stored, duplicates, n_readings)

    def flush_rollups(self) -> None:
        """Write the rollups accumulated in memory (done every `rollup_flush_s` by ingest, and
        on close; a crash before it is repaired from the raw readings on the next open)."""
        with self._write() as c:
            with self._rollup_lock:
                pending = dict(self._pending)
            self._write_rollups(c, pending)
        with self._rollup_lock:
            for key in pending:
                self._pending.pop(key, None)
            self._epoch += 1
            self._last_flush = time.monotonic()

    def _write_rollups(self, c: sqlite3.Connection, accs: dict[AccKey, Acc]) -> None:
        """Upsert `accs` and mark every batch of the current epoch as rolled up (in `c`'s
        transaction)."""
        c.executemany(
            _UPSERT_ROLLUP,
            [
                (sid, bucket, a.n, a.min, a.max, a.total / a.n, a.first, a.last, a.first_ms,
                 a.last_ms)
                for (sid, bucket), a in accs.items()
            ],
        )  # fmt: skip
        c.execute(
            "INSERT INTO meta VALUES ('rollup_flushed_epoch', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (str(self._epoch),),
        )

    def _repair_rollups(self) -> None:
        """Recompute, from raw readings, the buckets touched by batches whose rollups were
        still in memory when the process ended (crash or kill)."""
        flushed = int(self.get_meta("rollup_flushed_epoch") or 0)
        rows = self._read(
            "SELECT site, t_min, t_max, rollup_epoch FROM batches WHERE rollup_epoch > ? "
            "AND t_min IS NOT NULL",
            (flushed,),
        )
        last = max([flushed, *(int(r[3]) for r in rows)])
        spans: dict[str, set[int]] = {}
        for site, t_min, t_max, _ in rows:
            buckets = spans.setdefault(site, set())
            buckets.update(range(bucket_of(t_min), t_max + 1, BUCKET_MS))
        with self._write() as c:
            for site, buckets in spans.items():
                sids = [r[0] for r in c.execute("SELECT id FROM series WHERE site = ?", (site,))]
                for bucket in buckets:
                    accs: dict[AccKey, Acc] = {}
                    for chunk in _chunks(sids):
                        marks = ",".join("?" * len(chunk))
                        for sid, t, v, q in c.execute(
                            "SELECT series_id, t_ms, value, quality FROM readings "
                            f"WHERE series_id IN ({marks}) AND t_ms >= ? AND t_ms < ?",
                            (*chunk, bucket, bucket + BUCKET_MS),
                        ):
                            if not R.is_rolled(v, q):
                                continue
                            acc = accs.get((sid, bucket))
                            if acc is None:
                                accs[(sid, bucket)] = Acc(t, v)
                            else:
                                acc.add(t, v)
                        c.executemany(
                            "DELETE FROM rollups WHERE series_id = ? AND bucket_ms = ?",
                            [(sid, bucket) for sid in chunk],
                        )
                    self._write_rollups(c, accs)
            self._epoch = last
            c.execute(
                "INSERT INTO meta VALUES ('rollup_flushed_epoch', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(last),),
            )
        self._epoch = last + 1
        self._repaired = len(rows)

    def _reading_rows(
        self,
        c: sqlite3.Connection,
        fresh: Sequence[VerifiedBatch],
        new_series: dict[str, dict[SeriesKey, int]],
        rolled: list[Rolled],
    ) -> tuple[list[tuple[int, int, float | None, int]], list[tuple[int | None, int | None]]]:
        """Rows for `readings`, each batch's time span, and (appended to `rolled`) the columns of
        the readings the rollups take.

        This is the ingest hot path: each batch's columns (`ReadingColumns`, as decoded), series
        ids found by `map(dict.get)`, and the values encoded by `rows.encode`.
        """
        rows: list[tuple[int, int, float | None, int]] = []
        spans: list[tuple[int | None, int | None]] = []
        for b in fresh:
            if not b.readings:
                spans.append((None, None))
                continue
            cols = ReadingColumns.of(b.readings)  # decoded batches already are
            ts = cols.t
            spans.append((min(ts), max(ts)))
            site = b.site
            known = self._series.get(site, _NO_SERIES)
            found = list(map(known.get, zip(cols.device, cols.point, strict=True)))
            if None in found:
                self._fill_series(c, site, cols.device, cols.point, found, new_series)
            sids = cast(list[int], found)
            vals, quals, roll = R.encode(sids, ts, cols.value, cols.quality)
            rows += zip(sids, ts, vals, quals, strict=True)
            rolled.append(roll)
        return rows, spans

    def _fill_series(
        self,
        c: sqlite3.Connection,
        site: str,
        devices: Sequence[str],
        points: Sequence[str],
        sids: list[int | None],
        new_series: dict[str, dict[SeriesKey, int]],
    ) -> None:
        """Fill the None ids in `sids` with series created in this transaction (or now)."""
        pending = new_series.setdefault(site, {})
        for i, sid in enumerate(sids):
            if sid is None:
                key = (devices[i], points[i])
                new = pending.get(key)
                if new is None:
                    new = pending[key] = self._create_series(c, site, *key)
                sids[i] = new

    @staticmethod
    def _create_series(c: sqlite3.Connection, site: str, device: str, point: str) -> int:
        c.execute(
            "INSERT OR IGNORE INTO series (site, device, point) VALUES (?, ?, ?)",
            (site, device, point),
        )
        row = c.execute(
            "SELECT id FROM series WHERE site = ? AND device = ? AND point = ?",
            (site, device, point),
        ).fetchone()
        return int(row[0])

    def _update_latest(self, fresh: Sequence[VerifiedBatch]) -> None:
        """Fold committed readings into the cache of sites already loaded; newer time wins, so a
        historical batch never overwrites a newer live value."""
        with self._latest_lock:
            for b in fresh:
                cache = self._latest.get(b.site)
                if cache is None:
                    continue  # loaded from the database on first use, which then holds these
                for r in b.readings:
                    key = (r.device, r.point)
                    cur = cache.get(key)
                    if cur is None or r.t >= cur.t:
                        cache[key] = r

    def latest(self, site: str) -> dict[SeriesKey, Reading]:
        """The newest reading of every point of `site` (a copy; from memory after first use)."""
        with self._latest_lock:
            cache = self._latest.get(site)
            if cache is None:
                cache = self._load_latest(site)
                self._latest[site] = cache
            return dict(cache)

    def _load_latest(self, site: str) -> dict[SeriesKey, Reading]:
        return self._latest_of(
            "SELECT s.device, s.point, r.t_ms, r.value, r.quality FROM series s "
            "JOIN readings r ON r.series_id = s.id AND r.t_ms = "
            "(SELECT max(t_ms) FROM readings WHERE series_id = s.id) WHERE s.site = ?",
            site,
        )

    def _unflushed(self, sid: int, start: int, end: int) -> dict[int, RollupRow]:
        with self._rollup_lock:
            return {
                bucket: acc.row(bucket)
                for (s, bucket), acc in self._pending.items()
                if s == sid and start <= bucket < end
            }

    # ---- retention ---------------------------------------------------------------------------

    def apply_retention(self, now_ms: int) -> dict[str, int]:
        """Delete raw readings (and batch records) older than the raw retention, and rollups
        older than the rollup retention if one is set. Runs in short transactions so ingest
        is never held up for long. Returns rows deleted per table."""
        self.flush_rollups()
        cutoff = now_ms - self.raw_retention_ms
        ids = [int(r[0]) for r in self._read("SELECT id FROM series ORDER BY id")]
        deleted = {"readings": 0, "batches": 0, "rollups": 0}
        for chunk in _chunks(ids, 500):
            with self._write() as c:
                deleted["readings"] += c.executemany(
                    "DELETE FROM readings WHERE series_id = ? AND t_ms < ?",
                    [(sid, cutoff) for sid in chunk],
                ).rowcount
        with self._write() as c:
            # Batch records go with their readings; ingest refuses batches this old as stale,
            # so a replay of one cannot be stored again.
            deleted["batches"] = c.execute(
                "DELETE FROM batches WHERE sent_ms < ?", (cutoff,)
            ).rowcount
        if self.rollup_retention_ms:
            rcut = now_ms - self.rollup_retention_ms
            for chunk in _chunks(ids, 500):
                with self._write() as c:
                    deleted["rollups"] += c.executemany(
                        "DELETE FROM rollups WHERE series_id = ? AND bucket_ms < ?",
                        [(sid, rcut) for sid in chunk],
                    ).rowcount
        with self._latest_lock:
            self._latest.clear()  # reload on next use: a point may have lost its last reading
        return deleted

    # ---- commands ----------------------------------------------------------------------------

    def _next_command_seq(self, c: Conn, site: str) -> int:
        # BEGIN IMMEDIATE makes this transaction the only writer, so read-then-write is safe.
        row = self._exec(
            c,
            "SELECT max(coalesce((SELECT seq FROM command_seqs WHERE site = ?), 0), "
            "coalesce((SELECT max(seq) FROM commands WHERE site = ?), 0))",
            (site, site),
        ).fetchall()[0]
        seq = int(row[0]) + 1
        self._exec(
            c,
            "INSERT INTO command_seqs VALUES (?, ?) ON CONFLICT(site) DO UPDATE "
            "SET seq = excluded.seq",
            (site, seq),
        )
        return seq


def open_storage(
    path: Path | str,
    *,
    raw_retention_ms: int = 30 * DAY_MS,
    rollup_retention_ms: int | None = None,
    rollup_flush_s: float = 5.0,
) -> SqliteStorage:
    """Open (creating and migrating as needed) the SQLite storage at `path`."""
    return SqliteStorage(
        path,
        raw_retention_ms=raw_retention_ms,
        rollup_retention_ms=rollup_retention_ms,
        rollup_flush_s=rollup_flush_s,
    )


__all__ = ["BOOL_FLAG", "DAY_MS", "SqliteStorage", "open_storage"]
