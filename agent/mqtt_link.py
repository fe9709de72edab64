"""The agent's MQTT link: an asyncio adapter around paho-mqtt 2.x (the only module importing paho).

One `MqttLink` is one connection: connect, subscribe, publish, receive, and it is done when the
connection ends. Reconnecting is the supervising task's job (agent.delivery), as in aiomqtt:
the link never retries by itself and never hides a lost connection.

paho runs inside the event loop, without a thread: its socket is registered with the loop
(`add_reader`/`add_writer`, paho's socket callbacks), and its callbacks only resolve futures
keyed by message id (PUBACK, SUBACK) or put messages on an `asyncio.Queue`. Many links (many
simulated agents) share one loop. Only the blocking TCP/TLS connect runs in a worker thread;
paho's socket callbacks fired from there are marshalled back onto the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from agent.errors import LinkError


@dataclass(frozen=True)
class LinkSettings:
    """Where and how to connect. `client_id` should be stable per site (persistent session)."""

    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = ""
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = 30
    clean_session: bool = False
    max_inflight: int = 100
    connect_timeout_s: float = 10.0


class Will(NamedTuple):
    """The last-will message the broker publishes for us if we vanish (the signed death)."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class Incoming(NamedTuple):
    """A message received on one of our subscriptions."""

    topic: str
    payload: bytes
    retain: bool


class MqttLink:
    """One MQTT connection, driven by the running asyncio loop."""

    def __init__(self, settings: LinkSettings, *, will: Will | None = None) -> None:
        self.settings = settings
        self.incoming: asyncio.Queue[Incoming] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.close_reason: str | None = None
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._connected: asyncio.Future[None] = self._loop.create_future()
        self._pub: dict[int, asyncio.Future[None]] = {}
        self._sub: dict[int, asyncio.Future[None]] = {}
        self._misc: asyncio.Task[None] | None = None
        self._sock: Any = None
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            # A persistent session needs a stable id; without one, the session is clean.
            clean_session=settings.clean_session or not settings.client_id,
            protocol=mqtt.MQTTv311,
        )
        c.max_inflight_messages_set(settings.max_inflight)
        c.max_queued_messages_set(0)
        if settings.username is not None:
            c.username_pw_set(settings.username, settings.password)
        if settings.tls:
            try:
                c.tls_set(
                    ca_certs=str(settings.ca_file) if settings.ca_file else None,
                    certfile=str(settings.cert_file) if settings.cert_file else None,
                    keyfile=str(settings.key_file) if settings.key_file else None,
                    cert_reqs=ssl.CERT_REQUIRED,
                )
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise LinkError(f"TLS setup failed: {exc}") from exc
        if will is not None:
            c.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.on_socket_open = self._on_socket_open
        c.on_socket_close = self._on_socket_close
        c.on_socket_register_write = self._on_socket_register_write
        c.on_socket_unregister_write = self._on_socket_unregister_write
        self._client = c

    # -- public API -------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._connected.done() and not self.closed.is_set()

    async def connect(self) -> None:
        """Connect and wait for CONNACK; LinkError if refused, unreachable or too slow."""
        s = self.settings
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # lands as the awaited thing completes, and a stopping agent would go on.
            async with asyncio.timeout(s.connect_timeout_s):
                await self._loop.run_in_executor(
                    None, lambda: self._client.connect(s.host, s.port, s.keepalive_s)
                )
            async with asyncio.timeout(s.connect_timeout_s):
                await asyncio.shield(self._connected)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._close(f"connect failed: {exc}")
            raise LinkError(f"cannot connect to {s.host}:{s.port}: {exc}") from exc
        except TimeoutError as exc:
            self._close("connect timed out")
            raise LinkError(f"no CONNACK from {s.host}:{s.port} in {s.connect_timeout_s}s") from exc
        except LinkError:
            self._close(self.close_reason or "refused")
            raise

    async def subscribe(self, topics: Sequence[str], *, qos: int = 1) -> None:
        """Subscribe to `topics` and wait for the SUBACK."""
        rc, mid = self._client.subscribe([(t, qos) for t in topics])
        self._check(rc, "subscribe")
        assert mid is not None
        fut = self._sub[mid] = self._loop.create_future()
        try:
            await fut
        finally:
            self._sub.pop(mid, None)

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> asyncio.Future[None]:
        """Queue a message; the future resolves on PUBACK (QoS 1) or once written (QoS 0), and
        fails with LinkError if the connection ends first."""
        fut: asyncio.Future[None] = self._loop.create_future()
        if self.closed.is_set():
            fut.set_exception(LinkError(f"link closed: {self.close_reason}"))
            return fut
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS and info.rc != MQTTErrorCode.MQTT_ERR_NO_CONN:
            fut.set_exception(LinkError(f"publish refused: {mqtt.error_string(info.rc)}"))
            return fut
        if info.is_published():  # QoS 0 written already
            fut.set_result(None)
        else:
            self._pub[info.mid] = fut
        return fut

    async def disconnect(self) -> None:
        """Say goodbye (a clean DISCONNECT: the broker does not publish our will)."""
        if not self.closed.is_set() and self._sock is not None:
            self._client.disconnect()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self.closed.wait()
        self._close("disconnected")

    def abort(self) -> None:
        """Drop the connection without DISCONNECT (the broker publishes our will)."""
        self._close("aborted")

    async def __aenter__(self) -> MqttLink:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    # -- paho callbacks (on the loop thread) ------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        if self._connected.done():
            return
        if rc.is_failure:
            self.close_reason = f"refused: {rc}"
            self._connected.set_exception(LinkError(f"broker refused the connection: {rc}"))
        else:
            self._connected.set_result(None)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        self._close(f"disconnected: {rc}")

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any
    ) -> None:
        fut = self._pub.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any
    ) -> None:
        fut = self._sub.get(mid)
        if fut is None or fut.done():
            return
        bad = [r for r in rcs if r.is_failure]
        if bad:
            fut.set_exception(LinkError(f"subscription refused: {bad[0]}"))
        else:
            fut.set_result(None)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.incoming.put_nowait(Incoming(msg.topic, bytes(msg.payload), bool(msg.retain)))

    # -- socket integration -----------------------------------------------------------------

    def _on_loop(self, fn: Any, *args: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._register_reader, sock)

    def _register_reader(self, sock: Any) -> None:
        if self.closed.is_set():
            return
        self._sock = sock
        _no_delay(sock)
        self._loop.add_reader(sock, self._readable)
        if self._misc is None:
            self._misc = self._loop.create_task(self._misc_loop())

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._unregister, sock)

    def _unregister(self, sock: Any) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)

    def _on_socket_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._register_writer, sock)

    def _register_writer(self, sock: Any) -> None:
        if not self.closed.is_set():
            with contextlib.suppress(ValueError, OSError):
                self._loop.add_writer(sock, self._writable)

    def _on_socket_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._unregister_writer, sock)

    def _unregister_writer(self, sock: Any) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_writer(sock)

    def _readable(self) -> None:
        self._client.loop_read()
        # TLS may hold decrypted bytes the selector cannot see: read them now.
        sock = self._sock
        if isinstance(sock, ssl.SSLSocket) and not self.closed.is_set():
            with contextlib.suppress(OSError, ValueError):
                if sock.pending():
                    self._loop.call_soon(self._readable)

    def _writable(self) -> None:
        self._client.loop_write()

    async def _misc_loop(self) -> None:
        while not self.closed.is_set():
            if self._client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
            await asyncio.sleep(1.0)

    # -- teardown ---------------------------------------------------------------------------

    def _check(self, rc: MQTTErrorCode, what: str) -> None:
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise LinkError(f"{what} failed: {mqtt.error_string(rc)}")

    def _close(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        if self._sock is not None:
            self._unregister(self._sock)
        with contextlib.suppress(Exception):
            self._client.on_socket_close = None
            self._client._sock_close()  # paho has no public "drop without DISCONNECT"
        err = LinkError(f"link closed: {reason}")
        for futs in (self._pub, self._sub):
            for fut in futs.values():
                if not fut.done():
                    fut.set_exception(err)
                    fut.exception()  # mark retrieved: a dropped publish is expected, not a bug
            futs.clear()
        if not self._connected.done():
            self._connected.set_exception(err)
            self._connected.exception()
        if self._misc is not None and self._misc is not asyncio.current_task():
            self._misc.cancel()


def _no_delay(sock: Any) -> None:
    """Disable Nagle: a PUBACK followed by a small PUBLISH must not wait for the peer's delayed
    ACK (40 ms on Linux) — it would cap a window of batches at a few round trips a second and
    add that much to every command's round trip."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


__all__ = ["Incoming", "LinkSettings", "MqttLink", "Will"]
