"""An independent test subscriber standing in for the aggregator's ingest.

It does what the delivery contract asks of the aggregator, and nothing more: verifies every
telemetry message with `protocols.envelope` against the site's enrolled key (and that the kid is
that site's), decodes it with `protocols.messages`, stores `(site, seq) → readings` in its own
SQLite (a second copy of a seq is dropped), commits, and only then acknowledges the MQTT delivery
(paho manual ack, persistent session) and publishes a signed receipt. It also owns the retained,
signed aggregator state (`online`/`offline`, with `offline` as its will).

It runs paho's network thread, so it works the same from a test process (next to an agent in the
test's event loop) or as a subprocess (`python -m tests.support.receiver --help`).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion

from protocols import envelope, messages
from protocols.errors import EnvelopeError, MessageError
from protocols.keys import kid as key_id
from protocols.keys import load_private_key, load_public_key_hex
from protocols.topics import DEFAULT_PREFIX, TopicKind, Topics

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    site TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, boot TEXT NOT NULL,
    hist INTEGER NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (site, seq)
);
CREATE TABLE IF NOT EXISTS readings (
    site TEXT NOT NULL, seq INTEGER NOT NULL, t INTEGER NOT NULL, device TEXT NOT NULL,
    point TEXT NOT NULL, value, quality INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS losses (
    site TEXT NOT NULL, seq INTEGER NOT NULL, count INTEGER NOT NULL,
    oldest INTEGER NOT NULL, newest INTEGER NOT NULL
);
"""


class Receiver:
    """A verifying, deduplicating, receipting telemetry store on a real broker."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        db_path: Path,
        aggregator_key: Ed25519PrivateKey,
        site_keys: Mapping[str, Ed25519PublicKey],
        prefix: str = DEFAULT_PREFIX,
        client_id: str = "sitewatt-test-receiver",
        online: bool = True,
    ) -> None:
        self.host, self.port = host, port
        self.db_path = Path(db_path)
        self.topics = Topics(prefix)
        self.signer = envelope.Signer(aggregator_key)
        self.keyring = envelope.Keyring(site_keys.values())
        self.site_kid = {site: key_id(k) for site, k in site_keys.items()}
        self.client_id = client_id
        self.initially_online = online
        self._online: bool | None = None  # the state we assert, re-published on each reconnect
        self.rejected: Counter[str] = Counter()
        self.stored_batches = 0
        self.stored_readings = 0
        self.duplicates = 0
        self.receipts_sent = 0
        self.first_stored_at: float | None = None  # time.monotonic() of the first new batch
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._connected = threading.Event()
        self._db: sqlite3.Connection | None = None
        self._client: mqtt.Client | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Receiver:
        db = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.executescript(_SCHEMA)
        self._db = db
        with self._lock:
            self.stored_batches, self.stored_readings = db.execute(
                "SELECT count(*), coalesce(sum(n), 0) FROM batches"
            ).fetchone()
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        c.max_inflight_messages_set(1000)
        state_topic = self.topics.aggregator_state()
        c.will_set(state_topic, self._state_bytes(False), qos=1, retain=True)
        c.reconnect_delay_set(1, 2)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        self._client = c
        c.connect(self.host, self.port, keepalive=30)
        c.loop_start()
        if not self._connected.wait(timeout):
            self.stop(announce_offline=False)
            raise TimeoutError(f"receiver could not connect to {self.host}:{self.port}")
        if self.initially_online:
            self.set_online(True)
        return self

    def stop(self, *, announce_offline: bool = True) -> None:
        """Stop; with `announce_offline`, publish the retained offline state first (as the real
        aggregator does on a clean shutdown); otherwise vanish and let the broker send the will."""
        c = self._client
        if c is not None:
            if announce_offline and self._connected.is_set():
                with contextlib.suppress(Exception):
                    self.set_online(False)
                c.disconnect()
                c.loop_stop()
            else:
                # Drop the TCP connection without DISCONNECT: the broker then publishes the will.
                c.loop_stop()
                sock = c.socket()
                if sock is not None:
                    with contextlib.suppress(Exception):
                        sock.close()
            self._client = None
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_online(self, online: bool, timeout: float = 10.0) -> None:
        """Publish the signed aggregator state, retained, and wait for the broker's PUBACK."""
        assert self._client is not None
        self._online = online
        info = self._client.publish(
            self.topics.aggregator_state(), self._state_bytes(online), qos=1, retain=True
        )
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise TimeoutError("aggregator state not acknowledged by the broker")

    # -- queries (any thread) ---------------------------------------------------------------

    def wait_for(self, predicate: Callable[[Receiver], bool], timeout: float) -> None:
        """Block until `predicate(self)` holds (checked on every stored batch); TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"receiver: condition not met in {timeout}s "
                        f"(batches={self.stored_batches}, readings={self.stored_readings}, "
                        f"duplicates={self.duplicates}, rejected={dict(self.rejected)})"
                    )
                self._cond.wait(min(left, 0.2))

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run a read query on a fresh connection to the receiver's database."""
        conn = sqlite3.connect(self.db_path)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def values(self, site: str) -> list[Any]:
        """Every stored reading value of `site`, in (seq, insertion) order."""
        return [
            r[0]
            for r in self.query(
                "SELECT value FROM readings WHERE site = ? ORDER BY seq, rowid", (site,)
            )
        ]

    def losses(self, site: str) -> list[tuple[int, int, int, int]]:
        """(seq, count, oldest, newest) of every data-loss record of `site`."""
        rows = self.query(
            "SELECT seq, count, oldest, newest FROM losses WHERE site = ? ORDER BY seq", (site,)
        )
        return [(int(a), int(b), int(c), int(d)) for a, b, c, d in rows]

    # -- paho thread ------------------------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        if rc.is_failure:
            return
        sock = client.socket()
        if isinstance(sock, socket.socket):  # no Nagle: a PUBACK then a receipt, at once
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe(self.topics.all_sites(TopicKind.TELEMETRY), qos=1)
        if self._online is not None:
            # Our will may have replaced the retained state while we were away (a broker restart
            # publishes it): say again what we are, as the primary host does on every connect.
            topic = self.topics.aggregator_state()
            client.publish(topic, self._state_bytes(self._online), qos=1, retain=True)
        self._connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            receipt = self._ingest(msg.topic, bytes(msg.payload))
        except (EnvelopeError, MessageError) as exc:
            with self._cond:
                self.rejected[exc.reason] += 1
                self._cond.notify_all()
            client.ack(msg.mid, msg.qos)  # refused for good: never stored, never receipted
            return
        # Committed: now (and only now) the MQTT delivery is acknowledged and the receipt sent.
        client.ack(msg.mid, msg.qos)
        site, seq = receipt
        r = messages.Receipt(site=site, seqs=(seq,), t=int(time.time() * 1000))
        topic = self.topics.receipt(site)
        client.publish(topic, self.signer.seal_bytes(messages.encode(r), topic), qos=1)
        with self._cond:
            self.receipts_sent += 1
            self._cond.notify_all()

    def _ingest(self, topic: str, payload: bytes) -> tuple[str, int]:
        site, kind = self.topics.parse(topic)
        if kind is not TopicKind.TELEMETRY:
            raise MessageError(f"unexpected topic {topic}")
        opened = envelope.unseal(payload, topic, self.keyring)
        if opened.kid != self.site_kid.get(site):
            raise MessageError(f"kid {opened.kid.hex()} is not {site}'s key")
        msg = messages.decode(opened.payload)
        if not isinstance(msg, messages.TelemetryBatch | messages.DataLoss) or msg.site != site:
            raise MessageError(f"not telemetry of {site}")
        assert self._db is not None
        db = self._db
        n = len(msg.readings) if isinstance(msg, messages.TelemetryBatch) else 0
        hist = isinstance(msg, messages.TelemetryBatch) and msg.hist
        db.execute("BEGIN IMMEDIATE")
        try:
            cur = db.execute(
                "INSERT OR IGNORE INTO batches (site, seq, kind, boot, hist, n) "
                "VALUES (?,?,?,?,?,?)",
                (site, msg.seq, msg.TYPE, msg.boot, hist, n),
            )
            fresh = cur.rowcount == 1
            if fresh and isinstance(msg, messages.TelemetryBatch):
                db.executemany(
                    "INSERT INTO readings (site, seq, t, device, point, value, quality) "
                    "VALUES (?,?,?,?,?,?,?)",
                    [
                        (site, msg.seq, r.t, r.device, r.point, r.value, int(r.quality))
                        for r in msg.readings
                    ],
                )
            elif fresh and isinstance(msg, messages.DataLoss):
                db.execute(
                    "INSERT INTO losses (site, seq, count, oldest, newest) VALUES (?,?,?,?,?)",
                    (site, msg.seq, msg.count, msg.oldest, msg.newest),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        with self._cond:
            if fresh:
                if self.first_stored_at is None:
                    self.first_stored_at = time.monotonic()
                self.stored_batches += 1
                self.stored_readings += n
            else:
                self.duplicates += 1
            self._cond.notify_all()
        return site, msg.seq

    def _state_bytes(self, online: bool) -> bytes:
        topic = self.topics.aggregator_state()
        state = messages.AggregatorState(online=online, t=int(time.time() * 1000))
        return self.signer.seal_bytes(messages.encode(state), topic)


def main(argv: list[str] | None = None) -> None:
    """Run a receiver until SIGTERM/SIGINT (for tests that need it in another process)."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--aggregator-key", type=Path, required=True, help="PEM private key (0600)")
    p.add_argument("--site", action="append", default=[], help="SITE=PUBLIC_KEY_HEX, repeatable")
    p.add_argument("--prefix", default=DEFAULT_PREFIX)
    p.add_argument("--client-id", default="sitewatt-test-receiver")
    p.add_argument("--offline", action="store_true", help="start with the state offline")
    a = p.parse_args(argv)
    sites = dict(s.split("=", 1) for s in a.site)
    rx = Receiver(
        host=a.host,
        port=a.port,
        db_path=a.db,
        aggregator_key=load_private_key(a.aggregator_key),
        site_keys={s: load_public_key_hex(h) for s, h in sites.items()},
        prefix=a.prefix,
        client_id=a.client_id,
        online=not a.offline,
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    rx.start()
    print("ready", flush=True)
    done.wait()
    rx.stop()


if __name__ == "__main__":
    main()
