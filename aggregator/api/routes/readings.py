"""Readings of one point over a time range: raw, or rolled up by a step."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from aggregator.api.convert import reading_out, rollup_out
from aggregator.api.deps import ApiServices, not_found, parse_ms, services, unprocessable
from aggregator.api.models import ReadingsPage
from aggregator.api.views import (
    DEFAULT_LIMIT,
    DEFAULT_RANGE_S,
    MAX_LIMIT,
    MAX_RAW_RANGE_S,
    MAX_ROLLUP_RANGE_S,
    ROLLUP_STEP_S,
    readings_query_problems,
)
from aggregator.auth import Principal, Role, require
from aggregator.errors import UnknownSiteError
from protocols.clock import now_ms

router = APIRouter(tags=["readings"])

Svc = Annotated[ApiServices, Depends(services)]
Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]


@router.get(
    "/sites/{site}/readings",
    response_model=ReadingsPage,
    summary="Readings of one point",
    description=(
        "Raw readings (no `step`) over at most "
        f"{MAX_RAW_RANGE_S // 86_400} days, or rollups (`step` a multiple of {ROLLUP_STEP_S} s) "
        f"over at most {MAX_ROLLUP_RANGE_S // 86_400} days; at most {MAX_LIMIT} rows a page. "
        "`from`/`to` take Unix milliseconds or ISO-8601 (default: the last day). "
        "Limits are answered with 422 and the reason."
    ),
)
def get_readings(
    site: str,
    svc: Svc,
    _: Viewer,
    device: Annotated[str, Query(min_length=1)],
    point: Annotated[str, Query(min_length=1)],
    from_: Annotated[str | None, Query(alias="from")] = None,
    to: Annotated[str | None, Query()] = None,
    step: Annotated[int | None, Query(description="rollup step in seconds")] = None,
    limit: Annotated[int, Query()] = DEFAULT_LIMIT,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ReadingsPage:
    t1 = parse_ms(to, "to", now_ms(svc.clock) + 1)
    t0 = parse_ms(from_, "from", t1 - DEFAULT_RANGE_S * 1000)
    problems = readings_query_problems(t0, t1, step, limit)
    if problems:
        raise unprocessable("; ".join(problems))
    storage = svc.storage
    try:
        storage.get_site(site)
    except UnknownSiteError:
        raise not_found(f"no site {site!r}") from None
    if (device, point) not in set(storage.series(site)):
        raise not_found(f"site {site!r} has no point {point!r} on device {device!r}")
    readings, rollups = [], []
    if step is None:
        readings = storage.readings(site, device, point, t0, t1, None, limit + 1, offset)
        n = len(readings)
        readings = readings[:limit]
    else:
        rollups = storage.rollups(site, device, point, t0, t1, step, limit=limit + 1, offset=offset)
        n = len(rollups)
        rollups = rollups[:limit]
    return ReadingsPage(
        site=site,
        device=device,
        point=point,
        from_ms=t0,
        to_ms=t1,
        step_s=step,
        limit=limit,
        offset=offset,
        count=min(n, limit),
        next_offset=offset + limit if n > limit else None,
        readings=[reading_out(r) for r in readings],
        rollups=[rollup_out(r) for r in rollups],
    )
