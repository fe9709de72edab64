"""The agent connects to a TLS listener of mosquitto with per-site credentials: certificates
made here with `cryptography`, a password file made with `mosquitto_passwd`, no anonymous
access. The site's signed birth arrives; a wrong password is refused."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.runtime import Agent
from protocols import envelope, messages
from protocols.keys import generate_key, save_private_key
from simulators.broker import MOSQUITTO, free_port
from tests.agent.devices_support import site_config, wait_for
from tests.support.tls import TlsBroker, make_pki

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto_passwd") is None or not Path(MOSQUITTO).exists(),
    reason="mosquitto is not installed",
)
SITE = "site-tls"


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    users = {SITE: "site-secret", "observer": "observer-secret"}
    b = TlsBroker(workdir=tmp_path / "broker", pki=make_pki(tmp_path / "pki"), users=users)
    b.start()
    try:
        yield b
    finally:
        b.stop()


class Observer:
    """A TLS client with its own credentials, keeping the site's verified state messages."""

    def __init__(self, b: TlsBroker, site_pub: Any) -> None:
        self.ring = envelope.Keyring([site_pub])
        self.states: list[messages.SiteState] = []
        ready = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="observer")
        c.username_pw_set("observer", b.users["observer"])
        c.tls_set(ca_certs=str(b.ca), cert_reqs=ssl.CERT_REQUIRED)
        c.on_connect = lambda client, *a: client.subscribe(f"sitewatt/v1/{SITE}/state", qos=1)
        c.on_subscribe = lambda *a: ready.set()
        c.on_message = self._on_message
        c.connect(b.host, b.tls_port)
        c.loop_start()
        assert ready.wait(10), "observer could not subscribe over TLS"
        self.client = c

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        opened = envelope.unseal(bytes(msg.payload), msg.topic, self.ring)
        state = messages.decode(opened.payload)
        assert isinstance(state, messages.SiteState)
        self.states.append(state)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def tls_config(tmp_path: Path, b: TlsBroker, password: str) -> Any:
    save_private_key(generate_key(), tmp_path / "site.key", overwrite=True)
    (tmp_path / "broker.pw").write_text(password + "\n")
    return site_config(
        tmp_path,
        {
            "meter": {
                "kind": "meter",
                "profile": "meter_gridline_gm1",
                "host": "127.0.0.1",
                "port": free_port(),
                "timeout_s": 0.2,
            }
        },
        site_id=SITE,
        extra={
            "broker": {
                "host": b.host,
                "port": b.tls_port,
                "tls": True,
                "ca_file": str(b.ca),
                "username": SITE,
                "password_file": "broker.pw",
            },
            "gateway": {"enabled": False},
        },
    )


async def test_agent_over_tls_with_site_credentials(tmp_path: Path, tls_broker: TlsBroker) -> None:
    cfg = tls_config(tmp_path, tls_broker, tls_broker.users[SITE])
    agent = Agent(cfg)
    observer = await asyncio.to_thread(Observer, tls_broker, agent.identity.signer.public_key)
    try:
        await agent.start()
        await wait_for(lambda: any(s.online for s in observer.states), timeout=15)
        assert agent.delivery.connected
        birth = next(s for s in observer.states if s.online)
        assert birth.site == SITE and birth.devices == {"meter": "meter_gridline_gm1"}
    finally:
        await agent.stop()
        await asyncio.to_thread(observer.close)


async def test_wrong_password_is_refused(tmp_path: Path, tls_broker: TlsBroker) -> None:
    cfg = tls_config(tmp_path, tls_broker, "not-the-password")
    agent = Agent(cfg)
    try:
        await agent.start()
        await wait_for(lambda: agent.delivery.counters.connect_failures >= 1, timeout=15)
        assert not agent.delivery.connected
    finally:
        await agent.stop()
