"""Which backend a configuration means: PostgreSQL when `[database] url` is set, else SQLite.

psycopg is an optional extra (`pip install 'sitewatt[postgres]'`), so the PostgreSQL module is
imported only when a URL asks for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from aggregator.errors import ConfigError
from aggregator.storage.base import Storage
from aggregator.storage.rollup import DAY_MS
from aggregator.storage.sqlite import open_storage

if TYPE_CHECKING:
    from aggregator.config import DatabaseConfig, RetentionConfig


def open_database(
    *,
    path: Path | str,
    url: str | None = None,
    raw_retention_ms: int = 30 * DAY_MS,
    rollup_retention_ms: int | None = None,
    rollup_flush_s: float = 5.0,
) -> Storage:
    """Open (creating and migrating as needed) PostgreSQL at `url` if given, else SQLite at
    `path`."""
    if url is None:
        return open_storage(
            path,
            raw_retention_ms=raw_retention_ms,
            rollup_retention_ms=rollup_retention_ms,
            rollup_flush_s=rollup_flush_s,
        )
    try:
        from aggregator.storage.postgres import open_postgres
    except ImportError as exc:
        raise ConfigError(
            f"database.url: PostgreSQL needs psycopg ({exc}); pip install 'sitewatt[postgres]'"
        ) from exc
    return open_postgres(
        url,
        raw_retention_ms=raw_retention_ms,
        rollup_retention_ms=rollup_retention_ms,
        rollup_flush_s=rollup_flush_s,
    )


def open_configured(
    database: DatabaseConfig,
    retention: RetentionConfig | None = None,
    *,
    path: Path | None = None,
) -> Storage:
    """The storage a config names; `path` (a CLI's `--db`) overrides it with that SQLite file."""
    raw_days = retention.raw_days if retention is not None else 30
    rollup_days = retention.rollup_days if retention is not None else 0
    return open_database(
        path=path if path is not None else database.path,
        url=database.url if path is None else None,
        raw_retention_ms=int(raw_days * DAY_MS),
        rollup_retention_ms=int(rollup_days * DAY_MS) if rollup_days else None,
    )


__all__ = ["open_configured", "open_database"]
