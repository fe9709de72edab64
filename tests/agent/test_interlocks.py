"""Interlocks as tables: what is refused, and what the agent undoes by itself."""

from __future__ import annotations

import pytest

from agent.config import InterlocksConfig
from agent.interlocks import (
    ChannelMap,
    DormantHold,
    SiteFacts,
    SiteView,
    check,
    dormant_setpoint,
    reserve_of,
    settle,
    watch,
)
from protocols.messages import (
    AcSetpoint,
    BatteryAuto,
    BreakerSet,
    Charge,
    Dormant,
    Params,
    PeakShave,
    RectifierEco,
    Wake,
)

LIMITS = InterlocksConfig(
    battery_capacity_wh=19_200,
    critical_channels={"brk": (1, 2)},
    coverage_channels={"brk": (3, 4)},
    capacity_channels={"brk": (5, 6, 7), "brk2": (1,)},
)
FACTS = SiteFacts.build(LIMITS, ChannelMap.build([("brk", 8), ("brk2", 4)]))
NOW = 1_700_000_000.0
# 4 kW for 3 h through 0.95 = 12.63 kWh = 65.8 % of 19.2 kWh, plus the 10 % floor: 75.8 %.
VIEW = SiteView(
    now=NOW,
    soc=90.0,
    soh=100.0,
    load_w=4000.0,
    mains_present=True,
    room_temp_c=27.0,
    ac_setpoint_c=25.0,
    coverage_load_w=1000.0,
)


def with_(**kw: object) -> SiteView:
    fields = {f: getattr(VIEW, f) for f in VIEW.__slots__}
    fields.update(kw)
    return SiteView(**fields)


def test_reserve_uses_the_shared_formula() -> None:
    assert reserve_of(VIEW, FACTS) == pytest.approx(10 + 100 * 4000 * 3 / 0.95 / 19_200)
    assert reserve_of(with_(soh=50.0), FACTS) == 100.0  # half the pack cannot hold 3 h at all
    assert reserve_of(with_(load_w=1000.0, soh=50.0), FACTS) == pytest.approx(
        10 + 100 * 3000 / 0.95 / 9600
    )
    assert reserve_of(with_(load_w=None), FACTS) is None


def test_channel_map_numbers_breakers_in_order() -> None:
    cm = FACTS.channels
    assert cm.resolve(1) == ("brk", 1) and cm.resolve(9) == ("brk2", 1)
    assert cm.resolve(13) is None and cm.resolve(0) is None
    assert cm.number(("brk2", 1)) == 9


@pytest.mark.parametrize(
    ("params", "view", "reason"),
    [
        (PeakShave(2000), VIEW, ""),
        (PeakShave(2000), with_(soc=75.0), "below_reserve"),
        (PeakShave(2000), with_(soc=75.78), "below_reserve"),
        (PeakShave(2000), with_(soc=76.0), ""),
        (PeakShave(2000), with_(soc=None), "soc_unknown"),
        (PeakShave(2000), with_(load_w=None), "load_unknown"),
        (PeakShave(2000), with_(mains_present=False), "mains_failure"),
        (PeakShave(2000), with_(soc=90.0, load_w=5500.0), "below_reserve"),  # load rose
        (Charge(1000, 95), with_(soc=20.0), ""),
        (BatteryAuto(), with_(soc=None), ""),
        (BreakerSet(1, False), VIEW, "critical_channel"),
        (BreakerSet(2, False), VIEW, "critical_channel"),
        (BreakerSet(1, True), VIEW, ""),
        (BreakerSet(5, False), VIEW, ""),
        (BreakerSet(40, False), VIEW, "unknown_channel"),
        (Dormant((5, 6), True, 2.0), VIEW, ""),
        (Dormant((5, 9), True, 2.0), VIEW, ""),
        (Dormant((5, 1), True, 2.0), VIEW, "critical_channel"),
        (Dormant((3,), True, 2.0), VIEW, "coverage_channel"),
        (Dormant((8,), True, 2.0), VIEW, "not_capacity"),
        (Dormant((5,), True, 2.0), with_(mains_present=False), "mains_failure"),
        (Dormant((5,), True, 2.0), with_(room_temp_c=35.0), "room_hot"),
        (Dormant((5,), True, 2.0), with_(room_temp_c=None), "temp_unknown"),
        (Dormant((5,), True, 2.0, until=int(NOW * 1000) - 1), VIEW, "window_over"),
        (Wake(), with_(mains_present=False), ""),
        (AcSetpoint(26.0), VIEW, ""),
        (AcSetpoint(17.0), VIEW, "ac_bounds"),
        (AcSetpoint(33.0), VIEW, "ac_bounds"),
        (AcSetpoint(30.0), with_(room_temp_c=36.0), "room_hot"),
        (AcSetpoint(22.0), with_(room_temp_c=36.0), ""),
        (RectifierEco(True), VIEW, ""),
        (RectifierEco(True), with_(mains_present=False), "mains_failure"),
        (RectifierEco(False), with_(mains_present=False), ""),
    ],
)
def test_check(params: Params, view: SiteView, reason: str) -> None:
    verdict = check(params, view, FACTS)
    assert verdict.allowed is (reason == ""), verdict
    assert verdict.reason == reason


def test_missing_devices_refuse_their_actions() -> None:
    bare = SiteFacts.build(
        LIMITS, ChannelMap(), has_battery=False, has_aircon=False, has_rectifier=False
    )
    for p in (PeakShave(1.0), Charge(1.0, 50), AcSetpoint(25), RectifierEco(True)):
        assert check(p, VIEW, bare).reason == "no_device"


@pytest.mark.parametrize(
    ("view", "discharging", "reasons"),
    [
        (VIEW, True, []),
        (with_(soc=75.0), True, ["reserve_reached"]),
        (with_(soc=75.0), False, []),
        (with_(soc=None), True, ["soc_unknown"]),
        (with_(soc=70.0, mains_present=False), True, []),
    ],
)
def test_watch_stops_discharge_at_reserve(
    view: SiteView, discharging: bool, reasons: list[str]
) -> None:
    forced = watch(view, FACTS, discharging=discharging, dormant=None)
    assert [f.reason for f in forced] == reasons
    assert all(isinstance(f.params, BatteryAuto) for f in forced)


HOLD = DormantHold(until_ms=int(NOW * 1000) + 3_600_000, coverage_at_entry_w=1000.0)


@pytest.mark.parametrize(
    ("view", "reason"),
    [
        (VIEW, None),
        (with_(mains_present=False), "mains_failure"),
        (with_(room_temp_c=35.0), "room_hot"),
        (with_(now=NOW + 3600), "window_end"),
        (with_(coverage_load_w=1250.0), None),
        (with_(coverage_load_w=1350.0), "load_rise"),
        # Blind: an input a dormant exit depends on has no good reading (for the max age).
        (with_(coverage_load_w=None), "inputs_unknown"),
        (with_(room_temp_c=None), "inputs_unknown"),
        (with_(mains_present=None), "inputs_unknown"),
    ],
)
def test_watch_leaves_dormant(view: SiteView, reason: str | None) -> None:
    forced = watch(view, FACTS, discharging=False, dormant=HOLD)
    assert [f.reason for f in forced] == ([] if reason is None else [reason])
    assert all(isinstance(f.params, Wake) for f in forced)


def test_unknown_inputs_wake_only_a_warm_agent_and_only_for_devices_the_site_has() -> None:
    blind = with_(room_temp_c=None, mains_present=None, coverage_load_w=None)
    # Just started: nothing polled yet is no silent device.
    assert watch(blind, FACTS, discharging=False, dormant=HOLD, warm=False) == []
    forced = watch(blind, FACTS, discharging=False, dormant=HOLD)
    assert [f.reason for f in forced] == ["inputs_unknown"]
    assert "room temperature, mains state, coverage load" in forced[0].detail
    no_meter = SiteFacts.build(LIMITS, FACTS.channels, has_mains=False)
    assert watch(with_(mains_present=None), no_meter, discharging=False, dormant=HOLD) == []


def test_load_rise_waits_for_the_settled_baseline() -> None:
    settling = DormantHold(HOLD.until_ms, None, settle_until_ms=int(NOW * 1000) + 120_000)
    risen = with_(coverage_load_w=1600.0, coverage_t_ms=int(NOW * 1000) + 60_000)
    assert watch(risen, FACTS, discharging=False, dormant=settling) == []
    assert settle(settling, risen) is None  # a reading from before the settle time
    later = with_(coverage_load_w=1600.0, coverage_t_ms=int(NOW * 1000) + 120_000)
    settled = settle(settling, later)
    assert settled is not None and settled.coverage_at_entry_w == 1600.0
    assert not settled.settling
    assert watch(later, FACTS, discharging=False, dormant=settled) == []
    assert [
        f.reason
        for f in watch(with_(coverage_load_w=2100.0), FACTS, discharging=False, dormant=settled)
    ] == ["load_rise"]


def test_dormant_setpoint_clamped_to_bounds() -> None:
    assert dormant_setpoint(VIEW, FACTS, 2.0) == 27.0
    assert dormant_setpoint(with_(ac_setpoint_c=31.0), FACTS, 4.0) == 32.0
    assert dormant_setpoint(with_(ac_setpoint_c=None), FACTS, 1.0) == 26.0
