"""Commands out: seal and publish signed commands, record them, and track the agents' acks.

Each command gets the site's next seq from storage (persisted and strictly increasing, so an
agent that accepts only seqs above the last one it ran never runs a command twice), an expiry and
a lease. The record is written before the publish; the ack, verified by ingest, completes it with
the status, reason, read-back and round-trip time.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from typing import Any, Protocol

from aggregator.errors import AckTimeoutError, CommandError, SiteError
from aggregator.metrics import AggregatorMetrics
from aggregator.storage import CommandRecord, CommandStatus, Storage
from protocols import messages
from protocols.clock import Clock, SystemClock, now_ms
from protocols.envelope import Signer
from protocols.errors import MessageError
from protocols.topics import Topics

log = logging.getLogger("sitewatt.aggregator.commands")

DEFAULT_EXPIRES_S = 60.0
_FINAL = frozenset({CommandStatus.APPLIED, CommandStatus.REJECTED, CommandStatus.FAILED})


class Publisher(Protocol):
    """Where sealed commands go (ingest's MQTT client)."""

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None: ...


class Commands:
    """`send_command` from any thread or coroutine; `handle_ack` from ingest's worker."""

    def __init__(
        self,
        storage: Storage,
        signer: Signer,
        publisher: Publisher,
        *,
        topics: Topics | None = None,
        clock: Clock | None = None,
        metrics: AggregatorMetrics | None = None,
        expires_s: float = DEFAULT_EXPIRES_S,
    ) -> None:
        self.storage = storage
        self.expires_s = expires_s
        self.signer = signer
        self.publisher = publisher
        self.topics = topics or Topics()
        self.clock: Clock = clock or SystemClock()
        self.metrics = metrics
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]]] = {}

    def send_command(
        self,
        site: str,
        action: str,
        params: dict[str, Any],
        lease_s: float,
        issued_by: str,
        *,
        expires_s: float | None = None,
    ) -> CommandRecord:
        """Validate, record (with the site's next seq), seal and publish a command (QoS 1).

        CommandError if the site is not enrolled or the action/params are not a valid command.
        """
        try:
            info = self.storage.get_site(site)
        except SiteError as exc:
            raise CommandError(str(exc)) from exc
        if not info.enabled:
            raise CommandError(f"site {site!r} is disabled")
        try:
            act = messages.Action(action)
        except ValueError:
            known = ", ".join(a.value for a in messages.Action)
            raise CommandError(f"unknown action {action!r} (known: {known})") from None
        lease = round(lease_s)
        if not 1 <= lease <= messages.LEASE_MAX_S:
            raise CommandError(f"lease {lease_s} s outside 1..{messages.LEASE_MAX_S}")
        if expires_s is None:
            expires_s = self.expires_s
        if expires_s <= 0:
            raise CommandError("expires_s must be > 0")
        try:
            typed = messages.PARAMS_BY_ACTION[act].from_map(params)
        except MessageError as exc:
            raise CommandError(str(exc)) from exc
        issued = now_ms(self.clock)
        record = self.storage.new_command(
            command_id=str(uuid.uuid4()),
            site=site,
            action=act.value,
            params=typed.to_map(),
            issued_ms=issued,
            expires_ms=issued + int(expires_s * 1000),
            lease_s=lease,
            issued_by=issued_by,
        )
        cmd = messages.Command(
            id=record.id,
            site=site,
            seq=record.seq,
            issued=record.issued_ms,
            expires=record.expires_ms,
            lease_s=lease,
            params=typed,
        )
        topic = self.topics.cmd(site)
        payload = self.signer.seal_bytes(messages.encode(cmd), topic)
        sent = now_ms(self.clock)
        self.storage.mark_command_sent(record.id, sent)
        self.publisher.publish(topic, payload, qos=1)
        if self.metrics is not None:
            self.metrics.commands_sent.labels(action=act.value).inc()
        log.info("command %s seq %d to %s: %s %s", record.id, record.seq, site, act.value, params)
        sent_record = self.storage.command(record.id)
        assert sent_record is not None
        return sent_record

    def handle_ack(self, ack: messages.Ack, received_ms: int) -> CommandRecord | None:
        """Record a verified ack (ingest's on_ack hook). Ignores acks for unknown commands or
        whose site/seq do not match the command we sent."""
        rec = self.storage.command(ack.id)
        if rec is None or rec.site != ack.site or rec.seq != ack.seq:
            log.warning("ack for unknown command %s (site %s seq %d)", ack.id, ack.site, ack.seq)
            return None
        if rec.ack_ms is not None:
            return rec  # a redelivered ack: the first outcome stands
        rtt = None if rec.sent_ms is None else max(0.0, float(received_ms - rec.sent_ms))
        done = self.storage.record_ack(
            ack.id,
            status=ack.status.value,
            ack_ms=received_ms,
            reason=ack.reason or None,
            readback=dict(ack.readback),
            rtt_ms=rtt,
        )
        if done is None:
            return None
        if self.metrics is not None:
            self.metrics.command_acks.labels(status=ack.status.value).inc()
            if rtt is not None:
                self.metrics.command_rtt.observe(rtt / 1000)
        self._resolve(done)
        return done

    def _resolve(self, rec: CommandRecord) -> None:
        with self._lock:
            waiters = self._waiters.pop(rec.id, [])
            self._done.notify_all()
        for loop, fut in waiters:
            loop.call_soon_threadsafe(_set_result, fut, rec)

    async def wait_ack(self, command_id: str, timeout: float) -> CommandRecord:
        """The command's record once an ack is stored; AckTimeoutError after `timeout` s."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[CommandRecord] = loop.create_future()
        with self._lock:
            rec = self.storage.command(command_id)
            if rec is None:
                raise CommandError(f"no command {command_id}")
            if rec.ack_ms is not None:
                return rec
            self._waiters.setdefault(command_id, []).append((loop, fut))
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise AckTimeoutError(f"no ack for command {command_id} in {timeout} s") from None
        finally:
            with self._lock:
                entries = self._waiters.get(command_id, [])
                self._waiters[command_id] = [e for e in entries if e[1] is not fut]
                if not self._waiters[command_id]:
                    del self._waiters[command_id]

    def wait_ack_blocking(self, command_id: str, timeout: float) -> CommandRecord:
        """`wait_ack` for threads without an event loop."""
        with self._done:
            ok = self._done.wait_for(lambda: _acked(self.storage, command_id), timeout)
        rec = self.storage.command(command_id)
        if not ok or rec is None:
            raise AckTimeoutError(f"no ack for command {command_id} in {timeout} s")
        return rec


def _acked(storage: Storage, command_id: str) -> bool:
    rec = storage.command(command_id)
    return rec is not None and rec.ack_ms is not None


def _set_result(fut: asyncio.Future[CommandRecord], rec: CommandRecord) -> None:
    if not fut.done():
        fut.set_result(rec)


__all__ = ["DEFAULT_EXPIRES_S", "Commands", "Publisher"]
