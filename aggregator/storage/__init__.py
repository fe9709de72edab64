"""Aggregator storage: the `Storage` interface, its backends (SQLite; PostgreSQL in
`aggregator.storage.postgres`, imported only when configured) and the values they pass."""

from aggregator.storage.backend import open_configured, open_database
from aggregator.storage.base import Storage
from aggregator.storage.rollup import BUCKET_MS, DAY_MS
from aggregator.storage.sqlite import SqliteStorage, open_storage
from aggregator.storage.types import (
    AlarmRecord,
    CommandRecord,
    CommandStatus,
    LossRecord,
    RollupRow,
    SeriesKey,
    Severity,
    SiteInfo,
    SiteKey,
    SiteState,
    StoreResult,
    TokenRecord,
    VerifiedBatch,
)

__all__ = [
    "BUCKET_MS",
    "DAY_MS",
    "AlarmRecord",
    "CommandRecord",
    "CommandStatus",
    "LossRecord",
    "RollupRow",
    "SeriesKey",
    "Severity",
    "SiteInfo",
    "SiteKey",
    "SiteState",
    "SqliteStorage",
    "Storage",
    "StoreResult",
    "TokenRecord",
    "VerifiedBatch",
    "open_configured",
    "open_database",
    "open_storage",
]
