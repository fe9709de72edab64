"""Site physics over simulated days: energy balance, SOC, outages, breakers, determinism."""

from __future__ import annotations

import pytest

from protocols.clock import parse_time
from simulators.physics import BatteryMode, SiteModel
from simulators.physics.traffic import TrafficCurve
from simulators.spec import (
    BatterySpec,
    Chemistry,
    OutageEvent,
    RandomOutages,
    SiteSpec,
    TrafficProfile,
    TrafficSpec,
)

T0 = parse_time("2025-07-01T00:00:00+08:00")  # local midnight, Asia/Shanghai
H = 3600.0


def run_day_with_peak_shaving(spec: SiteSpec) -> SiteModel:
    m = SiteModel(spec, start=T0)
    m.battery.discharge_power_limit_w = 2500.0
    m.advance_to(T0 + 10 * H)
    m.battery.mode = BatteryMode.DISCHARGE
    m.advance_to(T0 + 14 * H)
    m.battery.mode = BatteryMode.AUTO
    m.advance_to(T0 + 24 * H)
    return m


@pytest.mark.parametrize("chemistry", [Chemistry.LFP, Chemistry.LEAD_ACID])
def test_energy_balance_over_a_day(chemistry: Chemistry) -> None:
    spec = SiteSpec(battery=BatterySpec(chemistry=chemistry, capacity_ah=300))
    m = run_day_with_peak_shaving(spec)
    tot = m.totals
    # Every flow is non-trivial.
    assert 70 < tot.dc_load_kwh < 110
    assert tot.batt_discharge_kwh > 5 and tot.batt_charge_kwh > 5
    assert tot.unserved_kwh < 1e-9
    # Grid = rectifier input + AC + other AC loads, and matches the meter's own counter.
    assert tot.import_kwh == pytest.approx(tot.rect_in_kwh + tot.aircon_kwh + tot.other_ac_kwh)
    assert m.meter.import_energy_kwh == pytest.approx(tot.import_kwh, rel=1e-9)
    # DC bus: rectifier output = load + battery charge - battery discharge.
    net_batt = tot.batt_charge_kwh - tot.batt_discharge_kwh
    assert tot.rect_out_kwh == pytest.approx(tot.dc_load_kwh + net_batt, rel=1e-6)
    # Rectifier losses: a plausible efficiency for the day.
    eff = tot.rect_out_kwh / tot.rect_in_kwh
    assert 0.94 < eff < 0.97
    # Battery: what went in minus what came out minus losses is what is stored now.
    stored_kwh = (m.battery.soc - 100.0) / 100.0 * m.battery.capacity_ah * m.battery.nominal_v / 1e3
    assert tot.batt_charge_kwh - tot.batt_discharge_kwh - tot.batt_loss_kwh == pytest.approx(
        stored_kwh, abs=0.03 * tot.batt_discharge_kwh
    )
    # The whole site: grid = (DC load + net battery energy) / eff + AC + other.
    expected = (tot.dc_load_kwh + net_batt) / eff + tot.aircon_kwh + tot.other_ac_kwh
    assert tot.import_kwh == pytest.approx(expected, rel=1e-6)


def test_round_trip_efficiency_by_chemistry() -> None:
    res = {}
    for chem in Chemistry:
        m = SiteModel(SiteSpec(battery=BatterySpec(chemistry=chem, capacity_ah=300)), start=T0)
        m.battery.mode = BatteryMode.DISCHARGE
        m.battery.discharge_power_limit_w = 3000
        m.advance_to(T0 + 3 * H)
        soc_low = m.battery.soc
        m.battery.mode = BatteryMode.AUTO
        m.advance_to(T0 + 20 * H)
        assert m.battery.soc > 99.5 > soc_low
        res[chem] = m.totals.batt_discharge_kwh / m.totals.batt_charge_kwh
    assert 0.9 < res[Chemistry.LFP] < 0.98
    assert 0.7 < res[Chemistry.LEAD_ACID] < res[Chemistry.LFP]


def test_soc_stays_in_range_and_follows_current() -> None:
    spec = SiteSpec(
        battery=BatterySpec(capacity_ah=100, initial_soc=60),
        events=(OutageEvent(at=T0 + 1 * H, duration_s=4 * H),),
    )
    m = SiteModel(spec, start=T0)
    socs = []
    for _ in range(int(20 * H / 5)):
        m.step(5.0, m.t + 5.0)
        socs.append(m.battery.soc)
        if m.battery.soc >= 99.9:
            break
    assert all(0.0 <= s <= 100.0 for s in socs)
    assert min(socs) < 2.0  # the 4 h outage emptied a 100 Ah pack down to its cut-off voltage
    # SOC moved by exactly the integrated current while the pack was not clamped.
    assert m.dark is False
    assert any("site dark" in e.message for e in m.log)
    assert any("low-voltage disconnect" in e.message for e in m.log)
    assert m.totals.dark_s > 0
    assert m.totals.unserved_kwh > 0


def test_soc_integral_matches_current() -> None:
    spec = SiteSpec(battery=BatterySpec(capacity_ah=200, initial_soc=50))
    m = SiteModel(spec, start=T0)
    m.battery.mode = BatteryMode.DISCHARGE
    m.battery.discharge_power_limit_w = 2000
    expected = 50.0
    for k in range(int(3.5 * H / 10)):
        if k == int(2 * H / 10):
            m.battery.mode = BatteryMode.AUTO
        m.step(10.0, m.t + 10.0)
        i = m.battery.current_a
        ah = i * 10.0 / 3600.0 * (0.99 if i > 0 else 1.0)  # coulombic efficiency on charge
        expected += ah / m.battery.capacity_ah * 100.0  # capacity shrinks with SOH
    assert m.battery.soc < 99.0  # still charging: no clamping happened
    assert m.battery.soh < 100.0
    assert m.battery.soc == pytest.approx(expected, abs=1e-6)


def test_outage_drains_at_load_over_voltage() -> None:
    spec = SiteSpec(
        battery=BatterySpec(capacity_ah=400),
        events=(OutageEvent(at=T0 + 2 * H, duration_s=2 * H),),
    )
    m = SiteModel(spec, start=T0)
    m.advance_to(T0 + 2 * H)
    assert m.battery.soc == pytest.approx(100.0)
    soc_before = m.battery.soc
    ah = 0.0
    while m.t < T0 + 3 * H - 1e-6:
        m.step(5.0, m.t + 5.0)
        assert not m.mains
        assert m.meter.import_power_w == 0.0
        assert m.rectifier.output_power_w == 0.0
        assert m.dc_load_w > 2000
        ah += m.dc_load_w / m.battery.voltage * 5.0 / 3600.0
    drop = soc_before - m.battery.soc
    assert drop == pytest.approx(ah / 400.0 * 100.0, rel=0.01)
    assert 12 < drop < 30  # ≈ 2.8 kW (night traffic) from a 20 kWh pack for an hour
    assert m.battery.current_a < -50
    m.advance_to(T0 + 5 * H)
    assert m.mains and m.battery.current_a > 0  # recharging after the outage


def test_aircon_stops_in_outage_and_room_warms() -> None:
    spec = SiteSpec(events=(OutageEvent(at=T0 + 12 * H, duration_s=3 * H),))
    m = SiteModel(spec, start=T0)
    m.advance_to(T0 + 12 * H)
    before = m.aircon.room_c
    m.advance_to(T0 + 15 * H)
    assert m.aircon.power_w == 0.0
    assert m.aircon.room_c > before + 5


def test_traffic_curve_shape() -> None:
    from simulators.physics.localtime import LocalHour

    for profile in TrafficProfile:
        curve = TrafficCurve(
            TrafficSpec(profile=profile, noise=0.0), seed=3, local=LocalHour("Asia/Shanghai")
        )
        vals = [curve.at(T0 + h * H) for h in range(24)]
        night = min(vals[1:6])
        peak = max(vals)
        assert 0.2 <= night / peak <= 0.4, profile
        assert vals.index(peak) in range(8, 23)


def test_per_site_variation_is_seeded() -> None:
    def day(seed: int) -> float:
        m = SiteModel(SiteSpec(seed=seed), start=T0)
        m.advance_to(T0 + 24 * H, max_step=30)
        return m.totals.dc_load_kwh

    assert day(1) == day(1)
    assert day(1) != day(2)


def test_step_size_barely_matters() -> None:
    def day(step: float) -> float:
        m = SiteModel(SiteSpec(), start=T0)
        m.advance_to(T0 + 12 * H, max_step=step)
        return m.totals.import_kwh

    assert day(2.0) == pytest.approx(day(30.0), rel=0.02)


def test_random_outages_happen_and_are_deterministic() -> None:
    spec = SiteSpec(events=(RandomOutages(per_day=2.0, mean_duration_s=1800),))
    a = SiteModel(spec, start=T0)
    outs = a.events.random_outages(T0, T0 + 10 * 86400)
    assert 5 <= len(outs) <= 40
    assert outs == SiteModel(spec, start=T0).events.random_outages(T0, T0 + 10 * 86400)
    start, end = outs[0]
    assert not a.events.at((start + end) / 2).mains
    assert a.events.at(start - 1).mains or any(s < start - 1 < e for s, e in outs)


def test_grid_import_is_realistic_for_a_5g_site() -> None:
    m = SiteModel(SiteSpec(), start=T0)
    m.advance_to(T0 + 4 * H)
    night = m.dc_load_w
    m.advance_to(T0 + 20.5 * H)
    evening = m.dc_load_w
    assert 2500 < night < 3500
    assert 3800 < evening < 4900
    assert m.grid_import_w > evening
