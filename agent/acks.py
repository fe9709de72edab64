"""Durable acks: signed once, stored, published until the broker has them.

An ack is the aggregator's only evidence of what became of a command; one lost while the link was
down makes the aggregator retry a command that may already have been applied. So the command side
signs each ack when the outcome is known, stores the exact bytes here (table `ack_outbox` of the
agent's database, owned by this module, in its own connection like the audit log), and the
delivery task publishes the stored bytes, QoS 1, whenever it has a connection — and deletes a
row only when the broker PUBACKs it. A crash or a link lost between the PUBACK and the delete
re-sends the same bytes: delivery is *at least once*, and an ack is idempotent by command id
(the aggregator keeps the first outcome it stores for a command and ignores copies).

The running agent stores with `put_async`: the same durable insert, run in the queue's worker
thread (`agent.command_db.DbWorker`) so its fsync does not stall the event loop.
"""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from agent.command_db import DbWorker, open_command_db
from agent.errors import AuditError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ack_outbox (
    n          INTEGER PRIMARY KEY,
    command_id TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    topic      TEXT    NOT NULL,
    body       BLOB    NOT NULL,
    created_ms INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class QueuedAck:
    """A stored, signed ack: `body` is published to `topic` exactly as it is."""

    n: int
    command_id: str
    seq: int
    topic: str
    body: bytes
    created_ms: int


class AckQueue:
    """Owner of the `ack_outbox` table. Oldest first; a row lives until its PUBACK."""

    def __init__(self, path: Path | str, *, thread: ThreadPoolExecutor | None = None) -> None:
        self.path = Path(path)
        self._db = open_command_db(self.path, schema=_SCHEMA, what="the ack queue")
        self._worker = DbWorker("acks", thread)

    def close(self) -> None:
        self._worker.close()
        with self._worker.lock:
            self._db.close()

    def put(self, *, command_id: str, seq: int, topic: str, body: bytes, created_ms: int) -> int:
        """Store a signed ack durably (before anything tries to send it); its row number."""
        try:
            with self._worker.lock, self._db:
                cur = self._db.execute(
                    "INSERT INTO ack_outbox(command_id, seq, topic, body, created_ms) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (command_id, seq, topic, body, created_ms),
                )
        except sqlite3.Error as exc:
            raise AuditError(f"{self.path}: cannot store an ack: {exc}") from exc
        assert cur.lastrowid is not None
        return cur.lastrowid

    async def put_async(
        self, *, command_id: str, seq: int, topic: str, body: bytes, created_ms: int
    ) -> int:
        """`put`, committed in the worker thread; returns once the ack is durable."""
        return await self._worker.run(
            self.put, command_id=command_id, seq=seq, topic=topic, body=body, created_ms=created_ms
        )

    def pending(self, limit: int = 100) -> list[QueuedAck]:
        """The oldest acks not yet PUBACKed."""
        with self._worker.lock:
            rows = self._db.execute(
                "SELECT n, command_id, seq, topic, body, created_ms FROM ack_outbox "
                "ORDER BY n LIMIT ?",
                (limit,),
            ).fetchall()
        return [QueuedAck(r[0], r[1], r[2], r[3], bytes(r[4]), r[5]) for r in rows]

    def published(self, n: int) -> None:
        """The broker has the ack of row `n` (PUBACK): forget it."""
        try:
            with self._worker.lock, self._db:
                self._db.execute("DELETE FROM ack_outbox WHERE n = ?", (n,))
        except sqlite3.Error as exc:
            raise AuditError(f"{self.path}: cannot delete a published ack: {exc}") from exc

    async def published_async(self, n: int) -> None:
        """`published`, committed in the worker thread: a PUBACK never waits for an fsync."""
        await self._worker.run(self.published, n)

    def count(self) -> int:
        with self._worker.lock:
            return int(self._db.execute("SELECT count(*) FROM ack_outbox").fetchone()[0])


__all__ = ["AckQueue", "QueuedAck"]
