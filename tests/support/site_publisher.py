"""A test stand-in for an agent's delivery side: seals telemetry with a site key, publishes it
over MQTT (QoS 1), collects signed receipts, and re-sends what was not receipted — what the agent
does, without the agent, so the aggregator's tests depend only on `protocols`.

It also answers commands when asked (`auto_ack`): verifies them against the aggregator's key and
publishes a signed `applied` ack with a read-back of the params.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion

from protocols import envelope, messages
from protocols.errors import EnvelopeError, MessageError
from protocols.keys import generate_key, public_key_hex
from protocols.topics import DEFAULT_PREFIX, Topics
from protocols.types import Quality, Reading


def make_readings(
    n: int, t0: int, *, devices: int = 3, points: int = 50, step_ms: int = 10, base: float = 0.0
) -> list[Reading]:
    """`n` readings over `devices` × `points` keys, a mix of floats, ints, bools and a null."""
    out: list[Reading] = []
    for i in range(n):
        dev = f"dev{i % devices}"
        point = f"p{(i // devices) % points}"
        t = t0 + i * step_ms
        kind = i % 7
        if kind == 5:
            out.append(Reading(t, dev, point, bool(i % 2)))
        elif kind == 6 and i % 13 == 0:
            out.append(Reading(t, dev, point, None, Quality.COMM_ERROR))
        elif kind == 4:
            out.append(Reading(t, dev, point, i))
        else:
            out.append(Reading(t, dev, point, base + i * 0.25))
    return out


class SitePublisher:
    """One site's publisher on a real broker."""

    def __init__(
        self,
        site: str,
        *,
        host: str,
        port: int,
        key: Ed25519PrivateKey | None = None,
        prefix: str = DEFAULT_PREFIX,
        aggregator_key: Ed25519PublicKey | None = None,
        username: str | None = None,
        password: str | None = None,
        boot: str = "boot-1",
        auto_ack: bool = False,
    ) -> None:
        self.site = site
        self.key = key or generate_key()
        self.signer = envelope.Signer(self.key)
        self.topics = Topics(prefix)
        self.boot = boot
        self.aggregator_keys = envelope.Keyring([aggregator_key] if aggregator_key else [])
        self.receipts: set[int] = set()
        self.commands: list[messages.Command] = []
        self.aggregator_states: list[messages.AggregatorState] = []
        self.bad_receipts = 0
        self.sent: dict[int, bytes] = {}  # seq -> sealed bytes, kept until receipted
        self.auto_ack = auto_ack
        self.ack_delay_s = 0.0
        self._cond = threading.Condition()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-site-{site}-{id(self)}",
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        # "subscribed" means the broker's SUBACK came back, not that SUBSCRIBE was sent:
        # a command published in between would otherwise be lost to the test.
        self.client.on_subscribe = lambda *_args: self._subscribed.set()
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self._host, self._port = host, port
        self._subscribed = threading.Event()

    @property
    def public_key_hex(self) -> str:
        return public_key_hex(self.key)

    # ---- connection ----------------------------------------------------------------------

    def connect(self, timeout: float = 10.0, *, subscribe: bool = True) -> SitePublisher:
        self._subscribe = subscribe
        self.client.connect(self._host, self._port, keepalive=30)
        self.client.loop_start()
        if subscribe and not self._subscribed.wait(timeout):
            raise TimeoutError(f"{self.site}: not subscribed after {timeout}s")
        return self

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        if not self._subscribe:
            return
        client.subscribe(
            [
                (self.topics.receipt(self.site), 1),
                (self.topics.cmd(self.site), 1),
                (self.topics.aggregator_state(), 1),
            ]
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> SitePublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- incoming --------------------------------------------------------------------------

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            opened = envelope.unseal(bytes(msg.payload), msg.topic, self.aggregator_keys)
            decoded = messages.decode(opened.payload)
        except (EnvelopeError, MessageError):
            with self._cond:
                self.bad_receipts += 1
                self._cond.notify_all()
            return
        with self._cond:
            if isinstance(decoded, messages.Receipt) and decoded.site == self.site:
                self.receipts.update(decoded.seqs)
                for seq in decoded.seqs:
                    self.sent.pop(seq, None)
            elif isinstance(decoded, messages.Command) and decoded.site == self.site:
                self.commands.append(decoded)
            elif isinstance(decoded, messages.AggregatorState):
                self.aggregator_states.append(decoded)
            self._cond.notify_all()
        if isinstance(decoded, messages.Command) and self.auto_ack:
            threading.Thread(target=self._ack, args=(decoded,), daemon=True).start()

    def _ack(self, cmd: messages.Command) -> None:
        if self.ack_delay_s:
            time.sleep(self.ack_delay_s)
        readback = {f"x.{k}": v for k, v in cmd.params.to_map().items() if not isinstance(v, list)}
        ack = messages.Ack(
            id=cmd.id,
            site=self.site,
            seq=cmd.seq,
            status=messages.AckStatus.APPLIED,
            t=int(time.time() * 1000),
            readback=readback,
        )
        self.publish_message(ack, self.topics.ack(self.site))

    def wait_for(self, pred: Callable[[], bool], timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(pred, timeout)

    def wait_receipts(self, seqs: Iterable[int], timeout: float = 10.0) -> bool:
        want = set(seqs)
        return self.wait_for(lambda: want <= self.receipts, timeout)

    # ---- outgoing --------------------------------------------------------------------------

    def batch(
        self,
        seq: int,
        readings: Sequence[Reading],
        *,
        hist: bool = False,
        sent: int | None = None,
        site: str | None = None,
    ) -> messages.TelemetryBatch:
        return messages.TelemetryBatch(
            site=site or self.site,
            boot=self.boot,
            seq=seq,
            sent=sent if sent is not None else int(time.time() * 1000),
            readings=tuple(readings),
            hist=hist,
        )

    def seal(self, msg: messages.Message, topic: str) -> bytes:
        return self.signer.seal_bytes(messages.encode(msg), topic)

    def publish_raw(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)

    def publish_message(
        self, msg: messages.Message, topic: str | None = None, *, retain: bool = False
    ) -> bytes:
        topic = topic or self.topics.telemetry(self.site)
        data = self.seal(msg, topic)
        self.publish_raw(topic, data, retain=retain)
        return data

    def send_batch(self, batch: messages.TelemetryBatch) -> None:
        """Publish a batch and keep it until a receipt names it (the outbox rule)."""
        topic = self.topics.telemetry(self.site)
        data = self.seal(batch, topic)
        with self._cond:
            self.sent[batch.seq] = data
        self.client.publish(topic, data, qos=1)

    def resend_unreceipted(self) -> int:
        """Publish again, byte for byte, every batch not yet receipted."""
        with self._cond:
            pending = sorted(self.sent.items())
        for _, data in pending:
            self.client.publish(self.topics.telemetry(self.site), data, qos=1)
        return len(pending)

    def birth(self, *, online: bool = True, devices: dict[str, str] | None = None) -> None:
        state = messages.SiteState(
            site=self.site,
            online=online,
            boot=self.boot,
            version="test",
            t=int(time.time() * 1000),
            devices=devices if devices is not None else {"dev0": "test_profile"},
        )
        self.publish_message(state, self.topics.state(self.site), retain=True)


__all__ = ["SitePublisher", "make_readings"]
