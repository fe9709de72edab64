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
    keys_changed: Callable[[], None] | None = None


def services(request: Request) -> ApiServices:
    svc: ApiServices = request.app.state.services
    return svc


def notify_keys_changed(svc: ApiServices) -> None:
    """Tell ingest to rebuild its keyring after an enrolment, rotation or revocation (if it
    offers a `keys_changed()` hook; otherwise it rebuilds on its own schedule)."""
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
    "services",
    "unprocessable",
]
