"""Many agents in one process and one event loop: how the fleet simulator runs hundreds of sites.

Each `Agent` owns its connections, tasks and SQLite files and nothing global, so a fleet host is
only a list of them: built from their configs (profiles parsed once and shared, since they are
immutable), started a few at a time so a fleet does not stampede the broker, and stopped
together. `sitewatt-agent fleet-host` is the CLI around `FleetHost`; it writes a small JSON status
file that the fleet simulator reads to know when its agents are up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from agent.command_db import commit_thread
from agent.config import SiteConfig
from agent.errors import AgentError
from agent.guard_loop import GUARD_MIN_WALL_S
from agent.poller import load_device_profiles
from agent.runtime import Agent
from protocols.profiles import Profile

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FleetHostStatus:
    """What a fleet host reports: how many agents run and what they have done."""

    pid: int
    agents: int
    started: int
    connected: int
    readings_taken: int
    outbox_pending: int
    wall: float


WALL_FLOOR_PER_AGENT_S = 0.01
"""Each hosted agent stretches the unprompted wakes of every agent's guard and delivery loops
by this much wall time (250 agents: every 2.5 s), so a host's idle wakes stay near 200 a wall
second whatever its size. Polls, commands and receipts still prompt them at once."""


def wall_floor_s(agents: int) -> float:
    return max(GUARD_MIN_WALL_S, agents * WALL_FLOOR_PER_AGENT_S)


class FleetHost:
    """Agents for many sites on one loop. `await start()` … `await stop()`."""

    def __init__(self, configs: Sequence[SiteConfig], *, start_spread_s: float = 2.0) -> None:
        self.configs = list(configs)
        self.start_spread_s = start_spread_s
        self.wall_floor_s = wall_floor_s(len(self.configs))
        self.commit_thread = commit_thread("fleet-commits")
        self.agents: list[Agent] = []
        self.started = 0
        self._profiles: dict[Path, Profile] = {}

    def _shared_profiles(self, config: SiteConfig) -> dict[str, Profile]:
        """A site's profiles by device id, each file parsed once for the whole host."""
        out: dict[str, Profile] = {}
        missing = [
            d
            for d in config.devices
            if config.devices[d].enabled and config.profile_path(d) not in self._profiles
        ]
        if missing:
            for dev_id, prof in load_device_profiles(config).items():
                self._profiles.setdefault(config.profile_path(dev_id), prof)
        for dev_id, dev in config.devices.items():
            if dev.enabled:
                out[dev_id] = self._profiles[config.profile_path(dev_id)]
        return out

    def build(self) -> None:
        """Construct every agent (raises the first config or key problem)."""
        for cfg in self.configs:
            self.agents.append(
                Agent(
                    cfg,
                    cfg.clock.build(),
                    profiles=self._shared_profiles(cfg),
                    wall_floor_s=self.wall_floor_s,
                    commit_thread=self.commit_thread,
                )
            )

    async def start(self) -> None:
        if not self.agents:
            self.build()
        pause = self.start_spread_s / max(len(self.agents), 1)
        for agent in self.agents:
            await agent.start()
            self.started += 1
            if pause > 0:
                await asyncio.sleep(pause)

    async def stop(self) -> None:
        # Polling stops everywhere first, so the loop is quiet before hundreds of deliveries
        # flush and disconnect (a busy loop let poll tasks outlive their agent's outbox).
        await asyncio.gather(*(a.poller.stop() for a in self.agents), return_exceptions=True)
        await asyncio.gather(*(a.stop() for a in self.agents), return_exceptions=True)
        self.commit_thread.shutdown(wait=True)

    def status(self) -> FleetHostStatus:
        pending = 0
        for a in self.agents:
            with contextlib.suppress(AgentError):  # closed after stop; the count is informative
                pending += a.outbox.stats().depth
        return FleetHostStatus(
            pid=os.getpid(),
            agents=len(self.configs),
            started=self.started,
            connected=sum(1 for a in self.agents if a.delivery.connected),
            readings_taken=sum(a.readings_taken for a in self.agents),
            outbox_pending=pending,
            wall=time.time(),
        )


def write_status(path: Path, status: FleetHostStatus) -> None:
    """Atomically replace the status file (readers never see half a file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(asdict(status)))
    tmp.replace(path)


async def serve(
    host: FleetHost,
    stop: asyncio.Event,
    *,
    status_file: Path | None = None,
    status_every_s: float = 2.0,
) -> None:
    """Start the host's agents, report status until `stop` is set, then stop them."""
    starter = asyncio.create_task(host.start(), name="fleet-start")
    try:
        while not stop.is_set():
            if status_file is not None:
                write_status(status_file, host.status())
            failure = starter.exception() if starter.done() else None
            if failure is not None:
                raise failure
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(status_every_s):
                    await stop.wait()
    finally:
        starter.cancel()
        await asyncio.gather(starter, return_exceptions=True)
        await host.stop()
        if status_file is not None:
            write_status(status_file, host.status())


__all__ = [
    "WALL_FLOOR_PER_AGENT_S",
    "FleetHost",
    "FleetHostStatus",
    "serve",
    "wall_floor_s",
    "write_status",
]
