"""What a run gives: per site and per policy, the report and the figures it does not hold."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from protocols.control.emissions import EmissionFactor
from protocols.control.errors import ControlError
from protocols.control.report import Report, combine, site_report
from simulators.errors import ScenarioError
from simulators.offline.agent import RECTIFIER_EFFICIENCY
from simulators.offline.run import OfflineRun
from simulators.offline.site import OfflineSite


@dataclass(frozen=True, slots=True)
class SiteResult:
    """One site under one policy: its report and the figures the report does not hold."""

    site: str
    chemistry: str
    tariff: str
    climate: str
    capacity_kwh: float
    report: Report
    twin: Report | None
    min_margin_discharging: float | None
    min_margin_mains: float | None
    min_soc: float
    peak_import_w: float
    reserve_stops: int
    battery_commands: int
    wakes: tuple[tuple[float, str], ...]
    codes: Mapping[str, int]

    @property
    def moved_kwh(self) -> float:
        """Battery output in peak periods on mains: the report's `moved_kwh`."""
        return self.report.moved_kwh

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "site": self.site,
            "chemistry": self.chemistry,
            "tariff": self.tariff,
            "climate": self.climate,
            "capacity_kwh": round(self.capacity_kwh, 3),
        }
        out |= _report_row(self.report, self.twin)
        out |= {
            "min_margin_discharging_pct": _opt(self.min_margin_discharging),
            "min_margin_mains_pct": _opt(self.min_margin_mains),
            "min_soc_pct": round(self.min_soc, 3),
            "peak_import_w": round(self.peak_import_w, 1),
            "reserve_stops": self.reserve_stops,
            "battery_commands": self.battery_commands,
            "wakes": len(self.wakes),
            "shave_rounds": self.codes.get("battery.shave", 0),
        }
        return out


def _opt(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else round(v, 3)


_ESTIMATED = ("baseline_kwh", "baseline_cost", "savings_cost", "savings_kwh", "savings_kgco2")


def _report_row(r: Report, twin: Report | None) -> dict[str, Any]:
    """The report's figures; its own estimated baseline and savings renamed `*_est_*`, and
    `savings_*` measured against the twin (empty without one)."""
    out: dict[str, Any] = {}
    for k, v in r.as_dict().items():
        if k in ("start", "end"):
            continue
        out[k.replace("baseline_", "baseline_est_").replace("savings_", "savings_est_")
            if k in _ESTIMATED else k] = v  # fmt: skip
    money, kwh = (twin.cost - r.cost, twin.grid_kwh - r.grid_kwh) if twin else (None, None)
    out |= {
        "twin_kwh": twin.grid_kwh if twin else None,
        "twin_cost": twin.cost if twin else None,
        "savings_cost": money,
        "savings_kwh": kwh,
        "savings_kgco2": None if kwh is None else kwh * r.emission_factor.kg_per_kwh,
    }
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


@dataclass(frozen=True, slots=True)
class PolicyResult:
    name: str
    source: str
    sites: tuple[SiteResult, ...]
    total: Report
    twin_total: Report | None
    fleet_peak_w: float

    @property
    def moved_kwh(self) -> float:
        return self.total.moved_kwh

    def total_row(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "site": "TOTAL",
            "chemistry": "",
            "tariff": "",
            "climate": "",
            "capacity_kwh": round(sum(s.capacity_kwh for s in self.sites), 3),
        }
        out |= _report_row(self.total, self.twin_total)
        margins = [s.min_margin_discharging for s in self.sites]
        mains = [s.min_margin_mains for s in self.sites]
        out |= {
            "min_margin_discharging_pct": _opt(min((m for m in margins if m is not None),
                                                   default=None)),
            "min_margin_mains_pct": _opt(min((m for m in mains if m is not None), default=None)),
            "min_soc_pct": round(min(s.min_soc for s in self.sites), 3),
            "peak_import_w": round(self.fleet_peak_w, 1),
            "reserve_stops": sum(s.reserve_stops for s in self.sites),
            "battery_commands": sum(s.battery_commands for s in self.sites),
            "wakes": sum(len(s.wakes) for s in self.sites),
            "shave_rounds": sum(s.codes.get("battery.shave", 0) for s in self.sites),
        }  # fmt: skip
        return out


@dataclass(frozen=True, slots=True)
class Comparison:
    scenario: str
    start: float
    end: float
    interval_s: float
    step_s: float
    policies: tuple[PolicyResult, ...]
    baseline: PolicyResult | None


def _site_result(s: OfflineSite, start: float, end: float, twin: OfflineSite | None,
                 factor: EmissionFactor) -> SiteResult:  # fmt: skip
    rep = site_report(
        s.intervals, s.tariff, start=start, end=end, emission_factor=factor,
        rectifier_efficiency=RECTIFIER_EFFICIENCY,
    )  # fmt: skip
    twin_rep = (
        site_report(twin.intervals, twin.tariff, start=start, end=end, emission_factor=factor,
                    rectifier_efficiency=RECTIFIER_EFFICIENCY)
        if twin is not None
        else None
    )  # fmt: skip
    spec = s.plan.spec
    return SiteResult(
        site=s.site,
        chemistry=spec.battery.chemistry.value,
        tariff=s.tariff.name,
        climate=s.plan.climate,
        capacity_kwh=s.capacity_wh / 1000.0,
        report=rep,
        twin=twin_rep,
        min_margin_discharging=None if math.isinf(s.min_margin_discharging)
        else s.min_margin_discharging,
        min_margin_mains=None if math.isinf(s.min_margin_mains) else s.min_margin_mains,
        min_soc=s.min_soc,
        peak_import_w=s.peak_import_w,
        reserve_stops=s.agent.reserve_stops,
        battery_commands=s.commands,
        wakes=tuple(s.agent.wakes),
        codes=dict(s.codes),
    )  # fmt: skip


def policy_result(run: OfflineRun, source: str, start: float, end: float,
                   twin: OfflineRun | None, factor: EmissionFactor) -> PolicyResult:  # fmt: skip
    twins = {s.site: s for s in twin.sites} if twin is not None else {}
    sites = tuple(_site_result(s, start, end, twins.get(s.site), factor) for s in run.sites)
    total = combine_reports([s.report for s in sites])
    twin_total = (
        combine_reports([s.twin for s in sites if s.twin is not None]) if twin is not None else None
    )
    return PolicyResult(run.name, source, sites, total, twin_total, run.fleet_peak_w)


def combine_reports(reports: Sequence[Report]) -> Report:
    """Sum site reports; sites on tariffs in different currencies cannot be summed."""
    try:
        return combine(reports)
    except ControlError as exc:
        raise ScenarioError(f"cannot total the fleet: {exc}") from None


__all__ = [
    "Comparison",
    "PolicyResult",
    "SiteResult",
    "combine_reports",
    "policy_result",
]
