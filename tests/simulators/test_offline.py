"""The offline policy comparison (simulators.offline): the shared planners drive four simulated
sites (two LFP, two lead-acid, one tariff) on a stepped clock for a winter day, against an
untouched twin — peak shaving cuts the LFP sites' cost and leaves lead-acid alone, dormancy cuts
energy, the reserve holds, an outage in the dormant window wakes the site, figures repeat."""

from __future__ import annotations

import math
import tomllib
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from protocols.control.tariff import load_tariffs
from simulators.errors import ScenarioError
from simulators.offline import (
    BASELINE,
    BatteryCommand,
    ComparePolicy,
    Comparison,
    OfflineRun,
    PolicyResult,
    SitePlan,
    as_json,
    build_site,
    compare_sites,
    load_compare_policy,
    policy_from_file_mapping,
)
from simulators.spec import BatterySpec, Chemistry, OutageEvent, SiteSpec, TrafficSpec

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
COMPARE = ROOT / "config" / "policies" / "compare"
TZ = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 1, 5, tzinfo=TZ).timestamp()  # a winter Monday: peak 08-15 and 18-21
TARIFFS = load_tariffs(ROOT / "config" / "tariffs")


def at(hh: int, mm: int = 0) -> float:
    return datetime(2026, 1, 5, hh, mm, tzinfo=TZ).timestamp()


def plan(name: str, chem: Chemistry, seed: int, *events: OutageEvent) -> SitePlan:
    spec = SiteSpec(
        id=name,
        seed=seed,
        traffic=TrafficSpec(scale=0.8),
        battery=BatterySpec(chemistry=chem, capacity_ah=400),
        events=events,
    )
    return SitePlan(spec, "shanghai-two-part")


PLANS = [
    plan("lfp-1", Chemistry.LFP, 1),
    plan("lfp-2", Chemistry.LFP, 2),
    plan("pba-1", Chemistry.LEAD_ACID, 3),
    plan("pba-2", Chemistry.LEAD_ACID, 4),
]


@pytest.fixture(scope="module")
def day() -> Comparison:
    policies = [
        load_compare_policy(COMPARE / "shave-only.toml"),
        load_compare_policy(COMPARE / "dormant-only.toml"),
    ]
    return compare_sites(PLANS, policies, start=START, tariffs=TARIFFS)


def result(c: Comparison, name: str) -> PolicyResult:
    return next(r for r in c.policies if r.name == name)


def test_peak_shaving_cuts_lfp_cost_and_leaves_lead_acid_alone(day: Comparison) -> None:
    shave = result(day, "shave-only")
    for s in shave.sites:
        assert s.twin is not None
        if s.chemistry == "lfp":
            assert s.report.cost < s.twin.cost * 0.95, s.site
            assert s.moved_kwh > 5.0, s.site
            assert s.codes.get("battery.shave", 0) > 0, s.site
        else:
            assert s.codes.get("battery.shave", 0) == 0, s.site
            assert s.codes["battery.uneconomic"] == sum(
                n for k, n in s.codes.items() if k.startswith("battery.")
            )
            assert s.report.battery_discharge_kwh == pytest.approx(0.0, abs=0.01), s.site
            assert s.moved_kwh == 0.0
            assert s.report.cost == pytest.approx(s.twin.cost, abs=0.05), s.site
    assert shave.total.dormant_hours == 0.0


def test_dormancy_cuts_grid_energy(day: Comparison) -> None:
    dormant = result(day, "dormant-only")
    for s in dormant.sites:
        assert s.twin is not None
        assert s.report.dormant_hours > 4.0, s.site
        assert s.report.grid_kwh < s.twin.grid_kwh - 2.0, s.site
        assert s.report.battery_discharge_kwh == pytest.approx(0.0, abs=0.01), s.site
        assert [why for _, why in s.wakes] == ["window_end"], s.site
    assert dormant.twin_total is not None
    saved = dormant.twin_total.grid_kwh - dormant.total.grid_kwh
    row = dormant.total_row()
    assert row["savings_kwh"] == pytest.approx(saved, abs=1e-3)
    assert row["savings_kgco2"] == pytest.approx(saved * 0.5366, abs=1e-3)


def test_reserve_is_never_crossed_on_mains(day: Comparison) -> None:
    for r in day.policies:
        assert r.total.reserve_violations == 0, r.name
        for s in r.sites:
            # The agent's watch runs after each 30 s physics step: at most one step's overshoot.
            if s.min_margin_discharging is not None:
                assert s.min_margin_discharging > -0.5, (r.name, s.site)
            assert s.min_margin_mains is not None and s.min_margin_mains > -0.5, (r.name, s.site)
    shave = result(day, "shave-only")
    lfp = [s for s in shave.sites if s.chemistry == "lfp"]
    assert all(s.min_margin_discharging is not None for s in lfp)
    assert min(s.min_soc for s in lfp) < 70.0  # it did go down towards the reserve


def test_baseline_twin_is_left_alone(day: Comparison) -> None:
    assert day.baseline is not None and day.baseline.name == BASELINE
    for s in day.baseline.sites:
        assert s.codes == {} and s.battery_commands == 0 and s.wakes == ()
        assert s.report.dormant_hours == 0.0


def test_outage_in_the_dormant_window_wakes_the_site() -> None:
    outage = OutageEvent(at=at(2), duration_s=3600.0)
    p = plan("lfp-out", Chemistry.LFP, 7, outage)
    policy = load_compare_policy(COMPARE / "shave-and-dormant.toml")
    site = build_site(p, policy, TARIFFS, START)
    run = OfflineRun("t", [site])
    run.run(START, at(6), step_s=30.0)
    wakes = site.agent.wakes
    assert wakes and wakes[0][1] == "mains_failure"
    assert 0 <= wakes[0][0] - at(2) <= 30.0  # woken by the agent's watch within one step
    dormant_before = [iv for iv in site.intervals if iv.end <= at(2) and iv.dormant]
    assert dormant_before, "the site was dormant when the mains failed"
    during = [iv for iv in site.intervals if at(2) + 60 <= iv.start < at(3)]
    assert during and not any(iv.dormant for iv in during)
    assert site.model.totals.dark_s == 0.0
    assert site.model.totals.outage_s == pytest.approx(3600.0, abs=30.0)
    # No re-entry while the mains is down, and the battery carried the site.
    assert site.codes["dormant.mains_failure"] >= 55
    assert not site.model.mains or site.model.battery.soc > 50.0


def test_two_runs_give_identical_figures() -> None:
    policy = load_compare_policy(COMPARE / "shave-and-dormant.toml")
    plans = [plan("lfp-1", Chemistry.LFP, 1, OutageEvent(at=at(9), duration_s=1800.0))]
    runs = [
        as_json(compare_sites(plans, [policy], start=START, days=0.5, tariffs=TARIFFS))
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    assert runs[0]["policies"][0]["total"]["grid_kwh"] > 0


def test_policy_files_in_the_aggregator_layer_format() -> None:
    p = load_compare_policy(ROOT / "config" / "policies" / "00-default.toml")
    assert p.name == "00-default" and p.enabled
    assert p.control.dormant.channel_load_threshold_w == 600
    assert [c.number for c in p.channels] == [1, 2, 3, 4, 5, 6, 7]
    sw = load_compare_policy(ROOT / "config" / "policies" / "10-region-southwest.toml")
    assert sw.emissions.region == "southwest" and sw.emissions.kg_per_kwh == 0.2268
    with pytest.raises(ScenarioError, match=r"bad\.toml: peak_shaving\.backup_hourz"):
        policy_from_file_mapping(
            {"peak_shaving": {"backup_hourz": 3}}, name="bad", source="bad.toml"
        )
    with pytest.raises(ScenarioError, match=r"x\.toml"):
        policy_from_file_mapping({"emissions": {"region": "mars"}}, name="x", source="x.toml")


def test_only_changes_are_sent() -> None:
    shave = BatteryCommand("battery.peak_shave", 2000.0)
    assert not shave.differs(BatteryCommand("battery.peak_shave", 2150.0))  # < 10 %
    assert shave.differs(BatteryCommand("battery.peak_shave", 2300.0))
    assert shave.differs(BatteryCommand("battery.auto"))
    charge = BatteryCommand("battery.charge", 100.0, 80.0)
    assert not charge.differs(BatteryCommand("battery.charge", 100.0, 80.5))
    assert charge.differs(BatteryCommand("battery.charge", 100.0, 81.0))
    assert charge.differs(None)


def test_disabled_policy_behaves_like_the_twin(day: Comparison) -> None:
    off: ComparePolicy = policy_from_file_mapping({"enabled": False}, name="off")
    c = compare_sites(PLANS[:1], [off], start=START, days=0.25, tariffs=TARIFFS)
    (r,) = c.policies
    assert r.twin_total is not None
    assert math.isclose(r.total.grid_kwh, r.twin_total.grid_kwh, rel_tol=1e-12)
    assert r.sites[0].battery_commands == 0


def test_default_policy_goes_dormant_at_night_and_not_by_day() -> None:
    """The shipped default policy on the simulators' reference site (two capacity AAUs, idle
    350 W each): the capacity layer is quiet enough at night to enter, and by day its draw is
    above the per-channel threshold — so even a daytime window does not put it to sleep."""
    path = ROOT / "config" / "policies" / "00-default.toml"
    default = load_compare_policy(path)
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    data["dormant"] = {**data["dormant"], "window": "09:00-21:00"}
    by_day = policy_from_file_mapping(data, name="by-day")
    site = SitePlan(SiteSpec(id="ref", seed=3), "shanghai-two-part")
    c = compare_sites([site], [default, by_day], start=START, baseline=False, tariffs=TARIFFS)
    night, day = (r.sites[0] for r in c.policies)
    assert night.report.dormant_hours > 4.0
    assert night.wakes and all(why == "window_end" for _, why in night.wakes)
    assert day.report.dormant_hours == 0.0
    assert day.codes["dormant.load_high"] > 0
