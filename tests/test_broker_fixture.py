"""The brokers we launch are real: a message goes through each, and mosquitto survives a restart."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from simulators.broker import Broker


def _round_trip(broker: Broker, tag: str) -> bool:
    got = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.payload == tag.encode():
            got.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{tag}")
    sub.on_message = on_message
    sub.connect(broker.host, broker.port)
    sub.subscribe("t/x", qos=1)
    sub.loop_start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{tag}")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    try:
        # Re-publish until the subscription is live: a condition with a timeout, not a sleep.
        for _ in range(50):
            pub.publish("t/x", tag.encode(), qos=1).wait_for_publish(2)
            if got.wait(0.1):
                break
        return got.is_set()
    finally:
        for c in (pub, sub):
            c.loop_stop()
            c.disconnect()


def test_mosquitto_round_trip_and_restart(mosquitto: Broker) -> None:
    assert _round_trip(mosquitto, "before")
    pid = mosquitto.proc.pid if mosquitto.proc else None
    mosquitto.restart()
    assert mosquitto.proc is not None and mosquitto.proc.pid != pid
    assert _round_trip(mosquitto, "after")


def test_embedded_broker_round_trip() -> None:
    pytest.importorskip("amqtt")
    broker = Broker(kind="amqtt").start()
    try:
        assert _round_trip(broker, "embedded")
    finally:
        broker.close()
    assert broker.proc is None


def test_mosquitto_keeps_persistent_sessions_across_a_restart(mosquitto: Broker) -> None:
    """A QoS 1 message queued for an offline persistent session is delivered after a restart:
    the broker can write its persistence file (as root it would otherwise drop privileges)."""
    got = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.payload == b"queued":
            got.set()

    def session() -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="persistent", clean_session=False)
        c.on_message = on_message
        c.connect(mosquitto.host, mosquitto.port)
        return c

    subscribed = threading.Event()
    sub = session()
    sub.on_subscribe = lambda *_args: subscribed.set()
    sub.loop_start()
    sub.subscribe("t/q", qos=1)
    assert subscribed.wait(5)
    sub.loop_stop()
    sub.disconnect()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pub-q")
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    pub.publish("t/q", b"queued", qos=1).wait_for_publish(5)
    pub.loop_stop()
    pub.disconnect()
    mosquitto.restart()
    sub = session()
    sub.loop_start()
    try:
        assert got.wait(10), "the queued message did not survive the restart"
    finally:
        sub.loop_stop()
        sub.disconnect()
