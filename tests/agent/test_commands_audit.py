"""The hash-chained audit log: appends chain, and an edit, a removal or a cut tail shows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.audit import GENESIS, AuditEntry, AuditLog


def fill(path: Path, n: int = 5) -> AuditLog:
    log = AuditLog(path)
    for i in range(n):
        log.append(
            AuditEntry(
                t=1000 + i,
                source="aggregator",
                command_id=f"id-{i}",
                seq=i + 1,
                action="battery.peak_shave",
                params={"discharge_limit_w": 1000.0 + i},
                status="applied" if i % 2 == 0 else "rejected",
                reason="" if i % 2 == 0 else "below_reserve",
                readback={"battery.mode": 2},
            )
        )
    return log


def test_chain_links_and_verifies(tmp_path: Path) -> None:
    log = fill(tmp_path / "a.db")
    rows = log.entries()
    assert [r.n for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0].prev == GENESIS
    assert all(rows[i].prev == rows[i - 1].hash for i in range(1, 5))
    assert log.verify().ok and log.verify().entries == 5
    last = log.last()
    assert last is not None and last.command_id == "id-4" and last.readback == {"battery.mode": 2}


def test_state_survives_reopen_and_read_only_open(tmp_path: Path) -> None:
    log = fill(tmp_path / "a.db", 1)
    log.set_state({"last_seq": 41, "leases": [{"key": "battery"}]})
    log.close()
    ro = AuditLog(tmp_path / "a.db", read_only=True)
    assert ro.get_state("last_seq") == 41
    assert ro.get_state("missing", 7) == 7
    assert ro.verify().ok


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        ("UPDATE audit SET reason = 'ok' WHERE n = 2", "edited"),
        ("UPDATE audit SET params = '{\"discharge_limit_w\":9}' WHERE n = 3", "edited"),
        ("DELETE FROM audit WHERE n = 3", "missing"),
        ("DELETE FROM audit WHERE n = 5", "ends at row 4"),
        ("UPDATE audit SET n = 6 WHERE n = 5", "missing"),
    ],
)
def test_tampering_is_detected(tmp_path: Path, sql: str, problem: str) -> None:
    fill(tmp_path / "a.db").close()
    with sqlite3.connect(tmp_path / "a.db") as db:
        db.execute(sql)
    check = AuditLog(tmp_path / "a.db").verify()
    assert not check.ok
    assert problem in check.problem


def test_rehashing_one_row_breaks_the_next_link(tmp_path: Path) -> None:
    """Even a tamperer who recomputes an edited row's hash is caught by the next row."""
    from agent.audit import entry_hash

    log = fill(tmp_path / "a.db")
    rows = log.entries()
    edited = AuditEntry(**{**{f: getattr(rows[1], f) for f in rows[1].__slots__}, "reason": "x"})
    new_hash = entry_hash(rows[1].prev, 2, edited)
    with sqlite3.connect(tmp_path / "a.db") as db:
        db.execute("UPDATE audit SET reason = 'x', hash = ? WHERE n = 2", (new_hash,))
    check = AuditLog(tmp_path / "a.db").verify()
    assert not check.ok and check.bad_n == 3 and "link" in check.problem
