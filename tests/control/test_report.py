"""Report arithmetic on hand-computed days, Sichuan 2023 tariff (8 h each of valley, flat, peak:
valley 0.24, flat 0.60, peak 0.96 CNY/kWh). A 3 kW site (2.85 kW DC) is the baseline."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols.clock import parse_time
from protocols.control.emissions import CHINA_2022, DEFAULT_FACTOR, emission_factor
from protocols.control.errors import ControlError
from protocols.control.report import (
    Interval,
    Sample,
    combine,
    intervals_from_samples,
    site_report,
)
from protocols.control.tariff import Period, load_tariff

TARIFF = load_tariff(
    Path(__file__).resolve().parents[2] / "config" / "tariffs" / "sichuan-2023.toml"
)
DAY = parse_time("2024-03-01T00:00:00+08:00")
H = 3600.0
ETA = 0.95


def iv(
    h0: float,
    h1: float,
    grid_w: float,
    *,
    dc_load_w: float = 2850,
    battery_w: float = 0.0,
    dormant: bool = False,
    dormancy_saved_w: float = 0.0,
    mains_present: bool = True,
    soc_pct: float | None = None,
    reserve_soc_pct: float | None = None,
) -> Interval:
    """An interval between two hours of DAY."""
    return Interval(
        DAY + h0 * H,
        DAY + h1 * H,
        grid_w,
        dc_load_w,
        battery_w,
        dormant,
        dormancy_saved_w,
        mains_present,
        soc_pct,
        reserve_soc_pct,
    )


def test_flat_day_no_action() -> None:
    r = site_report([iv(0, 24, 3000)], TARIFF, start=DAY, end=DAY + 24 * H)
    assert r.grid_kwh_by_period == pytest.approx(
        {Period.CRITICAL_PEAK: 0, Period.PEAK: 24, Period.FLAT: 24, Period.VALLEY: 24}
    )
    assert r.cost == pytest.approx(3 * (8 * 0.24 + 8 * 0.60 + 8 * 0.96))  # 43.2
    assert r.baseline_cost == pytest.approx(r.cost)
    assert (r.savings_cost, r.savings_kwh, r.savings_kgco2) == pytest.approx((0, 0, 0))
    assert r.site_energy_ratio == pytest.approx(3000 / 2850)
    assert r.grid_kgco2 == pytest.approx(72 * 0.5366)


SHIFT = [
    iv(0, 4, 3000 + 2000 / ETA, battery_w=2000),  # valley: charge 2 kW into the battery
    iv(4, 15, 3000),
    iv(15, 19, 3000 - 1800 / ETA, battery_w=-1800),  # peak: 1.8 kW out of the battery
    iv(19, 24, 3000),
]


def test_peak_shaving_day() -> None:
    r = site_report(SHIFT, TARIFF, start=DAY, end=DAY + 24 * H)
    charged_grid, shaved_grid = 8 / ETA, 7.2 / ETA  # 8.4211 and 7.5789 kWh at the meter
    assert r.baseline_kwh == pytest.approx(72)
    assert r.baseline_cost == pytest.approx(43.2)
    assert r.grid_kwh == pytest.approx(72 + charged_grid - shaved_grid)  # 72.842
    assert r.grid_kwh_by_period[Period.VALLEY] == pytest.approx(24 + charged_grid)
    assert r.grid_kwh_by_period[Period.PEAK] == pytest.approx(24 - shaved_grid)
    assert r.cost == pytest.approx(43.2 + charged_grid * 0.24 - shaved_grid * 0.96)  # 37.945
    assert r.savings_cost == pytest.approx(5.254737, rel=1e-5)
    # shifting costs energy (round-trip losses) while it saves money: reported honestly
    assert r.savings_kwh == pytest.approx(-(charged_grid - shaved_grid))  # −0.842 kWh
    assert r.savings_kgco2 == pytest.approx(-0.842105 * 0.5366, rel=1e-5)
    assert (r.moved_kwh, r.valley_charge_kwh) == pytest.approx((7.2, 8.0))
    assert (r.battery_charge_kwh, r.battery_discharge_kwh) == pytest.approx((8.0, 7.2))
    assert r.reserve_violations == 0


def test_outage_discharge_in_a_peak_is_backup_not_moved() -> None:
    """Only a discharge with mains present shifts energy; in an outage the battery is the
    backup, so a peak-period outage adds to the discharge total but not to `moved_kwh`."""
    day = [
        iv(0, 15, 3000),
        iv(15, 16, 3000 - 1800 / ETA, battery_w=-1800),  # peak, mains present: shaving
        iv(16, 17, 0, battery_w=-2850, mains_present=False),  # peak, outage: the backup
        iv(17, 24, 3000),
    ]
    r = site_report(day, TARIFF, start=DAY, end=DAY + 24 * H)
    assert r.battery_discharge_kwh == pytest.approx(1.8 + 2.85)
    assert r.moved_kwh == pytest.approx(1.8)
    assert r.as_dict()["moved_kwh"] == pytest.approx(1.8)
    assert combine([r, r]).moved_kwh == pytest.approx(3.6)


@pytest.mark.parametrize(
    ("region", "kg"),
    [("national", 4 * 0.5366), ("southwest", 4 * 0.2268), ("north", 4 * 0.6776)],
)
def test_dormant_night(region: str, kg: float) -> None:
    night = [
        iv(0, 1, 3000),
        iv(1, 5, 2000, dormant=True, dormancy_saved_w=1000),  # 1 kW less while dormant
        iv(5, 24, 3000),
    ]
    factor = emission_factor("china-grid", 2022, region)
    r = site_report(night, TARIFF, start=DAY, end=DAY + 24 * H, emission_factor=factor)
    assert r.dormant_hours == pytest.approx(4)
    assert r.baseline_kwh == pytest.approx(72)
    assert r.savings_kwh == pytest.approx(4)
    assert r.savings_cost == pytest.approx(4 * 0.24)
    assert r.savings_kgco2 == pytest.approx(kg)
    assert (
        r.as_dict()["emission_factor"]
        == f"china-grid 2022 {region} ({factor.kg_per_kwh} kgCO2/kWh)"
    )


def test_range_clips_intervals() -> None:
    r = site_report([iv(0, 24, 3000)], TARIFF, start=DAY + 12 * H, end=DAY + 13.5 * H)
    assert r.grid_kwh_by_period[Period.FLAT] == pytest.approx(4.5)
    assert r.cost == pytest.approx(4.5 * 0.60)
    assert r.dc_kwh == pytest.approx(1.5 * 2.85)


@pytest.mark.parametrize(
    ("intervals", "violations"),
    [
        # discharging below reserve for two intervals in a row: one episode
        (
            [
                iv(15, 16, 1000, battery_w=-2000, soc_pct=41, reserve_soc_pct=42),
                iv(16, 17, 1000, battery_w=-2000, soc_pct=39, reserve_soc_pct=42),
                iv(17, 18, 3000, battery_w=0, soc_pct=39, reserve_soc_pct=42),  # idle: fine
                iv(18, 19, 1000, battery_w=-2000, soc_pct=38, reserve_soc_pct=42),
            ],
            2,
        ),
        # within tolerance (0.5 %): not a violation
        ([iv(15, 16, 1000, battery_w=-2000, soc_pct=41.6, reserve_soc_pct=42)], 0),
        # mains absent: the backup doing its job is not a violation
        ([iv(15, 16, 0, battery_w=-3000, soc_pct=20, reserve_soc_pct=42, mains_present=False)], 0),
        # no SOC data: cannot be judged, not counted
        ([iv(15, 16, 1000, battery_w=-2000)], 0),
    ],
)
def test_reserve_violations(intervals: list[Interval], violations: int) -> None:
    r = site_report(intervals, TARIFF, start=DAY, end=DAY + 24 * H)
    assert r.reserve_violations == violations


def test_combine_sums_sites_and_recomputes_ratios() -> None:
    a = site_report(SHIFT, TARIFF, start=DAY, end=DAY + 24 * H)
    b = site_report([iv(0, 24, 1000, dc_load_w=800)], TARIFF, start=DAY, end=DAY + 24 * H)
    fleet = combine([a, b])
    assert fleet.sites == 2
    assert fleet.grid_kwh == pytest.approx(a.grid_kwh + 24)
    assert fleet.savings_cost == pytest.approx(a.savings_cost)
    assert fleet.site_energy_ratio == pytest.approx((a.grid_kwh + 24) / (72 * 0.95 + 19.2))
    other = site_report(
        SHIFT, TARIFF, start=DAY, end=DAY + H, emission_factor=CHINA_2022.factor("east")
    )
    with pytest.raises(ControlError):
        combine([a, other])
    with pytest.raises(ControlError):
        combine([])


def test_intervals_from_samples_hold_values_and_skip_gaps() -> None:
    samples = [
        Sample(0, 1000, 900),
        Sample(900, 2000, 900, battery_w=-500),
        Sample(1800, 3000, 900),
        Sample(5000, 4000, 900),  # 3200 s after the one before: a gap, not guessed
    ]
    got = intervals_from_samples(samples, max_gap_s=900)
    assert [(i.start, i.end, i.grid_w, i.battery_w) for i in got] == [
        (0, 900, 1000, 0),
        (900, 1800, 2000, -500),
    ]
    last = intervals_from_samples(samples, max_gap_s=900, end=5600)
    assert (last[-1].start, last[-1].end, last[-1].grid_w) == (5000, 5600, 4000)


def test_unknown_factor_is_refused() -> None:
    assert DEFAULT_FACTOR.kg_per_kwh == 0.5366
    assert emission_factor("china-carbon-market", 2022).kg_per_kwh == 0.5703
    with pytest.raises(ControlError, match="known"):
        emission_factor("china-grid", 2022, "mars")
    with pytest.raises(ControlError, match="known"):
        emission_factor("china-grid", 1999)
