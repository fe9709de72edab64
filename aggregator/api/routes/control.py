"""Control: policies per site/group/fleet (files + operator overrides), demand-response events,
and the loop's last round."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, status
from pydantic import BaseModel, Field

from aggregator.api.deps import ApiServices, not_found, parse_ms, services, unprocessable
from aggregator.auth import Principal, Role, require
from aggregator.control.context import ControlContext
from aggregator.control.events import DrEvent, DrEventError, DrStore, UnknownEventError, new_event
from aggregator.control.policies import (
    PolicyBook,
    PolicyLayer,
    ScopeKind,
    layer_from_mapping,
    save_override,
)
from aggregator.errors import ConfigError, UnknownSiteError
from protocols.clock import now_ms

router = APIRouter(tags=["control"])

Svc = Annotated[ApiServices, Depends(services)]
Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]


class LayerOut(BaseModel):
    scope: str
    source: str
    from_api: bool
    sites: list[str]
    policy: dict[str, Any]


def _layer_out(layer: PolicyLayer) -> LayerOut:
    return LayerOut(
        scope=layer.scope,
        source=layer.source,
        from_api=layer.from_api,
        sites=list(layer.sites),
        policy=dict(layer.data),
    )


@router.get("/policies", response_model=list[LayerOut], summary="Policy layers in force")
def list_policies(svc: Svc, _: Viewer) -> list[LayerOut]:
    """Every layer (policy files, then the operator's overrides), in the order they apply."""
    ctx = ControlContext.for_services(svc)
    return [_layer_out(x) for x in ctx.book.layers]


@router.get("/policies/sites/{site}", summary="A site's resolved policy")
def site_policy(site: str, svc: Svc, _: Viewer) -> dict[str, Any]:
    """The policy the loop applies to `site`: its layers merged (default, groups, site)."""
    try:
        info = svc.storage.get_site(site)
    except UnknownSiteError:
        raise not_found(f"no site {site!r}") from None
    ctx = ControlContext.for_services(svc)
    try:
        policy = ctx.book.resolve(info)
    except ConfigError as exc:
        raise unprocessable(str(exc)) from None
    return {
        "site": site,
        "layers": [x.scope for x in ctx.book.layers_for(info)],
        "policy": policy.model_dump(mode="json"),
    }


PolicyBody = Annotated[
    dict[str, Any],
    Body(
        description="A partial policy (same keys as a policy file, without [scope]); a group "
        "may list its member sites under `sites`.",
        examples=[{"peak_shaving": {"backup_hours": 4}, "dormant": {"bounds": "21:00-09:00"}}],
    ),
]


def _put(svc: ApiServices, kind: ScopeKind, name: str, body: dict[str, Any]) -> LayerOut:
    data = dict(body)
    sites = data.pop("sites", None)
    scope: dict[str, Any] = {"kind": kind.value}
    if kind is not ScopeKind.DEFAULT:
        scope["name"] = name
    if sites is not None:
        scope["sites"] = sites
    label = "default" if kind is ScopeKind.DEFAULT else f"{kind.value}:{name}"
    try:
        layer = layer_from_mapping({**data, "scope": scope}, source=f"api {label}", from_api=True)
        # Every site must still resolve with the new layer in place.
        ctx = ControlContext.for_services(svc)
        others = [x for x in ctx.book.layers if not (x.from_api and x.scope == layer.scope)]
        book = PolicyBook([*others, layer])
        for info in svc.storage.list_sites():
            book.resolve(info)
    except ConfigError as exc:
        raise unprocessable(str(exc)) from None
    save_override(svc.storage, layer, scope=layer.scope)
    return _layer_out(layer)


@router.put("/policies/default", response_model=LayerOut, summary="Set the fleet override")
def put_default_policy(body: PolicyBody, svc: Svc, _: Operator) -> LayerOut:
    """The operator's fleet-wide layer (applies over the default policy files)."""
    return _put(svc, ScopeKind.DEFAULT, "", body)


def _check_site(svc: ApiServices, site: str) -> None:
    try:
        svc.storage.get_site(site)
    except UnknownSiteError:
        raise not_found(f"no site {site!r}") from None


@router.put(
    "/policies/sites/{site}",
    response_model=LayerOut,
    summary="Set a site's override (operator)",
    responses={422: {"description": "a key that does not validate (named in the detail)"}},
)
def put_site_policy(site: str, body: PolicyBody, svc: Svc, _: Operator) -> LayerOut:
    _check_site(svc, site)
    return _put(svc, ScopeKind.SITE, site, body)


@router.put(
    "/policies/groups/{group}",
    response_model=LayerOut,
    summary="Set a group's override (operator): a region, or a named group listing `sites`",
    responses={422: {"description": "a key that does not validate (named in the detail)"}},
)
def put_group_policy(group: str, body: PolicyBody, svc: Svc, _: Operator) -> LayerOut:
    return _put(svc, ScopeKind.GROUP, group, body)


def _delete(svc: ApiServices, scope: str) -> None:
    save_override(svc.storage, None, scope=scope)


@router.delete(
    "/policies/default",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove the fleet override (operator)",
)
def delete_default_policy(svc: Svc, _: Operator) -> None:
    """Idempotent: removing an override that is not there succeeds."""
    _delete(svc, "default")


@router.delete(
    "/policies/sites/{site}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a site's override (operator)",
)
def delete_site_policy(site: str, svc: Svc, _: Operator) -> None:
    _delete(svc, f"site:{site}")


@router.delete(
    "/policies/groups/{group}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a group's override (operator)",
)
def delete_group_policy(group: str, svc: Svc, _: Operator) -> None:
    _delete(svc, f"group:{group}")


# -- demand response ---------------------------------------------------------------------------


class DrIn(BaseModel):
    cap_kw: float = Field(ge=0, description="the most the sites in scope may import, kW")
    start: str = Field(description="Unix ms or ISO-8601")
    end: str = Field(description="Unix ms or ISO-8601")
    group: str | None = Field(None, description="region or named group; omit for the fleet")
    recharge_ceiling_kw: float | None = Field(None, gt=0)
    note: str = Field("", max_length=200)


class DrOut(BaseModel):
    id: str
    cap_kw: float
    start: int
    end: int
    group: str | None
    recharge_ceiling_kw: float | None
    state: str
    created_by: str
    created_ms: int
    cancelled_ms: int | None
    note: str


def _dr_out(e: DrEvent, now: float) -> DrOut:
    return DrOut(
        id=e.id,
        cap_kw=e.cap_w / 1000,
        start=int(e.start * 1000),
        end=int(e.end * 1000),
        group=e.group,
        recharge_ceiling_kw=None if e.recharge_ceiling_w is None else e.recharge_ceiling_w / 1000,
        state=e.state(now),
        created_by=e.created_by,
        created_ms=e.created_ms,
        cancelled_ms=e.cancelled_ms,
        note=e.note,
    )


@router.get("/dr/events", response_model=list[DrOut], summary="Demand-response events")
def list_events(svc: Svc, _: Viewer) -> list[DrOut]:
    now = svc.clock.now()
    return [_dr_out(e, now) for e in DrStore(svc.storage).events()]


@router.post(
    "/dr/events",
    response_model=DrOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create a demand-response event (operator)",
)
def create_event(body: DrIn, svc: Svc, who: Operator) -> DrOut:
    """Cap the grid import of the fleet (or a group) at `cap_kw` from `start` to `end`."""
    now = svc.clock.now()
    start = parse_ms(body.start, "start", 0) / 1000
    end = parse_ms(body.end, "end", 0) / 1000
    if body.group is not None:
        infos = svc.storage.list_sites()
        ctx = ControlContext.for_services(svc)
        if not ctx.members(body.group, infos):
            raise unprocessable(f"group: no site is in {body.group!r}")
    try:
        event = new_event(
            cap_w=body.cap_kw * 1000,
            start=start,
            end=end,
            group=body.group,
            recharge_ceiling_w=None
            if body.recharge_ceiling_kw is None
            else body.recharge_ceiling_kw * 1000,
            created_by=who.name,
            created_ms=now_ms(svc.clock),
            note=body.note,
        )
        DrStore(svc.storage).add(event, now=now)
    except DrEventError as exc:
        raise unprocessable(str(exc)) from None
    return _dr_out(event, now)


@router.delete(
    "/dr/events/{event_id}",
    response_model=DrOut,
    summary="Cancel (or end early) a demand-response event (operator); it stays listed",
)
def cancel_event(event_id: str, svc: Svc, _: Operator) -> DrOut:
    try:
        event = DrStore(svc.storage).cancel(event_id, now_ms=now_ms(svc.clock))
    except UnknownEventError:
        raise not_found(f"no demand-response event {event_id!r}") from None
    return _dr_out(event, svc.clock.now())


@router.get("/control/status", summary="The control loop's last round")
def control_status(svc: Svc, _: Viewer) -> dict[str, Any]:
    """Per site: what the planners want and why, sites left alone and why, DR allocations."""
    loop = getattr(svc, "control", None)  # ApiServices need not carry a control loop
    rnd = getattr(loop, "last_round", None)
    if rnd is None:
        return {"running": False, "sites": {}, "skipped": {}, "allocations_w": {}, "intents": 0}
    return {
        "running": True,
        "sites": {
            s: {
                "battery": o.battery,
                "battery_code": o.battery_code,
                "dormant": o.dormant,
                "dormant_code": o.dormant_code,
                "reason": o.reason,
                "reserve_soc": o.reserve_soc,
            }
            for s, o in rnd.outcomes.items()
        },
        "skipped": rnd.skipped,
        "allocations_w": rnd.allocations,
        "intents": len(rnd.intents),
    }
