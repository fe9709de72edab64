"""The command side's SQLite tables: a hash-chained audit log and a small persisted state.

`audit` holds one row per command outcome (and per action the agent took on its own: lease
lapse, reserve reached, dormant exit). Each row stores the SHA-256 of the previous row's hash and
its own canonical content, so `verify()` finds an edited row (its hash no longer matches), a
removed row (a gap in `n`, or a `prev` that does not match), and a removed tail (the head recorded
in `command_state` no longer matches the last row). A local root user can still rewrite the whole
chain consistently; the acks the aggregator holds are the outside witness.

`command_state` is a key/value table: the last accepted command seq (written with `synchronous
= FULL` before any device is touched, so a crash can never let a command run twice), the leases,
the dormant hold. It shares the agent's database file with the outbox (WAL); each side owns its
tables and its own connection.

The running agent commits through `append_async` / `set_state_async`: the same transaction, run
in this log's worker thread (`agent.command_db.DbWorker`) so the fsync does not stall the event
loop; the caller resumes only once it is durable, and appends enter the chain in call order.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.command_db import DbWorker, open_command_db
from agent.errors import AuditError

GENESIS = bytes(32)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    n          INTEGER PRIMARY KEY,
    t          INTEGER NOT NULL,
    source     TEXT    NOT NULL,
    command_id TEXT    NOT NULL,
    seq        INTEGER,
    action     TEXT    NOT NULL,
    params     TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    readback   TEXT    NOT NULL,
    prev       BLOB    NOT NULL,
    hash       BLOB    NOT NULL
);
CREATE TABLE IF NOT EXISTS command_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

_HEAD = "audit_head"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audited outcome. `source` is "aggregator" for a command, "agent" for its own acts."""

    t: int
    source: str
    command_id: str
    seq: int | None
    action: str
    params: Mapping[str, Any]
    status: str
    reason: str = ""
    readback: Mapping[str, Any] | None = None
    n: int = 0
    prev: bytes = GENESIS
    hash: bytes = GENESIS


@dataclass(frozen=True, slots=True)
class AuditCheck:
    """The result of `verify()`: ok, rows checked, and the first problem found."""

    ok: bool
    entries: int
    bad_n: int | None = None
    problem: str = ""


def _canon(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(prev: bytes, n: int, e: AuditEntry) -> bytes:
    """SHA-256 over the previous hash and the row's canonical JSON content."""
    body = _canon(
        [
            n,
            e.t,
            e.source,
            e.command_id,
            e.seq,
            e.action,
            dict(e.params),
            e.status,
            e.reason,
            dict(e.readback or {}),
        ]
    )
    return hashlib.sha256(prev + body.encode()).digest()


class AuditLog:
    """Owner of the `audit` and `command_state` tables in the agent's database."""

    def __init__(
        self,
        path: Path | str,
        *,
        read_only: bool = False,
        thread: ThreadPoolExecutor | None = None,
    ) -> None:
        self.path = Path(path)
        self._db = open_command_db(
            self.path, schema=_SCHEMA, what="the audit tables", read_only=read_only
        )
        self._worker = DbWorker("audit", thread)

    def close(self) -> None:
        self._worker.close()
        with self._worker.lock:
            self._db.close()

    # -- state -------------------------------------------------------------------------------

    def get_state(self, key: str, default: Any = None) -> Any:
        try:
            with self._worker.lock:
                row = self._db.execute(
                    "SELECT value FROM command_state WHERE key = ?", (key,)
                ).fetchone()
        except sqlite3.OperationalError:
            return default  # read-only open of a database the agent has not initialised yet
        return default if row is None else json.loads(row[0])

    def set_state(self, values: Mapping[str, Any]) -> None:
        """Write several keys in one durable transaction."""
        try:
            with self._worker.lock, self._db:
                self._db.executemany(
                    "INSERT INTO command_state(key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    [(k, _canon(v)) for k, v in values.items()],
                )
        except sqlite3.Error as exc:
            raise AuditError(f"{self.path}: cannot write command state: {exc}") from exc

    async def set_state_async(self, values: Mapping[str, Any]) -> None:
        """`set_state`, committed in the worker thread; returns once the keys are durable."""
        await self._worker.run(self.set_state, dict(values))

    # -- the chain ---------------------------------------------------------------------------

    def append(self, entry: AuditEntry) -> AuditEntry:
        """Add `entry` at the end of the chain; returns it with n, prev and hash filled in."""
        try:
            with self._worker.lock, self._db:
                row = self._db.execute(
                    "SELECT n, hash FROM audit ORDER BY n DESC LIMIT 1"
                ).fetchone()
                n, prev = (1, GENESIS) if row is None else (int(row[0]) + 1, bytes(row[1]))
                digest = entry_hash(prev, n, entry)
                self._db.execute(
                    "INSERT INTO audit(n, t, source, command_id, seq, action, params, status, "
                    "reason, readback, prev, hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        n,
                        entry.t,
                        entry.source,
                        entry.command_id,
                        entry.seq,
                        entry.action,
                        _canon(dict(entry.params)),
                        entry.status,
                        entry.reason,
                        _canon(dict(entry.readback or {})),
                        prev,
                        digest,
                    ),
                )
                self._db.execute(
                    "INSERT INTO command_state(key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (_HEAD, _canon([n, digest.hex()])),
                )
        except sqlite3.Error as exc:
            raise AuditError(f"{self.path}: cannot append to the audit log: {exc}") from exc
        return AuditEntry(
            entry.t,
            entry.source,
            entry.command_id,
            entry.seq,
            entry.action,
            entry.params,
            entry.status,
            entry.reason,
            entry.readback,
            n,
            prev,
            digest,
        )

    async def append_async(self, entry: AuditEntry) -> AuditEntry:
        """`append`, committed in the worker thread; returns once the row is durable."""
        return await self._worker.run(self.append, entry)

    def entries(self, *, limit: int | None = None) -> list[AuditEntry]:
        """Rows oldest first (the last `limit` rows when given)."""
        sql = (
            "SELECT n, t, source, command_id, seq, action, params, status, reason, readback, "
            "prev, hash FROM audit"
        )
        try:
            with self._worker.lock:
                if limit is None:
                    rows = self._db.execute(sql + " ORDER BY n").fetchall()
                else:
                    rows = self._db.execute(sql + " ORDER BY n DESC LIMIT ?", (limit,)).fetchall()
                    rows.reverse()
        except sqlite3.OperationalError:
            return []
        return [
            AuditEntry(
                t=r[1],
                source=r[2],
                command_id=r[3],
                seq=r[4],
                action=r[5],
                params=json.loads(r[6]),
                status=r[7],
                reason=r[8],
                readback=json.loads(r[9]),
                n=r[0],
                prev=bytes(r[10]),
                hash=bytes(r[11]),
            )
            for r in rows
        ]

    def last(self) -> AuditEntry | None:
        rows = self.entries(limit=1)
        return rows[0] if rows else None

    def verify(self) -> AuditCheck:
        """Walk the chain from the first row; report the first row that does not hold."""
        prev, expect_n, count = GENESIS, 1, 0
        for e in self.entries():
            count += 1
            if e.n != expect_n:
                return AuditCheck(False, count, e.n, f"row {expect_n} is missing (next is {e.n})")
            if e.prev != prev:
                return AuditCheck(False, count, e.n, "previous-hash link broken")
            if entry_hash(prev, e.n, e) != e.hash:
                return AuditCheck(False, count, e.n, "content does not match its hash (edited)")
            prev, expect_n = e.hash, e.n + 1
        head = self.get_state(_HEAD)
        if head is not None:
            n, digest = int(head[0]), str(head[1])
            if n != expect_n - 1 or digest != prev.hex():
                return AuditCheck(
                    False, count, n, f"the chain ends at row {expect_n - 1}, its head says {n}"
                )
        elif count:
            return AuditCheck(False, count, None, "rows present but no recorded head")
        return AuditCheck(True, count)


__all__ = ["GENESIS", "AuditCheck", "AuditEntry", "AuditLog", "entry_hash"]
