"""The API in-process (httpx.ASGITransport) against a real SQLite storage with real data."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from aggregator.alarm_monitor import AlarmMonitor
from aggregator.api import create_app
from aggregator.api.views import MAX_LIMIT
from aggregator.storage import CommandStatus
from protocols import messages
from protocols.keys import generate_key, kid_hex, public_key_hex
from protocols.messages import AckStatus
from protocols.types import Reading
from tests.aggregator.api_fixtures import (
    HOUR,
    MIN,
    NOW,
    T0,
    Fleet,
    bearer,
    client_for,
    close_fleet,
    make_fleet,
)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = make_fleet(tmp_path / "agg.db")
    yield f
    close_fleet(f)


@pytest.fixture
async def client(fleet: Fleet) -> AsyncIterator[httpx.AsyncClient]:
    async for c in client_for(fleet.app):
        c.headers.update(bearer(fleet.tokens["admin"]))
        yield c


async def get(client: httpx.AsyncClient, url: str, status: int = 200) -> Any:
    r = await client.get(url)
    assert r.status_code == status, r.text
    return r.json()


# --- sites ---------------------------------------------------------------------------------


async def test_sites_list_shows_state_key_points_mode_and_alarms(
    client: httpx.AsyncClient,
) -> None:
    sites = {s["site"]: s for s in await get(client, "/api/sites")}
    assert set(sites) == {"s1", "s2"}
    s1, s2 = sites["s1"], sites["s2"]
    assert s1["online"] is True and s1["last_seen_ms"] == NOW - 1000
    assert s1["name"] == "Hilltop" and s1["tariff"] == "sichuan"
    kp = s1["key_points"]
    assert kp["load_w"] == pytest.approx(80.0 * 53.5)
    assert kp["grid_import_w"] == 3000.0 + 119
    assert kp["soc"] == pytest.approx(90.0 - 11.9)
    assert kp["room_temp_c"] == pytest.approx(26.9)
    assert s1["mode"] == "peak-shaving"  # applied 10 min ago with a 30 min lease
    assert s1["active_alarms"] == 1
    assert s2["online"] is False and s2["active_alarms"] == 1 and s2["mode"] == "normal"
    assert s2["key_points"] == {
        "load_w": None,
        "grid_import_w": 1500.0,
        "soc": None,
        "room_temp_c": None,
    }


async def test_mode_returns_to_normal_when_the_lease_runs_out(
    fleet: Fleet, client: httpx.AsyncClient
) -> None:
    fleet.clock.advance(21 * 60)  # applied at NOW-10 min with lease 30 min: lapsed at NOW+20 min
    sites = {s["site"]: s for s in await get(client, "/api/sites")}
    assert sites["s1"]["mode"] == "normal"


async def test_site_detail_devices_qualities_keys_state(
    fleet: Fleet, client: httpx.AsyncClient
) -> None:
    d = await get(client, "/api/sites/s1")
    devices = {dev["device"]: {p["point"]: p for p in dev["points"]} for dev in d["devices"]}
    assert set(devices) == {"meter", "rect", "bat", "ac", "brk"}
    assert devices["meter"]["mains_present"]["value"] is True
    assert devices["brk"]["ch1_current"] == {
        "point": "ch1_current",
        "value": None,
        "quality": "comm-error",
        "t_ms": T0 + 119 * MIN,
    }
    assert devices["bat"]["soc"]["quality"] == "good"
    assert len(d["keys"]) == 2 and all(k["active"] for k in d["keys"])
    assert fleet.s1_spare_kid in {k["kid"] for k in d["keys"]}
    assert d["state"]["online"] is True and d["state"]["boot"] == "boot-1"
    assert d["state"]["devices"]["bat"] == "lfp" and len(d["state"]["devices"]) == 5
    assert [a["kind"] for a in d["alarms"]] == ["comm_loss"]
    assert d["active_alarms"] == 1 and d["mode"] == "peak-shaving"


async def test_unknown_site_is_404(client: httpx.AsyncClient) -> None:
    body = await get(client, "/api/sites/nope", 404)
    assert "nope" in body["detail"]


# --- readings ----------------------------------------------------------------------------------


async def test_raw_readings_time_range_and_pagination(client: httpx.AsyncClient) -> None:
    base = f"/api/sites/s1/readings?device=meter&point=import_power&from={T0}&to={T0 + 30 * MIN}"
    page1 = await get(client, base + "&limit=20")
    assert page1["count"] == 20 and page1["next_offset"] == 20 and page1["rollups"] == []
    assert [r["t_ms"] for r in page1["readings"]] == [T0 + i * MIN for i in range(20)]
    assert page1["readings"][0] == {"t_ms": T0, "value": 3000.0, "quality": "good"}
    page2 = await get(client, base + "&limit=20&offset=20")
    assert page2["count"] == 10 and page2["next_offset"] is None  # 'to' is exclusive
    assert page2["readings"][-1]["t_ms"] == T0 + 29 * MIN


async def test_readings_default_to_the_last_day(client: httpx.AsyncClient) -> None:
    page = await get(client, "/api/sites/s1/readings?device=bat&point=soc&limit=500")
    assert page["count"] == 120 and page["to_ms"] - page["from_ms"] == 24 * HOUR


async def test_readings_accept_iso_times(client: httpx.AsyncClient) -> None:
    start = datetime.fromtimestamp(T0 / 1000, UTC).isoformat()
    end = datetime.fromtimestamp((T0 + 5 * MIN) / 1000, UTC).isoformat().replace("+00:00", "Z")
    r = await client.get(
        "/api/sites/s1/readings",
        params={"device": "bat", "point": "soc", "from": start, "to": end},
    )
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["from_ms"] == T0 and page["to_ms"] == T0 + 5 * MIN and page["count"] == 5


async def test_rollups_by_step(client: httpx.AsyncClient) -> None:
    url = f"/api/sites/s1/readings?device=meter&point=import_power&from={T0}&to={T0 + 2 * HOUR}"
    q = await get(client, url + "&step=900")
    assert q["readings"] == [] and q["count"] == 8 and q["step_s"] == 900
    first = q["rollups"][0]
    assert first["bucket_ms"] == T0 and first["n"] == 15
    assert first["min"] == 3000.0 and first["max"] == 3014.0 and first["mean"] == 3007.0
    assert first["first"] == 3000.0 and first["last"] == 3014.0
    h = await get(client, url + "&step=3600")
    assert [r["n"] for r in h["rollups"]] == [60, 60]
    assert h["rollups"][1]["last"] == 3119.0


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (f"from={T0}&to={T0 + 8 * 86_400_000}", "raw readings span at most 7 days"),
        (f"from={T0}&to={T0 + 401 * 86_400_000}&step=900", "rollups span at most 400 days"),
        ("step=1000", "multiple of 900"),
        ("step=0", "multiple of 900"),
        (f"limit={MAX_LIMIT + 1}", f"limit must be within 1..{MAX_LIMIT}"),
        ("limit=0", "limit must be within"),
        (f"from={T0}&to={T0}", "must be after"),
        ("from=yesterday", "neither Unix milliseconds nor an ISO-8601"),
    ],
)
async def test_readings_limits_are_422_with_a_clear_message(
    client: httpx.AsyncClient, query: str, message: str
) -> None:
    body = await get(client, f"/api/sites/s1/readings?device=bat&point=soc&{query}", 422)
    assert message in body["detail"]


async def test_readings_of_unknown_point_or_site_are_404(client: httpx.AsyncClient) -> None:
    body = await get(client, "/api/sites/s1/readings?device=bat&point=nope", 404)
    assert "no point 'nope' on device 'bat'" in body["detail"]
    await get(client, "/api/sites/zz/readings?device=bat&point=soc", 404)
    await get(client, "/api/sites/s1/readings?point=soc", 422)  # device is required


# --- alarms --------------------------------------------------------------------------------------


async def test_alarms_active_history_and_filters(client: httpx.AsyncClient) -> None:
    active = await get(client, "/api/alarms?active=true")
    assert sorted((a["site"], a["kind"]) for a in active["alarms"]) == [
        ("s1", "comm_loss"),
        ("s2", "site_offline"),
    ]
    assert all(a["active"] and a["cleared_ms"] is None for a in active["alarms"])
    cleared = await get(client, "/api/alarms?active=false")
    assert [(a["kind"], a["cleared_ms"]) for a in cleared["alarms"]] == [
        ("mains_failure", T0 + 3 * MIN)
    ]
    history = await get(client, "/api/alarms?site=s1")
    assert [a["kind"] for a in history["alarms"]] == ["comm_loss", "mains_failure"]  # newest first
    assert history["alarms"][0]["device"] == "brk"
    page = await get(client, "/api/alarms?limit=1")
    assert page["count"] == 1 and page["next_offset"] == 1
    page = await get(client, "/api/alarms?limit=1&offset=2")
    assert page["count"] == 1 and page["next_offset"] is None
    window = await get(client, f"/api/alarms?from={T0 + 30 * MIN}")
    assert [a["kind"] for a in window["alarms"]] == ["comm_loss"]
    await get(client, "/api/alarms?limit=5000", 422)


# --- commands ---------------------------------------------------------------------------------


async def test_send_command_returns_record_and_history_shows_ack(
    fleet: Fleet, client: httpx.AsyncClient
) -> None:
    r = await client.post(
        "/api/sites/s1/commands",
        json={"action": "battery.charge", "params": {"charge_limit_w": 1500, "target_soc": 95},
              "lease_s": 600},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    cmd = r.json()
    assert cmd["site"] == "s1" and cmd["seq"] == 2 and cmd["action"] == "battery.charge"
    (sent,) = fleet.agent.received  # sealed, verified with the aggregator key, decoded
    assert (sent.id, sent.seq, sent.lease_s) == (cmd["id"], 2, 600)
    assert sent.params == messages.Charge(charge_limit_w=1500, target_soc=95)
    assert cmd["params"] == {"charge_limit_w": 1500, "target_soc": 95}
    assert cmd["status"] == "sent" and cmd["issued_by"] == "admin-token" and cmd["lease_s"] == 600
    hist = await get(client, "/api/sites/s1/commands")
    assert [c["seq"] for c in hist["commands"]] == [2, 1]
    first = hist["commands"][1]
    assert first["status"] == "applied" and first["rtt_ms"] == 35.0
    assert first["readback"] == {"bat.mode": 2, "bat.discharge_power_limit_w": 2000.0}


async def test_send_command_waiting_for_the_ack(fleet: Fleet, client: httpx.AsyncClient) -> None:
    fleet.agent.ack = AckStatus.APPLIED
    r = await client.post("/api/sites/s1/commands?wait=5", json={"action": "site.wake"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == CommandStatus.APPLIED.value and body["readback"] == {"bat.mode": 0}
    # And the mode follows the newest applied mode command.
    sites = {s["site"]: s for s in await get(client, "/api/sites")}
    assert sites["s1"]["mode"] == "normal"


async def test_wait_without_ack_returns_the_sent_record(
    fleet: Fleet, client: httpx.AsyncClient
) -> None:
    r = await client.post(
        "/api/sites/s1/commands?wait=0.1",
        json={"action": "ac.setpoint", "params": {"setpoint_c": 27}},
        headers=bearer(fleet.tokens["operator"]),
    )
    assert r.status_code == 201 and r.json()["status"] == "sent"
    assert [c.params for c in fleet.agent.received] == [messages.AcSetpoint(27.0)]


@pytest.mark.parametrize(
    ("site", "body", "status", "message"),
    [
        ("nope", {"action": "battery.auto"}, 404, "no site 'nope'"),
        ("s1", {"action": "battery.explode"}, 422, "unknown action 'battery.explode'"),
        ("s1", {"action": "battery.peak_shave", "params": {}}, 422, "discharge_limit_w"),
        (
            "s1",
            {"action": "battery.peak_shave", "params": {"discharge_limit_w": -5}},
            422,
            "discharge_limit_w",
        ),
        (
            "s1",
            {"action": "breaker.set", "params": {"channel": 99, "closed": False}},
            422,
            "channel",
        ),
        ("s1", {"action": "battery.auto", "params": {"extra": 1}}, 422, "extra"),
        ("s1", {"action": "battery.auto", "lease_s": 0}, 422, "lease_s"),
        ("s1", {"params": {}}, 422, "action"),
    ],
)
async def test_bad_commands_are_refused(
    fleet: Fleet,
    client: httpx.AsyncClient,
    site: str,
    body: dict[str, Any],
    status: int,
    message: str,
) -> None:
    r = await client.post(f"/api/sites/{site}/commands", json=body)
    assert r.status_code == status, r.text
    assert message in r.text
    assert fleet.agent.received == []


async def test_commands_unavailable_without_a_sender(
    fleet: Fleet, client: httpx.AsyncClient
) -> None:
    fleet.ctx.commands = None
    r = await client.post("/api/sites/s1/commands", json={"action": "battery.auto"})
    assert r.status_code == 503


# --- sites and keys (admin) ------------------------------------------------------------------


async def test_enrol_rotate_revoke(fleet: Fleet, client: httpx.AsyncClient) -> None:
    k1, k2 = generate_key(), generate_key()
    r = await client.post(
        "/api/sites",
        json={"site": "s3", "public_key": public_key_hex(k1), "name": "Valley", "tz": "UTC"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["site"] == "s3" and r.json()["online"] is False
    r = await client.post("/api/sites/s3/keys", json={"public_key": public_key_hex(k2)})
    assert r.status_code == 201 and r.json()["kid"] == kid_hex(k2)
    keys = await get(client, "/api/sites/s3/keys")
    assert {k["kid"] for k in keys if k["active"]} == {kid_hex(k1), kid_hex(k2)}
    r = await client.delete(f"/api/sites/s3/keys/{kid_hex(k1)}")
    assert r.status_code == 200 and r.json()["active"] is False
    assert r.json()["revoked_ms"] == NOW
    stored = fleet.storage.get_key(kid_hex(k1))
    assert stored is not None and stored.revoked_ms == NOW
    # Another site's key cannot be revoked through this site.
    r = await client.delete(f"/api/sites/s1/keys/{kid_hex(k2)}")
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"site": "s1", "public_key": "KEY"}, 409, "already enrolled"),
        ({"site": "bad/site", "public_key": "KEY"}, 422, "site id"),
        ({"site": "s9", "public_key": "abcd"}, 422, "32 bytes"),
        ({"site": "s9", "public_key": "zz" * 32}, 422, "not hex"),
    ],
)
async def test_enrol_refusals(
    client: httpx.AsyncClient, body: dict[str, str], status: int, message: str
) -> None:
    if body["public_key"] == "KEY":
        body = {**body, "public_key": public_key_hex(generate_key())}
    r = await client.post("/api/sites", json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]


async def test_enrolling_a_key_twice_is_409(fleet: Fleet, client: httpx.AsyncClient) -> None:
    key = fleet.storage.site_keys("s1")[0]
    r = await client.post("/api/sites/s2/keys", json={"public_key": key.public_key})
    assert r.status_code == 409


# --- tokens ----------------------------------------------------------------------------------


async def test_token_created_through_the_api_works_until_revoked(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post("/api/tokens", json={"role": "operator", "name": "noc"})
    assert r.status_code == 201
    created = r.json()
    token = created["token"]
    assert created["role"] == "operator" and created["active"] is True
    listed = await get(client, "/api/tokens")
    assert all("token" not in t for t in listed)  # never shown again
    assert created["id"] in {t["id"] for t in listed}
    assert (await client.get("/api/sites", headers=bearer(token))).status_code == 200
    assert (await client.get("/api/tokens", headers=bearer(token))).status_code == 403
    assert (await client.delete(f"/api/tokens/{created['id']}")).status_code == 204
    assert (await client.get("/api/sites", headers=bearer(token))).status_code == 401
    assert (await client.delete(f"/api/tokens/{created['id']}")).status_code == 404
    r = await client.post("/api/tokens", json={"role": "root"})
    assert r.status_code == 422


async def test_me_names_the_caller(fleet: Fleet, client: httpx.AsyncClient) -> None:
    r = await client.get("/api/me", headers=bearer(fleet.tokens["operator"]))
    assert r.status_code == 200
    assert r.json()["name"] == "operator-token" and r.json()["role"] == "operator"


# --- health and metrics --------------------------------------------------------------------------


async def test_health(client: httpx.AsyncClient) -> None:
    h = await get(client, "/api/health")
    assert h["status"] == "ok" and h["sites"] == 2 and h["sites_online"] == 1
    assert h["time_ms"] == NOW


async def test_metrics_after_alarm_activity(fleet: Fleet, client: httpx.AsyncClient) -> None:
    monitor = AlarmMonitor(fleet.storage, metrics=fleet.metrics, clock=fleet.clock)
    monitor.load()  # the two active alarms in storage
    t = NOW + 1000
    monitor.on_stored(
        "s1",
        [Reading(t, "meter", "mains_present", False), Reading(t, "rect", "module_fault", 1)],
    )
    fleet.metrics.messages_rejected.labels(reason="bad_signature").inc(2)
    fleet.metrics.observe_stored(batches=1, readings=7, duplicates=0)
    r = await client.get("/metrics", headers={})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'sitewatt_aggregator_alarms_active{severity="major"} 2.0' in text
    assert 'sitewatt_aggregator_alarms_active{severity="critical"} 1.0' in text
    assert 'sitewatt_aggregator_alarms_active{severity="minor"} 1.0' in text
    assert 'sitewatt_aggregator_alarms_raised_total{kind="mains_failure"} 1.0' in text
    assert 'sitewatt_aggregator_messages_rejected_total{reason="bad_signature"} 2.0' in text
    assert "sitewatt_aggregator_readings_stored_total 7.0" in text
    active = await get(client, "/api/alarms?active=true&site=s1")
    assert {a["kind"] for a in active["alarms"]} == {
        "comm_loss",
        "mains_failure",
        "rectifier_fault",
    }


async def test_app_mounts_static_and_templates_hooks(tmp_path: Path, fleet: Fleet) -> None:
    static = tmp_path / "static"
    static.mkdir()
    (static / "app.css").write_text("body{}")
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "hello.html").write_text("hello {{ who }}")
    app = create_app(fleet.ctx, static_dir=static, templates_dir=templates)
    assert app.state.templates.get_template("hello.html").render(who="noc") == "hello noc"
    async for c in client_for(app):
        r = await c.get("/static/app.css")
        assert r.status_code == 200 and r.text == "body{}"
    bare = create_app(fleet.ctx, static_dir=None, templates_dir=None)
    assert bare.state.templates is None
