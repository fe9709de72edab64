"""Reports, policies and demand-response events through the API (httpx.ASGITransport, real
SQLite storage with the hand-computed series of fixtures.py)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from aggregator.api import ApiContext, create_app
from aggregator.control.events import DrStore
from protocols.clock import ManualClock
from tests.reports.fixtures import ROOT, local_ms, make_storage, write_policies
from tests.support.aggregator_data import add_role_tokens


@dataclass
class Ctx(ApiContext):
    config: Any = None


@dataclass
class Api:
    client: httpx.AsyncClient
    ctx: Ctx
    tokens: dict[str, str]

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    storage = make_storage(tmp_path)
    policies = write_policies(tmp_path)
    config = SimpleNamespace(
        control={"policies_dir": str(policies), "tariffs_dir": str(ROOT / "config" / "tariffs")}
    )
    tokens = add_role_tokens(storage, 0)
    ctx = Ctx(storage=storage, clock=ManualClock(local_ms(12, day=6) / 1000), config=config)
    transport = httpx.ASGITransport(app=create_app(ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://sitewatt.test") as c:
        yield Api(c, ctx, tokens)
    storage.close()


DAY = {"from": str(local_ms(0)), "to": str(local_ms(0, day=6))}


async def test_report_json_for_a_site(api: Api) -> None:
    r = await api.client.get(
        "/api/reports", params={**DAY, "site": "s1"}, headers=api.auth("viewer")
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["scope"] == "site"
    (s1,) = body["sites"]
    assert s1["site"] == "s1"
    assert s1["cost"] == pytest.approx(2.3808)
    assert s1["savings_cost"] == pytest.approx(1.012884, abs=1e-6)
    assert s1["savings_kgco2"] == pytest.approx(0.21464)
    assert s1["emission_factor"].startswith("china-grid 2022 national")
    assert s1["reserve_violations"] == 0


async def test_report_csv_for_the_fleet_and_a_group(api: Api) -> None:
    r = await api.client.get(
        "/api/reports", params={**DAY, "format": "csv"}, headers=api.auth("viewer")
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(x["scope"], x["name"]) for x in rows][-1] == ("fleet", "fleet")
    assert float(rows[-1]["grid_kwh"]) == pytest.approx(6.6)
    r = await api.client.get(
        "/api/reports", params={**DAY, "group": "west"}, headers=api.auth("viewer")
    )
    assert [s["site"] for s in r.json()["sites"]] == ["s2"]
    assert r.json()["total"]["reserve_violations"] == 1


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"site": "nope"}, 404),
        ({"site": "s1", "group": "east"}, 422),
        ({"from": "yesterday"}, 422),
        ({"from": str(local_ms(5)), "to": str(local_ms(4))}, 422),
    ],
)
async def test_report_errors(api: Api, params: dict[str, str], code: int) -> None:
    r = await api.client.get("/api/reports", params=params, headers=api.auth("viewer"))
    assert r.status_code == code, r.text


async def test_report_needs_a_token(api: Api) -> None:
    assert (await api.client.get("/api/reports")).status_code == 401


async def test_policy_override_validates_and_applies(api: Api) -> None:
    bad = await api.client.put(
        "/api/policies/groups/east",
        json={"peak_shaving": {"backup_hours": -2}},
        headers=api.auth("operator"),
    )
    assert bad.status_code == 422
    assert "peak_shaving.backup_hours" in bad.json()["detail"]
    # A viewer may read but not set.
    body = {"peak_shaving": {"backup_hours": 5}}
    denied = await api.client.put(
        "/api/policies/groups/east", json=body, headers=api.auth("viewer")
    )
    assert denied.status_code == 403
    ok = await api.client.put("/api/policies/groups/east", json=body, headers=api.auth("operator"))
    assert ok.status_code == 200, ok.text
    assert ok.json()["scope"] == "group:east"
    r = await api.client.get("/api/policies/sites/s1", headers=api.auth("viewer"))
    assert r.json()["policy"]["peak_shaving"]["backup_hours"] == 5
    assert r.json()["layers"] == ["default", "group:east"]
    r2 = await api.client.get("/api/policies/sites/s2", headers=api.auth("viewer"))
    assert r2.json()["policy"]["peak_shaving"]["backup_hours"] == 3
    gone = await api.client.delete("/api/policies/groups/east", headers=api.auth("operator"))
    assert gone.status_code == 204
    r = await api.client.get("/api/policies/sites/s1", headers=api.auth("viewer"))
    assert r.json()["policy"]["peak_shaving"]["backup_hours"] == 3


async def test_a_merge_that_breaks_a_site_is_refused(api: Api) -> None:
    # Alone the layer is valid; merged with the default target 95 it is still valid; but a
    # floor above the target is not, and the error names the site's policy.
    r = await api.client.put(
        "/api/policies/sites/s1",
        json={"peak_shaving": {"floor_pct": 97}},
        headers=api.auth("operator"),
    )
    assert r.status_code == 422
    assert "peak_shaving" in r.json()["detail"]


async def test_demand_response_events(api: Api) -> None:
    h = api.auth("operator")
    body = {"cap_kw": 3.5, "start": str(local_ms(18, day=6)), "end": str(local_ms(20, day=6))}
    r = await api.client.post("/api/dr/events", json=body, headers=h)
    assert r.status_code == 201, r.text
    ev = r.json()
    assert (ev["cap_kw"], ev["state"], ev["created_by"]) == (3.5, "scheduled", "operator")
    assert DrStore(api.ctx.storage).get(ev["id"]).cap_w == 3500
    bad = await api.client.post("/api/dr/events", json={**body, "end": body["start"]}, headers=h)
    assert bad.status_code == 422 and "end" in bad.json()["detail"]
    nogroup = await api.client.post("/api/dr/events", json={**body, "group": "mars"}, headers=h)
    assert nogroup.status_code == 422
    viewer = await api.client.post("/api/dr/events", json=body, headers=api.auth("viewer"))
    assert viewer.status_code == 403
    listed = await api.client.get("/api/dr/events", headers=api.auth("viewer"))
    assert [e["id"] for e in listed.json()] == [ev["id"]]
    c = await api.client.delete(f"/api/dr/events/{ev['id']}", headers=h)
    assert c.json()["state"] == "cancelled"
    missing = await api.client.delete("/api/dr/events/nope", headers=h)
    assert missing.status_code == 404
