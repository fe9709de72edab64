"""The auth matrix: every endpoint × {no token, bad, revoked, viewer, operator, admin}."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from aggregator.auth import Role, generate_token, hash_token
from aggregator.control.events import DrStore, new_event
from protocols.keys import generate_key, public_key_hex
from tests.aggregator.api_fixtures import Fleet, bearer, client_for, close_fleet, make_fleet


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    f = make_fleet(tmp_path_factory.mktemp("auth") / "agg.db")
    yield f
    close_fleet(f)


@pytest.fixture
async def client(fleet: Fleet) -> AsyncIterator[httpx.AsyncClient]:
    async for c in client_for(fleet.app):
        yield c


_counter = iter(range(10**6))


def _new_site(_: Fleet) -> dict[str, Any]:
    return {"site": f"new-{next(_counter)}", "public_key": public_key_hex(generate_key())}


def _fresh_dr_event(f: Fleet) -> str:
    event = new_event(cap_w=1000, start=2e9, end=2e9 + 3600, created_by="t", created_ms=0)
    return DrStore(f.storage).add(event, now=0).id


def _fresh_token_id(f: Fleet) -> str:
    record = f.storage.add_token("victim", "viewer", hash_token(generate_token()), 0)
    return str(record.id)


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str | Callable[[Fleet], str]
    needs: Role | None  # None: open to anyone
    ok: int
    body: dict[str, Any] | Callable[[Fleet], dict[str, Any]] | None = None

    def url(self, f: Fleet) -> str:
        return self.path(f) if callable(self.path) else self.path

    def json(self, f: Fleet) -> dict[str, Any] | None:
        return self.body(f) if callable(self.body) else self.body

    def __str__(self) -> str:
        path = self.path if isinstance(self.path, str) else self.path.__name__
        return f"{self.method} {path}"


V, OP, A = Role.VIEWER, Role.OPERATOR, Role.ADMIN

ENDPOINTS = [
    Endpoint("GET", "/api/health", None, 200),
    Endpoint("GET", "/metrics", None, 200),
    Endpoint("GET", "/api/openapi.json", None, 200),
    Endpoint("GET", "/api/sites", V, 200),
    Endpoint("GET", "/api/sites/s1", V, 200),
    Endpoint("GET", "/api/sites/s1/readings?device=meter&point=import_power", V, 200),
    Endpoint("GET", "/api/alarms", V, 200),
    Endpoint("GET", "/api/alarms?active=true&site=s1", V, 200),
    Endpoint("GET", "/api/sites/s1/commands", V, 200),
    Endpoint("POST", "/api/sites/s1/commands", OP, 201, {"action": "battery.auto"}),
    Endpoint("POST", "/api/sites", A, 201, _new_site),
    Endpoint("GET", "/api/sites/s1/keys", A, 200),
    Endpoint(
        "POST",
        "/api/sites/s2/keys",
        A,
        201,
        lambda _: {"public_key": public_key_hex(generate_key())},
    ),
    Endpoint("DELETE", lambda f: f"/api/sites/s1/keys/{f.s1_spare_kid}", A, 200),
    Endpoint("GET", "/api/me", V, 200),
    Endpoint("GET", "/api/tokens", A, 200),
    Endpoint("POST", "/api/tokens", A, 201, {"role": "viewer", "name": "x"}),
    Endpoint("DELETE", lambda f: f"/api/tokens/{_fresh_token_id(f)}", A, 204),
    # control and reports (aggregator/api/routes/control.py, reports.py)
    Endpoint("GET", "/api/reports", V, 200),
    Endpoint("GET", "/api/policies", V, 200),
    Endpoint("GET", "/api/policies/sites/s1", V, 200),
    Endpoint("PUT", "/api/policies/default", OP, 200, {}),
    Endpoint("DELETE", "/api/policies/default", OP, 204),
    Endpoint("PUT", "/api/policies/sites/s1", OP, 200, {"peak_shaving": {"backup_hours": 4}}),
    Endpoint("DELETE", "/api/policies/sites/s1", OP, 204),
    Endpoint("PUT", "/api/policies/groups/west", OP, 200, {"dormant": {"ac_offset_c": 1}}),
    Endpoint("DELETE", "/api/policies/groups/west", OP, 204),
    Endpoint("GET", "/api/dr/events", V, 200),
    Endpoint(
        "POST",
        "/api/dr/events",
        OP,
        201,
        {"cap_kw": 5, "start": "2030-01-01T10:00:00", "end": "2030-01-01T11:00:00"},
    ),
    Endpoint("DELETE", lambda f: f"/api/dr/events/{_fresh_dr_event(f)}", OP, 200),
    Endpoint("GET", "/api/control/status", V, 200),
]

CALLERS: list[tuple[str, Role | None]] = [
    ("none", None),
    ("garbage", None),
    ("revoked", None),
    ("viewer", V),
    ("operator", OP),
    ("admin", A),
]


def expected(ep: Endpoint, caller: str, role: Role | None) -> int:
    if ep.needs is None:
        return ep.ok
    if role is None:
        return 401
    return ep.ok if role.allows(ep.needs) else 403


def _token(f: Fleet, caller: str) -> str | None:
    if caller == "none":
        return None
    if caller == "garbage":
        return "swt_not-a-real-token"
    return f.tokens[caller]


@pytest.mark.parametrize("ep", ENDPOINTS, ids=str)
@pytest.mark.parametrize(("caller", "role"), CALLERS, ids=[c for c, _ in CALLERS])
async def test_auth_matrix(
    fleet: Fleet, client: httpx.AsyncClient, ep: Endpoint, caller: str, role: Role | None
) -> None:
    r = await client.request(
        ep.method, ep.url(fleet), json=ep.json(fleet), headers=bearer(_token(fleet, caller))
    )
    want = expected(ep, caller, role)
    assert r.status_code == want, (str(ep), caller, r.text)
    if want == 401:
        assert r.headers["www-authenticate"] == "Bearer"
    if want == 403:
        assert "may not" in r.json()["detail"]


async def test_non_bearer_scheme_is_401(fleet: Fleet, client: httpx.AsyncClient) -> None:
    r = await client.get("/api/sites", headers={"Authorization": f"Basic {fleet.tokens['admin']}"})
    assert r.status_code == 401


def test_openapi_declares_bearer_security(fleet: Fleet) -> None:
    spec = fleet.app.openapi()
    schemes = spec["components"]["securitySchemes"]
    assert any(s["type"] == "http" and s["scheme"] == "bearer" for s in schemes.values())
    assert "security" in spec["paths"]["/api/sites"]["get"]
    assert "security" not in spec["paths"]["/api/health"]["get"]


def test_matrix_covers_every_route(fleet: Fleet) -> None:
    spec = fleet.app.openapi()
    covered = {
        (ep.method, ep.url(fleet).split("?")[0].replace(fleet.s1_spare_kid, "{kid}"))
        for ep in ENDPOINTS
    }
    for path, ops in spec["paths"].items():
        if not path.startswith(("/api/", "/metrics")):
            continue  # the dashboard's pages are tested with it
        for method in ops:
            concrete = path.replace(
                "{site}", "s2" if method == "post" and "keys" in path else "s1"
            ).replace("{token_id}", "*")
            concrete = concrete.replace("{group}", "west").replace("{event_id}", "*")
            found = any(
                m == method.upper()
                and (c == concrete or (concrete.endswith("*") and c.startswith(concrete[:-1])))
                for m, c in covered
            )
            assert found, f"{method.upper()} {path} is missing from the auth matrix"
