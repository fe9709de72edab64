"""The agent: polling → outbox → delivery, and commands → devices, in one object.

`Agent(config, clock)` owns everything of one site — its Modbus buses, its SQLite files, its MQTT
connection, its tasks — and nothing global: no signal handlers, no logging setup, no module
state, so a fleet simulator can run hundreds in one event loop. Use it as

    async with Agent(config, clock) as agent:
        await agent.wait()          # until agent.stop() (the CLI calls it on SIGTERM/SIGINT)

or `await agent.start()` … `await agent.stop()`. Stopping cancels polling, lets delivery publish
the offline state and disconnect, and closes the databases; every reading taken is already in
the outbox (it is appended before anything else happens to it).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from agent.acks import AckQueue
from agent.audit import AuditLog
from agent.commands import CommandProcessor, SiteDevices
from agent.config import SiteConfig
from agent.delivery import Delivery, DeliverySettings
from agent.delivery_rules import DeliveryPolicy
from agent.guard_loop import GUARD_MIN_WALL_S, TICK_S, GuardLoop
from agent.identity import SiteIdentity, load_identity
from agent.modbus_bus import ModbusBus
from agent.mqtt_link import LinkSettings
from agent.outbox import Outbox, OutboxLimits
from agent.poller import Poller, load_device_profiles
from protocols.clock import Clock, SystemClock
from protocols.messages import Ack
from protocols.profiles import Profile
from protocols.topics import Topics
from protocols.types import DeviceKind, Reading

if TYPE_CHECKING:
    from agent.health import GatewayHealth

log = logging.getLogger(__name__)


def link_settings(config: SiteConfig) -> LinkSettings:
    b = config.broker
    return LinkSettings(
        host=b.host,
        port=b.port,
        client_id=config.client_id,
        username=b.username,
        password=b.read_password(),
        tls=b.tls,
        ca_file=b.ca_file,
        cert_file=b.cert_file,
        key_file=b.key_file,
        keepalive_s=b.keepalive_s,
    )


def delivery_settings(
    config: SiteConfig,
    profiles: Mapping[str, Profile],
    *,
    idle_min_wall_s: float = GUARD_MIN_WALL_S,
) -> DeliverySettings:
    o = config.outbox
    return DeliverySettings(
        idle_min_wall_s=idle_min_wall_s,
        link=link_settings(config),
        policy=DeliveryPolicy(
            batch_max_readings=o.batch_max_readings,
            batch_max_age_s=o.batch_max_age_s,
            window=o.inflight_batches,
            receipt_timeout_s=o.receipt_timeout_s,
            jitter_max_s=o.drain_jitter_max_s,
        ),
        topic_prefix=config.broker.topic_prefix,
        devices={d: profiles[d].name for d in profiles},
    )


def outbox_limits(config: SiteConfig) -> OutboxLimits:
    return OutboxLimits(max_bytes=config.outbox.max_bytes, max_age_s=config.outbox.max_age_s)


class Agent:
    """One site's edge agent."""

    def __init__(
        self,
        config: SiteConfig,
        clock: Clock | None = None,
        *,
        identity: SiteIdentity | None = None,
        profiles: Mapping[str, Profile] | None = None,
        buses: Mapping[str, ModbusBus] | None = None,
        rng: random.Random | None = None,
        wall_floor_s: float = GUARD_MIN_WALL_S,
        commit_thread: ThreadPoolExecutor | None = None,
    ) -> None:
        """`wall_floor_s`: the shortest wall time between the unprompted looks of the guard
        and delivery loops (a fleet host of hundreds of agents raises it); `commit_thread`: a
        thread for the command side's commits shared with other agents (else two of its own)."""
        self.config = config
        self.clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self.profiles = dict(profiles) if profiles is not None else load_device_profiles(config)
        self.identity = identity or load_identity(
            config.site_id, config.site.key_file, config.site.pinned_keys()
        )
        self.outbox = Outbox(config.outbox.path, limits=outbox_limits(config))
        self.audit = AuditLog(config.outbox.path, thread=commit_thread)
        self.acks = AckQueue(config.outbox.path, thread=commit_thread)
        self.delivery = Delivery(
            delivery_settings(config, self.profiles, idle_min_wall_s=wall_floor_s),
            self.identity,
            self.outbox,
            self.clock,
            rng=self._rng,
            acks=self.acks,
        )
        self.poller = Poller(
            config, self.profiles, self._sink, self.clock, rng=self._rng, buses=buses
        )
        self.devices = SiteDevices.build(config, self.profiles)
        topics = Topics(config.broker.topic_prefix)
        self.commands = CommandProcessor(
            config,
            self.devices,
            self.poller,
            self.audit,
            self.clock,
            keyring=self.identity.aggregator_keys,
            topic=topics.cmd(config.site_id),
            publish_ack=self._publish_ack,
        )
        self.health: GatewayHealth | None = None
        if config.gateway.enabled:
            from agent.health import GatewayHealth  # psutil (~1 MB) only where it reports

            self.health = GatewayHealth(
                config.gateway, self.clock, self._sink, disk_path=config.outbox.path.parent
            )
        self.delivery.set_command_handler(self._on_command)
        self.delivery.add_aggregator_listener(self._on_aggregator)
        self.poller.add_listener(self._on_poll)
        self._watch_kinds = {
            DeviceKind.BATTERY,
            DeviceKind.METER,
            DeviceKind.AIRCON,
            DeviceKind.BREAKER,
            DeviceKind.RECTIFIER,
        }
        # Leases, aggregator-offline restores and interlock acts: prompted by a command, the
        # aggregator going offline or a poll (paced: at most every `wall_floor_s`), or a tick.
        self.guard = GuardLoop(
            f"{config.site_id}: guard",
            self.clock,
            self._guard_step,
            prompt_gap_s=wall_floor_s,
            floor_s=wall_floor_s,
        )
        # The reserve stop, in a loop of its own: the guard may wait on the command lock (a
        # breaker settling), this never does (`CommandProcessor.enforce_battery`). Prompted by
        # every poll, unpaced, so it acts within one poll of the SOC reaching the reserve.
        self.reserve_guard = GuardLoop(
            f"{config.site_id}: reserve",
            self.clock,
            self.commands.enforce_battery,
            floor_s=wall_floor_s,
        )
        self._prompt = self.guard.prompt
        self._reserve_prompt = self.reserve_guard.prompt
        self._offline = asyncio.Event()
        self._stopped = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.readings_taken = 0

    # -- wiring -------------------------------------------------------------------------------

    def _sink(self, readings: Sequence[Reading]) -> None:
        self.outbox.append(readings)
        self.readings_taken += len(readings)
        self.delivery.appended(len(readings))

    async def _publish_ack(self, ack: Ack) -> None:
        """Sign the ack now and store it; delivery publishes it, now or when the link returns."""
        topic, body = self.delivery.seal(ack)
        await self.acks.put_async(
            command_id=ack.id, seq=ack.seq, topic=topic, body=body, created_ms=ack.t
        )
        self.delivery.wake_acks()

    async def _on_command(self, topic: str, payload: bytes) -> None:
        await self.commands.handle(topic, payload)
        self._prompt.set()

    def _on_aggregator(self, online: bool | None) -> None:
        if online is False:
            self._offline.set()
            self._prompt.set()

    def _on_poll(self, device: str, readings: list[Reading]) -> None:
        if self.config.devices[device].kind in self._watch_kinds:
            self._prompt.set()
            self._reserve_prompt.set()

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._tasks:
            return
        await self.poller.start()
        self._tasks.append(asyncio.create_task(self.delivery.run(), name="delivery"))
        self._tasks.append(asyncio.create_task(self.guard.run(), name="guard"))
        self._tasks.append(asyncio.create_task(self.reserve_guard.run(), name="reserve"))
        if self.health is not None:
            self._tasks.append(asyncio.create_task(self.health.run(), name="health"))

    async def _guard_step(self) -> None:
        if self._offline.is_set():
            self._offline.clear()
            await self.commands.aggregator_offline()
        await self.commands.expire_leases()
        await self.commands.enforce_dormant()

    async def stop(self) -> None:
        """Stop polling, flush delivery (offline state, disconnect), close the databases."""
        if self._stopped.is_set():
            return
        await self.poller.stop()
        await self.delivery.stop()
        delivery = next((t for t in self._tasks if t.get_name() == "delivery"), None)
        others = [t for t in self._tasks if t is not delivery]
        for t in others:
            t.cancel()
        if others:
            await asyncio.wait(others, timeout=5.0)
        if delivery is not None:
            # Let it publish the offline state and disconnect; never wait on it unboundedly.
            done, _ = await asyncio.wait([delivery], timeout=10.0)
            if not done:
                log.warning("%s: delivery did not stop in 10 s; cancelling", self.config.site_id)
                delivery.cancel()
                await asyncio.wait([delivery], timeout=5.0)
            elif not delivery.cancelled() and delivery.exception() is not None:
                log.error("%s: delivery ended with %r", self.config.site_id, delivery.exception())
        self._tasks.clear()
        self.outbox.close()
        self.audit.close()
        self.acks.close()
        self._stopped.set()

    async def wait(self) -> None:
        """Until `stop()` has finished."""
        await self._stopped.wait()

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


__all__ = ["TICK_S", "Agent", "delivery_settings", "link_settings", "outbox_limits"]
