"""The MQTT link against a real mosquitto: QoS 1 round trips, TLS with per-site credentials,
refusals, the will, and a lost broker failing what was in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.delivery import Delivery
from agent.errors import LinkError
from agent.mqtt_link import Incoming, LinkSettings, MqttLink, Will
from agent.outbox import Outbox
from protocols.clock import SystemClock
from simulators.broker import Broker, free_port, mosquitto_available
from tests.support.delivery_driver import reading
from tests.support.delivery_fixtures import SITE, UNBOUNDED, Keys, running, settings, until
from tests.support.receiver import Receiver
from tests.support.tls import Pki, TlsBroker, make_pki


async def next_message(link: MqttLink, timeout: float = 5.0) -> Incoming:
    return await asyncio.wait_for(link.incoming.get(), timeout)


def plain(broker: Broker, client_id: str = "") -> LinkSettings:
    return LinkSettings(host=broker.host, port=broker.port, client_id=client_id, keepalive_s=5)


async def test_qos1_round_trip_many_in_flight(mosquitto: Broker) -> None:
    async with MqttLink(plain(mosquitto, "link-a")) as link:
        await link.subscribe(["t/echo"])
        futures = [link.publish("t/echo", f"m{i}".encode()) for i in range(500)]
        await asyncio.wait_for(asyncio.gather(*futures), 10)  # every PUBACK arrived
        got = [(await next_message(link)).payload for _ in range(500)]
    assert got == [f"m{i}".encode() for i in range(500)]  # in order, none lost
    assert link.closed.is_set() and not link.is_connected


async def test_lost_broker_fails_in_flight_and_closes(mosquitto: Broker) -> None:
    link = MqttLink(plain(mosquitto, "link-b"))
    await link.connect()
    mosquitto.stop(kill=True)
    await asyncio.wait_for(link.closed.wait(), 10)
    fut = link.publish("t/x", b"late")
    with pytest.raises(LinkError):
        await fut
    assert link.close_reason is not None


async def test_connect_refused_when_nothing_listens() -> None:
    link = MqttLink(LinkSettings(port=free_port(), connect_timeout_s=2))
    with pytest.raises(LinkError):
        await link.connect()
    assert link.closed.is_set()


async def test_will_is_published_when_the_link_vanishes(mosquitto: Broker) -> None:
    async with MqttLink(plain(mosquitto, "watcher")) as watcher:
        await watcher.subscribe(["t/state"])
        doomed = MqttLink(plain(mosquitto, "doomed"), will=Will("t/state", b"gone", retain=True))
        await doomed.connect()
        doomed.abort()
        msg = await next_message(watcher, 10)
    assert msg.payload == b"gone"


async def test_clean_disconnect_sends_no_will(mosquitto: Broker) -> None:
    async with MqttLink(plain(mosquitto, "watcher2")) as watcher:
        await watcher.subscribe(["t/state2"])
        async with MqttLink(plain(mosquitto, "polite"), will=Will("t/state2", b"gone")) as polite:
            await polite.publish("t/state2", b"bye")
        assert (await next_message(watcher)).payload == b"bye"
        # A marker published after the clean disconnect arrives next: no will in between.
        await watcher.publish("t/state2", b"marker")
        assert (await next_message(watcher)).payload == b"marker"


# -- TLS and per-site credentials ------------------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[TlsBroker]:
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed")
    b = TlsBroker(workdir=tmp_path / "mq-tls", pki=pki, users={f"site-{SITE}": "s3cret"})
    b.start()
    try:
        yield b
    finally:
        b.stop()


def tls(
    b: TlsBroker, pki: Pki, *, password: str = "s3cret", ca: Path | None = None
) -> LinkSettings:
    return LinkSettings(
        host="127.0.0.1",
        port=b.tls_port,
        client_id=f"agent-{SITE}",
        username=f"site-{SITE}",
        password=password,
        tls=True,
        ca_file=ca or pki.ca,
        keepalive_s=5,
        connect_timeout_s=5,
    )


async def test_tls_with_credentials_round_trip(tls_broker: TlsBroker, pki: Pki) -> None:
    async with MqttLink(tls(tls_broker, pki)) as link:
        await link.subscribe(["t/tls"])
        await asyncio.wait_for(
            asyncio.gather(*(link.publish("t/tls", bytes([i])) for i in range(200))), 10
        )
        got = [(await next_message(link)).payload for _ in range(200)]
    assert got == [bytes([i]) for i in range(200)]


async def test_tls_wrong_password_is_refused(tls_broker: TlsBroker, pki: Pki) -> None:
    with pytest.raises(LinkError, match="refused"):
        await MqttLink(tls(tls_broker, pki, password="wrong")).connect()


async def test_tls_untrusted_server_is_refused(tls_broker: TlsBroker, pki: Pki) -> None:
    with pytest.raises(LinkError):
        await MqttLink(tls(tls_broker, pki, ca=pki.other_ca)).connect()


async def test_delivery_over_tls_with_site_credentials(
    tls_broker: TlsBroker, pki: Pki, site_keys: Keys, tmp_path: Path
) -> None:
    rx = Receiver(
        host=tls_broker.host,
        port=tls_broker.port,
        db_path=tmp_path / "rx.db",
        aggregator_key=site_keys.aggregator_key,
        site_keys={SITE: site_keys.site_key.public_key()},
    ).start()
    try:
        outbox = Outbox(tmp_path / "agent.db", limits=UNBOUNDED)
        s = settings(tls_broker)
        delivery = Delivery(
            type(s)(link=tls(tls_broker, pki), policy=s.policy, idle_tick_s=s.idle_tick_s),
            site_keys.identity(),
            outbox,
            SystemClock(),
        )
        async with running(delivery):
            outbox.append([reading(i) for i in range(2000)])
            delivery.wake()
            await asyncio.to_thread(rx.wait_for, lambda r: r.stored_readings >= 2000, 20)
            await until(lambda: outbox.stats().depth == 0, 10, "receipts over TLS")
        assert sorted(rx.values(SITE)) == list(range(2000))
        outbox.close()
    finally:
        rx.stop()
