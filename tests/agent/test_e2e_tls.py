"""The agent connects to a TLS listener of mosquitto with per-site credentials: certificates
made here with `cryptography`, a password file made with `mosquitto_passwd`, no anonymous
access. The site's signed birth arrives; a wrong password is refused."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.runtime import Agent
from protocols import envelope, messages
from protocols.keys import generate_key, save_private_key
from simulators.broker import MOSQUITTO, free_port, wait_port
from tests.agent.devices_support import site_config, wait_for
from tests.support.tls import make_pki

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto_passwd") is None or not Path(MOSQUITTO).exists(),
    reason="mosquitto is not installed",
)
SITE = "site-tls"


@dataclass
class TlsBroker:
    host: str
    port: int
    ca: Path
    users: dict[str, str]


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    d = tmp_path / "broker"
    d.mkdir()
    pki = make_pki(d)
    ca, cert, key = pki.ca, pki.cert, pki.key
    users = {SITE: "site-secret", "observer": "observer-secret"}
    pw = d / "passwd"
    for i, (user, password) in enumerate(users.items()):
        flags = ["-c"] if i == 0 else []
        subprocess.run(["mosquitto_passwd", *flags, "-b", str(pw), user, password], check=True)
    port = free_port()
    conf = d / "mosquitto.conf"
    # Started as root, mosquitto drops to user "mosquitto", who cannot read pytest's 0700 tmp.
    user = "user root\n" if os.geteuid() == 0 else ""
    conf.write_text(
        f"{user}listener {port} 127.0.0.1\n"
        f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
        f"password_file {pw}\nallow_anonymous false\npersistence false\n"
    )
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_port("127.0.0.1", port, proc=proc)
        yield TlsBroker("127.0.0.1", port, ca, users)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
        c.connect(b.host, b.port)
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
                "port": b.port,
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
