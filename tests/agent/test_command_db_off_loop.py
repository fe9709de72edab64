"""The command side's durable commits run off the event loop, in call order, still durable.

A slow commit is made real, not mocked: a second connection holds the database's write lock
(`BEGIN IMMEDIATE`), so the commit waits in SQLite's busy handler. Run on the event loop, that
wait would stall the loop, the coroutine that releases the lock could never run and the commit
would fail with "database is locked" after the 5 s busy timeout; run in the worker thread, the
loop keeps ticking, the lock is released and the commit lands.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from agent.acks import AckQueue
from agent.audit import AuditEntry, AuditLog
from agent.command_db import commit_thread


def entry(i: int) -> AuditEntry:
    return AuditEntry(
        t=1000 + i,
        source="aggregator",
        command_id=f"id-{i}",
        seq=i + 1,
        action="battery.auto",
        params={},
        status="applied",
    )


async def until(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


@asynccontextmanager
async def write_lock_held(path: Path) -> AsyncIterator[Callable[[], None]]:
    """Another connection holds the write lock until the yielded `release` is called."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")

    def release() -> None:
        other.execute("COMMIT")

    try:
        yield release
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()


async def loop_runs_during(path: Path, commit: Awaitable[Any]) -> tuple[int, Any]:
    """Ticks of another coroutine while `commit` waits on the held write lock; its result."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    async with write_lock_held(path) as release:
        tick = asyncio.create_task(ticker())
        task = asyncio.ensure_future(commit)
        try:
            await until(lambda: ticks >= 20)
            assert not task.done()  # still waiting for the lock: the loop ran meanwhile
            waited = ticks
            release()
            result = await asyncio.wait_for(task, 5.0)
        finally:
            tick.cancel()
    return waited, result


async def test_an_audit_append_waiting_on_disk_does_not_stall_the_loop(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    log = AuditLog(db)
    try:
        log.append(entry(0))
        ticks, appended = await loop_runs_during(db, log.append_async(entry(1)))
        assert ticks >= 20
        assert appended.n == 2 and appended.prev == log.entries()[0].hash
        assert log.verify().ok
    finally:
        log.close()
    reopened = AuditLog(db, read_only=True)
    try:
        assert [e.command_id for e in reopened.entries()] == ["id-0", "id-1"]
    finally:
        reopened.close()


async def test_a_state_write_and_an_ack_store_do_not_stall_the_loop(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    log, acks = AuditLog(db), AckQueue(db)
    try:
        await loop_runs_during(db, log.set_state_async({"last_seq": 42}))
        assert log.get_state("last_seq") == 42
        _, n = await loop_runs_during(
            db, acks.put_async(command_id="c", seq=42, topic="t", body=b"x", created_ms=1)
        )
        assert [(q.n, q.seq, q.body) for q in acks.pending()] == [(n, 42, b"x")]
        # the delete after the broker's PUBACK does not stall the loop either
        await loop_runs_during(db, acks.published_async(n))
        assert acks.pending() == []
    finally:
        log.close()
        acks.close()


async def test_concurrent_appends_chain_in_call_order(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "agent.db")
    try:
        done = await asyncio.gather(*(log.append_async(entry(i)) for i in range(30)))
        assert [e.n for e in done] == list(range(1, 31))
        assert [e.command_id for e in log.entries()] == [f"id-{i}" for i in range(30)]
        assert log.verify().ok
    finally:
        log.close()


async def test_close_waits_for_commits_already_asked_for(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    log = AuditLog(db)
    tasks = [asyncio.create_task(log.append_async(entry(i))) for i in range(5)]
    await asyncio.sleep(0)  # the appends are handed to the worker thread
    log.close()
    await asyncio.gather(*tasks)
    reopened = AuditLog(db, read_only=True)
    try:
        assert len(reopened.entries()) == 5 and reopened.verify().ok
    finally:
        reopened.close()


async def test_agents_sharing_one_commit_thread_keep_their_order_and_close_apart(
    tmp_path: Path,
) -> None:
    """A fleet host's agents share one commit thread: each log still chains in call order, and
    closing one waits for its own commits without stopping the thread the others use."""
    shared = commit_thread("test-commits")
    logs = [AuditLog(tmp_path / f"site-{k}.db", thread=shared) for k in range(3)]
    acks = AckQueue(tmp_path / "site-0.db", thread=shared)
    try:
        await asyncio.gather(
            *(log.append_async(entry(i)) for i in range(20) for log in logs),
            acks.put_async(command_id="c", seq=1, topic="t", body=b"x", created_ms=1),
        )
        tail = [asyncio.create_task(logs[0].append_async(entry(20 + i))) for i in range(5)]
        await asyncio.sleep(0)  # handed to the shared thread
        logs[0].close()  # waits for its five, leaves the thread running
        await asyncio.gather(*tail)
        await logs[1].append_async(entry(20))  # the others still commit
        assert [len(log.entries()) for log in logs[1:]] == [21, 20]
        assert all(log.verify().ok for log in logs[1:])
        assert [a.command_id for a in acks.pending()] == ["c"]
        reopened = AuditLog(tmp_path / "site-0.db", read_only=True)
        try:
            ids = [e.command_id for e in reopened.entries()]
            assert ids == [f"id-{i}" for i in range(25)] and reopened.verify().ok
        finally:
            reopened.close()
    finally:
        for log in logs[1:]:
            log.close()
        acks.close()
        shared.shutdown(wait=True)
