"""Reports from storage: the 15-minute rollups of each site → intervals → the pure arithmetic of
`protocols.control.report` (energy by tariff period, cost, the no-action baseline, savings in
money, kWh and kgCO2, energy moved from peak to valley, dormant hours, site energy ratio,
reserve violations), per site, then summed for a group or the fleet.

Each 15-minute bucket becomes one interval of mean powers: grid import from the meter
(`import_power`), telecom DC load from the rectifier (`load_current` × `dc_voltage`), battery
power (`current` × `voltage`, + charge). Mains counts as present only if it never dropped in the
bucket (its minimum), so a discharge during an outage is never a reserve violation. A bucket is
dormant when a capacity-layer channel (per the site's policy) was open most of it; the power
dormancy removed is estimated as the capacity channels' draw just before the episode less their
draw now, through the rectifier (ECO and AC-offset gains are not counted: the estimate errs low).
A bucket without a meter reading is left out, never guessed.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from aggregator.control.context import ControlContext
from aggregator.control.policies import SitePolicy
from aggregator.errors import ConfigError
from aggregator.storage.base import Storage
from aggregator.storage.rollup import BUCKET_MS
from aggregator.storage.types import RollupRow, SiteInfo
from protocols.control.dormant import ChannelRole
from protocols.control.emissions import EmissionFactor
from protocols.control.report import Interval, Report, combine, site_report
from protocols.control.reserve import reserve_soc
from protocols.control.tariff import PERIODS

MAX_BUCKETS = 200_000
BUCKET_S = BUCKET_MS / 1000.0


@dataclass(frozen=True, slots=True)
class SiteSeries:
    """One site's 15-minute intervals (also what the charts draw)."""

    site: str
    intervals: tuple[Interval, ...]


def _device_with(series: Sequence[tuple[str, str]], point: str) -> str | None:
    devices = sorted(d for d, p in series if p == point)
    return devices[0] if devices else None


def _rows(
    storage: Storage, site: str, device: str | None, point: str, t0: int, t1: int
) -> dict[int, RollupRow]:
    if device is None:
        return {}
    rows = storage.rollups(site, device, point, t0, t1, 900, limit=MAX_BUCKETS)
    return {r.bucket_ms: r for r in rows}


def _mean(rows: Mapping[int, RollupRow], bucket: int) -> float | None:
    r = rows.get(bucket)
    return None if r is None or r.n == 0 else r.mean


def site_series(
    storage: Storage,
    info: SiteInfo,
    policy: SitePolicy,
    t0_ms: int,
    t1_ms: int,
    *,
    rectifier_efficiency: float = 0.95,
) -> SiteSeries:
    """The site's intervals over [t0, t1) (ms) from its rollups."""
    series = storage.series(info.site)
    bat = _device_with(series, "soc")
    meter = _device_with(series, "import_power")
    rect = _device_with(series, "load_current")
    brk = _device_with(series, "ch1_closed")
    s = info.site
    grid = _rows(storage, s, meter, "import_power", t0_ms, t1_ms)
    mains = _rows(storage, s, _device_with(series, "mains_present"), "mains_present", t0_ms, t1_ms)
    load_a = _rows(storage, s, rect, "load_current", t0_ms, t1_ms)
    dc_v = _rows(storage, s, rect, "dc_voltage", t0_ms, t1_ms)
    cur = _rows(storage, s, bat, "current", t0_ms, t1_ms)
    volt = _rows(storage, s, bat, "voltage", t0_ms, t1_ms)
    soc = _rows(storage, s, bat, "soc", t0_ms, t1_ms)
    soh = _rows(storage, s, bat, "soh", t0_ms, t1_ms)
    cap_ah = _rows(storage, s, bat, "capacity_ah", t0_ms, t1_ms)
    cap_numbers = policy.channel_numbers(ChannelRole.CAPACITY)
    closed = {n: _rows(storage, s, brk, f"ch{n}_closed", t0_ms, t1_ms) for n in cap_numbers}
    power = {n: _rows(storage, s, brk, f"ch{n}_power", t0_ms, t1_ms) for n in cap_numbers}
    p = policy.peak_shaving
    nominal = policy.battery.nominal_v

    out: list[Interval] = []
    before_entry_w: float | None = None  # capacity draw in the last awake bucket
    for bucket in sorted(grid):
        if bucket < t0_ms - BUCKET_MS or bucket >= t1_ms:
            continue
        grid_w = _mean(grid, bucket)
        if grid_w is None:
            continue
        la, dv = _mean(load_a, bucket), _mean(dc_v, bucket)
        dc_w = abs(la) * abs(dv) if la is not None and dv is not None else 0.0
        ca, va = _mean(cur, bucket), _mean(volt, bucket)
        battery_w = ca * (va if va is not None else nominal) if ca is not None else 0.0
        mrow = mains.get(bucket)
        mains_ok = mrow is None or mrow.min >= 0.5
        cap_w = sum(v for n in cap_numbers if (v := _mean(power[n], bucket)) is not None)
        dormant = any((c := _mean(closed[n], bucket)) is not None and c < 0.5 for n in cap_numbers)
        saved = 0.0
        if dormant:
            if before_entry_w is not None:
                saved = max(0.0, before_entry_w - cap_w) / rectifier_efficiency
        else:
            before_entry_w = cap_w
        soc_v = _mean(soc, bucket)
        ah = _mean(cap_ah, bucket)
        capacity = ah * nominal if ah is not None and ah > 0 else policy.battery.capacity_wh
        soh_v = _mean(soh, bucket) or policy.battery.soh_pct or 100.0
        reserve = None
        if capacity:
            reserve = reserve_soc(
                dc_w,
                capacity,
                backup_hours=p.backup_hours,
                floor_pct=p.floor_pct,
                efficiency=p.efficiency,
                soh_pct=soh_v,
            )
        out.append(
            Interval(
                start=bucket / 1000.0,
                end=bucket / 1000.0 + BUCKET_S,
                grid_w=grid_w,
                dc_load_w=dc_w,
                battery_w=battery_w,
                dormant=dormant,
                dormancy_saved_w=saved,
                mains_present=mains_ok,
                soc_pct=soc_v,
                reserve_soc_pct=reserve,
            )
        )
    return SiteSeries(info.site, tuple(out))


@dataclass
class ReportSet:
    """Per-site reports over one range, with their total for the group or the fleet."""

    start: float
    end: float
    sites: dict[str, Report] = field(default_factory=dict)
    series: dict[str, SiteSeries] = field(default_factory=dict)
    group: str | None = None
    site: str | None = None
    problems: dict[str, str] = field(default_factory=dict)
    tariffs: dict[str, str] = field(default_factory=dict)  # site -> tariff name
    zones: dict[str, str] = field(default_factory=dict)  # site -> time zone

    @property
    def scope(self) -> str:
        if self.site is not None:
            return "site"
        return "group" if self.group is not None else "fleet"

    def total(self) -> dict[str, Any] | None:
        """The summed figures; kgCO2 are summed site by site, so sites on different grid
        factors add up correctly (the label then lists the factors)."""
        reports = list(self.sites.values())
        if not reports:
            return None
        currencies = {r.currency for r in reports}
        if len(currencies) > 1:
            raise ConfigError(f"sites report in several currencies: {sorted(currencies)}")
        factors = {r.emission_factor for r in reports}
        first = reports[0].emission_factor
        total = combine([replace(r, emission_factor=first) for r in reports]).as_dict()
        grid_kgco2 = sum(r.grid_kgco2 for r in reports)
        grid_kwh = sum(r.grid_kwh for r in reports)
        total["grid_kgco2"] = grid_kgco2
        total["savings_kgco2"] = sum(r.savings_kgco2 for r in reports)
        if len(factors) > 1:
            total["emission_factor"] = "; ".join(sorted(f.label for f in factors))
            total["emission_factor_kg_per_kwh"] = grid_kgco2 / grid_kwh if grid_kwh else None
        return total

    def rows(self) -> list[dict[str, Any]]:
        out = [{"scope": "site", "name": s, **r.as_dict()} for s, r in sorted(self.sites.items())]
        total = self.total()
        if total is not None and self.site is None:
            out.append({"scope": self.scope, "name": self.group or "fleet", **total})
        return out

    def to_json(self) -> dict[str, Any]:
        total = self.total()
        return {
            "from": int(self.start * 1000),
            "to": int(self.end * 1000),
            "scope": self.scope,
            "name": self.site or self.group or "fleet",
            "sites": [{"site": s, **r.as_dict()} for s, r in sorted(self.sites.items())],
            "total": total,
            "problems": self.problems,
        }

    def to_csv(self) -> str:
        rows = self.rows()
        buf = io.StringIO()
        columns = CSV_COLUMNS
        w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for row in rows:
            w.writerow({k: _cell(row.get(k)) for k in columns})
        return buf.getvalue()


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return "" if not math.isfinite(v) else round(v, 6)
    return "" if v is None else v


CSV_COLUMNS = [
    "scope",
    "name",
    "start",
    "end",
    "sites",
    "currency",
    "grid_kwh",
    *(f"grid_kwh_{p.value}" for p in PERIODS),
    "cost",
    "baseline_kwh",
    "baseline_cost",
    "savings_cost",
    "savings_kwh",
    "savings_kgco2",
    "grid_kgco2",
    "emission_factor",
    "emission_factor_kg_per_kwh",
    "moved_kwh",
    "valley_charge_kwh",
    "battery_charge_kwh",
    "battery_discharge_kwh",
    "dormant_hours",
    "dormancy_saved_kwh",
    "dc_kwh",
    "site_energy_ratio",
    "reserve_violations",
]


def build_report(
    storage: Storage,
    ctx: ControlContext,
    start: float,
    end: float,
    *,
    site: str | None = None,
    group: str | None = None,
    keep_series: bool = False,
) -> ReportSet:
    """Reports for one site, a group (region or named group) or the whole fleet over
    [start, end) (Unix seconds). A site without a usable policy or tariff is listed in
    `problems` rather than failing the whole report."""
    if end <= start:
        raise ConfigError(f"report range ends ({end}) before it starts ({start})")
    infos = storage.list_sites()
    if site is not None:
        infos = [storage.get_site(site)]
    elif group is not None:
        members = set(ctx.members(group, infos))
        infos = [i for i in infos if i.site in members]
    rs = ReportSet(start, end, group=group, site=site)
    t0, t1 = int(start * 1000), int(end * 1000)
    for info in infos:
        try:
            policy = ctx.book.resolve(info)
        except ConfigError as exc:
            rs.problems[info.site] = str(exc)
            continue
        tariff = ctx.tariffs.get(policy.tariff or "")
        if tariff is None:
            rs.problems[info.site] = f"unknown tariff {policy.tariff!r}"
            continue
        factor: EmissionFactor = policy.emissions.factor()
        ser = site_series(
            storage,
            info,
            policy,
            t0,
            t1,
            rectifier_efficiency=ctx.settings.rectifier_efficiency,
        )
        rs.sites[info.site] = site_report(
            ser.intervals,
            tariff,
            start=start,
            end=end,
            emission_factor=factor,
            rectifier_efficiency=ctx.settings.rectifier_efficiency,
        )
        rs.tariffs[info.site] = tariff.name
        rs.zones[info.site] = info.tz or policy.timezone
        if keep_series:
            rs.series[info.site] = ser
    return rs


__all__ = ["CSV_COLUMNS", "ReportSet", "SiteSeries", "build_report", "site_series"]
