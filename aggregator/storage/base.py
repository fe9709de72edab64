"""The storage interface every backend implements (SQLite now, PostgreSQL for scale-out).

Methods are synchronous: ingest calls them from its worker thread, the API from a thread pool.
A backend must make `store_batches` atomic (all of a group or nothing) and must never report a
seq as stored before it is durable, because ingest acknowledges and receipts on its word.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, overload, runtime_checkable

from aggregator.storage.types import (
    AlarmRecord,
    CommandRecord,
    LossRecord,
    RollupRow,
    SeriesKey,
    SiteInfo,
    SiteKey,
    SiteState,
    StoreResult,
    TokenRecord,
    VerifiedBatch,
)
from protocols.types import Reading


@runtime_checkable
class Storage(Protocol):
    """Everything the aggregator keeps. Times are Unix milliseconds."""

    raw_retention_ms: int

    def close(self) -> None: ...

    def schema_version(self) -> int: ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    # ingest and queries over readings
    def store_batches(self, batches: Sequence[VerifiedBatch]) -> StoreResult: ...

    def latest(self, site: str) -> dict[SeriesKey, Reading]: ...

    def series(self, site: str) -> list[SeriesKey]: ...

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

    def rollups(
        self,
        site: str,
        device: str,
        point: str,
        t0: int,
        t1: int,
        step_s: int = ...,
        *,
        limit: int = ...,
        offset: int = ...,
    ) -> list[RollupRow]: ...

    def losses(self, site: str, t0: int = ..., t1: int | None = ...) -> list[LossRecord]: ...

    def batch_count(self, site: str | None = ...) -> int: ...

    def reading_count(self, site: str | None = ...) -> int: ...

    def batch_seqs(self, site: str) -> list[int]: ...

    def flush_rollups(self) -> None: ...

    def apply_retention(self, now_ms: int) -> dict[str, int]: ...

    # sites and keys
    def add_site(self, info: SiteInfo) -> SiteInfo: ...

    def update_site(self, site: str, **fields: Any) -> SiteInfo: ...

    def get_site(self, site: str) -> SiteInfo: ...

    def list_sites(self) -> list[SiteInfo]: ...

    def add_key(self, site: str, public_key: str, kid: str, added_ms: int) -> SiteKey: ...

    def revoke_key(self, kid: str, revoked_ms: int) -> SiteKey: ...

    def get_key(self, kid: str) -> SiteKey | None: ...

    def site_keys(self, site: str | None = ...) -> list[SiteKey]: ...

    # presence
    def site_state(self, site: str) -> SiteState: ...

    def site_states(self) -> list[SiteState]: ...

    def put_site_state(self, state: SiteState) -> None: ...

    # alarms
    def add_alarm(
        self,
        site: str,
        kind: str,
        severity: str,
        message: str,
        raised_ms: int,
        *,
        device: str | None = ...,
        point: str | None = ...,
    ) -> AlarmRecord: ...

    def clear_alarm(self, alarm_id: int, cleared_ms: int) -> AlarmRecord | None: ...

    def active_alarms(self, site: str | None = ...) -> list[AlarmRecord]: ...

    def alarm_history(
        self,
        site: str | None = ...,
        t0: int | None = ...,
        t1: int | None = ...,
        *,
        limit: int = ...,
        offset: int = ...,
    ) -> list[AlarmRecord]: ...

    # tokens
    def add_token(self, name: str, role: str, token_hash: str, created_ms: int) -> TokenRecord: ...

    def token_by_hash(self, token_hash: str) -> TokenRecord | None: ...

    def list_tokens(self) -> list[TokenRecord]: ...

    def revoke_token(self, token_id: int, revoked_ms: int) -> bool: ...

    # commands
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
    ) -> CommandRecord: ...

    def mark_command_sent(self, command_id: str, sent_ms: int) -> None: ...

    def record_ack(
        self,
        command_id: str,
        *,
        status: str,
        ack_ms: int,
        reason: str | None = ...,
        readback: dict[str, Any] | None = ...,
        rtt_ms: float | None = ...,
    ) -> CommandRecord | None: ...

    def command(self, command_id: str) -> CommandRecord | None: ...

    def command_history(
        self, site: str | None = ..., *, limit: int = ..., offset: int = ...
    ) -> list[CommandRecord]: ...


__all__ = ["Storage"]
