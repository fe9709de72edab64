"""A simulator process: many sites, their Modbus servers, faults and a ticker, on one loop.

`SimHost` owns the runtimes (one per site), groups the sites' devices onto TCP servers (one
server per port, one unit id per device), keeps every site's physics moving with a ticker even
when nobody polls it, and applies the faults on the board — including making a device that is
"gone" refuse connections on its own port until it comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocols.clock import Clock
from protocols.profiles import Profile, load_profile
from protocols.types import DeviceKind
from simulators.errors import ControlError
from simulators.modbus.faults import Fault, FaultBoard, FaultKind
from simulators.modbus.server import ServedDevice, SimTcpServer
from simulators.runtime import SiteRuntime
from simulators.spec import SiteSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    """Where a device listens: `port` 0 means a free port picked at start."""

    profile: str | Profile
    port: int = 0
    unit: int = 1
    group: str | None = None  # devices with the same group share a server (port 0 only)


@dataclass
class Endpoint:
    device: ServedDevice
    host: str
    port: int
    unit: int

    def describe(self) -> str:
        return f"{self.host}:{self.port} unit {self.unit}"


class _Group:
    def __init__(self, port: int) -> None:
        self.port = port
        self.units: dict[int, ServedDevice] = {}
        self.server: SimTcpServer | None = None
        self.down = False


class SimHost:
    def __init__(self, clock: Clock, *, host: str = "127.0.0.1", tick_s: float = 0.5) -> None:
        self.clock = clock
        self.host = host
        self.tick_s = tick_s
        self.faults = FaultBoard()
        self.sites: dict[str, SiteRuntime] = {}
        self.devices: dict[str, ServedDevice] = {}
        self._groups: dict[str, _Group] = {}
        self._placement: dict[str, str] = {}  # device name -> group key
        self._ticker: asyncio.Task[None] | None = None
        self._profiles: dict[str, Profile] = {}

    # -- building ------------------------------------------------------------------------------
    def add_site(
        self, spec: SiteSpec, placements: Mapping[DeviceKind, Placement], **runtime: Any
    ) -> SiteRuntime:
        if spec.id in self.sites:
            raise ControlError(f"site {spec.id!r} added twice")
        rt = SiteRuntime(spec, self.clock, **runtime)
        self.sites[spec.id] = rt
        for kind, pl in placements.items():
            profile = pl.profile if isinstance(pl.profile, Profile) else self._profile(pl.profile)
            name = f"{spec.id}/{kind.value}"
            dev = ServedDevice(name, rt, rt.model, kind, profile)
            key = f"port:{pl.port}" if pl.port else f"auto:{pl.group or name}"
            group = self._groups.setdefault(key, _Group(pl.port))
            if pl.unit in group.units:
                other = group.units[pl.unit].name
                raise ControlError(f"{name}: unit {pl.unit} on {key} already used by {other}")
            group.units[pl.unit] = dev
            self.devices[name] = dev
            self._placement[name] = key
        return rt

    def _profile(self, name: str) -> Profile:
        if name not in self._profiles:
            self._profiles[name] = load_profile(name)
        return self._profiles[name]

    # -- running -------------------------------------------------------------------------------
    async def start(self) -> None:
        for group in self._groups.values():
            group.server = SimTcpServer(group.units, self.faults, host=self.host, port=group.port)
            await group.server.start()
            group.port = group.server.port
        self._ticker = asyncio.create_task(self._tick_forever(), name="sim-ticker")

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        for group in self._groups.values():
            if group.server is not None:
                await group.server.stop()
                group.server = None

    async def __aenter__(self) -> SimHost:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _tick_forever(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # keep the simulator alive; the failure is in the log
                log.exception("simulator tick failed")
            await asyncio.sleep(self.tick_s)

    async def tick(self) -> None:
        """Advance every site and apply device disappearances."""
        for rt in self.sites.values():
            rt.sync()
        wall = time.monotonic()
        for group in self._groups.values():
            server = group.server
            if server is None:
                continue
            gone = all(
                (f := self.faults.active(d.name, wall, d.site.now)) is not None
                and f.kind is FaultKind.GONE
                for d in group.units.values()
            )
            if gone and not group.down:
                await server.go_away()
                group.down = True
                log.info("port %s gone", group.port)
            elif not gone and group.down:
                await server.come_back()
                group.down = False
                log.info("port %s back", group.port)

    # -- looking things up ---------------------------------------------------------------------
    def endpoints(self) -> list[Endpoint]:
        out = []
        for group in self._groups.values():
            for unit, dev in sorted(group.units.items()):
                out.append(Endpoint(dev, self.host, group.port, unit))
        return out

    def endpoint(self, ref: str) -> Endpoint:
        name = self.device(ref).name
        return next(e for e in self.endpoints() if e.device.name == name)

    def device(self, ref: str) -> ServedDevice:
        """A device by full name (`site/kind`) or, with one site, by kind alone."""
        if ref in self.devices:
            return self.devices[ref]
        matches = [d for n, d in self.devices.items() if n.split("/", 1)[1] == ref]
        if len(matches) == 1:
            return matches[0]
        known = ", ".join(sorted(self.devices))
        raise ControlError(f"no device {ref!r} (or more than one); known: {known}")

    def site(self, ref: str | None = None) -> SiteRuntime:
        if ref is None and len(self.sites) == 1:
            return next(iter(self.sites.values()))
        if ref is not None and ref in self.sites:
            return self.sites[ref]
        raise ControlError(f"no site {ref!r}; known: {', '.join(sorted(self.sites))}")

    # -- control -------------------------------------------------------------------------------
    def inject(
        self,
        ref: str,
        kind: FaultKind | str,
        *,
        for_s: float,
        latency_ms: float = 500.0,
        code: int = 4,
        probability: float = 1.0,
    ) -> Fault:
        """Give a device a fault for `for_s` wall-clock seconds, starting now."""
        dev = self.device(ref)
        try:
            fk = FaultKind(kind)
        except ValueError:
            raise ControlError(f"unknown fault kind {kind!r}") from None
        now = time.monotonic()
        fault = Fault(
            fk,
            now,
            now + for_s,
            latency_s=latency_ms / 1000.0,
            exception_code=code,
            probability=probability,
        )
        self.faults.add(dev.name, fault)
        log.info("fault on %s for %.0f s: %s", dev.name, for_s, fault.describe())
        if fk in (FaultKind.DISCONNECT, FaultKind.GONE):
            server = self._groups[self._placement[dev.name]].server
            if server is not None and fk is FaultKind.GONE:
                server.drop_connections()
        return fault

    def clear(self, ref: str | None = None) -> None:
        self.faults.clear(None if ref is None else self.device(ref).name)

    def status(self) -> dict[str, Any]:
        wall = time.monotonic()
        sites = {}
        for sid, rt in self.sites.items():
            m = rt.model
            sites[sid] = {
                "t": m.t,
                "mains": m.mains,
                "dark": m.dark,
                "dc_load_w": round(m.dc_load_w, 1),
                "grid_import_w": round(m.grid_import_w, 1),
                "soc": round(m.battery.soc, 2),
                "battery_mode": m.battery.mode.name.lower(),
                "room_c": round(m.aircon.room_c, 2),
                "breakers": [ch.closed for ch in m.breaker.channels],
            }
        return {
            "sites": sites,
            "faults": self.faults.summary(
                wall, max((s.now for s in self.sites.values()), default=0)
            ),
            "endpoints": {e.device.name: e.describe() for e in self.endpoints()},
        }


__all__ = ["Endpoint", "Placement", "SimHost"]
