"""Commands: send one by hand (operator) and read a site's command log."""

from __future__ import annotations

import inspect
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status
from starlette.concurrency import run_in_threadpool

from aggregator.api.convert import command_out
from aggregator.api.deps import ApiServices, not_found, services, unprocessable
from aggregator.api.models import CommandIn, CommandOut, CommandPage
from aggregator.auth import Principal, Role, require
from aggregator.errors import AckTimeoutError, CommandError, UnknownSiteError
from aggregator.storage.types import CommandRecord
from protocols.errors import MessageError
from protocols.messages import PARAMS_BY_ACTION, Action

router = APIRouter(tags=["commands"])

Svc = Annotated[ApiServices, Depends(services)]
Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]

MAX_WAIT_S = 30.0
MAX_COMMANDS = 1000


def _check_site(svc: ApiServices, site: str) -> None:
    try:
        svc.storage.get_site(site)
    except UnknownSiteError:
        raise not_found(f"no site {site!r}") from None


def validate_command(body: CommandIn) -> Action:
    """The action of a command body whose params are what `protocols.messages` accepts; 422
    with the reason otherwise."""
    try:
        action = Action(body.action)
    except ValueError:
        known = ", ".join(a.value for a in Action)
        raise unprocessable(f"unknown action {body.action!r} (known: {known})") from None
    try:
        PARAMS_BY_ACTION[action].from_map(body.params)
    except MessageError as exc:
        raise unprocessable(str(exc)) from None
    return action


@router.post(
    "/sites/{site}/commands",
    response_model=CommandOut,
    status_code=status.HTTP_201_CREATED,
    summary="Send a command (operator)",
    responses={
        404: {"description": "unknown site"},
        422: {"description": "unknown action or bad params"},
        503: {"description": "commands cannot be sent now (no broker connection)"},
    },
)
async def send_command(
    site: str,
    body: CommandIn,
    svc: Svc,
    who: Operator,
    wait: Annotated[
        float, Query(ge=0, le=MAX_WAIT_S, description="seconds to wait for the agent's ack")
    ] = 0.0,
) -> CommandOut:
    """Seal and publish a command to a site; the record comes back with its seq and status
    (with `wait`, once the agent has acknowledged it or the wait ran out)."""
    action = validate_command(body)
    await run_in_threadpool(_check_site, svc, site)
    sender = svc.commands
    if sender is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "commands are not available")
    try:
        args = (site, action.value, dict(body.params), body.lease_s, who.name)
        record: CommandRecord
        if inspect.iscoroutinefunction(sender.send_command):
            record = await sender.send_command(*args)
        else:  # storage write and publish: off the event loop
            sent = await run_in_threadpool(sender.send_command, *args)
            record = await sent if inspect.isawaitable(sent) else sent
        if wait > 0:
            try:
                record = await sender.wait_ack(record.id, wait)
            except AckTimeoutError:
                latest = await run_in_threadpool(svc.storage.command, record.id)
                record = latest or record
    except UnknownSiteError:
        raise not_found(f"no site {site!r}") from None
    except CommandError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    return command_out(record)


@router.get("/sites/{site}/commands", response_model=CommandPage, summary="A site's command log")
def command_history(
    site: str,
    svc: Svc,
    _: Viewer,
    limit: Annotated[int, Query(ge=1, le=MAX_COMMANDS)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> CommandPage:
    """Commands newest first, with their ack status, reason and read-back."""
    _check_site(svc, site)
    rows = svc.storage.command_history(site, limit=limit + 1, offset=offset)
    more = len(rows) > limit
    rows = rows[:limit]
    return CommandPage(
        limit=limit,
        offset=offset,
        count=len(rows),
        next_offset=offset + limit if more else None,
        commands=[command_out(c) for c in rows],
    )
