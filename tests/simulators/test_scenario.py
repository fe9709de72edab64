"""Scenario files: validation that names the key, shipped files, fleet generation."""

from __future__ import annotations

import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from protocols.clock import parse_time
from protocols.control.reserve import reserve_soc
from simulators.errors import ScenarioError
from simulators.fleet_run import load_run
from simulators.launch import build_site_host, site_placements
from simulators.modbus.faults import FaultKind
from simulators.physics import SiteModel
from simulators.scenario import (
    FleetScenario,
    SiteScenario,
    load_scenario,
    parse_scenario,
)
from simulators.spec import Chemistry, OutageEvent

REPO = Path(__file__).resolve().parents[2]
SHIPPED = [
    REPO / "config" / "sim-site.toml",
    *sorted((REPO / "config" / "scenarios").glob("*.toml")),
]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_scenarios_load(path: Path) -> None:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    # A fleet run's file ([run], [[inject]]) is read by the fleet simulator's loader.
    sc = load_run(path).scenario if "run" in data or "inject" in data else load_scenario(path)
    if isinstance(sc, SiteScenario):
        spec = sc.site_spec(parse_time("2025-07-01T00:00:00+08:00"))
        assert len(spec.breaker.channels) == 8
    else:
        assert len(sc.build_sites(0.0)) == sc.fleet.sites


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"site": {"battery": {"capacity_ah": -5}}}, "site.battery.capacity_ah"),
        ({"site": {"battery": {"chemistry": "nicd"}}}, "site.battery.chemistry"),
        ({"site": {"rectifier": {"modules": 0}}}, "site.rectifier.modules"),
        ({"site": {"tariff": "nowhere"}}, "unknown tariff 'nowhere'"),
        ({"sim": {"speed": 0}}, "sim.speed"),
        ({"sim": {"start": "yesterday"}}, "sim"),
        ({"events": [{"kind": "outage", "duration_h": 1}]}, "exactly one of 'at'"),
        ({"events": [{"kind": "flood", "after_h": 1}]}, "events.0"),
        ({"faults": [{"device": "toaster", "kind": "timeout", "after_h": 1, "duration_s": 5}]},
         "device 'toaster'"),
        ({"faults": [{"device": "battery", "kind": "melt", "after_h": 1, "duration_s": 5}]},
         "faults.0.kind"),
        ({"site": {"colour": "red"}}, "site.colour"),
        ({"site": {"aircon": {"supply": "dc"}}}, "site: aircon.supply = 'dc' needs exactly one"),
    ],
)  # fmt: skip
def test_errors_name_the_key(data: dict[str, Any], where: str) -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario({"kind": "site", **data}, source="x.toml")
    assert "x.toml" in str(err.value)
    assert where in str(err.value)


def test_kind_must_be_known() -> None:
    with pytest.raises(ScenarioError, match="kind"):
        parse_scenario({"kind": "planet"})


def test_events_and_faults_resolve_against_the_start() -> None:
    sc = parse_scenario(
        {
            "sim": {"start": "2025-07-01T00:00:00+08:00", "port_base": 0},
            "events": [{"kind": "outage", "after_h": 2, "duration_h": 1.5}],
            "faults": [{"device": "meter", "kind": "garbage", "after_h": 1, "duration_s": 60}],
        }
    )
    assert isinstance(sc, SiteScenario)
    t0 = parse_time("2025-07-01T00:00:00+08:00")
    (ev,) = sc.site_spec(t0).events
    assert ev == OutageEvent(at=t0 + 7200, duration_s=5400)
    host = build_site_host(sc, wall_now=1000.0)
    (fault,) = host.faults.faults["site-1/meter"]
    assert fault.kind is FaultKind.GARBAGE and fault.start == t0 + 3600
    assert all(p.port == 0 for p in site_placements(sc).values())


def test_port_layouts() -> None:
    per = parse_scenario({"sim": {"port_base": 15020}})
    assert isinstance(per, SiteScenario)
    assert [(p.port, p.unit) for p in site_placements(per).values()] == [
        (15020 + i, 1) for i in range(5)
    ]
    shared = parse_scenario({"sim": {"port_base": 15020, "layout": "shared-port"}})
    assert isinstance(shared, SiteScenario)
    assert [(p.port, p.unit) for p in site_placements(shared).values()] == [
        (15020, i + 1) for i in range(5)
    ]


def test_fleet_template_is_varied_and_deterministic() -> None:
    sc = load_scenario(REPO / "config" / "scenarios" / "fleet-20.toml")
    assert isinstance(sc, FleetScenario)
    a = sc.build_sites(0.0)
    b = sc.build_sites(0.0)
    assert [s.spec for s in a] == [s.spec for s in b]
    assert len(a) == 20
    chem = Counter(s.spec.battery.chemistry for s in a)
    assert chem[Chemistry.LFP] > 0 and chem[Chemistry.LEAD_ACID] > 0
    assert len({s.tariff for s in a}) == 2
    assert len({s.climate for s in a}) >= 2
    assert len({s.spec.id for s in a}) == 20
    # Lead-acid sites get the monitor profile (no control points), LFP the BMS.
    for s in a:
        want = (
            "battery_lianfa_lf48100"
            if s.spec.battery.chemistry is Chemistry.LFP
            else ("battery_strata_bsm4")
        )
        assert s.profiles[next(k for k in s.profiles if k.value == "battery")] == want
    # Unit ids on a shared port never collide.
    seen = set()
    for s in a:
        for unit in s.units.values():
            assert (s.port, unit) not in seen
            seen.add((s.port, unit))


def outage_sites(sites: list[Any]) -> set[str]:
    return {s.spec.id for s in sites if any(isinstance(e, OutageEvent) for e in s.spec.events)}


def test_fleet_template_outage_hits_one_region_not_everyone() -> None:
    sc = load_scenario(REPO / "config" / "scenarios" / "fleet-20.toml")
    assert isinstance(sc, FleetScenario)
    sites = sc.build_sites(0.0)
    hit = outage_sites(sites)
    assert 0 < len(hit) < len(sites) / 2  # the alarm and the backup still show somewhere
    assert hit == {s.spec.id for s in sites if s.climate == "mountain"}


FLEET: dict[str, Any] = {
    "kind": "fleet",
    "fleet": {
        "sites": 10,
        "batteries": [{"chemistry": "lfp", "capacity_ah": [200.0]}],
        "climates": [{"name": "north", "mean_c": 20.0}, {"name": "south", "mean_c": 30.0}],
        "tariffs": [{"name": "sichuan-2023"}],
    },
}


@pytest.mark.parametrize(
    ("target", "count"),
    [({}, 10), ({"share": 0.3}, 3), ({"share": 0.3, "seed": 9}, 3), ({"share": 0.01}, 1)],
)
def test_fleet_events_hit_a_seeded_share(target: dict[str, Any], count: int) -> None:
    event = {"kind": "outage", "after_h": 1, "duration_h": 1, **target}
    sc = parse_scenario({**FLEET, "events": [event]})
    assert isinstance(sc, FleetScenario)
    hit = outage_sites(sc.build_sites(0.0))
    assert len(hit) == count
    assert hit == outage_sites(sc.build_sites(0.0))  # deterministic


def test_fleet_event_region_must_be_a_climate_and_sites_take_no_targets() -> None:
    bad = {"kind": "outage", "after_h": 1, "duration_h": 1, "region": "mars"}
    with pytest.raises(ScenarioError, match=r"events\.0\.region: 'mars' is not a climate"):
        parse_scenario({**FLEET, "events": [bad]})
    with pytest.raises(ScenarioError, match="fleet scenarios only"):
        parse_scenario({"events": [{**bad, "region": None, "share": 0.5}]})


def test_fleet_template_packs_can_reach_their_reserve() -> None:
    """Every generated site's pack keeps 3 h of its peak DC load (measured over a simulated
    day) at a reserve of at most 75 % SOC: shaving has room and `battery_low` can clear."""
    sc = load_scenario(REPO / "config" / "scenarios" / "fleet-20.toml")
    assert isinstance(sc, FleetScenario)
    t0 = parse_time("2025-07-01T00:00:00+08:00")
    for s in sc.build_sites(t0, port_base=0):
        m = SiteModel(s.spec.model_copy(update={"events": ()}), start=t0)
        peak = 0.0
        while m.t < t0 + 86400:
            m.advance_to(m.t + 300.0, max_step=60.0)
            peak = max(peak, m.dc_load_w)
        b = s.spec.battery
        reserve = reserve_soc(
            peak, b.capacity_ah * m.battery.nominal_v, backup_hours=3.0, soh_pct=b.soh
        )
        assert reserve <= 75.0, (s.spec.id, b.capacity_ah, round(peak))
        assert 100.0 <= b.capacity_ah <= 800.0, s.spec.id  # ≤ two 400 Ah strings
