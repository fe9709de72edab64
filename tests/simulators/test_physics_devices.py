"""Device physics one by one: rectifier efficiency and ECO, breaker actuation, AC and room."""

from __future__ import annotations

import pytest

from protocols.clock import parse_time
from simulators.errors import RefusedError
from simulators.physics import BatteryMode, SiteModel
from simulators.physics.aircon import Aircon, cop
from simulators.physics.breaker import TripReason
from simulators.physics.rectifier import module_efficiency
from simulators.spec import (
    AirconSpec,
    ClimateSpec,
    EventSpec,
    HeatWaveEvent,
    ModuleFailureEvent,
    OutageEvent,
    RectifierSpec,
    SiteSpec,
)

T0 = parse_time("2025-07-01T00:00:00+08:00")
H = 3600.0


# -- rectifier ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("x", "lo", "hi"),
    [
        (0.05, 0.85, 0.92),
        (0.1, 0.92, 0.95),
        (0.4, 0.96, 0.97),
        (0.5, 0.96, 0.97),
        (1.0, 0.95, 0.965),
    ],
)
def test_module_efficiency_curve(x: float, lo: float, hi: float) -> None:
    assert lo <= module_efficiency(x) <= hi


def test_efficiency_peaks_between_40_and_60_percent() -> None:
    xs = [i / 100 for i in range(1, 101)]
    best = max(xs, key=module_efficiency)
    assert 0.4 <= best <= 0.6
    assert 0.96 <= module_efficiency(best) <= 0.97


def eco_site(save_point: float = 0.45) -> SiteModel:
    spec = SiteSpec(rectifier=RectifierSpec(modules=6, eco_enable=True, eco_save_point=save_point))
    return SiteModel(spec, start=T0)


def test_eco_hibernates_surplus_modules_and_saves_energy() -> None:
    on = eco_site()
    off = SiteModel(SiteSpec(rectifier=RectifierSpec(modules=6)), start=T0)
    for m in (on, off):
        m.advance_to(T0 + 4 * H)
    assert on.rectifier.eco_active
    # ≈ 3 kW on 6 × 2.7 kW modules: 3 awake (load at ≈ 50 % + one redundant), the rest asleep.
    assert len(on.rectifier.asleep) >= 2
    assert len(on.rectifier.awake) + len(on.rectifier.asleep) == 6
    assert not off.rectifier.asleep
    assert on.rectifier.efficiency > off.rectifier.efficiency + 0.003
    assert on.totals.rect_in_kwh < off.totals.rect_in_kwh
    assert on.totals.dc_load_kwh == pytest.approx(off.totals.dc_load_kwh)


def test_eco_not_entered_above_the_saving_point() -> None:
    m = eco_site(save_point=0.15)  # 3 kW is above 15 % of 16 kW
    m.advance_to(T0 + 2 * H)
    assert not m.rectifier.eco_active
    assert not m.rectifier.asleep


@pytest.mark.parametrize("cause", ["charging", "discharging", "ac_failure", "module_fault"])
def test_eco_exit_conditions(cause: str) -> None:
    events: tuple[EventSpec, ...] = ()
    if cause == "ac_failure":
        events = (OutageEvent(at=T0 + 2 * H, duration_s=H),)
    if cause == "module_fault":
        events = (ModuleFailureEvent(at=T0 + 2 * H, module=5),)
    m = SiteModel(
        SiteSpec(rectifier=RectifierSpec(modules=6, eco_enable=True), events=events),
        start=T0,
    )
    m.advance_to(T0 + 2 * H - 10)
    assert m.rectifier.eco_active
    if cause == "charging":
        m.battery.soc = 80.0  # the pack now takes 50 A (> max(0.005 C, 5 A) = 5 A)
    if cause == "discharging":
        m.battery.mode = BatteryMode.DISCHARGE
        m.battery.discharge_power_limit_w = 500  # ≈ 9.5 A > max(0.003 C, 2 A) = 2 A
    m.advance_to(T0 + 2 * H + 30)
    assert not m.rectifier.eco_active
    assert not m.rectifier.asleep
    assert any("ECO" in e.message for e in m.log)


def test_small_battery_currents_do_not_end_eco() -> None:
    m = eco_site()
    m.advance_to(T0 + 2 * H)
    m.battery.mode = BatteryMode.DISCHARGE
    m.battery.discharge_power_limit_w = 50  # ≈ 1 A < 2 A
    m.advance_to(T0 + 2.5 * H)
    assert m.rectifier.eco_active


def test_five_transitions_in_an_hour_lock_eco_out_for_a_day() -> None:
    m = eco_site()
    m.advance_to(T0 + 1 * H)
    assert m.rectifier.eco_active
    for _ in range(3):  # toggle: exit on discharge, re-enter when it stops
        m.battery.mode = BatteryMode.DISCHARGE
        m.battery.discharge_power_limit_w = 500
        m.advance_to(m.t + 60)
        m.battery.mode = BatteryMode.CHARGE
        m.battery.target_soc = 0  # hold: neither charge nor discharge
        m.advance_to(m.t + 60)
    assert m.rectifier.eco_alarm
    assert not m.rectifier.eco_active
    assert m.rectifier.eco_locked_out
    assert any("locked out" in e.message for e in m.log)
    m.advance_to(m.t + 23 * H)
    assert not m.rectifier.eco_active and m.rectifier.eco_locked_out
    m.advance_to(m.t + 1.5 * H)
    assert m.rectifier.eco_active and not m.rectifier.eco_alarm


def test_module_failure_keeps_plant_running_on_the_others() -> None:
    spec = SiteSpec(events=(ModuleFailureEvent(at=T0 + H, module=0, duration_s=2 * H),))
    m = SiteModel(spec, start=T0)
    m.advance_to(T0 + 2 * H)
    assert m.rectifier.failed == {0}
    assert len(m.rectifier.awake) == 3
    assert m.totals.unserved_kwh == 0
    m.advance_to(T0 + 4 * H)
    assert not m.rectifier.failed


def test_load_beyond_rectifier_capacity_is_carried_by_the_battery() -> None:
    spec = SiteSpec(rectifier=RectifierSpec(modules=1))  # 50 A ≈ 2.7 kW for a ≈ 3 kW load
    m = SiteModel(spec, start=T0)
    m.advance_to(T0 + 1 * H)
    assert m.battery.current_a < -2
    assert m.rectifier.output_current_a == pytest.approx(50.0, rel=1e-3)
    assert m.totals.unserved_kwh == 0


# -- breaker -----------------------------------------------------------------------------------
def test_opening_a_breaker_removes_its_load_after_the_delay() -> None:
    m = SiteModel(SiteSpec(), start=T0)
    m.advance_to(T0 + 600, max_step=1)
    ch = 3  # aau_capacity_1
    before = m.dc_load_w
    ch_power = m.breaker.channels[ch].power_w
    assert ch_power > 300
    m.breaker.command(ch, close=False)
    m.advance_to(m.t + 0.5, max_step=0.5)
    assert m.breaker.channels[ch].closed  # still moving
    assert m.breaker.channels[ch].power_w > 300
    m.advance_to(m.t + 0.6, max_step=0.1)
    assert not m.breaker.channels[ch].closed
    assert m.breaker.channels[ch].power_w == 0.0
    assert m.breaker.channels[ch].current_a == 0.0
    # The site's DC load dropped by about the channel's draw (the anchor layer takes its traffic).
    assert before - m.dc_load_w > 0.5 * ch_power
    # Closing takes 2 s.
    m.breaker.command(ch, close=True)
    m.advance_to(m.t + 1.5, max_step=0.5)
    assert not m.breaker.channels[ch].closed
    m.advance_to(m.t + 0.6, max_step=0.1)
    assert m.breaker.channels[ch].closed
    assert m.breaker.channels[ch].power_w > 300


def test_capacity_layer_off_raises_anchor_load() -> None:
    m = SiteModel(SiteSpec(), start=T0)
    m.advance_to(T0 + 3 * H)
    anchor = m.breaker.channels[2].power_w
    m.breaker.command(3, close=False)
    m.breaker.command(4, close=False)
    m.advance_to(m.t + 10)
    assert m.breaker.channels[2].power_w > anchor * 1.1


def test_locked_breaker_refuses_remote_commands() -> None:
    m = SiteModel(SiteSpec(), start=T0)
    m.breaker.locked = True
    with pytest.raises(RefusedError):
        m.breaker.command(3, close=False)
    m.advance_to(T0 + 10)
    assert m.breaker.channels[3].closed


def test_energy_counters_and_trip() -> None:
    m = SiteModel(SiteSpec(), start=T0)
    m.advance_to(T0 + H)
    e = [c.energy_kwh for c in m.breaker.channels]
    assert e[2] == pytest.approx(m.breaker.channels[2].power_w / 1000, rel=0.2)
    assert sum(e) == pytest.approx(m.totals.dc_load_kwh, rel=1e-6)
    m.breaker.trip(5, TripReason.SHORT_CIRCUIT)
    m.advance_to(m.t + 5)
    assert m.breaker.channels[5].tripped and m.breaker.channels[5].power_w == 0
    m.breaker.command(5, close=True)  # a remote close resets the trip
    m.advance_to(m.t + 3)
    assert m.breaker.channels[5].closed and not m.breaker.channels[5].tripped


# -- air-conditioner ---------------------------------------------------------------------------
def test_cop_falls_as_outdoor_temperature_rises() -> None:
    spec = AirconSpec()
    cops = [cop(spec, t) for t in (15, 25, 35, 45)]
    assert cops == sorted(cops, reverse=True)
    assert 2.0 < cop(spec, 35) < 3.5


def test_aircon_power_is_cooling_over_cop_plus_fan() -> None:
    ac = Aircon(AirconSpec(initial_room_c=35.0))
    ac.step(10, heat_w=3000, outdoor_c=35.0, sun_w=0)
    assert ac.compressor
    assert ac.power_w == pytest.approx(5000 / ac.cop + 60)
    hot = Aircon(AirconSpec(initial_room_c=35.0))
    hot.step(10, heat_w=3000, outdoor_c=45.0, sun_w=0)
    assert hot.power_w > ac.power_w


def test_aircon_holds_setpoint_with_hysteresis() -> None:
    m = SiteModel(SiteSpec(), start=T0)
    temps = []
    while m.t < T0 + 24 * H:
        m.step(10, m.t + 10)
        temps.append(m.aircon.room_c)
    assert max(temps[360:]) < 27.0 + 1.5
    assert min(temps[360:]) > 27.0 - 1.5
    assert 0.1 < m.aircon.runtime_s / (24 * H) < 0.9


def test_raising_the_setpoint_saves_ac_energy() -> None:
    def ac_kwh(setpoint: float) -> float:
        m = SiteModel(SiteSpec(), start=T0)
        m.aircon.setpoint_c = setpoint
        m.advance_to(T0 + 24 * H, max_step=10)
        return m.totals.aircon_kwh

    assert ac_kwh(29.0) < ac_kwh(25.0)


def test_heat_wave_with_ac_off_raises_high_temperature_alarm() -> None:
    spec = SiteSpec(
        climate=ClimateSpec(mean_c=32),
        events=(HeatWaveEvent(at=T0 + 10 * H, duration_s=8 * H, delta_c=8),),
    )
    m = SiteModel(spec, start=T0)
    m.advance_to(T0 + 10 * H)
    m.aircon.on = False
    m.advance_to(T0 + 16 * H)
    assert m.aircon.outdoor_c > 38
    assert m.aircon.alarm_high_temp
    m.aircon.on = True
    m.advance_to(T0 + 24 * H)
    assert not m.aircon.alarm_high_temp


def test_dc_aircon_behind_a_breaker_channel() -> None:
    from simulators.spec import BreakerSpec, ChannelSpec, LoadKind, default_channels

    channels = (*default_channels()[:7], ChannelSpec(name="dc_aircon", kind=LoadKind.AIRCON))
    spec = SiteSpec(
        breaker=BreakerSpec(channels=channels),
        aircon=AirconSpec(supply="dc", cooling_w=3000, initial_room_c=32.0),
    )
    m = SiteModel(spec, start=T0 + 12 * H)
    m.advance_to(m.t + 60)
    assert m.aircon.compressor and m.aircon.power_w > 500
    # The AC is a DC load now: on the breaker's channel 8, not on the meter directly.
    assert m.breaker.channels[7].power_w == pytest.approx(m.aircon.power_w)
    assert m.totals.aircon_kwh > 0
    m.breaker.command(7, close=False)
    m.advance_to(m.t + 120)
    assert m.aircon.power_w == 0.0 and not m.aircon.powered
    assert m.breaker.channels[7].power_w == 0.0
