"""The storage backends as a pytest parameter: the Storage behaviour tests run against SQLite and
against PostgreSQL (a private cluster for the session, a fresh database per test).

`backend.open(...)` opens (and reopens: same file, same database) a storage of the test's kind;
the other methods are what a test needs to reach behind the interface.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aggregator.storage import Storage, open_storage
from tests.support.postgres import TEST_SETTINGS, PgCluster, pg_available

_names = itertools.count(1)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One private PostgreSQL server for the session (skipped where none is installed)."""
    if not pg_available():
        pytest.skip("PostgreSQL is not installed (make test installs it as root)")
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install '.[postgres]')")
    with PgCluster(settings=TEST_SETTINGS) as cluster:
        yield cluster


class SqliteBackend:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    def open(self, **kw: Any) -> Storage:
        return open_storage(self.path, **kw)

    def open_source(self, **kw: Any) -> str:
        """Python that opens this storage as `s`, for a test's child process."""
        args = "".join(f", {k}={v!r}" for k, v in kw.items())
        return (
            "from aggregator.storage import open_storage\n"
            f"s = open_storage({str(self.path)!r}{args})"
        )

    def bump_schema(self, version: int) -> None:
        conn = sqlite3.connect(self.path)
        conn.execute("INSERT INTO schema_version VALUES (?, 'future', 0)", (version,))
        conn.commit()
        conn.close()

    def wait_writers_gone(self, *, live: int = 0, timeout: float = 10.0) -> None:
        """SQLite needs no wait: a dead process holds nothing."""


class PostgresBackend:
    name = "postgres"

    def __init__(self, url: str) -> None:
        self.url = url

    def open(self, **kw: Any) -> Storage:
        from aggregator.storage.postgres import open_postgres

        return open_postgres(self.url, **kw)

    def open_source(self, **kw: Any) -> str:
        args = "".join(f", {k}={v!r}" for k, v in kw.items())
        return (
            "from aggregator.storage.postgres import open_postgres\n"
            f"s = open_postgres({self.url!r}{args})"
        )

    def bump_schema(self, version: int) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("INSERT INTO schema_version VALUES (%s, 'future', 0)", (version,))

    def wait_writers_gone(self, *, live: int = 0, timeout: float = 10.0) -> None:
        """Wait until the server has ended the sessions of writers whose process died (their
        liveness locks go with them, a moment after the process): `live` writers remain."""
        import psycopg

        from aggregator.storage.postgres import WRITER_LOCKS

        deadline = time.monotonic() + timeout
        with psycopg.connect(self.url, autocommit=True) as conn:
            while True:
                row = conn.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND classid::bigint = %s",
                    (WRITER_LOCKS,),
                ).fetchone()
                if row is not None and row[0] <= live:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError("a writer's lock outlived its process")
                time.sleep(0.02)


Backend = SqliteBackend | PostgresBackend


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Where a test's storage lives, once per backend."""
    if request.param == "sqlite":
        yield SqliteBackend(tmp_path / "agg.db")
        return
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    name = f"t{next(_names)}"
    yield PostgresBackend(cluster.create_database(name))
    cluster.drop_database(name)


__all__ = ["Backend", "PostgresBackend", "SqliteBackend", "backend", "pg_cluster"]
