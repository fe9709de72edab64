"""What the API needs from the rest of the aggregator, and the FastAPI dependencies that hand it
out.

`ApiServices` is a Protocol: the aggregator's `Services` satisfies it, and tests pass the small
`ApiContext` dataclass. Routes reach it as `request.app.state.services`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from fastapi import HTTPException, Request, status

from aggregator.metrics import AggregatorMetrics
from aggregator.sites import SiteRegistry
from aggregator.storage.base import Storage
from aggregator.storage.types import CommandRecord
from protocols.clock import Clock, parse_time


class CommandSender(Protocol):
    """Seals, publishes and records commands (aggregator.commands); sync or async."""

    def send_command(
        self, site: str, action: str, params: dict[str, Any], lease_s: float, issued_by: str
    ) -> CommandRecord | Awaitable[CommandRecord]: ...

    def wait_ack(self, command_id: str, timeout: float) -> Awaitable[CommandRecord]: ...


class ApiServices(Protocol):
    @property
    def storage(self) -> Storage: ...

    @property
    def metrics(self) -> AggregatorMetrics: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def commands(self) -> CommandSender | None: ...


@dataclass
class ApiContext:
    """A plain ApiServices: for tests and for serving the API without ingest."""

    storage: Storage
    clock: Clock
    metrics: AggregatorMetrics = field(default_factory=AggregatorMetrics)
    commands: CommandSender | None = None
    registry: SiteRegistry | None = None
    keys_changed: Callable[[], None] | None = None


def services(request: Request) -> ApiServices:
    svc: ApiServices = request.app.state.services
    return svc


def registry_of(svc: ApiServices) -> SiteRegistry:
    """The site registry ingest watches (`svc.registry`), so an enrolment, rotation or
    revocation through the API bumps the version ingest rebuilds its keyring on. Without one,
    a registry over the same storage (ingest then sees the change on its next reload)."""
    registry = getattr(svc, "registry", None)
    if isinstance(registry, SiteRegistry):
        return registry
    return SiteRegistry(svc.storage, svc.clock)


def notify_keys_changed(svc: ApiServices) -> None:
    """Call the services' `keys_changed()` hook after a key change, if it has one."""
    hook = getattr(svc, "keys_changed", None)
    if callable(hook):
        hook()


def parse_ms(value: str | None, name: str, default: int) -> int:
    """A time query parameter: Unix milliseconds, or ISO-8601 (naive = UTC); 422 otherwise."""
    if value is None or value == "":
        return default
    text = value.strip()
    try:
        if text.lstrip("-").isdigit():
            return int(text)
        datetime.fromisoformat(text)  # the error message names the bad value below
        return int(parse_time(text) * 1000)
    except ValueError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"'{name}': {value!r} is neither Unix milliseconds nor an ISO-8601 time",
        ) from None


def unprocessable(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=detail)


def not_found(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=detail)


__all__ = [
    "ApiContext",
    "ApiServices",
    "CommandSender",
    "not_found",
    "notify_keys_changed",
    "parse_ms",
    "registry_of",
    "services",
    "unprocessable",
]
