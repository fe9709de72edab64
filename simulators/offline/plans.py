"""The scenario's sites as the offline runner needs them, and the history a dormant window is
picked from."""

from __future__ import annotations

from dataclasses import dataclass

from protocols.clock import local_time
from protocols.control.dormant import Channel, ChannelRole
from simulators.physics.localtime import LocalHour
from simulators.physics.traffic import TrafficCurve, channel_powers, saving_at
from simulators.scenario import FleetScenario, Scenario
from simulators.spec import LoadKind, SiteSpec

_ROLE_OF_KIND: dict[LoadKind, ChannelRole] = {
    LoadKind.TRANSMISSION: ChannelRole.TRANSMISSION,
    LoadKind.BBU: ChannelRole.BBU,
    LoadKind.AAU_ANCHOR: ChannelRole.ANCHOR,
    LoadKind.AAU_CAPACITY: ChannelRole.CAPACITY,
    LoadKind.GATEWAY: ChannelRole.GATEWAY,
}


@dataclass(frozen=True, slots=True)
class SitePlan:
    """A scenario site as the offline runner needs it."""

    spec: SiteSpec
    tariff: str | None
    climate: str = ""


def scenario_sites(scenario: Scenario, start: float) -> list[SitePlan]:
    """The scenario's sites with their tariffs (a fleet from its seed, or the one site)."""
    if isinstance(scenario, FleetScenario):
        return [
            SitePlan(s.spec, s.tariff, s.climate) for s in scenario.build_sites(start, port_base=0)
        ]
    return [SitePlan(scenario.site_spec(start), scenario.site.tariff)]


def default_start(scenario: Scenario, now: float) -> float:
    """The scenario's `[sim] start`; for "now", the last local midnight before `now` (a run
    then repeats only within the day: give a fixed start for figures that never change)."""
    if scenario.sim.start != "now":
        return scenario.sim.start_time(now)
    tz = scenario.fleet.tz if isinstance(scenario, FleetScenario) else scenario.site.tz
    d = local_time(now, tz)
    return d.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def spec_channels(spec: SiteSpec) -> tuple[Channel, ...]:
    """The breaker's channels as the planners see them, from the site's channel kinds."""
    return tuple(
        Channel(i + 1, _ROLE_OF_KIND.get(c.kind, ChannelRole.AUX), c.critical, c.name)
        for i, c in enumerate(spec.breaker.channels)
    )


def hourly_capacity_load(spec: SiteSpec, before: float) -> list[float]:
    """Mean capacity-layer draw per local hour over the day before `before`: the "site history"
    a dormant window is picked from (what the aggregator reads from last week's rollups)."""
    local = LocalHour(spec.tz)
    curve = TrafficCurve(spec.traffic, seed=spec.seed, local=local)
    chans = spec.breaker.channels
    closed = [True] * len(chans)
    sums, counts = [0.0] * 24, [0] * 24
    t = before - 86400.0
    while t < before:
        hour = local.hour(t)
        saving = [saving_at(spec.traffic, hour)] * len(chans)
        powers = channel_powers(chans, closed, curve.at(t), scale=spec.traffic.scale, saving=saving)
        h = int(hour) % 24
        sums[h] += sum(p for p, c in zip(powers, chans, strict=True)
                       if c.kind is LoadKind.AAU_CAPACITY)  # fmt: skip
        counts[h] += 1
        t += 600.0
    return [s / n if n else 0.0 for s, n in zip(sums, counts, strict=True)]


__all__ = [
    "SitePlan",
    "default_start",
    "hourly_capacity_load",
    "scenario_sites",
    "spec_channels",
]
