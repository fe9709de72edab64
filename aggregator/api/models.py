"""Request and response bodies of the REST API (they are the OpenAPI schema).

Times are Unix milliseconds (UTC), as on the wire; values are numbers, booleans or null.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aggregator.alarms import AlarmKind
from aggregator.api.views import Mode
from aggregator.auth import Role
from aggregator.storage.types import Severity
from protocols.messages import LEASE_MAX_S

Value = float | int | bool | None


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class Health(_Out):
    status: str = Field(description="'ok' when the database answers")
    version: str
    time_ms: int
    sites: int
    sites_online: int


class KeyPointsOut(_Out):
    load_w: float | None = Field(None, description="telecom DC load (W)")
    grid_import_w: float | None = Field(None, description="grid import (W)")
    soc: float | None = Field(None, description="battery state of charge (%)")
    room_temp_c: float | None = Field(None, description="room temperature (°C)")


class SiteSummary(_Out):
    site: str
    name: str
    region: str
    tz: str
    tariff: str
    enabled: bool
    online: bool
    last_seen_ms: int | None
    key_points: KeyPointsOut
    mode: Mode
    active_alarms: int


class PointOut(_Out):
    point: str
    value: Value
    quality: str = Field(description="good, stale, comm-error, out-of-range, …")
    t_ms: int


class DeviceOut(_Out):
    device: str
    points: list[PointOut]


class KeyOut(_Out):
    kid: str
    site: str
    public_key: str
    added_ms: int
    revoked_ms: int | None
    active: bool


class SiteStateOut(_Out):
    online: bool
    boot: str
    version: str
    devices: dict[str, str] = Field(description="device id -> profile, from the birth message")
    last_seen_ms: int | None
    birth_ms: int | None
    death_ms: int | None


class AlarmOut(_Out):
    id: int
    site: str
    kind: str
    severity: str
    device: str | None
    point: str | None
    message: str
    raised_ms: int
    cleared_ms: int | None
    active: bool


class SiteDetail(SiteSummary):
    state: SiteStateOut
    devices: list[DeviceOut]
    keys: list[KeyOut]
    alarms: list[AlarmOut] = Field(description="the site's active alarms")


class ReadingOut(_Out):
    t_ms: int
    value: Value
    quality: str


class RollupOut(_Out):
    bucket_ms: int = Field(description="start of the bucket")
    n: int
    min: float
    max: float
    mean: float
    first: float
    last: float


class ReadingsPage(_Out):
    site: str
    device: str
    point: str
    from_ms: int
    to_ms: int
    step_s: int | None = Field(description="null: raw readings; else rollups of this step")
    limit: int
    offset: int
    count: int
    next_offset: int | None = Field(description="offset of the next page, null on the last")
    readings: list[ReadingOut] = Field(description="raw readings (step null)")
    rollups: list[RollupOut] = Field(description="rollup buckets (step given)")


class AlarmPage(_Out):
    limit: int
    offset: int
    count: int
    next_offset: int | None
    alarms: list[AlarmOut]


class CommandIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str = Field(description="battery.peak_shave, battery.charge, site.dormant, …")
    params: dict[str, Any] = Field(default_factory=dict)
    lease_s: int = Field(
        900, ge=1, le=LEASE_MAX_S, description="the agent reverts to safe defaults after this"
    )


class CommandOut(_Out):
    id: str
    site: str
    seq: int
    action: str
    params: dict[str, Any]
    issued_ms: int
    expires_ms: int
    lease_s: float
    issued_by: str
    sent_ms: int | None
    status: str = Field(description="pending, sent, applied, rejected, failed, expired")
    ack_ms: int | None
    reason: str | None
    readback: dict[str, Any] | None
    rtt_ms: float | None


class CommandPage(_Out):
    limit: int
    offset: int
    count: int
    next_offset: int | None
    commands: list[CommandOut]


class SiteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site: str = Field(min_length=1, max_length=64)
    public_key: str = Field(description="the site's Ed25519 public key, 64 hex digits")
    name: str = ""
    region: str = ""
    tz: str = "Asia/Shanghai"
    tariff: str = ""


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    public_key: str = Field(description="a new Ed25519 public key, 64 hex digits (rotation)")


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    name: str = Field("", max_length=128)


class TokenOut(_Out):
    id: int
    name: str
    role: str
    created_ms: int
    revoked_ms: int | None
    active: bool


class Me(_Out):
    token_id: int
    name: str
    role: str


class TokenCreated(TokenOut):
    token: str = Field(description="the bearer token; shown this once, stored only hashed")


class Problem(_Out):
    detail: str


__all__ = [
    "AlarmKind",
    "AlarmOut",
    "AlarmPage",
    "CommandIn",
    "CommandOut",
    "CommandPage",
    "DeviceOut",
    "Health",
    "KeyIn",
    "KeyOut",
    "KeyPointsOut",
    "Me",
    "PointOut",
    "Problem",
    "ReadingOut",
    "ReadingsPage",
    "RollupOut",
    "Severity",
    "SiteDetail",
    "SiteIn",
    "SiteStateOut",
    "SiteSummary",
    "TokenCreated",
    "TokenIn",
    "TokenOut",
]
