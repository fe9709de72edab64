"""The peak-shaving planner, rule by rule, on the Shanghai two-part tariff in summer.

Base case: LFP 19.2 kWh, load 2 kW, SOC 90 %, battery limits 5 kW; its reserve is
10 % + 2 kW·3 h/0.95/19.2 kWh = 42.89 %.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.clock import parse_time
from protocols.control.economics import Battery, Chemistry
from protocols.control.peak import (
    BatteryMode,
    Decision,
    FleetDirective,
    PeakPolicy,
    SiteState,
    plan_site,
)
from protocols.control.tariff import Tariff, load_tariff
from protocols.messages import Action

TARIFF = load_tariff(
    Path(__file__).resolve().parents[2] / "config" / "tariffs" / "shanghai-two-part.toml"
)
BASE = SiteState(
    soc_pct=90,
    capacity_wh=19200,
    load_w=2000,
    battery=Battery(Chemistry.LFP),
    max_discharge_w=5000,
    max_charge_w=5000,
)
RESERVE = 10 + 100 * (2000 * 3 / 0.95) / 19200


def at(local: str) -> float:
    return parse_time(local + "+08:00")


PEAK = "2024-07-15T10:00:00"
CRITICAL = "2024-07-15T12:30:00"
VALLEY = "2024-07-15T23:00:00"
FLAT = "2024-07-15T07:00:00"

CASES: list[
    tuple[str, dict[str, Any], dict[str, Any], str, FleetDirective | None, str, str, float]
] = [
    # (id, state changes, policy changes, time, directive, mode, code, limit W)
    ("disabled", {}, {"enabled": False}, PEAK, None, "auto", "disabled", 0),
    ("mains absent", {"mains_present": False}, {}, PEAK, None, "auto", "mains_absent", 0),
    ("peak shaves the load", {}, {}, PEAK, None, "peak_shave", "shave", 2000),
    ("battery limit binds", {"max_discharge_w": 1500}, {}, PEAK, None, "peak_shave", "shave", 1500),
    ("policy limit binds", {}, {"max_discharge_w": 1000}, PEAK, None, "peak_shave", "shave", 1000),
    ("critical peak shaves", {}, {}, CRITICAL, None, "peak_shave", "shave", 2000),
    ("critical only", {}, {"shave_periods": ["critical_peak"]}, PEAK, None, "auto", "idle", 0),
    ("start needs margin", {"soc_pct": 44}, {}, PEAK, None, "auto", "at_reserve", 0),
    (
        "ongoing shave runs to reserve",
        {"soc_pct": 44, "mode": BatteryMode.PEAK_SHAVE},
        {},
        PEAK,
        None,
        "peak_shave",
        "shave",
        2000,
    ),
    (
        "stop at reserve",
        {"soc_pct": 42.8, "mode": BatteryMode.PEAK_SHAVE},
        {},
        PEAK,
        None,
        "auto",
        "at_reserve",
        0,
    ),
    ("huge load: reserve is 100 %", {"load_w": 8000}, {}, PEAK, None, "auto", "at_reserve", 0),
    ("zero load", {"load_w": 0}, {}, PEAK, None, "auto", "no_load", 0),
    (
        "battery full of BMS limits",
        {"soc_pct": 50, "max_charge_w": 0},
        {},
        VALLEY,
        None,
        "auto",
        "no_charge",
        0,
    ),
    ("valley recharge", {"soc_pct": 50}, {}, VALLEY, None, "charge", "recharge", 5000),
    (
        "C-rate binds",
        {"soc_pct": 50, "max_charge_w": 9000},
        {},
        VALLEY,
        None,
        "charge",
        "recharge",
        5760,
    ),
    (
        "policy rate",
        {"soc_pct": 50},
        {"charge_limit_w": 2000},
        VALLEY,
        None,
        "charge",
        "recharge",
        2000,
    ),
    ("charged enough", {"soc_pct": 93}, {}, VALLEY, None, "auto", "charged", 0),
    (
        "charging continues to target",
        {"soc_pct": 93, "mode": BatteryMode.CHARGE},
        {},
        VALLEY,
        None,
        "charge",
        "recharge",
        5000,
    ),
    ("flat holds", {}, {}, FLAT, None, "auto", "idle", 0),
    (
        "lead-acid skipped",
        {"battery": Battery(Chemistry.LEAD_ACID)},
        {},
        PEAK,
        None,
        "auto",
        "uneconomic",
        0,
    ),
    (
        "outage forecast recharges",
        {"outage_forecast": True},
        {},
        PEAK,
        None,
        "charge",
        "unstable",
        5000,
    ),
    ("recent outage recharges", {"outages_recent": 1}, {}, PEAK, None, "charge", "unstable", 5000),
    (
        "threshold 2 ignores one",
        {"outages_recent": 1},
        {"outage_threshold": 2},
        PEAK,
        None,
        "peak_shave",
        "shave",
        2000,
    ),
    (
        "unstable and full",
        {"outages_recent": 3, "soc_pct": 100},
        {},
        PEAK,
        None,
        "auto",
        "unstable",
        0,
    ),
    (
        "unstable, nearly full",
        {"outage_forecast": True, "soc_pct": 98},
        {},
        VALLEY,
        None,
        "auto",
        "unstable",
        0,
    ),
    (
        "DR overrides economics and period",
        {"battery": Battery(Chemistry.LEAD_ACID)},
        {},
        FLAT,
        FleetDirective(discharge_w=1000),
        "peak_shave",
        "demand_response",
        1000,
    ),
    (
        "DR bounded by load",
        {},
        {},
        FLAT,
        FleetDirective(discharge_w=4000),
        "peak_shave",
        "demand_response",
        2000,
    ),
    (
        "DR refused at reserve",
        {"soc_pct": 43},
        {},
        PEAK,
        FleetDirective(discharge_w=1000),
        "auto",
        "at_reserve",
        0,
    ),
    (
        "DR never during instability",
        {"outages_recent": 1},
        {},
        PEAK,
        FleetDirective(discharge_w=1000),
        "charge",
        "unstable",
        5000,
    ),
    (
        "stagger holds the recharge",
        {"soc_pct": 50},
        {},
        VALLEY,
        FleetDirective(charge_not_before=at(VALLEY) + 600),
        "auto",
        "staggered",
        0,
    ),
    (
        "stagger slot started, its rate",
        {"soc_pct": 50},
        {},
        VALLEY,
        FleetDirective(charge_not_before=at(VALLEY) - 1, charge_limit_w=1200),
        "charge",
        "recharge",
        1200,
    ),
    ("winter peak", {}, {}, "2024-12-16T10:00:00", None, "peak_shave", "shave", 2000),
    ("shoulder peak", {}, {}, "2024-04-15T10:00:00", None, "peak_shave", "shave", 2000),
]


@pytest.mark.parametrize(
    ("changes", "policy_changes", "local", "directive", "mode", "code", "limit"),
    [pytest.param(*c[1:], id=c[0]) for c in CASES],
)
def test_planner_table(
    changes: dict[str, Any],
    policy_changes: dict[str, Any],
    local: str,
    directive: FleetDirective | None,
    mode: str,
    code: str,
    limit: float,
) -> None:
    state = dataclasses.replace(BASE, **changes)
    policy = PeakPolicy(**policy_changes)
    d = plan_site(state, policy, TARIFF, at(local), directive=directive)
    assert (d.mode.value, d.code) == (mode, code), d.reason
    got = d.discharge_limit_w if d.mode is BatteryMode.PEAK_SHAVE else d.charge_limit_w
    assert got == pytest.approx(limit)
    assert d.reason


def test_reserve_is_reported() -> None:
    d = plan_site(BASE, PeakPolicy(), TARIFF, at(PEAK))
    assert d.reserve_soc == pytest.approx(RESERVE)
    assert "42.9" in d.reason


def test_charge_target_and_unstable_target() -> None:
    low = dataclasses.replace(BASE, soc_pct=50)
    assert plan_site(low, PeakPolicy(), TARIFF, at(VALLEY)).target_soc == 95
    assert plan_site(low, PeakPolicy(target_soc=80), TARIFF, at(VALLEY)).target_soc == 80
    unstable = dataclasses.replace(low, outage_forecast=True)
    assert plan_site(unstable, PeakPolicy(), TARIFF, at(PEAK)).target_soc == 100


@pytest.mark.parametrize(
    ("decision", "action", "params"),
    [
        (
            Decision(BatteryMode.PEAK_SHAVE, "shave", "", 40, discharge_limit_w=1999.6),
            Action.BATTERY_PEAK_SHAVE,
            {"discharge_limit_w": 1999.6},
        ),
        (
            Decision(BatteryMode.CHARGE, "recharge", "", 40, charge_limit_w=5000, target_soc=95),
            Action.BATTERY_CHARGE,
            {"charge_limit_w": 5000, "target_soc": 95},
        ),
        (Decision(BatteryMode.AUTO, "idle", "", 40), Action.BATTERY_AUTO, {}),
    ],
)
def test_decision_maps_to_wire_action(
    decision: Decision, action: Action, params: dict[str, Any]
) -> None:
    p = decision.params()
    assert p.ACTION is action
    assert p.to_map() == params


@pytest.mark.parametrize(
    "changes",
    [{"target_soc": 5}, {"shave_periods": ["valley"]}, {"efficiency": 0}, {"bogus": 1}],
)
def test_bad_policies_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PeakPolicy(**changes)


@settings(max_examples=300, deadline=None)
@given(
    soc=st.floats(0, 100),
    load=st.floats(0, 10_000),
    cap=st.floats(2_000, 40_000),
    max_dis=st.floats(0, 10_000),
    mode=st.sampled_from(list(BatteryMode)),
    hour=st.integers(0, 23 * 4).map(lambda q: q * 900.0),
    chem=st.sampled_from(list(Chemistry)),
    dr=st.one_of(st.none(), st.floats(0, 20_000).map(lambda w: FleetDirective(discharge_w=w))),
)
def test_never_discharges_at_or_below_reserve(
    soc: float,
    load: float,
    cap: float,
    max_dis: float,
    mode: BatteryMode,
    hour: float,
    chem: Chemistry,
    dr: FleetDirective | None,
) -> None:
    state = SiteState(
        soc_pct=soc,
        capacity_wh=cap,
        load_w=load,
        battery=Battery(chem),
        max_discharge_w=max_dis,
        mode=mode,
    )
    tariff: Tariff = TARIFF
    d = plan_site(state, PeakPolicy(), tariff, at("2024-07-15T00:00:00") + hour, directive=dr)
    if d.mode is BatteryMode.PEAK_SHAVE:
        assert soc > d.reserve_soc
        assert 0 < d.discharge_limit_w <= min(load, max_dis) + 1e-9
    if d.mode is BatteryMode.CHARGE:
        assert d.target_soc is not None and d.target_soc > soc
