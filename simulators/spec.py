"""What a simulated site is made of: frozen, validated equipment specs.

These are the physics' inputs. Scenario files (see `scenario.py`) build them; tests build them
directly. Every figure has a default taken from DOMAIN.md so that `SiteSpec()` is a plausible
5G site: 3.3–4.9 kW of telecom load, 4 × 50 A rectifier modules, a 200 Ah LFP pack, a 5 kW AC.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Chemistry(StrEnum):
    LFP = "lfp"
    LEAD_ACID = "lead_acid"


class LoadKind(StrEnum):
    """What a breaker channel feeds; decides how its draw follows traffic."""

    TRANSMISSION = "transmission"
    BBU = "bbu"
    AAU_ANCHOR = "aau_anchor"  # coverage layer: carries traffic the capacity layer sheds
    AAU_CAPACITY = "aau_capacity"  # capacity layer: the one dormancy switches off
    RRU = "rru"
    AIRCON = "aircon"  # a DC air-conditioner fed through this channel
    GATEWAY = "gateway"  # the gateway and monitoring
    OTHER = "other"
    SPARE = "spare"  # nothing connected


class TrafficProfile(StrEnum):
    URBAN = "urban"
    RESIDENTIAL = "residential"
    BUSINESS = "business"
    RURAL = "rural"


class SavingLevel(StrEnum):
    """RAN software energy saving on a channel (DOMAIN.md: symbol > 20 %, deep sleep > 60 %)."""

    NONE = "none"
    SYMBOL = "symbol"
    CHANNEL = "channel"
    DEEP_SLEEP = "deep_sleep"


class TrafficSpec(_Spec):
    profile: TrafficProfile = TrafficProfile.URBAN
    night_fraction: float = Field(0.3, ge=0.05, le=0.9, description="night minimum / peak")
    noise: float = Field(0.04, ge=0.0, le=0.3, description="amplitude of smooth random variation")
    scale: float = Field(1.0, gt=0.0, le=3.0, description="multiplies every channel's power")
    saving_window_h: tuple[float, float] | None = Field(
        None, description="local hours [start, end) of scheduled RAN energy saving"
    )
    saving_level: SavingLevel = SavingLevel.SYMBOL


class ChannelSpec(_Spec):
    name: str = Field(min_length=1, max_length=32)
    kind: LoadKind = LoadKind.OTHER
    idle_w: float = Field(0.0, ge=0.0, le=10_000.0)
    peak_w: float = Field(0.0, ge=0.0, le=10_000.0)
    critical: bool = False
    rating_a: float = Field(63.0, gt=0.0, description="trips above this current")
    closed: bool = True

    @model_validator(mode="after")
    def _peak_not_below_idle(self) -> ChannelSpec:
        if self.peak_w < self.idle_w:
            raise ValueError(f"peak_w ({self.peak_w}) is below idle_w ({self.idle_w})")
        return self


def default_channels() -> tuple[ChannelSpec, ...]:
    """A 5G + 4G site: ≈ 2.9 kW at night, ≈ 4.1 kW at the evening peak (DOMAIN.md: main
    equipment 2.2–2.3 kW idle, 3.7–3.9 kW full; capacity AAUs idle at 350 W, in 300–400 W)."""
    c = ChannelSpec
    return (
        c(name="transmission", kind=LoadKind.TRANSMISSION, idle_w=110, peak_w=130, critical=True),
        c(name="bbu", kind=LoadKind.BBU, idle_w=380, peak_w=480, critical=True),
        c(name="aau_anchor", kind=LoadKind.AAU_ANCHOR, idle_w=900, peak_w=1500, critical=True),
        c(name="aau_capacity_1", kind=LoadKind.AAU_CAPACITY, idle_w=350, peak_w=750),
        c(name="aau_capacity_2", kind=LoadKind.AAU_CAPACITY, idle_w=350, peak_w=750),
        c(name="rru_4g", kind=LoadKind.RRU, idle_w=260, peak_w=480),
        c(name="gateway", kind=LoadKind.GATEWAY, idle_w=25, peak_w=30, critical=True),
        c(name="spare", kind=LoadKind.SPARE),
    )


class BreakerSpec(_Spec):
    channels: tuple[ChannelSpec, ...] = Field(default_factory=default_channels)
    close_delay_s: float = Field(2.0, ge=0.0, le=60.0)
    open_delay_s: float = Field(1.0, ge=0.0, le=60.0)

    @model_validator(mode="after")
    def _shape(self) -> BreakerSpec:
        if not 1 <= len(self.channels) <= 8:
            raise ValueError(f"a breaker has 1 to 8 channels, got {len(self.channels)}")
        names = [ch.name for ch in self.channels]
        if len(set(names)) != len(names):
            raise ValueError(f"channel names must be unique, got {names}")
        return self


class RectifierSpec(_Spec):
    modules: int = Field(4, ge=1, le=32)
    module_rating_a: float = Field(50.0, gt=0.0, le=200.0)
    float_voltage: float = Field(53.5, ge=42.0, le=58.0)
    current_limit_a: float = Field(50.0, gt=0.0, le=1000.0, description="battery charge limit")
    eco_enable: bool = False
    eco_save_point: float = Field(0.45, gt=0.0, le=1.0, description="fraction of capacity")
    controller_w: float = Field(12.0, ge=0.0, description="monitoring unit draw")
    standby_w: float = Field(3.0, ge=0.0, description="a hibernating module's draw")


class BatterySpec(_Spec):
    chemistry: Chemistry = Chemistry.LFP
    capacity_ah: float = Field(200.0, gt=0.0, le=5000.0)
    initial_soc: float = Field(100.0, ge=0.0, le=100.0)
    soh: float = Field(100.0, gt=0.0, le=100.0)
    charge_limit_a: float | None = Field(None, gt=0.0, description="default 0.3 C LFP, 0.1 C PbA")
    discharge_limit_a: float | None = Field(None, gt=0.0, description="default 1 C LFP, 0.5 C")
    internal_resistance_ohm: float | None = Field(None, gt=0.0)
    min_soc: float = Field(5.0, ge=0.0, le=100.0, description="BMS floor for commanded discharge")
    initial_temp_c: float = 25.0


class AirconSpec(_Spec):
    supply: Literal["ac", "dc"] = "ac"
    cooling_w: float = Field(5000.0, gt=0.0, le=50_000.0, description="rated cooling capacity")
    cop_at_25c: float = Field(3.6, gt=1.0, le=8.0)
    cop_slope: float = Field(0.07, ge=0.0, le=0.5, description="COP lost per °C outdoors")
    fan_w: float = Field(60.0, ge=0.0)
    setpoint_c: float = Field(27.0, ge=16.0, le=35.0)
    hysteresis_c: float = Field(2.0, gt=0.0, le=10.0)
    on: bool = True
    alarm_temp_c: float = Field(35.0, ge=20.0, le=60.0)
    insulation_w_per_k: float = Field(40.0, gt=0.0, le=1000.0, description="room UA")
    thermal_mass_kj_per_k: float = Field(300.0, gt=0.0, le=100_000.0)
    initial_room_c: float | None = None


class ClimateSpec(_Spec):
    mean_c: float = Field(24.0, ge=-40.0, le=50.0)
    swing_c: float = Field(8.0, ge=0.0, le=30.0, description="peak-to-trough daily swing")
    day_jitter_c: float = Field(1.5, ge=0.0, le=10.0, description="day-to-day random offset")
    solar_w: float = Field(300.0, ge=0.0, le=5000.0, description="sun on the shelter at noon")


class MeterSpec(_Spec):
    other_ac_w: float = Field(40.0, ge=0.0, description="lighting and sockets on the AC side")
    voltage_v: float = Field(230.0, gt=0.0)


class OutageEvent(_Spec):
    kind: Literal["outage"] = "outage"
    at: float
    duration_s: float = Field(gt=0.0)


class HeatWaveEvent(_Spec):
    kind: Literal["heat_wave"] = "heat_wave"
    at: float
    duration_s: float = Field(gt=0.0)
    delta_c: float = Field(8.0, ge=-30.0, le=30.0)


class ModuleFailureEvent(_Spec):
    kind: Literal["module_failure"] = "module_failure"
    at: float
    module: int = Field(0, ge=0)
    duration_s: float | None = Field(None, gt=0.0, description="None: until repaired by hand")


class RandomOutages(_Spec):
    kind: Literal["random_outages"] = "random_outages"
    per_day: float = Field(0.2, ge=0.0, le=24.0)
    mean_duration_s: float = Field(3600.0, gt=0.0)


EventSpec = Annotated[
    OutageEvent | HeatWaveEvent | ModuleFailureEvent | RandomOutages, Field(discriminator="kind")
]


class SiteEquipment(_Spec):
    """A site's identity, equipment, climate and traffic: what a scenario's `[site]` table
    holds (`scenario.SiteCfg` adds its tariff) and what `SiteSpec` adds the events to."""

    id: str = Field("site-1", min_length=1, max_length=64)
    tz: str = "Asia/Shanghai"
    seed: int = 1
    traffic: TrafficSpec = Field(default_factory=TrafficSpec)
    breaker: BreakerSpec = Field(default_factory=BreakerSpec)
    rectifier: RectifierSpec = Field(default_factory=RectifierSpec)
    battery: BatterySpec = Field(default_factory=BatterySpec)
    aircon: AirconSpec = Field(default_factory=AirconSpec)
    climate: ClimateSpec = Field(default_factory=ClimateSpec)
    meter: MeterSpec = Field(default_factory=MeterSpec)

    def equipment(self) -> dict[str, Any]:
        """Just these fields (not a subclass's own), as keyword arguments."""
        return {name: getattr(self, name) for name in SiteEquipment.model_fields}


class SiteSpec(SiteEquipment):
    """One site: its equipment, climate, traffic and the events that will happen to it."""

    events: tuple[EventSpec, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> SiteSpec:
        dc_ac = [c for c in self.breaker.channels if c.kind is LoadKind.AIRCON]
        if self.aircon.supply == "dc" and len(dc_ac) != 1:
            raise ValueError(
                "aircon.supply = 'dc' needs exactly one breaker channel of kind aircon"
            )
        if self.aircon.supply == "ac" and dc_ac:
            raise ValueError("a breaker channel of kind aircon needs aircon.supply = 'dc'")
        for ev in self.events:
            if isinstance(ev, ModuleFailureEvent) and ev.module >= self.rectifier.modules:
                raise ValueError(
                    f"module_failure.module {ev.module} >= rectifier.modules "
                    f"({self.rectifier.modules})"
                )
        return self


__all__ = [
    "AirconSpec",
    "BatterySpec",
    "BreakerSpec",
    "ChannelSpec",
    "Chemistry",
    "ClimateSpec",
    "EventSpec",
    "HeatWaveEvent",
    "LoadKind",
    "MeterSpec",
    "ModuleFailureEvent",
    "OutageEvent",
    "RandomOutages",
    "RectifierSpec",
    "SavingLevel",
    "SiteEquipment",
    "SiteSpec",
    "TrafficProfile",
    "TrafficSpec",
    "default_channels",
]
