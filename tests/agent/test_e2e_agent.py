"""The whole agent (config/site.toml as shipped, ports aside) against the simulated site of
config/sim-site.toml, a real mosquitto and an independent verifying receiver: telemetry arrives
signed, a command is applied and acked with its read-back, a lease lapse and the aggregator
going offline return the site to its safe default."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import load_config
from agent.modbus_bus import ModbusBus
from agent.runtime import Agent
from protocols import envelope, messages
from protocols.keys import generate_key, load_private_key, public_key_hex
from protocols.messages import Ack, AckStatus, BreakerSet, Command, Params, PeakShave
from protocols.topics import Topics
from simulators.broker import Broker
from simulators.host import SimHost
from simulators.launch import build_site_host
from simulators.scenario import load_site_scenario
from tests.agent.devices_support import wait_for
from tests.agent.sim_support import site_config_for
from tests.conftest import REPO
from tests.support.receiver import Receiver

SITE = "sim-site-1"
FAST = {
    "poll_interval_s = 5.0": "poll_interval_s = 0.5",
    "poll_interval_s = 10.0": "poll_interval_s = 1.0",
    "batch_max_age_s = 5.0": "batch_max_age_s = 0.3",
    "drain_jitter_max_s = 30.0": "drain_jitter_max_s = 0.1",
    "interval_s = 60.0": "interval_s = 1.0",
}


class Operator:
    """Stands in for the aggregator's command side: signs commands, collects verified acks."""

    def __init__(self, broker: Broker, agg: Ed25519PrivateKey, site_pub: Ed25519PublicKey) -> None:
        self.topics = Topics()
        self.signer = envelope.Signer(agg)
        self.ring = envelope.Keyring([site_pub])
        self.acks: list[Ack] = []
        self.seq = 0
        self._ready = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-operator")
        c.on_connect = self._on_connect
        c.on_subscribe = lambda *a: self._ready.set()
        c.on_message = self._on_message
        c.connect(broker.host, broker.port)
        c.loop_start()
        assert self._ready.wait(10)
        self.client = c

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        client.subscribe(self.topics.ack(SITE), qos=1)

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        opened = envelope.unseal(
            bytes(msg.payload), msg.topic, self.ring
        )  # raises if not the site's
        ack = messages.decode(opened.payload)
        assert isinstance(ack, Ack)
        self.acks.append(ack)

    def send(self, params: Params, *, lease_s: int = 60, key: Any = None) -> Command:
        self.seq += 1
        now = int(time.time() * 1000)
        cmd = Command(str(uuid.uuid4()), SITE, self.seq, now, now + 30_000, lease_s, params)
        topic = self.topics.cmd(SITE)
        signer = self.signer if key is None else envelope.Signer(key)
        self.client.publish(topic, signer.seal_bytes(messages.encode(cmd), topic), qos=1)
        return cmd

    def ack_for(self, cmd: Command) -> Ack | None:
        return next((a for a in self.acks if a.id == cmd.id), None)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
async def sim() -> AsyncIterator[SimHost]:
    host = build_site_host(load_site_scenario(REPO / "config" / "sim-site.toml"), port_base=0)
    await host.start()
    try:
        yield host
    finally:
        await host.stop()


async def read_point(sim: SimHost, kind: str, point: str) -> Any:
    """Read a device's point over Modbus, independently of the agent."""
    ep = sim.endpoint(kind)
    pt = ep.device.profile.point(point)
    async with ModbusBus("probe", host=ep.host, port=ep.port) as bus:
        raw = await bus.read(ep.unit, pt.table, pt.address, pt.width, timeout=1.0)
    return bool(raw[0]) if pt.table.is_bits else raw[0]


async def test_agent_end_to_end(tmp_path: Path, sim: SimHost, mosquitto: Broker) -> None:
    agg = generate_key()
    path = site_config_for(tmp_path, sim, mosquitto, public_key_hex(agg), replace=FAST)
    cfg = load_config(path)
    site_key = load_private_key(cfg.site.key_file)
    rx = Receiver(
        host=mosquitto.host,
        port=mosquitto.port,
        db_path=tmp_path / "rx.db",
        aggregator_key=agg,
        site_keys={SITE: site_key.public_key()},
    )
    await asyncio.to_thread(rx.start)
    op = await asyncio.to_thread(Operator, mosquitto, agg, site_key.public_key())
    agent = Agent(cfg)
    try:
        await agent.start()

        # Telemetry of every device (and the gateway's health) reaches the verifying receiver.
        def devices_seen() -> set[str]:
            return {d for (d,) in rx.query("SELECT DISTINCT device FROM readings")}

        await wait_for(
            lambda: {"battery", "breaker", "meter", "gateway"} <= devices_seen(), timeout=20
        )
        soc = rx.query("SELECT value FROM readings WHERE device='battery' AND point='soc'")
        assert soc and 90 <= soc[-1][0] <= 100

        # A forged command: rejected, acked as such, nothing written.
        forged = op.send(BreakerSet(4, False), key=generate_key())
        await wait_for(lambda: op.ack_for(forged) is not None, timeout=10)
        ack = op.ack_for(forged)
        assert ack is not None and ack.status is AckStatus.REJECTED and ack.reason == "unknown_kid"
        assert await read_point(sim, "breaker", "ch4_closed") is True

        # An accepted command: written, read back, acked (signed by the site: Operator verified).
        cmd = op.send(BreakerSet(4, False), lease_s=3)
        await wait_for(lambda: op.ack_for(cmd) is not None, timeout=15)
        ack = op.ack_for(cmd)
        assert ack is not None and ack.status is AckStatus.APPLIED, ack
        assert ack.readback == {"breaker.ch4_closed": False}
        assert await read_point(sim, "breaker", "ch4_closed") is False
        # Its lease is not renewed: the agent closes the channel again by itself.
        await wait_for(lambda: not agent.commands.leases.holds("breaker.4"), timeout=15)
        assert await read_point(sim, "breaker", "ch4_closed") is True

        # A peak shave, then the aggregator goes offline: the battery returns to auto.
        shave = op.send(PeakShave(2000), lease_s=600)
        await wait_for(lambda: op.ack_for(shave) is not None, timeout=15)
        ack = op.ack_for(shave)
        assert ack is not None and ack.status is AckStatus.APPLIED, ack
        assert await read_point(sim, "battery", "mode") == 2
        await asyncio.to_thread(rx.set_online, False)
        await wait_for(lambda: not agent.commands.leases.holds("battery"), timeout=15)
        assert await read_point(sim, "battery", "mode") == 0

        # The restore's audit entry is committed (off the loop) just after the lease is dropped.
        def agent_reasons() -> list[str]:
            return [e.reason for e in agent.audit.entries() if e.source == "agent"]

        await wait_for(lambda: len(agent_reasons()) >= 2, timeout=10)
        assert agent_reasons() == ["lease_lapsed", "aggregator_offline"]
        assert agent.audit.verify().ok
    finally:
        await agent.stop()
        await asyncio.to_thread(op.close)
        await asyncio.to_thread(rx.stop)
