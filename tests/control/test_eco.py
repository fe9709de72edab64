"""Rectifier ECO rules as in DOMAIN.md: entry point, exit currents, lockout after 5 switches."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from protocols.control.eco import (
    EcoInputs,
    EcoState,
    charge_exit_a,
    decide_eco,
    discharge_exit_a,
    eco_modules_on,
)

# three 2.9 kW modules; 2 kW is 23 % of the plant, well below the 45 % saving point
IN = EcoInputs(requested=True, load_w=2000, plant_capacity_w=8700, battery_capacity_ah=200)
ON = EcoState(active=True)
OFF = EcoState(active=False)


@pytest.mark.parametrize(
    ("capacity_ah", "charge_a", "discharge_a"),
    [(100, 5, 2), (400, 5, 2), (1000, 5, 3), (2000, 10, 6)],
)
def test_exit_thresholds(capacity_ah: float, charge_a: float, discharge_a: float) -> None:
    assert charge_exit_a(capacity_ah) == pytest.approx(charge_a)
    assert discharge_exit_a(capacity_ah) == pytest.approx(discharge_a)


@pytest.mark.parametrize(
    ("state", "changes", "active", "reason"),
    [
        pytest.param(OFF, {}, True, "enter ECO", id="enters"),
        pytest.param(OFF, {"load_w": 3915}, False, "saving point", id="at 45 % no entry"),
        pytest.param(OFF, {"load_w": 3914}, True, "enter", id="just below 45 %"),
        pytest.param(ON, {"load_w": 5000}, False, "saving point", id="load rises: leave"),
        pytest.param(OFF, {"requested": False}, False, "not requested", id="not requested"),
        pytest.param(ON, {"requested": False}, False, "leave ECO", id="request withdrawn"),
        pytest.param(ON, {"battery_current_a": 6}, False, "charging at 6.0 A", id="charge 6 A"),
        pytest.param(ON, {"battery_current_a": 4}, True, "ECO on", id="charge 4 A stays"),
        pytest.param(ON, {"battery_current_a": -2.5}, False, "discharging", id="discharge 2.5 A"),
        pytest.param(ON, {"battery_current_a": -1.5}, True, "ECO on", id="discharge 1.5 A"),
        pytest.param(
            ON,
            {"battery_capacity_ah": 2000, "battery_current_a": 8},
            True,
            "ECO on",
            id="big bank 8 A stays",
        ),
        pytest.param(
            ON,
            {"battery_capacity_ah": 2000, "battery_current_a": 11},
            False,
            "charging",
            id="big bank 11 A",
        ),
        pytest.param(ON, {"ac_ok": False}, False, "AC failure", id="AC failure"),
        pytest.param(ON, {"rectifier_fault": True}, False, "rectifier fault", id="fault"),
        pytest.param(EcoState(False, (), 1000.0), {}, False, "locked out", id="locked out"),
        pytest.param(EcoState(False, (), 400.0), {}, True, "enter", id="lockout over"),
    ],
)
def test_eco_table(state: EcoState, changes: dict[str, Any], active: bool, reason: str) -> None:
    r = decide_eco(state, dataclasses.replace(IN, **changes), 500.0)
    assert r.active is active
    assert r.state.active is active
    assert reason in r.reason
    assert not r.alarm


def test_five_transitions_in_an_hour_alarm_and_lock_out_for_a_day() -> None:
    state = OFF
    high = dataclasses.replace(IN, load_w=5000)
    results = []
    for i in range(5):
        r = decide_eco(state, IN if i % 2 == 0 else high, i * 600.0)
        results.append(r)
        state = r.state
    assert [r.active for r in results] == [True, False, True, False, False]
    assert [r.alarm for r in results] == [False, False, False, False, True]
    assert state.locked_until == 2400.0 + 86400
    # conditions are fine, but the lockout holds for 24 h, without a second alarm
    r = decide_eco(state, IN, 3600.0)
    assert (r.active, r.alarm) == (False, False)
    r = decide_eco(r.state, IN, 2400.0 + 86400 - 1)
    assert r.active is False
    r = decide_eco(r.state, IN, 2400.0 + 86400)
    assert r.active is True and "enter" in r.reason


def test_transitions_spread_over_more_than_an_hour_do_not_lock() -> None:
    state = OFF
    high = dataclasses.replace(IN, load_w=5000)
    for i in range(12):
        r = decide_eco(state, IN if i % 2 == 0 else high, i * 1000.0)  # 4 per hour at most
        assert not r.alarm
        state = r.state
    assert state.locked_until is None


@pytest.mark.parametrize(
    ("load_w", "installed", "expected"),
    [(2000, 4, 3), (0, 4, 1), (1450, 4, 2), (10000, 4, 4), (500, 1, 1)],
)
def test_modules_on(load_w: float, installed: int, expected: int) -> None:
    # 2.9 kW modules at their 50 % sweet spot carry 1.45 kW each, plus one redundant
    assert eco_modules_on(load_w, 2900, installed) == expected
