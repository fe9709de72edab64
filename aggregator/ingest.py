"""MQTT ingest: the only module on the aggregator side that imports paho.

Flow, per group of messages (whatever arrived within `ingest.group_ms`, up to `group_max`):

    paho network thread          worker thread
    on_message ─► queue ───────► verify each (pure, aggregator.verify) ─► drop+count rejects
                                 store every batch of the group in ONE transaction
                                 write presence (birth/death) and command acks
                                 MQTT-ack every message of the group (paho manual ack)
                                 publish one signed receipt per site (stored + duplicate seqs)
                                 run the on_stored hooks (alarms)

The network thread never touches the database. A message is acknowledged to the broker only
after its effects are committed, and the session is persistent (clean_session=False), so an
aggregator killed at any point gets every unacknowledged message again when it reconnects; the
(site, seq) dedupe turns those redeliveries into receipts, never into second copies.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from aggregator.config import AggregatorConfig
from aggregator.errors import StorageError
from aggregator.metrics import AggregatorMetrics
from aggregator.sites import SiteKeyring, SiteRegistry
from aggregator.storage import LossRecord, SiteState, Storage, StoreResult, VerifiedBatch
from aggregator.verify import Rejected, Verified, Window, apply_presence, verify_message
from protocols import messages
from protocols.clock import Clock, SystemClock, now_ms
from protocols.envelope import Keyring, Signer, unseal
from protocols.errors import EnvelopeError, MessageError
from protocols.topics import TopicKind, Topics, shared_subscription
from protocols.types import Reading, ReadingColumns

log = logging.getLogger("sitewatt.aggregator.ingest")

StoredHook = Callable[[str, Sequence[Reading], SiteState], object]
"""Called after a commit with a site, its newly stored live readings (historical batches are
history, not news) and its presence."""
PresenceHook = Callable[[SiteState], object]
LossHook = Callable[[str, LossRecord], object]
"""Called after a commit with each data-loss report an agent sent."""
AckHook = Callable[[messages.Ack, int], object]
"""Called with a verified command ack and its receive time (ms), before the MQTT ack."""

_KEYRING_REFRESH_S = 5.0  # pick up enrolments made by another process (CLI) this often
_UNKNOWN_KID_RELOAD_S = 1.0  # an unknown kid may be a key enrolled a moment ago
_RECEIPT_MAX = 10_000


class _Msg(NamedTuple):
    topic: str
    payload: bytes
    mid: int
    qos: int
    received_ms: int
    gen: int  # connection generation: a mid is only meaningful on its own connection


@dataclass
class IngestStats:
    """Counters of one ingest instance (written by its worker thread only)."""

    messages_in: int = 0
    verified: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    batches_stored: int = 0
    readings_stored: int = 0
    duplicates: int = 0
    losses_stored: int = 0
    receipts_sent: int = 0
    states: int = 0
    acks: int = 0
    groups: int = 0
    store_errors: int = 0
    last_lag_s: float | None = None
    connected: bool = False

    def snapshot(self) -> dict[str, Any]:
        return {
            "messages_in": self.messages_in,
            "verified": self.verified,
            "rejected": dict(self.rejected),
            "batches_stored": self.batches_stored,
            "readings_stored": self.readings_stored,
            "duplicates": self.duplicates,
            "losses_stored": self.losses_stored,
            "receipts_sent": self.receipts_sent,
            "states": self.states,
            "acks": self.acks,
            "groups": self.groups,
            "store_errors": self.store_errors,
            "last_lag_s": self.last_lag_s,
            "connected": self.connected,
        }


class _RejectLog:
    """One log line per reason per interval, with how many were dropped since the last one."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._since: Counter[str] = Counter()

    def note(self, reason: str, topic: str, detail: str) -> None:
        self._since[reason] += 1
        now = time.monotonic()
        if now - self._last.get(reason, -1e18) >= self.interval_s:
            n = self._since.pop(reason)
            self._last[reason] = now
            log.warning("rejected %d message(s) as %s; last on %s: %s", n, reason, topic, detail)


class Ingest:
    """The MQTT subscriber, verifier and writer. `start()` connects in the background;
    `stop()` publishes the offline state and disconnects cleanly."""

    def __init__(
        self,
        config: AggregatorConfig,
        storage: Storage,
        registry: SiteRegistry,
        signer: Signer,
        *,
        clock: Clock | None = None,
        metrics: AggregatorMetrics | None = None,
    ) -> None:
        self.config = config
        self.storage = storage
        self.registry = registry
        self.signer = signer
        self.clock: Clock = clock or SystemClock()
        self.metrics = metrics
        self.topics = Topics(config.broker.prefix)
        self.stats = IngestStats()
        self.on_stored: list[StoredHook] = []
        self.on_presence: list[PresenceHook] = []
        self.on_ack: list[AckHook] = []
        self.on_loss: list[LossHook] = []
        self.connected = threading.Event()
        self._queue: queue.SimpleQueue[_Msg] = queue.SimpleQueue()
        self._gen = 0
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None
        self._hooks: queue.Queue[
            tuple[list[VerifiedBatch], StoreResult, list[SiteState]] | None
        ] = queue.Queue(maxsize=64)
        self._hook_thread: threading.Thread | None = None
        self._keyring = SiteKeyring()
        self._keyring_version = -1
        self._keyring_loaded = 0.0
        self._presence: dict[str, SiteState] = {}
        self._rejects = _RejectLog(config.ingest.log_interval_s)
        self._client = self._make_client()

    # ---- MQTT -------------------------------------------------------------------------------

    def _state_payload(self, online: bool) -> bytes:
        msg = messages.AggregatorState(online=online, t=now_ms(self.clock))
        return self.signer.seal_bytes(messages.encode(msg), self.topics.aggregator_state())

    def _make_client(self) -> mqtt.Client:
        b = self.config.broker
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=b.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        if b.username is not None:
            client.username_pw_set(b.username, b.password())
        if b.tls is not None:
            client.tls_set(
                ca_certs=str(b.tls.ca_file),
                certfile=str(b.tls.cert_file) if b.tls.cert_file else None,
                keyfile=str(b.tls.key_file) if b.tls.key_file else None,
            )
            if b.tls.insecure:
                client.tls_insecure_set(True)
        client.max_queued_messages_set(0)
        client.max_inflight_messages_set(1000)
        client.reconnect_delay_set(1, 10)
        # Signed now; agents treat it as "the aggregator is gone" whenever the broker sends it.
        client.will_set(
            self.topics.aggregator_state(), self._state_payload(False), qos=1, retain=True
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _filters(self) -> list[tuple[str, int]]:
        kinds = (TopicKind.TELEMETRY, TopicKind.STATE, TopicKind.ACK)
        group = self.config.broker.share_group
        out = []
        for kind in kinds:
            f = self.topics.all_sites(kind)
            out.append((shared_subscription(group, f) if group else f, 1))
        if group:  # every worker sees the aggregator's state (see _reassert_online)
            out.append((self.topics.aggregator_state(), 1))
        return out

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: Any,
        properties: Any,
    ) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            return
        self._gen += 1
        _no_delay(client.socket())
        client.subscribe(self._filters())
        client.publish(
            self.topics.aggregator_state(), self._state_payload(True), qos=1, retain=True
        )
        self.stats.connected = True
        self.connected.set()
        log.info(
            "connected to %s:%d (session present: %s)",
            self.config.broker.host,
            self.config.broker.port,
            flags.session_present,
        )

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: Any,
        properties: Any,
    ) -> None:
        self.connected.clear()
        self.stats.connected = False
        if not self._stopping.is_set():
            log.warning("disconnected from the broker (%s); reconnecting", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # The network thread only enqueues: verification and the database are the worker's.
        self._queue.put(
            _Msg(msg.topic, bytes(msg.payload), msg.mid, msg.qos, now_ms(self.clock), self._gen)
        )

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish (queued by paho while disconnected; sent on reconnect)."""
        self._client.publish(topic, payload, qos=qos, retain=retain)

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background and start the worker."""
        self._presence = {s.site: s for s in self.storage.site_states()}
        self._reload_keys()
        self._worker = threading.Thread(target=self._run, name="ingest-worker", daemon=True)
        self._worker.start()
        self._hook_thread = threading.Thread(
            target=self._hook_loop, name="ingest-hooks", daemon=True
        )
        self._hook_thread.start()
        b = self.config.broker
        self._client.connect_async(b.host, b.port, keepalive=b.keepalive_s)
        self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Publish the retained offline state, disconnect cleanly, stop the worker.

        Messages still queued and not yet committed are not acknowledged: the broker keeps them
        in the persistent session for the next start.
        """
        self._stopping.set()
        if self._worker is not None:
            self._worker.join(timeout)
        if self._hook_thread is not None:
            self._hooks.put(None)
            self._hook_thread.join(timeout)
        if self.connected.is_set():
            info = self._client.publish(
                self.topics.aggregator_state(), self._state_payload(False), qos=1, retain=True
            )
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):  # the connection went away meanwhile
                log.warning("could not publish the offline state before disconnecting")
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()

    # ---- worker ------------------------------------------------------------------------------

    def _run(self) -> None:
        cfg = self.config.ingest
        while not self._stopping.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                self._idle()
                continue
            group = [first]
            deadline = time.monotonic() + cfg.group_ms / 1000
            while len(group) < cfg.group_max:
                try:
                    group.append(self._queue.get_nowait())
                    continue
                except queue.Empty:
                    pass
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    group.append(self._queue.get(timeout=remaining))
                except queue.Empty:
                    break
            try:
                self._process(group)
            except Exception:  # a bug must not kill ingest: the group stays unacknowledged
                log.exception("ingest group failed; its messages stay unacknowledged")

    def _idle(self) -> None:
        flush = getattr(self.storage, "flush_rollups", None)
        if callable(flush):
            try:
                flush()
            except StorageError as exc:
                log.warning("rollup flush failed: %s", exc)
        self._maybe_reload_keys()

    def keys_changed(self) -> None:
        """Rebuild the keyring before the next group (after an enrolment or revocation)."""
        self._keyring_version = -1

    def _reload_keys(self) -> None:
        self._keyring = self.registry.keyring()
        self._keyring_version = self.registry.version
        self._keyring_loaded = time.monotonic()

    def _maybe_reload_keys(self) -> None:
        if (
            self._keyring_version != self.registry.version
            or time.monotonic() - self._keyring_loaded >= _KEYRING_REFRESH_S
        ):
            self._reload_keys()

    def _verify(self, m: _Msg, window: Window) -> Verified:
        try:
            return verify_message(m.topic, m.payload, self._keyring, self.topics, window)
        except Rejected as r:
            if (
                r.reason == "unknown_kid"
                and time.monotonic() - self._keyring_loaded >= _UNKNOWN_KID_RELOAD_S
            ):
                self._reload_keys()
                return verify_message(m.topic, m.payload, self._keyring, self.topics, window)
            raise

    def _process(self, group: list[_Msg]) -> None:
        self._maybe_reload_keys()
        t_now = now_ms(self.clock)
        window = Window(t_now, self.config.max_age_ms, int(self.config.ingest.max_future_s * 1000))
        batches: list[VerifiedBatch] = []
        states: list[tuple[messages.SiteState, int]] = []
        acks: list[tuple[messages.Ack, int]] = []
        metrics = self.metrics
        own_state = self.topics.aggregator_state()
        for m in group:
            if m.topic == own_state:  # our own retained state, matched by `{p}/+/state`
                self._reassert_online(m.topic, m.payload)
                continue
            kind = m.topic.rsplit("/", 1)[-1]
            self.stats.messages_in += 1
            if metrics is not None:
                metrics.messages_in.labels(kind=kind).inc()
            try:
                v = self._verify(m, window)
            except Rejected as r:
                self.stats.rejected[r.reason] += 1
                if metrics is not None:
                    metrics.messages_rejected.labels(reason=r.reason).inc()
                self._rejects.note(r.reason, m.topic, r.detail)
                continue
            self.stats.verified += 1
            if metrics is not None:
                metrics.messages_verified.labels(kind=kind).inc()
            msg = v.message
            if isinstance(msg, messages.TelemetryBatch):
                batches.append(
                    VerifiedBatch(
                        v.site, msg.seq, msg.boot, msg.sent, m.received_ms, msg.hist, msg.readings
                    )
                )
            elif isinstance(msg, messages.DataLoss):
                loss = LossRecord(msg.sent, msg.count, msg.oldest, msg.newest)
                batches.append(
                    VerifiedBatch(
                        v.site, msg.seq, msg.boot, msg.sent, m.received_ms, True, (), (loss,)
                    )
                )
            elif isinstance(msg, messages.SiteState):
                states.append((msg, m.received_ms))
            elif isinstance(msg, messages.Ack):
                acks.append((msg, m.received_ms))

        result = self._store(batches)
        if result is None:
            return  # stopping with the database unavailable: nothing acknowledged
        changed = self._apply_presence(states, batches)
        for ack, received in acks:
            self.stats.acks += 1
            for ack_hook in self.on_ack:
                ack_hook(ack, received)

        gen = self._gen
        for m in group:
            if m.qos > 0 and m.gen == gen:
                self._client.ack(m.mid, m.qos)
        self._send_receipts(result, t_now)
        self._account(batches, result)
        if self.on_stored or self.on_presence or self.on_loss:
            # Hooks (the alarm engine) run on their own thread: the next group's verify and
            # commit overlap with them. The queue is bounded, so slow hooks slow ingest down
            # rather than pile up.
            self._hooks.put((batches, result, changed))

    def _reassert_online(self, topic: str, payload: bytes) -> None:
        """With several workers (a shared subscription), one that stops — or dies: its LWT —
        sets the retained state offline while the others still run, and agents would hold
        their data; a running worker that sees it puts the state back to online."""
        if self.config.broker.share_group is None or self._stopping.is_set() or not payload:
            return
        try:
            opened = unseal(payload, topic, Keyring([self.signer.public_key]))
            msg = messages.decode(opened.payload)
        except (EnvelopeError, MessageError):
            return
        if isinstance(msg, messages.AggregatorState) and not msg.online:
            log.info("another worker left the aggregator state offline; setting it online")
            self.publish(topic, self._state_payload(True), retain=True)

    def _store(self, batches: list[VerifiedBatch]) -> StoreResult | None:
        """Commit the group, retrying while the database is unavailable."""
        delay = 0.2
        while True:
            try:
                return self.storage.store_batches(batches)
            except StorageError as exc:
                self.stats.store_errors += 1
                log.error("storing %d batch(es) failed: %s; retrying", len(batches), exc)
                if self._stopping.wait(delay):
                    return None
                delay = min(delay * 2, 5.0)

    def _apply_presence(
        self, states: list[tuple[messages.SiteState, int]], batches: list[VerifiedBatch]
    ) -> list[SiteState]:
        for b in batches:
            cur = self._presence.get(b.site)
            if cur is None:
                cur = self._presence[b.site] = SiteState(b.site)
            if (cur.last_seen_ms or 0) < b.received_ms:
                self._presence[b.site] = SiteState(
                    cur.site,
                    cur.online,
                    cur.boot,
                    cur.version,
                    cur.devices,
                    b.received_ms,
                    cur.birth_ms,
                    cur.death_ms,
                )
        changed: list[SiteState] = []
        for msg, received in states:
            self.stats.states += 1
            cur = self._presence.get(msg.site) or self.storage.site_state(msg.site)
            new = apply_presence(cur, msg, received)
            if new is None:
                continue
            self.storage.put_site_state(new)
            self._presence[msg.site] = new
            changed.append(new)
            log.info("site %s is %s (boot %s)", msg.site, "online" if new.online else "offline",
                     new.boot)  # fmt: skip
        if changed and self.metrics is not None:
            self.metrics.sites_online.set(sum(s.online for s in self._presence.values()))
        return changed

    def _send_receipts(self, result: StoreResult, t_now: int) -> None:
        per_site: dict[str, set[int]] = {}
        for site, seq in (*result.stored, *result.duplicates):
            per_site.setdefault(site, set()).add(seq)
        for site, seqs in per_site.items():
            ordered = sorted(seqs)
            topic = self.topics.receipt(site)
            for i in range(0, len(ordered), _RECEIPT_MAX):
                receipt = messages.Receipt(site, tuple(ordered[i : i + _RECEIPT_MAX]), t_now)
                self.publish(topic, self.signer.seal_bytes(messages.encode(receipt), topic))
                self.stats.receipts_sent += 1

    def _account(self, batches: list[VerifiedBatch], result: StoreResult) -> None:
        self.stats.groups += 1
        fresh = _stored_batches(batches, result)
        self.stats.batches_stored += sum(1 for b in fresh if not b.losses)
        self.stats.losses_stored += sum(1 for b in fresh if b.losses)
        self.stats.readings_stored += result.n_readings
        self.stats.duplicates += len(result.duplicates)
        live = [b for b in fresh if not b.hist and b.readings]
        if live:
            self.stats.last_lag_s = (live[-1].received_ms - live[-1].sent_ms) / 1000
        if self.metrics is not None:
            self.metrics.observe_stored(
                batches=len(fresh), readings=result.n_readings, duplicates=len(result.duplicates)
            )
            for b in live:
                self.metrics.observe_lag((b.received_ms - b.sent_ms) / 1000)

    def _hook_loop(self) -> None:
        while True:
            item = self._hooks.get()
            if item is None:
                return
            try:
                self._run_hooks(*item)
            except Exception:
                log.exception("ingest hooks failed")

    def _run_hooks(
        self, batches: list[VerifiedBatch], result: StoreResult, changed: list[SiteState]
    ) -> None:
        for state in changed:
            for presence_hook in self.on_presence:
                try:
                    presence_hook(state)
                except Exception:
                    log.exception("presence hook failed")
        per_site: dict[str, list[Sequence[Reading]]] = {}
        for b in _stored_batches(batches, result):
            if b.readings and not b.hist:
                per_site.setdefault(b.site, []).append(b.readings)
            for loss in b.losses:
                for loss_hook in self.on_loss:
                    try:
                        loss_hook(b.site, loss)
                    except Exception:
                        log.exception("loss hook failed for %s", b.site)
        for site, parts in per_site.items():
            state = self._presence.get(site) or SiteState(site)
            readings = ReadingColumns.concat(parts)
            for hook in self.on_stored:
                try:
                    hook(site, readings, state)
                except Exception:
                    log.exception("on_stored hook failed for %s", site)

    def presence(self) -> dict[str, SiteState]:
        """Every known site's presence (a copy)."""
        return dict(self._presence)


def _stored_batches(batches: list[VerifiedBatch], result: StoreResult) -> list[VerifiedBatch]:
    """The batches `result` stored, each once: a batch and its redelivered copy may sit in the
    same group, and only the first was stored (both used to be counted, and fed to the hooks)."""
    stored = set(result.stored)
    out = []
    for b in batches:
        key = (b.site, b.seq)
        if key in stored:
            stored.discard(key)
            out.append(b)
    return out


def _no_delay(sock: Any) -> None:
    """Disable Nagle: an MQTT ack followed by a small receipt must not wait for the broker's
    delayed ACK (40 ms on Linux) — it added ~80 ms to every command round trip and to ingest lag."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


__all__ = ["AckHook", "Ingest", "IngestStats", "LossHook", "PresenceHook", "StoredHook"]
