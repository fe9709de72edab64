"""Dormant exits end to end: the whole agent (polling, guard, commands) on a fast SimClock
against the simulated site and a real mosquitto. A signed `site.dormant` puts the site to sleep;
then the room heats up (AC fault in a heat wave), the coverage load rises, the window ends, or
the mains fail — and the agent wakes the site by itself: capacity channels closed, ECO back to
the site's setting, AC setpoint back to its default, the exit in the audit log."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from agent.audit import AuditEntry
from agent.runtime import Agent
from protocols import envelope, messages
from protocols.clock import SimClock, now_ms
from protocols.keys import generate_key, save_private_key
from protocols.messages import Ack, AckStatus, Command, Dormant, Params
from protocols.topics import Topics
from protocols.types import Quality, Reading
from simulators.broker import Broker
from simulators.modbus.faults import Fault, FaultKind
from simulators.spec import (
    BatterySpec,
    BreakerSpec,
    ChannelSpec,
    LoadKind,
    SavingLevel,
    SiteSpec,
    default_channels,
)
from tests.agent.devices_support import AGG_PRIVATE, wait_for
from tests.agent.sim_support import SimSite, start_sim_site

SITE = "site-t1"  # the id sim_support's configs give
START = 1_700_000_000.0 + 6 * 3600  # 14:00 in Asia/Shanghai
SPEED = 200.0
POLL_S = 100.0  # simulated; 0.5 s of real time. Readings are good for 4 polls (2 s): a loaded
# machine stalling the loop for a second must not age them out (a false `inputs_unknown` wake).
ANCHOR = 2  # index of the coverage (anchor AAU) channel in the simulator: site channel 3
AC_DEFAULT = 25.0


class Operator:
    """The aggregator's command side: signs commands, collects acks, sees the agent's birth."""

    def __init__(self, broker: Broker, site_key: Ed25519PrivateKey) -> None:
        self.topics = Topics()
        self.signer = envelope.Signer(AGG_PRIVATE)
        self.ring = envelope.Keyring([site_key.public_key()])
        self.acks: list[Ack] = []
        self.ack_bytes: list[bytes] = []
        self.born = threading.Event()
        self.seq = 0
        # A persistent session: what the agent publishes while we reconnect (after a broker
        # restart) is kept for us.
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"op-{uuid.uuid4().hex[:8]}",
            clean_session=False,
        )
        c.on_connect = lambda client, *a: client.subscribe(
            [(self.topics.ack(SITE), 1), (self.topics.state(SITE), 1)]
        )
        c.on_message = self._on_message
        c.connect(broker.host, broker.port)
        c.loop_start()
        self.client = c

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        body = messages.decode(envelope.unseal(bytes(msg.payload), msg.topic, self.ring).payload)
        if isinstance(body, Ack):
            self.acks.append(body)
            self.ack_bytes.append(bytes(msg.payload))
        elif isinstance(body, messages.SiteState) and body.online:
            self.born.set()

    def send(self, clock: SimClock, params: Params, *, lease_s: int = 3600) -> Command:
        self.seq += 1
        t = now_ms(clock)
        cmd = Command(str(uuid.uuid4()), SITE, self.seq, t, t + 60_000, lease_s, params)
        topic = self.topics.cmd(SITE)
        self.client.publish(topic, self.signer.seal_bytes(messages.encode(cmd), topic), qos=1)
        return cmd

    def ack_for(self, cmd: Command) -> Ack | None:
        return next((a for a in self.acks if a.id == cmd.id), None)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class Live:
    site: SimSite
    agent: Agent
    op: Operator
    clock: SimClock

    def exits(self) -> list[AuditEntry]:
        return [e for e in self.agent.audit.entries() if e.source == "agent"]

    async def point(self, device: str, point: str) -> Any:
        """A point read by the agent itself just now (fresh, decoded)."""
        await self.agent.poller.poll_once(device, report=False)
        r = self.agent.poller.latest.get(device, point)
        assert r is not None
        return r.value

    async def dormant(self, params: Dormant) -> None:
        cmd = self.op.send(self.clock, params)
        await wait_for(lambda: self.op.ack_for(cmd) is not None, timeout=15)
        ack = self.op.ack_for(cmd)
        assert ack is not None and ack.status is AckStatus.APPLIED, ack
        assert ack.readback["breaker.ch4_closed"] is False
        assert ack.readback["rectifier.eco_enable"] == 1
        assert ack.readback["aircon.setpoint"] == pytest.approx(AC_DEFAULT + 2.0)
        assert self.agent.commands.hold is not None

    async def settled(self, timeout: float = 10.0) -> float:
        """Until the dormant hold has its load-rise baseline; the baseline (W)."""

        def taken() -> bool:
            hold = self.agent.commands.hold
            return hold is not None and hold.coverage_at_entry_w is not None

        await wait_for(taken, timeout=timeout)
        hold = self.agent.commands.hold
        assert hold is not None and hold.coverage_at_entry_w is not None
        return hold.coverage_at_entry_w

    async def woken_by(self, reason: str, timeout: float = 20.0) -> AuditEntry:
        def done() -> bool:
            return any(e.reason == reason and e.status == "applied" for e in self.exits())

        await wait_for(done, timeout=timeout)
        entry = next(e for e in self.exits() if e.reason == reason)
        assert [e.reason for e in self.exits()] == [reason]  # no other act came first
        assert entry.action == "site.wake" and entry.command_id == f"agent:{reason}"
        assert self.agent.commands.hold is None
        assert not self.agent.commands.leases.holds("dormant")
        assert await self.point("breaker", "ch4_closed") is True
        assert await self.point("breaker", "ch5_closed") is True
        assert await self.point("rectifier", "eco_enable") == 0  # the site's own setting
        assert await self.point("aircon", "setpoint") == pytest.approx(AC_DEFAULT)
        assert self.agent.audit.verify().ok
        return entry


@asynccontextmanager
async def running(
    tmp_path: Path,
    broker: Broker,
    *,
    spec: SiteSpec | None = None,
    start: float = START,
    speed: float = SPEED,
    poll_s: float = POLL_S,
) -> AsyncIterator[Live]:
    """The whole agent on a simulated site (SimClock `speed`×), an operator on `broker`."""
    clock = SimClock(start=start, speed=speed)
    battery = BatterySpec(capacity_ah=1000, initial_soc=90.0)
    spec = spec or SiteSpec(id=SITE, battery=battery)
    site = await start_sim_site(spec, clock)
    site.runtime.model.aircon.setpoint_c = AC_DEFAULT
    site_key = generate_key()
    save_private_key(site_key, tmp_path / "site.key")
    cfg = site.config(
        tmp_path,
        poll_interval_s=poll_s,
        broker={"host": broker.host, "port": broker.port},
        outbox={"path": "agent.db", "drain_jitter_max_s": 0.0},
    )
    op = await asyncio.to_thread(Operator, broker, site_key)
    agent = Agent(cfg, clock)
    try:
        await agent.start()
        assert await asyncio.to_thread(op.born.wait, 15)
        view: Callable[[], Any] = agent.commands.view
        await wait_for(lambda: view().room_temp_c is not None, timeout=10)
        await wait_for(lambda: view().coverage_load_w is not None, timeout=10)
        yield Live(site, agent, op, clock)
    finally:
        await agent.stop()
        await asyncio.to_thread(op.close)
        await site.server.stop()


@pytest.fixture
async def live(tmp_path: Path, mosquitto: Broker) -> AsyncIterator[Live]:
    async with running(tmp_path, mosquitto) as rig:
        yield rig


async def test_heat_wakes_a_dormant_site(live: Live) -> None:
    await live.dormant(Dormant((4, 5), True, 2.0))
    model = live.site.runtime.model
    model.aircon.on = False  # the AC trips …
    model.overrides.heat_c = 20.0  # … in a heat wave
    await live.woken_by("room_hot")
    assert await live.point("aircon", "on") is True  # the wake switched the AC back on


async def test_coverage_load_rise_wakes_a_dormant_site(live: Live) -> None:
    model = live.site.runtime.model
    model.overrides.saving[ANCHOR] = SavingLevel.DEEP_SLEEP  # the anchor cell idles …
    await wait_for(lambda: (live.agent.commands.view().coverage_load_w or 1e9) < 600, timeout=10)
    await live.dormant(Dormant((4, 5), True, 2.0))
    await live.settled()  # the rise is measured from the load once dormancy has settled
    model.overrides.saving.pop(ANCHOR)  # … then traffic comes back on it
    await live.woken_by("load_rise")


async def test_window_end_wakes_a_dormant_site(live: Live) -> None:
    until = now_ms(live.clock) + 300_000  # five simulated minutes: 1.5 s of real time
    await live.dormant(Dormant((4, 5), True, 2.0, until=until))
    entry = await live.woken_by("window_end")
    assert entry.t >= until


async def test_mains_failure_wakes_a_dormant_site(live: Live) -> None:
    await live.dormant(Dormant((4, 5), True, 2.0))
    live.site.runtime.model.overrides.mains = False
    await live.woken_by("mains_failure")


# -- dormant entry must not wake itself (the coverage layer takes over the capacity traffic) ----

START_NIGHT = 1_700_071_200.0  # 02:00 in Asia/Shanghai: a dormant window's hour


def big_capacity_layer() -> SiteSpec:
    """A site whose capacity layer carries enough traffic that, switched off, the anchor cell
    (300 W idle … 1.5 kW) draws over half as much again: ≈ +57 % at 02:00 (default site: +18 %)."""
    chans = list(default_channels())
    chans[ANCHOR] = ChannelSpec(
        name="aau_anchor", kind=LoadKind.AAU_ANCHOR, idle_w=300, peak_w=1500, critical=True
    )
    for i in (3, 4):
        chans[i] = ChannelSpec(
            name=f"aau_capacity_{i - 2}", kind=LoadKind.AAU_CAPACITY, idle_w=500, peak_w=1500
        )
    return SiteSpec(
        id=SITE,
        battery=BatterySpec(capacity_ah=1000, initial_soc=90.0),
        breaker=BreakerSpec(channels=tuple(chans)),
    )


async def test_dormant_entry_does_not_wake_itself_a_later_rise_does(
    tmp_path: Path, mosquitto: Broker
) -> None:
    async with running(tmp_path, mosquitto, spec=big_capacity_layer(), start=START_NIGHT) as live:
        model = live.site.runtime.model
        model.overrides.saving[ANCHOR] = SavingLevel.DEEP_SLEEP  # keeps the anchor's draw low
        view = live.agent.commands.view
        await wait_for(lambda: (view().coverage_load_w or 1e9) < 300, timeout=10)
        before = view().coverage_load_w
        assert before is not None
        await live.dormant(Dormant((4, 5), True, 2.0))
        base = await live.settled()
        # The takeover itself: the old rule (baseline before entry) would have woken the site.
        rise = 100 * (base / before - 1)
        assert rise > live.agent.config.interlocks.dormant_load_rise_pct, (before, base)
        # Dormant it stays: several polls after the baseline, no exit.
        until = live.clock.now() + 5 * POLL_S
        await wait_for(lambda: live.clock.now() > until, timeout=10)
        assert live.exits() == [] and live.agent.commands.hold is not None
        assert await live.point("breaker", "ch4_closed") is False
        # A genuine rise after the settle still wakes it: traffic comes back on the anchor.
        model.overrides.saving.pop(ANCHOR)
        await live.woken_by("load_rise")


# -- no blind dormancy -----------------------------------------------------------------------------


def silent() -> Fault:
    """A device answering every request with an exception for the next minute (wall time)."""
    return Fault(FaultKind.EXCEPTION, time.monotonic(), time.monotonic() + 60)


async def test_a_silent_meter_wakes_a_dormant_site_one_lost_poll_does_not(live: Live) -> None:
    await live.dormant(Dormant((4, 5), True, 2.0))
    latest = live.agent.poller.latest

    def mains() -> Reading:
        r = latest.get("meter", "mains_present")
        assert r is not None
        return r

    # One lost poll (the meter answers one request with an exception, then is fine again).
    live.site.faults.add(
        "meter", Fault(FaultKind.EXCEPTION, time.monotonic(), time.monotonic() + 60)
    )
    await wait_for(lambda: mains().quality is not Quality.GOOD, timeout=10)
    live.site.faults.clear("meter")
    lost_at = mains().t
    await wait_for(lambda: mains().quality is Quality.GOOD and mains().t > lost_at, timeout=10)
    until = live.clock.now() + live.agent.commands.max_age_ms / 1000
    await wait_for(lambda: live.clock.now() > until, timeout=10)
    assert live.exits() == [] and live.agent.commands.hold is not None
    # The meter stops answering for good: the mains state is unknown, the site wakes itself.
    live.site.faults.add(
        "meter", Fault(FaultKind.EXCEPTION, time.monotonic(), time.monotonic() + 60)
    )
    entry = await live.woken_by("inputs_unknown")
    assert entry.t - lost_at > live.agent.commands.max_age_ms
