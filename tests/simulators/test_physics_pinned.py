"""A day of four fleet sites pinned to the figures the physics gave when they were recorded.

The physics is made cheaper from time to time (the 1,000-site fleet steps it millions of times a
simulated day); such a change must not change what it computes. These figures were recorded
before the first such optimisation: final state of charge, health, temperatures, energy counters
and ECO state after one simulated day at the fleet's 30 s step, with the scenario's events (the
mountain region's one-hour outage at 15:00, random outages) and, for two sites, peak shaving
10:00-14:00. A change that moves the physics on purpose re-records them and says so.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols.clock import parse_time
from simulators.physics import BatteryMode, SiteModel
from simulators.scenario import FleetScenario, load_scenario

REPO = Path(__file__).resolve().parents[2]
T0 = parse_time("2025-07-01T00:00:00+08:00")
H = 3600.0
STEP_S = 30.0

PINNED: dict[tuple[str, bool], dict[str, float]] = {
    ("cq-0001", False): {
        "soc": 99.91147463321667,
        "soh": 90.69877030591577,
        "battery_temp_c": 27.137569469022594,
        "ah_throughput": 63.99716903017738,
        "room_c": 27.58943593197608,
        "aircon_runtime_s": 37830.0,
        "import_kwh_meter": 51.6820096736015,
        "rect_dc_kwh": 37.82843764616497,
        "dc_load_kwh": 37.80063968913795,
        "unserved_kwh": 0.0,
        "rect_out_kwh": 37.82843764616497,
        "rect_in_kwh": 39.76331081453222,
        "batt_charge_kwh": 1.748115241643088,
        "batt_discharge_kwh": 1.7203172846160562,
        "batt_loss_kwh": 0.04159184932867496,
        "aircon_kwh": 10.998698859069194,
        "other_ac_kwh": 0.9199999999999652,
        "import_kwh": 51.6820096736015,
        "dark_s": 0.0,
        "outage_s": 3600.0,
        "breaker_kwh": 37.80063968913804,
    },
    ("cq-0004", True): {
        "soc": 99.90831105234261,
        "soh": 83.72646394845003,
        "battery_temp_c": 27.195949905157473,
        "ah_throughput": 331.39455479110126,
        "room_c": 27.755979748843775,
        "aircon_runtime_s": 39720.0,
        "import_kwh_meter": 54.94341447842658,
        "rect_dc_kwh": 40.47436743962371,
        "dc_load_kwh": 39.473100751057835,
        "unserved_kwh": 0.0,
        "rect_out_kwh": 40.47436743962371,
        "rect_in_kwh": 42.74770827066459,
        "batt_charge_kwh": 8.786433939065855,
        "batt_discharge_kwh": 7.785167250500171,
        "batt_loss_kwh": 1.017161723359302,
        "aircon_kwh": 11.275706207762239,
        "other_ac_kwh": 0.9199999999999652,
        "import_kwh": 54.94341447842658,
        "dark_s": 0.0,
        "outage_s": 3600.0,
        "breaker_kwh": 39.47310075105789,
    },
    ("cq-0007", False): {
        "soc": 99.91114938292023,
        "soh": 95.5987327514094,
        "battery_temp_c": 27.118220617335815,
        "ah_throughput": 65.69550243985982,
        "room_c": 26.82677183455298,
        "aircon_runtime_s": 35880.0,
        "import_kwh_meter": 50.13846948530309,
        "rect_dc_kwh": 36.88310761337682,
        "dc_load_kwh": 36.8547495510444,
        "unserved_kwh": 0.0,
        "rect_out_kwh": 36.88310761337682,
        "rect_in_kwh": 38.8856917630554,
        "batt_charge_kwh": 1.7947595928291797,
        "batt_discharge_kwh": 1.7664015304968756,
        "batt_loss_kwh": 0.04292426359334718,
        "aircon_kwh": 10.332777722248188,
        "other_ac_kwh": 0.9199999999999652,
        "import_kwh": 50.13846948530309,
        "dark_s": 0.0,
        "outage_s": 3600.0,
        "breaker_kwh": 36.85474955104485,
    },
    ("cq-0016", True): {
        "soc": 99.91725557367508,
        "soh": 74.57531843566362,
        "battery_temp_c": 27.051257139829413,
        "ah_throughput": 256.9700333947321,
        "room_c": 27.702899793456112,
        "aircon_runtime_s": 68910.0,
        "import_kwh_meter": 121.23106887184623,
        "rect_dc_kwh": 85.0928503603602,
        "dc_load_kwh": 84.02891285908673,
        "unserved_kwh": 0.0,
        "rect_out_kwh": 85.09285036036022,
        "rect_in_kwh": 88.65906582803973,
        "batt_charge_kwh": 7.0639375012761025,
        "batt_discharge_kwh": 6.000000000000041,
        "batt_loss_kwh": 1.084392526540107,
        "aircon_kwh": 31.612003043808432,
        "other_ac_kwh": 0.9599999999999608,
        "import_kwh": 121.23106887184625,
        "dark_s": 0.0,
        "outage_s": 0.0,
        "breaker_kwh": 84.02891285908528,
    },
}
# (ECO active, modules asleep, simulator log entries) at the end of the day.
PINNED_STATE: dict[tuple[str, bool], tuple[bool, list[int], int]] = {
    ("cq-0001", False): (False, [], 2),
    ("cq-0004", True): (False, [], 2),
    ("cq-0007", False): (True, [2, 3, 4], 5),
    ("cq-0016", True): (True, [4], 3),
}


def run_day(site_id: str, *, shave: bool) -> SiteModel:
    sc = load_scenario(REPO / "config" / "scenarios" / "fleet-20.toml")
    assert isinstance(sc, FleetScenario)
    site = next(s for s in sc.build_sites(T0, port_base=0) if s.spec.id == site_id)
    m = SiteModel(site.spec, start=T0)
    if shave:
        m.battery.discharge_power_limit_w = 1500.0
        m.advance_to(T0 + 10 * H, max_step=STEP_S)
        m.battery.mode = BatteryMode.DISCHARGE
        m.advance_to(T0 + 14 * H, max_step=STEP_S)
        m.battery.mode = BatteryMode.AUTO
    m.advance_to(T0 + 24 * H, max_step=STEP_S)
    return m


@pytest.mark.parametrize(("site_id", "shave"), list(PINNED))
def test_a_fleet_site_day_gives_the_recorded_figures(site_id: str, shave: bool) -> None:
    m = run_day(site_id, shave=shave)
    got = {
        "soc": m.battery.soc,
        "soh": m.battery.soh,
        "battery_temp_c": m.battery.temp_c,
        "ah_throughput": m.battery.ah_throughput,
        "room_c": m.aircon.room_c,
        "aircon_runtime_s": m.aircon.runtime_s,
        "import_kwh_meter": m.meter.import_energy_kwh,
        "rect_dc_kwh": m.rectifier.dc_energy_kwh,
        **vars(m.totals),
        "breaker_kwh": sum(c.energy_kwh for c in m.breaker.channels),
    }
    want = PINNED[(site_id, shave)]
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
    eco_active, asleep, log_entries = PINNED_STATE[(site_id, shave)]
    assert m.rectifier.eco_active is eco_active
    assert sorted(m.rectifier.asleep) == asleep
    assert len(m.log) == log_entries
