"""What the SQL backends share: the queries and the Python around them, written once.

Statements here use `?` placeholders; `_q` turns one into the backend's own style (psycopg
wants `%s`). A backend provides connections and transactions (`_read`, `_write`), how a
constraint failure looks, and what really differs by dialect or design: the ingest hot path,
rollup flushing and repair, the newest-reading query, retention, migrations and the command seq.
Writes that create a row read its id back with `RETURNING` (SQLite has it since 3.35).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Protocol, overload

from aggregator.errors import SiteExistsError, SiteKeyError, StorageError, UnknownSiteError
from aggregator.storage import rows as R
from aggregator.storage.rollup import BUCKET_MS, bucket_of, step_of, view
from aggregator.storage.types import (
    AlarmRecord,
    CommandRecord,
    CommandStatus,
    LossRecord,
    RollupRow,
    SeriesKey,
    SiteInfo,
    SiteKey,
    SiteState,
    TokenRecord,
)
from protocols.types import Reading

_FOREVER = 2**62  # the open end of a time range
_SITE_FIELDS = frozenset({"name", "region", "tz", "tariff", "enabled"})


class Cursor(Protocol):
    """What the shared code uses of a DB-API cursor (sqlite3's and psycopg's both fit)."""

    @property
    def rowcount(self) -> int: ...

    def fetchall(self) -> list[Any]: ...


class Conn(Protocol):
    """What the shared code uses of a connection inside `_write`."""

    def execute(self, sql: str, params: Sequence[Any], /) -> Cursor: ...


class SqlStorage(ABC):
    """The `Storage` methods whose logic and SQL are the same on every backend."""

    # `greatest` in PostgreSQL, the two-argument `max` in SQLite.
    _GREATEST: ClassVar[str]
    # (site, device, point) -> series id; only ids of committed rows enter it.
    _series: dict[str, dict[SeriesKey, int]]
    _series_lock: threading.Lock

    # ---- hooks -------------------------------------------------------------------------------

    @abstractmethod
    def _q(self, sql: str) -> str:
        """`sql`, written with `?` placeholders, in the backend's placeholder style."""

    @abstractmethod
    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of one query (in the backend's placeholder style)."""

    @abstractmethod
    def _write(self) -> AbstractContextManager[Conn]:
        """A write transaction, committed on leaving; errors raised as StorageError."""

    @staticmethod
    @abstractmethod
    def _duplicate(exc: StorageError) -> bool:
        """Whether a failed write broke a unique constraint."""

    @staticmethod
    def _orphan(exc: StorageError) -> bool:
        """Whether a failed write referred to a missing row (a foreign key)."""
        return False

    @abstractmethod
    def _unflushed(self, sid: int, start: int, end: int) -> dict[int, RollupRow]:
        """This process's rollups of series `sid` not written yet, bucket start -> row, for
        buckets in [start, end)."""

    @abstractmethod
    def _next_command_seq(self, c: Conn, site: str) -> int:
        """Take `site`'s next command seq in the transaction of `c`."""

    # ---- helpers -----------------------------------------------------------------------------

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._read(self._q(sql), params)

    def _exec(self, c: Conn, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return c.execute(self._q(sql), params)

    def _latest_of(self, sql: str, site: str) -> dict[SeriesKey, Reading]:
        """Run a backend's newest-reading query (device, point, t, value, quality per row)."""
        out: dict[SeriesKey, Reading] = {}
        for device, point, t, value, quality in self._rows(sql, (site,)):
            v, q = R.decode(value, quality)
            out[(device, point)] = Reading(t, device, point, v, q)
        return out

    # ---- schema and meta ---------------------------------------------------------------------

    def schema_version(self) -> int:
        return int(self._rows("SELECT coalesce(max(version), 0) FROM schema_version")[0][0])

    def get_meta(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as c:
            self._exec(
                c,
                "INSERT INTO meta VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # ---- queries over readings ---------------------------------------------------------------

    def series(self, site: str) -> list[SeriesKey]:
        """Every (device, point) of `site` that has ever reported, sorted."""
        rows = self._rows("SELECT device, point FROM series WHERE site = ? ORDER BY 1, 2", (site,))
        return [(d, p) for d, p in rows]

    def _series_id(self, site: str, device: str, point: str) -> int | None:
        with self._series_lock:
            sid = self._series.get(site, {}).get((device, point))
        if sid is not None:
            return sid
        rows = self._rows(
            "SELECT id FROM series WHERE site = ? AND device = ? AND point = ?",
            (site, device, point),
        )
        return int(rows[0][0]) if rows else None

    @overload
    def readings(
        self,
        site: str,
        device: str,
        point: str,
        t0: int,
        t1: int,
        step_s: None = None,
        limit: int = ...,
        offset: int = ...,
    ) -> list[Reading]: ...

    @overload
    def readings(
        self,
        site: str,
        device: str,
        point: str,
        t0: int,
        t1: int,
        step_s: int,
        limit: int = ...,
        offset: int = ...,
    ) -> list[RollupRow]: ...

    def readings(
        self,
        site: str,
        device: str,
        point: str,
        t0: int,
        t1: int,
        step_s: int | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> list[Reading] | list[RollupRow]:
        """Readings of one point with t0 <= t < t1 (ms), oldest first.

        `step_s=None` gives raw readings; a step (a multiple of 900 s) gives rollup rows of that
        step from the 15-minute rollups, which outlive the raw retention.
        """
        if step_s is not None:
            return self.rollups(site, device, point, t0, t1, step_s, limit=limit, offset=offset)
        sid = self._series_id(site, device, point)
        if sid is None:
            return []
        rows = self._rows(
            "SELECT t_ms, value, quality FROM readings WHERE series_id = ? AND t_ms >= ? "
            "AND t_ms < ? ORDER BY t_ms LIMIT ? OFFSET ?",
            (sid, t0, t1, limit, offset),
        )
        out: list[Reading] = []
        for t, value, quality in rows:
            v, q = R.decode(value, quality)
            out.append(Reading(t, device, point, v, q))
        return out

    def rollups(
        self,
        site: str,
        device: str,
        point: str,
        t0: int,
        t1: int,
        step_s: int = BUCKET_MS // 1000,
        *,
        limit: int = 1000,
        offset: int = 0,
    ) -> list[RollupRow]:
        """Rollup rows of one point for buckets starting in [t0, t1), at `step_s` (k × 900 s).
        This process's unflushed rollups are merged in, so queries see every reading it
        stored; another process's appear once it flushes them."""
        step_ms = step_of(step_s)
        sid = self._series_id(site, device, point)
        if sid is None:
            return []
        start = bucket_of(t0, step_ms)
        rows = self._rows(
            'SELECT bucket_ms, n, "min", "max", mean, "first", "last", first_ms, last_ms '
            "FROM rollups WHERE series_id = ? AND bucket_ms >= ? AND bucket_ms < ? "
            "ORDER BY bucket_ms",
            (sid, start, t1),
        )
        pending = self._unflushed(sid, start, t1)
        return view(map(RollupRow._make, rows), pending, t0, step_ms, limit=limit, offset=offset)

    def losses(self, site: str, t0: int = 0, t1: int | None = None) -> list[LossRecord]:
        rows = self._rows(
            "SELECT t_ms, count, oldest_ms, newest_ms FROM losses WHERE site = ? "
            "AND t_ms >= ? AND t_ms < ? ORDER BY t_ms, id",
            (site, t0, t1 if t1 is not None else _FOREVER),
        )
        return [LossRecord(*r) for r in rows]

    def batch_count(self, site: str | None = None) -> int:
        if site is None:
            return int(self._rows("SELECT count(*) FROM batches")[0][0])
        return int(self._rows("SELECT count(*) FROM batches WHERE site = ?", (site,))[0][0])

    def reading_count(self, site: str | None = None) -> int:
        if site is None:
            return int(self._rows("SELECT count(*) FROM readings")[0][0])
        return int(
            self._rows(
                "SELECT count(*) FROM readings WHERE series_id IN "
                "(SELECT id FROM series WHERE site = ?)",
                (site,),
            )[0][0]
        )

    def batch_seqs(self, site: str) -> list[int]:
        return [int(r[0]) for r in self._rows("SELECT seq FROM batches WHERE site = ?", (site,))]

    # ---- sites and keys ----------------------------------------------------------------------

    def add_site(self, info: SiteInfo) -> SiteInfo:
        try:
            with self._write() as c:
                self._exec(
                    c,
                    "INSERT INTO sites VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (info.site, info.name, info.region, info.tz, info.tariff, info.created_ms,
                     bool(info.enabled)),
                )  # fmt: skip
        except StorageError as exc:
            if self._duplicate(exc):
                raise SiteExistsError(f"site {info.site!r} is already enrolled") from exc
            raise
        return info

    def update_site(self, site: str, **fields: Any) -> SiteInfo:
        """Change some of name, region, tz, tariff, enabled."""
        bad = set(fields) - _SITE_FIELDS
        if bad:
            raise ValueError(f"cannot update {sorted(bad)}")
        if fields:
            # the names are the fixed ones above, never the caller's text
            sets = ", ".join(f"{k} = ?" for k in fields)
            values = [bool(v) if k == "enabled" else v for k, v in fields.items()]
            with self._write() as c:
                cur = self._exec(c, f"UPDATE sites SET {sets} WHERE site = ?", (*values, site))
                if cur.rowcount == 0:
                    raise UnknownSiteError(f"no site {site!r}")
        return self.get_site(site)

    def get_site(self, site: str) -> SiteInfo:
        rows = self._rows("SELECT * FROM sites WHERE site = ?", (site,))
        if not rows:
            raise UnknownSiteError(f"no site {site!r}")
        return R.site_info(rows[0])

    def list_sites(self) -> list[SiteInfo]:
        return [R.site_info(r) for r in self._rows("SELECT * FROM sites ORDER BY site")]

    def add_key(self, site: str, public_key: str, kid: str, added_ms: int) -> SiteKey:
        """Enrol a public key (hex) for `site`; SiteKeyError if the key is already enrolled."""
        self.get_site(site)
        try:
            with self._write() as c:
                self._exec(
                    c,
                    "INSERT INTO site_keys VALUES (?, ?, ?, ?, NULL)",
                    (kid, site, public_key, added_ms),
                )
        except StorageError as exc:
            if self._duplicate(exc):
                raise SiteKeyError(f"key {kid} is already enrolled") from exc
            if self._orphan(exc):
                raise UnknownSiteError(f"no site {site!r}") from exc
            raise
        return SiteKey(kid, site, public_key, added_ms)

    def revoke_key(self, kid: str, revoked_ms: int) -> SiteKey:
        """Revoke a key (idempotent: an already revoked key keeps its first revocation time)."""
        with self._write() as c:
            rows = self._exec(
                c,
                "UPDATE site_keys SET revoked_ms = coalesce(revoked_ms, ?) WHERE kid = ? "
                "RETURNING *",
                (revoked_ms, kid),
            ).fetchall()
        if not rows:
            raise SiteKeyError(f"no key {kid}")
        return SiteKey(*rows[0])

    def get_key(self, kid: str) -> SiteKey | None:
        rows = self._rows("SELECT * FROM site_keys WHERE kid = ?", (kid,))
        return SiteKey(*rows[0]) if rows else None

    def site_keys(self, site: str | None = None) -> list[SiteKey]:
        """Every key (revoked ones too) of `site`, or of all sites, oldest first."""
        if site is None:
            rows = self._rows("SELECT * FROM site_keys ORDER BY site, added_ms, kid")
        else:
            rows = self._rows(
                "SELECT * FROM site_keys WHERE site = ? ORDER BY added_ms, kid", (site,)
            )
        return [SiteKey(*r) for r in rows]

    # ---- site state --------------------------------------------------------------------------

    def site_state(self, site: str) -> SiteState:
        rows = self._rows("SELECT * FROM site_state WHERE site = ?", (site,))
        return R.site_state(rows[0]) if rows else SiteState(site)

    def site_states(self) -> list[SiteState]:
        return [R.site_state(r) for r in self._rows("SELECT * FROM site_state ORDER BY site")]

    def put_site_state(self, state: SiteState) -> None:
        """Write a site's presence (birth/death fields); last_seen_ms only ever grows."""
        with self._write() as c:
            self._exec(
                c,
                "INSERT INTO site_state VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (site) DO UPDATE SET online = excluded.online, "
                "boot = excluded.boot, version = excluded.version, devices = excluded.devices, "
                "birth_ms = excluded.birth_ms, death_ms = excluded.death_ms, last_seen_ms = "
                f"{self._GREATEST}(coalesce(site_state.last_seen_ms, 0), "
                "coalesce(excluded.last_seen_ms, 0))",
                (state.site, bool(state.online), state.boot, state.version,
                 R.dump_json(dict(state.devices)), state.last_seen_ms, state.birth_ms,
                 state.death_ms),
            )  # fmt: skip

    # ---- alarms ------------------------------------------------------------------------------

    def add_alarm(
        self,
        site: str,
        kind: str,
        severity: str,
        message: str,
        raised_ms: int,
        *,
        device: str | None = None,
        point: str | None = None,
    ) -> AlarmRecord:
        with self._write() as c:
            rows = self._exec(
                c,
                "INSERT INTO alarms (site, kind, severity, device, point, message, raised_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (site, kind, severity, device, point, message, raised_ms),
            ).fetchall()
        alarm_id = int(rows[0][0])
        return AlarmRecord(alarm_id, site, kind, severity, device, point, message, raised_ms)

    def clear_alarm(self, alarm_id: int, cleared_ms: int) -> AlarmRecord | None:
        """Clear an active alarm; None if there is no such active alarm."""
        with self._write() as c:
            rows = self._exec(
                c,
                "UPDATE alarms SET cleared_ms = ? WHERE id = ? AND cleared_ms IS NULL RETURNING *",
                (cleared_ms, alarm_id),
            ).fetchall()
        return AlarmRecord(*rows[0]) if rows else None

    def active_alarms(self, site: str | None = None) -> list[AlarmRecord]:
        if site is None:
            rows = self._rows(
                "SELECT * FROM alarms WHERE cleared_ms IS NULL ORDER BY raised_ms, id"
            )
        else:
            rows = self._rows(
                "SELECT * FROM alarms WHERE cleared_ms IS NULL AND site = ? ORDER BY raised_ms, id",
                (site,),
            )
        return [AlarmRecord(*r) for r in rows]

    def alarm_history(
        self,
        site: str | None = None,
        t0: int | None = None,
        t1: int | None = None,
        *,
        limit: int = 100,
        offset: int = 0,
    ) -> list[AlarmRecord]:
        """Alarms raised in [t0, t1), newest first."""
        query = "SELECT * FROM alarms WHERE raised_ms >= ? AND raised_ms < ?"
        params: list[Any] = [t0 if t0 is not None else 0, t1 if t1 is not None else _FOREVER]
        if site is not None:
            query += " AND site = ?"
            params.append(site)
        rows = self._rows(
            query + " ORDER BY raised_ms DESC, id DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [AlarmRecord(*r) for r in rows]

    # ---- tokens ------------------------------------------------------------------------------

    def add_token(self, name: str, role: str, token_hash: str, created_ms: int) -> TokenRecord:
        with self._write() as c:
            rows = self._exec(
                c,
                "INSERT INTO tokens (name, role, token_hash, created_ms) "
                "VALUES (?, ?, ?, ?) RETURNING id",
                (name, role, token_hash, created_ms),
            ).fetchall()
        return TokenRecord(int(rows[0][0]), name, role, token_hash, created_ms)

    def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        rows = self._rows("SELECT * FROM tokens WHERE token_hash = ?", (token_hash,))
        return TokenRecord(*rows[0]) if rows else None

    def list_tokens(self) -> list[TokenRecord]:
        return [TokenRecord(*r) for r in self._rows("SELECT * FROM tokens ORDER BY id")]

    def revoke_token(self, token_id: int, revoked_ms: int) -> bool:
        """Revoke a token; False if there is no such token or it was already revoked."""
        with self._write() as c:
            cur = self._exec(
                c,
                "UPDATE tokens SET revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL",
                (revoked_ms, token_id),
            )
            return cur.rowcount > 0

    # ---- commands ----------------------------------------------------------------------------

    def new_command(
        self,
        *,
        command_id: str,
        site: str,
        action: str,
        params: dict[str, Any],
        issued_ms: int,
        expires_ms: int,
        lease_s: float,
        issued_by: str,
    ) -> CommandRecord:
        """Record a command, giving it the site's next seq (persisted, strictly increasing)."""
        with self._write() as c:
            seq = self._next_command_seq(c, site)
            self._exec(
                c,
                "INSERT INTO commands (id, site, seq, action, params, issued_ms, expires_ms, "
                "lease_s, issued_by, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (command_id, site, seq, action, R.dump_json(params), issued_ms, expires_ms,
                 lease_s, issued_by, CommandStatus.PENDING.value),
            )  # fmt: skip
        return CommandRecord(
            command_id, site, seq, action, dict(params), issued_ms, expires_ms, lease_s, issued_by
        )

    def mark_command_sent(self, command_id: str, sent_ms: int) -> None:
        with self._write() as c:
            self._exec(
                c,
                "UPDATE commands SET sent_ms = ?, status = ? WHERE id = ? AND status = ?",
                (sent_ms, CommandStatus.SENT.value, command_id, CommandStatus.PENDING.value),
            )

    def record_ack(
        self,
        command_id: str,
        *,
        status: str,
        ack_ms: int,
        reason: str | None = None,
        readback: dict[str, Any] | None = None,
        rtt_ms: float | None = None,
    ) -> CommandRecord | None:
        """Store an agent's outcome for a command; None if the command is unknown. The first
        outcome stands: a redelivered ack does not change it."""
        with self._write() as c:
            self._exec(
                c,
                "UPDATE commands SET status = ?, ack_ms = ?, reason = ?, readback = ?, "
                "rtt_ms = ? WHERE id = ? AND ack_ms IS NULL",
                (status, ack_ms, reason, None if readback is None else R.dump_json(readback),
                 rtt_ms, command_id),
            )  # fmt: skip
        return self.command(command_id)

    def command(self, command_id: str) -> CommandRecord | None:
        rows = self._rows("SELECT * FROM commands WHERE id = ?", (command_id,))
        return R.command(rows[0]) if rows else None

    def command_history(
        self, site: str | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[CommandRecord]:
        """Commands newest first."""
        if site is None:
            rows = self._rows(
                "SELECT * FROM commands ORDER BY issued_ms DESC, seq DESC LIMIT ? OFFSET ?",
                (limit, offset),
            )
        else:
            rows = self._rows(
                "SELECT * FROM commands WHERE site = ? ORDER BY seq DESC LIMIT ? OFFSET ?",
                (site, limit, offset),
            )
        return [R.command(r) for r in rows]


__all__ = ["Conn", "Cursor", "SqlStorage"]
