"""Alarms: active and history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from aggregator.api.convert import alarm_out
from aggregator.api.deps import ApiServices, parse_ms, services
from aggregator.api.models import AlarmPage
from aggregator.auth import Principal, Role, require
from aggregator.storage.types import AlarmRecord

router = APIRouter(tags=["alarms"])

Svc = Annotated[ApiServices, Depends(services)]
Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]

MAX_ALARMS = 1000


@router.get("/alarms", response_model=AlarmPage, summary="Alarms, active or history")
def list_alarms(
    svc: Svc,
    _: Viewer,
    active: Annotated[
        bool | None, Query(description="true: active only; false: cleared only; unset: all")
    ] = None,
    site: Annotated[str | None, Query(description="one site only")] = None,
    from_: Annotated[str | None, Query(alias="from", description="raised at or after")] = None,
    to: Annotated[str | None, Query(description="raised before")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_ALARMS)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> AlarmPage:
    """Active alarms (oldest first), or the history (newest first), paginated."""
    t0 = parse_ms(from_, "from", 0)
    t1 = parse_ms(to, "to", 2**62)
    storage = svc.storage
    rows: list[AlarmRecord]
    if active:
        found = [a for a in storage.active_alarms(site) if t0 <= a.raised_ms < t1]
        rows = found[offset : offset + limit + 1]
    elif active is None:
        rows = storage.alarm_history(site, t0, t1, limit=limit + 1, offset=offset)
    else:
        # Cleared alarms only: walk the history in pages until this page is full.
        rows, skipped, cursor, page = [], 0, 0, max(limit, 200)
        while len(rows) <= limit:
            chunk = storage.alarm_history(site, t0, t1, limit=page, offset=cursor)
            for a in chunk:
                if a.cleared_ms is None:
                    continue
                if skipped < offset:
                    skipped += 1
                else:
                    rows.append(a)
            if len(chunk) < page:
                break
            cursor += page
    more = len(rows) > limit
    rows = rows[:limit]
    return AlarmPage(
        limit=limit,
        offset=offset,
        count=len(rows),
        next_offset=offset + limit if more else None,
        alarms=[alarm_out(a) for a in rows],
    )
