"""A small live fleet for the browser tests: simulated sites, real agents, real mosquitto, and the
real aggregator service (ingest + alarms + HTTP API + dashboard on uvicorn).

Each site is the simulators' physics behind a real Modbus TCP server, polled by a real `Agent`
that publishes signed batches through mosquitto to the aggregator's ingest; commands go back the
same way and the agent's signed ack completes them. All of it runs on one `SimClock` in one
event loop in a background thread, so the test thread is free for Playwright's sync API.
"""

from __future__ import annotations

import asyncio
import faulthandler
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.runtime import Agent
from aggregator.config import config_from_dict
from aggregator.identity import init_key
from aggregator.service import run
from aggregator.sites import SiteRegistry
from aggregator.storage import open_storage
from protocols.clock import SimClock
from protocols.keys import generate_key, public_key_hex, save_private_key
from simulators.broker import free_port, wait_port
from simulators.spec import BatterySpec, SiteSpec, TrafficSpec
from tests.agent.sim_support import PROFILES, SimSite, start_sim_site
from tests.support.aggregator_data import add_role_tokens, api_get

SPEED = 30.0
POLL_S = 10.0  # simulated seconds between polls of each device (a third of a wall second)
HEARTBEAT_S = 60.0  # every point at least this often (simulated), so charts fill quickly
# 2023-11-14 07:40 in Asia/Shanghai (a Tuesday): the flat -> peak change at 08:00 comes into view.
START = 1_699_918_800.0
TARIFF = "shanghai-two-part"


@dataclass(frozen=True)
class LiveSiteSpec:
    site: str
    name: str
    region: str
    spec: SiteSpec


def fleet_specs() -> tuple[LiveSiteSpec, ...]:
    """Three sites of different size, battery and traffic."""
    return (
        LiveSiteSpec("live-a", "Ridge", "north", SiteSpec(id="live-a", seed=1)),
        LiveSiteSpec(
            "live-b",
            "Docks",
            "east",
            SiteSpec(
                id="live-b",
                seed=2,
                traffic=TrafficSpec(scale=1.4),
                battery=BatterySpec(capacity_ah=300.0, initial_soc=80.0),
            ),
        ),
        LiveSiteSpec(
            "live-c",
            "Mill",
            "west",
            SiteSpec(
                id="live-c",
                seed=3,
                traffic=TrafficSpec(scale=0.7),
                battery=BatterySpec(capacity_ah=100.0, initial_soc=60.0),
            ),
        ),
    )


@dataclass
class LiveFleet:
    """The running fleet: the aggregator's URL, tokens by role, the sites' simulators."""

    workdir: Path
    broker_port: int
    url: str = ""
    tokens: dict[str, str] = field(default_factory=dict)
    sites: dict[str, SimSite] = field(default_factory=dict)
    specs: tuple[LiveSiteSpec, ...] = field(default_factory=fleet_specs)
    clock: SimClock = field(default_factory=lambda: SimClock(start=START, speed=SPEED))
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _stop: asyncio.Event | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _error: BaseException | None = None

    # -- the test thread's side ------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> LiveFleet:
        self._thread = threading.Thread(target=self._run, name="live-fleet", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            self.stop()
            raise RuntimeError(f"the live fleet did not come up: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(60)
            if self._thread.is_alive():
                faulthandler.dump_traceback(all_threads=True)  # where it hangs, for the log
                raise AssertionError("the live fleet did not stop within 60 s")
        if self._error is not None:
            raise RuntimeError("the live fleet failed") from self._error

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` in the fleet's event loop (e.g. to change a simulator) and return its result."""
        assert self._loop is not None
        done: Future[Any] = Future()

        def job() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:
                done.set_exception(exc)

        self._loop.call_soon_threadsafe(job)
        return done.result(10)

    def api(self, path: str, role: str = "viewer", **params: Any) -> Any:
        """GET an API path with the role's token (`from_` stands for `from`)."""
        return api_get(self.url, self.tokens[role], path, **params)

    def wait(self, cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout} s")
            time.sleep(0.1)

    # -- the fleet's own thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    def _prepare(self) -> tuple[dict[str, Any], dict[str, Path], str]:
        """Aggregator key, database with the sites enrolled and tokens, and the site keys."""
        agg_key = init_key(self.workdir / "agg" / "aggregator.key")
        db = self.workdir / "agg" / "aggregator.db"
        storage = open_storage(db)
        keys: dict[str, Path] = {}
        try:
            registry = SiteRegistry(storage, self.clock)
            for s in self.specs:
                key = generate_key()
                folder = self.workdir / s.site
                folder.mkdir(parents=True)
                save_private_key(key, folder / "site.key")
                keys[s.site] = folder
                registry.enrol(
                    s.site, public_key_hex(key), name=s.name, region=s.region, tariff=TARIFF
                )
            self.tokens.update(add_role_tokens(storage, 0, suffix="-live"))
        finally:
            storage.close()
        http_port = free_port()
        self.url = f"http://127.0.0.1:{http_port}"
        config = {
            "broker": {"host": "127.0.0.1", "port": self.broker_port, "client_id": "agg-live"},
            "database": {"path": str(db)},
            "keys": {"key_file": str(agg_key.path)},
            "http": {"host": "127.0.0.1", "port": http_port},
        }
        return config, keys, agg_key.public_key

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        config, folders, agg_public = await asyncio.to_thread(self._prepare)
        agg_stop = asyncio.Event()
        aggregator = asyncio.create_task(
            run(config_from_dict(config), stop=agg_stop, clock=self.clock), name="aggregator"
        )
        agents: list[Agent] = []
        try:
            port = int(config["http"]["port"])
            await asyncio.to_thread(wait_port, "127.0.0.1", port, 20.0)
            for s in self.specs:
                sim = await start_sim_site(s.spec, self.clock)
                self.sites[s.site] = sim
                devices = {
                    name: {
                        "kind": kind.value,
                        "profile": profile,
                        "host": "127.0.0.1",
                        "port": sim.port,
                        "unit_id": unit,
                        "poll_interval_s": POLL_S,
                        "max_interval_s": HEARTBEAT_S,
                        "timeout_s": 0.5,
                    }
                    for name, (kind, profile, unit) in PROFILES.items()
                }
                cfg = sim.config(
                    folders[s.site],
                    site={"id": s.site, "key_file": "site.key", "aggregator_keys": [agg_public]},
                    broker={"host": "127.0.0.1", "port": self.broker_port},
                    devices=devices,
                )
                agent = Agent(cfg, self.clock)
                await agent.start()
                agents.append(agent)
            self._ready.set()
            await self._stop.wait()
        finally:
            for agent in agents:
                await agent.stop()
            agg_stop.set()
            await aggregator
            for sim in self.sites.values():
                await sim.server.stop()
