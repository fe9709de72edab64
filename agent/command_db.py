"""The command side's connection to the agent's database (audit log, command state, ack queue).

Each owner of command-side tables opens its own connection with the same settings: WAL, so the
outbox's connection to the same file is not blocked; `synchronous=FULL`, because what these
tables hold (an accepted seq, a signed ack) must survive a power cut, not just a crash.

That fsync takes milliseconds; run on the event loop it stalls every agent of the process (25 on
a fleet host). So each owner commits through a `DbWorker`: one thread of its own that runs the
commits in the order they were asked for, while the coroutine that asked awaits the result — the
caller still goes on only once the commit is durable, the loop meanwhile serves everyone else.
The connection is then used by two threads (the worker, and the loop for reads), so every use of
it holds the worker's `lock`: an sqlite3 connection must never be used by two threads at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

from agent.errors import AuditError

P = ParamSpec("P")
T = TypeVar("T")


def open_command_db(
    path: Path, *, schema: str, what: str, read_only: bool = False
) -> sqlite3.Connection:
    """Open (creating the folder and `schema` unless `read_only`); AuditError names `what`."""
    try:
        if read_only:
            return sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, timeout=5.0, check_same_thread=False
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=5.0, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(schema)
    except sqlite3.Error as exc:
        raise AuditError(f"{path}: cannot open {what}: {exc}") from exc
    return db


def commit_thread(name: str) -> ThreadPoolExecutor:
    """One thread for commits, first asked first done. Several `DbWorker`s may share it: a
    fleet host's hundreds of agents do, rather than two threads each (500 threads taking turns
    at the GIL stalled the event loop whenever a round of commands arrived)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)


class DbWorker:
    """The one thread that runs a connection's commits, first asked first done, and its lock.

    A single thread keeps the order of the calls (the audit chain's order is the order the
    appends were called in, even if the caller is cancelled while waiting); the thread starts on
    the first call, so a read-only open costs none. It is the worker's own unless `thread` (a
    `commit_thread`, shared) is given.
    """

    def __init__(self, name: str, thread: ThreadPoolExecutor | None = None) -> None:
        self.lock = threading.Lock()
        """Held by every use of the connection, on whichever thread."""
        self._own = thread is None
        self._pool = thread or commit_thread(name)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` in the worker thread; returns (or raises) once it has run."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        """Wait for the commits already asked for (they were promised), then stop the thread
        (a shared one: only wait, its owner stops it)."""
        if self._own:
            self._pool.shutdown(wait=True)
            return
        with contextlib.suppress(RuntimeError):  # already shut down: nothing left to wait for
            self._pool.submit(_nothing).result()


def _nothing() -> None:
    return None


__all__ = ["DbWorker", "commit_thread", "open_command_db"]
