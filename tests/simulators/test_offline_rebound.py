"""No rebound peak from peak shaving (issue 6, DESIGN.md "recharge staggered at the start of the
valley so the fleet makes no rebound peak"): a small fleet on the Sichuan tariff (peaks 10-12
and 15-21, flat between, valley 23-07) for a summer day, shaving against the untouched twin.

With the planner's hold, the shaved packs wait for the valley instead of float-charging at
full rate, all at once, when a peak ends: the fleet's peak import stays at the twin's (≤ 2 %
noise) and the cost falls. Switching the hold off (`hold_until_valley = false`, the old
behaviour: battery auto after the peak) brings the rebound back, so the check can fail."""

from __future__ import annotations

import tomllib
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from protocols.control.tariff import load_tariffs
from simulators.offline import (
    Comparison,
    PolicyResult,
    SitePlan,
    compare_sites,
    policy_from_file_mapping,
)
from simulators.spec import BatterySpec, Chemistry, SiteSpec, TrafficSpec

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Asia/Shanghai")
START = datetime(2025, 7, 1, tzinfo=TZ).timestamp()
TARIFFS = load_tariffs(ROOT / "config" / "tariffs")
SHAVE = tomllib.loads((ROOT / "config/policies/compare/shave-only.toml").read_text("utf-8"))


def plans() -> list[SitePlan]:
    out = []
    for k in range(6):
        chem = Chemistry.LFP if k < 4 else Chemistry.LEAD_ACID
        spec = SiteSpec(
            id=f"{chem.value}-{k}",
            seed=20 + k,
            traffic=TrafficSpec(scale=0.9),
            battery=BatterySpec(chemistry=chem, capacity_ah=400),
        )
        out.append(SitePlan(spec, "sichuan-2023"))
    return out


@pytest.fixture(scope="module")
def day() -> Comparison:
    hold = policy_from_file_mapping(SHAVE, name="hold")
    no_hold = policy_from_file_mapping(
        {**SHAVE, "peak_shaving": {**SHAVE["peak_shaving"], "hold_until_valley": False}},
        name="no-hold",
    )
    return compare_sites(plans(), [hold, no_hold], start=START, tariffs=TARIFFS)


def result(c: Comparison, name: str) -> PolicyResult:
    return next(r for r in c.policies if r.name == name)


def test_shaving_makes_no_rebound_peak_and_cuts_cost(day: Comparison) -> None:
    assert day.baseline is not None
    base = day.baseline.fleet_peak_w
    hold = result(day, "hold")
    assert hold.fleet_peak_w <= base * 1.02, (hold.fleet_peak_w, base)
    assert hold.total.cost < day.baseline.total.cost * 0.97
    assert hold.total.moved_kwh > 10.0  # it did shave
    assert hold.total.reserve_violations == 0
    lfp = [s for s in hold.sites if s.chemistry == "lfp"]
    assert all(s.codes.get("battery.hold", 0) > 0 for s in lfp)  # held in the flat periods


def test_without_the_hold_the_rebound_comes_back(day: Comparison) -> None:
    """The old behaviour (auto after a peak: the plants float-charge at full rate) peaks above
    the twin — what the hold removes."""
    assert day.baseline is not None
    no_hold = result(day, "no-hold")
    assert no_hold.fleet_peak_w > day.baseline.fleet_peak_w * 1.05
    assert result(day, "hold").total.cost < no_hold.total.cost
