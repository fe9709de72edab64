"""Value types that cross the storage boundary: what ingest hands in and what queries return."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from protocols.types import Reading

SeriesKey = tuple[str, str]
"""(device, point) within one site."""


@dataclass(frozen=True, slots=True)
class LossRecord:
    """Readings an agent dropped from a full outbox, as it reported them (never silent)."""

    t_ms: int  # when the agent reported it
    count: int
    oldest_ms: int | None = None
    newest_ms: int | None = None


@dataclass(frozen=True, slots=True)
class VerifiedBatch:
    """A telemetry batch whose signature, kid, topic and timestamps ingest has checked."""

    site: str
    seq: int
    boot: str
    sent_ms: int
    received_ms: int
    hist: bool
    readings: Sequence[Reading]
    losses: Sequence[LossRecord] = ()


@dataclass(frozen=True, slots=True)
class StoreResult:
    """What one `store_batches` call did. Seqs are (site, seq) pairs."""

    stored: list[tuple[str, int]] = field(default_factory=list)
    duplicates: list[tuple[str, int]] = field(default_factory=list)
    n_readings: int = 0

    @property
    def stored_seqs(self) -> list[tuple[str, int]]:
        return self.stored

    @property
    def duplicate_seqs(self) -> list[tuple[str, int]]:
        return self.duplicates


class RollupRow(NamedTuple):
    """Statistics of one point over one bucket (15 minutes, or a multiple of it).

    `first`/`last` are the values at `first_ms`/`last_ms`: for an energy counter, the energy used
    over a period is the `last` of its final bucket minus the `first` of its first bucket.
    Only readings of good or stale quality with a value count.
    """

    bucket_ms: int
    n: int
    min: float
    max: float
    mean: float
    first: float
    last: float
    first_ms: int
    last_ms: int


@dataclass(frozen=True, slots=True)
class SiteInfo:
    site: str
    name: str = ""
    region: str = ""
    tz: str = "Asia/Shanghai"
    tariff: str = ""
    created_ms: int = 0
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class SiteKey:
    kid: str  # 16 hex digits
    site: str
    public_key: str  # 64 hex digits
    added_ms: int
    revoked_ms: int | None = None

    @property
    def active(self) -> bool:
        return self.revoked_ms is None


@dataclass(frozen=True, slots=True)
class SiteState:
    """A site's presence, from its birth/death messages and the last batch seen."""

    site: str
    online: bool = False
    boot: str = ""
    version: str = ""
    devices: dict[str, str] = field(default_factory=dict)  # device id -> profile name
    last_seen_ms: int | None = None
    birth_ms: int | None = None
    death_ms: int | None = None


class Severity(StrEnum):
    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class AlarmRecord:
    id: int
    site: str
    kind: str
    severity: str
    device: str | None
    point: str | None
    message: str
    raised_ms: int
    cleared_ms: int | None = None

    @property
    def active(self) -> bool:
        return self.cleared_ms is None


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: int
    name: str
    role: str
    token_hash: str
    created_ms: int
    revoked_ms: int | None = None


class CommandStatus(StrEnum):
    """A command's lifecycle: recorded → sent → applied | rejected | failed (or expired)."""

    PENDING = "pending"
    SENT = "sent"
    APPLIED = "applied"
    REJECTED = "rejected"
    FAILED = "failed"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class CommandRecord:
    id: str
    site: str
    seq: int
    action: str
    params: dict[str, Any]
    issued_ms: int
    expires_ms: int
    lease_s: float
    issued_by: str
    sent_ms: int | None = None
    status: str = CommandStatus.PENDING.value
    ack_ms: int | None = None
    reason: str | None = None
    readback: dict[str, Any] | None = None
    rtt_ms: float | None = None


__all__ = [
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
    "StoreResult",
    "TokenRecord",
    "VerifiedBatch",
]
