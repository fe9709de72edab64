"""Health (no auth) and Prometheus metrics (no auth: counters only, no site data)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse

from aggregator.api.deps import ApiServices, services
from aggregator.api.models import Health
from aggregator.errors import StorageError
from aggregator.metrics import CONTENT_TYPE
from protocols.clock import now_ms

router = APIRouter(tags=["health"])
metrics_router = APIRouter(tags=["health"])

Svc = Annotated[ApiServices, Depends(services)]


def _version() -> str:
    try:
        return version("sitewatt")
    except PackageNotFoundError:
        return "unknown"


@router.get(
    "/health",
    response_model=Health,
    summary="Liveness and database check (no auth)",
    responses={503: {"model": Health, "description": "the database does not answer"}},
)
def health(svc: Svc) -> Response | Health:
    try:
        states = svc.storage.site_states()
        sites = len(svc.storage.list_sites())
    except StorageError:
        body = Health(
            status="error", version=_version(), time_ms=now_ms(svc.clock), sites=0, sites_online=0
        )
        return JSONResponse(body.model_dump(), status_code=503)
    online = sum(1 for s in states if s.online)
    svc.metrics.sites_online.set(online)
    return Health(
        status="ok", version=_version(), time_ms=now_ms(svc.clock), sites=sites, sites_online=online
    )


@metrics_router.get(
    "/metrics",
    summary="Prometheus metrics (no auth)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
def metrics(svc: Svc) -> Response:
    """The aggregator's counters in the Prometheus text format. Open to scrapers: it carries
    counts only, no site names or data."""
    return Response(svc.metrics.exposition(), media_type=CONTENT_TYPE)
