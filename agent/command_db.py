"""The command side's connection to the agent's database (audit log, command state, ack queue).

Each owner of command-side tables opens its own connection with the same settings: WAL, so the
outbox's connection to the same file is not blocked; `synchronous=FULL`, because what these
tables hold (an accepted seq, a signed ack) must survive a power cut, not just a crash.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agent.errors import AuditError


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


__all__ = ["open_command_db"]
