"""An end-to-end simulated day at the physics level: the aggregator's loop core and the shared
planners drive six simulated sites (three LFP, three lead-acid) on a stepped clock, against a
twin fleet left alone. Peak shaving cuts the LFP sites' cost and skips lead-acid; dormancy cuts
energy; no SOC goes below its reserve while discharging on mains; a mains outage during dormancy
wakes the site and the battery carries it; a demand-response event holds the fleet under its cap
and the recharge after it makes no rebound peak."""

from __future__ import annotations

from collections import defaultdict

import pytest

from aggregator.control.events import new_event
from aggregator.control.policies import SitePolicy
from aggregator.control.settings import ControlSettings
from protocols.control.report import Report, site_report
from simulators.physics import SiteModel
from simulators.spec import BatterySpec, Chemistry, OutageEvent, SiteSpec, TrafficSpec
from tests.control_loop.helpers import SHANGHAI, at
from tests.control_loop.offline import OfflineFleet, SimSite

pytestmark = pytest.mark.timeout(300)

START, END = at(0), at(0, day=6)
OUTAGE = (at(2), at(3))
DR = (at(16), at(17))
CEILING_W = 2000.0
SETTINGS = ControlSettings(interval_s=60, lease_s=600)
CHANNELS = [
    {"number": 1, "role": "transmission", "critical": True},
    {"number": 2, "role": "bbu", "critical": True},
    {"number": 3, "role": "anchor", "critical": True},
    {"number": 4, "role": "capacity"},
    {"number": 5, "role": "capacity"},
    {"number": 6, "role": "aux"},
    {"number": 7, "role": "gateway", "critical": True},
]


def policy(chemistry: str) -> SitePolicy:
    return SitePolicy.model_validate(
        {
            "tariff": "shanghai-two-part",
            "battery": {"chemistry": chemistry, "nominal_v": 51.2 if chemistry == "lfp" else 48},
            "channels": CHANNELS,
            "dormant": {
                "window": "00:00-05:00",
                "channel_load_threshold_w": 600,
                "entry_dwell_s": 600,
            },
        }
    )


def fleet(controlled: bool) -> OfflineFleet:
    sites = {}
    for k in range(6):
        chem = Chemistry.LFP if k < 3 else Chemistry.LEAD_ACID
        name = f"{chem.value}-{k % 3 + 1}"
        events = (OutageEvent(at=OUTAGE[0], duration_s=OUTAGE[1] - OUTAGE[0]),) if k == 0 else ()
        spec = SiteSpec(
            id=name,
            seed=k + 1,
            traffic=TrafficSpec(scale=0.8, noise=0.0),
            battery=BatterySpec(chemistry=chem, capacity_ah=600, initial_soc=95),
            events=events,
        )
        sites[name] = SimSite(
            SiteModel(spec, start=START), policy(chem.value), SHANGHAI, controlled=controlled
        )
    return OfflineFleet(sites, SETTINGS)


def reports(f: OfflineFleet) -> dict[str, Report]:
    return {n: site_report(s.intervals, SHANGHAI, start=START, end=END) for n, s in f.sites.items()}


def fleet_import(f: OfflineFleet) -> dict[float, float]:
    out: dict[float, float] = defaultdict(float)
    for s in f.sites.values():
        for iv in s.intervals:
            out[iv.start] += iv.grid_w
    return out


@pytest.fixture(scope="module")
def day() -> tuple[OfflineFleet, OfflineFleet, float]:
    twin = fleet(controlled=False)
    twin.run(START, END)
    base = fleet_import(twin)
    during = [w for t, w in base.items() if DR[0] <= t < DR[1]]
    cap = 0.75 * (sum(during) / len(during))
    ctl = fleet(controlled=True)
    ctl.events = [
        new_event(cap_w=cap, start=DR[0], end=DR[1], recharge_ceiling_w=CEILING_W,
                  created_by="test", created_ms=0)
    ]  # fmt: skip
    ctl.run(START, END)
    return twin, ctl, cap


def test_peak_shaving_cuts_cost_on_lfp_and_skips_lead_acid(day: tuple) -> None:  # type: ignore[type-arg]
    twin, ctl, _ = day
    before, after = reports(twin), reports(ctl)
    for name, s in ctl.sites.items():
        shaved = [
            a for t, a, _ in s.actions if a == "battery.peak_shave" and not DR[0] <= t < DR[1]
        ]
        if name == "lfp-1":
            # Its outage (02:00-03:00) makes it "unstable" for 24 h: it recharges to 100 % and
            # does not shave, by design.
            assert shaved == []
            assert any(a == "battery.charge" and p["target_soc"] == 100 for _, a, p in s.actions)
        elif name.startswith("lfp"):
            assert shaved, name
            assert after[name].cost < before[name].cost * 0.97, name
            assert after[name].moved_kwh > 2.0, name
        else:
            assert shaved == [], name  # economics leave lead-acid alone outside the event
            assert after[name].cost < before[name].cost, name  # dormancy still saves


def test_dormancy_cuts_energy(day: tuple) -> None:  # type: ignore[type-arg]
    twin, ctl, _ = day
    before, after = reports(twin), reports(ctl)
    for name in ctl.sites:
        assert after[name].dormant_hours > 2.0, name
        if name.startswith("lead_acid"):
            assert after[name].grid_kwh < before[name].grid_kwh - 0.5, name


def test_soc_never_below_reserve_while_discharging_on_mains(day: tuple) -> None:  # type: ignore[type-arg]
    _, ctl, _ = day
    for name, r in reports(ctl).items():
        assert r.reserve_violations == 0, name
        assert ctl.sites[name].min_margin_discharging > -0.5, name


def test_outage_during_dormancy_wakes_the_site_and_the_battery_carries_it(day: tuple) -> None:  # type: ignore[type-arg]
    _, ctl, _ = day
    site = ctl.sites["lfp-1"]
    entered = [t for t, a, _ in site.actions if a == "site.dormant" and t < OUTAGE[0]]
    assert entered, "the site was dormant before the outage"
    woke = [t for t, i in ctl.intents if i.site == "lfp-1" and i.action == "site.wake"
            and t >= OUTAGE[0]]  # fmt: skip
    assert woke and woke[0] - OUTAGE[0] <= SETTINGS.interval_s
    outage = [iv for iv in site.intervals if OUTAGE[0] <= iv.start < OUTAGE[1]]
    assert all(not iv.dormant for iv in outage[1:])
    assert outage[0].soc_pct is not None and outage[0].reserve_soc_pct is not None
    assert outage[0].soc_pct >= outage[0].reserve_soc_pct
    assert site.model.totals.dark_s == 0
    assert site.model.totals.outage_s == pytest.approx(3600, abs=30)


def test_demand_response_holds_the_cap_with_no_rebound(day: tuple) -> None:  # type: ignore[type-arg]
    twin, ctl, cap = day
    got, base = fleet_import(ctl), fleet_import(twin)
    during = [w for t, w in got.items() if DR[0] + 60 <= t < DR[1]]
    assert during and max(during) <= cap * 1.02
    # After the event: the recharge is staggered under its ceiling, so the fleet's import never
    # rises above the untouched twin's by more than the ceiling (at the meter, with losses).
    window = [t for t in got if DR[1] <= t < DR[1] + 3600]
    charging: dict[float, float] = defaultdict(float)
    for s in ctl.sites.values():
        for iv in s.intervals:
            if iv.start in window:
                charging[iv.start] += max(0.0, iv.battery_w)
    assert max(charging.values()) <= CEILING_W * 1.01  # the fleet's recharge stays under it
    # …so the import is the twin's plus at most the ceiling through the rectifier (on average:
    # air-conditioner compressors cycle at their own phase in each fleet).
    mean = sum(got[t] for t in window) / len(window)
    assert mean <= sum(base[t] for t in window) / len(window) + CEILING_W / 0.9
    slots = [
        i for t, i in ctl.intents
        if DR[1] <= t < DR[1] + 3600 and i.action == "battery.charge"
    ]  # fmt: skip
    assert slots, "the recharge after the event is planned"
