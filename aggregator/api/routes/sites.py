"""Sites: the fleet list, one site's details, enrolment and keys (admin)."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Depends, status

from aggregator.api.convert import (
    alarm_out,
    devices_out,
    key_out,
    state_out,
    summary_out,
)
from aggregator.api.deps import (
    ApiServices,
    not_found,
    notify_keys_changed,
    registry_of,
    services,
    unprocessable,
)
from aggregator.api.models import KeyIn, KeyOut, SiteDetail, SiteIn, SiteSummary
from aggregator.api.views import active_mode, key_points
from aggregator.auth import Principal, Role, require
from aggregator.errors import SiteKeyError, UnknownSiteError
from aggregator.sites import parse_public_key
from aggregator.storage.types import SiteInfo, SiteState
from protocols.clock import now_ms

MODE_SCAN = 100
"""Newest commands looked at to find the site's mode command."""

router = APIRouter(tags=["sites"])

Svc = Annotated[ApiServices, Depends(services)]
Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]


def _info(svc: ApiServices, site: str) -> SiteInfo:
    try:
        return svc.storage.get_site(site)
    except UnknownSiteError:
        raise not_found(f"no site {site!r}") from None


def _summary(
    svc: ApiServices, info: SiteInfo, state: SiteState, alarms: int, now: int
) -> dict[str, object]:
    latest = svc.storage.latest(info.site)
    mode = active_mode(svc.storage.command_history(info.site, limit=MODE_SCAN), now)
    return summary_out(info, state, key_points(latest), mode, alarms)


@router.get("/sites", response_model=list[SiteSummary], summary="The fleet")
def list_sites(svc: Svc, _: Viewer) -> list[SiteSummary]:
    """Every enrolled site with its online state, last seen time, key points (load, grid import,
    SOC, room temperature), active mode and number of active alarms."""
    storage = svc.storage
    states = {s.site: s for s in storage.site_states()}
    alarms = Counter(a.site for a in storage.active_alarms())
    now = now_ms(svc.clock)
    return [
        SiteSummary.model_validate(
            _summary(svc, info, states.get(info.site, SiteState(info.site)), alarms[info.site], now)
        )
        for info in storage.list_sites()
    ]


@router.get("/sites/{site}", response_model=SiteDetail, summary="One site")
def get_site(site: str, svc: Svc, _: Viewer) -> SiteDetail:
    """A site's summary plus its devices with their latest points and qualities, its keys, its
    presence state and its active alarms."""
    info = _info(svc, site)
    storage = svc.storage
    state = storage.site_state(site)
    active = storage.active_alarms(site)
    summary = _summary(svc, info, state, len(active), now_ms(svc.clock))
    return SiteDetail.model_validate(
        {
            **summary,
            "state": state_out(state),
            "devices": devices_out(storage.latest(site)),
            "keys": [key_out(k) for k in storage.site_keys(site)],
            "alarms": [alarm_out(a) for a in active],
        }
    )


def _public_key(text: str) -> str:
    """A public key checked before any change (422 if malformed, not 409)."""
    try:
        public, _ = parse_public_key(text)
    except SiteKeyError as exc:
        raise unprocessable(str(exc)) from None
    return public


@router.post(
    "/sites",
    response_model=SiteSummary,
    status_code=status.HTTP_201_CREATED,
    summary="Enrol a site (admin)",
    responses={409: {"description": "site or key already enrolled"}},
)
def enrol_site(body: SiteIn, svc: Svc, _: Admin) -> SiteSummary:
    """Enrol a site by its public key (the key its agent generated)."""
    public = _public_key(body.public_key)
    info, _key = registry_of(svc).enrol(
        body.site, public, name=body.name, region=body.region, tz=body.tz, tariff=body.tariff
    )
    notify_keys_changed(svc)
    now = now_ms(svc.clock)
    return SiteSummary.model_validate(_summary(svc, info, SiteState(body.site), 0, now))


@router.get("/sites/{site}/keys", response_model=list[KeyOut], summary="A site's keys (admin)")
def list_keys(site: str, svc: Svc, _: Admin) -> list[KeyOut]:
    _info(svc, site)
    return [key_out(k) for k in svc.storage.site_keys(site)]


@router.post(
    "/sites/{site}/keys",
    response_model=KeyOut,
    status_code=status.HTTP_201_CREATED,
    summary="Add a key (rotation; admin)",
)
def add_key(site: str, body: KeyIn, svc: Svc, _: Admin) -> KeyOut:
    """Enrol another key for a site. Old and new keys are both valid until the old one is
    revoked, so the agent can switch without losing a batch."""
    _info(svc, site)
    key = registry_of(svc).add_key(site, _public_key(body.public_key))
    notify_keys_changed(svc)
    return key_out(key)


@router.delete("/sites/{site}/keys/{kid}", response_model=KeyOut, summary="Revoke a key (admin)")
def revoke_key(site: str, kid: str, svc: Svc, _: Admin) -> KeyOut:
    """Revoke a key: messages signed with it are rejected from now on."""
    _info(svc, site)
    existing = svc.storage.get_key(kid.lower())
    if existing is None or existing.site != site:
        raise not_found(f"site {site!r} has no key {kid!r}")
    key = registry_of(svc).revoke(site, existing.kid)
    notify_keys_changed(svc)
    return key_out(key)
