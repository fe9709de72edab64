"""Alarms raised and cleared by simulator events, end to end.

A simulated site (physics behind a real Modbus TCP server) polled by a real agent, publishing
signed batches through a real mosquitto into the aggregator's ingest, whose alarm monitor raises
and clears alarms in the database; the API lists them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from agent.runtime import Agent
from aggregator.alarms import AlarmConfig, RuleConfig, Severity
from aggregator.api import create_app
from aggregator.auth import generate_token, hash_token
from aggregator.config import config_from_dict
from aggregator.identity import init_key
from aggregator.service import build_services
from aggregator.services import Services
from aggregator.storage import AlarmRecord
from protocols.clock import SimClock
from protocols.keys import generate_key, public_key_hex, save_private_key
from simulators.broker import Broker
from simulators.modbus.faults import Fault, FaultKind
from simulators.spec import SiteSpec
from tests.agent.sim_support import SimSite, start_sim_site

SITE = "site-e2e"
START = 1_700_000_000.0 + 6 * 3600  # 14:00 in Asia/Shanghai
SPEED = 10.0


@dataclass
class Rig:
    site: SimSite
    agent: Agent
    services: Services
    clock: SimClock
    token: str

    def active(self) -> dict[str, AlarmRecord]:
        return {a.kind: a for a in self.services.storage.active_alarms(SITE)}

    def history(self, kind: str) -> list[AlarmRecord]:
        return [a for a in self.services.storage.alarm_history(SITE, limit=1000) if a.kind == kind]


async def until(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll `cond` (wall clock) until true; fail naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.05)


@pytest.fixture
async def rig(tmp_path: Path, mosquitto: Broker) -> AsyncIterator[Rig]:
    clock = SimClock(start=START, speed=SPEED)
    agg_key = init_key(tmp_path / "agg" / "aggregator.key")
    config = config_from_dict(
        {
            "broker": {"host": "127.0.0.1", "port": mosquitto.port, "client_id": "agg-e2e"},
            "database": {"path": str(tmp_path / "agg" / "agg.db")},
            "keys": {"key_file": str(agg_key.path)},
            "http": {"port": 0},
        }
    )
    services = build_services(config, clock=clock)
    assert services.alarms is not None
    # Quick rules so the test does not wait simulated minutes; the thresholds stay the defaults.
    services.alarms.config = AlarmConfig(
        high_temperature=RuleConfig(severity=Severity.MAJOR, raise_after_s=0),
        comm_loss=RuleConfig(severity=Severity.MAJOR, raise_after_s=5),
    )
    site_key = generate_key()
    (tmp_path / "site").mkdir()
    save_private_key(site_key, tmp_path / "site" / "site.key")
    services.registry.enrol(SITE, public_key_hex(site_key))
    token = generate_token()
    services.storage.add_token("e2e", "viewer", hash_token(token), 0)

    site = await start_sim_site(SiteSpec(id=SITE), clock)
    agent_cfg = site.config(
        tmp_path / "site",
        site={"id": SITE, "key_file": "site.key", "aggregator_keys": [agg_key.public_key]},
        broker={"host": "127.0.0.1", "port": mosquitto.port},
    )
    assert services.ingest is not None
    services.ingest.start()
    checker = asyncio.create_task(services.alarms.run(interval_s=1.0))
    agent = Agent(agent_cfg, clock)
    try:
        assert services.ingest.wait_connected(10)
        await agent.start()
        r = Rig(site, agent, services, clock, token)
        await until(
            lambda: ("meter", "mains_present") in services.storage.latest(SITE),
            "first readings stored",
        )
        yield r
    finally:
        await agent.stop()
        checker.cancel()
        await asyncio.gather(checker, return_exceptions=True)
        services.ingest.stop()
        await site.server.stop()
        services.storage.close()


async def test_mains_outage_heat_and_device_faults_raise_and_clear(rig: Rig) -> None:
    model = rig.site.runtime.model
    assert rig.active() == {}

    # Mains outage: the meter reports mains_present = 0.
    model.overrides.mains = False
    await until(lambda: "mains_failure" in rig.active(), "mains failure raised")
    alarm = rig.active()["mains_failure"]
    assert alarm.severity == "major" and alarm.device == "meter"
    model.overrides.mains = None
    await until(lambda: "mains_failure" not in rig.active(), "mains failure cleared")
    (done,) = rig.history("mains_failure")
    assert done.cleared_ms is not None and done.cleared_ms > done.raised_ms

    # Rectifier module failure.
    model.overrides.failed_modules.add(0)
    await until(lambda: "rectifier_fault" in rig.active(), "rectifier fault raised")
    assert rig.active()["rectifier_fault"].device == "rectifier"
    model.overrides.failed_modules.clear()
    await until(lambda: "rectifier_fault" not in rig.active(), "rectifier fault cleared")

    # Heat: a heat wave outside and a hot room inside.
    model.overrides.heat_c = 25.0
    model.aircon.room_c = 42.0
    await until(lambda: "high_temperature" in rig.active(), "high temperature raised")
    assert rig.active()["high_temperature"].device == "aircon"
    model.overrides.heat_c = 0.0
    model.aircon.room_c = 24.0
    await until(lambda: "high_temperature" not in rig.active(), "high temperature cleared")

    # A device that stops answering: comm loss after its persistence, cleared when it is back.
    now = time.monotonic()  # the fault board's wall clock
    rig.site.faults.add("aircon", Fault(FaultKind.TIMEOUT, now, now + 3600))
    await until(lambda: "comm_loss" in rig.active(), "comm loss raised")
    assert rig.active()["comm_loss"].device == "aircon"
    rig.site.faults.clear("aircon")
    await until(lambda: "comm_loss" not in rig.active(), "comm loss cleared")

    # The API lists what happened.
    app = create_app(rig.services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.get(
            "/api/alarms", params={"site": SITE}, headers={"Authorization": f"Bearer {rig.token}"}
        )
    assert r.status_code == 200
    kinds = sorted(a["kind"] for a in r.json()["alarms"])
    assert kinds == ["comm_loss", "high_temperature", "mains_failure", "rectifier_fault"]
    assert all(not a["active"] for a in r.json()["alarms"])
    metrics = rig.services.metrics.exposition().decode()
    assert 'sitewatt_aggregator_alarms_raised_total{kind="mains_failure"} 1.0' in metrics
    assert 'sitewatt_aggregator_alarms_cleared_total{kind="comm_loss"} 1.0' in metrics
