"""The generated broker config on a real mosquitto: passwords, ACL per site, TLS listener."""

from __future__ import annotations

import getpass
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from aggregator.broker_config import AGGREGATOR_USER, hash_password, write_broker_config
from aggregator.errors import BrokerConfigError
from simulators.broker import MOSQUITTO, free_port, mosquitto_available, wait_port
from tests.aggregator.ingest_harness import poll

pytestmark = pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed")
PREFIX = "sitewatt/v1"


class Client:
    """A paho client that records what it receives."""

    def __init__(self, port: int, user: str, password: str, *, tls_ca: Path | None = None):
        self.got: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self.rc: object = None
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{user}-{id(self)}")
        self.c.username_pw_set(user, password)
        if tls_ca is not None:
            self.c.tls_set(ca_certs=str(tls_ca), cert_reqs=ssl.CERT_REQUIRED)
        self.c.on_message = lambda c, u, m: self.got.append((m.topic, bytes(m.payload)))
        self.c.on_connect = self._on_connect
        self.c.connect("127.0.0.1" if tls_ca is None else "localhost", port)
        self.c.loop_start()

    def _on_connect(self, c: mqtt.Client, u: object, f: object, rc: object, p: object) -> None:
        self.rc = rc
        self.connected.set()

    def sub(self, topic: str) -> None:
        _, mid = self.c.subscribe(topic, qos=1)
        assert mid is not None

    def pub(self, topic: str, payload: bytes) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[Path, int, int]]:
    plain, tls = free_port(), free_port()
    files = write_broker_config(
        tmp_path / "broker",
        sites=["A", "B"],
        prefix=PREFIX,
        tls_port=tls,
        tls_bind="127.0.0.1",
        tls_generate=True,
        plain_port=plain,
        run_as=getpass.getuser(),  # as root, mosquitto would drop to a user who cannot read
    )
    log = open(tmp_path / "mosquitto.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([MOSQUITTO, "-c", str(files.conf)], stdout=log, stderr=log)
    try:
        wait_port("127.0.0.1", plain, proc=proc)
        wait_port("127.0.0.1", tls, proc=proc)
        yield files.out, plain, tls
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _pw(out: Path, user: str) -> str:
    return (out / "credentials" / user).read_text().strip()


def test_site_credentials_cannot_act_as_another_site(broker: tuple[Path, int, int]) -> None:
    out, port, _ = broker
    agg = Client(port, AGGREGATOR_USER, _pw(out, AGGREGATOR_USER))
    a = Client(port, "A", _pw(out, "A"))
    b = Client(port, "B", _pw(out, "B"))
    clients = [agg, a, b]
    try:
        assert all(c.connected.wait(5) for c in clients)
        assert all(not getattr(c.rc, "is_failure", True) for c in clients)
        agg.sub(f"{PREFIX}/+/telemetry")
        a.sub(f"{PREFIX}/B/cmd")  # A tries to read B's commands
        a.sub(f"{PREFIX}/A/cmd")
        b.sub(f"{PREFIX}/B/cmd")
        b.sub(f"{PREFIX}/aggregator/state")
        for c in clients:  # subscriptions settle: a round trip through the broker
            c.sub("$SYS/none")
        a.pub(f"{PREFIX}/B/telemetry", b"A-as-B")  # refused by the ACL
        a.pub(f"{PREFIX}/A/telemetry", b"A-own")
        b.pub(f"{PREFIX}/A/cmd", b"B-forges-cmd")  # a site cannot send commands
        agg.pub(f"{PREFIX}/B/cmd", b"cmd-for-B")
        agg.pub(f"{PREFIX}/A/cmd", b"cmd-for-A")
        agg.pub(f"{PREFIX}/aggregator/state", b"online")
        assert poll(lambda: (f"{PREFIX}/A/telemetry", b"A-own") in agg.got, 5)
        assert poll(lambda: (f"{PREFIX}/B/cmd", b"cmd-for-B") in b.got, 5)
        assert poll(lambda: (f"{PREFIX}/A/cmd", b"cmd-for-A") in a.got, 5)
        assert poll(lambda: (f"{PREFIX}/aggregator/state", b"online") in b.got, 5)
        # by now everything sent before has been routed: the refused ones never arrived
        assert (f"{PREFIX}/B/telemetry", b"A-as-B") not in agg.got
        assert all(topic != f"{PREFIX}/B/cmd" for topic, _ in a.got)
        assert (f"{PREFIX}/A/cmd", b"B-forges-cmd") not in a.got
    finally:
        for c in clients:
            c.close()
    # a wrong password is refused
    bad = Client(port, "A", "wrong")
    try:
        assert bad.connected.wait(5) and getattr(bad.rc, "is_failure", False)
    finally:
        bad.close()


def test_tls_listener_with_generated_ca(broker: tuple[Path, int, int]) -> None:
    out, _, tls = broker
    c = Client(tls, "A", _pw(out, "A"), tls_ca=out / "tls" / "ca.crt")
    try:
        assert c.connected.wait(5) and not getattr(c.rc, "is_failure", True)
        c.sub(f"{PREFIX}/A/receipt")
        c.pub(f"{PREFIX}/A/telemetry", b"over-tls")
    finally:
        c.close()


def test_rerun_keeps_passwords_and_checks_input(tmp_path: Path) -> None:
    out = tmp_path / "b"
    write_broker_config(out, sites=["A"], prefix=PREFIX, tls_port=None, plain_port=1883)
    first = _pw(out, "A")
    files = write_broker_config(out, sites=["A", "C"], prefix=PREFIX, tls_port=None, plain_port=1)
    assert _pw(out, "A") == first and "C" in files.credentials
    assert (out / "credentials" / "C").stat().st_mode & 0o077 == 0
    assert "max_queued_messages 1000000" in files.conf.read_text()
    with pytest.raises(BrokerConfigError):
        write_broker_config(out, sites=["bad/site"], prefix=PREFIX, tls_port=None, plain_port=1)
    with pytest.raises(BrokerConfigError, match="TLS files missing"):
        write_broker_config(tmp_path / "c", sites=[], prefix=PREFIX, tls_port=8883)
    assert hash_password("x", salt=b"\0" * 12).startswith("$7$101$AAAAAAAAAAAAAAAA$")
