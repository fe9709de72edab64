"""Scenario files: one site (`kind = "site"`) or a fleet template (`kind = "fleet"`), in TOML.

Validated once with pydantic into frozen objects; any problem is raised as a ScenarioError that
names the file and the key (`sites.toml: site.battery.capacity_ah: Input should be greater than
0`). Times are ISO-8601 strings (naive = UTC) or Unix seconds; events and faults may instead say
`after_h`, hours after the scenario's start. Equipment sections take the fields of
`simulators.spec` (see config/sim-site.toml for a commented example).

In a fleet, an event hits every site unless it names a `region` (a site's region is its
climate's name) and/or a `share` of those sites, drawn from the event's `seed`: a grid fault
takes one region down, not the whole country.
"""

from __future__ import annotations

import random
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from protocols.clock import parse_time
from protocols.types import DeviceKind
from protocols.validation import validation_problems
from simulators.errors import ScenarioError
from simulators.modbus.faults import Clock as FaultClock
from simulators.modbus.faults import Fault, FaultKind
from simulators.physics.traffic import peak_load_w
from simulators.sizing import sized_capacity_ah, strings
from simulators.spec import (
    AirconSpec,
    BatterySpec,
    BreakerSpec,
    Chemistry,
    ClimateSpec,
    EventSpec,
    HeatWaveEvent,
    ModuleFailureEvent,
    OutageEvent,
    RandomOutages,
    RectifierSpec,
    SiteEquipment,
    SiteSpec,
    TrafficProfile,
    TrafficSpec,
)

TARIFFS_DIR = Path(__file__).resolve().parent.parent / "config" / "tariffs"
DEVICE_ORDER = (
    DeviceKind.RECTIFIER,
    DeviceKind.BATTERY,
    DeviceKind.AIRCON,
    DeviceKind.BREAKER,
    DeviceKind.METER,
)
"""Device kinds in unit-id / port order (rectifier first)."""


class _Cfg(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


TimeValue = str | float


class Timed(_Cfg):
    """Something that happens once: at a time (`at`) or `after_h` hours after the start.

    Scenario events and faults take it, and so do the fleet run's injections.
    """

    at: TimeValue | None = None
    after_h: float | None = Field(None, ge=0.0)

    @model_validator(mode="after")
    def _one_time(self) -> Timed:
        if (self.at is None) == (self.after_h is None):
            raise ValueError("give exactly one of 'at' (time) or 'after_h' (hours after start)")
        if isinstance(self.at, str):
            try:
                parse_time(self.at)
            except ValueError as exc:
                raise ValueError(f"at: {exc}") from None
        return self

    def when(self, start: float) -> float:
        if self.at is not None:
            return parse_time(self.at)
        return start + (self.after_h or 0.0) * 3600.0


class Targeted(Timed):
    """Which sites of a fleet an event hits: those of `region` (all if None), then a `share`
    of them drawn from `seed`. A single site is always hit."""

    region: str | None = None
    share: float = Field(1.0, gt=0.0, le=1.0)
    seed: int = 1

    @property
    def targeted(self) -> bool:
        return self.region is not None or self.share < 1.0


def targets(
    sites: Sequence[tuple[str, str]], *, region: str | None, share: float, seed: int
) -> tuple[str, ...]:
    """The sites (id, region) an event hits: those of `region` (all if None), then a
    `share` of them drawn from `seed` (at least one when any qualify), in fleet order."""
    pool = [s for s, r in sites if region is None or r == region]
    if not pool:
        return ()
    n = max(1, round(share * len(pool)))
    chosen = set(random.Random(seed).sample(pool, n))
    return tuple(s for s in pool if s in chosen)


class OutageCfg(Targeted):
    kind: Literal["outage"] = "outage"
    duration_h: float = Field(gt=0.0)


class HeatWaveCfg(Targeted):
    kind: Literal["heat_wave"] = "heat_wave"
    duration_h: float = Field(gt=0.0)
    delta_c: float = Field(8.0, ge=-30.0, le=30.0)


class ModuleFailureCfg(Targeted):
    kind: Literal["module_failure"] = "module_failure"
    module: int = Field(0, ge=0)
    duration_h: float | None = Field(None, gt=0.0)


class RandomOutagesCfg(_Cfg):
    kind: Literal["random_outages"] = "random_outages"
    per_day: float = Field(0.2, ge=0.0, le=24.0)
    mean_duration_h: float = Field(1.0, gt=0.0)


EventCfg = Annotated[
    OutageCfg | HeatWaveCfg | ModuleFailureCfg | RandomOutagesCfg, Field(discriminator="kind")
]


def resolve_event(e: EventCfg, start: float) -> EventSpec:
    """A scenario event as the physics' event at absolute times."""
    if isinstance(e, OutageCfg):
        return OutageEvent(at=e.when(start), duration_s=e.duration_h * 3600.0)
    if isinstance(e, HeatWaveCfg):
        return HeatWaveEvent(at=e.when(start), duration_s=e.duration_h * 3600.0, delta_c=e.delta_c)
    if isinstance(e, ModuleFailureCfg):
        dur = e.duration_h * 3600.0 if e.duration_h is not None else None
        return ModuleFailureEvent(at=e.when(start), module=e.module, duration_s=dur)
    return RandomOutages(per_day=e.per_day, mean_duration_s=e.mean_duration_h * 3600.0)


class FaultCfg(Timed):
    """A Modbus fault on one device, in simulated time."""

    device: str = Field(min_length=1, description="device key (rectifier, battery, …)")
    kind: FaultKind
    duration_s: float = Field(gt=0.0)
    latency_ms: float = Field(500.0, ge=0.0, le=60_000.0)
    code: int = Field(4, ge=1, le=0x0B)
    probability: float = Field(1.0, gt=0.0, le=1.0)

    def fault(self, start: float) -> Fault:
        t = self.when(start)
        return Fault(
            self.kind,
            t,
            t + self.duration_s,
            clock=FaultClock.SIM,
            latency_s=self.latency_ms / 1000.0,
            exception_code=self.code,
            probability=self.probability,
        )


class SimCfg(_Cfg):
    """How to run: clock, where to listen, physics step."""

    start: TimeValue = "now"
    speed: float = Field(1.0, gt=0.0, le=100_000.0)
    host: str = "127.0.0.1"
    port_base: int = Field(15020, ge=0, le=65535, description="0: pick free ports")
    layout: Literal["port-per-device", "shared-port"] = "port-per-device"
    control_port: int | None = Field(15019, ge=0, le=65535)
    step_s: float = Field(10.0, gt=0.0, le=300.0, description="longest physics step")
    tick_s: float = Field(0.5, gt=0.0, le=60.0, description="wall seconds between syncs")

    def start_time(self, now: float) -> float:
        return now if self.start == "now" else parse_time(self.start)

    @model_validator(mode="after")
    def _start_ok(self) -> SimCfg:
        if isinstance(self.start, str) and self.start != "now":
            try:
                parse_time(self.start)
            except ValueError as exc:
                raise ValueError(f"start: {exc}") from None
        return self


class EndpointCfg(_Cfg):
    """One device: its profile, and optionally a fixed port / unit id."""

    profile: str = Field(min_length=1)
    port: int | None = Field(None, ge=1, le=65535)
    unit: int | None = Field(None, ge=1, le=247)


def _default_devices(chem: Chemistry) -> dict[DeviceKind, EndpointCfg]:
    battery = "battery_lianfa_lf48100" if chem is Chemistry.LFP else "battery_strata_bsm4"
    return {
        DeviceKind.RECTIFIER: EndpointCfg(profile="rectifier_ampere_apc4812"),
        DeviceKind.BATTERY: EndpointCfg(profile=battery),
        DeviceKind.AIRCON: EndpointCfg(profile="aircon_coolgate_gw1m"),
        DeviceKind.BREAKER: EndpointCfg(profile="breaker_breakwell_sb8"),
        DeviceKind.METER: EndpointCfg(profile="meter_gridline_gm1"),
    }


class SiteCfg(SiteEquipment):
    """The `[site]` table: identity and equipment (fields of `simulators.spec`), and a tariff."""

    tariff: str | None = None


def _check_tariff(name: str | None) -> None:
    if name is None or not TARIFFS_DIR.is_dir():
        return
    known = sorted(p.stem for p in TARIFFS_DIR.glob("*.toml"))
    if name not in known:
        raise ValueError(f"unknown tariff {name!r}; known: {', '.join(known)}")


class SiteScenario(_Cfg):
    kind: Literal["site"] = "site"
    description: str = ""
    sim: SimCfg = Field(default_factory=SimCfg)
    site: SiteCfg = Field(default_factory=SiteCfg)
    devices: dict[DeviceKind, EndpointCfg] | None = None
    events: tuple[EventCfg, ...] = ()
    faults: tuple[FaultCfg, ...] = ()

    @model_validator(mode="after")
    def _cross(self) -> SiteScenario:
        _check_tariff(self.site.tariff)
        keys = {k.value for k in self.endpoints()}
        for i, e in enumerate(self.events):
            if not isinstance(e, RandomOutagesCfg) and e.targeted:
                raise ValueError(f"events.{i}: region and share apply to fleet scenarios only")
        for f in self.faults:
            if f.device not in keys:
                raise ValueError(f"faults: device {f.device!r} is not one of {sorted(keys)}")
        try:
            self.site_spec(0.0)  # the equipment must fit together
        except ValidationError as exc:
            msgs = "; ".join(
                str(e.get("msg", "")).removeprefix("Value error, ") for e in exc.errors()
            )
            raise ValueError(f"site: {msgs}") from None
        return self

    def endpoints(self) -> dict[DeviceKind, EndpointCfg]:
        return (
            dict(self.devices)
            if self.devices is not None
            else _default_devices(self.site.battery.chemistry)
        )

    def site_spec(self, start: float) -> SiteSpec:
        events = tuple(resolve_event(e, start) for e in self.events)
        return SiteSpec(**self.site.equipment(), events=events)


# -- fleets ------------------------------------------------------------------------------------
class BatteryChoice(_Cfg):
    chemistry: Chemistry
    capacity_ah: tuple[float, ...] = Field(min_length=1)
    weight: float = Field(1.0, gt=0.0)
    soh: tuple[float, float] = (85.0, 100.0)


class ClimateChoice(_Cfg):
    name: str
    mean_c: float
    swing_c: float = 8.0
    weight: float = Field(1.0, gt=0.0)


class TariffChoice(_Cfg):
    name: str
    weight: float = Field(1.0, gt=0.0)


class FleetCfg(_Cfg):
    """How the fleet's sites vary; every choice is drawn from `seed`, site by site."""

    sites: int = Field(20, ge=1, le=100_000)
    id_prefix: str = Field("sim", min_length=1, max_length=32)
    seed: int = 1
    tz: str = "Asia/Shanghai"
    sites_per_port: int = Field(40, ge=1, le=49, description="5 unit ids per site on a port")
    scale: tuple[float, float] = (0.35, 1.1)
    modules: tuple[int, int] = (3, 6)
    eco_share: float = Field(0.5, ge=0.0, le=1.0, description="share of sites with ECO on")
    batteries: tuple[BatteryChoice, ...] = Field(min_length=1)
    climates: tuple[ClimateChoice, ...] = Field(min_length=1)
    tariffs: tuple[TariffChoice, ...] = Field(min_length=1)
    traffic: tuple[TrafficProfile, ...] = tuple(TrafficProfile)
    random_outages_per_day: float = Field(0.0, ge=0.0, le=24.0)
    backup_hours: float = Field(3.0, gt=0.0, le=24.0, description="backup the packs are sized for")
    max_reserve_pct: float = Field(
        70.0, gt=10.0, le=100.0, description="reserve SOC at peak load a pack is sized to"
    )

    @model_validator(mode="after")
    def _ranges(self) -> FleetCfg:
        for name in ("scale", "modules"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: {lo} > {hi}")
        for t in self.tariffs:
            _check_tariff(t.name)
        return self


class FleetSite(_Cfg):
    """One generated site: its spec, tariff and device endpoints."""

    spec: SiteSpec
    tariff: str
    climate: str
    port: int
    units: dict[DeviceKind, int]
    profiles: dict[DeviceKind, str]


class FleetScenario(_Cfg):
    kind: Literal["fleet"] = "fleet"
    description: str = ""
    sim: SimCfg = Field(default_factory=SimCfg)
    fleet: FleetCfg
    events: tuple[EventCfg, ...] = ()
    faults: tuple[FaultCfg, ...] = ()

    @model_validator(mode="after")
    def _regions_known(self) -> FleetScenario:
        known = sorted(c.name for c in self.fleet.climates)
        for i, e in enumerate(self.events):
            if isinstance(e, Targeted) and e.region is not None and e.region not in known:
                raise ValueError(
                    f"events.{i}.region: {e.region!r} is not a climate of the fleet "
                    f"(a site's region is its climate's name): {', '.join(known)}"
                )
        return self

    def build_sites(self, start: float, *, port_base: int | None = None) -> list[FleetSite]:
        """The fleet's sites, deterministically from the fleet seed; each event on the sites
        it targets (its region and share), every site by default."""
        f = self.fleet
        rng = random.Random(f.seed)
        base = self.sim.port_base if port_base is None else port_base
        drafts: list[tuple[dict[str, Any], BatteryChoice, ClimateChoice, TariffChoice]] = []
        for i in range(f.sites):
            bat = rng.choices(f.batteries, weights=[b.weight for b in f.batteries])[0]
            clim = rng.choices(f.climates, weights=[c.weight for c in f.climates])[0]
            tariff = rng.choices(f.tariffs, weights=[t.weight for t in f.tariffs])[0]
            scale = rng.uniform(*f.scale)
            modules = rng.randint(*f.modules)
            # Enough rectifier capacity for the peak load plus recharge, N+1.
            modules = max(modules, int(scale * 5000 / 2675) + 2)
            drawn_ah = rng.choice(bat.capacity_ah)
            lfp = bat.chemistry is Chemistry.LFP
            traffic = TrafficSpec(profile=rng.choice(f.traffic), scale=scale)
            eco = rng.random() < f.eco_share
            soh = round(rng.uniform(*bat.soh), 1)
            cap = sized_capacity_ah(
                drawn_ah,
                chemistry=bat.chemistry,
                soh_pct=soh,
                peak_load_w=peak_load_w(BreakerSpec().channels, scale=scale),
                backup_hours=f.backup_hours,
                max_reserve_pct=f.max_reserve_pct,
            )
            n = strings(cap)
            spec: dict[str, Any] = {
                "id": f"{f.id_prefix}-{i + 1:04d}",
                "tz": f.tz,
                "seed": f.seed * 100_003 + i,
                "traffic": traffic,
                "rectifier": RectifierSpec(modules=modules, eco_enable=eco),
                "battery": BatterySpec(
                    chemistry=bat.chemistry,
                    capacity_ah=cap,
                    soh=soh,
                    charge_limit_a=min(100.0 * n, (0.3 if lfp else 0.1) * cap),
                    discharge_limit_a=min(150.0 * n, (1.0 if lfp else 0.5) * cap),
                ),
                "aircon": AirconSpec(cooling_w=3500 if scale < 0.6 else 5000),
                "climate": ClimateSpec(mean_c=clim.mean_c, swing_c=clim.swing_c),
            }
            drafts.append((spec, bat, clim, tariff))
        events = self._site_events([(d[0]["id"], d[2].name) for d in drafts], start)
        out: list[FleetSite] = []
        for i, (spec, bat, clim, tariff) in enumerate(drafts):
            slot = i % f.sites_per_port
            out.append(
                FleetSite(
                    spec=SiteSpec(**spec, events=events[spec["id"]]),
                    tariff=tariff.name,
                    climate=clim.name,
                    port=base + i // f.sites_per_port if base else 0,
                    units={k: slot * 5 + n + 1 for n, k in enumerate(DEVICE_ORDER)},
                    profiles={k: e.profile for k, e in _default_devices(bat.chemistry).items()},
                )
            )
        return out

    def _site_events(
        self, sites: Sequence[tuple[str, str]], start: float
    ) -> dict[str, tuple[EventSpec, ...]]:
        """Each site's events: those that target it, then the fleet's random outages."""
        out: dict[str, list[EventSpec]] = {s: [] for s, _ in sites}
        for e in self.events:
            hit = (
                targets(sites, region=e.region, share=e.share, seed=e.seed)
                if isinstance(e, Targeted)
                else tuple(out)
            )
            for s in hit:
                out[s].append(resolve_event(e, start))
        if self.fleet.random_outages_per_day > 0:
            rnd = RandomOutages(per_day=self.fleet.random_outages_per_day, mean_duration_s=3600.0)
            for evs in out.values():
                evs.append(rnd)
        return {s: tuple(evs) for s, evs in out.items()}


Scenario = SiteScenario | FleetScenario


def _format(source: str, exc: ValidationError) -> str:
    problems = validation_problems(exc, root="(top)", drop_suffix="Cfg")
    return "\n".join(f"{source}: {p}" for p in problems)


def parse_scenario(data: Mapping[str, Any], *, source: str = "<memory>") -> Scenario:
    """Validate a parsed TOML mapping; ScenarioError names the file and key."""
    kind = data.get("kind", "site")
    model: type[SiteScenario] | type[FleetScenario]
    if kind == "site":
        model = SiteScenario
    elif kind == "fleet":
        model = FleetScenario
    else:
        raise ScenarioError(f"{source}: kind: must be 'site' or 'fleet', not {kind!r}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(_format(source, exc)) from None


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read ({exc.strerror})") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{p}: not valid TOML: {exc}") from exc
    return parse_scenario(data, source=str(p))


def load_site_scenario(path: str | Path) -> SiteScenario:
    sc = load_scenario(path)
    if not isinstance(sc, SiteScenario):
        raise ScenarioError(f"{path}: kind: a site scenario is needed here, this is a fleet")
    return sc


__all__ = [
    "DEVICE_ORDER",
    "EndpointCfg",
    "FaultCfg",
    "FleetCfg",
    "FleetScenario",
    "FleetSite",
    "Scenario",
    "SimCfg",
    "SiteCfg",
    "SiteScenario",
    "Targeted",
    "Timed",
    "load_scenario",
    "load_site_scenario",
    "parse_scenario",
    "resolve_event",
    "targets",
]
