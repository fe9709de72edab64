"""The dashboard's HTTP side: its pages, its static files, and the little data the REST API does
not already give (the chart bands).

The pages are static shells: the browser holds the bearer token (sessionStorage) and fetches
everything from the REST API with it, so the pages themselves carry no data and need no auth.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.routing import Match

from aggregator.auth import Principal, Role, require
from aggregator.dashboard.bands import dormant_windows, tariff_bands
from aggregator.errors import UnknownSiteError
from protocols.clock import Clock, now_ms
from protocols.control.errors import ControlError
from protocols.control.tariff import Tariff, load_tariffs

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
TEMPLATES_DIR = HERE / "templates"
UI_PREFIX = "/ui"
DEFAULT_TARIFF_DIR = HERE.parents[1] / "config" / "tariffs"
"""The tariffs shipped in the repository, used when the config names no directory."""

MAX_BAND_RANGE_MS = 400 * 86_400_000
MAX_COMMANDS_FOR_BANDS = 1000

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]

PAGES = {
    "fleet": ("fleet.html", "Fleet"),
    "alarms": ("alarms.html", "Alarms"),
    "reports": ("reports.html", "Reports"),
    "login": ("login.html", "Sign in"),
}


class TariffBook:
    """The tariffs by name, read once from a directory on first use (thread-safe)."""

    def __init__(self, directory: Path | None) -> None:
        self._dir = directory
        self._tariffs: dict[str, Tariff] | None = None
        self._lock = threading.Lock()

    def get(self, name: str) -> Tariff | None:
        with self._lock:
            if self._tariffs is None:
                self._tariffs = self._load()
            return self._tariffs.get(name)

    def _load(self) -> dict[str, Tariff]:
        if self._dir is None or not self._dir.is_dir():
            return {}
        try:
            return load_tariffs(self._dir)
        except ControlError as exc:
            log.error("tariffs in %s not loaded, charts show no tariff bands: %s", self._dir, exc)
            return {}


def _tariff_dir(services: Any, explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit
    control = getattr(getattr(services, "config", None), "control", None)
    configured = getattr(control, "tariffs_dir", None) or getattr(control, "tariff_dir", None)
    if configured:
        return Path(configured)
    return DEFAULT_TARIFF_DIR if DEFAULT_TARIFF_DIR.is_dir() else None


def _page(templates: Jinja2Templates, request: Request, page: str, **extra: object) -> Response:
    name, title = PAGES[page] if page in PAGES else (f"{page}.html", page.title())
    response = templates.TemplateResponse(
        request, name, {"page": page, "title": title, "ui": UI_PREFIX, **extra}
    )
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def dashboard_router(tariffs: TariffBook) -> APIRouter:
    """The page routes and the chart-band data route."""
    templates = Jinja2Templates(directory=TEMPLATES_DIR)
    router = APIRouter(include_in_schema=False)

    @router.get(UI_PREFIX)
    def ui_root() -> RedirectResponse:
        return RedirectResponse(f"{UI_PREFIX}/", status.HTTP_308_PERMANENT_REDIRECT)

    @router.get(f"{UI_PREFIX}/")
    def fleet(request: Request) -> Response:
        return _page(templates, request, "fleet")

    @router.get(f"{UI_PREFIX}/login")
    def login(request: Request) -> Response:
        return _page(templates, request, "login")

    @router.get(f"{UI_PREFIX}/alarms")
    def alarms(request: Request) -> Response:
        return _page(templates, request, "alarms")

    @router.get(f"{UI_PREFIX}/reports")
    def reports(request: Request) -> Response:
        return _page(templates, request, "reports")

    @router.get(f"{UI_PREFIX}/sites/{{site}}")
    def site(request: Request, site: str) -> Response:
        return _page(templates, request, "site", site=site, title=f"Site {site}")

    @router.get(f"{UI_PREFIX}/data/sites/{{site}}/bands", include_in_schema=True)
    def bands(
        request: Request,
        site: str,
        _: Viewer,
        from_: Annotated[int, Query(alias="from", description="Unix ms")],
        to: Annotated[int, Query(description="Unix ms")],
    ) -> dict[str, object]:
        """Tariff periods (from the site's tariff) and dormant windows (from its applied
        commands) over [from, to), for shading the site charts."""
        if to <= from_ or to - from_ > MAX_BAND_RANGE_MS:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail="'to' must be after 'from', at most 400 days later",
            )
        services = request.app.state.services
        storage = services.storage
        try:
            info = storage.get_site(site)
        except UnknownSiteError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no site {site!r}") from None
        clock: Clock | None = getattr(services, "clock", None)
        now = now_ms(clock) if clock is not None else to
        tariff = tariffs.get(info.tariff) if info.tariff else None
        commands = storage.command_history(site, limit=MAX_COMMANDS_FOR_BANDS, offset=0)
        return {
            "site": site,
            "from_ms": from_,
            "to_ms": to,
            "now_ms": now,
            "tz": info.tz,
            "tariff": info.tariff or None,
            "tariff_known": tariff is not None,
            "currency": tariff.currency if tariff is not None else None,
            "tariff_bands": [b.to_json() for b in tariff_bands(tariff, from_, to)]
            if tariff is not None
            else [],
            "dormant": [b.to_json() for b in dormant_windows(commands, from_, to, now)],
        }

    return router


def _serves(app: FastAPI, path: str) -> bool:
    """Whether some route of the app already answers GET `path`."""
    scope = {"type": "http", "path": path, "method": "GET", "root_path": "", "headers": []}
    return any(r.matches(scope)[0] is Match.FULL for r in app.router.routes)


def mount_dashboard(app: FastAPI, *, tariff_dir: Path | None = None) -> None:
    """Add the dashboard to an aggregator app built by `aggregator.api.create_app`.

    Pages live under `/ui/`, their files under `/ui/static/`; `/` redirects to `/ui/` unless the
    app already answers it. The pages learn the caller's role from the API's `GET /api/me`.
    """
    services = getattr(app.state, "services", None)
    tariffs = TariffBook(_tariff_dir(services, tariff_dir))
    app.state.dashboard_tariffs = tariffs
    app.include_router(dashboard_router(tariffs))
    app.mount(f"{UI_PREFIX}/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    if not _serves(app, "/"):

        @app.get("/", include_in_schema=False)
        def root() -> RedirectResponse:
            return RedirectResponse(f"{UI_PREFIX}/", status.HTTP_307_TEMPORARY_REDIRECT)


__all__ = [
    "DEFAULT_TARIFF_DIR",
    "STATIC_DIR",
    "TEMPLATES_DIR",
    "UI_PREFIX",
    "TariffBook",
    "dashboard_router",
    "mount_dashboard",
]
