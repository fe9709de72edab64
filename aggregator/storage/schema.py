"""Versioned SQLite schema: migrations are appended, never edited once released.

Index choices follow the ingest hot path (≥ 100k readings/s): `readings` is a WITHOUT ROWID table
keyed by (series_id, t_ms) — one B-tree serves both the insert and every per-point time-range
query, and a second copy of the same reading (same point, same millisecond) is ignored rather
than failing a whole group. `batches` is keyed by (site, seq), which is the dedupe check. Nothing
else on the hot path carries an index.
"""

from __future__ import annotations

from typing import NamedTuple


class Migration(NamedTuple):
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "initial schema",
        (
            """CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
            """CREATE TABLE sites (
                site TEXT PRIMARY KEY,
                name TEXT NOT NULL DEFAULT '',
                region TEXT NOT NULL DEFAULT '',
                tz TEXT NOT NULL DEFAULT 'Asia/Shanghai',
                tariff TEXT NOT NULL DEFAULT '',
                created_ms INTEGER NOT NULL,
                enabled INTEGER NOT NULL DEFAULT 1
            )""",
            """CREATE TABLE site_keys (
                kid TEXT PRIMARY KEY,
                site TEXT NOT NULL REFERENCES sites(site),
                public_key TEXT NOT NULL UNIQUE,
                added_ms INTEGER NOT NULL,
                revoked_ms INTEGER
            )""",
            """CREATE INDEX site_keys_site ON site_keys(site)""",
            """CREATE TABLE batches (
                site TEXT NOT NULL,
                seq INTEGER NOT NULL,
                boot TEXT NOT NULL,
                sent_ms INTEGER NOT NULL,
                received_ms INTEGER NOT NULL,
                n INTEGER NOT NULL,
                hist INTEGER NOT NULL,
                t_min INTEGER,
                t_max INTEGER,
                rollup_epoch INTEGER NOT NULL,
                PRIMARY KEY (site, seq)
            ) WITHOUT ROWID""",
            """CREATE TABLE series (
                id INTEGER PRIMARY KEY,
                site TEXT NOT NULL,
                device TEXT NOT NULL,
                point TEXT NOT NULL,
                UNIQUE (site, device, point)
            )""",
            # quality: low byte = protocols.types.Quality; bit 8 set = the value was a bool.
            """CREATE TABLE readings (
                series_id INTEGER NOT NULL,
                t_ms INTEGER NOT NULL,
                value REAL,
                quality INTEGER NOT NULL,
                PRIMARY KEY (series_id, t_ms)
            ) WITHOUT ROWID""",
            """CREATE TABLE rollups (
                series_id INTEGER NOT NULL,
                bucket_ms INTEGER NOT NULL,
                n INTEGER NOT NULL,
                "min" REAL NOT NULL,
                "max" REAL NOT NULL,
                mean REAL NOT NULL,
                "last" REAL NOT NULL,
                "first" REAL NOT NULL,
                first_ms INTEGER NOT NULL,
                last_ms INTEGER NOT NULL,
                PRIMARY KEY (series_id, bucket_ms)
            ) WITHOUT ROWID""",
            """CREATE TABLE site_state (
                site TEXT PRIMARY KEY,
                online INTEGER NOT NULL DEFAULT 0,
                boot TEXT NOT NULL DEFAULT '',
                version TEXT NOT NULL DEFAULT '',
                devices TEXT NOT NULL DEFAULT '{}',
                last_seen_ms INTEGER,
                birth_ms INTEGER,
                death_ms INTEGER
            )""",
            """CREATE TABLE losses (
                id INTEGER PRIMARY KEY,
                site TEXT NOT NULL,
                seq INTEGER,
                t_ms INTEGER NOT NULL,
                count INTEGER NOT NULL,
                oldest_ms INTEGER,
                newest_ms INTEGER
            )""",
            """CREATE INDEX losses_site ON losses(site, t_ms)""",
            """CREATE TABLE alarms (
                id INTEGER PRIMARY KEY,
                site TEXT NOT NULL,
                kind TEXT NOT NULL,
                severity TEXT NOT NULL,
                device TEXT,
                point TEXT,
                message TEXT NOT NULL DEFAULT '',
                raised_ms INTEGER NOT NULL,
                cleared_ms INTEGER
            )""",
            """CREATE INDEX alarms_site ON alarms(site, raised_ms)""",
            """CREATE INDEX alarms_active ON alarms(cleared_ms) WHERE cleared_ms IS NULL""",
            """CREATE TABLE tokens (
                id INTEGER PRIMARY KEY,
                name TEXT NOT NULL,
                role TEXT NOT NULL,
                token_hash TEXT NOT NULL UNIQUE,
                created_ms INTEGER NOT NULL,
                revoked_ms INTEGER
            )""",
            """CREATE TABLE commands (
                id TEXT PRIMARY KEY,
                site TEXT NOT NULL,
                seq INTEGER NOT NULL,
                action TEXT NOT NULL,
                params TEXT NOT NULL,
                issued_ms INTEGER NOT NULL,
                expires_ms INTEGER NOT NULL,
                lease_s REAL NOT NULL,
                issued_by TEXT NOT NULL,
                sent_ms INTEGER,
                status TEXT NOT NULL,
                ack_ms INTEGER,
                reason TEXT,
                readback TEXT,
                rtt_ms REAL,
                UNIQUE (site, seq)
            )""",
            """CREATE INDEX commands_site ON commands(site, issued_ms)""",
            # The last command seq per site; kept apart from `commands` so it survives pruning.
            """CREATE TABLE command_seqs (site TEXT PRIMARY KEY, seq INTEGER NOT NULL)""",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version

__all__ = ["LATEST_VERSION", "MIGRATIONS", "Migration"]
