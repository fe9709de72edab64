"""Aggregator storage: the `Storage` interface, its SQLite backend, and the values they pass."""

from aggregator.storage.base import Storage
from aggregator.storage.rollup import BUCKET_MS
from aggregator.storage.sqlite import DAY_MS, SqliteStorage, open_storage
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
    "open_storage",
]
