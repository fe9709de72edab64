"""Report arithmetic: energy, cost and CO2 of a site against its no-action baseline.

Input is a series of `Interval`s, each with mean powers over [start, end). Energy is split by
tariff period in proportion to time (power is taken as constant inside an interval: use short
intervals, e.g. the 15-minute rollups).

The baseline is what the same telecom load would have drawn with no shifting and no dormancy:

    baseline grid power = grid power − battery power / rectifier efficiency + dormancy saving

Battery power is at the battery (+ charging, − discharging); the rectifier sits between grid
and battery, so a watt into the battery cost 1/η at the meter and a watt out of it spared 1/η.
Round-trip losses therefore stay on the actual side: shifting costs kWh while it saves money,
and the report says so. `dormancy_saved_w` is the grid-side power dormancy removed (capacity
channels off through the rectifier, module hibernation, AC offset), estimated by the caller
from the load before entry (see docs/control.md); it is added back for the baseline.

Energy "moved" from the peak is battery output in peak periods with mains present: that is
shifting. What the battery gives during an outage is the backup doing its job, counted in the
discharge total but never as moved energy.

A reserve violation is an interval, mains present, with the battery discharging below its reserve
SOC (beyond `tolerance_pct`); consecutive ones count once. It must always be zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from protocols.control.emissions import DEFAULT_FACTOR, EmissionFactor
from protocols.control.errors import ControlError
from protocols.control.tariff import PEAK_PERIODS, PERIODS, Period, Tariff

DEFAULT_RECTIFIER_EFFICIENCY = 0.95


@dataclass(frozen=True, slots=True)
class Interval:
    """Mean powers (W) over [start, end) Unix seconds."""

    start: float
    end: float
    grid_w: float
    dc_load_w: float
    battery_w: float = 0.0
    dormant: bool = False
    dormancy_saved_w: float = 0.0
    mains_present: bool = True
    soc_pct: float | None = None
    reserve_soc_pct: float | None = None

    @property
    def hours(self) -> float:
        return (self.end - self.start) / 3600.0


@dataclass(frozen=True, slots=True)
class Sample:
    """An instantaneous reading set; `intervals_from_samples` holds it until the next one."""

    t: float
    grid_w: float
    dc_load_w: float
    battery_w: float = 0.0
    dormant: bool = False
    dormancy_saved_w: float = 0.0
    mains_present: bool = True
    soc_pct: float | None = None
    reserve_soc_pct: float | None = None


def intervals_from_samples(
    samples: Sequence[Sample], *, max_gap_s: float = 900.0, end: float | None = None
) -> list[Interval]:
    """Zero-order hold: each sample's values until the next sample (or `end` for the last).

    A gap longer than `max_gap_s` is left out rather than guessed.
    """
    ordered = sorted(samples, key=lambda s: s.t)
    out: list[Interval] = []
    for i, s in enumerate(ordered):
        nxt = ordered[i + 1].t if i + 1 < len(ordered) else end
        if nxt is None or nxt <= s.t or nxt - s.t > max_gap_s:
            continue
        out.append(
            Interval(
                s.t,
                nxt,
                s.grid_w,
                s.dc_load_w,
                s.battery_w,
                s.dormant,
                s.dormancy_saved_w,
                s.mains_present,
                s.soc_pct,
                s.reserve_soc_pct,
            )
        )
    return out


def _zero_by_period() -> dict[Period, float]:
    return dict.fromkeys(PERIODS, 0.0)


@dataclass(frozen=True, slots=True)
class Report:
    """Totals over a range for one site, or summed (`combine`) for a group or the fleet."""

    start: float
    end: float
    currency: str
    emission_factor: EmissionFactor
    grid_kwh_by_period: dict[Period, float] = field(default_factory=_zero_by_period)
    baseline_kwh_by_period: dict[Period, float] = field(default_factory=_zero_by_period)
    cost: float = 0.0
    baseline_cost: float = 0.0
    dc_kwh: float = 0.0
    battery_charge_kwh: float = 0.0  # into the battery
    battery_discharge_kwh: float = 0.0  # out of the battery
    peak_discharge_kwh: float = 0.0  # out of the battery in peak / critical peak, on mains
    valley_charge_kwh: float = 0.0
    dormant_hours: float = 0.0
    dormancy_saved_kwh: float = 0.0
    reserve_violations: int = 0
    sites: int = 1

    @property
    def grid_kwh(self) -> float:
        return sum(self.grid_kwh_by_period.values())

    @property
    def baseline_kwh(self) -> float:
        return sum(self.baseline_kwh_by_period.values())

    @property
    def savings_cost(self) -> float:
        return self.baseline_cost - self.cost

    @property
    def savings_kwh(self) -> float:
        return self.baseline_kwh - self.grid_kwh

    @property
    def grid_kgco2(self) -> float:
        return self.grid_kwh * self.emission_factor.kg_per_kwh

    @property
    def baseline_kgco2(self) -> float:
        return self.baseline_kwh * self.emission_factor.kg_per_kwh

    @property
    def savings_kgco2(self) -> float:
        return self.savings_kwh * self.emission_factor.kg_per_kwh

    @property
    def moved_kwh(self) -> float:
        """Energy moved from the peak to the valley: battery output in peak periods with mains
        present (outage discharge is backup, not shifting)."""
        return self.peak_discharge_kwh

    @property
    def site_energy_ratio(self) -> float | None:
        """Grid (site) energy / telecom DC energy; None without DC energy."""
        return self.grid_kwh / self.dc_kwh if self.dc_kwh > 0 else None

    def as_dict(self) -> dict[str, float | int | str | None]:
        """Flat JSON/CSV-friendly figures, named with their units."""
        out: dict[str, float | int | str | None] = {
            "start": self.start,
            "end": self.end,
            "sites": self.sites,
            "currency": self.currency,
            "emission_factor": self.emission_factor.label,
            "emission_factor_kg_per_kwh": self.emission_factor.kg_per_kwh,
            "grid_kwh": self.grid_kwh,
        }
        for p in PERIODS:
            out[f"grid_kwh_{p.value}"] = self.grid_kwh_by_period[p]
        out |= {
            "cost": self.cost,
            "baseline_kwh": self.baseline_kwh,
            "baseline_cost": self.baseline_cost,
            "savings_cost": self.savings_cost,
            "savings_kwh": self.savings_kwh,
            "savings_kgco2": self.savings_kgco2,
            "grid_kgco2": self.grid_kgco2,
            "moved_kwh": self.moved_kwh,
            "valley_charge_kwh": self.valley_charge_kwh,
            "battery_charge_kwh": self.battery_charge_kwh,
            "battery_discharge_kwh": self.battery_discharge_kwh,
            "dormant_hours": self.dormant_hours,
            "dormancy_saved_kwh": self.dormancy_saved_kwh,
            "dc_kwh": self.dc_kwh,
            "site_energy_ratio": self.site_energy_ratio,
            "reserve_violations": self.reserve_violations,
        }
        return out


def site_report(
    intervals: Iterable[Interval],
    tariff: Tariff,
    *,
    start: float,
    end: float,
    emission_factor: EmissionFactor = DEFAULT_FACTOR,
    rectifier_efficiency: float = DEFAULT_RECTIFIER_EFFICIENCY,
    tolerance_pct: float = 0.5,
) -> Report:
    """One site's report over [start, end); intervals are clipped to the range."""
    if not 0 < rectifier_efficiency <= 1:
        raise ControlError(f"rectifier efficiency must be in (0, 1], got {rectifier_efficiency}")
    if end < start:
        raise ControlError(f"report range ends ({end}) before it starts ({start})")
    grid = _zero_by_period()
    base = _zero_by_period()
    cost = base_cost = dc = charge = discharge = peak_dis = valley_ch = 0.0
    dormant_h = dormancy = 0.0
    violations = 0
    violating = False
    for iv in sorted(intervals, key=lambda i: i.start):
        s, e = max(iv.start, start), min(iv.end, end)
        if e <= s:
            continue
        baseline_w = iv.grid_w - iv.battery_w / rectifier_efficiency + iv.dormancy_saved_w
        for seg in tariff.segments(s, e):
            h = seg.hours
            grid[seg.period] += iv.grid_w * h / 1000
            base[seg.period] += baseline_w * h / 1000
            cost += iv.grid_w * h / 1000 * seg.price
            base_cost += baseline_w * h / 1000 * seg.price
            if iv.battery_w < 0 and iv.mains_present and seg.period in PEAK_PERIODS:
                peak_dis += -iv.battery_w * h / 1000
            if iv.battery_w > 0 and seg.period is Period.VALLEY:
                valley_ch += iv.battery_w * h / 1000
        h = (e - s) / 3600
        dc += iv.dc_load_w * h / 1000
        charge += max(iv.battery_w, 0.0) * h / 1000
        discharge += max(-iv.battery_w, 0.0) * h / 1000
        dormancy += iv.dormancy_saved_w * h / 1000
        if iv.dormant:
            dormant_h += h
        bad = (
            iv.mains_present
            and iv.battery_w < 0
            and iv.soc_pct is not None
            and iv.reserve_soc_pct is not None
            and iv.soc_pct < iv.reserve_soc_pct - tolerance_pct
        )
        if bad and not violating:
            violations += 1
        violating = bad
    return Report(
        start=start,
        end=end,
        currency=tariff.currency,
        emission_factor=emission_factor,
        grid_kwh_by_period=grid,
        baseline_kwh_by_period=base,
        cost=cost,
        baseline_cost=base_cost,
        dc_kwh=dc,
        battery_charge_kwh=charge,
        battery_discharge_kwh=discharge,
        peak_discharge_kwh=peak_dis,
        valley_charge_kwh=valley_ch,
        dormant_hours=dormant_h,
        dormancy_saved_kwh=dormancy,
        reserve_violations=violations,
    )


def combine(reports: Sequence[Report]) -> Report:
    """Sum site reports into a group or fleet report (same currency and emission factor)."""
    if not reports:
        raise ControlError("nothing to combine")
    first = reports[0]
    for r in reports[1:]:
        if r.currency != first.currency or r.emission_factor != first.emission_factor:
            raise ControlError("reports in different currencies or emission factors")

    def total(name: str) -> float:
        return sum(float(getattr(r, name)) for r in reports)

    def by_period(name: str) -> dict[Period, float]:
        return {p: sum(getattr(r, name)[p] for r in reports) for p in PERIODS}

    return Report(
        start=min(r.start for r in reports),
        end=max(r.end for r in reports),
        currency=first.currency,
        emission_factor=first.emission_factor,
        grid_kwh_by_period=by_period("grid_kwh_by_period"),
        baseline_kwh_by_period=by_period("baseline_kwh_by_period"),
        cost=total("cost"),
        baseline_cost=total("baseline_cost"),
        dc_kwh=total("dc_kwh"),
        battery_charge_kwh=total("battery_charge_kwh"),
        battery_discharge_kwh=total("battery_discharge_kwh"),
        peak_discharge_kwh=total("peak_discharge_kwh"),
        valley_charge_kwh=total("valley_charge_kwh"),
        dormant_hours=total("dormant_hours"),
        dormancy_saved_kwh=total("dormancy_saved_kwh"),
        reserve_violations=sum(r.reserve_violations for r in reports),
        sites=sum(r.sites for r in reports),
    )


__all__ = [
    "DEFAULT_RECTIFIER_EFFICIENCY",
    "Interval",
    "Report",
    "Sample",
    "combine",
    "intervals_from_samples",
    "site_report",
]
