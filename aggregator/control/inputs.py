"""From a site's latest readings to what the planners need. Pure: readings in, values out.

Devices are found by the canonical points they carry (`protocols.points`), as the alarm rules
do: the battery is the device with `soc`, the meter the one with `mains_present`, the rectifier
the one with `load_current`, the air-conditioner the one with `room_temp`, the breaker the one
with `ch1_closed`. Only good-quality values count; a missing value is None, never a guess,
except where the policy supplies a fact the site does not report (pack capacity, SOH).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from aggregator.control.policies import SitePolicy
from aggregator.storage.types import SeriesKey
from protocols.control.dormant import ChannelRole, Window
from protocols.control.peak import BatteryMode, SiteState
from protocols.control.tariff import Tariff
from protocols.types import Quality, Reading

Latest = Mapping[SeriesKey, Reading]


@dataclass(frozen=True, slots=True)
class Measured:
    """The values the loop reads from one site's latest readings (W, %, °C; None: unknown)."""

    newest_ms: int | None = None
    soc_pct: float | None = None
    soh_pct: float | None = None
    capacity_wh: float | None = None
    battery_v: float | None = None
    battery_w: float | None = None  # + charge, − discharge
    battery_temp_c: float | None = None
    max_charge_w: float | None = None
    max_discharge_w: float | None = None
    dc_load_w: float | None = None
    import_w: float | None = None
    mains_present: bool | None = None
    room_temp_c: float | None = None
    channel_w: Mapping[int, float] | None = None


def _device_with(latest: Latest, point: str) -> str | None:
    devices = sorted(d for d, p in latest if p == point)
    return devices[0] if devices else None


def _value(latest: Latest, device: str | None, point: str) -> float | None:
    if device is None:
        return None
    r = latest.get((device, point))
    if r is None or r.quality is not Quality.GOOD or r.value is None:
        return None
    v = float(r.value)
    return v if math.isfinite(v) else None


def measure(latest: Latest, *, nominal_v: float = 51.2) -> Measured:
    """Read the planner's inputs out of a site's latest readings."""
    bat = _device_with(latest, "soc")
    meter = _device_with(latest, "mains_present") or _device_with(latest, "import_power")
    rect = _device_with(latest, "load_current")
    ac = _device_with(latest, "room_temp")
    brk = _device_with(latest, "ch1_closed") or _device_with(latest, "ch1_current")

    bat_v = _value(latest, bat, "voltage")
    volts = bat_v if bat_v is not None and bat_v > 0 else nominal_v
    current = _value(latest, bat, "current")
    cap_ah = _value(latest, bat, "capacity_ah")
    chg_a = _value(latest, bat, "charge_current_limit")
    dis_a = _value(latest, bat, "discharge_current_limit")
    dc_v = _value(latest, rect, "dc_voltage")
    load_a = _value(latest, rect, "load_current")
    bus_v = abs(dc_v) if dc_v else volts
    mains = _value(latest, meter, "mains_present")

    channels: dict[int, float] = {}
    if brk is not None:
        brk_v = _value(latest, brk, "voltage") or bus_v
        for dev, point in latest:
            if dev != brk or not point.startswith("ch"):
                continue
            num, _, name = point[2:].partition("_")
            if not num.isdigit():
                continue
            n = int(num)
            if name == "power":
                p = _value(latest, brk, point)
                if p is not None:
                    channels[n] = abs(p)
            elif name == "current" and n not in channels:
                a = _value(latest, brk, point)
                if a is not None and _value(latest, brk, f"ch{n}_power") is None:
                    channels[n] = abs(a) * brk_v

    times = [r.t for r in latest.values() if r.quality is Quality.GOOD]
    return Measured(
        newest_ms=max(times) if times else None,
        soc_pct=_value(latest, bat, "soc"),
        soh_pct=_value(latest, bat, "soh"),
        capacity_wh=cap_ah * nominal_v if cap_ah is not None and cap_ah > 0 else None,
        battery_v=bat_v,
        battery_w=current * volts if current is not None else None,
        battery_temp_c=_value(latest, bat, "temperature"),
        max_charge_w=chg_a * volts if chg_a is not None else None,
        max_discharge_w=dis_a * volts if dis_a is not None else None,
        dc_load_w=abs(load_a) * bus_v if load_a is not None else None,
        import_w=_value(latest, meter, "import_power"),
        mains_present=None if mains is None else bool(mains),
        room_temp_c=_value(latest, ac, "room_temp"),
        channel_w=channels or None,
    )


@dataclass(frozen=True, slots=True)
class SiteInputs:
    """Everything the pure core needs about one site this round."""

    site: str
    policy: SitePolicy
    tariff: Tariff | None
    measured: Measured
    window: Window
    region: str = ""
    tz: str = "Asia/Shanghai"
    online: bool = True

    def peak_state(self, mode: BatteryMode, outages_recent: int) -> SiteState | None:
        """The peak planner's state, or None when SOC, capacity or load is unknown."""
        m, facts = self.measured, self.policy.battery
        capacity = m.capacity_wh or facts.capacity_wh
        if m.soc_pct is None or capacity is None or m.dc_load_w is None:
            return None
        soh = m.soh_pct if m.soh_pct is not None and 0 < m.soh_pct <= 100 else facts.soh_pct
        soh = soh if soh is not None else 100.0
        temp = m.battery_temp_c if m.battery_temp_c is not None else 25.0
        max_dis = m.max_discharge_w if m.max_discharge_w is not None else math.inf
        if facts.max_discharge_w is not None:
            max_dis = min(max_dis, facts.max_discharge_w)
        max_chg = m.max_charge_w if m.max_charge_w is not None else math.inf
        if facts.max_charge_w is not None:
            max_chg = min(max_chg, facts.max_charge_w)
        return SiteState(
            soc_pct=m.soc_pct,
            capacity_wh=capacity,
            load_w=m.dc_load_w,
            battery=facts.economics(soh_pct=soh, temperature_c=temp),
            mains_present=m.mains_present is not False,
            outages_recent=outages_recent,
            max_discharge_w=max_dis,
            max_charge_w=max_chg,
            mode=mode,
        )

    def channel_load_w(self, *roles: ChannelRole) -> float:
        powers = self.measured.channel_w or {}
        return sum(powers.get(n, 0.0) for n in self.policy.channel_numbers(*roles))


__all__ = ["Latest", "Measured", "SiteInputs", "measure"]
