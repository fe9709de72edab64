"""Fixtures and helpers for delivery tests: keys on disk, the receiver, a running Delivery."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from agent.delivery import Delivery, DeliverySettings
from agent.delivery_rules import DeliveryPolicy
from agent.identity import SiteIdentity, load_identity
from agent.mqtt_link import LinkSettings
from agent.outbox import OutboxLimits
from protocols.keys import generate_key, public_key_hex, save_private_key
from simulators.broker import Broker
from tests.support.receiver import Receiver

SITE = "site-a"
FAST = DeliveryPolicy(
    batch_max_readings=200,
    batch_max_age_s=0.05,
    window=16,
    receipt_timeout_s=5.0,
    jitter_max_s=0.05,
    reconnect_min_s=0.1,
    reconnect_max_s=0.5,
)
UNBOUNDED = OutboxLimits(max_readings=None, max_bytes=None, max_age_s=None)


@dataclass
class Keys:
    """A site key on disk (0600) and an aggregator key pair."""

    site: str
    key_file: Path
    site_key: Ed25519PrivateKey
    aggregator_key: Ed25519PrivateKey
    aggregator_key_file: Path

    @property
    def aggregator_pub_hex(self) -> str:
        return public_key_hex(self.aggregator_key)

    def identity(self) -> SiteIdentity:
        return load_identity(self.site, self.key_file, [self.aggregator_pub_hex])


@pytest.fixture
def site_keys(tmp_path: Path) -> Keys:
    site_key, agg_key = generate_key(), generate_key()
    save_private_key(site_key, tmp_path / "site.key")
    save_private_key(agg_key, tmp_path / "aggregator.key")
    return Keys(SITE, tmp_path / "site.key", site_key, agg_key, tmp_path / "aggregator.key")


@pytest.fixture
def receiver(mosquitto: Broker, tmp_path: Path, site_keys: Keys) -> Iterator[Receiver]:
    rx = Receiver(
        host=mosquitto.host,
        port=mosquitto.port,
        db_path=tmp_path / "receiver.db",
        aggregator_key=site_keys.aggregator_key,
        site_keys={site_keys.site: site_keys.site_key.public_key()},
    )
    rx.start()
    try:
        yield rx
    finally:
        rx.stop()


def settings(broker: Broker, policy: DeliveryPolicy = FAST, **kw: Any) -> DeliverySettings:
    link = LinkSettings(
        host=broker.host, port=broker.port, client_id=f"agent-{SITE}", keepalive_s=5
    )
    return DeliverySettings(link=link, policy=policy, idle_tick_s=0.05, **kw)


class FixedRandom(random.Random):
    """Every draw is `u`: makes the jitter exact in tests."""

    def __init__(self, u: float) -> None:
        super().__init__(0)
        self.u = u

    def random(self) -> float:
        return self.u


@asynccontextmanager
async def running(delivery: Delivery) -> AsyncIterator[Delivery]:
    """Run `delivery` in a task for the block; stop it cleanly (and surface its errors)."""
    task = asyncio.create_task(delivery.run())
    try:
        yield delivery
    finally:
        await delivery.stop()
        await asyncio.wait_for(task, 15)


async def until(cond: Callable[[], bool], timeout: float, what: str = "condition") -> None:
    """Poll `cond` on the event loop until it holds; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout}s")
        await asyncio.sleep(0.01)


async def wait_receiver(rx: Receiver, cond: Callable[[Receiver], bool], timeout: float) -> None:
    """`Receiver.wait_for` off the event loop, so the agent keeps running meanwhile."""
    await asyncio.to_thread(rx.wait_for, cond, timeout)


@dataclass
class Sniffer:
    """A plain subscriber recording every message on some topics: (topic, payload, retain)."""

    broker: Broker
    topics: list[str]
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _client: mqtt.Client | None = None

    def __enter__(self) -> Sniffer:
        ready = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv311)

        def on_connect(cl: mqtt.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
            cl.subscribe([(t, 1) for t in self.topics])

        def on_subscribe(cl: mqtt.Client, u: Any, mid: int, rcs: Any, p: Any) -> None:
            ready.set()

        def on_message(cl: mqtt.Client, u: Any, m: mqtt.MQTTMessage) -> None:
            with self.lock:
                self.messages.append((m.topic, bytes(m.payload), bool(m.retain)))

        c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
        c.connect(self.broker.host, self.broker.port)
        c.loop_start()
        if not ready.wait(10):
            raise TimeoutError("sniffer did not subscribe")
        self._client = c
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()

    def on(self, topic: str) -> list[tuple[bytes, bool]]:
        with self.lock:
            return [(p, r) for t, p, r in self.messages if t == topic]

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        assert self._client is not None
        self._client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)


__all__ = [
    "FAST",
    "SITE",
    "UNBOUNDED",
    "FixedRandom",
    "Keys",
    "Sniffer",
    "receiver",
    "running",
    "settings",
    "site_keys",
    "until",
    "wait_receiver",
]
