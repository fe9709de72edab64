"""The delivery task: from the outbox to the aggregator, with receipts, whatever the link does.

`Delivery.run()` supervises one MQTT connection after another (agent.mqtt_link), with capped,
jittered backoff between attempts. On each connection it:

1. connects with a last will = the site's signed death state (signed now, at connect time),
2. subscribes to its receipt and cmd topics and the aggregator's retained state,
3. publishes its signed birth state, retained,
4. follows the aggregator's state: publishes nothing until that state is a verified `online`
   (primary-host rule), and waits a random jitter each time publishing becomes allowed,
5. forms batches lazily (only while the in-flight window has room, so an outage's backlog stays
   as readings and drains in full batches), publishes them QoS 1, many in flight at once,
6. deletes a batch only when a verified receipt names it, and re-sends unreceipted batches byte
   for byte on each new connection, each reopening of the gate, and after the receipt timeout.

The decisions are agent.delivery_rules; this module only carries them out. Incoming commands are
handed, unverified, to the command handler (agent.commands verifies them). Signed acks stored in
the ack queue (agent.acks) are published on every connection, oldest first, whatever the
aggregator's state, and deleted on PUBACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from agent.acks import AckQueue
from agent.delivery_rules import (
    DeliveryPolicy,
    Gate,
    gate_update,
    historical_before,
    next_deadline,
    reconnect_delay,
    should_form,
    to_send,
)
from agent.errors import LinkError
from agent.guard_loop import GUARD_MIN_WALL_S
from agent.identity import SiteIdentity
from agent.mqtt_link import LinkSettings, MqttLink, Will
from agent.outbox import BatchDraft, Outbox
from protocols import envelope, messages
from protocols.clock import Clock
from protocols.errors import EnvelopeError, MessageError
from protocols.topics import DEFAULT_PREFIX, Topics

log = logging.getLogger(__name__)

CommandHandler = Callable[[str, bytes], Awaitable[None]]
AggregatorListener = Callable[[bool | None], None]

AGENT_VERSION = "0.1.0"


@dataclass(frozen=True)
class DeliverySettings:
    """What the delivery task needs from the site config (see `from_config`)."""

    link: LinkSettings
    policy: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    topic_prefix: str = DEFAULT_PREFIX
    agent_version: str = AGENT_VERSION
    devices: Mapping[str, str] = field(default_factory=dict)
    trim_interval_s: float = 60.0
    idle_tick_s: float = 1.0
    # …but never more often than this in wall time: at 144x a 1 s tick woke every agent of a
    # fleet host 144 times a wall second to find nothing to do (half of its CPU).
    idle_min_wall_s: float = GUARD_MIN_WALL_S
    publish_mark_interval_s: float = 1.0


@dataclass
class DeliveryCounters:
    """What the task did since it started (for metrics, `status` and tests)."""

    connects: int = 0
    connect_failures: int = 0
    batches_formed: int = 0
    published: int = 0
    republished: int = 0
    receipts: int = 0
    receipted_batches: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    acks_published: int = 0
    wakes: int = 0  # looks at the outbox while connected (prompted or not)

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


class Delivery:
    """Publishes the outbox's batches and applies receipts; one instance per agent.

    Use `await run()` in a task and `await stop()` to end it (it then publishes the offline
    state, retained, and disconnects cleanly). Many instances can share one event loop.
    """

    def __init__(
        self,
        settings: DeliverySettings,
        identity: SiteIdentity,
        outbox: Outbox,
        clock: Clock,
        *,
        boot: str | None = None,
        rng: random.Random | None = None,
        acks: AckQueue | None = None,
    ) -> None:
        self.settings = settings
        self.acks = acks
        self._ack_kick = asyncio.Event()
        self.identity = identity
        self.outbox = outbox
        self.clock = clock
        self.boot = boot or secrets.token_hex(8)
        self.policy = settings.policy
        self.counters = DeliveryCounters()
        self._rng = rng or random.Random()
        topics = Topics(settings.topic_prefix)
        site = identity.site
        self._t_telemetry = topics.telemetry(site)
        self._t_state = topics.state(site)
        self._t_receipt = topics.receipt(site)
        self._t_cmd = topics.cmd(site)
        self._t_aggregator = topics.aggregator_state()
        self._topics = topics
        self._gate = Gate()
        self._sent_at: dict[int, float] = {}
        self._unreceipted: set[int] = set()
        self._bodies: dict[int, bytes] = {}
        self._link: MqttLink | None = None
        self._kick = asyncio.Event()
        # What the pump last saw waiting in the outbox (None: nothing it would form by age),
        # and what has been appended since: see `appended`.
        self._pending_seen: int | None = None
        self._appended = 0
        self._stopping = asyncio.Event()
        self._command_handler: CommandHandler | None = None
        self._listeners: list[AggregatorListener] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_trim = -1e18
        self._last_mark = -1e18
        self._publish_pending_mark = False

    # -- public API -------------------------------------------------------------------------

    @property
    def aggregator_online(self) -> bool | None:
        """The aggregator's last verified state: True, False, or None (not known yet)."""
        return self._gate.aggregator_online

    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.is_connected

    @property
    def publishing(self) -> bool:
        """Whether batches are being published right now (gate open, jitter over)."""
        return self.connected and self._gate.is_open(self.clock.now())

    def set_command_handler(self, handler: CommandHandler | None) -> None:
        """Route messages of the cmd topic, as (topic, raw bytes), to `handler`."""
        self._command_handler = handler

    def add_aggregator_listener(self, listener: AggregatorListener) -> None:
        """Call `listener(online)` whenever a verified aggregator state arrives that changes it."""
        self._listeners.append(listener)

    def wake(self) -> None:
        """Nudge the task (it also looks on its own every tick)."""
        self._kick.set()

    def appended(self, n: int) -> None:
        """`n` readings were appended. The pump only needs waking if it is not already waiting
        for pending readings to come of age (their deadline is set by the oldest one), or if a
        full batch is now waiting: a fleet host's agents woke it after every device's poll."""
        self._appended += n
        seen = self._pending_seen
        if seen is None or seen + self._appended >= self.policy.batch_max_readings:
            self._kick.set()

    async def publish_signed(self, msg: messages.Message, *, topic: str | None = None) -> None:
        """Sign `msg` for this site's ack topic (or `topic`) and publish it QoS 1; returns on
        PUBACK. LinkError if not connected (the caller decides whether to keep it for later)."""
        link = self._link
        if link is None or not link.is_connected:
            raise LinkError("not connected")
        t = topic or self._topics.ack(self.identity.site)
        await link.publish(t, self.identity.signer.seal_bytes(messages.encode(msg), t))

    def seal(self, msg: messages.Message, *, topic: str | None = None) -> tuple[str, bytes]:
        """(topic, signed bytes) of `msg` for this site's ack topic (or `topic`)."""
        t = topic or self._topics.ack(self.identity.site)
        return t, self._sign(msg, t)

    def wake_acks(self) -> None:
        """Nudge the ack sender: an ack was stored in the ack queue."""
        self._ack_kick.set()

    async def run(self) -> None:
        """Connect, deliver, reconnect — until `stop()`."""
        attempt = 0
        try:
            while not self._stopping.is_set():
                self._trim_if_due()
                link = MqttLink(self.settings.link, will=self._death_will())
                try:
                    await link.connect()
                except LinkError as exc:
                    self.counters.connect_failures += 1
                    attempt += 1
                    delay = reconnect_delay(self.policy, attempt, self._rng.random())
                    if attempt == 1:
                        log.warning(
                            "%s: broker unreachable (%s); retrying", self.identity.site, exc
                        )
                    await self._sleep_or_stop(delay)
                    continue
                if attempt:
                    log.info("%s: connected after %d attempts", self.identity.site, attempt + 1)
                attempt = 0
                self.counters.connects += 1
                reason: str | None = None
                try:
                    await self._session(link)
                except LinkError as exc:  # e.g. a subscription refused: drop it, start over
                    reason = str(exc)
                finally:
                    self._link = None
                    self._sent_at.clear()
                    self._gate = gate_update(
                        self._gate, self.policy, now=self.clock.now(), u=0.0, link_up=False
                    )
                    link.abort()
                if not self._stopping.is_set():
                    attempt = 1
                    reason = reason or link.close_reason
                    log.warning("%s: link lost (%s)", self.identity.site, reason)
                    await self._sleep_or_stop(
                        reconnect_delay(self.policy, attempt, self._rng.random())
                    )
        finally:
            for task in list(self._tasks):
                task.cancel()

    async def stop(self) -> None:
        """Ask `run()` to finish: publish the offline state and disconnect cleanly."""
        self._stopping.set()
        self._kick.set()

    # -- one connection ---------------------------------------------------------------------

    async def _session(self, link: MqttLink) -> None:
        self._link = link
        await link.subscribe([self._t_receipt, self._t_cmd, self._t_aggregator])
        birth = messages.SiteState(
            site=self.identity.site,
            online=True,
            boot=self.boot,
            version=self.settings.agent_version,
            t=self._now_ms(),
            devices=dict(self.settings.devices),
        )
        link.publish(self._t_state, self._sign(birth, self._t_state), retain=True)
        self._gate = gate_update(
            self._gate, self.policy, now=self.clock.now(), u=self._rng.random(), link_up=True
        )
        # The unreceipted batches of earlier connections (or runs) go out again, identically.
        self._unreceipted = {b.seq for b in self.outbox.batches()}
        reader = asyncio.create_task(self._read(link))
        closer = asyncio.create_task(self._watch_close(link))
        acker = asyncio.create_task(self._send_acks(link))
        try:
            while not self._stopping.is_set() and not link.closed.is_set():
                self._kick.clear()
                self._appended = 0
                self.counters.wakes += 1
                self._trim_if_due()
                self._pump(link)
                await self._wait_kick(self._next_wake())
            if self._stopping.is_set() and not link.closed.is_set():
                await self._say_goodbye(link)
        finally:
            reader.cancel()
            closer.cancel()
            acker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acker
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            with contextlib.suppress(asyncio.CancelledError):
                await closer

    def _pump(self, link: MqttLink) -> None:
        """Form what is due and publish what `to_send` says, if the gate is open."""
        now = self.clock.now()
        if not self._gate.is_open(now):
            return
        pol = self.policy
        while True:
            oldest = self.outbox.oldest_pending_t()
            if not should_form(
                pol,
                pending=self.outbox.pending_readings(),
                oldest_pending_s=None if oldest is None else oldest / 1000.0,
                loss_pending=self.outbox.has_loss_pending(),
                unreceipted=len(self._unreceipted),
                now=now,
            ):
                break
            batch = self.outbox.form_batch(
                self._seal,
                now_ms=self._now_ms(),
                max_readings=pol.batch_max_readings,
                historical_before_ms=int(historical_before(pol, now) * 1000),
            )
            if batch is None:
                break
            self.counters.batches_formed += 1
            self._unreceipted.add(batch.seq)
            self._bodies[batch.seq] = batch.body
        sent = False
        for seq in to_send(pol, self._unreceipted, self._sent_at, now):
            body = self._bodies.get(seq)
            if body is None:
                stored = self.outbox.batch(seq)
                if stored is None:  # receipted meanwhile
                    self._unreceipted.discard(seq)
                    continue
                body = self._bodies[seq] = stored.body
            if seq in self._sent_at:
                self.counters.republished += 1
            link.publish(self._t_telemetry, body)
            self._sent_at[seq] = now
            self.counters.published += 1
            sent = True
        if sent:
            self._publish_pending_mark = True
        if (
            self._publish_pending_mark
            and now - self._last_mark >= self.settings.publish_mark_interval_s
        ):
            self.outbox.mark_published(self._now_ms())
            self._last_mark = now
            self._publish_pending_mark = False

    def _next_wake(self) -> float:
        """Seconds (of the agent's clock) until the pump must look again on its own."""
        now = self.clock.now()
        tick = max(self.settings.idle_tick_s, self.settings.idle_min_wall_s * self.clock.speed)
        self._pending_seen = None
        if self._gate.open_at is not None and self._gate.open_at > now:
            return min(tick, self._gate.open_at - now)
        if not self._gate.is_open(now):
            return tick
        # Pending readings fall due by age only while the window has room to form them.
        oldest = (
            self.outbox.oldest_pending_t() if len(self._unreceipted) < self.policy.window else None
        )
        if oldest is not None:
            self._pending_seen = self.outbox.pending_readings()
        due = next_deadline(
            self.policy,
            oldest_pending_s=None if oldest is None else oldest / 1000.0,
            sent_at=self._sent_at,
            now=now,
        )
        return tick if due is None else min(tick, max(0.0, due - now))

    async def _wait_kick(self, seconds: float) -> None:
        wall = seconds / max(self.clock.speed, 1e-9)
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that lands
        # as the event is set, and the delivery task would outlive stop().
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wall):
                await self._kick.wait()

    async def _send_acks(self, link: MqttLink) -> None:
        """Publish the stored acks, oldest first, one PUBACK at a time; delete each on its PUBACK.

        Until the link closes: what is left goes out on the next connection, byte for byte."""
        queue = self.acks
        if queue is None:
            return
        while not link.closed.is_set():
            self._ack_kick.clear()
            pending = queue.pending()
            if not pending:
                await self._ack_kick.wait()
                continue
            for item in pending:
                try:
                    await link.publish(item.topic, item.body)
                except LinkError:
                    return
                await queue.published_async(item.n)
                self.counters.acks_published += 1

    async def _watch_close(self, link: MqttLink) -> None:
        await link.closed.wait()
        self._kick.set()

    async def _say_goodbye(self, link: MqttLink) -> None:
        """On a clean stop: the offline state, retained (a clean DISCONNECT suppresses the will)."""
        death = self._sign(self._state(online=False), self._t_state)
        with contextlib.suppress(LinkError, TimeoutError):
            async with asyncio.timeout(5.0):
                await link.publish(self._t_state, death, retain=True)
        await link.disconnect()

    # -- incoming ---------------------------------------------------------------------------

    async def _read(self, link: MqttLink) -> None:
        while True:
            msg = await link.incoming.get()
            try:
                if msg.topic == self._t_receipt:
                    self._on_receipt(msg.topic, msg.payload)
                elif msg.topic == self._t_aggregator:
                    self._on_aggregator_state(msg.topic, msg.payload)
                elif msg.topic == self._t_cmd:
                    self._on_command(msg.topic, msg.payload)
            except (EnvelopeError, MessageError) as exc:
                self.counters.reject(exc.reason)
                log.warning("%s: dropped a message on %s: %s", self.identity.site, msg.topic, exc)
            self._kick.set()

    def _open(self, topic: str, payload: bytes) -> messages.Message:
        opened = envelope.unseal(payload, topic, self.identity.aggregator_keys)
        return messages.decode(opened.payload)

    def _on_receipt(self, topic: str, payload: bytes) -> None:
        msg = self._open(topic, payload)
        if not isinstance(msg, messages.Receipt) or msg.site != self.identity.site:
            raise MessageError(f"not a receipt for {self.identity.site}")
        deleted = self.outbox.receipt(msg.seqs, now_ms=self._now_ms())
        self.counters.receipts += 1
        self.counters.receipted_batches += deleted
        for seq in msg.seqs:
            self._unreceipted.discard(seq)
            self._sent_at.pop(seq, None)
            self._bodies.pop(seq, None)

    def _on_aggregator_state(self, topic: str, payload: bytes) -> None:
        if not payload:  # the retained state was cleared: unknown again
            online: bool | None = None
        else:
            msg = self._open(topic, payload)
            if not isinstance(msg, messages.AggregatorState):
                raise MessageError("not an aggregator state")
            online = msg.online
        before = self._gate
        self._gate = gate_update(
            before,
            self.policy,
            now=self.clock.now(),
            u=self._rng.random(),
            aggregator_online=online,
        )
        if before.open_at is None and self._gate.open_at is not None:
            # The gate reopens: whatever was in flight before may be lost with the old session.
            self._sent_at.clear()
        if before.aggregator_online != online:
            log.info("%s: aggregator is %s", self.identity.site, _state_word(online))
            for listener in self._listeners:
                listener(online)

    def _on_command(self, topic: str, payload: bytes) -> None:
        handler = self._command_handler
        if handler is None:
            self.counters.reject("no_handler")
            return
        task = asyncio.create_task(self._run_command(handler, topic, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_command(self, handler: CommandHandler, topic: str, payload: bytes) -> None:
        try:
            await handler(topic, payload)
        except Exception:  # a handler bug must not take delivery down; it is logged loudly
            log.exception("%s: command handler failed", self.identity.site)

    # -- helpers ----------------------------------------------------------------------------

    def _seal(self, draft: BatchDraft) -> bytes:
        site = self.identity.site
        msg: messages.Message
        if draft.loss is not None:
            loss = draft.loss
            msg = messages.DataLoss(
                site=site,
                boot=self.boot,
                seq=draft.seq,
                sent=draft.sent_ms,
                count=loss.dropped,
                oldest=loss.first_t if loss.first_t is not None else draft.sent_ms,
                newest=loss.last_t if loss.last_t is not None else draft.sent_ms,
            )
        else:
            msg = messages.TelemetryBatch(
                site=site,
                boot=self.boot,
                seq=draft.seq,
                sent=draft.sent_ms,
                readings=tuple(draft.readings),
                hist=draft.historical,
            )
        return self._sign(msg, self._t_telemetry)

    def _sign(self, msg: messages.Message, topic: str) -> bytes:
        return self.identity.signer.seal_bytes(messages.encode(msg), topic)

    def _state(self, *, online: bool) -> messages.SiteState:
        return messages.SiteState(
            site=self.identity.site,
            online=online,
            boot=self.boot,
            version=self.settings.agent_version,
            t=self._now_ms(),
            devices=dict(self.settings.devices),
        )

    def _death_will(self) -> Will:
        return Will(self._t_state, self._sign(self._state(online=False), self._t_state))

    def _trim_if_due(self) -> None:
        now = self.clock.now()
        if now - self._last_trim >= self.settings.trim_interval_s:
            self._last_trim = now
            dropped = self.outbox.trim(self._now_ms())
            if dropped:
                log.warning(
                    "%s: outbox full, dropped %d oldest readings", self.identity.site, dropped
                )

    def _now_ms(self) -> int:
        return int(self.clock.now() * 1000)

    async def _sleep_or_stop(self, seconds: float) -> None:
        wall = seconds / max(self.clock.speed, 1e-9)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wall):
                await self._stopping.wait()


def _state_word(online: bool | None) -> str:
    return {True: "online", False: "offline", None: "unknown"}[online]


__all__ = [
    "AGENT_VERSION",
    "AggregatorListener",
    "CommandHandler",
    "Delivery",
    "DeliveryCounters",
    "DeliverySettings",
]
