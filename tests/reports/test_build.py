"""Reports from a real SQLite storage against hand-computed figures (see fixtures.py)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from aggregator.control.context import ControlContext
from aggregator.control.settings import ControlSettings
from aggregator.reports import CSV_COLUMNS, build_report
from protocols.control.tariff import Period
from tests.reports.fixtures import ROOT, local_ms, make_storage, write_policies

DAY = (local_ms(0) / 1000, local_ms(0, day=6) / 1000)


def ctx_for(tmp: Path, extra: dict[str, str] | None = None) -> ControlContext:
    settings = ControlSettings(
        policies_dir=write_policies(tmp, extra), tariffs_dir=ROOT / "config" / "tariffs"
    )
    return ControlContext.load(settings)


def test_site_report_matches_the_hand_computed_figures(tmp_path: Path) -> None:
    storage = make_storage(tmp_path)
    rs = build_report(storage, ctx_for(tmp_path), *DAY, site="s1")
    r = rs.sites["s1"]
    approx = pytest.approx
    assert r.grid_kwh_by_period[Period.PEAK] == approx(1.0)
    assert r.grid_kwh_by_period[Period.VALLEY] == approx(5.1)
    assert r.grid_kwh_by_period[Period.FLAT] == approx(0.0)
    assert r.cost == approx(2.3808)
    assert r.baseline_kwh_by_period[Period.PEAK] == approx(2.052632, abs=1e-6)
    assert r.baseline_kwh_by_period[Period.VALLEY] == approx(4.447368, abs=1e-6)
    assert r.baseline_cost == approx(3.393684, abs=1e-6)
    assert r.savings_cost == approx(1.012884, abs=1e-6)
    assert r.savings_kwh == approx(0.4)
    assert r.savings_kgco2 == approx(0.4 * 0.5366)
    assert r.emission_factor.label.startswith("china-grid 2022 national")
    assert r.moved_kwh == approx(1.0)
    assert r.valley_charge_kwh == approx(1.0)
    assert r.dormant_hours == approx(1.0)
    assert r.dormancy_saved_kwh == approx(0.4)
    assert r.dc_kwh == approx(5.995)
    assert r.site_energy_ratio == approx(6.1 / 5.995)
    assert r.reserve_violations == 0
    assert rs.to_json()["total"] is None or rs.scope == "site"


def test_reserve_violation_counts_once_per_episode(tmp_path: Path) -> None:
    storage = make_storage(tmp_path)
    rs = build_report(storage, ctx_for(tmp_path), *DAY, site="s2")
    assert rs.sites["s2"].reserve_violations == 1


def test_group_and_fleet_totals(tmp_path: Path) -> None:
    storage = make_storage(tmp_path)
    ctx = ctx_for(tmp_path)
    east = build_report(storage, ctx, *DAY, group="east")
    assert list(east.sites) == ["s1"]
    fleet = build_report(storage, ctx, *DAY)
    assert sorted(fleet.sites) == ["s1", "s2"]
    total = fleet.total()
    assert total is not None
    assert total["sites"] == 2
    assert total["grid_kwh"] == pytest.approx(6.1 + 0.5)
    assert total["reserve_violations"] == 1


def test_mixed_emission_factors_add_up_site_by_site(tmp_path: Path) -> None:
    storage = make_storage(tmp_path)
    west = '[scope]\nkind = "group"\nname = "west"\n[emissions]\nregion = "southwest"\n'
    fleet = build_report(storage, ctx_for(tmp_path, {"10-west.toml": west}), *DAY)
    assert fleet.sites["s2"].emission_factor.kg_per_kwh == 0.2268
    total = fleet.total()
    assert total is not None
    assert total["grid_kgco2"] == pytest.approx(6.1 * 0.5366 + 0.5 * 0.2268)
    assert "southwest" in str(total["emission_factor"]) and "national" in str(
        total["emission_factor"]
    )


def test_csv_has_the_columns_and_a_total_row(tmp_path: Path) -> None:
    storage = make_storage(tmp_path)
    rows = list(
        csv.DictReader(io.StringIO(build_report(storage, ctx_for(tmp_path), *DAY).to_csv()))
    )
    assert list(rows[0]) == CSV_COLUMNS
    assert [(r["scope"], r["name"]) for r in rows] == [
        ("site", "s1"),
        ("site", "s2"),
        ("fleet", "fleet"),
    ]
    assert float(rows[0]["cost"]) == pytest.approx(2.3808)
    assert float(rows[0]["savings_kgco2"]) == pytest.approx(0.21464)


def test_a_site_with_an_unknown_tariff_is_listed_not_fatal(tmp_path: Path) -> None:
    storage = make_storage(tmp_path)
    storage.update_site("s2", tariff="nowhere")
    rs = build_report(storage, ctx_for(tmp_path), *DAY)
    assert list(rs.sites) == ["s1"]
    assert "nowhere" in rs.problems["s2"]
