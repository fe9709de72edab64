"""The mosquitto fixture is real: a message goes through it and it survives a restart."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from simulators.broker import Broker


def test_mosquitto_round_trip_and_restart(mosquitto: Broker) -> None:
    got = threading.Event()
    received: list[bytes] = []

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        received.append(msg.payload)
        got.set()

    for attempt in range(2):
        got.clear()
        sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub{attempt}")
        sub.on_message = on_message
        sub.connect(mosquitto.host, mosquitto.port)
        sub.subscribe("t/x", qos=1)
        sub.loop_start()
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub{attempt}")
        pub.connect(mosquitto.host, mosquitto.port)
        pub.loop_start()
        # Retry the publish until the subscription is live (no sleeps as synchronisation).
        for _ in range(50):
            pub.publish("t/x", f"hello{attempt}".encode(), qos=1).wait_for_publish(2)
            if got.wait(0.1):
                break
        pub.loop_stop()
        pub.disconnect()
        sub.loop_stop()
        sub.disconnect()
        assert f"hello{attempt}".encode() in received
        mosquitto.restart()
