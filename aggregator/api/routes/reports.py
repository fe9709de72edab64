"""Energy, cost and CO2 reports (viewer): JSON, or CSV with `format=csv`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from aggregator.api.deps import ApiServices, not_found, parse_ms, services, unprocessable
from aggregator.auth import Principal, Role, require
from aggregator.control.context import ControlContext
from aggregator.errors import ConfigError, UnknownSiteError
from aggregator.reports import build_report
from protocols.clock import now_ms

router = APIRouter(tags=["reports"])

Svc = Annotated[ApiServices, Depends(services)]
Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]

DAY_MS = 86_400_000
MAX_RANGE_MS = 400 * DAY_MS


@router.get(
    "/reports",
    summary="Energy, cost and CO2 report for a site, a group or the fleet",
    responses={200: {"content": {"text/csv": {}}, "description": "JSON, or CSV"}},
)
def report(
    svc: Svc,
    _: Viewer,
    from_: Annotated[str | None, Query(alias="from", description="Unix ms or ISO-8601")] = None,
    to: Annotated[str | None, Query(description="Unix ms or ISO-8601; default now")] = None,
    site: str | None = None,
    group: Annotated[str | None, Query(description="region or named group")] = None,
    format: Literal["json", "csv"] = "json",
) -> Any:
    """Grid kWh by tariff period, cost, the no-action baseline, savings (money, kWh, kgCO2 with
    the emission factor named), energy moved from peak, dormant hours, site energy ratio and
    reserve violations, per site and in total. Default range: the last 7 days."""
    if site is not None and group is not None:
        raise unprocessable("give site or group, not both")
    t1 = parse_ms(to, "to", now_ms(svc.clock))
    t0 = parse_ms(from_, "from", t1 - 7 * DAY_MS)
    if t1 <= t0:
        raise unprocessable("'to' must be after 'from'")
    if t1 - t0 > MAX_RANGE_MS:
        raise unprocessable(f"a report covers at most {MAX_RANGE_MS // DAY_MS} days")
    try:
        ctx = ControlContext.for_services(svc)
        rs = build_report(svc.storage, ctx, t0 / 1000, t1 / 1000, site=site, group=group)
    except UnknownSiteError:
        raise not_found(f"no site {site!r}") from None
    except ConfigError as exc:
        raise unprocessable(str(exc)) from None
    if format == "csv":
        name = site or group or "fleet"
        return Response(
            rs.to_csv(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="report-{name}.csv"'},
        )
    return rs.to_json()
