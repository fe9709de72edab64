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
