"""The FastAPI application factory.

`create_app(services)` builds one app around one aggregator's services: the REST API under
`/api` (OpenAPI at `/api/openapi.json`, docs at `/api/docs`), Prometheus at `/metrics`, and the
hooks the dashboard (a later issue) will use: static files under `/static` and Jinja2 templates
in `app.state.templates`.

Errors from the aggregator map to HTTP at this boundary: an unknown site is 404, a site or key
conflict 409, a malformed key 422, commands that cannot be sent 503, a storage failure 503.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from aggregator.api.deps import ApiServices
from aggregator.api.routes import (
    alarms,
    commands,
    control,
    health,
    readings,
    reports,
    sites,
    tokens,
)
from aggregator.dashboard import mount_dashboard
from aggregator.errors import (
    CommandError,
    SiteError,
    SiteExistsError,
    SiteKeyError,
    StorageError,
    UnknownSiteError,
)

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
TEMPLATES_DIR = HERE / "templates"
API_PREFIX = "/api"


def _problem(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


async def _site_error(_: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, UnknownSiteError):
        return _problem(404, str(exc))
    if isinstance(exc, SiteExistsError | SiteKeyError):
        return _problem(409, str(exc))
    return _problem(422, str(exc))


async def _command_error(_: Request, exc: Exception) -> JSONResponse:
    return _problem(503, str(exc))


async def _storage_error(_: Request, exc: Exception) -> JSONResponse:
    log.error("storage error answering a request: %s", exc)
    return _problem(503, "the database is not available")


def create_app(
    services: ApiServices,
    *,
    static_dir: Path | None = STATIC_DIR,
    templates_dir: Path | None = TEMPLATES_DIR,
) -> FastAPI:
    """The aggregator's HTTP app around `services` (see `aggregator.api.deps.ApiServices`)."""
    app = FastAPI(
        title="sitewatt aggregator",
        summary="Fleet, readings, alarms and commands of telecom base-station sites.",
        description=(
            "Bearer tokens (`sitewatt-aggregator tokens create --role R`) with roles viewer < "
            "operator < admin: viewers read, operators also send commands, admins also manage "
            "sites, keys and tokens. `/api/health` and `/metrics` need no token. Times are Unix "
            "milliseconds (UTC)."
        ),
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.services = services
    for module in (health, sites, readings, alarms, commands, tokens, control, reports):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(health.metrics_router)
    app.add_exception_handler(SiteError, _site_error)
    app.add_exception_handler(CommandError, _command_error)
    app.add_exception_handler(StorageError, _storage_error)
    if static_dir is not None and static_dir.is_dir():
        app.mount("/static", StaticFiles(directory=static_dir), name="static")
    app.state.templates = (
        Jinja2Templates(directory=templates_dir)
        if templates_dir is not None and templates_dir.is_dir()
        else None
    )
    mount_dashboard(app)  # the web dashboard: pages under /ui/, `/` redirects there
    return app


__all__ = ["API_PREFIX", "STATIC_DIR", "TEMPLATES_DIR", "create_app"]
