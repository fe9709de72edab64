"""Turning a scenario into a running `SimHost`: ports, unit ids, scheduled faults."""

from __future__ import annotations

import time

from protocols.clock import SimClock
from protocols.types import DeviceKind
from simulators.host import Placement, SimHost
from simulators.scenario import DEVICE_ORDER, SiteScenario


def site_placements(
    scenario: SiteScenario, *, port_base: int | None = None
) -> dict[DeviceKind, Placement]:
    """Where each device of a site scenario listens.

    port-per-device: the rectifier on port_base, then battery, aircon, breaker, meter on the next
    ports, unit id 1 each. shared-port: all on port_base, unit ids 1–5 in that order. An
    endpoint's own `port` / `unit` wins. port_base 0 picks free ports.
    """
    base = scenario.sim.port_base if port_base is None else port_base
    shared = scenario.sim.layout == "shared-port"
    endpoints = scenario.endpoints()
    out: dict[DeviceKind, Placement] = {}
    for i, kind in enumerate(k for k in DEVICE_ORDER if k in endpoints):
        ep = endpoints[kind]
        default_port = (base if shared else base + i) if base else 0
        out[kind] = Placement(
            profile=ep.profile,
            port=ep.port or default_port,
            unit=ep.unit or (i + 1 if shared else 1),
            group=scenario.site.id if shared else None,
        )
    return out


def build_site_host(
    scenario: SiteScenario,
    *,
    start: float | None = None,
    speed: float | None = None,
    host: str | None = None,
    port_base: int | None = None,
    wall_now: float | None = None,
) -> SimHost:
    """A host running the scenario's one site on a SimClock (not started yet)."""
    sim = scenario.sim
    now = time.time() if wall_now is None else wall_now
    t0 = start if start is not None else sim.start_time(now)
    clock = SimClock(start=t0, speed=speed or sim.speed, anchor=now)
    h = SimHost(clock, host=host or sim.host, tick_s=sim.tick_s)
    rt = h.add_site(
        scenario.site_spec(t0),
        site_placements(scenario, port_base=port_base),
        max_step_s=sim.step_s,
    )
    for f in scenario.faults:
        h.faults.add(f"{rt.id}/{f.device}", f.fault(t0))
    return h


__all__ = ["build_site_host", "site_placements"]
