"""Storage records to response models."""

from __future__ import annotations

from collections.abc import Mapping

from aggregator.api.models import (
    AlarmOut,
    CommandOut,
    DeviceOut,
    KeyOut,
    KeyPointsOut,
    PointOut,
    ReadingOut,
    RollupOut,
    SiteStateOut,
    SiteSummary,
    TokenOut,
)
from aggregator.api.views import KeyPoints, Mode
from aggregator.storage.types import (
    AlarmRecord,
    CommandRecord,
    RollupRow,
    SiteInfo,
    SiteKey,
    SiteState,
    TokenRecord,
)
from protocols.types import Reading


def alarm_out(a: AlarmRecord) -> AlarmOut:
    return AlarmOut(
        id=a.id,
        site=a.site,
        kind=a.kind,
        severity=a.severity,
        device=a.device,
        point=a.point,
        message=a.message,
        raised_ms=a.raised_ms,
        cleared_ms=a.cleared_ms,
        active=a.cleared_ms is None,
    )


def command_out(c: CommandRecord) -> CommandOut:
    return CommandOut(
        id=c.id,
        site=c.site,
        seq=c.seq,
        action=c.action,
        params=c.params,
        issued_ms=c.issued_ms,
        expires_ms=c.expires_ms,
        lease_s=c.lease_s,
        issued_by=c.issued_by,
        sent_ms=c.sent_ms,
        status=c.status,
        ack_ms=c.ack_ms,
        reason=c.reason,
        readback=c.readback,
        rtt_ms=c.rtt_ms,
    )


def key_out(k: SiteKey) -> KeyOut:
    return KeyOut(
        kid=k.kid,
        site=k.site,
        public_key=k.public_key,
        added_ms=k.added_ms,
        revoked_ms=k.revoked_ms,
        active=k.revoked_ms is None,
    )


def token_out(t: TokenRecord) -> TokenOut:
    return TokenOut(
        id=t.id,
        name=t.name,
        role=t.role,
        created_ms=t.created_ms,
        revoked_ms=t.revoked_ms,
        active=t.revoked_ms is None,
    )


def state_out(s: SiteState) -> SiteStateOut:
    return SiteStateOut(
        online=s.online,
        boot=s.boot,
        version=s.version,
        devices=dict(s.devices),
        last_seen_ms=s.last_seen_ms,
        birth_ms=s.birth_ms,
        death_ms=s.death_ms,
    )


def reading_out(r: Reading) -> ReadingOut:
    return ReadingOut(t_ms=r.t, value=r.value, quality=r.quality.label)


def rollup_out(r: RollupRow) -> RollupOut:
    return RollupOut(
        bucket_ms=r.bucket_ms, n=r.n, min=r.min, max=r.max, mean=r.mean, first=r.first, last=r.last
    )


def devices_out(latest: Mapping[tuple[str, str], Reading]) -> list[DeviceOut]:
    by_device: dict[str, list[PointOut]] = {}
    for (device, point), r in sorted(latest.items()):
        by_device.setdefault(device, []).append(
            PointOut(point=point, value=r.value, quality=r.quality.label, t_ms=r.t)
        )
    return [DeviceOut(device=d, points=p) for d, p in by_device.items()]


def summary_out(
    info: SiteInfo, state: SiteState, points: KeyPoints, mode: Mode, active_alarms: int
) -> dict[str, object]:
    """The fields of a SiteSummary (a dict, so SiteDetail can extend it)."""
    return SiteSummary(
        site=info.site,
        name=info.name,
        region=info.region,
        tz=info.tz,
        tariff=info.tariff,
        enabled=info.enabled,
        online=state.online,
        last_seen_ms=state.last_seen_ms,
        key_points=KeyPointsOut(
            load_w=points.load_w,
            grid_import_w=points.grid_import_w,
            soc=points.soc,
            room_temp_c=points.room_temp_c,
        ),
        mode=mode,
        active_alarms=active_alarms,
    ).model_dump()
